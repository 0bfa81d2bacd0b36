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
"""

from __future__ import annotations

import sqlite3
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import StoreError
from lookalike.store.locks import exclusive, try_exclusive
from lookalike.store.vectors import (
    STATE_FILE,
    IndexInfo,
    IndexSpec,
    VectorShard,
    _TopK,
    choose_index,
    needs_new_index,
    read_state,
)

if TYPE_CHECKING:
    from lookalike.store.workspace import Workspace

# A shard that applied this many commits since its last snapshot writes one when it next syncs
# (a long-running server); closing always does.
LAZY_FLUSH_GENERATIONS = 200
# How long a holder waits for another that is rebuilding this shard (a million vectors as IVF,SQ8
# take a few minutes on two cores).
REBUILD_WAIT_S = 1800.0


class ShardIndex:
    """Shard ``shard`` of ``workspace``'s vectors. ``persist``: this holder writes the snapshot and
    builds new index types (a writer); a reader only loads and brings forward."""

    def __init__(self, workspace: Workspace, shard: int, *, persist: bool | None = None):
        self.workspace = workspace
        self.store = workspace.store
        self.shard = shard
        self.folder = workspace.path / f"shard-{shard}"
        self.dim, self.metric = workspace.dim, workspace.metric
        self.persist = workspace.writer if persist is None else persist and workspace.writer
        self.vectors = VectorShard(self.dim, shard, self.metric)
        self.generation = -1  # the store generation this index reflects
        self._saved_generation: int | None = None
        self._sync_lock = threading.RLock()  # replay, swaps and snapshot writes
        self._build: tuple[threading.Thread, IndexSpec] | None = None
        self._build_lock = threading.RLock()
        self._failed_build: tuple[IndexSpec, int] | None = None  # (spec, the shard's size then)
        self._build_errors: list[str] = []
        self._closing = False
        self._seen_state = 0  # mtime_ns of the snapshot state last looked at
        self._snapshot_error: str | None = None  # why the last lazy snapshot could not be written
        self._load()

    # --- opening ------------------------------------------------------------------------------

    def _load(self) -> None:
        loaded = VectorShard.load(self.folder, self.dim, self.shard, self.metric)
        with self.store.snapshot_read() as state:
            self.workspace.check_identity(state.identity)
            current, floor = state.generation, state.log_floor
        if loaded is not None and floor <= loaded[1] <= current:
            self.vectors, self.generation = loaded
            self._saved_generation = loaded[1]
            self._seen_state = self._state_mtime()
            self.sync(upgrade=False)
        elif self.persist:
            # Several holders may open a shard without a usable snapshot at once (a server's index
            # and query pods): one rebuilds and saves, the others wait and load what it saved.
            self.folder.mkdir(exist_ok=True)
            with exclusive(self.folder, timeout=REBUILD_WAIT_S):
                again = VectorShard.load(self.folder, self.dim, self.shard, self.metric)
                if again is not None and floor <= again[1] <= self.store.generation:  # saved while we waited
                    self.vectors, self.generation = again
                    self._saved_generation = again[1]
                else:
                    self._rebuild()
                    self._save()
            self._seen_state = self._state_mtime()
            self.sync(upgrade=False)
        else:
            self._rebuild()
        self._maybe_upgrade()  # a new budget, or a collection grown by another holder

    def _rebuild(self) -> None:
        """This shard from what SQLite committed, read at one generation."""
        with self.store.snapshot_read() as state:
            self.workspace.check_identity(state.identity)
            built = self._build_index()
        if built is None:
            raise StoreError(f"the workspace {self.workspace.path} was closed while shard {self.shard} was rebuilt")
        self.vectors, self.generation = built, state.generation

    def _build_index(self, spec: IndexSpec | None = None) -> VectorShard | None:
        """Built from the committed vectors; call inside one ``snapshot_read``."""
        spec = spec or choose_index(self.store.count_shard(self.shard), self.dim, self._budget())
        return VectorShard.build(
            self.dim,
            self.shard,
            self.metric,
            spec,
            lambda: self.store.shard_vector_blocks(self.shard, self.dim),
            self.workspace.exact,
            cancelled=lambda: self._closing,
        )

    def _budget(self) -> Any:
        return self.workspace.budget.per_shard(self.workspace.n_shards_configured)

    # --- catching up --------------------------------------------------------------------------

    def sync(self, upgrade: bool = True) -> bool:
        """Catch up with the commits made since this index's generation, by any process; True if
        any. A newer index type another process built is adopted; a writer may start building one
        (``upgrade``) and writes its snapshot once it is LAZY_FLUSH_GENERATIONS behind."""
        try:
            if self.store.generation == self.generation:  # the common case, without the lock
                return False
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the doc store of {self.workspace.path}: {e}") from e
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
                self._snapshot_error = str(e)
        return True

    def _replay(self, target: VectorShard, since: int, until: int | None = None) -> int | None:
        """Apply this shard's part of the vector log after ``since`` (up to ``until``, else the
        store's generation) to ``target``; the generation it is at now, or None if the log cannot
        bring it there (then rebuild)."""
        with self.store.snapshot_read() as state:
            end = state.generation if until is None else until
            if end == since:
                return since
            self.workspace.check_identity(state.identity)
            if state.generation < end or end < since or since < state.log_floor:
                return None
            change = self.store.logged_changes(since, end)
            steps: list[tuple[bool, Any]] = []
            for shard, is_add, ids in change.steps:
                if shard >= self.workspace.n_shards_configured:
                    raise StoreError(
                        f"workspace {self.workspace.path} was re-sharded by another process; restart to use it"
                    )
                if shard == self.shard:  # vectors removed by a later commit are simply not found
                    steps.append((is_add, self.store.embeddings(ids, self.dim) if is_add else ids))
        for is_add, payload in steps:
            if is_add:
                target.add(*payload)
            else:
                target.remove(payload)
        return end

    def _state_mtime(self) -> int:
        try:
            return (self.folder / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return 0

    def _adopt_newer_snapshot(self) -> None:
        """Load the snapshot another process built as a newer type (and bring it forward) instead
        of outgrowing our own index."""
        mtime = self._state_mtime()
        if mtime in (0, self._seen_state) or self.building:
            return
        state = read_state(self.folder)
        if state is None or int(state.get("generation", 0)) > self.generation:
            return  # written at a generation we have not reached yet: looked at again next time
        self._seen_state = mtime
        theirs = IndexInfo.from_dict(state.get("index") or {})
        if theirs.built_at <= self.vectors.info.built_at or theirs.spec.rank < self.vectors.info.spec.rank:
            return
        loaded = VectorShard.load(self.folder, self.dim, self.shard, self.metric)
        if loaded is None or loaded[1] > self.generation:
            return
        if self._replay(loaded[0], loaded[1], self.generation) == self.generation:
            self.vectors = loaded[0]

    # --- index types follow the collection ----------------------------------------------------

    def _maybe_upgrade(self) -> None:
        """Start building a new index (in the background) if this shard outgrew its own."""
        if not self.persist or self._closing:
            return
        with self._build_lock:
            if self.building:
                return
            info = self.vectors.info
            spec = needs_new_index(info.spec, info.trained_on, len(self.vectors), self.dim, self._budget())
            failed = self._failed_build
            if failed is not None and failed[0] == spec and len(self.vectors) < 2 * failed[1]:
                return  # it failed as this very spec: not again on every commit, only once grown
            if spec is not None:
                self.start_build(spec)

    def start_build(self, spec: IndexSpec) -> threading.Thread:
        """Build this shard anew as ``spec`` in a background thread from the committed vectors;
        swap it in once it has caught up, and snapshot it. Until then (and if the process dies
        meanwhile) the old index serves. A build already running is waited for first."""
        with self._build_lock:
            if self._build is not None:
                self._build[0].join()
            thread = threading.Thread(
                target=self._build_in_background, args=(spec,), name=f"index-build-{self.shard}", daemon=True
            )
            self._build = (thread, spec)
            thread.start()
            return thread

    def _build_in_background(self, spec: IndexSpec) -> None:
        # The whole build reads one SQLite snapshot (so it is exactly one generation); WAL cannot
        # checkpoint past it meanwhile, so the WAL file grows by the commits made during a build.
        try:
            # One holder of this shard builds (another process, or the server's other pod, may be
            # at it already: then its snapshot is adopted once written).
            # Held until the new index is saved, so no other holder starts the same build meanwhile.
            with try_exclusive(self.folder, "build.lock") as ours:
                if not ours:
                    return
                with self.store.snapshot_read() as state:
                    built = self._build_index(spec)
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
                    self._saved_generation = None  # the snapshot on disk is of the old index
                self.flush()
        except Exception as e:  # noqa: BLE001 - a thread must report, not die: the old index keeps serving
            if not self._closing:
                self._failed_build = (spec, len(self.vectors))
                self._build_errors.append(f"building the {spec.factory()} index of shard {self.shard} failed: {e}")

    @property
    def building(self) -> bool:
        return self._build is not None and self._build[0].is_alive()

    def wait_for_build(self, timeout: float | None = None) -> None:
        """Wait for a background build; a failed one is a StoreError (the old index serves)."""
        if self._build is not None:
            self._build[0].join(timeout)
        errors, self._build_errors = self._build_errors, []
        if errors:
            raise StoreError(errors[0])

    def finish(self) -> None:
        """What the end of an indexing run leaves: caught up, the right index type built (waited
        for), and the snapshot written. Nothing to do if another holder already did it; a snapshot
        another holder wrote at the store's generation is taken as it is, not replayed up to."""
        self._take_current_snapshot()
        self.sync(upgrade=False)
        self._maybe_upgrade()
        try:
            self.wait_for_build()
        finally:
            self.flush()

    def _take_current_snapshot(self) -> None:
        with self._sync_lock:
            state = read_state(self.folder)
            if state is None or int(state.get("generation", -1)) <= self.generation:
                return
            if int(state["generation"]) != self.store.generation:
                return
            theirs = IndexInfo.from_dict(state.get("index") or {})
            if theirs.spec.rank < self.vectors.info.spec.rank:
                return
            loaded = VectorShard.load(self.folder, self.dim, self.shard, self.metric)
            if loaded is not None and loaded[1] == int(state["generation"]):
                self.vectors, self.generation = loaded
                self._saved_generation = loaded[1]
                self._seen_state = self._state_mtime()

    # --- persisting ---------------------------------------------------------------------------

    def flush(self, lazy: bool = False) -> None:
        """Write the snapshot if this index is newer than the one on disk (by any process).

        ``lazy``: only once LAZY_FLUSH_GENERATIONS commits behind (the log brings an older snapshot
        forward on open just as well). Written under this shard's lock, straight from memory."""
        if not self.persist:
            return
        with self._sync_lock:
            generation, saved = self.generation, self._saved_generation
            if generation == saved or (lazy and saved is not None and generation - saved < LAZY_FLUSH_GENERATIONS):
                return
            self.folder.mkdir(exist_ok=True)
            if lazy:  # on the search path: never wait for another holder's write or rebuild
                with try_exclusive(self.folder, "lock") as ours:
                    if ours:
                        self._save()
                return
            with exclusive(self.folder):
                self._save()

    def _save(self) -> None:
        """Write the snapshot unless the one on disk is newer; call under the shard's lock."""
        generation = self.generation
        state = read_state(self.folder)
        on_disk = state["generation"] if state else None
        built = float(((state or {}).get("index") or {}).get("built_at", 0.0))
        if on_disk is not None and on_disk > generation:
            return  # another process saved a newer state: ours is written once we are newer again
        if on_disk != generation or self.vectors.info.built_at > built:
            try:
                self.vectors.save(self.folder, generation)
            except OSError as e:
                raise StoreError(
                    f"the documents are committed, but the snapshot of shard {self.shard} in "
                    f"{self.workspace.path} could not be written ({e.strerror or e}); it is brought "
                    "forward when the workspace is next opened"
                ) from e
        self._saved_generation = generation
        self._seen_state = self._state_mtime()
        self._snapshot_error = None

    def close(self, flush: bool = True) -> None:
        """Stop a build (the old index stays on disk) and snapshot."""
        self._closing = True
        if self._build is not None:
            # A build notices between its stages and stops; one inside FAISS's k-means is left to
            # die with the process (nothing is swapped in).
            self._build[0].join(10.0)
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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` with exact scores (an ANN index re-ranks its candidates against the stored
        vectors), after catching up with every process's commits."""
        self.sync()
        return self.vectors.search(queries, k, self.workspace.exact)

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector at least ``threshold`` from a query (exact scores), after catching up."""
        self.sync()
        return self.vectors.range_search(queries, threshold, self.workspace.exact)

    def ids(self) -> np.ndarray:
        return self.vectors.ids()

    def describe(self) -> dict[str, Any]:
        """Its index type, size, memory and measured recall (for `lookalike info` and /api/stats)."""
        info = self.vectors.info
        return {
            "shard": self.shard,
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
            "build_error": self._build_errors[0] if self._build_errors else self._snapshot_error,
        }

    def measure_recall(self, queries: int = 200, k: int = 10) -> float:
        """recall@k against exact search over the stored vectors, now, on ``queries`` of its
        vectors held out (each searched with itself left out)."""
        self.sync()
        if self.kind == "flat":
            return 1.0
        with self.store.snapshot_read():
            ids = self.ids()
            pick = np.sort(np.random.default_rng(1).choice(ids, min(queries, len(ids)), replace=False))
            found, vectors = self.store.embeddings(pick, self.dim)
            truth = _TopK(found, vectors, k + 1, self.metric)
            for block_ids, block in self.store.shard_vector_blocks(self.shard, self.dim):
                truth.update(block_ids, block)
        return self.vectors.held_out_recall(found, vectors, truth.neighbours(), self.workspace.exact, k)
