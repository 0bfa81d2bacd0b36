"""One shard of vectors: a FAISS index keyed by chunk id, of a type chosen for the collection's size.

Embeddings are L2-normalised, so inner product is cosine similarity. Indexes are derived data: the
doc store keeps every vector (as float16) and is the source of truth for rebuilds and re-ranking.

Index types follow the collection, the way autofaiss picks them (``choose_index``):

- ``flat``: exact search over float32 copies of the stored vectors, while a full scan meets the
  latency target (about 10,000 vectors of 1280-d at 5 ms on one core of these machines) and fits
  the memory budget. Results are those of exact search.
- ``ivf-sq8``: an inverted file over k-means cells with 8-bit scalar codes (one byte a dimension),
  once exact search is too slow and while the codes fit the memory budget.
- ``ivf-pq``: the same with product-quantizer codes (``m`` bytes a vector), when SQ8 codes do not fit.

An ANN shard over-fetches candidates and re-ranks them exactly against the stored vectors, so its
scores are exact and shards merge to a global top-k as before; only a candidate the ANN index
misses can be missed. ``nprobe`` is tuned at build time on a held-out sample (each sampled vector
searched as a query with itself left out) to reach ``TARGET_RECALL``, and the recall@10 measured
there is kept with the snapshot for ``lookalike info`` (:mod:`lookalike.store.tuning`).

An IVF snapshot (:mod:`lookalike.store.snapshots`) is loaded memory-mapped (the codes stay in the
page cache, shared between processes); the first add or remove copies it into memory, since a
mapped index is read-only.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from lookalike.settings import default, parse_bytes
from lookalike.store.filtered import Kept, filtered_search
from lookalike.store.tuning import (
    TUNING_QUERIES,
    ExactVectors,
    TopK,
    VectorBlocks,
    held_out_recall,
    rerank,
    training_sample,
    tune_nprobe,
)

METRICS = ("cosine", "l2")
KINDS = ("flat", "ivf-sq8", "ivf-pq")

# A one-core scan of float32 vectors runs at about this many bytes a second on these machines
# (bench/scale.py measures it: a 1280-d flat search over 100,000 vectors takes ~47 ms). It sets the
# size up to which exact search meets the latency target.
FLAT_SCAN_BYTES_PER_S = 10e9
TRAIN_PER_CELL = 40
MIN_ANN_VECTORS = 2000  # fewer are always searched exactly (PQ's k-means alone wants 256 a code)
# An ANN shard re-ranks (kind -> (at least, times k)) candidates a query exactly: SQ8 scores are
# close to exact, so few are needed (bench/scale.py at 1M: recall the same at 20 as at 40, p50 ~1 ms
# less, each candidate being a SQLite read); PQ codes are coarser.
RERANK = {"ivf-sq8": (20, 2), "ivf-pq": (100, 10)}
PQ_CHOICES = (256, 160, 128, 80, 64, 40, 32, 20, 16, 10, 8)  # code bytes, largest (most accurate) first


def _default_memory() -> int:
    return parse_bytes(default("LOOKALIKE_INDEX_MEMORY"), "LOOKALIKE_INDEX_MEMORY")


def _default_latency() -> float:
    return float(default("LOOKALIKE_INDEX_LATENCY_MS"))


@dataclass(frozen=True)
class IndexBudget:
    """What an index may cost: its RAM, and the latency of one query on one core (defaults from
    the settings table: 2 GB and 5 ms)."""

    memory_bytes: int = field(default_factory=_default_memory)
    latency_ms: float = field(default_factory=_default_latency)

    def per_shard(self, shards: int) -> IndexBudget:
        return IndexBudget(self.memory_bytes // max(shards, 1), self.latency_ms)


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "flat"
    nlist: int = 0  # IVF cells
    pq_m: int = 0  # PQ code bytes

    def factory(self) -> str:
        if self.kind == "flat":
            return "Flat"
        codes = "SQ8" if self.kind == "ivf-sq8" else f"PQ{self.pq_m}"
        return f"IVF{self.nlist},{codes}"

    @property
    def rank(self) -> int:
        return KINDS.index(self.kind)

    def bytes_per_vector(self, dim: int) -> int:
        """RAM a vector costs in this index: its codes and its 8-byte id."""
        codes = {"flat": 4 * dim, "ivf-sq8": dim, "ivf-pq": self.pq_m}[self.kind]
        return codes + 8


def exact_limit(dim: int, budget: IndexBudget) -> int:
    """The most vectors a one-core exact scan searches within the latency target."""
    return int(budget.latency_ms / 1000 * FLAT_SCAN_BYTES_PER_S / (4 * dim))


def choose_index(n: int, dim: int, budget: IndexBudget) -> IndexSpec:
    """The index type for ``n`` vectors: exact while it meets the budget, then the most accurate
    ANN codes that fit it (autofaiss's rule: memory first, then speed)."""
    flat = IndexSpec("flat")
    if n < MIN_ANN_VECTORS or (n <= exact_limit(dim, budget) and n * flat.bytes_per_vector(dim) <= budget.memory_bytes):
        return flat  # below MIN_ANN_VECTORS there is too little to train cells on, whatever the budget
    # About 2·sqrt(n) cells (a power of two): a few hundred vectors per cell, trained on
    # TRAIN_PER_CELL vectors a cell (FAISS's k-means wants at least 39).
    nlist = int(2 ** round(math.log2(max(2 * math.sqrt(n), 64))))
    nlist = max(16, min(nlist, 8192, 2 ** int(math.log2(max(n // TRAIN_PER_CELL, 16)))))
    centroids = nlist * dim * 4
    sq8 = IndexSpec("ivf-sq8", nlist)
    if n * sq8.bytes_per_vector(dim) + centroids <= budget.memory_bytes:
        return sq8
    sizes = [m for m in PQ_CHOICES if dim % m == 0]
    for m in sizes:
        pq = IndexSpec("ivf-pq", nlist, m)
        if n * pq.bytes_per_vector(dim) + centroids <= budget.memory_bytes:
            return pq
    # Nothing fits: the smallest codes there are (the budget is exceeded, and `info` shows by how much).
    return IndexSpec("ivf-pq", nlist, sizes[-1]) if sizes else sq8


def needs_new_index(current: IndexSpec, trained_on: int, n: int, dim: int, budget: IndexBudget) -> IndexSpec | None:
    """The spec to rebuild as, when the collection (or the budget) has outgrown the current index.

    The index moves up a type as the collection grows, changes codes when the budget says so, and
    is retrained once it has grown 4x past what its cells were trained for. It moves back to exact
    search only below half the exact limit, so a collection at the boundary does not flip back and
    forth."""
    want = choose_index(n, dim, budget)
    if want.kind == "flat":
        return want if current.kind != "flat" and n < exact_limit(dim, budget) // 2 else None
    if current.kind == "flat" or (want.kind, want.pq_m) != (current.kind, current.pq_m):
        return want
    if n > 4 * max(trained_on, 1) and want.nlist > current.nlist:
        return want
    return None


@dataclass
class IndexInfo:
    """What a shard's index is, as built: kept in its snapshot and shown by `lookalike info`."""

    kind: str = "flat"
    factory: str = "Flat"
    nprobe: int = 0
    recall_at_10: float | None = 1.0  # measured on a held-out sample at build; 1.0 = exact
    recall_queries: int = 0
    trained_on: int = 0  # vectors the index was built from
    built_at: float = field(default_factory=time.time)
    build_s: float = 0.0

    @property
    def spec(self) -> IndexSpec:
        if self.kind == "flat":
            return IndexSpec()
        nlist, codes = self.factory.removeprefix("IVF").split(",")
        return IndexSpec(self.kind, int(nlist), int(codes.removeprefix("PQ")) if codes.startswith("PQ") else 0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexInfo:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class _ReadWriteLock:
    """Many searches at once (FAISS searches are thread-safe and release the GIL), or one change."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and self._readers == 0)
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def _ivf_params(nprobe: int) -> Any:
    params: Any = faiss.SearchParametersIVF()
    params.nprobe = max(int(nprobe), 1)
    return params


def _as_f32(vectors: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)


class VectorShard:
    """Scores are "higher is closer" for both metrics: cosine similarity, or minus the Euclidean
    distance for "l2" (so ranking code never needs to know which)."""

    def __init__(self, dim: int, shard: int = 0, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        self.dim = dim
        self.shard = shard
        self.metric = metric
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlat(dim, _metric(metric)))
        self.info = IndexInfo()
        self.mapped = False  # a memory-mapped (read-only) IVF index, copied into memory on first change
        self.file: str | None = None  # the snapshot file it was loaded from or saved to (its contents, while mapped)
        self._lock = _ReadWriteLock()

    @classmethod
    def from_index(cls, dim: int, shard: int, metric: str, index: Any, info: IndexInfo, file: str) -> VectorShard:
        """A shard over a FAISS index read from its snapshot ``file`` (an IVF one memory-mapped)."""
        out = cls(dim, shard, metric)
        out._index, out.info, out.mapped, out.file = index, info, info.kind != "flat", file
        return out

    # --- shape ---------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.info.kind

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def memory_bytes(self) -> int:
        """The RAM (or page cache, when mapped) the index's vectors, codes and ids take."""
        n = len(self)
        spec = self.info.spec
        centroids = spec.nlist * self.dim * 4
        return n * spec.bytes_per_vector(self.dim) + centroids

    # --- changes -------------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = _as_f32(vectors, self.dim)
        with self._lock.writing():
            self._own_memory()
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: list[int] | np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        with self._lock.writing():
            self._own_memory()
            selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
            return int(self._index.remove_ids(selector))

    def _own_memory(self) -> None:
        """A mapped index is read-only (FAISS aborts the process on a write): copy its inverted
        lists into memory before the first change."""
        if not self.mapped:
            return
        ivf: Any = faiss.extract_index_ivf(self._index)
        mapped: Any = ivf.invlists
        owned: Any = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        for cell in range(ivf.nlist):
            size = mapped.list_size(cell)
            if size:
                owned.add_entries(cell, size, mapped.get_ids(cell), mapped.get_codes(cell))
        ivf.replace_invlists(owned, True)
        owned.this.disown()
        self.mapped = False

    # --- searching -----------------------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, exact: ExactVectors | None = None, kept: Kept | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query: (scores, chunk ids), padded with (-inf, -1) past the end.

        Exact for a flat shard. An ANN shard fetches more candidates and re-ranks them with
        ``exact`` (the stored vectors), so its scores are exact too; without ``exact`` it returns
        the index's approximate scores. ``kept``: only among the chunks a filter keeps
        (:mod:`lookalike.store.filtered`)."""
        queries = _as_f32(np.atleast_2d(queries), self.dim)
        k = max(1, min(k, max(len(self), 1)))
        if kept is not None:
            breadth = max(k * RERANK[self.kind][1], RERANK[self.kind][0]) if self.kind != "flat" else k
            return filtered_search(self, queries, k, exact, kept, breadth)
        if self.kind == "flat" or exact is None:
            return self._raw_search(queries, k)
        least, times = RERANK[self.kind]
        fetch = min(max(k * times, least), max(len(self), 1))
        _, candidates = self._raw_search(queries, fetch)
        return rerank(queries, candidates, k, exact, self.metric)

    def _raw_search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None, params: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The index's own top-``k`` (approximate scores on an ANN shard); ``params``: FAISS's
        search parameters (a selector), else the tuned ``nprobe``."""
        if params is None and self.kind != "flat":
            params = _ivf_params(nprobe or self.info.nprobe)
        with self._lock.reading():
            scores, ids = self._index.search(queries, k, params=params)
        if self.metric == "l2":  # FAISS gives squared distances, smallest first
            scores = -np.sqrt(np.maximum(scores, 0))
        scores[ids < 0] = -np.inf
        return scores, ids

    def range_search(
        self, queries: np.ndarray, threshold: float, exact: ExactVectors | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector whose inner product with a query is at least ``threshold``.

        Returns FAISS's CSR layout ``(lims, scores, chunk ids)``: query ``i``'s hits are
        ``scores[lims[i]:lims[i + 1]]`` and ``ids[lims[i]:lims[i + 1]]``, in no particular order.
        An ANN shard searches a little below the threshold and checks the hits exactly."""
        queries = _as_f32(np.atleast_2d(queries), self.dim)
        if len(self) == 0 or len(queries) == 0:
            return np.zeros(len(queries) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        ann = self.kind != "flat" and exact is not None
        # FAISS keeps results strictly *above* the radius for inner product; step one float below
        # the threshold so that "at least" holds, identical copies at exactly 1.0 included.
        slack = {"ivf-sq8": 0.05, "ivf-pq": 0.2}.get(self.kind, 0.0) if ann else 0.0  # codes' score error
        radius = float(np.nextafter(np.float32(threshold - slack), np.float32(-np.inf)))
        params = _ivf_params(self.info.nprobe) if self.kind != "flat" else None
        with self._lock.reading():
            lims, scores, ids = self._index.range_search(queries, radius, params=params)
        lims, scores, ids = lims.astype(np.int64), scores.astype(np.float32), ids.astype(np.int64)
        if not ann or exact is None:
            return lims, scores, ids
        found, vectors = exact(np.unique(ids))
        row = {int(c): i for i, c in enumerate(found)}
        out_lims, out_scores, out_ids = [0], [], []
        for q in range(len(queries)):
            hits = [c for c in ids[lims[q] : lims[q + 1]].tolist() if c in row]
            if hits:
                s = vectors[[row[c] for c in hits]] @ queries[q]
                keep = s >= threshold
                out_scores.extend(s[keep].tolist())
                out_ids.extend(np.asarray(hits)[keep].tolist())
            out_lims.append(len(out_ids))
        return np.asarray(out_lims, np.int64), np.asarray(out_scores, np.float32), np.asarray(out_ids, np.int64)

    def ids(self) -> np.ndarray:
        with self._lock.reading():
            if self.kind == "flat":
                return faiss.vector_to_array(self._index.id_map).astype(np.int64)
            invlists: Any = faiss.extract_index_ivf(self._index).invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(c), invlists.list_size(c)).copy()
                for c in range(invlists.nlist)
                if invlists.list_size(c)
            ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    # --- building ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        dim: int,
        shard: int,
        metric: str,
        spec: IndexSpec,
        blocks: VectorBlocks,
        exact: ExactVectors,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> VectorShard | None:
        """A new shard of type ``spec`` from every stored vector (``blocks``), tuned on a held-out
        sample; None if ``cancelled`` says to stop. Two passes over the vectors: one samples the
        training set, one adds every vector (and finds the sample's exact neighbours)."""
        start = time.perf_counter()
        out = cls(dim, shard, metric)
        if spec.kind == "flat":
            for ids, vectors in blocks():
                if cancelled():
                    return None
                out.add(ids, vectors)
            out.info = IndexInfo(trained_on=len(out))
        elif not out._train(spec, blocks, exact, cancelled):
            return None
        out.info.build_s = time.perf_counter() - start
        return out

    def _train(self, spec: IndexSpec, blocks: VectorBlocks, exact: ExactVectors, cancelled: Callable[[], bool]) -> bool:
        """Train this (empty) shard as the IVF index ``spec``, add every vector and tune ``nprobe``;
        False if cancelled meanwhile."""
        sampled = training_sample(blocks, spec.nlist * TRAIN_PER_CELL, TUNING_QUERIES, cancelled)
        if sampled is None:
            return False
        train, sample_ids, sample = sampled
        index = faiss.index_factory(self.dim, spec.factory(), _metric(self.metric))
        if spec.kind == "ivf-pq":
            ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(index))
            ivf.pq.cp.max_points_per_centroid = 64  # each sub-quantizer's k-means on 16k points: 4x faster
            ivf.use_precomputed_table = -1  # an l2 table of nlist x m x 256 floats would break the budget
        index.train(train)
        del train
        truth = TopK(sample_ids, sample, 11, self.metric)  # a query's own vector is among its 11 nearest
        for ids, vectors in blocks():
            if cancelled():
                return False
            index.add_with_ids(_as_f32(vectors, self.dim), np.ascontiguousarray(ids, dtype=np.int64))
            truth.update(ids, _as_f32(vectors, self.dim))
        self._index = index
        self.info = IndexInfo(kind=spec.kind, factory=spec.factory(), nprobe=1, trained_on=len(self))
        tuned = tune_nprobe(lambda nprobe: self._recall_at(nprobe, truth, exact), spec.nlist, cancelled)
        if tuned is None:
            return False
        self.info.nprobe, self.info.recall_at_10 = tuned
        self.info.recall_queries = len(truth.query_ids)
        return True

    def _recall_at(self, nprobe: int, truth: TopK, exact: ExactVectors) -> float:
        self.info.nprobe = nprobe
        return self.held_out_recall(truth.query_ids, truth.queries, truth.neighbours(), exact)

    def held_out_recall(
        self, query_ids: np.ndarray, queries: np.ndarray, truth: list[np.ndarray], exact: ExactVectors, k: int = 10
    ) -> float:
        """recall@k of this shard's search (re-ranked) against ``truth``, each query's own id left out."""
        return held_out_recall(lambda q, n: self.search(q, n, exact), query_ids, queries, truth, k)

    # --- snapshots -----------------------------------------------------------------------------

    def write_index(self, path: str) -> int:
        """Write the FAISS index to ``path``; the number of vectors written. A mapped index is
        copied into memory first (FAISS would write it as a stub pointing at its file)."""
        if self.mapped:
            with self._lock.writing():
                self._own_memory()
        with self._lock.reading():
            faiss.write_index(self._index, path)
            return len(self)
