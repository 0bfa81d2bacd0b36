"""The image encoder: EfficientNet-Lite on onnxruntime, with an explicit thread budget."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from lookalike.descriptors import DEFAULT_POOLING, POOLINGS, REGION_DIM, Pooling, l2_normalise, region_windows
from lookalike.errors import BadInput, ModelError
from lookalike.images import ImageSource, load_tensor, shrink
from lookalike.models.efficientnet_lite import (
    DEFAULT_MODEL,
    EMBEDDING_DIM,
    CompiledModel,
    ensure_onnx,
    get_variant,
    model_identity,
)
from lookalike.models.imagenet import Tag, tags

# Images per model call. Larger batches are no faster per image on a CPU, and each session's memory
# arena grows with its largest batch: two encoder replicas at batch 8 peak ~170 MB below batch 16.
MODEL_BATCH = 8


def session_providers() -> list[str]:
    """onnxruntime's CUDA provider where this onnxruntime has one (the onnxruntime-gpu wheel, on a
    GPU node: a Ray pod with ``num_gpus``), then the CPU. The model and its fingerprint are the same
    on either; only where it runs changes."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider",) if p in available] + ["CPUExecutionProvider"]


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class EfficientNetEncoder:
    """Encodes images into L2-normalised embeddings plus ImageNet logits.

    ``threads`` is onnxruntime's intra-op thread budget (default: every core). When several
    encoders run side by side, give each about ``cores / replicas`` so their pools do not fight.
    ``pooling`` turns the head's feature map into the embedding (see :mod:`lookalike.descriptors`).
    ``spin=False`` stops idle intra-op threads from spin-waiting, so that other threads get the
    cores between model calls (a server decodes and answers HTTP there).

    Making one is cheap: its identity (:attr:`fingerprint`) comes from its parameters and the
    weights' digest. The ONNX graph is built (or found in ``cache_dir``) and the session loaded on
    first use, once, behind a lock (:meth:`load`).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        threads: int | None = None,
        batch_size: int = MODEL_BATCH,
        cache_dir: str | os.PathLike | None = None,
        data_dir: str | os.PathLike | None = None,
        pooling: Pooling = DEFAULT_POOLING,
        spin: bool = True,
    ):
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
        if threads is not None and threads < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        if batch_size < 1:
            raise ModelError(f"batch_size must be at least 1, got {batch_size}")
        self.variant = get_variant(model)
        self.pooling = pooling
        self.threads = threads or available_cores()
        self.batch_size = batch_size
        self.spin = spin
        self._dirs = (cache_dir, data_dir)
        self._compiled: CompiledModel | None = None
        self._session: ort.InferenceSession | None = None
        self._lock = threading.Lock()

    @property
    def compiled(self) -> CompiledModel:
        """The ONNX graph on disk (built now if it is not in the cache yet)."""
        with self._lock:
            if self._compiled is None:
                self._compiled = ensure_onnx(self.variant.name, *self._dirs)
            return self._compiled

    def load(self) -> ort.InferenceSession:
        """The onnxruntime session, loaded on first use (the graph built first, if need be)."""
        compiled = self.compiled
        with self._lock:
            if self._session is None:
                self._session = self._new_session(compiled)
            return self._session

    def _new_session(self, compiled: CompiledModel) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1  # the graph is a chain: nothing to run side by side
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        try:
            return ort.InferenceSession(str(compiled.onnx_path), sess_options=opts, providers=session_providers())
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {compiled.onnx_path}: {e}; delete it to have it rebuilt") from e

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def fingerprint(self) -> str:
        return pooled_fingerprint(model_identity(self.variant.name), self.pooling)

    @property
    def input_size(self) -> int:
        return self.variant.resolution

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def encode_tensors(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model on preprocessed ``N x 3 x S x S`` float32 input."""
        batch = np.asarray(batch, dtype=np.float32)
        s = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise BadInput(f"expected a batch of shape N x 3 x {s} x {s}, got {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 1000), np.float32)
        embs, logits = [], []
        outputs = ["embedding" if self.pooling == "avg" else self.pooling, "logits"]  # the graph pools
        session = self.load()
        for start in range(0, len(batch), self.batch_size):
            e, lg = session.run(outputs, {"input": batch[start : start + self.batch_size]})
            embs.append(e)
            logits.append(lg)
        emb = np.concatenate(embs)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.maximum(norms, 1e-12)  # an all-black input can pool to exactly zero
        return emb.astype(np.float32), np.concatenate(logits).astype(np.float32)

    def run(self, batch: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        """The graph's named ``outputs`` for a preprocessed ``N x 3 x S x S`` batch, in model batches."""
        batch = np.asarray(batch, dtype=np.float32)
        s = self.input_size
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise BadInput(f"expected a batch of shape N x 3 x {s} x {s}, got {batch.shape}")
        session = self.load()
        parts = [
            session.run(outputs, {"input": batch[i : i + self.batch_size]})
            for i in range(0, len(batch), self.batch_size)
        ]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]

    def encode_with_regions(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like :meth:`encode_tensors`, plus each image's region descriptors (``N x 4 x 256``,
        L2-normalised; see :func:`lookalike.descriptors.region_windows`), from the same pass."""
        if len(batch) == 0:
            return *self.encode_tensors(batch), np.zeros((0, len(self.windows), REGION_DIM), np.float32)
        emb, logits, regions = self.run(
            batch, ["embedding" if self.pooling == "avg" else self.pooling, "logits", "regions"]
        )
        return l2_normalise(emb), logits.astype(np.float32), l2_normalise(regions)

    def encode_boxes(self, batch: np.ndarray) -> np.ndarray:
        """The region-space descriptors (``N x 256``, L2-normalised) of preprocessed crops: each crop
        is shrunk into the first region window of an empty (mid-grey) input, so that the model sees
        it at the scale and place a region chunk sees its part of a photo, and that window is pooled."""
        batch = np.asarray(batch, dtype=np.float32)
        s = self.input_size
        top, bottom, left, right = self.windows[0]
        cell = s / self.map_size
        y0, y1, x0, x1 = (round(v * cell) for v in (top, bottom, left, right))
        canvas = np.zeros((len(batch), 3, s, s), np.float32)
        for i, tensor in enumerate(batch):
            canvas[i, :, y0:y1, x0:x1] = shrink(tensor, (y1 - y0, x1 - x0))
        return l2_normalise(self.run(canvas, ["box"])[0])

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        """The head's feature maps (``N x 1280 x 7 x 7``) of a preprocessed batch."""
        return self.run(batch, ["features"])[0]

    @property
    def map_size(self) -> int:
        """The side of the head's feature map: the input's over 32, rounded up."""
        return math.ceil(self.input_size / 32)

    @property
    def windows(self) -> tuple[tuple[int, int, int, int], ...]:
        return region_windows(self.map_size, self.map_size)

    def preprocess(self, image: ImageSource, *, draft: bool = True) -> np.ndarray:
        return load_tensor(image, self.input_size, draft=draft)

    def encode(self, images: Sequence[ImageSource] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encode images (paths, bytes, file objects, PIL images) or a preprocessed batch.

        Returns ``(embeddings N x 1280, L2-normalised; logits N x 1000)``. A bad image raises
        :class:`BadInput` naming its position; callers that must go on past bad files preprocess
        one by one and call :meth:`encode_tensors`.
        """
        if isinstance(images, np.ndarray):
            return self.encode_tensors(images)
        tensors = []
        for i, image in enumerate(images):
            try:
                tensors.append(self.preprocess(image))
            except BadInput as e:
                where = str(image) if isinstance(image, (str, os.PathLike)) else f"image #{i}"
                raise BadInput(f"{where}: {e}") from e
        if not tensors:
            return self.encode_tensors(np.zeros((0, 3, self.input_size, self.input_size), np.float32))
        return self.encode_tensors(np.stack(tensors))

    @staticmethod
    def tags(logits: np.ndarray, k: int = 5) -> list[list[Tag]]:
        return tags(logits, k)


def pooled_fingerprint(model_fingerprint: str, pooling: str) -> str:
    """The model's fingerprint with its pooling: another pooling is another vector space."""
    return model_fingerprint if pooling == "avg" else f"{model_fingerprint}:{pooling}"
