"""Every shard's index of a workspace at once, opened in this process and checked against the doc store.

Shard pods hold one shard each; tools that read them all (`lookalike info`, `dupes`, the checks
tests and benchmarks run) open them here, as the pods would open them now.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from lookalike.store.docstore import DocStore
from lookalike.store.shard_index import ShardIndex

# verify() reads the doc store and the shards at one generation; a commit landing in between
# makes it read again, this many times at most.
VERIFY_TRIES = 5


class OpenShard(Protocol):
    def __call__(self, shard: int, *, space: str | None = None, persist: bool | None = None) -> ShardIndex: ...


class ShardSet:
    """The shards ``shards`` names, (space, shard) each, each opened with ``open_shard``."""

    def __init__(self, store: DocStore, open_shard: OpenShard, shards: list[tuple[str, int]]):
        self.store = store
        self.open_shard = open_shard
        self.shards = shards

    def open(self) -> list[ShardIndex]:
        """Every shard's index, opened read-only (never persisted from here); close them."""
        opened: list[ShardIndex] = []
        try:
            for space, i in self.shards:
                opened.append(self.open_shard(i, space=space, persist=False))
        except BaseException:
            for shard in opened:
                shard.close(flush=False)
            raise
        return opened

    @contextmanager
    def opened(self, given: list[ShardIndex] | None) -> Iterator[list[ShardIndex]]:
        """``given``, or every shard's index opened here for the block."""
        if given is not None:
            yield given
            return
        shards = self.open()
        try:
            yield shards
        finally:
            for shard in shards:
                shard.close(flush=False)

    def finish(self) -> list[dict[str, Any]]:
        """What an index flow's shard pods do when it closes, for a writer that commits without a
        flow (a benchmark, a tool): every shard caught up, built as the right type (waited for)
        and snapshotted. Each shard's description, after."""
        out = []
        for space, i in self.shards:
            with self.open_shard(i, space=space) as shard:
                shard.finish()
                out.append(shard.describe())
        return out

    def describe(self, given: list[ShardIndex] | None = None) -> list[dict[str, Any]]:
        with self.opened(given) as shards:
            return [shard.describe() for shard in shards]

    def measure_recall(self, queries: int, k: int, given: list[ShardIndex] | None = None) -> list[float]:
        """recall@k of each shard's index against exact search (see ShardIndex.measure_recall)."""
        with self.opened(given) as shards:
            return [shard.measure_recall(queries, k) for shard in shards]

    def verify(self, given: list[ShardIndex] | None = None) -> list[str]:
        """Consistency problems between the doc store and the shards' indexes as their pods would
        open them now (empty when consistent). Both sides are read at one generation."""
        with self.opened(given) as shards:
            for _ in range(VERIFY_TRIES):
                for shard in shards:
                    shard.sync(upgrade=False)
                with self.store.snapshot_read() as state:
                    ids = self.store.chunk_ids(shard.spec.shard for shard in shards)
                    shard_ids = [shard.ids() for shard in shards]
                    if all(shard.generation == state.generation for shard in shards):
                        break
        problems = []
        for shard, held in zip(shards, shard_ids, strict=True):
            if len(np.unique(held)) != len(held):
                problems.append(f"shard {shard.spec.label} holds duplicate vectors")
        searchable = np.unique(np.concatenate(shard_ids)) if shard_ids else np.zeros(0, np.int64)
        orphans = np.setdiff1d(searchable, ids, assume_unique=True)
        if len(orphans):
            problems.append(f"{len(orphans)} searchable vectors belong to no indexed document")
        unsearchable = np.setdiff1d(ids, searchable, assume_unique=True)
        if len(unsearchable):
            problems.append(f"{len(unsearchable)} stored vectors are not searchable")
        return problems
