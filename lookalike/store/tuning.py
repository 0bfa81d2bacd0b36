"""Exact neighbours and recall: what an ANN shard is tuned against at build, and measured against later.

A sample of the shard's own vectors is held out as queries; their exact neighbours are found one
block of stored vectors at a time (never the whole shard in memory), and recall@k is the share of
those the shard's search (re-ranked) finds, each query's own vector left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

TARGET_RECALL = 0.98  # recall@10 that tuning aims for on its held-out sample (the promise is 0.95)
TUNING_QUERIES = 300

# Exact vectors for re-ranking: chunk ids -> (those still stored, their float32 vectors).
ExactVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
# Every stored vector of a shard, in blocks of (chunk ids, float32 vectors).
VectorBlocks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
# A shard's top-k search: (queries, k) -> (scores, chunk ids).
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Higher-is-closer scores of every query against every vector: cosine, or minus L2 distance."""
    if metric == "cosine":
        return queries @ vectors.T
    d2 = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
    return -np.sqrt(np.maximum(d2, 0))


class TopK:
    """The exact nearest neighbours of a few queries, found one block of vectors at a time."""

    def __init__(self, query_ids: np.ndarray, queries: np.ndarray, k: int, metric: str):
        self.query_ids, self.queries, self.k, self.metric = query_ids, queries, k, metric
        self.scores = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        self.ids = np.zeros((len(queries), 0), dtype=np.int64)

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(self.queries) == 0 or len(ids) == 0:
            return
        s = np.concatenate([self.scores, exact_scores(self.queries, vectors, self.metric)], axis=1)
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, (len(self.queries), len(ids)))], axis=1)
        keep = np.argsort(-s, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(s, keep, 1)
        self.ids = np.take_along_axis(all_ids, keep, 1)

    def neighbours(self) -> list[np.ndarray]:
        return list(self.ids)


def held_out_recall(
    search: Search, query_ids: np.ndarray, queries: np.ndarray, truth: list[np.ndarray], k: int = 10
) -> float:
    """recall@k of ``search`` against ``truth``, each query's own id left out."""
    if len(query_ids) == 0:
        return 1.0
    _, found = search(queries, k + 1)
    hits = total = 0
    for own, row, want in zip(query_ids.tolist(), found, truth, strict=True):
        want_ids = [i for i in want.tolist() if i != own][:k]
        got = [i for i in row.tolist() if i != own and i >= 0][:k]
        hits += len(set(want_ids) & set(got))
        total += len(want_ids)
    return hits / total if total else 1.0


def tune_nprobe(
    recall_at: Callable[[int], float], nlist: int, cancelled: Callable[[], bool]
) -> tuple[int, float] | None:
    """The smallest power-of-two nprobe whose recall (``recall_at(nprobe)``) reaches TARGET_RECALL,
    or ``nlist``, with that recall; None if cancelled meanwhile."""
    nprobe = 1
    while True:
        if cancelled():
            return None
        recall = recall_at(nprobe)
        if recall >= TARGET_RECALL or nprobe >= nlist:
            return nprobe, recall
        nprobe *= 2


def training_sample(
    blocks: VectorBlocks, size: int, queries: int, cancelled: Callable[[], bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A uniform sample of ``size`` vectors for training, in one pass over the blocks (every vector
    draws a random key; the smallest keys win), and ``queries`` of them (with their ids) held out as
    tuning queries."""
    rng = np.random.default_rng(0)
    keys = np.zeros(0)
    kept_ids = np.zeros(0, np.int64)
    kept: np.ndarray | None = None
    for ids, vectors in blocks():
        if cancelled():
            return None
        block_keys = rng.random(len(ids))
        keys = np.concatenate([keys, block_keys])
        kept_ids = np.concatenate([kept_ids, ids])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, vectors.shape[1])
        kept = vectors if kept is None else np.concatenate([kept, vectors])
        if len(keys) > size:
            best = np.argpartition(keys, size)[:size]
            keys, kept_ids, kept = keys[best], kept_ids[best], kept[best]
    if kept is None:
        raise ValueError("no vectors to build an index from")
    held = rng.choice(len(kept_ids), min(queries, len(kept_ids)), replace=False)
    return np.ascontiguousarray(kept), kept_ids[held], np.ascontiguousarray(kept[held])


def rerank(
    queries: np.ndarray, candidates: np.ndarray, k: int, exact: ExactVectors, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-``k`` of each query's candidate ids, scored against the stored vectors."""
    wanted = np.unique(candidates[candidates >= 0])
    found, vectors = exact(wanted)
    row = {int(c): i for i, c in enumerate(found)}
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for q in range(len(queries)):
        mine = [c for c in dict.fromkeys(candidates[q].tolist()) if c in row]
        if not mine:
            continue
        s = exact_scores(queries[q : q + 1], vectors[[row[c] for c in mine]], metric)[0]
        order = np.lexsort((np.asarray(mine), -s))[:k]  # best first; ties by chunk id
        scores[q, : len(order)] = s[order]
        ids[q, : len(order)] = np.asarray(mine)[order]
    return scores, ids
