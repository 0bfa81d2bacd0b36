"""A workspace: one directory with a manifest, the SQLite doc store and one folder per vector shard.

.lookalike/
  manifest.json     format version, encoder fingerprint, shards, the flows used
  docs.sqlite       documents, chunks and embeddings (the source of truth), roots, the vector log
  shard-0/          index-<generation>-<token>.faiss + snapshot.json naming it (derived: brought
                    forward or rebuilt when stale)
  shard-1/
  uploads/          images uploaded through the server (named by content)
  lock              taken for moments: manifest writes, re-sharding, resets, snapshots

Many processes share a workspace. Writers take turns per commit (SQLite's write lock, waited for),
so `lookalike serve`, `lookalike index` and `lookalike remove` run side by side. Every process
keeps its shards in memory with the generation they reflect; before a search it compares that
with the store's generation and replays the vector log of the commits it has not seen (removals
included), so a reader sees another process's commits on its next search.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import __version__
from lookalike.atomic import atomic_write
from lookalike.document import Document, Request
from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore
from lookalike.store.vectors import (
    STATE_FILE,
    IndexBudget,
    IndexInfo,
    IndexSpec,
    VectorShard,
    choose_index,
    needs_new_index,
    read_state,
)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
UPLOADS = "uploads"
# A process that committed this many times since its last snapshot writes one when asked to flush
# lazily (an upload through the server); closing, or the end of `lookalike index`, always does.
LAZY_FLUSH_GENERATIONS = 200
# How long to wait for another process's moment with the workspace lock before giving up. The
# lock is held for milliseconds (a manifest write) up to a snapshot write of a large shard.
LOCK_TIMEOUT_S = 120.0


@dataclass
class WorkspaceInfo:
    path: Path
    docs: int
    chunks: int
    shards: dict[int, int]
    encoder: str | None
    preset: str
    size_bytes: int
    generation: int
    created_at: float | None
    indexes: list[dict[str, Any]]  # per shard: its index type, memory and measured recall
    budget: IndexBudget


class Workspace:
    """Open with :meth:`open`; use as a context manager so snapshots are flushed and the lock freed."""

    def __init__(self, path: Path, store: DocStore, manifest: dict[str, Any], writer: bool):
        self.path = path
        self.store = store
        self.manifest = manifest
        self.writer = writer
        self.shards: list[VectorShard] = []
        self._generation = -1  # the store generation the in-memory shards reflect
        self._saved_generation: int | None = None
        self._max_chunks: int | None = None  # cached: a full scan, needed by every search
        self._identity: str | None = None  # what the vectors are; a store re-built for others is refused
        # Commits and catching up change the shards and their generation together.
        self._sync_lock = threading.RLock()
        self._builds: dict[int, tuple[threading.Thread, IndexSpec]] = {}  # shard -> its new index being built
        self._build_lock = threading.RLock()
        self._failed_builds: dict[int, tuple[IndexSpec, int]] = {}  # shard -> (spec, its size then)
        self._build_errors: list[str] = []
        self._closing = False
        self._seen_states: dict[int, int] = {}  # shard -> mtime_ns of the snapshot state last looked at

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        encoder: str | None = None,
        dim: int | None = None,
        metric: str | None = None,
        shards: int | None = None,
        writer: bool = True,
        create: bool = True,
        reset: bool = False,
        preset: str | None = None,
        flows: dict[str, str] | None = None,
        index_memory: int | None = None,
        index_latency_ms: float | None = None,
    ) -> Workspace:
        """Open (or create) the workspace at ``path``.

        ``encoder`` is the fingerprint of the encoder that will read or write it: a workspace built
        with another encoder refuses to open, unless ``reset`` empties it first. ``index_memory`` (bytes)
        and ``index_latency_ms`` pick the index type; a writer remembers them in the manifest.
        """
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            if not create:
                raise StoreError(f"no workspace at {path}: run `lookalike index PATH` first, or pass --workspace")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create workspace {path}: {e.strerror or e}") from e
        # Opening takes the lock for a moment: a writer reads and rewrites the manifest, so two
        # writers opening at once cannot lose each other's changes, and a reader never sees a
        # manifest and a doc store from two sides of a reset; a schema migration runs inside it too.
        # It is released before any indexing starts.
        with _exclusive(path):
            if writer:
                _remove_stale_temp_files(path)
            manifest = _read_manifest(manifest_path) if manifest_path.exists() else None
            ws = cls(path, DocStore(path / "docs.sqlite"), manifest or {}, writer)
            # Not told (a reader such as `lookalike info`): the vectors are whatever the workspace holds.
            dim = dim or int((manifest or {}).get("dim", 1280))
            metric = metric or str((manifest or {}).get("metric", "cosine"))
            try:
                ws._setup(manifest is None, encoder, dim, metric, shards, writer, reset, preset, flows)
                ws._set_budget(index_memory, index_latency_ms)
            except BaseException:
                ws.close(flush=False)
                raise
        try:
            ws._load_shards()
        except BaseException:
            ws.close(flush=False)
            raise
        return ws

    def _setup(
        self,
        new: bool,
        encoder: str | None,
        dim: int,
        metric: str,
        shards: int | None,
        writer: bool,
        reset: bool,
        preset: str | None,
        flows: dict[str, str] | None,
    ) -> None:
        m = self.manifest
        if new:
            m.update(
                format_version=FORMAT_VERSION,
                created_at=time.time(),
                encoder=encoder,
                dim=dim,
                shards=shards or 1,
                preset=preset or "default",
                flows=flows or {},
            )
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.path} has workspace format {m.get('format_version')}, this lookalike reads "
                f"{FORMAT_VERSION}: upgrade lookalike or re-index into a new --workspace"
            )
        if reset:
            if not writer:
                raise StoreError("resetting a workspace needs write access")
            m.update(encoder=encoder, dim=dim, metric=metric, preset=preset or m.get("preset", "default"))
        recorded = m.get("encoder")
        if encoder and recorded and recorded != encoder:
            if not reset and self.store.count_docs() > 0:
                raise StoreError(
                    f"workspace {self.path} was built with encoder {recorded}, but this flow encodes with "
                    f"{encoder}; re-index it with `lookalike index --reset PATH...`, or pass another --workspace"
                )
            m["encoder"] = encoder  # an empty workspace simply adopts the new encoder
        elif encoder and not recorded:
            m["encoder"] = encoder
        if (m.get("dim"), m.get("metric", "cosine")) != (dim, metric) and not reset and self.store.count_chunks():
            raise StoreError(
                f"workspace {self.path} holds {m.get('dim')}-d {m.get('metric', 'cosine')} vectors, not {dim}-d "
                f"{metric}; re-index it with `lookalike index --reset PATH...`, or pass another --workspace"
            )
        m["dim"], m["metric"] = dim, metric
        if preset and writer:
            m["preset"] = preset
        if flows and writer:
            m["flows"] = flows
        n = shards or int(m.get("shards", 1))
        reshard = n != m.get("shards") and not new
        if reshard and not writer:
            raise StoreError(f"workspace {self.path} has {m.get('shards')} shards, the flow asks for {n}")
        m["shards"] = n
        m["lookalike_version"] = __version__
        # "vectors": how they are stored; a process of an older lookalike writing float32 is refused.
        identity = json.dumps(
            {**{k: m.get(k) for k in ("encoder", "dim", "metric", "shards")}, "vectors": "float16"}, sort_keys=True
        )
        if writer:
            # The doc store's identity changes in the same transaction as the data it describes, so
            # a process still writing the old vectors is refused at its next commit.
            if reset:
                self.store.clear(identity)
            elif reshard:
                self.store.reassign_shards(n, identity)
            elif self.store.identity != identity:
                self.store.set_identity(identity)
            old_roots = m.pop("roots", None)  # format 1 kept them here; the doc store has them now
            if old_roots:
                self.store.add_roots(old_roots)
            self._write_manifest()
        self._identity = self.store.identity or identity

    def _set_budget(self, memory: int | None, latency_ms: float | None) -> None:
        """Given values replace the remembered ones (written to the manifest by a writer)."""
        if memory is None and latency_ms is None:
            return
        budget = dict(self.manifest.get("index_budget") or {})
        if memory is not None:
            budget["memory_bytes"] = int(memory)
        if latency_ms is not None:
            budget["latency_ms"] = float(latency_ms)
        self.manifest["index_budget"] = budget
        if self.writer:
            self._write_manifest()

    def _load_shards(self) -> None:
        """Shards from their snapshots brought forward by the vector log, else rebuilt from SQLite."""
        n, dim, metric = self.n_shards_configured, self.dim, self.metric
        loaded = [VectorShard.load(self.path / f"shard-{i}", dim, i, metric) for i in range(n)]
        generations = {x[1] for x in loaded if x is not None}
        with self.store.snapshot_read() as state:
            current, floor = state.generation, state.log_floor
        if all(x is not None for x in loaded) and len(generations) == 1 and floor <= min(generations) <= current:
            self.shards = [x[0] for x in loaded if x is not None]
            self._generation = self._saved_generation = generations.pop()
            self._note_states()
            self.sync()
        else:
            self._rebuild()
            if self.writer:
                self.flush()
        self._maybe_upgrade()

    @property
    def budget(self) -> IndexBudget:
        """The whole workspace's index budget (split evenly between its shards)."""
        b = self.manifest.get("index_budget") or {}
        default = IndexBudget()  # the settings' defaults
        return IndexBudget(
            int(b.get("memory_bytes", default.memory_bytes)), float(b.get("latency_ms", default.latency_ms))
        )

    def _exact(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of these chunks (for exact re-ranking)."""
        return self.store.embeddings(ids, self.dim)

    def _build_shard(self, i: int, spec: IndexSpec | None = None) -> VectorShard | None:
        """Shard ``i`` built from what SQLite committed; call inside one ``snapshot_read``."""
        spec = spec or choose_index(
            self.store.count_shard(i), self.dim, self.budget.per_shard(self.n_shards_configured)
        )
        return VectorShard.build(
            self.dim,
            i,
            self.metric,
            spec,
            lambda: self.store.shard_vector_blocks(i, self.dim),
            self._exact,
            cancelled=lambda: self._closing,
        )

    def _rebuild(self) -> None:
        """Every shard from what SQLite committed, all read at one generation."""
        shards = []
        with self.store.snapshot_read() as state:
            self._check_identity(state.identity)
            for i in range(self.n_shards_configured):
                shard = self._build_shard(i)
                if shard is None:
                    raise StoreError(f"the workspace {self.path} was closed while its shards were rebuilt")
                shards.append(shard)
        self.shards, self._generation, self._max_chunks = shards, state.generation, None

    def sync(self) -> bool:
        """Catch up with commits made since the shards' generation, by any process; True if any.

        The generation, the log and the vectors are read in one SQLite snapshot and replayed in
        commit order. A reader too far behind (the log was pruned, the workspace re-sharded or
        cleared) rebuilds instead; one whose vectors are no longer what the store holds refuses.
        A newer index another process built (a type up, as the collection grew) is adopted.
        """
        try:
            if self.store.generation == self._generation:  # the common case, without the lock
                return False
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the doc store of {self.path}: {e}") from e
        with self._sync_lock:
            targets = dict(enumerate(self.shards))
            replayed = self._replay(targets, self._generation)
            if replayed is None:
                self._rebuild()
                return True
            if replayed == self._generation:
                return False
            self._generation = replayed
            self._adopt_newer_snapshots()
        self._maybe_upgrade()
        return True

    def _replay(self, targets: dict[int, VectorShard], since: int, until: int | None = None) -> int | None:
        """Apply the vector log after generation ``since`` (up to ``until``, else the store's) to
        ``targets`` (shard number -> shard); the generation they are at now, or None if the log
        cannot bring them there (rebuild)."""
        adds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        with self.store.snapshot_read() as state:
            end = state.generation if until is None else until
            if end == since:
                return since
            self._check_identity(state.identity)
            if state.generation < end or end < since or since < state.log_floor:
                return None
            change = self.store.logged_changes(since, end)
            added = [i for s, is_add, ids in change.steps if is_add and s in targets for i in ids]
            for n, (shard, is_add, ids) in enumerate(change.steps):
                if is_add and shard in targets:  # those removed by a later commit are simply not found
                    adds[n] = self.store.embeddings(ids, self.dim)
            most = self.store.max_chunks_of_docs_with(added) if added and self._max_chunks else 0
        for n, (shard, is_add, ids) in enumerate(change.steps):
            if shard >= self.n_shards_configured:
                raise StoreError(f"workspace {self.path} was re-sharded by another process; restart to use it")
            if shard not in targets:
                continue
            if is_add:
                targets[shard].add(*adds[n])
            else:
                targets[shard].remove(ids)
        # Removals can only lower the most chunks per document: a high bound stays exact.
        if self._max_chunks is not None:
            self._max_chunks = max(self._max_chunks, most)
        return end

    # --- index types follow the collection ----------------------------------------------------

    def _maybe_upgrade(self) -> None:
        """Start building a new index (in the background) for each shard that outgrew its own."""
        if not self.writer or self._closing:
            return
        budget = self.budget.per_shard(self.n_shards_configured)
        with self._build_lock:  # commits and searches' catching up both get here: one build a shard
            for i, shard in enumerate(self.shards):
                if i in self.building:
                    continue
                spec = needs_new_index(shard.info.spec, shard.info.trained_on, len(shard), self.dim, budget)
                failed = self._failed_builds.get(i)
                if failed is not None and failed[0] == spec and len(shard) < 2 * failed[1]:
                    continue  # it failed as this very spec: not again on every commit, only once grown
                if spec is not None:
                    self.start_build(i, spec)

    def start_build(self, i: int, spec: IndexSpec) -> threading.Thread:
        """Build shard ``i`` anew as ``spec`` in a background thread, from the committed vectors;
        swap it in atomically once it has caught up, and snapshot it. Until then (and if the
        process dies meanwhile) the old index serves."""
        with self._build_lock:
            thread = threading.Thread(
                target=self._build_in_background, args=(i, spec), name=f"index-build-{i}", daemon=True
            )
            self._builds[i] = (thread, spec)
            thread.start()
        return thread

    def _build_in_background(self, i: int, spec: IndexSpec) -> None:
        # The whole build reads one SQLite snapshot (so it is exactly one generation); WAL cannot
        # checkpoint past it meanwhile, so the WAL file grows by the commits made during a build.
        try:
            with self.store.snapshot_read() as state:
                built = self._build_shard(i, spec)
                since = state.generation
            if built is None:
                return
            with self._sync_lock:
                if self._closing:
                    return
                # The new index is brought to exactly the generation the other shards are at (a
                # commit may land meanwhile: commit() applies it to the swapped-in shard after us).
                if self._replay({i: built}, since, self._generation) != self._generation:
                    return  # reset or re-sharded meanwhile: the next commit decides afresh
                if i < len(self.shards):
                    self.shards[i] = built
                    self._saved_generation = None  # the snapshot on disk is of the old index
            self.flush()
        except Exception as e:  # noqa: BLE001 - a thread must report, not die: the old index keeps serving
            if not self._closing:
                self._failed_builds[i] = (spec, len(self.shards[i]) if i < len(self.shards) else 0)
                self._build_errors.append(f"building the {spec.factory()} index of shard {i} failed: {e}")

    @property
    def building(self) -> list[int]:
        """The shards whose new index is being built now."""
        return [i for i, (thread, _) in self._builds.items() if thread.is_alive()]

    def pending_spec(self, i: int) -> IndexSpec | None:
        """What shard ``i``'s index is being rebuilt as, if it is."""
        return self._builds[i][1] if i in self.building else None

    def wait_for_builds(self, timeout: float | None = None) -> None:
        """Wait for the background index builds; a failed one is a StoreError (the old index serves)."""
        for thread, _ in list(self._builds.values()):
            thread.join(timeout)
        errors, self._build_errors = self._build_errors, []
        if errors:
            raise StoreError(errors[0])

    def _state_mtime(self, i: int) -> int | None:
        """When shard ``i``'s snapshot state was last written (by any process); None if never."""
        try:
            return (self.path / f"shard-{i}" / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return None

    def _note_states(self) -> None:
        for i in range(self.n_shards_configured):
            self._seen_states[i] = self._state_mtime(i) or 0

    def _adopt_newer_snapshots(self) -> None:
        """Load a shard's snapshot that another process built as a newer type (and bring it
        forward), instead of outgrowing our own index. Checked when the generation moved on."""
        for i, shard in enumerate(self.shards):
            folder = self.path / f"shard-{i}"
            mtime = self._state_mtime(i)
            if mtime is None or mtime == self._seen_states.get(i):
                continue
            self._seen_states[i] = mtime
            state = read_state(folder)
            if state is None or i in self.building:
                continue
            theirs = IndexInfo.from_dict(state.get("index") or {})
            if theirs.built_at <= shard.info.built_at or theirs.spec.rank < shard.info.spec.rank:
                continue
            loaded = VectorShard.load(folder, self.dim, i, self.metric)
            if loaded is None or loaded[1] > self._generation:
                continue
            if self._replay({i: loaded[0]}, loaded[1], self._generation) == self._generation:
                self.shards[i] = loaded[0]

    def _check_identity(self, identity: str | None) -> None:
        """Refuse to go on if another process re-built this workspace for other vectors."""
        if identity is not None and self._identity is not None and identity != self._identity:
            raise StoreError(
                f"workspace {self.path} was re-indexed by another process (its vectors are now {identity}, "
                f"this process has {self._identity}); restart to use it"
            )

    def _write_manifest(self) -> None:
        try:
            atomic_write(self.path / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True).encode())
        except OSError as e:
            raise StoreError(f"cannot write {self.path / MANIFEST}: {e.strerror or e}") from e

    @staticmethod
    def stored_flow(path: str | os.PathLike, kind: str) -> tuple[str, Path | None] | None:
        """The text and base folder of the ``kind`` ("index" or "query") flow the workspace at
        ``path`` remembers; None if there is no workspace or no such flow. A damaged manifest is a
        StoreError that says how to repair it."""
        manifest_path = Path(path) / MANIFEST
        if not manifest_path.exists():
            return None
        flows = _read_manifest(manifest_path).get("flows", {})
        text, base = flows.get(kind), flows.get(f"{kind}_base_dir")
        return (text, Path(base) if base else None) if text else None

    # --- properties ---------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def metric(self) -> str:
        return str(self.manifest.get("metric", "cosine"))

    @property
    def encoder(self) -> str | None:
        return self.manifest.get("encoder")

    @property
    def preset(self) -> str:
        return str(self.manifest.get("preset", "default"))

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    @property
    def n_shards_configured(self) -> int:
        return int(self.manifest.get("shards", 1))

    @property
    def roots(self) -> list[str]:
        """The folders and files ever indexed into this workspace (by any process): the only
        places served from. The workspace's uploads folder is one once anything was uploaded."""
        return self.store.roots()

    def add_roots(self, roots: Iterable[str]) -> None:
        """Remember these folders or files; one inside a known root adds nothing."""
        known = self.roots
        new = sorted({r for r in roots if not any(within(r, k) for k in known)})
        if new and self.writer:
            self.store.add_roots(new)

    @property
    def uploads(self) -> Path:
        """The folder this workspace keeps uploaded images in."""
        return self.path / UPLOADS

    # --- writing ------------------------------------------------------------------------------

    def commit(self, request: Request) -> list[Document]:
        """Commit what a finished request's indexers staged; return the documents now stored.

        Only documents the doc indexer accepted and no pod failed are stored, each with exactly the
        vectors the vector indexer accepted for it: one SQLite transaction, then the in-memory
        shards follow. A crash in between leaves the snapshot stale, and the next open brings it
        forward from the log.
        """
        if not self.writer:
            raise StoreError("this workspace was opened read-only")
        staged = request.staged
        by_id = {d.id: d for d in request.docs}
        accepted = set(staged.doc_ids)
        docs = [by_id[i] for i in staged.doc_ids if i in by_id and by_id[i].error is None]
        ok = {d.id for d in docs}
        vectors = {i: v for i, v in staged.vectors.items() if i in ok}
        for doc_id in staged.vectors.keys() - accepted:
            if doc_id in by_id:
                by_id[doc_id].fail("the doc indexer did not accept this document", "not indexed")
        if not docs and not staged.deletes:
            return []
        # The SQLite commit waits for other processes' commits, so it runs outside the shards' lock
        # (searches go on meanwhile). Whoever gets the lock first brings the shards forward: if
        # another thread or process committed in between, the log replays this commit too.
        change = self.store.commit(docs, vectors, staged.deletes, self._identity)
        with self._sync_lock:
            applied = change.before == self._generation
            if applied:
                for shard, ids in change.removed.items():
                    if shard < len(self.shards):
                        self.shards[shard].remove(ids)
                for shard, (new_ids, vecs) in change.added.items():
                    self.shards[shard].add(new_ids, vecs)
                self._generation = change.after
                if self._max_chunks is not None and vectors:
                    self._max_chunks = max(self._max_chunks, *(len(chunks) for _, chunks in vectors.values()))
        if applied:
            self._maybe_upgrade()
            return docs
        try:
            self.sync()
        except StoreError:
            pass  # the documents are committed; the next search catches up, or says why it cannot
        return docs

    def flush(self, lazy: bool = False) -> None:
        """Snapshot the shards if they are newer than the snapshot on disk (by any process).

        ``lazy``: only once this process has committed LAZY_FLUSH_GENERATIONS times since its last
        snapshot (the vector log brings an older snapshot forward on open just as well). The
        shards are written under the commit lock, so a snapshot is exactly its generation; an IVF
        index is written straight from memory, never copied first. (Meanwhile this process's
        commits, and searches that must catch up first, wait for the write.)"""
        if not self.writer:
            return
        with self._sync_lock:
            generation = self._generation
            if generation == self._saved_generation:
                return
            if (
                lazy
                and self._saved_generation is not None
                and generation - self._saved_generation < LAZY_FLUSH_GENERATIONS
            ):
                return
            with _exclusive(self.path):
                # Another process may have saved a newer state meanwhile: never overwrite it with an older one.
                # At the same generation, only a shard whose index was built anew is written.
                states = [read_state(self.path / f"shard-{s.shard}") for s in self.shards]
                on_disk = [st["generation"] if st else None for st in states]
                if not any(g is not None and g > generation for g in on_disk):
                    try:
                        for shard, state, g in zip(self.shards, states, on_disk, strict=True):
                            built = float(((state or {}).get("index") or {}).get("built_at", 0.0))
                            if g == generation and shard.info.built_at <= built:
                                continue
                            shard.save(self.path / f"shard-{shard.shard}", generation)
                    except OSError as e:
                        raise StoreError(
                            f"the documents are committed, but the shard snapshot in {self.path} could not be "
                            f"written ({e.strerror or e}); it is brought forward when the workspace is next opened"
                        ) from e
                    self._saved_generation = generation
                # else another process saved a newer state: ours is written once we are newer again
                self._note_states()

    def close(self, flush: bool = True) -> None:
        """Stop any index build (the old index stays on disk), snapshot, and close the store."""
        self._closing = True
        for thread, _ in list(self._builds.values()):
            # A build notices between its stages and stops; one inside FAISS's k-means is left to
            # die with the process (its store reads fail from here on, and nothing is swapped in).
            thread.join(10.0)
        try:
            if flush:
                self.flush()
        finally:
            self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def max_chunks_per_doc(self) -> int:
        """The most chunks any document has (1 when empty): an upper bound kept across commits."""
        self.sync()
        with self._sync_lock:
            if self._max_chunks is None:
                self._max_chunks = self.store.max_chunks_per_doc()
            return self._max_chunks

    def search(self, shard: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of one shard with exact scores (an ANN shard re-ranks its candidates against
        the stored vectors), after catching up with every process's commits."""
        self.sync()
        return self.shards[shard].search(queries, k, self._exact)

    def range_search(
        self, shard: int, queries: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every vector of one shard at least ``threshold`` from a query (exact scores; an ANN
        shard's candidates are checked against the stored vectors), after catching up."""
        self.sync()
        return self.shards[shard].range_search(queries, threshold, self._exact)

    def doc_ids_under(self, roots: Iterable[str]) -> list[str]:
        """The ids of stored documents whose file is one of ``roots`` or inside one of them."""
        return [doc_id for doc_id, _ in self.store.docs_under(roots)]

    def verify(self) -> list[str]:
        """Consistency problems between the doc store and the shards (empty when consistent).

        Both sides are compared at one generation: other processes' commits meanwhile are caught
        up with and the comparison taken again (a few times at most)."""
        for _ in range(5):
            self.sync()
            with self._sync_lock, self.store.snapshot_read() as state:
                ids = self.store.chunk_ids()
                shard_ids = [shard.ids() for shard in self.shards]
                if state.generation == self._generation:
                    break
        problems = []
        for shard, held in zip(self.shards, shard_ids, strict=True):
            if len(np.unique(held)) != len(held):
                problems.append(f"shard {shard.shard} holds duplicate vectors")
        searchable = np.unique(np.concatenate(shard_ids)) if shard_ids else np.zeros(0, np.int64)
        orphans = np.setdiff1d(searchable, ids, assume_unique=True)
        if len(orphans):
            problems.append(f"{len(orphans)} searchable vectors belong to no indexed document")
        unsearchable = np.setdiff1d(ids, searchable, assume_unique=True)
        if len(unsearchable):
            problems.append(f"{len(unsearchable)} stored vectors are not searchable")
        return problems

    def info(self) -> WorkspaceInfo:
        self.sync()
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return WorkspaceInfo(
            path=self.path,
            docs=self.store.count_docs(),
            chunks=self.store.count_chunks(),
            shards={s.shard: len(s) for s in self.shards},
            encoder=self.encoder,
            preset=self.preset,
            size_bytes=size,
            generation=self.store.generation,
            created_at=self.manifest.get("created_at"),
            indexes=[self._index_fields(s) for s in self.shards],
            budget=self.budget,
        )

    def _index_fields(self, shard: VectorShard) -> dict[str, Any]:
        info = shard.info
        return {
            "shard": shard.shard,
            "type": info.kind,
            "factory": info.factory,
            "vectors": len(shard),
            "memory_bytes": shard.memory_bytes(),
            "nprobe": info.nprobe or None,
            "recall_at_10": info.recall_at_10,
            "recall_queries": info.recall_queries,
            "built_from": info.trained_on,
            "mapped": shard.mapped,
            "building": shard.shard in self.building,
            "build_error": next((e for e in self._build_errors if f" of shard {shard.shard} " in e), None),
        }

    def measure_recall(self, queries: int = 200, k: int = 10) -> list[float]:
        """recall@k of each shard's search against exact search over its stored vectors, now, on
        ``queries`` of its vectors held out (each searched with itself left out)."""
        from lookalike.store.vectors import _TopK

        out = []
        self.sync()
        for i, shard in enumerate(self.shards):
            if shard.kind == "flat":
                out.append(1.0)
                continue
            with self.store.snapshot_read():
                ids = shard.ids()
                pick = np.sort(np.random.default_rng(1).choice(ids, min(queries, len(ids)), replace=False))
                found, vectors = self.store.embeddings(pick, self.dim)
                truth = _TopK(found, vectors, k + 1, self.metric)
                for block_ids, block in self.store.shard_vector_blocks(i, self.dim):
                    truth.update(block_ids, block)
            out.append(shard.held_out_recall(found, vectors, truth.neighbours(), self._exact, k))
        return out


def within(path: str, root: str) -> bool:
    """Is ``path`` the folder or file ``root``, or inside it? (Plain paths, no symlinks resolved.)"""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


_REPAIR = (
    "restore it from a backup, or move the workspace aside and index again into a new one "
    "(`lookalike index --workspace NEW PATH...`); the documents in docs.sqlite are untouched"
)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise StoreError(f"{path} is damaged ({e}); {_REPAIR}") from e
    if not isinstance(data, dict) or "format_version" not in data:
        raise StoreError(f"{path} is not a lookalike manifest; {_REPAIR}")
    return data


@contextmanager
def _exclusive(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """The workspace lock, held for a moment (never for a process's lifetime); waits its turn."""
    try:
        fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot open the lock of workspace {path}: {e.strerror or e}") from e
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock workspace {path}: {e.strerror or e}") from e
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                    raise StoreError(
                        f"workspace {path} stayed locked by pid {holder} for {timeout:.0f}s; is it stuck?"
                    ) from e
                time.sleep(0.02)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass  # the pid is only for the message above; a full disk must not stop us here
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files a killed process left mid-write (snapshots can be large). Called under the lock,
    which every writer of those files holds."""
    for tmp in [*path.glob(".*.tmp"), *path.glob("shard-*/.*.tmp")]:
        try:
            tmp.unlink()
        except OSError:
            pass
