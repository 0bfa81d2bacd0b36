"""A workspace: one directory with a manifest, the SQLite doc store and one folder per vector shard.

.lookalike/
  manifest.json     format version, encoder fingerprint, shards, the flows used
  docs.sqlite       documents, chunks and embeddings (the source of truth), roots, the vector log
  shard-0/          index-<generation>-<token>.faiss + snapshot.json naming it: the shard pod's
                    own part of the vector index (derived: brought forward or rebuilt when stale)
  shard-1/
  uploads/          images uploaded through the server (named by content)
  lock              taken for moments: manifest writes, re-sharding, resets, snapshots

Many processes share a workspace. Writers take turns per commit (SQLite's write lock, waited for),
so `lookalike serve`, `lookalike index` and `lookalike remove` run side by side. The workspace
holds no vector index itself: each shard pod opens its own part (:class:`ShardIndex`), wherever
it runs, and brings it forward from the vector log of the commits it has not seen.
"""

from __future__ import annotations

import json
import os
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
from lookalike.relevance import FILE as CALIBRATION_FILE
from lookalike.store.docstore import DocStore
from lookalike.store.locks import exclusive, try_exclusive
from lookalike.store.shard_index import ShardIndex
from lookalike.store.vectors import IndexBudget

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
UPLOADS = "uploads"


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
        self._max_chunks: tuple[int, int] | None = None  # (generation, the most chunks a document has)
        self._identity: str | None = None  # what the vectors are; a store re-built for others is refused

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
        with exclusive(path):
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
                ws.close()
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
            (self.path / CALIBRATION_FILE).unlink(missing_ok=True)  # another collection's background
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

    @property
    def budget(self) -> IndexBudget:
        """The whole workspace's index budget (split evenly between its shards)."""
        b = self.manifest.get("index_budget") or {}
        default = IndexBudget()  # the settings' defaults
        return IndexBudget(
            int(b.get("memory_bytes", default.memory_bytes)), float(b.get("latency_ms", default.latency_ms))
        )

    def exact(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of these chunks (for exact re-ranking)."""
        return self.store.embeddings(ids, self.dim)

    def open_shard(self, shard: int, *, persist: bool | None = None) -> ShardIndex:
        """Shard ``shard``'s part of the vector index, loaded and brought forward (see ShardIndex).
        Its pod opens it; so do tools that read every shard (`info`, `dupes`)."""
        if not 0 <= shard < self.n_shards_configured:
            raise StoreError(f"workspace {self.path} has {self.n_shards_configured} shards, not a shard {shard}")
        return ShardIndex(self, shard, persist=persist)

    def check_identity(self, identity: str | None) -> None:
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
        vectors the vector indexer accepted for it, in one SQLite transaction. That transaction is
        the whole of crash consistency, across processes too: the shard pods' indexes are derived
        from it and bring themselves forward from its vector log.
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
        self.store.commit(docs, vectors, staged.deletes, self._identity)
        return docs

    def close(self) -> None:
        """Close the doc store (the shard pods snapshot their own indexes)."""
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def max_chunks_per_doc(self) -> int:
        """The most chunks any document has (1 when empty): an upper bound, brought forward from
        the vector log (added chunks only: removals can only lower it, and a high bound stays exact)."""
        with self.store.snapshot_read() as state:
            cached = self._max_chunks
            if cached is not None and cached[0] == state.generation:
                return cached[1]
            if cached is None or cached[0] < state.log_floor or cached[0] > state.generation:
                most = self.store.max_chunks_per_doc()
            else:
                change = self.store.logged_changes(cached[0], state.generation)
                added = [i for _, is_add, ids in change.steps if is_add for i in ids]
                most = max(cached[1], self.store.max_chunks_of_docs_with(added)) if added else cached[1]
            self._max_chunks = (state.generation, most)
            return most

    def doc_ids_under(self, roots: Iterable[str]) -> list[str]:
        """The ids of stored documents whose file is one of ``roots`` or inside one of them."""
        return [doc_id for doc_id, _ in self.store.docs_under(roots)]

    def finish_shards(self) -> list[dict[str, Any]]:
        """What an index flow's shard pods do when it closes, for a writer that commits without a
        flow (a benchmark, a tool): every shard caught up, built as the right type (waited for)
        and snapshotted. Each shard's description, after."""
        out = []
        for i in range(self.n_shards_configured):
            with self.open_shard(i) as shard:
                shard.finish()
                out.append(shard.describe())
        return out

    def shard_indexes(self) -> list[ShardIndex]:
        """Every shard's index, opened read-only here (for tools that read them all); close them."""
        shards: list[ShardIndex] = []
        try:
            for i in range(self.n_shards_configured):
                shards.append(self.open_shard(i, persist=False))
        except BaseException:
            for shard in shards:
                shard.close(flush=False)
            raise
        return shards

    @contextmanager
    def _shards(self, given: list[ShardIndex] | None) -> Iterator[list[ShardIndex]]:
        """``given``, or every shard's index opened here for the block."""
        if given is not None:
            yield given
            return
        shards = self.shard_indexes()
        try:
            yield shards
        finally:
            for shard in shards:
                shard.close(flush=False)

    def verify(self, shards: list[ShardIndex] | None = None) -> list[str]:
        """Consistency problems between the doc store and the shards' indexes as their pods would
        open them now (empty when consistent). Both sides are read at one generation."""
        with self._shards(shards) as shards:
            for _ in range(5):
                for shard in shards:
                    shard.sync(upgrade=False)
                with self.store.snapshot_read() as state:
                    ids = self.store.chunk_ids()
                    shard_ids = [shard.ids() for shard in shards]
                    if all(shard.generation == state.generation for shard in shards):
                        break
        problems = []
        for shard, held in zip(shards, shard_ids, strict=True):
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

    def info(self, indexes: list[dict[str, Any]] | None = None) -> WorkspaceInfo:
        """What the workspace holds. ``indexes``: the shards' own descriptions, from the pods that
        hold them (a server's); without them, each shard's index is opened here to describe it."""
        if indexes is None:
            with self._shards(None) as shards:
                indexes = [shard.describe() for shard in shards]
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return WorkspaceInfo(
            path=self.path,
            docs=self.store.count_docs(),
            chunks=self.store.count_chunks(),
            shards={int(d["shard"]): int(d["vectors"]) for d in indexes},
            encoder=self.encoder,
            preset=self.preset,
            size_bytes=size,
            generation=self.store.generation,
            created_at=self.manifest.get("created_at"),
            indexes=indexes,
            budget=self.budget,
        )

    def measure_recall(self, queries: int = 200, k: int = 10, shards: list[ShardIndex] | None = None) -> list[float]:
        """recall@k of each shard's index against exact search (see ShardIndex.measure_recall)."""
        with self._shards(shards) as opened:
            return [shard.measure_recall(queries, k) for shard in opened]


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


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files a killed process left mid-write (snapshots can be large). The workspace's own
    are removed under its lock (held by the caller); a shard's only under that shard's lock, which
    its snapshot writers hold, and not at all while another process holds it."""
    _unlink_all(path.glob(".*.tmp"))
    for folder in (p for p in path.glob("shard-*") if p.is_dir()):
        with try_exclusive(folder, "lock") as ours:
            if ours:
                _unlink_all(folder.glob(".*.tmp"))


def _unlink_all(paths: Iterable[Path]) -> None:
    for tmp in paths:
        try:
            tmp.unlink()
        except OSError:
            pass
