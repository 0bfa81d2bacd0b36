"""A flow as a validated DAG of pods, each with its executor class resolved and parameters checked.

What a pod's ``uses:`` names is worked out in :mod:`lookalike.flow.resolver`; pictures of a flow
(text, Mermaid, dot) are drawn by :mod:`lookalike.flow.render`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from lookalike.errors import ConfigError, LookalikeError
from lookalike.executors.base import MERGE, Executor
from lookalike.flow.config import LoadedFlow, PodConfig, load_flow, load_flow_text
from lookalike.flow.resolver import ExecutorResolver
from lookalike.settings import Options
from lookalike.store.spaces import VectorSpace

GATEWAY = "gateway"  # `needs: gateway` marks a pod that takes the flow's input directly


@dataclass
class Pod:
    name: str
    config: PodConfig
    executor: type[Executor]
    params: BaseModel
    needs: list[str] = field(default_factory=list)  # empty: reads the flow's input
    downstream: list[str] = field(default_factory=list)

    @property
    def uses(self) -> str:
        """What the pod runs, as written (a service's pod: what the service said it runs, and where)."""
        if self.config.addresses:
            name = getattr(self.executor, "info", {}).get("uses") or self.config.uses or "executor"
            return f"{name} @ {', '.join(a.removeprefix('http://') for a in self.config.addresses)}"
        return self.config.uses or ""

    @property
    def is_merge(self) -> bool:
        return self.config.uses == MERGE


class Flow:
    """A validated DAG of pods. A flow with container pods (``uses: docker://IMAGE``) starts their
    containers as it is built: :meth:`close` it (or use ``with``) to stop them."""

    def __init__(
        self,
        loaded: LoadedFlow,
        name: str | None = None,
        *,
        start_containers: bool = True,
        options: Options | None = None,
    ):
        from lookalike.executors.containers import ContainerSet

        self.loaded = loaded
        self.name = name or Path(loaded.source.file).stem
        self.options = options or Options.from_env()  # what its executors are told (the model cache, ...)
        self.prefetch = loaded.config.prefetch
        self.pods: dict[str, Pod] = {}
        self.containers = ContainerSet(self.options.container_engine)
        self._resolver = ExecutorResolver(loaded, self.containers, start_containers=start_containers)
        try:
            self._build()
        except BaseException:
            try:
                self.close()
            except LookalikeError:
                pass  # the build's own error is the one to report
            raise

    def close(self) -> None:
        """Stop the containers this flow started (none for most flows)."""
        self.containers.stop()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        loaded = self.loaded
        src = loaded.source
        for i, (pod_name, cfg) in enumerate(loaded.config.pods.items()):
            if pod_name == GATEWAY:
                raise src.error(("pods", pod_name), f"'{GATEWAY}' is reserved for the flow's input")
            if cfg.needs is None:
                needs = [list(self.pods)[-1]] if i > 0 else []
            else:
                needs = [n for n in cfg.needs if n != GATEWAY]
                for n in needs:
                    if n not in self.pods:
                        where = "not defined above" if n in loaded.config.pods else "not a pod of this flow"
                        raise src.error(("pods", pod_name, "needs"), f"'{n}' is {where} (pods: {', '.join(self.pods)})")
            cls, params = self._resolver.resolve(pod_name, cfg)
            if len(cfg.addresses) > 1:  # one replica per service (a container pod has one a replica)
                cfg = cfg.model_copy(update={"parallel": len(cfg.addresses)})
            self.pods[pod_name] = Pod(pod_name, cfg, cls, params, needs)
        for pod in self.pods.values():
            for n in pod.needs:
                self.pods[n].downstream.append(pod.name)
        for pod in self.pods.values():
            self._follow_encoder(pod)
        sinks = [p.name for p in self.pods.values() if not p.downstream]
        if len(sinks) != 1:
            raise src.error(
                ("pods",),
                f"a flow must end in exactly one pod, but {', '.join(sinks)} all end it; join them with _merge",
            )
        self.sink = sinks[0]
        self.roots = [p.name for p in self.pods.values() if not p.needs]

    # --- building -----------------------------------------------------------------------------

    def _follow_encoder(self, pod: Pod) -> None:
        """Preprocessing travels with the model: a preprocessing pod takes its settings from the
        nearest encoder downstream of it, and a setting that contradicts that encoder is an error."""
        seen, frontier = set(), list(pod.downstream)
        while frontier:
            name = frontier.pop(0)
            if name in seen:
                continue
            seen.add(name)
            down = self.pods[name]
            wanted = down.executor.preprocessing_of(down.params)
            if wanted is not None:
                try:
                    pod.params = pod.executor.follow_preprocessing(pod.params, wanted, pod.name, down.name)
                except ConfigError as e:
                    raise self.loaded.source.error(("pods", pod.name, "with", "size"), str(e)) from e
                return
            frontier.extend(down.downstream)

    # --- queries ------------------------------------------------------------------------------

    def pods_using(self, cls: type[Executor]) -> list[Pod]:
        return [p for p in self.pods.values() if issubclass(p.executor, cls)]

    def pods_storing_vectors(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.executor.stores_vectors]

    def set_vector_shards(self, shards: dict[str, int]) -> None:
        """Search however many shards each of the workspace's spaces has, whatever the query flow
        says: its shard pods are the workspace's shards."""
        for pod in self.pods_storing_vectors():
            n = shards.get(pod.config.space)
            if n is not None and pod.config.shards != n:
                pod.config = pod.config.model_copy(update={"shards": n})

    def spaces(self) -> dict[str, VectorSpace]:
        """The vector spaces this flow's pods store, in order: each one's encoder fingerprint (its
        branch's encoders and the preprocessing that feeds them), vectors and shards. Asked of the
        pods' executors (``stores_vectors``), so any vector indexer plugs in."""
        pods = self.pods_storing_vectors()
        if not pods:
            raise ConfigError(f"{self.file}: the flow has no pod that stores vectors (such as VectorIndexer)")
        out: dict[str, VectorSpace] = {}
        for pod in pods:
            name = pod.config.space
            if name in out:
                raise self.loaded.source.error(
                    ("pods", pod.name, "space"), f"another pod already stores the {name!r} vectors; name another space"
                )
            upstream = [self.pods[n] for n in self.upstream(pod.name)]
            other = [o[name] for p in upstream if name in (o := p.executor.other_spaces_of(p.params))]
            if other:  # filled beside another space, from the same model pass (regions)
                made_by, dim, metric = other[-1]
                pre = [f for p in upstream if (f := p.executor.preprocessing_fingerprint(p.params))]
                out[name] = VectorSpace("+".join([made_by, *pre]), dim, metric, pod.config.shards)
                continue
            parts = [fp for p in upstream if (fp := p.executor.fingerprint_of(p.params))]
            if parts:
                parts += [fp for p in upstream if (fp := p.executor.preprocessing_fingerprint(p.params))]
            found = {vs for p in upstream if (vs := p.executor.vector_space_of(p.params))}
            if len(found) > 1:
                raise ConfigError(
                    f"{self.file}: the encoders feeding {pod.name} produce different vectors: {sorted(found)}"
                )
            dim, metric = found.pop() if found else (1280, "cosine")
            out[name] = VectorSpace("+".join(parts) or None, dim, metric, pod.config.shards)
        return out

    def upstream(self, name: str) -> list[str]:
        """Every pod that ``name`` reads from, directly or not, in the flow's order."""
        seen: set[str] = set()
        frontier = list(self.pods[name].needs)
        while frontier:
            n = frontier.pop()
            if n not in seen:
                seen.add(n)
                frontier.extend(self.pods[n].needs)
        return [n for n in self.pods if n in seen]

    def check_can_index(self) -> None:
        """An index flow stores documents, and sends each document's vectors to one shard."""
        if not any(p.executor.stores_documents for p in self.pods.values()):
            raise ConfigError(f"{self.file}: an index flow needs a pod that stores documents (DocIndexer)")
        for pod in self.pods.values():
            if pod.executor.stores_vectors and pod.config.polling != "any":
                raise ConfigError(
                    f"{self.file}: pods.{pod.name}.polling: an index flow sends each document to one shard; use 'any'"
                )

    @property
    def text(self) -> str:
        return self.loaded.text

    @property
    def file(self) -> str:
        return self.loaded.source.file


def builtin_flow_path(name: str) -> Path:
    return Path(str(resources.files("lookalike.flows").joinpath(f"{name}.yml")))


def open_flow(
    spec: str | os.PathLike | None, default: str, options: Options | None = None, *, start_containers: bool = True
) -> Flow:
    """A flow from a file path, or the built-in ``default`` ("index" or "query") when ``spec`` is None;
    its ``${VAR}`` come from ``options`` (the environment, with its settings over it).
    ``start_containers=False``: container pods are described, not started (`lookalike flow show`)."""
    options = options or Options.from_env()
    env = options.flow_variables()
    if spec is None:
        path = builtin_flow_path(default)
        loaded = load_flow_text(path.read_text("utf-8"), f"<built-in {default}.yml>", path.parent, env)
        return Flow(loaded, default, options=options)
    return Flow(load_flow(spec, env), start_containers=start_containers, options=options)
