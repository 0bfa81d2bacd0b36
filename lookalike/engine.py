"""What the CLI and the server call: index folders incrementally, remove files, search by image.

An :class:`Engine` ties a workspace to its index and query flows. Indexing is incremental: files
whose size and mtime are unchanged are not touched; files whose bytes are unchanged are only
re-stamped; new and changed files go through the index flow; files gone from disk are removed.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from lookalike import relevance
from lookalike.descriptors import QE_ALPHA, expand
from lookalike.digest import file_sha256
from lookalike.document import Chunk, Document, Request, Result, display_path
from lookalike.errors import (
    FATAL_REASONS,
    POD_FAILURE,
    STORE_FAILURE,
    BadInput,
    ClusterError,
    ConfigError,
    LookalikeError,
    NotFound,
    StoreError,
)
from lookalike.executors.loader import file_type
from lookalike.flow.graph import Flow, open_flow
from lookalike.flow.runtime import Runtime, RuntimeChoice, make_runtime
from lookalike.images import IMAGE_EXTENSIONS, ImageSource
from lookalike.relevance import Calibration, MatchLevel
from lookalike.service import preset_flows
from lookalike.settings import default, int_value
from lookalike.store.workspace import Workspace, within

FileStatus = Literal["new", "updated"]
TOP_K = int(default("LOOKALIKE_TOP_K"))


@dataclass
class IndexSummary:
    scanned: int = 0
    indexed: int = 0  # new files now searchable
    updated: int = 0  # changed files re-encoded
    unchanged: int = 0
    removed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    encoded: int = 0  # images run through the model
    without_vectors: int = 0  # indexed, but the flow found nothing to embed (e.g. no face)
    seconds: float = 0.0

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def files_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped_files"] = [{"path": p, "reason": r} for p, r in self.skipped_files]
        out["skipped_total"] = self.skipped_total
        out["files_per_second"] = round(self.files_per_second, 2)
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class PlannedFile:
    path: str
    status: FileStatus
    size: int
    mtime_ns: int


@dataclass
class Plan:
    todo: list[PlannedFile]  # to encode
    removed: list[str]  # doc ids whose files are gone
    unchanged: int
    still_bad: list[tuple[str, str, str]]  # (path, reason, message): failed before, unchanged since
    unusable: list[Unusable] = field(default_factory=list)  # never opened: not regular files, ...


class IndexProgress(Protocol):
    """What a caller of :meth:`Engine.index` implements to follow the work (the CLI's progress bar)."""

    def planned(self, total: int) -> None:
        """``total`` files are to be encoded."""

    def done(self, doc: Document) -> None:
        """A file was encoded and committed."""

    def skipped(self, doc: Document) -> None:
        """A file could not be used (``doc.error`` says why)."""

    def still_bad(self, path: str, message: str) -> None:
        """A file remembered as bad and unchanged since was not read again."""

    def unusable(self, path: str, message: str) -> None:
        """A directory entry that is never opened (a FIFO, a dangling link, ...)."""

    def note(self, message: str) -> None:
        """A stage of the work worth telling (building a new vector index, say)."""


class _Quiet:
    """No progress reporting."""

    def planned(self, total: int) -> None: ...
    def done(self, doc: Document) -> None: ...
    def skipped(self, doc: Document) -> None: ...
    def still_bad(self, path: str, message: str) -> None: ...
    def unusable(self, path: str, message: str) -> None: ...
    def note(self, message: str) -> None: ...


@dataclass
class Unusable:
    """A directory entry that is never opened as an image, and why (reported as a skip)."""

    path: str
    reason: str  # short category, for the summary
    message: str


@dataclass
class Scan:
    files: list[str]  # regular files to consider, sorted
    roots: list[str]  # the paths asked for, absolute
    unusable: list[Unusable]


def entry_problem(path: str) -> Unusable | None:
    """Why ``path`` cannot be read as an image without opening it, or None for a regular file.

    FIFOs, sockets, devices and symlinks to them are never opened (a FIFO would block, /dev/zero
    would fill memory); dangling symlinks and loops are named as such.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = display_path(os.readlink(path))
            return Unusable(path, "dangling symlink", f"dangling symlink to {target} (its target does not exist)")
        return Unusable(path, "missing file", "file disappeared before it was read")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Unusable(path, "symlink loop", "symlink loop: the link leads back to itself")
        return Unusable(path, "unreadable file", f"cannot read: {e.strerror or e}")
    if stat.S_ISREG(st.st_mode):
        if not os.access(path, os.R_OK):
            return Unusable(path, "unreadable file", "cannot read: permission denied")
        return None
    what = file_type(st.st_mode)
    if os.path.islink(path):
        target = display_path(os.path.realpath(path))
        if stat.S_ISDIR(st.st_mode):
            return Unusable(path, "symlink to a folder", f"symlink to the folder {target}, not followed")
        return Unusable(path, "not a regular file", f"symlink to {what} ({target}), never opened")
    return Unusable(path, "not a regular file", f"is {what}, never opened")


def _unreadable(unusable: dict[str, Unusable], top: str, e: OSError) -> None:
    where = e.filename if isinstance(e.filename, str) else top
    unusable[where] = Unusable(where, "unreadable folder", f"cannot list folder: {e.strerror or e}")


def scan(paths: Iterable[str | os.PathLike], glob: str | None = None, exclude: Iterable[Path] = ()) -> Scan:
    """The image files under ``paths``, and the entries that cannot be used, with why.

    Directories are walked recursively without following symlinked folders (no loops), skipping
    hidden ones and ``exclude`` (the workspace). Without ``glob``, files are chosen by extension;
    with it, by matching their name or path. A path named directly is always considered.
    """
    excluded = {os.path.abspath(e) for e in exclude}
    files: set[str] = set()
    roots: list[str] = []
    unusable: dict[str, Unusable] = {}

    def consider(full: str) -> None:
        problem = entry_problem(full)
        if problem is None:
            files.add(full)
        else:
            unusable[full] = problem

    for p in paths:
        path = os.path.abspath(os.fspath(p))
        if not os.path.lexists(path):
            raise NotFound(f"no such file or directory: {display_path(os.fspath(p))}")
        roots.append(path)
        if not os.path.isdir(path):
            consider(path)
            continue

        for dirpath, dirnames, filenames in os.walk(path, onerror=functools.partial(_unreadable, unusable, path)):
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if d.startswith(".") or full in excluded:
                    continue
                if os.path.islink(full):  # os.walk does not descend into it; say so
                    consider(full)
                else:
                    keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                full = os.path.join(dirpath, name)
                if name.startswith("."):
                    continue
                if glob is not None:
                    if not _glob_matches(full, path, glob):
                        continue
                elif os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                consider(full)
    return Scan(sorted(files), roots, sorted(unusable.values(), key=lambda u: u.path))


def _sha256(path: str) -> str | None:
    """The file's digest, or None if it cannot be read (then it is re-indexed, and fails there)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


class Engine:
    """A workspace with its flows. Open with :meth:`open`; close (or use ``with``) when done."""

    def __init__(
        self,
        workspace: Workspace,
        index_flow: Flow | None,
        query_flow: Flow | None,
        runtime: RuntimeChoice | None = None,
    ):
        self.workspace = workspace
        self.index_flow = index_flow
        self.query_flow = query_flow
        self.runtime = runtime or RuntimeChoice()
        self._query_runtime: Runtime | None = None
        self._index_runtime: Runtime | None = None  # kept between background (server) index calls
        self._calibration: Calibration | None = None
        self._calibration_generation = -1
        self._calibration_lock = threading.Lock()
        self._runtime_lock = threading.Lock()  # searches run side by side: one query runtime for all

    @classmethod
    def open(
        cls,
        workspace: str | os.PathLike,
        *,
        index_flow: str | os.PathLike | Flow | None = None,
        query_flow: str | os.PathLike | Flow | None = None,
        for_indexing: bool = True,
        reset: bool = False,
        preset: str | None = None,
        index_memory: int | None = None,
        index_latency_ms: float | None = None,
        runtime: RuntimeChoice | None = None,
    ) -> Engine:
        """Open ``workspace`` for indexing (a writer: takes the workspace lock) or only for search.

        A workspace remembers the flows it was indexed with (and its preset): whichever flow is not
        given is the remembered one, else the built-in default. So `index` again, `search` and
        `serve` need no flags, whatever flows built the workspace.
        """
        ws_path = Path(workspace)
        built: list[Flow] = []  # every flow made here or given: closed (their containers) on failure
        try:
            if preset is not None:
                preset_index, preset_query = preset_flows(preset)
                index_flow = index_flow or preset_index
                query_flow = query_flow or preset_query
            elif not reset:
                if index_flow is None and for_indexing:
                    index_flow = _stored_flow(ws_path, "index")
                    built += [index_flow] if index_flow is not None else []
                if query_flow is None:
                    query_flow = _stored_flow(ws_path, "query")
                    built += [query_flow] if query_flow is not None else []
            iflow = _as_flow(index_flow, "index") if for_indexing else None
            built += [iflow] if iflow is not None else []
            qflow = _as_flow(query_flow, "query")
            built.append(qflow)
            budget = (index_memory, index_latency_ms)
            return cls._open(ws_path, iflow, qflow, for_indexing, reset, preset, budget, runtime)
        except BaseException:
            for flow in {id(f): f for f in built}.values():
                try:
                    flow.close()  # the containers it started
                except LookalikeError:
                    pass  # the error that stopped the open is the one to report
            raise

    @classmethod
    def _open(
        cls,
        ws_path: Path,
        iflow: Flow | None,
        qflow: Flow,
        for_indexing: bool,
        reset: bool,
        preset: str | None,
        budget: tuple[int | None, float | None],
        runtime: RuntimeChoice | None,
    ) -> Engine:
        index_memory, index_latency_ms = budget
        main = iflow or qflow
        fingerprint = main.fingerprint()
        dim, metric = main.vector_space()
        # The index flow decides the shards; a query flow searches however many the workspace has.
        shards = iflow.vector_shards() if iflow is not None else None
        qflow.vector_shards()  # it must have a pod that stores vectors
        if iflow is not None:
            iflow.check_can_index()
            if qflow.fingerprint() != fingerprint:
                raise ConfigError(
                    f"the query flow encodes with {qflow.fingerprint()} but the index flow with {fingerprint}"
                )
        flows = None
        if iflow is not None:  # remembered, so later opens use them without being told
            flows = {
                "index": iflow.text,
                "index_base_dir": str(iflow.loaded.base_dir),
                "query": qflow.text,
                "query_base_dir": str(qflow.loaded.base_dir),
            }
        ws = Workspace.open(
            ws_path,
            encoder=fingerprint,
            dim=dim,
            metric=metric,
            shards=shards,
            preset=preset,
            writer=for_indexing,
            create=for_indexing,
            reset=reset,
            flows=flows,
            index_memory=index_memory,
            index_latency_ms=index_latency_ms,
        )
        try:
            qflow.set_vector_shards(ws.n_shards_configured)
            choice = runtime or RuntimeChoice.from_flow(iflow or qflow)
        except BaseException:
            ws.close()
            raise
        return cls(ws, iflow, qflow, choice)

    def close(self, flush: bool = True) -> None:
        """Stop the flows and close the workspace. Their shard pods snapshot their indexes unless
        ``flush`` is False (after an error: the next open brings the old snapshots forward)."""
        errors: list[BaseException] = []
        # The query pods first: they hold the freshest shard indexes and snapshot them, so the
        # index pods after them find nothing left to write.
        for name in ("_query_runtime", "_index_runtime"):
            runtime = getattr(self, name)
            setattr(self, name, None)
            if runtime is not None:
                try:
                    runtime.close(abort=not flush)
                except Exception as e:  # noqa: BLE001 - the other runtime and the store still close
                    errors.append(e)
        try:
            self.workspace.close()
        finally:
            for flow in (self.index_flow, self.query_flow):
                if flow is not None:
                    try:
                        flow.close()  # stops the containers of its container pods
                    except LookalikeError as e:
                        errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # After an error, no snapshot: it could only hide the error (a full disk fails both), and
        # the next open brings the shards forward from what was committed.
        self.close(flush=exc_type is None)

    # --- indexing -----------------------------------------------------------------------------

    def plan(
        self,
        paths: Iterable[str | os.PathLike],
        glob: str | None = None,
        limit: int | None = None,
        retry_skipped: bool = False,
    ) -> Plan:
        """What indexing ``paths`` has to do, decided from the files' size, mtime and content.

        A file remembered as bad (its bytes could not be decoded) is not read again while its size
        and mtime stay the same, unless ``retry_skipped``.
        """
        found = scan(paths, glob, exclude=[self.workspace.path])
        files, roots = found.files, found.roots
        self.workspace.add_roots(roots)
        if limit is not None:
            files = files[:limit]
        plan = Plan([], [], 0, [], list(found.unusable))
        stats = []
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                plan.unusable.append(Unusable(path, "missing file", "file disappeared before it was read"))
                continue
            stats.append((path, st.st_size, st.st_mtime_ns))
        store = self.workspace.store
        # The scan meets the doc store in SQL (a temporary table joined on the uri index): only the
        # files that changed, and the documents that are gone, ever come back into Python.
        with store.scanned(stats):
            changed = store.changed_files()
            plan.unchanged = len(stats) - len(changed)
            for f in changed:
                if f.doc_id is None and f.skip is not None and not retry_skipped and f.skip[:2] == (f.size, f.mtime_ns):
                    plan.still_bad.append((f.path, f.skip[2], f.skip[3]))
                elif f.doc_id is None:
                    plan.todo.append(PlannedFile(f.path, "new", f.size, f.mtime_ns))
                elif f.content_hash is not None and _sha256(f.path) == f.content_hash:
                    store.touch(f.doc_id, f.mtime_ns, f.size)  # same bytes: nothing to encode
                    plan.unchanged += 1
                else:
                    plan.todo.append(PlannedFile(f.path, "updated", f.size, f.mtime_ns))
            if limit is None:  # with --limit, unseen files are simply not looked at, not gone
                plan.removed = [d for d, uri in store.unscanned_docs(roots) if _matches(uri, roots, glob)]
                gone = [u for u in store.unscanned_skips(roots) if _matches(u, roots, glob)]
                if gone:
                    store.forget_skips(gone)
        return plan

    def index(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        glob: str | None = None,
        limit: int | None = None,
        batch_size: int = 16,
        retry_skipped: bool = False,
        progress: IndexProgress | None = None,
        background: bool = False,
    ) -> IndexSummary:
        """Index ``paths`` incrementally. One bad file never ends the run: it is reported and
        counted. A store error (a full disk, say) does end it, once what was done is committed.

        When the collection outgrows its vector index, a new one is built in the background; this
        waits for it (and snapshots it) unless ``background`` (the server's uploads: searches go on
        from the old index until the new one is swapped in, and the snapshot is written lazily)."""
        if self.index_flow is None:
            raise ConfigError("this engine was opened for search only")
        if batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {batch_size}")
        progress = progress or _Quiet()
        start = time.perf_counter()
        plan = self.plan(paths, glob, limit, retry_skipped)
        todo, removed = plan.todo, plan.removed
        summary = IndexSummary(
            scanned=len(todo) + plan.unchanged + len(plan.still_bad) + len(plan.unusable), unchanged=plan.unchanged
        )
        progress.planned(len(todo))
        status = {Document.from_path(f.path).id: f.status for f in todo}
        skipped: Counter[str] = Counter()
        for u in plan.unusable:
            skipped[u.reason] += 1
            summary.skipped_files.append((u.path, u.message))
            progress.unusable(u.path, u.message)
        for path, reason, message in plan.still_bad:
            skipped[reason] += 1
            summary.skipped_files.append((path, message))
            progress.still_bad(path, message)
        fatal: list[Document] = []  # a store error, or a pod that died: the same for every further request

        def account(request: Request) -> None:
            if request.kind != "index":
                return
            failures = []
            for doc in request.docs:
                if doc.error is not None and doc.error_reason in FATAL_REASONS:
                    # Not the file's problem, and the same for every file: the run ends with it.
                    fatal.append(doc)
                elif doc.error is not None:
                    skipped[doc.error_reason or doc.error] += 1
                    summary.skipped_files.append((doc.uri or doc.id, doc.error))
                    progress.skipped(doc)
                    # Only the file's own bad bytes are remembered; anything else is retried next run.
                    if doc.input_fault and doc.uri and doc.size is not None and doc.mtime_ns is not None:
                        failures.append((doc.uri, doc.size, doc.mtime_ns, doc.error_reason or doc.error, doc.error))
                else:
                    if not any(c.embedding is not None for c in doc.chunks):
                        summary.without_vectors += 1
                    st = status.get(doc.id, "new")
                    if st == "new":
                        summary.indexed += 1
                    else:
                        summary.updated += 1
                    progress.done(doc)
            if failures:
                try:
                    self.workspace.store.record_skips(failures)
                except StoreError as e:
                    failed = Document(id="skips")
                    failed.fail(str(e), STORE_FAILURE)
                    fatal.append(failed)

        runtime = self._indexing_runtime()
        interrupted = True
        try:
            if removed:
                for part in _batches(removed, 500):
                    deleted = runtime.submit(Request("delete", [Document(id=i) for i in part])).result()
                    fatal.extend(d for d in deleted.docs if d.error and d.error_reason in FATAL_REASONS)
                summary.removed = len(removed)
            requests = (
                Request("index", [Document.from_path(f.path) for f in batch]) for batch in _batches(todo, batch_size)
            )
            if not fatal:
                for done in runtime.run(requests):
                    account(done)
                    if fatal:  # e.g. the disk is full: every further commit would fail the same way
                        break
            interrupted = False
        finally:
            abandon = interrupted or bool(fatal)
            if not background or abandon:
                # Closing the index flow is what brings every shard's index up to date: each shard
                # pod takes in what was committed, builds a new index type if the collection
                # outgrew its own (waited for), and writes its snapshot. An abandoned run (Ctrl-C,
                # a full disk, a dead pod) leaves that to the next open; nothing committed is lost.
                if not abandon and (summary.indexed or summary.updated or summary.removed):
                    progress.note("bringing the shards' vector indexes up to date")
                self._close_indexing_runtime(abort=abandon)
        if fatal:
            done_count = summary.indexed + summary.updated
            raise _fatal(
                fatal[0],
                f"indexing stopped: {{}}; {done_count} images were committed, and running "
                "`lookalike index` again finishes the job",
            )
        summary.encoded = summary.indexed + summary.updated
        summary.skipped = dict(skipped.most_common())
        summary.seconds = time.perf_counter() - start
        return summary

    def _indexing_runtime(self) -> Runtime:
        """The index flow's runtime: started now, or kept from an earlier background call."""
        if self.index_flow is None:
            raise ConfigError("this engine was opened for search only")
        if self._index_runtime is None:
            self._index_runtime = make_runtime(self.index_flow, self.workspace, self.runtime).start()
        return self._index_runtime

    def _close_indexing_runtime(self, abort: bool = False) -> None:
        runtime, self._index_runtime = self._index_runtime, None
        if runtime is None:
            return
        try:
            runtime.close(abort=abort)
        except LookalikeError:
            if not abort:  # an abandoned run has its own error to report
                raise

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove the documents of these files, or of every file under these folders."""
        roots = [os.path.abspath(os.fspath(p)) for p in paths]
        return self.delete_ids(self.workspace.doc_ids_under(roots))

    def delete_ids(self, ids: list[str], background: bool = False) -> int:
        """Remove documents (and their vectors) by id, through the index flow's delete handlers."""
        if not ids:
            return 0
        runtime = self._indexing_runtime()
        interrupted = True
        try:
            for part in _batches(ids, 500):
                done = runtime.submit(Request("delete", [Document(id=i) for i in part])).result()
                failed = next((d for d in done.docs if d.error and d.error_reason in FATAL_REASONS), None)
                if failed is not None:
                    raise _fatal(failed, "removing stopped: {}; running it again finishes the job")
            interrupted = False
        finally:
            if not background or interrupted:
                self._close_indexing_runtime(abort=interrupted)
        return len(ids)

    def shard_indexes(self) -> list[dict[str, Any]] | None:
        """The query pods' descriptions of their shard indexes, once the query flow runs (else None)."""
        if self._query_runtime is None:
            return None
        pods = self.query_flow.pods_storing_vectors() if self.query_flow is not None else []
        return self._query_runtime.ask(pods[0].name, "describe") if pods else None

    def runtime_info(self) -> dict[str, Any]:
        """Where the query flow's pods run: the runtime, and each pod replica's place."""
        runtime = self._query_runtime
        return {"kind": self.runtime.kind, "pods": runtime.placement() if runtime is not None else {}}

    # --- searching ----------------------------------------------------------------------------

    @property
    def query_parallelism(self) -> int:
        """How many requests the query flow works on side by side: its most replicated pod's replicas."""
        if self.query_flow is None:
            return 1
        return max(pod.config.parallel for pod in self.query_flow.pods.values())

    def warm_up(self) -> None:
        """Start the query flow and run one query, so the first real search pays no start-up."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (127, 127, 127)).save(buf, "PNG")
        # As many at once as the flow runs side by side, so every replica has run once.
        n = self.query_parallelism
        with ThreadPoolExecutor(n, thread_name_prefix="warm-up") as pool:
            list(pool.map(lambda _: self.run_queries([query_doc(0, buf.getvalue())], 1), range(n)))

    def _runtime(self) -> Runtime:
        with self._runtime_lock:
            if self._query_runtime is None:
                assert self.query_flow is not None
                self._query_runtime = make_runtime(self.query_flow, self.workspace, self.runtime).start()
            return self._query_runtime

    def calibration(self) -> Calibration | None:
        """The collection's background for match levels (None unless the workspace is cosine):
        loaded from the workspace, and fitted again when missing, from another encoder, or the
        collection has grown or shrunk by a factor of 1.25 since. Checked again only after a commit
        (the store's generation moved), so a search pays nothing for it."""
        if self.workspace.metric != "cosine":
            return None
        generation = self.workspace.store.generation
        with self._calibration_lock:
            if self._calibration is not None and self._calibration_generation == generation:
                return self._calibration
            fingerprint, docs = self.workspace.encoder or "", self.workspace.store.count_docs()
            cal = self._calibration or Calibration.load(self.workspace.path)
            if cal is None or cal.stale(fingerprint, docs):
                sample = self.workspace.store.sample_embeddings(relevance.SAMPLE, self.workspace.dim)
                cal = Calibration.fit(sample, fingerprint, docs)
                try:
                    cal.save(self.workspace.path)
                except OSError:
                    pass  # a read-only workspace: fitted again by the next process, a second's work
            self._calibration, self._calibration_generation = cal, generation
            return cal

    def label_matches(self, results: list[Result], cal: Calibration | None) -> None:
        """Set each result's ``match`` level (see :mod:`lookalike.relevance`): from the calibration
        on cosine workspaces, from dlib's distances on face workspaces, none otherwise."""
        scores = [r.score for r in results]
        if cal is not None:
            levels: list[MatchLevel] | None = cal.levels(scores)
        elif self.workspace.preset == "faces":
            levels = relevance.face_levels(scores)
        else:
            levels = None  # an L2 space of somebody's own encoder: nothing measured to say
        for n, r in enumerate(results):
            r.match = levels[n] if levels is not None else None

    def _expand(self, done: dict[str, Document], k: int, cal: Calibration, parameters: dict[str, Any]) -> None:
        """Alpha query expansion (:mod:`lookalike.descriptors`): each image query whose best match
        is not a copy searches again with its vector plus its ``k`` nearest results'. The results
        are ranked by that second search but scored, and so labelled, by their cosine to the query
        itself (an expanded vector sits closer to the neighbourhood than the query does)."""
        todo: list[tuple[Document, np.ndarray, np.ndarray]] = []  # (query, its vector, expanded)
        for d in done.values():
            whole = next((c for c in d.chunks if c.kind == "whole" and c.embedding is not None), None)
            if d.error is not None or whole is None or whole.embedding is None:
                continue
            exclude = d.query_info.get("exclude")  # "more like this": the document itself is no neighbour
            top = [r for r in d.results if r.doc_id != exclude][:k]
            if not top or top[0].score >= cal.near_floor:
                continue  # nothing to expand with, or a copy: found as it is
            vecs = self._vectors([r.chunk_id for r in top])
            pairs = [(vecs[r.chunk_id], r.score) for r in top if r.chunk_id in vecs]
            if pairs:
                query = whole.embedding.astype(np.float32)
                neighbours = np.stack([v for v, _ in pairs])[None]
                sims = np.array([[sc for _, sc in pairs]], dtype=np.float32)
                todo.append((d, query, expand(query[None, :], neighbours, sims, QE_ALPHA)[0]))
        if not todo:
            return
        queries = [Document(id=d.id, uri=d.uri, chunks=[Chunk(kind="whole", embedding=v)]) for d, _, v in todo]
        again = {
            q.id: q for q in self._runtime().submit(Request("search", queries, parameters=parameters)).result().docs
        }
        for d, query, _ in todo:
            second = again.get(d.id)
            if second is None or second.error is not None:
                continue  # the first search's results stand
            vecs = self._vectors([r.chunk_id for r in second.results])
            for r in second.results:
                if r.chunk_id in vecs:
                    r.score = float(np.dot(vecs[r.chunk_id], query))
            d.results = second.results

    def _vectors(self, chunk_ids: list[int]) -> dict[int, np.ndarray]:
        """The stored vectors of those of these chunks that still exist, by chunk id."""
        ids, vecs = self.workspace.exact(np.array(chunk_ids, dtype=np.int64))
        return dict(zip(ids.tolist(), vecs, strict=True))

    def run_queries(
        self, docs: list[Document], top_k: int, face: int | None = None, min_match: MatchLevel | None = None
    ) -> list[list[Result] | BadInput]:
        """Run query documents through the query flow as one request: per document, its results,
        each labelled with its match level and cut at ``min_match``, or the BadInput that says why
        it could not be used. Image queries are expanded (``LOOKALIKE_QUERY_EXPANSION``)."""
        if not 1 <= top_k <= 1000:
            raise BadInput(f"top_k must be between 1 and 1000, got {top_k}", "bad top_k")
        if not docs:
            return []
        cal = self.calibration()
        k = int_value("LOOKALIKE_QUERY_EXPANSION", 0, 100) if cal is not None else 0
        parameters: dict[str, Any] = {"top_k": top_k}
        if face is not None:
            parameters["face"] = face  # which face of the query image (face flows)
        # Enough results to expand with whatever top_k asks (and one more for an excluded document).
        first = dict(parameters, top_k=min(1000, max(top_k, k + 1)))
        runtime = self._runtime()
        done = runtime.submit(Request("search", docs, parameters=first)).result()
        by_id = {d.id: d for d in done.docs}
        if k:
            self._expand(by_id, k, cal, dict(parameters))  # type: ignore[arg-type]  # cal is set when k is
        out: list[list[Result] | BadInput] = []
        for doc in docs:
            d = by_id[doc.id]
            doc.query_info = d.query_info  # what the flow learnt about the query (e.g. its faces)
            if d.error is not None and d.error_reason == POD_FAILURE:
                # The cluster's fault, not the query's: the next search starts the pods afresh
                # (once: a search beside this one may have found the same dead pods).
                with self._runtime_lock:
                    dead = self._query_runtime is runtime
                    if dead:
                        self._query_runtime = None
                if dead:
                    _close_quietly(runtime)
                raise ClusterError(f"search failed: {d.error}")
            if d.error is not None:
                out.append(BadInput(f"query {d.uri or 'image'}: {d.error}", d.error_reason))
            else:
                results = d.results[:top_k]  # the first search may have fetched more, to expand with
                self.label_matches(results, cal)
                out.append(cut(results, min_match))
        return out

    def query_docs(
        self, docs: list[Document], top_k: int, face: int | None = None, min_match: MatchLevel | None = None
    ) -> list[list[Result]]:
        """Like :meth:`run_queries`, but the first unusable query raises its BadInput."""
        results = []
        for r in self.run_queries(docs, top_k, face, min_match):
            if isinstance(r, BadInput):
                raise r
            results.append(r)
        return results

    def search(
        self,
        images: list[ImageSource],
        top_k: int = TOP_K,
        face: int | None = None,
        min_match: MatchLevel | None = None,
    ) -> list[list[Result]]:
        """Ranked results for each query image (a path or bytes), cut at ``min_match`` if given."""
        return self.query_docs([query_doc(i, image) for i, image in enumerate(images)], top_k, face, min_match)

    def stored_query_doc(self, doc_id: str) -> Document:
        """A query document carrying an indexed document's stored vectors (no file is read): its
        whole-image chunk, or, where it has none (faces), its first chunk, the largest face."""
        rows = self.workspace.store.chunks_of(doc_id)
        if not rows:
            if self.workspace.store.get_docs([doc_id]):
                raise BadInput(f"document {doc_id!r} has no vectors to search with (no face found?)", "no vectors")
            raise NotFound(f"no indexed document {doc_id!r}")
        chosen = [r for r in rows if r[1] == "whole"] or rows[:1]
        chunks = [Chunk(kind=kind, bbox=bbox, embedding=emb) for _, kind, bbox, emb in chosen]
        return Document(id=f"similar-{doc_id}", chunks=chunks, query_info={"exclude": doc_id})

    def search_tags(self, text: str, top_k: int = TOP_K) -> list[Result]:
        """Documents tagged with what ``text`` names, ranked by summed probability.

        A word WordNet places above ImageNet classes ("dog", "birds", "fruit") finds every class
        beneath it, each document scored by the summed probability of its tags among them. Any
        other text matches inside the class labels ("retriev"), scored by the best such tag.
        """
        from lookalike.models.wordnet import concept

        text = text.strip()
        if not text:
            raise BadInput("the tag query is empty", "bad query")
        found = concept(text)
        if found is not None:
            hits = self.workspace.store.search_labels(found.labels, top_k)
        else:
            hits = self.workspace.store.search_tags(text, top_k)
        stored = self.workspace.store.get_docs(d for d, _, _ in hits)
        out = []
        for doc_id, _label, p in hits:
            s = stored.get(doc_id)
            if s is not None:
                out.append(Result(doc_id, p, -1, s.uri, s.width, s.height, s.tags))
        return out


def cut(results: list[Result], min_match: MatchLevel | None) -> list[Result]:
    """The results whose match level is ``min_match`` or better (all of them for None)."""
    if min_match is None:
        return results
    return [r for r in results if r.match is not None and relevance.at_least(r.match, min_match)]


def _close_quietly(runtime: Runtime) -> None:
    try:
        runtime.close(abort=True)
    except LookalikeError:
        pass  # it is being dropped for a failure already reported


def _fatal(doc: Document, template: str) -> LookalikeError:
    """The error that ends a run, from a document failed by the store or by a pod that died."""
    message = template.format((doc.error or "").removeprefix("not stored: "))
    return ClusterError(message) if doc.error_reason == POD_FAILURE else StoreError(message)


def _matches(uri: str, roots: list[str], glob: str | None) -> bool:
    """Is ``uri`` one of ``roots`` or under one, and (with ``glob``) matched by it?"""
    for root in roots:
        if uri == root:
            return True
        if within(uri, root):
            if glob is None:
                return True
            if _glob_matches(uri, root, glob):
                return True
    return False


def _glob_matches(path: str, root: str, glob: str) -> bool:
    """--glob matches a file's name or its path relative to the scanned folder."""
    return fnmatch.fnmatch(os.path.basename(path), glob) or fnmatch.fnmatch(os.path.relpath(path, root), glob)


def query_doc(i: int, image: ImageSource) -> Document:
    """A query document for an image given as a path or bytes."""
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(image))
        if not os.path.lexists(path):
            raise NotFound(f"no such image: {display_path(os.fspath(image))}")
        problem = entry_problem(path)
        if problem is not None:
            raise BadInput(f"cannot use {display_path(path)} as a query: {problem.message}", problem.reason)
        return Document(id=f"query-{i}", uri=path)
    if isinstance(image, (bytes, bytearray)):
        return Document(id=f"query-{i}", blob=bytes(image))
    raise BadInput(f"a query must be a path or bytes, not {type(image).__name__}", "wrong type")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _as_flow(spec: str | os.PathLike | Flow | None, default: str) -> Flow:
    return spec if isinstance(spec, Flow) else open_flow(spec, default)


def _stored_flow(path: Path, kind: str) -> Flow | None:
    """The ``kind`` ("index" or "query") flow a workspace remembers, if it has one."""
    from lookalike.flow.config import load_flow_text

    stored = Workspace.stored_flow(path, kind)
    if stored is None:
        return None
    text, base = stored
    return Flow(load_flow_text(text, f"<{kind} flow stored in {path}>", base), kind)
