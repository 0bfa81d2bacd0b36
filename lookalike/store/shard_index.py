"""One shard's part of the vector index, held and persisted by the shard pod that owns it.

A :class:`ShardIndex` is what a ``VectorIndexer`` pod opens for its shard, in whichever process
the pod runs (a thread of the local runtime, a Ray actor on another node). It is derived data:

- on open, it loads its snapshot (``shard-N/``) and replays the commits made since from the doc
  store's vector log (only its own shard's entries); a snapshot too old, or none, is rebuilt from
  the committed vectors of this shard;
- :meth:`sync` brings it forward the same way, so it sees every process's commits, removals
  included; a search syncs first;
- when its collection outgrows its index type, a new index is built in a background thread and
  swapped in once caught up (the old one serves meanwhile);
- :meth:`flush` writes its snapshot (atomically: index file, then the state naming it), under the
  shard's own lock, never over a newer one another process wrote.

The commit itself (documents and vectors in one SQLite transaction) is the doc indexer's: a
vector becomes searchable here only once its document is committed, and a crash anywhere leaves
at worst a stale snapshot, which the log brings forward.

Its parts: :class:`ShardSource` (the store's side), :class:`ShardSnapshots` (the folder's side),
:class:`BackgroundBuild` (the build thread); what it knows of its workspace is a :class:`ShardSpec`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore
from lookalike.store.filtered import Kept
from lookalike.store.shard_builds import BackgroundBuild
from lookalike.store.shard_source import ShardSource
from lookalike.store.shard_spec import ShardSpec
from lookalike.store.snapshots import ShardSnapshots
from lookalike.store.vectors import IndexSpec, VectorShard, needs_new_index


class ShardIndex:
    """Shard ``spec.shard`` of the vectors in ``store``. ``spec.persist``: this holder writes the
    snapshot and builds new index types (a writer); a reader only loads and brings forward."""

    def __init__(self, store: DocStore, spec: ShardSpec):
        self.store = store
        self.spec = spec
        self.shard = spec.shard
        self.folder = spec.folder
        self.persist = spec.persist
        self.vectors = VectorShard(spec.dim, spec.shard, spec.metric)
        self.generation = -1  # the store generation this index reflects
        self._sync_lock = threading.RLock()  # replay, swaps and snapshot writes
        self._closing = False
        self._source = ShardSource(store, spec)
        self._snapshots = ShardSnapshots(spec)
        self._builds = BackgroundBuild(spec.shard, size=lambda: len(self.vectors), closing=lambda: self._closing)
        self._load()

    # --- opening ------------------------------------------------------------------------------

    def _load(self) -> None:
        loaded = self._snapshots.load()
        with self.store.snapshot_read() as state:
            self.spec.check_identity(state.identity)
            current, floor = state.generation, state.log_floor
        if loaded is not None and floor <= loaded[1] <= current:
            self.vectors, self.generation = loaded
            self._snapshots.loaded(loaded[1])
            self.sync(upgrade=False)
        elif self.persist:
            # Several holders may open a shard without a usable snapshot at once (a server's index
            # and query pods): one rebuilds and saves, the others wait and load what it saved.
            with self._snapshots.rebuild_lock():
                again = self._snapshots.load()
                if again is not None and floor <= again[1] <= self.store.generation:  # saved while we waited
                    self.vectors, self.generation = again
                    self._snapshots.saved = again[1]
                else:
                    self._rebuild()
                    self._snapshots.save(self.vectors, self.generation)
            self._snapshots.mark_seen()
            self.sync(upgrade=False)
        else:
            self._rebuild()
        self._maybe_upgrade()  # a new budget, or a collection grown by another holder

    def _rebuild(self) -> None:
        self.vectors, self.generation = self._source.rebuild(cancelled=lambda: self._closing)

    # --- catching up --------------------------------------------------------------------------

    def sync(self, upgrade: bool = True) -> bool:
        """Catch up with the commits made since this index's generation, by any process; True if
        any. A newer index type another process built is adopted; a writer may start building one
        (``upgrade``) and writes its snapshot once it is LAZY_FLUSH_GENERATIONS behind."""
        if self._source.generation == self.generation:  # the common case, without the lock
            return False
        with self._sync_lock:
            replayed = self._replay(self.vectors, self.generation)
            if replayed is None:
                self._rebuild()
            elif replayed == self.generation:
                return False
            else:
                self.generation = replayed
                self._adopt_newer_snapshot()
        if upgrade:
            self._maybe_upgrade()
            try:
                self.flush(lazy=True)
            except StoreError as e:  # a search must not fail for a snapshot; the log covers it
                self._snapshots.error = str(e)
        return True

    def _replay(self, target: VectorShard, since: int, until: int | None = None) -> int | None:
        return self._source.replay(target, since, until)

    def _adopt_newer_snapshot(self) -> None:
        """Load the snapshot another process built as a newer type (and bring it forward) instead
        of outgrowing our own index."""
        if self.building:
            return
        theirs = self._snapshots.newer_type(self.vectors.info, self.generation)
        if theirs is not None and self._replay(theirs[0], theirs[1], self.generation) == self.generation:
            self.vectors = theirs[0]

    # --- index types follow the collection ----------------------------------------------------

    def _maybe_upgrade(self) -> None:
        """Start building a new index (in the background) if this shard outgrew its own."""
        if not self.persist or self._closing:
            return
        info = self.vectors.info
        index_type = needs_new_index(info.spec, info.trained_on, len(self.vectors), self.spec.dim, self.spec.budget)
        self._builds.offer(index_type, self._build_and_swap)

    def start_build(self, index_type: IndexSpec) -> threading.Thread:
        """Build this shard anew as ``index_type`` in a background thread from the committed
        vectors; swap it in once it has caught up, and snapshot it. Until then (and if the process
        dies meanwhile) the old index serves. A build already running is waited for first."""
        return self._builds.start(index_type, self._build_and_swap)

    def _build_and_swap(self, index_type: IndexSpec) -> None:
        # The whole build reads one SQLite snapshot (so it is exactly one generation); WAL cannot
        # checkpoint past it meanwhile, so the WAL file grows by the commits made during a build.
        # One holder of this shard builds (another process, or the server's other pod, may be at it
        # already: then its snapshot is adopted once written). Held until the new index is saved,
        # so no other holder starts the same build meanwhile.
        with self._snapshots.build_lock() as ours:
            if not ours:
                return
            with self.store.snapshot_read() as state:
                built = self._source.build(index_type, cancelled=lambda: self._closing)
                since = state.generation
            if built is None:
                return
            with self._sync_lock:
                if self._closing:
                    return
                if since > self.generation:  # a commit landed before the build read: catch up to it
                    caught_up = self._replay(self.vectors, self.generation, since)
                    if caught_up is None:
                        return  # reset or re-sharded meanwhile: the next sync decides afresh
                    self.generation = caught_up
                # Brought to exactly this index's generation, then swapped in: a sync after us
                # applies later commits to the new one.
                if self._replay(built, since, self.generation) != self.generation:
                    return
                self.vectors = built
                self._snapshots.saved = None  # the snapshot on disk is of the old index
            self.flush()

    @property
    def building(self) -> bool:
        return self._builds.running

    def wait_for_build(self, timeout: float | None = None) -> None:
        """Wait for a background build; a failed one is a StoreError (the old index serves)."""
        self._builds.wait(timeout)

    def finish(self) -> None:
        """What the end of an indexing run leaves: caught up, the right index type built (waited
        for), and the snapshot written. Nothing to do if another holder already did it; a snapshot
        another holder wrote at the store's generation is taken as it is, not replayed up to."""
        with self._sync_lock:
            current = self._snapshots.current(self.vectors.info, self.generation, lambda: self.store.generation)
            if current is not None:
                self.vectors, self.generation = current
        self.sync(upgrade=False)
        self._maybe_upgrade()
        try:
            self.wait_for_build()
        finally:
            self.flush()

    # --- persisting ---------------------------------------------------------------------------

    def flush(self, lazy: bool = False) -> None:
        """Write the snapshot if this index is newer than the one on disk (by any process).

        ``lazy``: only once LAZY_FLUSH_GENERATIONS commits behind (the log brings an older snapshot
        forward on open just as well). Written under this shard's lock, straight from memory."""
        if not self.persist:
            return
        with self._sync_lock:
            self._snapshots.write(self.vectors, self.generation, lazy)

    def close(self, flush: bool = True) -> None:
        """Stop a build (the old index stays on disk) and snapshot."""
        self._closing = True
        self._builds.stop(10.0)
        if flush:
            self.flush()

    def __enter__(self) -> ShardIndex:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(flush=exc_type is None)

    # --- reading ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def kind(self) -> str:
        return self.vectors.kind

    def search(self, queries: np.ndarray, k: int, kept: Kept | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` with exact scores (an ANN index re-ranks its candidates against the stored
        vectors), after catching up with every process's commits; ``kept``: among what a filter keeps."""
        self.sync()
        return self.vectors.search(queries, k, self.spec.exact, kept)

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector at least ``threshold`` from a query (exact scores), after catching up."""
        self.sync()
        return self.vectors.range_search(queries, threshold, self.spec.exact)

    def ids(self) -> np.ndarray:
        return self.vectors.ids()

    def describe(self) -> dict[str, Any]:
        """Its index type, size, memory and measured recall (for `lookalike info` and /api/stats)."""
        info = self.vectors.info
        return {
            "shard": self.spec.index,
            "space": self.spec.space,
            "label": self.spec.label,
            "type": info.kind,
            "factory": info.factory,
            "vectors": len(self.vectors),
            "memory_bytes": self.vectors.memory_bytes(),
            "nprobe": info.nprobe or None,
            "recall_at_10": info.recall_at_10,
            "recall_queries": info.recall_queries,
            "built_from": info.trained_on,
            "mapped": self.vectors.mapped,
            "building": self.building,
            "build_error": self._builds.error or self._snapshots.error,
        }

    def measure_recall(self, queries: int = 200, k: int = 10) -> float:
        """recall@k against exact search over the stored vectors, now, on ``queries`` of its
        vectors held out (each searched with itself left out)."""
        self.sync()
        if self.kind == "flat":
            return 1.0
        return self._source.measure_recall(self.vectors, queries, k)
