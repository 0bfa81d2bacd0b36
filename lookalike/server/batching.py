"""Micro-batching: concurrent searches share one pass through the query flow.

Batches form while the flow is busy and never wait for company. ``workers`` batches run at once
(as many as the query flow works on side by side: its most replicated pod's replicas, so that one
batch decodes while another is encoded). A query that finds a worker idle runs at once, alone; the
queries that arrive while every worker is busy go together (up to ``max_batch``) as the next
batch, so the encoder sees a batch exactly when there is a queue.
Each caller still gets its own results, or its own error: one bad image does not fail the others.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from lookalike.document import Document, Result
from lookalike.engine import Engine


@dataclass
class _Query:
    doc: Document
    top_k: int
    exclude: str | None  # a document id to leave out ("more like this" leaves out itself)
    face: int | None = None  # which face of the query image (face workspaces)
    future: Future[list[Result]] = field(default_factory=Future)


class SearchBatcher:
    def __init__(self, engine: Engine, *, max_batch: int = 16, workers: int | None = None, start: bool = True):
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self.batches = 0
        self.batched_queries = 0
        self._count_lock = threading.Lock()
        self._queue: queue.Queue[_Query | None] = queue.Queue()
        n = workers or engine.query_parallelism
        self._threads = [
            threading.Thread(target=self._loop, name=f"search-batcher-{i}", daemon=True) for i in range(max(1, n))
        ]
        if start:
            self.start()

    def start(self) -> None:
        """Start answering (``start=False`` lets queries queue up first: a test's way to batch them)."""
        for t in self._threads:
            t.start()

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def search(self, doc: Document, top_k: int, exclude: str | None = None, face: int | None = None) -> list[Result]:
        """Results for one query document; blocks until its batch has run."""
        q = _Query(doc, top_k, exclude, face)
        if self.enabled and face is None:  # a chosen face is a request parameter: such a query runs alone
            self._queue.put(q)
        else:
            self._run([q])
        return q.future.result()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)  # one each; a worker that drains another's puts it back
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:  # whatever queued while the last batch ran; no waiting
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop once this batch is answered
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[_Query]) -> None:
        with self._count_lock:
            self.batches += 1
            self.batched_queries += len(batch)
        try:
            # Enough results for the largest top_k, plus one where a query's own document is left out.
            k = min(1000, max(q.top_k + (1 if q.exclude else 0) for q in batch))
            for i, q in enumerate(batch):
                q.doc.id = f"q{i}-{q.doc.id}"  # unique within the request
            outcomes = self.engine.run_queries([q.doc for q in batch], k, batch[0].face if len(batch) == 1 else None)
            for q, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    q.future.set_exception(outcome)
                else:
                    q.future.set_result([r for r in outcome if r.doc_id != q.exclude][: q.top_k])
        except BaseException as e:  # noqa: BLE001 - every waiting caller must hear of it
            for q in batch:
                if not q.future.done():
                    q.future.set_exception(e)
