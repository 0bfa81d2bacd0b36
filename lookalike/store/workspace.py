"""A workspace: one directory with a manifest, the SQLite doc store and one folder per vector shard.

.lookalike/
  manifest.json     format version, the vector spaces (encoder fingerprint, size, metric,
                    shards of each), the flows used
  docs.sqlite       documents, chunks and embeddings (the source of truth), roots, the vector log
  shard-0/          index-<generation>-<token>.faiss + snapshot.json naming it: the shard pod's
                    own part of the vector index (derived: brought forward or rebuilt when stale)
  shard-1/          (the first space's shards; another space's are SPACE-shard-N/, such as
  faces-shard-0/     faces-shard-0/: see lookalike.store.spaces)
  uploads/          images uploaded through the server (named by content)
  lock              taken for moments: manifest writes, re-sharding, resets, snapshots

Many processes share a workspace. Writers take turns per commit (SQLite's write lock, waited for),
so `lookalike serve`, `lookalike index` and `lookalike remove` run side by side. The workspace
holds no vector index itself: each shard pod opens its own part (:class:`ShardIndex`), wherever
it runs, and brings it forward from the vector log of the commits it has not seen.

The manifest is read, checked against the flows and written by :class:`Manifest`; tools that read
every shard at once (`info`, `dupes`, the consistency checks) do it through :class:`ShardSet`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.document import Chunk, Document, Request
from lookalike.errors import StoreError
from lookalike.relevance import FILE as CALIBRATION_FILE
from lookalike.store.docstore import DocStore
from lookalike.store.locks import exclusive, try_exclusive
from lookalike.store.manifest import MANIFEST, Manifest, WorkspaceLayout, spaces_of_identity
from lookalike.store.shard_index import ShardIndex
from lookalike.store.shard_set import ShardSet
from lookalike.store.shard_spec import ShardSpec
from lookalike.store.spaces import VectorSpace, first_slots, shard_folder, unknown_space
from lookalike.store.vectors import IndexBudget

UPLOADS = "uploads"


@dataclass
class WorkspaceInfo:
    path: Path
    docs: int
    chunks: int
    shards: dict[str, int]  # vectors per shard, by its label ("0", "faces/0")
    encoder: str | None
    preset: str
    size_bytes: int
    generation: int
    created_at: float | None
    indexes: list[dict[str, Any]]  # per shard: its index type, memory and measured recall
    budget: IndexBudget
    spaces: dict[str, VectorSpace]  # the vector spaces, in slot order


class Workspace:
    """Open with :meth:`open`; use as a context manager so snapshots are flushed and the lock freed."""

    def __init__(self, path: Path, store: DocStore, manifest: Manifest, writer: bool):
        self.path = path
        self.store = store
        self.manifest = manifest
        self.writer = writer
        self._most_chunks: dict[str, MostChunks] = {}  # by vector space
        self._identity: str | None = None  # what the vectors are; a store re-built for others is refused

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        layout: WorkspaceLayout | None = None,
        *,
        writer: bool = True,
        create: bool = True,
        reset: bool = False,
    ) -> Workspace:
        """Open (or create) the workspace at ``path``.

        ``layout`` is what the flows that will read or write it say (a reader may give none: the
        vectors are whatever the workspace holds). A workspace built with another encoder refuses
        to open, unless ``reset`` empties it first; a writer remembers the layout's flows, preset
        and index budget in the manifest.
        """
        path = Path(path)
        layout = layout or WorkspaceLayout()
        if not (path / MANIFEST).exists():
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
        with exclusive(path):
            if writer:
                _remove_stale_temp_files(path)
            manifest = Manifest.read(path)
            ws = cls(path, DocStore(path / "docs.sqlite"), manifest or Manifest(path), writer)
            try:
                ws._setup(manifest is None, layout, reset)
                if ws.manifest.set_budget(layout.index_memory, layout.index_latency_ms) and writer:
                    ws.manifest.write()
            except BaseException:
                ws.close()
                raise
        return ws

    def _setup(self, new: bool, layout: WorkspaceLayout, reset: bool) -> None:
        reshard = self.manifest.adopt(layout, self.store, new=new, reset=reset, writer=self.writer)
        if reset:
            (self.path / CALIBRATION_FILE).unlink(missing_ok=True)  # another collection's background
        identity = self.manifest.identity()
        if self.writer:
            self._write_identity(identity, reset, reshard)
        self._identity = self.store.identity or identity

    def _write_identity(self, identity: str, reset: bool, reshard: bool) -> None:
        # The doc store's identity changes in the same transaction as the data it describes, so
        # a process still writing the old vectors is refused at its next commit.
        if reset:
            self.store.clear(identity)
        elif reshard and self.manifest.moved is not None:
            # The store says where its chunks are (its identity moves with them, in one transaction):
            # a move committed before a manifest write that failed is not made twice.
            if self.store.identity != identity:
                old = spaces_of_identity(self.store.identity) or self.manifest.moved[0]
                self.store.reassign_shards(old, self.manifest.moved[1], identity)
        elif self.store.identity != identity:
            self.store.set_identity(identity)
        old_roots = self.manifest.take_old_roots()
        if old_roots:
            self.store.add_roots(old_roots)
        self.manifest.write()

    def check_spaces(self, spaces: dict[str, VectorSpace]) -> None:
        """Refuse flows whose vectors are not this workspace's (a reader's flows, built after it opened)."""
        self.manifest.check_flow(spaces, self.store)

    def check_identity(self, identity: str | None) -> None:
        """Refuse to go on if another process re-built this workspace for other vectors."""
        if identity is not None and self._identity is not None and identity != self._identity:
            raise StoreError(
                f"workspace {self.path} was re-indexed by another process (its vectors are now {identity}, "
                f"this process has {self._identity}); restart to use it"
            )

    @staticmethod
    def stored_flow(path: str | os.PathLike, kind: str) -> tuple[str, Path | None] | None:
        """The text and base folder of the ``kind`` ("index" or "query") flow the workspace at
        ``path`` remembers; None if there is no workspace or no such flow. A damaged manifest is a
        StoreError that says how to repair it."""
        return Manifest.stored_flow(path, kind)

    # --- properties ---------------------------------------------------------------------------

    @property
    def spaces(self) -> dict[str, VectorSpace]:
        """The vector spaces, in slot order (the first is the one a search names by default)."""
        return self.manifest.spaces

    def space(self, name: str | None = None) -> VectorSpace:
        """The space ``name`` (None: the first); a ConfigError names the spaces there are."""
        return self.manifest.space(name)

    @property
    def dim(self) -> int:
        """The first space's vectors' size (the whole photos', in every built-in flow)."""
        return self.space().dim

    @property
    def metric(self) -> str:
        return self.space().metric

    @property
    def encoder(self) -> str | None:
        return self.space().encoder

    @property
    def preset(self) -> str:
        return self.manifest.preset

    @property
    def n_shards_configured(self) -> int:
        """The first space's shards."""
        return self.space().shards

    @property
    def shards_by_space(self) -> dict[str, int]:
        return {name: space.shards for name, space in self.spaces.items()}

    def slots(self, space: str | None = None) -> range:
        """The doc store slots (``chunks.shard``) of a space's shards (None: the first space)."""
        first = first_slots(self.spaces)
        name = space or next(iter(first))
        if name not in first:
            raise unknown_space(name, first)
        return range(first[name], first[name] + self.spaces[name].shards)

    @property
    def budget(self) -> IndexBudget:
        """The whole workspace's index budget (split evenly between its shards)."""
        return self.manifest.budget

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
        vectors the vector indexer accepted for it, in one SQLite transaction. That transaction is
        the whole of crash consistency, across processes too: the shard pods' indexes are derived
        from it and bring themselves forward from its vector log.
        """
        if not self.writer:
            raise StoreError("this workspace was opened read-only")
        docs, vectors = _accepted(request)
        if not docs and not request.staged.deletes:
            return []
        self.store.commit(docs, vectors, request.staged.deletes, self._identity)
        return docs

    def close(self) -> None:
        """Close the doc store (the shard pods snapshot their own indexes)."""
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def max_chunks_per_doc(self, space: str | None = None) -> int:
        """The most chunks any document has in ``space`` (None: the first; 1 when empty), as an
        upper bound (see MostChunks)."""
        name = space or next(iter(self.spaces))
        most = self._most_chunks.get(name)
        if most is None:
            most = self._most_chunks[name] = MostChunks(self.store, self.slots(name))
        return most.get()

    def doc_ids_under(self, roots: Iterable[str]) -> list[str]:
        """The ids of stored documents whose file is one of ``roots`` or inside one of them."""
        return [doc_id for doc_id, _ in self.store.docs_under(roots)]

    def exact(self, ids: np.ndarray, space: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of these chunks (for exact re-ranking), of ``space`` (None: the first)."""
        return self.store.embeddings(ids, self.space(space).dim)

    # --- shards -------------------------------------------------------------------------------

    def open_shard(self, shard: int, *, space: str | None = None, persist: bool | None = None) -> ShardIndex:
        """Shard ``shard`` of ``space``'s part of the vector index (None: the first space's), loaded
        and brought forward (see ShardIndex). Its pod opens it; so do tools that read every shard
        (`info`, `dupes`). ``persist``: it writes snapshots and builds new index types (a writer's
        shards do, unless told not to)."""
        spaces = self.spaces
        name = space or next(iter(spaces))
        slots = self.slots(name)
        vectors = spaces[name]
        if not 0 <= shard < vectors.shards:
            raise StoreError(
                f"the {name} vectors of workspace {self.path} have {vectors.shards} shards, not a shard {shard}"
            )
        total = sum(s.shards for s in spaces.values())
        # The memory budget is shared by the spaces in proportion to their vectors' size (a face's
        # 128 numbers against a photo's 1280), then evenly by each space's shards.
        share = vectors.dim / sum(s.dim for s in spaces.values())
        budget = IndexBudget(int(self.budget.memory_bytes * share), self.budget.latency_ms).per_shard(vectors.shards)
        spec = ShardSpec(
            folder=self.path / shard_folder(name, shard, first=slots.start == 0),
            shard=slots[shard],
            dim=vectors.dim,
            metric=vectors.metric,
            shards=total,
            budget=budget,
            persist=self.writer if persist is None else persist and self.writer,
            check_identity=self.check_identity,
            exact=lambda ids: self.store.embeddings(ids, vectors.dim),
            space=name,
            index=shard,
        )
        return ShardIndex(self.store, spec)

    def all_shards(self, space: str | None = None) -> ShardSet:
        """Every shard's index of ``space`` (None: of every space) at once, for tools (see ShardSet)."""
        names = [space] if space is not None else list(self.spaces)
        return ShardSet(self.store, self.open_shard, [(n, i) for n in names for i in range(self.space(n).shards)])

    def shard_indexes(self, space: str | None = None) -> list[ShardIndex]:
        """Every shard's index of ``space`` (None: of every space), opened read-only here (for tools
        that read them all); close them."""
        return self.all_shards(space).open()

    def finish_shards(self) -> list[dict[str, Any]]:
        """Every shard finished as an index flow's pods finish it (see ShardSet.finish)."""
        return self.all_shards().finish()

    def verify(self, shards: list[ShardIndex] | None = None) -> list[str]:
        """Consistency problems between the doc store and the shards' indexes (see ShardSet.verify)."""
        return self.all_shards().verify(shards)

    def measure_recall(self, queries: int = 200, k: int = 10, shards: list[ShardIndex] | None = None) -> list[float]:
        """recall@k of each shard's index against exact search (see ShardIndex.measure_recall)."""
        return self.all_shards().measure_recall(queries, k, shards)

    def info(self, indexes: list[dict[str, Any]] | None = None) -> WorkspaceInfo:
        """What the workspace holds. ``indexes``: the shards' own descriptions, from the pods that
        hold them (a server's); without them, each shard's index is opened here to describe it."""
        if indexes is None:
            indexes = self.all_shards().describe()
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return WorkspaceInfo(
            path=self.path,
            docs=self.store.count_docs(),
            chunks=self.store.count_chunks(),
            shards={str(d.get("label", d["shard"])): int(d["vectors"]) for d in indexes},
            encoder=self.encoder,
            preset=self.preset,
            size_bytes=size,
            generation=self.store.generation,
            created_at=self.manifest.created_at,
            indexes=indexes,
            budget=self.budget,
            spaces=self.spaces,
        )


def _accepted(request: Request) -> tuple[list[Document], dict[tuple[str, int], list[Chunk]]]:
    """What of a finished request is stored: the documents the doc indexer accepted and no pod
    failed, each with the vectors the vector indexer accepted for it. A document with vectors that
    the doc indexer did not accept fails."""
    staged = request.staged
    by_id = {d.id: d for d in request.docs}
    accepted = set(staged.doc_ids)
    docs = [by_id[i] for i in staged.doc_ids if i in by_id and by_id[i].error is None]
    ok = {d.id for d in docs}
    vectors = {key: v for key, v in staged.vectors.items() if key[0] in ok}
    for doc_id in {key[0] for key in staged.vectors} - accepted:
        if doc_id in by_id:
            by_id[doc_id].fail("the doc indexer did not accept this document", "not indexed")
    return docs, vectors


class MostChunks:
    """The most chunks any document has (1 when empty), for a search to fetch enough chunk matches:
    an upper bound brought forward from the vector log (added chunks only: removals can only lower
    it, and a high bound stays exact), so a search never counts every document's chunks."""

    def __init__(self, store: DocStore, slots: range):
        self.store = store
        self.slots = slots  # one vector space's shards
        self._cached: tuple[int, int] | None = None  # (generation, the most chunks a document has)

    def get(self) -> int:
        with self.store.snapshot_read() as state:
            cached = self._cached
            if cached is not None and cached[0] == state.generation:
                return cached[1]
            if cached is None or cached[0] < state.log_floor or cached[0] > state.generation:
                most = self.store.max_chunks_per_doc(self.slots)
            else:
                change = self.store.logged_changes(cached[0], state.generation)
                added = [i for shard, is_add, ids in change.steps if is_add and shard in self.slots for i in ids]
                most = max(cached[1], self.store.max_chunks_of_docs_with(added, self.slots)) if added else cached[1]
            self._cached = (state.generation, most)
            return most


def within(path: str, root: str) -> bool:
    """Is ``path`` the folder or file ``root``, or inside it? (Plain paths, no symlinks resolved.)"""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files a killed process left mid-write (snapshots can be large). The workspace's own
    are removed under its lock (held by the caller); a shard's only under that shard's lock, which
    its snapshot writers hold, and not at all while another process holds it."""
    _unlink_all(path.glob(".*.tmp"))
    for folder in (p for p in path.glob("*shard-*") if p.is_dir()):
        with try_exclusive(folder, "lock") as ours:
            if ours:
                _unlink_all(folder.glob(".*.tmp"))


def _unlink_all(paths: Iterable[Path]) -> None:
    for tmp in paths:
        try:
            tmp.unlink()
        except OSError:
            pass
