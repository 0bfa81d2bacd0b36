"""The local runtime: a flow in threads on this machine.

Every pod gets ``shards x parallel`` worker threads, each with its own executor built from a
factory and opened in its thread (onnxruntime, FAISS, SQLite and Pillow's decoders release the
GIL, so threads give real parallelism where the time goes), each with its share of the cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from lookalike.document import Request
from lookalike.errors import LookalikeError
from lookalike.executors.base import Executor, ExecutorContext
from lookalike.flow.graph import Flow, Pod
from lookalike.flow.runtime import Runtime, open_failure, run_handler
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
            space=pod.config.space if pod.executor.stores_vectors else None,
            threads=self.runtime.threads_for(pod),
            workspace=self.runtime.workspace,
            options=self.runtime.flow.options,
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
                self.runtime._after_pod(self.pod, self.shard, run_handler(self.executor, self.pod, request))
        finally:
            try:
                self.executor.close()
            except Exception as e:  # noqa: BLE001 - reported by close(), after every pod has closed
                self.error = e


class LocalRuntime(Runtime):
    """Run a :class:`Flow` in threads on this machine."""

    def __init__(
        self,
        flow: Flow,
        workspace: Workspace | None = None,
        *,
        cores: int | None = None,
        on_done: Callable[[Request], None] | None = None,
    ):
        super().__init__(flow, on_done=on_done)
        self.workspace = workspace
        if not cores:
            from lookalike.models.encoder import available_cores  # (onnxruntime: imported when a flow runs)

            cores = available_cores()
        self.cores = cores
        self._inboxes: dict[str, list[queue.Queue]] = {}
        self._workers: list[_Worker] = []

    def threads_for(self, pod: Pod) -> int:
        """A replica's share of the cores: the cores divided among the pod's replicas and shards."""
        return max(1, self.cores // (pod.config.parallel * pod.config.shards))

    def start(self) -> LocalRuntime:
        for pod in self.flow.pods.values():
            if pod.is_merge:
                continue
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
            err = failed.error
            assert err is not None
            self._stop_workers()
            raise open_failure(failed.pod, err) from err
        self._started = True
        return self

    def _stop_workers(self, abort: bool = False) -> list[_Worker]:
        for w in self._workers:
            if abort and w.executor is not None:
                w.executor.context.aborting = True
            if w.is_alive():
                self._inboxes[w.pod.name][w.shard].put(_STOP)
        for w in self._workers:
            w.join()
        workers, self._workers = self._workers, []
        self._started = False
        return workers

    def close(self, abort: bool = False) -> None:
        """Stop every pod (each closes its executor: a shard pod snapshots its index); the first
        failure to close is raised once all have closed."""
        started = self._started
        failed = [w for w in self._stop_workers(abort) if w.error is not None]
        if started and failed:
            err = failed[0].error
            assert err is not None
            if isinstance(err, LookalikeError):
                raise err
            raise LookalikeError(f"pod {failed[0].pod.name} failed to close: {type(err).__name__}: {err}") from err

    def _deliver(self, pod: Pod, shard: int, request: Request) -> None:
        self._inboxes[pod.name][shard].put(request)

    def _executors(self, pod_name: str) -> dict[int, Executor]:
        out: dict[int, Executor] = {}
        for w in self._workers:
            if w.pod.name == pod_name and w.executor is not None:
                out.setdefault(w.shard, w.executor)
        return out

    def _commit(self, request: Request) -> None:
        assert self.committer is not None
        # Any replica's executor: the doc store serialises writers itself.
        committer = self._executors(self.committer.name)[0]
        committer.commit(request)
        self._resolve(request)

    def placement(self) -> dict[str, str]:
        return {w.name: "local" for w in self._workers}

    def ask(self, pod_name: str, method: str) -> list[Any]:
        executors = self._executors(pod_name)
        return [getattr(executors[s], method)() for s in sorted(executors)]
