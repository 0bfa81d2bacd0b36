"""Micro-batching: concurrent calls share one pass of the work (Jina's ``dynamic_batching``).

Batches form while the work is busy and never wait for company. ``workers`` batches run at once
(the searcher gives as many as its query flow works on side by side, so that one batch decodes
while another is encoded). A call that finds a worker idle runs at once, alone; the calls that
arrive while every worker is busy go together (up to ``max_batch``) as the next batch, so the
encoder sees a batch exactly when there is a queue. Each caller still gets its own answer, or its
own error: one bad image does not fail the others.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Call(Generic[T, R]):
    item: T
    future: Future[R] = field(default_factory=Future)


class MicroBatcher(Generic[T, R]):
    """Runs ``run(batch)`` (one answer, or an exception, per item, in order) for concurrent callers."""

    def __init__(
        self,
        run: Callable[[list[T]], list[R | BaseException]],
        *,
        max_batch: int,
        workers: int = 1,
        start: bool = True,
    ):
        """``start=False``: calls queue up until :meth:`start` (a test's way to batch them)."""
        self._run = run
        self._autostart = start
        self.max_batch = max(1, max_batch)
        self.workers = max(1, workers)
        self.batches = 0
        self.batched = 0  # items answered in batches
        self._count_lock = threading.Lock()
        self._queue: queue.Queue[_Call[T, R] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        """Start the workers (they start by themselves with the first call)."""
        with self._start_lock:
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._loop, name=f"search-batcher-{i}", daemon=True)
                    for i in range(self.workers)
                ]
                for t in self._threads:
                    t.start()

    def call(self, item: T) -> R:
        """The answer for ``item``; blocks until its batch has run (at once, alone, when disabled)."""
        c: _Call[T, R] = _Call(item)
        if self.enabled:
            if self._autostart:
                self.start()
            self._queue.put(c)
        else:
            self._answer([c])
        return c.future.result()

    def close(self) -> None:
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)  # one each; a worker that drains another's puts it back
        for t in threads:
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
            self._answer(batch)

    def _answer(self, batch: list[_Call[T, R]]) -> None:
        with self._count_lock:
            self.batches += 1
            self.batched += len(batch)
        try:
            outcomes = self._run([c.item for c in batch])
            for c, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    c.future.set_exception(outcome)
                else:
                    c.future.set_result(outcome)
        except BaseException as e:  # noqa: BLE001 - every waiting caller must hear of it
            for c in batch:
                if not c.future.done():
                    c.future.set_exception(e)
