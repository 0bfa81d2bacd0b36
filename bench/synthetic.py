"""Synthetic collections of realistic embeddings, for scale tests and benchmarks.

Encoding a million photos takes hours on two cores, and no million-photo set can be had offline,
so scale is measured on vectors made from real ones. Each synthetic vector is a real photo's
embedding, blended with a second photo's and moved by noise drawn from the real embeddings' own
principal components (their covariance), then L2-normalised:

    v = normalise(w·a + (1 − w)·b + sigma · z·S/√n · Vᵀ),    w ~ U(0.6, 1),  z ~ N(0, I)

where ``a`` and ``b`` are random real embeddings and ``U S Vᵀ`` is the SVD of the centred real
embeddings. The noise follows the directions real photos vary along, so the vectors cluster like
photo collections do (many near-variants of each subject, a continuum between subjects), which
is what makes ANN recall meaningful: isotropic noise in 1280 dimensions makes every vector
almost equidistant from every other, a case no real collection presents.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class RealisticVectors:
    """Vectors around ``bases`` (real photo embeddings, one per row)."""

    def __init__(self, bases: np.ndarray, sigma: float = 0.6, seed: int = 0):
        if len(bases) < 2:
            raise ValueError("synthetic vectors need at least two real embeddings to start from")
        self.bases = np.asarray(bases, dtype=np.float32)
        self.sigma = sigma
        self.rng = np.random.default_rng(seed)
        centred = self.bases - self.bases.mean(axis=0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        self._noise_basis = (s[:, None] / np.sqrt(len(self.bases)) * vt).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.bases.shape[1])

    def sample(self, n: int) -> np.ndarray:
        """``n`` new vectors, float32, L2-normalised."""
        rng = self.rng
        a = self.bases[rng.integers(0, len(self.bases), n)]
        b = self.bases[rng.integers(0, len(self.bases), n)]
        w = rng.uniform(0.6, 1.0, (n, 1)).astype(np.float32)
        z = rng.standard_normal((n, len(self._noise_basis))).astype(np.float32)
        v = w * a + (1 - w) * b + self.sigma * (z @ self._noise_basis)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v

    def blocks(self, n: int, block: int = 10_000) -> Iterator[np.ndarray]:
        """``n`` vectors, ``block`` at a time."""
        for start in range(0, n, block):
            yield self.sample(min(block, n - start))
