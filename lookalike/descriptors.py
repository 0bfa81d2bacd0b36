"""Descriptors from the encoder's feature map, and neighbourhood methods on them.

- Pooling the head's feature map (N x C x H x W) into one vector per image: the global average
  (EfficientNet's own), GeM, or R-MAC (Tolias, Sicre and Jegou, 2016: max-pooled square regions at
  three scales, each L2-normalised, summed). R-MAC is the default: it keeps what is in each part of
  the picture, so crops, captions and rotations move it less (docs/benchmarks.md, "Descriptors").
- Alpha query expansion (aQE) and database-side augmentation (DBA), as in Radenovic, Tolias and
  Chum (2018).

Both replace a vector by a weighted sum of itself and its nearest neighbours, each neighbour
weighted by its similarity to the power ``alpha`` (so close neighbours count, far ones hardly do),
then normalise again. aQE does it to the query, once, at search time; DBA to every database vector.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

Pooling = Literal["rmac", "gem", "avg"]
POOLINGS: tuple[Pooling, ...] = ("rmac", "gem", "avg")
DEFAULT_POOLING: Pooling = "rmac"
GEM_P = 3.0  # also the model graph's GeM head (lookalike.models.efficientnet_lite)
RMAC_LEVELS = 3
# Region chunks (the ``regions`` space): a 2 x 2 grid of overlapping windows, each 4/7 of the map's
# side (4 x 4 cells of EfficientNet's 7 x 7 map, 128 px of a 224 px input, overlapping by a cell),
# max-pooled, unit length, then projected onto REGION_DIM dimensions. Nine windows of 3 x 3 cells
# found 0.01 more of the pasted objects for 2.25x the bytes (docs/benchmarks.md, "Regions").
REGION_GRID = 2
REGION_SIDE = 4 / 7
REGION_DIM = 256
QE_ALPHA = 3.0  # neighbours weighted by similarity**3: near ones count, far ones hardly do


def l2_normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


@lru_cache(maxsize=16)
def rmac_regions(h: int, w: int, levels: int = RMAC_LEVELS) -> tuple[tuple[int, int, int, int], ...]:
    """R-MAC's regions of an ``h x w`` map as (top, bottom, left, right): the whole map, then at
    level l squares of side 2·min(h, w)/(l+1), spread evenly with about 40% overlap. (On a square
    map the level-1 square is the whole map again, so the whole map counts twice: the descriptor
    the ablation in docs/benchmarks.md measured.)"""
    out = [(0, h, 0, w)]
    for level in range(1, levels + 1):
        side = max(1, round(2 * min(h, w) / (level + 1)))
        steps_h = max(1, round((h - side) / side * 2.5) + 1) if h > side else 1
        steps_w = max(1, round((w - side) / side * 2.5) + 1) if w > side else 1
        for i in range(steps_h):
            for j in range(steps_w):
                top = 0 if steps_h == 1 else round(i * (h - side) / (steps_h - 1))
                left = 0 if steps_w == 1 else round(j * (w - side) / (steps_w - 1))
                out.append((top, top + side, left, left + side))
    return tuple(out)


@lru_cache(maxsize=16)
def region_windows(h: int, w: int) -> tuple[tuple[int, int, int, int], ...]:
    """The region chunks' windows of an ``h x w`` map as (top, bottom, left, right), row by row:
    REGION_GRID x REGION_GRID squares of side REGION_SIDE of the shorter side, spread evenly from
    edge to edge (on a 7 x 7 map, 4 x 4 cells starting at cells 0 and 3)."""
    side = max(1, round(REGION_SIDE * min(h, w)))

    def starts(n: int) -> list[int]:
        return [round(i * (n - side) / (REGION_GRID - 1)) for i in range(REGION_GRID)]

    return tuple((t, t + side, left, left + side) for t in starts(h) for left in starts(w))


def region_projection(classifier: np.ndarray, dim: int = REGION_DIM) -> np.ndarray:
    """A ``C x dim`` projection of the head's features onto the ``dim`` directions the ImageNet
    classifier (``classes x C``) weighs most: its top right singular vectors. Made from the weights
    alone (no data), and as good as a PCA fitted on the collection's own regions at 256
    dimensions (docs/benchmarks.md, "Regions"). Each vector's sign is fixed (its largest entry
    positive) so that every build of the graph projects the same way."""
    _, _, vt = np.linalg.svd(classifier.astype(np.float64), full_matrices=False)
    basis = vt[:dim]
    signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
    return np.ascontiguousarray((basis * signs[:, None]).T, dtype=np.float32)


def pool(features: np.ndarray, pooling: Pooling) -> np.ndarray:
    """One L2-normalised vector per ``N x C x H x W`` feature map. The model graph computes the same
    poolings itself (its ``embedding``, ``gem`` and ``rmac`` outputs); this is their reference, for
    tests and for the ablation, which pools maps it has already."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    if pooling == "avg":
        return l2_normalise(flat.mean(axis=2))
    if pooling == "gem":
        return l2_normalise(np.power(np.mean(np.power(np.maximum(flat, 0.0), GEM_P), axis=2), 1.0 / GEM_P))
    if pooling == "rmac":
        total = np.zeros((n, c), np.float32)
        for top, bottom, left, right in rmac_regions(h, w):
            total += l2_normalise(features[:, :, top:bottom, left:right].max(axis=(2, 3)))
        return l2_normalise(total)
    raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")


def expand(vectors: np.ndarray, neighbours: np.ndarray, similarities: np.ndarray, alpha: float) -> np.ndarray:
    """``vectors`` (N x d) plus their neighbours (N x k x d) weighted by ``max(similarity, 0) ** alpha``
    (N x k), normalised. A missing neighbour is given a similarity of 0 (or below)."""
    weights = np.power(np.clip(similarities, 0.0, None), alpha)[:, :, None]
    return l2_normalise(vectors + (weights * neighbours).sum(axis=1))


def _top(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, sims.shape[1])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(k), (len(sims), 1))
    return idx, np.take_along_axis(sims, idx, axis=1)


def alpha_qe_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    alpha: float,
    copy_floor: float | None = None,
    sims: np.ndarray | None = None,
) -> np.ndarray:
    """Scores (Q x G) of the aQE-expanded queries against ``gallery``, exactly.

    ``copy_floor``: a query whose best match scores this or more has a copy in the gallery, and is
    not expanded (expansion would pull it away from that copy towards the copy's neighbours).
    ``sims``: the plain scores, if known; entries of -inf there (a held-out query itself) are never
    neighbours and stay -inf.
    """
    plain = queries @ gallery.T if sims is None else sims
    k = min(k, gallery.shape[0] - (1 if sims is not None and np.isneginf(sims).any() else 0))
    if k < 1 or gallery.shape[0] == 0:
        return plain
    idx, top = _top(plain, k)
    expanded = expand(queries, gallery[idx], top, alpha)
    if copy_floor is not None:
        has_copy = top.max(axis=1) >= copy_floor
        expanded[has_copy] = queries[has_copy]
    out = expanded @ gallery.T
    out[np.isneginf(plain)] = -np.inf
    return out


def database_augment(gallery: np.ndarray, k: int, alpha: float, sims: np.ndarray | None = None) -> np.ndarray:
    """Every gallery vector expanded by its ``k`` nearest *other* gallery vectors."""
    s = (gallery @ gallery.T) if sims is None else sims.copy()
    np.fill_diagonal(s, -np.inf)
    if len(gallery) < 2:
        return gallery
    idx, top = _top(s, k)
    return expand(gallery, gallery[idx], top, alpha)
