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
    folder: Path  # shard-N/ (or SPACE-shard-N/) in the workspace: its snapshot and its locks
    shard: int  # its slot in the doc store: which chunks and which entries of the vector log are its
    dim: int
    metric: str
    shards: int  # the workspace's slots: a logged change to a slot past them means it was re-sharded
    budget: IndexBudget  # this shard's part of the workspace's index budget
    persist: bool  # this holder writes the snapshot and builds new index types (a writer)
    check_identity: Callable[[str | None], None]  # refuses a store another process re-built for other vectors
    exact: ExactVectors  # the stored vectors of chunk ids, for exact re-ranking

    space: str = "image"  # the vector space it is a shard of
    index: int = 0  # which shard of that space

    @property
    def label(self) -> str:
        """How the shard is named to people: its number, with its space's name past the first space."""
        return str(self.index) if self.folder.name.startswith("shard-") else f"{self.space}/{self.index}"

    @property
    def workspace(self) -> Path:
        return self.folder.parent
