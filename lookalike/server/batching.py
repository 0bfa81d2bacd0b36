"""Micro-batching: concurrent searches share one pass through the query flow.

The first query waits at most ``wait_ms`` for others to join it, up to ``max_batch`` queries; the
batch then runs as one request, so the encoder sees a batch instead of single images. Each caller
still gets its own results, or its own error: one bad image does not fail the others.
"""

from __future__ import annotations

import queue
import threading
import time
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
    def __init__(self, engine: Engine, *, wait_ms: float = 4.0, max_batch: int = 16):
        self.engine = engine
        self.wait_s = max(0.0, wait_ms) / 1000
        self.max_batch = max(1, max_batch)
        self.batches = 0
        self.batched_queries = 0
        self._queue: queue.Queue[_Query | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="search-batcher", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.wait_s > 0 and self.max_batch > 1

    def search(self, doc: Document, top_k: int, exclude: str | None = None, face: int | None = None) -> list[Result]:
        """Results for one query document; blocks until its batch has run."""
        q = _Query(doc, top_k, exclude, face)
        if self.enabled and face is None:  # a chosen face is a request parameter: such a query runs alone
            self._queue.put(q)
        else:
            self._run([q])
        return q.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop once this batch is answered
                    break
                batch.append(nxt)
            self._run(batch)

    def _run(self, batch: list[_Query]) -> None:
        self.batches += 1
        self.batched_queries += len(batch)
        # Enough results for the largest top_k, plus one where a query's own document is left out.
        k = min(1000, max(q.top_k + (1 if q.exclude else 0) for q in batch))
        for i, q in enumerate(batch):
            q.doc.id = f"q{i}-{q.doc.id}"  # unique within the request
        try:
            outcomes = self.engine.run_queries([q.doc for q in batch], k, batch[0].face if len(batch) == 1 else None)
        except BaseException as e:  # noqa: BLE001 - every waiting caller must hear of it
            for q in batch:
                q.future.set_exception(e)
            return
        for q, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                q.future.set_exception(outcome)
            else:
                q.future.set_result([r for r in outcome if r.doc_id != q.exclude][: q.top_k])
