"""The local runtime: runs a flow on this machine with real parallelism.

Every pod gets ``shards x parallel`` worker threads, each with its own executor built from a
factory and opened in its thread. onnxruntime, FAISS, SQLite and Pillow's decoders release the GIL,
so threads give real parallelism where the time goes.

- Backpressure: at most ``prefetch`` requests are in flight; :meth:`LocalRuntime.submit` blocks
  beyond that, so memory stays flat however many files are fed in.
- Shards: ``polling: any`` sends each document to one shard by a stable hash of its id;
  ``polling: all`` sends the whole request to every shard and merges their matches into the exact
  global top-k.
- Joins: a pod with several ``needs`` waits for its request from every branch and merges them.
- Failures: an exception in an executor fails that request's documents with the reason and the flow
  goes on. No request is ever dropped, so no join and no caller waits forever.
- The end: index and delete requests are committed to the workspace in one transaction each.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future

from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.errors import BadInput, LookalikeError
from lookalike.executors.base import Executor, ExecutorContext
from lookalike.flow.graph import Flow, Pod
from lookalike.models.encoder import available_cores
from lookalike.store.workspace import Workspace

_STOP = object()


class _Worker(threading.Thread):
    def __init__(self, runtime: LocalRuntime, pod: Pod, shard: int, replica: int, inbox: queue.Queue):
        super().__init__(name=f"{pod.name}/s{shard}/r{replica}", daemon=True)
        self.runtime, self.pod, self.shard, self.replica, self.inbox = runtime, pod, shard, replica, inbox
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.executor: Executor | None = None

    def run(self) -> None:
        pod = self.pod
        context = ExecutorContext(
            pod=pod.name,
            replica=self.replica,
            replicas=pod.config.parallel,
            shard=self.shard,
            shards=pod.config.shards,
            threads=self.runtime.threads_for(pod),
            workspace=self.runtime.workspace,
        )
        try:
            self.executor = pod.executor(pod.params, context)
            self.executor.open()
        except BaseException as e:  # noqa: BLE001 - reported to start(), which raises it
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        try:
            while True:
                request = self.inbox.get()
                if request is _STOP:
                    return
                self._handle(request)
                self.runtime._after_pod(self.pod, self.shard, request)
        finally:
            try:
                self.executor.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                pass

    def _handle(self, request: Request) -> None:
        assert self.executor is not None
        try:
            self.executor.handle(request)
        except BadInput as e:
            for d in request.live_docs:
                d.fail(f"{self.pod.name}: {e}", e.reason)
        except Exception as e:  # noqa: BLE001 - one bad request must not stop the flow
            for d in request.live_docs:
                d.fail(f"{self.pod.name} ({self.pod.uses}) failed: {type(e).__name__}: {e}", "executor error")


class LocalRuntime:
    """Run a :class:`Flow` in threads. Use as a context manager, then :meth:`submit` or :meth:`run`."""

    def __init__(
        self,
        flow: Flow,
        workspace: Workspace | None = None,
        *,
        cores: int | None = None,
        on_done: Callable[[Request], None] | None = None,
    ):
        self.flow = flow
        self.workspace = workspace
        self.cores = cores or available_cores()
        self.on_done = on_done
        self._inboxes: dict[str, list[queue.Queue]] = {}
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._shard_parts: dict[tuple[str, int], dict[int, Request]] = {}
        self._join_parts: dict[tuple[str, int], dict[str, Request]] = {}
        self._futures: dict[int, Future[Request]] = {}
        self._in_flight = threading.BoundedSemaphore(flow.prefetch)
        self._started = False

    def threads_for(self, pod: Pod) -> int:
        """A replica's share of the cores: the cores divided among the pod's replicas and shards."""
        return max(1, self.cores // (pod.config.parallel * pod.config.shards))

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> LocalRuntime:
        for pod in self.flow.pods.values():
            # At most `prefetch` requests are in flight, so these never fill: the bound is a backstop.
            inboxes: list[queue.Queue] = [queue.Queue(maxsize=self.flow.prefetch * 2) for _ in range(pod.config.shards)]
            self._inboxes[pod.name] = inboxes
            for shard in range(pod.config.shards):
                for replica in range(pod.config.parallel):
                    self._workers.append(_Worker(self, pod, shard, replica, inboxes[shard]))
        for w in self._workers:
            w.start()
        for w in self._workers:
            w.ready.wait()
        failed = next((w for w in self._workers if w.error is not None), None)
        if failed is not None:
            self.close()
            err = failed.error
            if isinstance(err, LookalikeError):
                raise err
            raise LookalikeError(
                f"pod {failed.pod.name} ({failed.pod.uses}) failed to open: {type(err).__name__}: {err}"
            ) from err
        self._started = True
        return self

    def close(self) -> None:
        for w in self._workers:
            if w.is_alive():
                self._inboxes[w.pod.name][w.shard].put(_STOP)
        for w in self._workers:
            w.join()
        self._workers = []
        self._started = False

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- feeding ------------------------------------------------------------------------------

    def submit(self, request: Request) -> Future[Request]:
        """Send a request into the flow; blocks while ``prefetch`` requests are already in flight."""
        if not self._started:
            raise RuntimeError("start the runtime first")
        self._in_flight.acquire()
        future: Future[Request] = Future()
        with self._lock:
            self._futures[request.id] = future
        for root, copy in zip(self.flow.roots, _copies(request, len(self.flow.roots)), strict=True):
            self._route(self.flow.pods[root], copy, None)
        return future

    def run(self, requests: Iterable[Request]) -> Iterator[Request]:
        """Submit requests as capacity allows; yield each finished request, in submission order."""
        pending: list[Future[Request]] = []
        for request in requests:
            pending.append(self.submit(request))
            while pending and pending[0].done():
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()

    # --- moving requests between pods ---------------------------------------------------------

    def _route(self, pod: Pod, request: Request, sender: str | None) -> None:
        if len(pod.needs) > 1:
            assert sender is not None
            with self._lock:
                parts = self._join_parts.setdefault((pod.name, request.id), {})
                parts[sender] = request
                if len(parts) < len(pod.needs):
                    return
                del self._join_parts[(pod.name, request.id)]
            request = merge_requests([parts[n] for n in pod.needs])
        inboxes = self._inboxes[pod.name]
        n = len(inboxes)
        if n == 1:
            inboxes[0].put(request)
        elif pod.config.polling == "all":
            for box, copy in zip(inboxes, _copies(request, n), strict=True):
                box.put(copy)
        else:
            groups: list[list[Document]] = [[] for _ in range(n)]
            for doc in request.docs:
                groups[shard_for(doc.id, n)].append(doc)
            for shard, box in enumerate(inboxes):
                box.put(dataclasses.replace(request, docs=groups[shard]))

    def _after_pod(self, pod: Pod, shard: int, request: Request) -> None:
        try:
            if pod.config.shards > 1:
                with self._lock:
                    parts = self._shard_parts.setdefault((pod.name, request.id), {})
                    parts[shard] = request
                    if len(parts) < pod.config.shards:
                        return
                    del self._shard_parts[(pod.name, request.id)]
                ordered = [parts[s] for s in range(pod.config.shards)]
                request = merge_shard_results(ordered) if pod.config.polling == "all" else concat_shards(ordered)
            if not pod.downstream:
                self._finish(request)
                return
            for name, copy in zip(pod.downstream, _copies(request, len(pod.downstream)), strict=True):
                self._route(self.flow.pods[name], copy, pod.name)
        except BaseException as e:  # noqa: BLE001 - a runtime bug must fail the request, not hang it
            self._resolve(request, error=e)

    def _finish(self, request: Request) -> None:
        if self.workspace is not None and request.kind in ("index", "delete"):
            try:
                self.workspace.commit(request)
            except LookalikeError as e:
                for d in request.live_docs:
                    d.fail(f"not stored: {e}", "store error")
        self._resolve(request)

    def _resolve(self, request: Request, error: BaseException | None = None) -> None:
        with self._lock:
            future = self._futures.pop(request.id, None)
        if future is None:
            return
        try:
            if error is None and self.on_done is not None:
                self.on_done(request)
        finally:
            self._in_flight.release()
            if error is None:
                future.set_result(request)
            else:
                future.set_exception(error)


# --- copying and merging -------------------------------------------------------------------------


def _copies(request: Request, n: int) -> list[Request]:
    """``n`` requests for ``n`` branches: the original plus forks, *all* taken before any branch runs,
    so no branch can write into documents while they are being copied for another."""
    return [request, *(request.fork() for _ in range(n - 1))]


_DOC_FIELDS = ("uri", "size", "mtime_ns", "content_hash", "width", "height", "blob")


def _merge_doc(into: Document, other: Document) -> None:
    for name in _DOC_FIELDS:
        if getattr(into, name) is None and getattr(other, name) is not None:
            setattr(into, name, getattr(other, name))
    if not into.tags and other.tags:
        into.tags = other.tags
    for key, value in other.query_info.items():
        into.query_info.setdefault(key, value)
    by_uid = {c.uid: i for i, c in enumerate(into.chunks)}
    for chunk in other.chunks:
        i = by_uid.get(chunk.uid)
        if i is None:
            into.chunks.append(chunk)
        elif _richer(chunk, into.chunks[i]):
            into.chunks[i] = chunk
    if other.error is not None:
        into.fail(other.error, other.error_reason, input_fault=other.input_fault)
    seen = {r.doc_id for r in into.results}
    into.results.extend(r for r in other.results if r.doc_id not in seen)


def _richer(a: Chunk, b: Chunk) -> bool:
    return (a.embedding is not None, len(a.matches)) > (b.embedding is not None, len(b.matches))


def merge_requests(parts: list[Request]) -> Request:
    """Join the branches of one request: documents by id, chunks by uid, the first error wins."""
    base = parts[0]
    by_id = {d.id: d for d in base.docs}
    docs = list(base.docs)
    for part in parts[1:]:
        for doc in part.docs:
            if doc.id in by_id:
                _merge_doc(by_id[doc.id], doc)
            else:
                by_id[doc.id] = doc
                docs.append(doc)
    return dataclasses.replace(base, docs=docs)


def concat_shards(parts: list[Request]) -> Request:
    """polling any: each shard had its own documents; put them back together."""
    return dataclasses.replace(parts[0], docs=[d for p in parts for d in p.docs])


def merge_shard_results(parts: list[Request]) -> Request:
    """polling all: every shard searched every query chunk; keep the exact global top-k matches.

    k is what the shards were asked for (``parameters["chunks_per_query"]``, set by the searching
    executor). Without it every match is kept, sorted: the union of each shard's exact top-k holds
    the global top-k first. (Taking k from the lists' lengths would be wrong: a shard holding fewer
    vectors than k returns fewer.)
    """
    base = parts[0]
    asked = base.parameters.get("chunks_per_query")
    for i, doc in enumerate(base.docs):
        for part in parts[1:]:
            other = part.docs[i]
            if other.error is not None:
                doc.fail(other.error, other.error_reason, input_fault=other.input_fault)
        for j, chunk in enumerate(doc.chunks):
            lists = [p.docs[i].chunks[j].matches for p in parts if j < len(p.docs[i].chunks)]
            merged = sorted((m for ms in lists for m in ms), key=lambda m: (-m.score, m.chunk_id))
            chunk.matches = merged[: int(asked)] if asked is not None else merged
    return base
