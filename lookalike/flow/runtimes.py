"""Which runtime runs a flow: a registry the runtimes themselves never import.

``local`` runs the pods in threads here (:mod:`lookalike.flow.local_runtime`); ``ray`` makes each
replica an actor on a Ray cluster (:mod:`lookalike.flow.ray_runtime`, imported only when asked
for, so that Ray is needed only by those who use it).
"""

from __future__ import annotations

from dataclasses import dataclass

from lookalike.flow.graph import Flow
from lookalike.flow.local_runtime import LocalRuntime
from lookalike.flow.runtime import Runtime
from lookalike.settings import Options, RuntimeKind
from lookalike.store.workspace import Workspace


@dataclass(frozen=True)
class RuntimeChoice:
    """Where a flow's pods run: ``local`` (threads here) or ``ray`` (actors on a Ray cluster at
    ``ray_address``; without one, a local cluster is started for the run)."""

    kind: RuntimeKind = "local"
    ray_address: str | None = None

    @classmethod
    def from_flow(cls, flow: Flow) -> RuntimeChoice:
        """The flow's own ``runtime:``, else the local runtime."""
        return cls(flow.loaded.config.runtime or "local")

    @classmethod
    def of(cls, options: Options, flow: Flow) -> RuntimeChoice:
        """What the options ask for (--runtime, --ray-address), else the flow's own ``runtime:``."""
        if options.runtime is None and options.ray_address is None:
            return cls.from_flow(flow)
        return cls(options.runtime or "ray", options.ray_address)


def make_runtime(flow: Flow, workspace: Workspace | None, choice: RuntimeChoice) -> Runtime:
    if choice.kind == "ray":
        from lookalike.flow.ray_runtime import RayRuntime

        return RayRuntime(flow, workspace, address=choice.ray_address)
    return LocalRuntime(flow, workspace)
