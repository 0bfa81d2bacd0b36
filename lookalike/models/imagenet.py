"""ImageNet-1k class names and turning logits into tags."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import NamedTuple

import numpy as np

from lookalike.errors import ModelError


class Tag(NamedTuple):
    label: str
    probability: float


@lru_cache(maxsize=1)
def labels() -> tuple[str, ...]:
    """The 1000 class names, in the order of the model's logits."""
    text = resources.files("lookalike.models").joinpath("imagenet_classes.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:
        raise ModelError(f"imagenet_classes.txt lists {len(names)} classes, not 1000: reinstall lookalike")
    return names


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def tags(logits: np.ndarray, k: int = 5) -> list[list[Tag]]:
    """Top-``k`` (label, probability) per row of ``logits`` (N x 1000, or one row of 1000)."""
    probs = np.atleast_2d(softmax(logits))
    k = max(0, min(k, probs.shape[1]))
    names = labels()
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[Tag(names[i], float(row[i])) for i in idx] for row, idx in zip(probs, top, strict=True)]
