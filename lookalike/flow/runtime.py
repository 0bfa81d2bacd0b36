"""Runtimes run a flow: the local one on this machine in threads, the Ray one across a cluster.

Both share what this module's :class:`Runtime` does, which is only moving requests:

- Backpressure: at most ``prefetch`` requests are in flight; :meth:`Runtime.submit` blocks beyond
  that, so memory stays flat however many files are fed in (across the whole cluster on Ray).
- Shards: ``polling: any`` sends each document to one shard by a stable hash of its id;
  ``polling: all`` sends the whole request to every shard and merges their matches into the exact
  global top-k.
- Joins: a pod with several ``needs`` waits for its request from every branch and merges them
  (a ``_merge`` pod is that join and nothing else: it runs no executor).
- Failures: an exception in an executor fails that request's documents with the reason and the flow
  goes on. No request is ever dropped, so no join and no caller waits forever.
- The end: an index or delete request is handed to the pod that owns the doc store (its
  ``commit``), which commits it in one transaction. The runtime never touches a store itself.

How a request reaches a pod is the subclass's: ``lookalike.flow.local_runtime`` gives every pod
``shards x parallel`` worker threads, ``lookalike.flow.ray_runtime`` makes each replica an actor;
``lookalike.flow.runtimes`` picks one. This module imports neither.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Literal

from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.errors import MODEL_FAILURE, BadInput, LookalikeError, ModelError
from lookalike.executors.base import Executor
from lookalike.flow.graph import Flow, Pod

_STOP = object()
RuntimeKind = Literal["local", "ray"]


def run_handler(executor: Executor, pod: Pod, request: Request) -> Request:
    """Run ``request`` through one pod's executor; an exception fails its documents, with why."""
    try:
        executor.handle(request)
    except BadInput as e:
        for d in request.live_docs:
            d.fail(f"{pod.name}: {e}", e.reason)
    except ModelError as e:  # a model loads at first use: the same for every request, so fatal
        for d in request.live_docs:
            d.fail(f"{pod.name}: {e}", MODEL_FAILURE)
    except Exception as e:  # noqa: BLE001 - one bad request must not stop the flow
        for d in request.live_docs:
            d.fail(f"{pod.name} ({pod.uses}) failed: {type(e).__name__}: {e}", "executor error")
    return request


def open_failure(pod: Pod, err: BaseException) -> LookalikeError:
    """What a pod that could not open says (its own LookalikeError, else one naming the pod)."""
    if isinstance(err, LookalikeError):
        return err
    return LookalikeError(f"pod {pod.name} ({pod.uses}) failed to open: {type(err).__name__}: {err}")


def committing_pod(flow: Flow) -> Pod | None:
    """The pod whose executor commits finished index and delete requests (the doc indexer)."""
    return next((p for p in flow.pods.values() if p.executor.stores_documents), None)


class Runtime:
    """What every runtime does: route requests between pods, join, merge shards, bound what is in
    flight, and resolve each request's future. Use as a context manager, then :meth:`submit` or
    :meth:`run`."""

    def __init__(self, flow: Flow, *, on_done: Callable[[Request], None] | None = None):
        self.flow = flow
        self.on_done = on_done
        self._lock = threading.Lock()
        self._shard_parts: dict[tuple[str, int], dict[int, Request]] = {}
        self._join_parts: dict[tuple[str, int], dict[str, Request]] = {}
        self._futures: dict[int, Future[Request]] = {}
        self._in_flight = threading.BoundedSemaphore(flow.prefetch)
        self._started = False
        self.committer = committing_pod(flow)

    # --- what a runtime provides --------------------------------------------------------------

    def start(self) -> Runtime:
        raise NotImplementedError

    def close(self, abort: bool = False) -> None:
        """Stop every pod. ``abort``: the run is abandoned; pods close without finishing their work
        (a shard pod does not build or snapshot its index)."""
        raise NotImplementedError

    def _deliver(self, pod: Pod, shard: int, request: Request) -> None:
        """Hand ``request`` to a replica of ``pod``'s shard; once handled, call :meth:`_after_pod`."""
        raise NotImplementedError

    def _commit(self, request: Request) -> None:
        """Have the committing pod commit ``request``; then call :meth:`_resolve`."""
        raise NotImplementedError

    def ask(self, pod_name: str, method: str) -> list[Any]:
        """Call ``method()`` on one replica of each shard of ``pod_name`` (a control call, such as a
        shard's ``describe``); the answers, by shard."""
        raise NotImplementedError

    def placement(self) -> dict[str, str]:
        """Where each pod replica runs, by pod/sS/rR."""
        raise NotImplementedError

    def __enter__(self) -> Runtime:
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
        if pod.is_merge:  # the join above is all a _merge pod does
            self._after_pod(pod, 0, request)
            return
        n = pod.config.shards
        if n == 1:
            self._deliver(pod, 0, request)
        elif pod.config.polling == "all":
            for shard, copy in enumerate(_copies(request, n)):
                self._deliver(pod, shard, copy)
        else:
            groups: list[list[Document]] = [[] for _ in range(n)]
            for doc in request.docs:
                groups[shard_for(doc.id, n)].append(doc)
            for shard in range(n):
                self._deliver(pod, shard, dataclasses.replace(request, docs=groups[shard]))

    def _after_pod(self, pod: Pod, shard: int, request: Request) -> None:
        try:
            if pod.config.shards > 1 and not pod.is_merge:
                with self._lock:
                    parts = self._shard_parts.setdefault((pod.name, request.id), {})
                    parts[shard] = request
                    if len(parts) < pod.config.shards:
                        return
                    del self._shard_parts[(pod.name, request.id)]
                ordered = [parts[s] for s in range(pod.config.shards)]
                request = merge_shard_results(ordered) if pod.config.polling == "all" else concat_shards(ordered)
            if not pod.downstream:
                if request.kind in ("index", "delete") and self.committer is not None:
                    self._commit(request)  # a flow without a doc store stores nothing
                else:
                    self._resolve(request)
                return
            for name, copy in zip(pod.downstream, _copies(request, len(pod.downstream)), strict=True):
                self._route(self.flow.pods[name], copy, pod.name)
        except BaseException as e:  # noqa: BLE001 - a runtime bug must fail the request, not hang it
            self._resolve(request, error=e)

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
    if not into.meta and other.meta:
        into.meta = other.meta
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
        base.staged.absorb(part.staged)
        for doc in part.docs:
            if doc.id in by_id:
                _merge_doc(by_id[doc.id], doc)
            else:
                by_id[doc.id] = doc
                docs.append(doc)
    return dataclasses.replace(base, docs=docs)


def concat_shards(parts: list[Request]) -> Request:
    """polling any: each shard had its own documents; put them back together."""
    for part in parts[1:]:
        parts[0].staged.absorb(part.staged)
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
