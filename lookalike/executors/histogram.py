"""ColorHistogramEncoder: the floor for quality, as an encoder like any other.

A joint RGB colour histogram of the very pixels the model sees (the one preprocessing),
L2-normalised, so that ``lookalike eval --encoder histogram`` indexes and searches with it through
the same flows and the same search path as EfficientNet, and scores it with the same metrics.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from lookalike.document import Document
from lookalike.errors import BadInput
from lookalike.executors.base import Executor, Preprocessing, requests

# 8 levels per channel (512 bins) is the usual colour-histogram baseline: coarse enough that
# small shifts in shade land in the same bin, fine enough to tell red fruit from green leaves.
HISTOGRAM_BINS = 8
INPUT_SIZE = 224


def histograms(batch: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """``N x 3 x S x S`` model input -> ``N x bins**3`` L2-normalised histograms.

    It undoes the input's ``(x - 127) / 128`` scaling, which is exact in float32, so it sees
    exactly the pixels EfficientNet sees: same decode, crop and alpha."""
    batch = np.asarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise BadInput(f"expected a batch of shape N x 3 x S x S, got {batch.shape}")
    dim = bins**3
    pixels = np.clip(np.rint(batch * 128.0 + 127.0), 0, 255).astype(np.int64)
    levels = pixels * bins // 256  # N x 3 x S x S, each in 0..bins-1
    codes = (levels[:, 0] * bins + levels[:, 1]) * bins + levels[:, 2]
    n = len(batch)
    flat = codes.reshape(n, -1) + np.arange(n)[:, None] * dim  # one bincount for the batch
    hist = np.bincount(flat.ravel(), minlength=n * dim).reshape(n, dim).astype(np.float32)
    return hist / np.maximum(np.linalg.norm(hist, axis=1, keepdims=True), 1e-12)


class ColorHistogramEncoder(Executor):
    """Embeds every chunk's pixels as their colour histogram (``bins**3``-d, cosine)."""

    class Params(Executor.Params):
        bins: int = Field(default=HISTOGRAM_BINS, ge=2, le=16, description="levels per colour channel")

    params: Params

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        assert isinstance(params, cls.Params)
        return f"color-histogram-{params.bins}:v1"

    @classmethod
    def vector_space_of(cls, params: BaseModel) -> tuple[int, str] | None:
        assert isinstance(params, cls.Params)
        return params.bins**3, "cosine"

    @classmethod
    def preprocessing_of(cls, params: BaseModel) -> Preprocessing | None:
        return Preprocessing(size=INPUT_SIZE)

    @requests(on=["index", "search"])
    def encode(self, docs: list[Document]) -> None:
        todo = [(c, c.tensor) for d in docs for c in d.chunks if c.tensor is not None and c.embedding is None]
        if not todo:
            return
        for (chunk, _), vector in zip(todo, histograms(np.stack([t for _, t in todo]), self.params.bins), strict=True):
            chunk.embedding = vector
            chunk.tensor = None
