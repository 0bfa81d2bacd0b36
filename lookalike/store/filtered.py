"""Filtered vector search on one shard: the true top-k among the chunks a filter keeps.

Never a global top-k cut down afterwards (which returns fewer than k, or none, for a selective
filter). Two ways, chosen per search by what the filter turns out to keep:

1. **Post-filter** (a broad filter): the shard's own search for ``FETCH_FACTOR`` times the
   candidates it needs, by the index's scores; those the filter keeps (one SQL query on the
   candidates' ids), re-ranked exactly. When too few pass, once more with as many candidates as the
   share that passed says are needed, up to ``MAX_FETCH``. When enough pass, the result is the same
   as an unfiltered search of the kept chunks would be: any kept chunk scoring higher would have
   been a candidate too.
2. **Pre-filter** (a selective filter, when too few candidates passed): the filter's chunks from
   the store (an index range scan), then
   - on an ANN shard, up to ``EXACT_LIMIT`` of them scored exactly against their stored vectors
     (read once, and remembered while the filter's chunks are);
   - else the index searched with an ID selector (a bitmap of the kept ids): a flat index exactly,
     an IVF index probing ``nprobe / fraction kept`` cells (all of them for a selective filter),
     its candidates then re-ranked.

A flat shard is exact both ways. docs/benchmarks.md ("Filtered search") measures both at 100k and
1M vectors, for filters keeping 50%, 1% and 0.01%.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import faiss
import numpy as np

from lookalike.store.tuning import ExactVectors, exact_scores, rerank

FETCH_FACTOR = 4  # post-filter candidates, first, times what the search needs ...
MAX_FETCH = 1024  # ... and at most this many, asked as the share kept says, before pre-filtering
PROBE_MARGIN = 4  # a selective filter's IVF search probes this many times the cells its fraction asks
# Kept chunks an ANN shard scores exactly against their stored vectors, which a shard pod remembers
# with the ids (42 MB at 8,192 of 1280-d; a matrix product of a millisecond or two); more are found
# by an IVF probe of the codes with an ID selector (bench.filtered: 24 ms a shard of 500,000 with
# its snapshot memory-mapped, where scoring 5,000 remembered vectors takes about 1 ms).
EXACT_LIMIT = 8192


class Kept(Protocol):
    """What a filter keeps of one shard, asked of the doc store."""

    def among(self, chunk_ids: np.ndarray) -> np.ndarray:
        """Those of ``chunk_ids`` the filter keeps."""
        ...

    def all(self) -> np.ndarray:
        """Every chunk id of this shard the filter keeps."""
        ...

    def known(self) -> int | None:
        """How many chunks the filter keeps, if that is known without asking the store."""
        ...

    def vectors(self, exact: ExactVectors) -> tuple[np.ndarray, np.ndarray]:
        """Those chunks' stored vectors, read with ``exact`` (or remembered): (ids, vectors)."""
        ...


class Shard(Protocol):
    """What a filtered search needs of a :class:`~lookalike.store.vectors.VectorShard`."""

    metric: str
    info: Any

    @property
    def kind(self) -> str: ...

    def __len__(self) -> int: ...

    def _raw_search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None, params: Any = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


