"""The speed baseline measured in the same harness as lookalike itself (``bench.index``).

:class:`NaivePipeline` is the floor for speed: what a user writes in an afternoon, and what the
original example did: one image at a time, a full decode with no ``draft()``, a textbook resize
(shorter side to 256, centre crop 224), the model on batches of 1, nothing in parallel. Its model
is the same ONNX graph (:func:`onnx_model`) or, where torch and ``efficientnet-lite-pytorch``
happen to be installed, the same weights on torch eager (:func:`torch_model`). Torch is never a
dependency of lookalike; only a separate interpreter that has it can run the torch variant.

The floor for quality, a colour histogram, is a built-in executor now
(:class:`lookalike.executors.histogram.ColorHistogramEncoder`, ``lookalike eval --encoder histogram``).

This module imports only numpy, Pillow and lookalike's errors at the top, so that such an
interpreter (without FAISS or onnxruntime) can import it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from lookalike.errors import ModelError

# A model on preprocessed ``N x 3 x 224 x 224`` input, returning L2-normalised N x D embeddings.
Model = Callable[[np.ndarray], np.ndarray]


# --- the naive pipeline ---------------------------------------------------------------------------


def naive_preprocess(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """The textbook preprocessing: full decode, RGB, shorter side to 256, centre crop 224, scale.

    No ``draft()``, and a plain ``resize`` of the whole decoded image (as torchvision's
    ``Resize(256)`` + ``CenterCrop(224)`` do on PIL images).
    """
    with Image.open(path) as img:
        rgb = (ImageOps.exif_transpose(img) or img).convert("RGB")
    w, h = rgb.size
    short = round(size * 256 / 224)
    scale = short / min(w, h)
    resized = rgb.resize((max(short, round(w * scale)), max(short, round(h * scale))), Image.Resampling.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    arr = (np.asarray(crop, dtype=np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def onnx_model(threads: int | None = None, cache_dir: str | os.PathLike | None = None) -> Model:
    """lookalike's ONNX EfficientNet-Lite0, as a naive user would call it (default threads)."""
    from lookalike.models.encoder import EfficientNetEncoder

    encoder = EfficientNetEncoder(threads=threads, cache_dir=cache_dir)
    return lambda batch: encoder.encode_tensors(batch)[0]


def torch_available() -> bool:
    """Whether this interpreter can run :func:`torch_model`."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "efficientnet_lite_pytorch"))


def torch_model(name: str = "efficientnet-lite0") -> Model:
    """The same weights on torch eager (``efficientnet_lite_pytorch``): pooled features, L2-normalised."""
    if not torch_available():
        raise ModelError("the torch baseline needs torch and efficientnet-lite-pytorch in this interpreter")
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from lookalike.models.efficientnet_lite import get_variant, weights_path

    variant = get_variant(name)
    net = EfficientNet.from_name(variant.name)
    net.load_state_dict(torch.load(weights_path(variant), map_location="cpu", weights_only=True))
    net.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            features = net.extract_features(torch.from_numpy(np.ascontiguousarray(batch))).mean(dim=(2, 3))
            net._fc(features)  # the logits, as lookalike's graph computes them too (for the tags)
        emb = features.numpy()
        return (emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    return run


@dataclass
class NaiveRun:
    images: int
    seconds: float
    embeddings: np.ndarray

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class NaivePipeline:
    """One image at a time: read, full decode, resize, then the model on ``batch_size`` images."""

    def __init__(self, model: Model, batch_size: int = 1):
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size

    def index(self, paths: Sequence[str | os.PathLike]) -> NaiveRun:
        """Embed every file in order; the clock covers decoding, resizing and the model."""
        start = time.perf_counter()
        out: list[np.ndarray] = []
        pending: list[np.ndarray] = []
        for path in paths:
            pending.append(naive_preprocess(path))
            if len(pending) == self.batch_size:
                out.append(self.model(np.stack(pending)))
                pending = []
        if pending:
            out.append(self.model(np.stack(pending)))
        seconds = time.perf_counter() - start
        embeddings = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
        return NaiveRun(len(paths), seconds, embeddings)
