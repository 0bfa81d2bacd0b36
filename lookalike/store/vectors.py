"""One shard of vectors: an exact inner-product FAISS index keyed by chunk id, with snapshots.

Embeddings are L2-normalised, so inner product is cosine similarity. The index is derived data: a
snapshot on disk records the doc store generation it reflects; the workspace brings an older one
forward from the doc store's vector log, and rebuilds a damaged one from the doc store.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from lookalike.atomic import atomic_write

INDEX_FILE = "index.faiss"
STATE_FILE = "snapshot.json"


METRICS = ("cosine", "l2")


class VectorShard:
    """Scores are "higher is closer" for both metrics: cosine similarity, or minus the Euclidean
    distance for "l2" (so ranking code never needs to know which)."""

    def __init__(self, dim: int, shard: int = 0, metric: str = "cosine"):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        self.dim = dim
        self.shard = shard
        self.metric = metric
        flat = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        self._index = faiss.IndexIDMap2(flat)
        self._lock = threading.Lock()  # FAISS allows concurrent searches but not search during add

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: list[int] | np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        with self._lock:
            return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))  # type: ignore[arg-type]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` per query: (scores, chunk ids), padded with (-inf, -1) past the end."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = max(1, min(k, max(len(self), 1)))
        with self._lock:
            scores, ids = self._index.search(queries, k)
        if self.metric == "l2":  # FAISS gives squared distances, smallest first
            scores = -np.sqrt(np.maximum(scores, 0))
        scores[ids < 0] = -np.inf
        return scores, ids

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector whose inner product with a query is at least ``threshold``.

        Returns FAISS's CSR layout ``(lims, scores, chunk ids)``: query ``i``'s hits are
        ``scores[lims[i]:lims[i + 1]]`` and ``ids[lims[i]:lims[i + 1]]``, in no particular order.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if len(self) == 0 or len(queries) == 0:
            return np.zeros(len(queries) + 1, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        # FAISS keeps results strictly *above* the radius for inner product; step one float below
        # the threshold so that "at least" holds, identical copies at exactly 1.0 included.
        radius = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
        with self._lock:
            lims, scores, ids = self._index.range_search(queries, radius)
        return lims.astype(np.int64), scores.astype(np.float32), ids.astype(np.int64)

    def ids(self) -> np.ndarray:
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def snapshot(self) -> Snapshot:
        """The index as bytes, taken under the shard's lock (cheap next to writing it out)."""
        with self._lock:
            data = faiss.serialize_index(self._index).tobytes()
            count = len(self)
        return Snapshot(self.shard, data, count, self.dim, self.metric)

    def save(self, folder: Path, generation: int) -> None:
        self.snapshot().write(folder, generation)

    @classmethod
    def load(cls, folder: Path, dim: int, shard: int, metric: str = "cosine") -> tuple[VectorShard, int] | None:
        """The snapshot in ``folder`` and the generation it reflects; None if missing or damaged.

        The index and its state are two files, so a crash (or another process saving) between the
        two renames can pair an index with another save's state: the state carries the index's
        SHA-256, and an index that does not match it, or holds an id twice, is refused. The caller
        decides whether the generation is usable (the store's, or one the vector log brings forward).
        """
        try:
            state = json.loads((folder / STATE_FILE).read_text())
            if state.get("dim") != dim or state.get("metric", "cosine") != metric:
                return None
            raw = (folder / INDEX_FILE).read_bytes()
            if hashlib.sha256(raw).hexdigest() != state.get("sha256"):
                return None
            index = faiss.deserialize_index(np.frombuffer(raw, dtype=np.uint8))
            generation = int(state["generation"])
        except (OSError, ValueError, RuntimeError, KeyError, TypeError):
            return None
        if not isinstance(index, faiss.IndexIDMap2) or index.ntotal != state.get("count") or index.d != dim:
            return None
        ids = faiss.vector_to_array(index.id_map)
        if len(np.unique(ids)) != len(ids):
            return None
        out = cls(dim, shard, metric)
        out._index = index
        return out, generation


@dataclass
class Snapshot:
    """A shard's index as bytes, ready to be written out (without holding any lock)."""

    shard: int
    data: bytes
    count: int
    dim: int
    metric: str

    def write(self, folder: Path, generation: int) -> None:
        """The index, then its state naming the generation and the index's digest; each atomically."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / INDEX_FILE, self.data)
        state = {
            "generation": generation,
            "count": self.count,
            "dim": self.dim,
            "shard": self.shard,
            "metric": self.metric,
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }
        atomic_write(folder / STATE_FILE, json.dumps(state).encode())


def snapshot_generation(folder: Path) -> int | None:
    """The generation of the snapshot in ``folder``, if there is a readable one."""
    try:
        return int(json.loads((folder / STATE_FILE).read_text())["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
