"""A library's flows: which ones (given, a preset, the workspace's own, or the built-in ones), built
when first needed, checked against the workspace, and the runtimes that run them.

A workspace remembers the flows it was indexed with (and its preset): whichever flow is not given
is the remembered one, else the built-in default. So `index` again, `search` and `serve` need no
flags, whatever flows built the workspace. Building a flow reads its YAML and resolves its
executors; no model is loaded until a pod first needs it, and a search by tag builds no flow.
"""

from __future__ import annotations

import threading
from pathlib import Path

from lookalike.errors import ConfigError, LookalikeError
from lookalike.flow.config import load_flow_text
from lookalike.flow.graph import Flow, builtin_flow_path, open_flow
from lookalike.flow.runtime import Runtime
from lookalike.flow.runtimes import RuntimeChoice, make_runtime
from lookalike.settings import Options
from lookalike.store.workspace import Workspace, WorkspaceLayout

# name -> (index flow, query flow), shipped in lookalike/flows/
PRESETS = {"default": ("index", "query"), "faces": ("faces-index", "faces-query")}


def preset_flows(preset: str) -> tuple[Path, Path]:
    """The built-in (index, query) flow files of a preset."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    index, query = PRESETS[preset]
    return builtin_flow_path(index), builtin_flow_path(query)


class Flows:
    """The index and query flows of one library, and their runtimes.

    ``remembered``: fall back on the flows the workspace at ``options.workspace`` remembers (not
    when it is being reset). The query runtime is shared by every search (started once, behind a
    lock); the index runtime is kept between background index calls (a server's uploads).
    """

    def __init__(self, options: Options, *, remembered: bool = True):
        self.options = options
        self._specs: dict[str, Path | None] = {"index": options.index_flow, "query": options.query_flow}
        if options.preset is not None:
            index, query = preset_flows(options.preset)
            self._specs = {"index": options.index_flow or index, "query": options.query_flow or query}
        self._remembered = remembered and options.preset is None
        self._built: dict[str, Flow] = {}
        self._build_lock = threading.Lock()
        self.workspace: Workspace | None = None
        self._runtimes: dict[str, Runtime] = {}
        self._runtime_lock = threading.Lock()  # searches run side by side: one query runtime for all

    # --- choosing and building ----------------------------------------------------------------

    def _build(self, kind: str) -> Flow:
        spec = self._specs[kind]
        if spec is None and self._remembered:
            stored = Workspace.stored_flow(self.options.workspace, kind)
            if stored is not None:
                text, base = stored
                source = f"<{kind} flow stored in {self.options.workspace}>"
                loaded = load_flow_text(text, source, base, self.options.flow_variables())
                return Flow(loaded, kind, options=self.options)
        return open_flow(spec, kind, self.options)

    def flow(self, kind: str) -> Flow:
        """The ``kind`` ("index" or "query") flow, built now if it was not yet. A query flow built
        for an open workspace is checked against it, and searches however many shards it has."""
        with self._build_lock:
            if kind not in self._built:
                flow = self._build(kind)
                self._built[kind] = flow
                try:
                    self._check(kind, flow)
                except BaseException:
                    del self._built[kind]
                    _close_quietly(flow)
                    raise
            return self._built[kind]

    def _check(self, kind: str, flow: Flow) -> None:
        flow.vector_shards()  # it must have a pod that stores vectors
        if kind == "index":
            flow.check_can_index()
        ws = self.workspace
        if kind == "query" and ws is not None:
            ws.check_encoder(flow.fingerprint(), *flow.vector_space())
            flow.set_vector_shards(ws.n_shards_configured)

    def layout(self) -> WorkspaceLayout:
        """What the index flow (and its query flow) say a workspace they write must hold."""
        iflow, qflow = self.flow("index"), self.flow("query")
        fingerprint = iflow.fingerprint()
        if qflow.fingerprint() != fingerprint:
            raise ConfigError(
                f"the query flow encodes with {qflow.fingerprint()} but the index flow with {fingerprint}"
            )
        dim, metric = iflow.vector_space()
        return WorkspaceLayout(
            encoder=fingerprint,
            dim=dim,
            metric=metric,
            # The index flow decides the shards; a query flow searches however many the workspace has.
            shards=iflow.vector_shards(),
            preset=self.options.preset,
            flows={
                "index": iflow.text,
                "index_base_dir": str(iflow.loaded.base_dir),
                "query": qflow.text,
                "query_base_dir": str(qflow.loaded.base_dir),
            },
            index_memory=self.options.index_memory,
            index_latency_ms=self.options.index_latency_ms,
        )

    def attach(self, workspace: Workspace) -> None:
        """The workspace these flows run over, once it is open."""
        self.workspace = workspace
        qflow = self._built.get("query")
        if qflow is not None:
            qflow.set_vector_shards(workspace.n_shards_configured)

    @property
    def query_parallelism(self) -> int:
        """How many requests the query flow works on side by side: its most replicated pod's replicas."""
        return max(pod.config.parallel for pod in self.flow("query").pods.values())

    # --- running ------------------------------------------------------------------------------

    def choice(self, kind: str) -> RuntimeChoice:
        """Where the flows run: the options' --runtime, else the (index) flow's own ``runtime:``."""
        return RuntimeChoice.of(self.options, self._built.get("index") or self.flow(kind))

    def runtime(self, kind: str) -> Runtime:
        """The running ``kind`` flow: started on first use, then kept (and shared) until closed."""
        flow = self.flow(kind)
        with self._runtime_lock:
            runtime = self._runtimes.get(kind)
            if runtime is None:
                runtime = make_runtime(flow, self.workspace, self.choice(kind)).start()
                self._runtimes[kind] = runtime
            return runtime

    def running(self, kind: str) -> Runtime | None:
        return self._runtimes.get(kind)

    def drop(self, kind: str, runtime: Runtime, *, abort: bool = True) -> None:
        """Stop ``runtime`` if it is still the running ``kind`` flow (a search beside this one may have
        dropped it already); the next use starts it afresh."""
        with self._runtime_lock:
            if self._runtimes.get(kind) is not runtime:
                return
            del self._runtimes[kind]
        try:
            runtime.close(abort=abort)
        except LookalikeError:
            if not abort:  # an abandoned run has its own error to report
                raise

    def close(self, flush: bool = True) -> None:
        """Stop the runtimes (the query pods first: they hold the freshest shard indexes and
        snapshot them, so the index pods after them find nothing left to write), then the flows'
        containers. The first error is raised once everything was tried."""
        errors: list[BaseException] = []
        for kind in ("query", "index"):
            runtime = self._runtimes.pop(kind, None)
            if runtime is not None:
                try:
                    runtime.close(abort=not flush)
                except Exception as e:  # noqa: BLE001 - the other runtime and the flows still close
                    errors.append(e)
        for flow in self._built.values():
            try:
                flow.close()  # stops the containers of its container pods
            except LookalikeError as e:
                errors.append(e)
        self._built = {}
        if errors:
            raise errors[0]


def _close_quietly(flow: Flow) -> None:
    try:
        flow.close()
    except LookalikeError:
        pass  # the error that stopped the build is the one to report
