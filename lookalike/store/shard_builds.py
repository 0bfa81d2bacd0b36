"""A shard's builds of a new index type: one at a time, in a background thread, failures kept.

While a build runs (and if the process dies meanwhile) the old index serves; a failed build is
reported, not retried on every commit, and the old index keeps serving.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from lookalike.errors import StoreError
from lookalike.store.vectors import IndexSpec


class BackgroundBuild:
    """``size``: the shard's vectors now; ``closing``: whether its holder is closing (a build
    stopped for that is no failure)."""

    def __init__(self, shard: int, size: Callable[[], int], closing: Callable[[], bool]):
        self.shard = shard
        self._size = size
        self._closing = closing
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._failed: tuple[IndexSpec, int] | None = None  # (index type, the shard's size then)
        self._errors: list[str] = []

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> str | None:
        """Why the first build not yet waited for failed."""
        return self._errors[0] if self._errors else None

    def offer(self, index_type: IndexSpec | None, work: Callable[[IndexSpec], None]) -> None:
        """Start ``work(index_type)`` unless a build runs, or a build as this very type failed and
        the shard has not doubled since (not again on every commit, only once grown)."""
        if index_type is None:
            return
        with self._lock:
            if self.running:
                return
            failed = self._failed
            if failed is not None and failed[0] == index_type and self._size() < 2 * failed[1]:
                return
            self.start(index_type, work)

    def start(self, index_type: IndexSpec, work: Callable[[IndexSpec], None]) -> threading.Thread:
        """Run ``work(index_type)`` in a background thread; a build already running is waited for first."""
        with self._lock:
            if self._thread is not None:
                self._thread.join()
            thread = threading.Thread(
                target=self._run, args=(index_type, work), name=f"index-build-{self.shard}", daemon=True
            )
            self._thread = thread
            thread.start()
            return thread

    def _run(self, index_type: IndexSpec, work: Callable[[IndexSpec], None]) -> None:
        try:
            work(index_type)
        except Exception as e:  # noqa: BLE001 - a thread must report, not die: the old index keeps serving
            if not self._closing():
                self._failed = (index_type, self._size())
                self._errors.append(f"building the {index_type.factory()} index of shard {self.shard} failed: {e}")

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the build; a failed one (since the last wait) is a StoreError."""
        if self._thread is not None:
            self._thread.join(timeout)
        errors, self._errors = self._errors, []
        if errors:
            raise StoreError(errors[0])

    def stop(self, timeout: float) -> None:
        """Give a build ``timeout`` seconds to notice its holder is closing (it checks between its
        stages); one inside FAISS's k-means is left to die with the process (nothing is swapped in)."""
        if self._thread is not None:
            self._thread.join(timeout)
