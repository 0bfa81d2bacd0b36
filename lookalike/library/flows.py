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
from lookalike.store.spaces import FACES, REGIONS, unknown_space
from lookalike.store.workspace import Workspace, WorkspaceLayout

# name -> its flows, shipped in lookalike/flows/: the index flow, and a query flow for each vector
# space ("query" searches the first space, "query-SPACE" another).
PRESETS = {
    "default": {"index": "index", "query": "query"},
    "faces": {"index": "index-faces", "query": "query", f"query-{FACES}": "faces-query"},
    "regions": {"index": "index-regions", "query": "query", f"query-{REGIONS}": "regions-query"},
}


def preset_flows(preset: str) -> dict[str, Path]:
    """The built-in flow files of a preset, by kind ("index", "query", "query-faces")."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return {kind: builtin_flow_path(name) for kind, name in PRESETS[preset].items()}


def query_kind(space: str, first: str) -> str:
    """The kind of the query flow that searches ``space`` (``first``: the workspace's first space)."""
    return "query" if space == first else f"query-{space}"


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
            files: dict[str, Path | None] = dict(preset_flows(options.preset))
            self._specs = files | {k: v for k, v in self._specs.items() if v is not None}
        self._remembered = remembered and options.preset is None
        self._built: dict[str, Flow] = {}
        self._build_lock = threading.Lock()
        self.workspace: Workspace | None = None
        self._runtimes: dict[str, Runtime] = {}
        self._runtime_lock = threading.Lock()  # searches run side by side: one query runtime for all

    # --- choosing and building ----------------------------------------------------------------

    def _build(self, kind: str) -> Flow:
        spec = self._specs.get(kind)
        if spec is None and self._remembered:
            stored = Workspace.stored_flow(self.options.workspace, kind)
            if stored is not None:
                text, base = stored
                source = f"<{kind} flow stored in {self.options.workspace}>"
                loaded = load_flow_text(text, source, base, self.options.flow_variables())
                return Flow(loaded, kind, options=self.options)
        if spec is None and kind.startswith("query-"):  # another space's built-in query flow
            space = kind.removeprefix("query-")
            spec = builtin_flow_path(f"{space}-query")
            if not spec.exists():
                raise ConfigError(f"no query flow searches the {space!r} vectors; name one for that space")
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
        spaces = flow.spaces()  # it must have a pod that stores vectors
        if kind == "index":
            flow.check_can_index()
        ws = self.workspace
        if kind != "index" and ws is not None:
            ws.check_spaces(spaces)
            flow.set_vector_shards(ws.shards_by_space)

    def layout(self) -> WorkspaceLayout:
        """What the index flow (and the query flow of each of its vector spaces) say a workspace
        they write must hold."""
        iflow = self.flow("index")
        spaces = iflow.spaces()
        first = next(iter(spaces))
        flows = {"index": iflow.text, "index_base_dir": str(iflow.loaded.base_dir)}
        for name, space in spaces.items():
            kind = query_kind(name, first)
            if name != first and not self._searchable(kind):
                continue  # a space of one's own flow with no query flow: indexed, not searched
            qflow = self.flow(kind)
            searched = qflow.spaces()
            if name not in searched:
                raise ConfigError(
                    f"{qflow.file}: the {kind} flow searches {', '.join(searched)}, not the {name!r} vectors"
                )
            if searched[name].encoder != space.encoder:
                raise ConfigError(
                    f"the {kind} flow encodes with {searched[name].encoder} but the index flow's {name} "
                    f"branch with {space.encoder}"
                )
            flows |= {kind: qflow.text, f"{kind}_base_dir": str(qflow.loaded.base_dir)}
        return WorkspaceLayout(
            # The index flow decides the shards; a query flow searches however many the workspace has.
            spaces=spaces,
            preset=self.options.preset,
            flows=flows,
            index_memory=self.options.index_memory,
            index_latency_ms=self.options.index_latency_ms,
        )

    def _searchable(self, kind: str) -> bool:
        """Is there a query flow of ``kind``: given, remembered, or built in?"""
        if self._specs.get(kind) is not None or builtin_flow_path(kind.removeprefix("query-") + "-query").exists():
            return True
        return self._remembered and Workspace.stored_flow(self.options.workspace, kind) is not None

    def attach(self, workspace: Workspace) -> None:
        """The workspace these flows run over, once it is open."""
        self.workspace = workspace
        for kind, flow in self._built.items():
            if kind != "index":
                flow.set_vector_shards(workspace.shards_by_space)

    def query_kind(self, space: str | None) -> str:
        """The kind of the query flow that searches ``space`` (None: the workspace's first space)."""
        if self.workspace is None or space is None:
            return "query"
        spaces = self.workspace.spaces
        if space not in spaces:
            if space == FACES:
                raise ConfigError("this workspace holds no faces: index it with `lookalike index --reset --faces PATH`")
            if space == REGIONS:
                raise ConfigError(
                    "this workspace holds no regions, so it cannot be searched by a box: "
                    "index it with `lookalike index --reset --regions PATH`"
                )
            raise unknown_space(space, spaces)
        return query_kind(space, next(iter(spaces)))

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
        for kind in sorted(self._runtimes, key=lambda k: k == "index"):
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
