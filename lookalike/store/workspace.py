"""A workspace: one directory with a manifest, the SQLite doc store and one folder per vector shard.

.lookalike/
  manifest.json     format version, encoder fingerprint, shards, the flows used
  docs.sqlite       documents, chunks and embeddings (the source of truth)
  shard-0/          index.faiss + snapshot.json (derived; rebuilt when stale)
  shard-1/
  lock              held by the one process allowed to write
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike import __version__
from lookalike.atomic import atomic_write
from lookalike.document import Document, Request, shard_for
from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore, StoredDoc
from lookalike.store.vectors import VectorShard

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


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


class Workspace:
    """Open with :meth:`open`; use as a context manager so snapshots are flushed and the lock freed."""

    def __init__(self, path: Path, store: DocStore, manifest: dict[str, Any], lock_fd: int | None):
        self.path = path
        self.store = store
        self.manifest = manifest
        self._lock_fd = lock_fd
        self.shards: list[VectorShard] = []
        self._saved_generation: int | None = None
        self._max_chunks: int | None = None  # cached: a full scan, needed by every search

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        encoder: str | None = None,
        dim: int = 1280,
        metric: str = "cosine",
        shards: int | None = None,
        writer: bool = True,
        create: bool = True,
        reset: bool = False,
        preset: str | None = None,
        flows: dict[str, str] | None = None,
    ) -> Workspace:
        """Open (or create) the workspace at ``path``.

        ``encoder`` is the fingerprint of the encoder that will read or write it: a workspace built
        with another encoder refuses to open, unless ``reset`` empties it first.
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
        lock_fd = _lock(path) if writer else None
        try:
            manifest = _read_manifest(manifest_path) if manifest_path.exists() else None
            ws = cls(path, DocStore(path / "docs.sqlite"), manifest or {}, lock_fd)
        except BaseException:
            _unlock(lock_fd)
            raise
        try:
            ws._setup(manifest is None, encoder, dim, metric, shards, writer, reset, preset, flows)
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
            self.store.clear()
            m.update(encoder=encoder, dim=dim, metric=metric, preset=preset or m.get("preset", "default"))
        recorded = m.get("encoder")
        if encoder and recorded and recorded != encoder:
            if self.store.count_docs() > 0:
                raise StoreError(
                    f"workspace {self.path} was built with encoder {recorded}, but this flow encodes with "
                    f"{encoder}; re-index it with `lookalike index --reset PATH...`, or pass another --workspace"
                )
            m["encoder"] = encoder  # an empty workspace simply adopts the new encoder
        elif encoder and not recorded:
            m["encoder"] = encoder
        if (m.get("dim"), m.get("metric", "cosine")) != (dim, metric) and self.store.count_chunks() > 0:
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
        if n != m.get("shards"):
            if not writer:
                raise StoreError(f"workspace {self.path} has {m.get('shards')} shards, the flow asks for {n}")
            self._reshard(n)
        m["shards"] = n
        m["lookalike_version"] = __version__
        if writer:
            self._write_manifest()
        self._load_shards(n, dim, metric, save=writer)

    def _reshard(self, n: int) -> None:
        doc_ids = [d.id for d in self.store.iter_docs()]
        self.store.reassign_shards(n, {d: shard_for(d, n) for d in doc_ids})

    def _load_shards(self, n: int, dim: int, metric: str, save: bool) -> None:
        generation = self.store.generation
        self.shards = []
        for i in range(n):
            folder = self.path / f"shard-{i}"
            shard = VectorShard.load(folder, dim, i, generation, metric)
            if shard is None:
                # A stale or damaged snapshot (a crash after a commit, or a changed shard count):
                # rebuild this shard from what SQLite committed.
                shard = VectorShard(dim, i, metric)
                ids, vectors = self.store.shard_vectors(i, dim)
                shard.add(ids, vectors)
                if save:
                    shard.save(folder, generation)
            self.shards.append(shard)
        self._saved_generation = generation

    def _write_manifest(self) -> None:
        atomic_write(self.path / MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True).encode())

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
    def roots(self) -> list[str]:
        """The folders and files ever indexed into this workspace: the only places served from."""
        return list(self.manifest.get("roots", []))

    def add_roots(self, roots: Iterable[str]) -> None:
        known = self.roots
        new = sorted({r for r in roots if not any(within(r, k) for k in known)})
        if new and self._lock_fd is not None:
            self.manifest["roots"] = sorted(known + new)
            self._write_manifest()

    # --- writing ------------------------------------------------------------------------------

    def commit(self, request: Request) -> list[Document]:
        """Commit what a finished request's indexers staged; return the documents now stored.

        Only documents the doc indexer accepted and no pod failed are stored, each with exactly the
        vectors the vector indexer accepted for it: one SQLite transaction, then the in-memory
        shards follow. A crash in between leaves the snapshot stale, and the next open rebuilds it.
        """
        if self._lock_fd is None:
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
        change = self.store.commit(docs, vectors, staged.deletes)
        self._max_chunks = None
        for shard, ids in change.removed.items():
            if shard < len(self.shards):
                self.shards[shard].remove(ids)
        for shard, (new_ids, vecs) in change.added.items():
            self.shards[shard].add(new_ids, vecs)
        return docs

    def flush(self) -> None:
        """Snapshot the shards if anything was committed since the last snapshot."""
        if self._lock_fd is None:
            return
        generation = self.store.generation
        if generation == self._saved_generation:
            return
        for shard in self.shards:
            shard.save(self.path / f"shard-{shard.shard}", generation)
        self._saved_generation = generation

    def touch(self, doc: StoredDoc, mtime_ns: int, size: int) -> None:
        self.store.touch(doc.id, mtime_ns, size)

    def close(self, flush: bool = True) -> None:
        try:
            if flush:
                self.flush()
        finally:
            self.store.close()
            _unlock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ------------------------------------------------------------------------------

    def max_chunks_per_doc(self) -> int:
        """The most chunks any document has (1 when empty); cached until the next commit."""
        if self._max_chunks is None:
            self._max_chunks = self.store.max_chunks_per_doc()
        return self._max_chunks

    def search(self, shard: int, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.shards[shard].search(queries, k)

    def docs_under(self, roots: Iterable[str]) -> dict[str, StoredDoc]:
        """Stored documents whose file is one of ``roots`` or inside one of them, by uri."""
        roots = list(roots)
        out = {}
        for uri, doc in self.store.docs_by_uri().items():
            if any(within(uri, r) for r in roots):
                out[uri] = doc
        return out

    def verify(self) -> list[str]:
        """Consistency problems between the doc store and the shards (empty when consistent)."""
        problems = []
        ids, _, doc_ids = self.store.all_vectors(self.dim)
        stored = set(ids.tolist())
        searchable: set[int] = set()
        for shard in self.shards:
            shard_ids = set(shard.ids().tolist())
            if len(shard_ids) != len(shard):
                problems.append(f"shard {shard.shard} holds duplicate vectors")
            searchable |= shard_ids
        if searchable - stored:
            problems.append(f"{len(searchable - stored)} searchable vectors belong to no indexed document")
        if stored - searchable:
            problems.append(f"{len(stored - searchable)} stored vectors are not searchable")
        return problems

    def info(self) -> WorkspaceInfo:
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
        )


def within(path: str, root: str) -> bool:
    """Is ``path`` the folder or file ``root``, or inside it? (Plain paths, no symlinks resolved.)"""
    root = root.rstrip(os.sep) or os.sep
    return path == root or path.startswith(root if root == os.sep else root + os.sep)


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not a lookalike manifest")
    return data


def _lock(path: Path) -> int:
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreError(f"workspace {path} is in use by pid {holder}; wait for it or pass another --workspace") from e
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