def filtered_search(
    shard: Shard, queries: np.ndarray, k: int, exact: ExactVectors | None, kept: Kept, breadth: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` per query among the chunks ``kept`` keeps: (scores, chunk ids), padded with
    (-inf, -1), scores exact (see the module). ``breadth``: the candidates an ANN shard re-ranks."""
    n = len(shard)
    if n == 0:
        return _empty(len(queries), k)
    ann = shard.kind != "flat" and exact is not None
    need = breadth if ann else k
    known = kept.known()
    if known is not None and known * MAX_FETCH < need * n:  # remembered as too few to post-filter
        return _prefiltered(shard, queries, k, exact, kept, need)
    fetch = min(n, FETCH_FACTOR * need)
    passes: dict[int, bool] = {}  # chunk id -> kept
    while True:
        scores, candidates = shard._raw_search(queries, fetch)
        fresh = np.setdiff1d(candidates[candidates >= 0], np.fromiter(passes, np.int64, len(passes)))
        kept_now = set(kept.among(fresh).tolist())
        passes.update((int(c), c in kept_now) for c in fresh.tolist())
        rows = [
            [(s, c) for s, c in zip(srow, crow, strict=True) if c >= 0 and passes[c]]
            for srow, crow in zip(scores, candidates, strict=True)
        ]
        exhausted = shard.kind == "flat" and fetch >= n  # a flat search of every vector: nothing else to find
        if exhausted or all(len(r) >= need for r in rows):
            return _picked(queries, rows, k, need, exact if ann else None, shard.metric)
        rate = sum(passes.values()) / max(len(passes), 1)
        wider = min(n, MAX_FETCH, max(2 * fetch, math.ceil(1.5 * need / rate) if rate else 0))
        if rate == 0 or need / rate > MAX_FETCH or wider <= fetch:
            return _prefiltered(shard, queries, k, exact, kept, need)  # too selective to post-filter
        fetch = wider


def _picked(
    queries: np.ndarray, rows: list[list[tuple[float, int]]], k: int, need: int, exact: ExactVectors | None, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each query's kept candidates: as they are from a flat shard (``exact``
    None), re-ranked exactly from an ANN one."""
    if exact is None:
        return _top(rows, k)
    picked = np.full((len(queries), need), -1, dtype=np.int64)
    for q, r in enumerate(rows):
        ids = [c for _, c in r[:need]]
        picked[q, : len(ids)] = ids
    return _rerank(queries, picked, k, exact, metric)


def _prefiltered(
    shard: Shard, queries: np.ndarray, k: int, exact: ExactVectors | None, kept: Kept, need: int
) -> tuple[np.ndarray, np.ndarray]:
    allowed = kept.all()
    if len(allowed) == 0:
        return _empty(len(queries), k)
    if shard.kind != "flat" and exact is not None and len(allowed) <= EXACT_LIMIT:
        ids, vectors = kept.vectors(exact)  # the stored vectors, remembered with the ids where they can be
        return _top_of(queries, ids, vectors, k, shard.metric)
    bits = np.zeros(int(allowed.max()) + 1, dtype=bool)
    bits[allowed] = True
    bitmap = np.packbits(bits, bitorder="little")
    selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # its size in bytes
    ann = shard.kind != "flat" and exact is not None
    if shard.kind == "flat":
        params: Any = faiss.SearchParameters()
    else:
        params = faiss.SearchParametersIVF()
        nlist = shard.info.spec.nlist
        # The cells an unfiltered search probes hold about nprobe x n / nlist vectors; to scan as many
        # kept ones, probe n / kept times more cells, and PROBE_MARGIN times that again: a query's
        # nearest kept vectors lie beyond its nearest cells more often than its nearest vectors do.
        params.nprobe = min(nlist, math.ceil(PROBE_MARGIN * shard.info.nprobe * len(shard) / len(allowed)))
    params.sel = selector
    scores, ids = shard._raw_search(queries, min(need, len(allowed)), params=params)
    del bitmap  # held until the search is done: the selector points into it
    if not ann:
        return _padded(scores, ids, k)
    return _rerank(queries, ids, k, exact, shard.metric)


def _rerank(
    queries: np.ndarray, candidates: np.ndarray, k: int, exact: ExactVectors | None, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    assert exact is not None
    return rerank(queries, np.asarray(candidates), k, exact, metric)


def _top_of(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` of ``vectors`` (chunk ``ids``) for each query."""
    scores, out = _empty(len(queries), k)
    if not len(ids):
        return scores, out
    s = exact_scores(queries, vectors, metric)
    for q in range(len(queries)):
        order = np.lexsort((ids, -s[q]))[:k]  # best first; ties by chunk id
        scores[q, : len(order)], out[q, : len(order)] = s[q, order], ids[order]
    return scores, out


def _top(rows: list[list[tuple[float, int]]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, ids = _empty(len(rows), k)
    for q, r in enumerate(rows):
        for j, (s, c) in enumerate(r[:k]):
            scores[q, j], ids[q, j] = s, c
    return scores, ids


def _padded(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    out_s, out_i = _empty(len(scores), k)
    width = min(k, scores.shape[1])
    out_s[:, :width], out_i[:, :width] = scores[:, :width], ids[:, :width]
    return out_s, out_i


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
