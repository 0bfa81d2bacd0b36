"""The doc store as one shard's index sees it: its committed vectors, and its part of the vector log."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import numpy as np

from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore
from lookalike.store.shard_spec import ShardSpec
from lookalike.store.tuning import TopK
from lookalike.store.vectors import IndexSpec, VectorShard, choose_index


class ShardSource:
    """Builds a shard's index from what the store committed, and brings one forward from the log."""

    def __init__(self, store: DocStore, spec: ShardSpec):
        self.store = store
        self.spec = spec

    @property
    def generation(self) -> int:
        """The store's generation now (the common check before any catching up)."""
        try:
            return self.store.generation
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the doc store of {self.spec.workspace}: {e}") from e

    def build(self, index_type: IndexSpec | None, cancelled: Callable[[], bool]) -> VectorShard | None:
        """The shard built from the committed vectors, as ``index_type`` or else the type their
        number calls for; None if cancelled. Call inside one ``snapshot_read``."""
        spec = self.spec
        index_type = index_type or choose_index(self.store.count_shard(spec.shard), spec.dim, spec.budget)
        return VectorShard.build(
            spec.dim,
            spec.shard,
            spec.metric,
            index_type,
            lambda: self.store.shard_vector_blocks(spec.shard, spec.dim),
            spec.exact,
            cancelled=cancelled,
        )

    def rebuild(self, cancelled: Callable[[], bool]) -> tuple[VectorShard, int]:
        """The shard from what SQLite committed, read at one generation, and that generation."""
        with self.store.snapshot_read() as state:
            self.spec.check_identity(state.identity)
            built = self.build(None, cancelled)
        if built is None:
            raise StoreError(
                f"the workspace {self.spec.workspace} was closed while shard {self.spec.shard} was rebuilt"
            )
        return built, state.generation

    def replay(self, target: VectorShard, since: int, until: int | None = None) -> int | None:
        """Apply this shard's part of the vector log after ``since`` (up to ``until``, else the
        store's generation) to ``target``; the generation it is at now, or None if the log cannot
        bring it there (then rebuild)."""
        with self.store.snapshot_read() as state:
            end = state.generation if until is None else until
            if end == since:
                return since
            self.spec.check_identity(state.identity)
            if state.generation < end or end < since or since < state.log_floor:
                return None
            change = self.store.logged_changes(since, end)
            steps: list[tuple[bool, Any]] = []
            for shard, is_add, ids in change.steps:
                if shard >= self.spec.shards:
                    raise StoreError(
                        f"workspace {self.spec.workspace} was re-sharded by another process; restart to use it"
                    )
                if shard == self.spec.shard:  # vectors removed by a later commit are simply not found
                    steps.append((is_add, self.store.embeddings(ids, self.spec.dim) if is_add else ids))
        for is_add, payload in steps:
            if is_add:
                target.add(*payload)
            else:
                target.remove(payload)
        return end

    def measure_recall(self, vectors: VectorShard, queries: int, k: int) -> float:
        """recall@k of ``vectors`` against exact search over the stored vectors, now, on ``queries``
        of its vectors held out (each searched with itself left out)."""
        spec = self.spec
        with self.store.snapshot_read():
            ids = vectors.ids()
            pick = np.sort(np.random.default_rng(1).choice(ids, min(queries, len(ids)), replace=False))
            found, stored = self.store.embeddings(pick, spec.dim)
            truth = TopK(found, stored, k + 1, spec.metric)
            for block_ids, block in self.store.shard_vector_blocks(spec.shard, spec.dim):
                truth.update(block_ids, block)
        return vectors.held_out_recall(found, stored, truth.neighbours(), spec.exact, k)
