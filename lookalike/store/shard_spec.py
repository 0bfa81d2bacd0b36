"""What one shard's index needs to know of its workspace, and nothing more.

The workspace builds a :class:`ShardSpec` when a pod opens its shard
(:meth:`~lookalike.store.workspace.Workspace.open_shard`), so the shard index depends on the doc
store and this handle, never on the workspace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lookalike.store.tuning import ExactVectors
from lookalike.store.vectors import IndexBudget


@dataclass(frozen=True)
class ShardSpec:
    folder: Path  # shard-N/ in the workspace: its snapshot and its locks
    shard: int
    dim: int
    metric: str
    shards: int  # the workspace's shard count: a logged change to a shard past it means it was re-sharded
    budget: IndexBudget  # this shard's part of the workspace's index budget
    persist: bool  # this holder writes the snapshot and builds new index types (a writer)
    check_identity: Callable[[str | None], None]  # refuses a store another process re-built for other vectors
    exact: ExactVectors  # the stored vectors of chunk ids, for exact re-ranking

    @property
    def workspace(self) -> Path:
        return self.folder.parent
