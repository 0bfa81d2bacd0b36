"""Indexing: folders into the workspace, incrementally, and files out of it.

An index run plans (:mod:`lookalike.library.planning`), does the plan's bookkeeping (the roots,
re-stamped files, forgotten bad files), follows renamed and moved files to their new paths (their
vectors kept, nothing encoded), removes the documents of files that are gone, and sends
the new and changed files through the index flow in batches. One bad file never ends the run: it is
reported and counted. A store error (a full disk, say), a pod that died or a model that cannot
load ends it, once what was done is committed; running it again finishes the job.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Protocol

from lookalike.document import Document, Request
from lookalike.errors import STORE_FAILURE, LookalikeError, StoreError, fatal_error
from lookalike.library.flows import Flows
from lookalike.library.planning import Plan, PlannedFile, entry_problem, plan_index, scan
from lookalike.library.types import IndexReport, IndexRequest
from lookalike.metadata import read_metadata
from lookalike.settings import default
from lookalike.store.moves import MoveLog
from lookalike.store.workspace import Workspace

# Documents per delete request: a bound on one request's size.
DELETE_BATCH = 500


class IndexProgress(Protocol):
    """What a caller of :meth:`Indexer.index` implements to follow the work (the CLI's progress bar)."""

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


class Quiet:
    """No progress reporting."""

    def planned(self, total: int) -> None: ...
    def done(self, doc: Document) -> None: ...
    def skipped(self, doc: Document) -> None: ...
    def still_bad(self, path: str, message: str) -> None: ...
    def unusable(self, path: str, message: str) -> None: ...
    def note(self, message: str) -> None: ...


class IndexRun:
    """The accounting of one index run: what each finished request did, and whether the run must
    stop (a failure that is not the file's, and would be the same for every further request)."""

    def __init__(self, workspace: Workspace, plan: Plan, progress: IndexProgress):
        self.workspace, self.progress = workspace, progress
        self.report = IndexReport(
            scanned=plan.scanned, unchanged=plan.unchanged, set_aside=plan.set_aside, workspace=str(workspace.path)
        )
        self.status = {Document.from_path(f.path).id: f.status for f in plan.todo}
        self.skipped: Counter[str] = Counter()
        self.fatal: list[Document] = []
        for u in plan.unusable:
            self._skip(u.reason, u.path, u.message)
            progress.unusable(u.path, u.message)
        for path, reason, message in plan.still_bad:
            self._skip(reason, path, message)
            progress.still_bad(path, message)

    def _skip(self, reason: str, path: str, message: str) -> None:
        self.skipped[reason] += 1
        self.report.skipped_files.append((path, message))

    def account(self, request: Request) -> None:
        """Take in a finished index request: each document committed, skipped, or fatal."""
        failures = []
        for doc in request.docs:
            if doc.fatal:
                self.fatal.append(doc)  # not the file's problem: the run ends with it
            elif doc.error is not None:
                self._skip(doc.error_reason or doc.error, doc.uri or doc.id, doc.error)
                self.progress.skipped(doc)
                # Only the file's own bad bytes are remembered; anything else is retried next run.
                if doc.input_fault and doc.uri and doc.size is not None and doc.mtime_ns is not None:
                    failures.append((doc.uri, doc.size, doc.mtime_ns, doc.error_reason or doc.error, doc.error))
            else:
                self._done(doc)
        if failures:
            try:
                self.workspace.store.record_skips(failures)
            except StoreError as e:
                failed = Document(id="skips")
                failed.fail(str(e), STORE_FAILURE)
                self.fatal.append(failed)

    def _done(self, doc: Document) -> None:
        if not any(c.embedding is not None for c in doc.chunks):
            self.report.without_vectors += 1
        if self.status.get(doc.id, "new") == "new":
            self.report.indexed += 1
        else:
            self.report.updated += 1
        self.progress.done(doc)

    @property
    def changed(self) -> bool:
        return bool(self.report.indexed or self.report.updated or self.report.removed)

    def error(self) -> LookalikeError:
        """The error that ends the run (there is a fatal document)."""
        done = self.report.indexed + self.report.updated
        return _stopped("indexing", self.fatal[0], f"{done} images were committed, and running `lookalike index` again")

    def finish(self, start: float) -> IndexReport:
        r = self.report
        r.encoded = r.indexed + r.updated
        r.skipped = dict(self.skipped.most_common())
        r.seconds = time.perf_counter() - start
        r.docs = self.workspace.store.count_docs()
        return r


class Indexer:
    """Indexes files into one workspace through its index flow, and removes them."""

    def __init__(self, workspace: Workspace, flows: Flows):
        self.workspace, self.flows = workspace, flows

    def plan(self, request: IndexRequest) -> Plan:
        """What indexing ``request.paths`` has to do (nothing is written)."""
        set_aside = MoveLog(self.workspace.path).set_aside()
        found = scan(request.paths, request.glob, exclude=[self.workspace.path], set_aside=set_aside)
        return plan_index(
            self.workspace.store, found, glob=request.glob, limit=request.limit, retry_skipped=request.retry_skipped
        )

    def index(self, request: IndexRequest, progress: IndexProgress | None = None) -> IndexReport:
        """Index ``request.paths`` incrementally (see the module). When the collection outgrows its
        vector index, a new one is built; this waits for it (and snapshots it) unless
        ``request.background``: then searches go on from the old index until the new one is
        swapped in, and the snapshot is written lazily."""
        start = time.perf_counter()
        plan = self.plan(request)
        self._bookkeeping(plan)
        moved = self._follow_moves(plan)
        run = IndexRun(self.workspace, plan, progress or Quiet())
        run.report.moved = moved
        self._read_old_headers(run.progress)
        run.progress.planned(len(plan.todo))
        if request.quiet_noop and not plan.todo and not plan.removed:
            return run.finish(start)  # nothing to encode or remove: no flow started (see IndexRequest)
        runtime = self.flows.runtime("index")
        interrupted = True
        try:
            if plan.removed:
                run.fatal.extend(self._delete(plan.removed))
                run.report.removed = len(plan.removed)
            batches = (
                Request("index", [Document.from_path(f.path) for f in part])
                for part in _batches(plan.todo, request.batch_size)
            )
            if not run.fatal:
                for done in runtime.run(batches):
                    run.account(done)
                    if run.fatal:  # e.g. the disk is full: every further commit would fail the same way
                        break
            interrupted = False
        finally:
            abandon = interrupted or bool(run.fatal)
            if not request.background or abandon:
                # Closing the index flow is what brings every shard's index up to date: each shard
                # pod takes in what was committed, builds a new index type if the collection
                # outgrew its own (waited for), and writes its snapshot. An abandoned run (Ctrl-C,
                # a full disk, a dead pod) leaves that to the next open; nothing committed is lost.
                if not abandon and run.changed:
                    run.progress.note("bringing the shards' vector indexes up to date")
                self.flows.drop("index", runtime, abort=abandon)
        if run.fatal:
            raise run.error()
        return run.finish(start)

    def _bookkeeping(self, plan: Plan) -> None:
        """What the plan found without encoding anything: the roots, files whose bytes did not
        change (re-stamped), and remembered bad files that are gone."""
        store = self.workspace.store
        self.workspace.add_roots(plan.roots)
        for doc_id, mtime_ns, size in plan.restamp:
            store.touch(doc_id, mtime_ns, size)
        if plan.forget:
            store.forget_skips(plan.forget)

    def _follow_moves(self, plan: Plan) -> int:
        """Move the documents of renamed and moved files to their new paths (nothing is encoded);
        how many. A move another process got in first at (the document removed, or the new path
        indexed) falls back to the plain way: the new file is encoded, the old document removed."""
        done = self.workspace.store.relocate(plan.relocate)
        if len(done) < len(plan.relocate):
            kept = set(done)
            for move in plan.relocate:
                if move not in kept:
                    plan.removed.append(move.doc_id)
                    plan.todo.append(PlannedFile(move.path, "new", move.size, move.mtime_ns))
        plan.relocate = done
        return len(done)

    def _read_old_headers(self, progress: IndexProgress, batch: int = 500) -> None:
        """The header fields (date taken, camera, place) of documents indexed before lookalike kept
        them: read from their files' headers and stored, without encoding anything. A file that
        cannot be read now is tried again by the next run."""
        store, after, told = self.workspace.store, "", False
        limit = float(default("LOOKALIKE_MAX_FILE_MB")) * 1024 * 1024
        while stale := store.stale_metadata(after, batch):
            if not told:
                progress.note("reading the dates, cameras and places of photos indexed before they were kept")
                told = True
            found = []
            for doc_id, path in stale:
                try:
                    if entry_problem(path) is None and os.path.getsize(path) <= limit:
                        with open(path, "rb") as f:  # Pillow reads the header from it, not the file
                            found.append((doc_id, read_metadata(f, path, os.stat(f.fileno()).st_mtime_ns)))
                except OSError:
                    continue
            store.update_metadata(found)
            after = stale[-1][0]

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Remove the documents of these files, or of every file under these folders."""
        roots = [os.path.abspath(os.fspath(p)) for p in paths]
        return self.delete_ids(self.workspace.doc_ids_under(roots))

    def delete_ids(self, ids: list[str], background: bool = False) -> int:
        """Remove documents (and their vectors) by id, through the index flow's delete handlers."""
        if not ids:
            return 0
        runtime = self.flows.runtime("index")
        interrupted = True
        try:
            fatal = self._delete(ids)
            if fatal:
                raise _stopped("removing", fatal[0], "running it again")
            interrupted = False
        finally:
            if not background or interrupted:
                self.flows.drop("index", runtime, abort=interrupted)
        return len(ids)

    def _delete(self, ids: list[str]) -> list[Document]:
        """Send deletes through the index flow; the documents a fatal failure hit (then it stops)."""
        runtime = self.flows.runtime("index")
        for part in _batches(ids, DELETE_BATCH):
            done = runtime.submit(Request("delete", [Document(id=i) for i in part])).result()
            fatal = [d for d in done.docs if d.fatal]
            if fatal:
                return fatal
        return []


def _stopped(work: str, doc: Document, then: str) -> LookalikeError:
    """The error that ends ``work`` at ``doc``'s fatal failure: what failed, and that ``then``
    finishes the job (nothing committed is lost)."""
    message = (doc.error or "").removeprefix("not stored: ")
    return fatal_error(doc.error_reason, f"{work} stopped: {message}; {then} finishes the job")


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
