"""Baselines measured in the same harness as lookalike itself.

- :class:`ColorHistogramEncoder`: the floor for quality. A joint RGB colour histogram of the very
  pixels the model sees (the one preprocessing), L2-normalised, so that ``lookalike eval
  --encoder histogram`` scores it with the same metrics code as EfficientNet.
- :class:`NaivePipeline`: the floor for speed. What a user writes in an afternoon, and what the
  original example did: one image at a time, a full decode with no ``draft()``, a textbook resize
  (shorter side to 256, centre crop 224), the model on batches of 1, nothing in parallel. Its model
  is the same ONNX graph (:func:`onnx_model`) or, where torch and ``efficientnet-lite-pytorch``
  happen to be installed, the same weights on torch eager (:func:`torch_model`). Torch is never a
  dependency of lookalike; only a separate interpreter that has it can run the torch variant.

This module imports only numpy and Pillow at the top, so that such an interpreter (without FAISS or
pydantic) can import it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from lookalike.errors import BadInput, ModelError
from lookalike.images import ImageSource, load_tensor

# 8 levels per channel (512 bins) is the usual colour-histogram baseline: coarse enough that
# small shifts in shade land in the same bin, fine enough to tell red fruit from green leaves.
HISTOGRAM_BINS = 8

# A model on preprocessed ``N x 3 x 224 x 224`` input, returning L2-normalised N x D embeddings.
Model = Callable[[np.ndarray], np.ndarray]


class ColorHistogramEncoder:
    """Joint RGB histogram of the preprocessed 224 x 224 crop, L2-normalised (``bins**3``-d).

    It reads the model's input tensors and undoes the ``(x - 127) / 128`` scaling, which is exact
    in float32, so it sees exactly the pixels EfficientNet sees: same decode, crop and alpha.
    """

    name = "histogram"

    def __init__(self, bins: int = HISTOGRAM_BINS, input_size: int = 224):
        if not 2 <= bins <= 64:
            raise ModelError(f"histogram bins must be between 2 and 64, got {bins}")
        self.bins = bins
        self.input_size = input_size

    @property
    def dim(self) -> int:
        return self.bins**3

    def encode_tensors(self, batch: np.ndarray) -> np.ndarray:
        """``N x 3 x S x S`` model input -> ``N x bins**3`` L2-normalised histograms."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise BadInput(f"expected a batch of shape N x 3 x S x S, got {batch.shape}")
        pixels = np.clip(np.rint(batch * 128.0 + 127.0), 0, 255).astype(np.int64)
        levels = pixels * self.bins // 256  # N x 3 x S x S, each in 0..bins-1
        codes = (levels[:, 0] * self.bins + levels[:, 1]) * self.bins + levels[:, 2]
        n = len(batch)
        flat = codes.reshape(n, -1) + np.arange(n)[:, None] * self.dim  # one bincount for the batch
        hist = np.bincount(flat.ravel(), minlength=n * self.dim).reshape(n, self.dim).astype(np.float32)
        return hist / np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12)

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Histograms of images (paths, bytes, PIL images) through the one preprocessing."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_tensors(np.stack([load_tensor(i, self.input_size) for i in images]))


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
