"""A flow as a validated DAG of pods, each with its executor class resolved and parameters checked."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lookalike.errors import ConfigError, LookalikeError
from lookalike.executors.base import BUILTINS, MERGE, Executor, builtin, is_builtin, load_py_module
from lookalike.flow.config import (
    LoadedFlow,
    PodConfig,
    StrList,
    load_flow,
    load_flow_text,
    parse_yaml,
    validation_error,
)

GATEWAY = "gateway"  # `needs: gateway` marks a pod that takes the flow's input directly


class _ExecutorFile(BaseModel):
    """An executor YAML file named by `uses: some.yml`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    py_modules: StrList = Field(default_factory=list)


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

    def __init__(self, loaded: LoadedFlow, name: str | None = None, *, start_containers: bool = True):
        from lookalike.executors.containers import ContainerSet

        self.loaded = loaded
        self.name = name or Path(loaded.source.file).stem
        self.prefetch = loaded.config.prefetch
        self.pods: dict[str, Pod] = {}
        self.containers = ContainerSet()
        self._start_containers = start_containers
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
            cls, params = self._resolve(pod_name, cfg)
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

    def _resolve(self, pod_name: str, cfg: PodConfig) -> tuple[type[Executor], BaseModel]:
        from lookalike.executors.containers import is_container

        if cfg.addresses:
            return self._resolve_service(pod_name, cfg, cfg.addresses)
        if is_container(cfg.uses):
            return self._resolve_container(pod_name, cfg)
        src = self.loaded.source
        assert cfg.uses is not None  # PodConfig requires it without host/hosts
        uses, with_, modules, base = cfg.uses, dict(cfg.with_), list(cfg.py_modules), self.loaded.base_dir
        if uses.endswith((".yml", ".yaml")):
            path = (base / uses).resolve()
            try:
                text = path.read_text("utf-8")
            except OSError as e:
                raise src.error(("pods", pod_name, "uses"), f"cannot read executor file {path}: {e}") from e
            data, file_src = parse_yaml(text, str(path))
            try:
                spec = _ExecutorFile.model_validate(data)
            except ValidationError as e:
                raise validation_error(e, file_src) from e
            if spec.uses.endswith((".yml", ".yaml")):
                raise file_src.error(("uses",), "an executor file must name a class, not another file")
            uses, with_ = spec.uses, {**spec.with_, **with_}
            modules = [str((path.parent / m).resolve()) for m in spec.py_modules] + modules
        cls = self._find_class(pod_name, uses, modules, base)
        try:
            params = cls.Params.model_validate(with_)
        except ValidationError as e:
            raise validation_error(e, src, ("pods", pod_name, "with")) from e
        return cls, params

    def _resolve_container(self, pod_name: str, cfg: PodConfig) -> tuple[type[Executor], BaseModel]:
        """A pod from a container image: one container a replica, then called as a service."""
        from lookalike.executors.service import RemoteExecutor

        assert cfg.uses is not None
        if cfg.py_modules:
            raise self.loaded.source.error(("pods", pod_name, "py_modules"), "a container image brings its own code")
        if not self._start_containers:  # described, not run (`lookalike flow show`)
            return RemoteExecutor, RemoteExecutor.Params()
        addresses = self.containers.start(
            pod_name, cfg.uses, cfg.parallel, dict(cfg.with_), dict(cfg.env), cfg.timeout_ready
        )
        return self._resolve_service(pod_name, cfg, addresses, with_given=False)

    def _resolve_service(
        self, pod_name: str, cfg: PodConfig, addresses: list[str], with_given: bool = True
    ) -> tuple[type[Executor], BaseModel]:
        """A pod whose executor runs as a service: its facts come from the service's handshake (all
        its services must run the same executor with the same parameters)."""
        from lookalike.executors.containers import is_container
        from lookalike.executors.service import fetch_handshake, remote_executor

        src = self.loaded.source
        if with_given and (cfg.with_ or cfg.py_modules):
            key = "with" if cfg.with_ else "py_modules"
            raise src.error(
                ("pods", pod_name, key),
                f"a pod served elsewhere takes its {key} from its service (`lookalike executor serve --{key}`)",
            )
        infos = [fetch_handshake(pod_name, address) for address in addresses]
        first = infos[0]
        for address, info in zip(addresses[1:], infos[1:], strict=True):
            same = ("class", "with", "fingerprint")
            if [info[k] for k in same] != [first[k] for k in same]:
                raise src.error(
                    ("pods", pod_name, "hosts"),
                    f"the service at {address} runs {info['class']} {info['with']}, the first runs "
                    f"{first['class']} {first['with']}: a pod's services must be the same",
                )
        if cfg.uses is not None and not is_container(cfg.uses) and cfg.uses not in (first["uses"], first["class"]):
            raise src.error(
                ("pods", pod_name, "uses"),
                f"the service at {addresses[0]} runs {first['uses']}, not {cfg.uses}",
            )
        cls = remote_executor(pod_name, first, addresses, cfg.timeout)
        return cls, cls.Params()

    def _find_class(self, pod_name: str, uses: str, modules: list[str], base: Path) -> type[Executor]:
        src = self.loaded.source
        found: dict[str, type[Executor]] = {}
        for m in modules:
            try:
                found.update(load_py_module((base / m).resolve()))
            except ConfigError as e:
                raise src.error(("pods", pod_name, "py_modules"), str(e)) from e
        if uses in found:
            return found[uses]
        if is_builtin(uses):
            return builtin(uses)
        hint = (
            f"; {', '.join(modules)} define{'s' if len(modules) == 1 else ''}: {', '.join(found) or 'none'}"
            if modules
            else ""
        )
        raise src.error(
            ("pods", pod_name, "uses"),
            f"unknown executor '{uses}'. Built-ins: {', '.join(b for b in BUILTINS)}; "
            f"for your own class add py_modules: your_file.py{hint}",
        )

    # --- queries ------------------------------------------------------------------------------

    def pods_using(self, cls: type[Executor]) -> list[Pod]:
        return [p for p in self.pods.values() if issubclass(p.executor, cls)]

    def pods_storing_vectors(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.executor.stores_vectors]

    def set_vector_shards(self, shards: int) -> None:
        """Search however many shards the workspace has, whatever the query flow says: its shard
        pods are the workspace's shards."""
        for pod in self.pods_storing_vectors():
            if pod.config.shards != shards:
                pod.config = pod.config.model_copy(update={"shards": shards})

    def vector_shards(self) -> int:
        """How many shards the flow's vector stores have (the workspace is built for it). Asked of
        the pods' executors (``stores_vectors``), so any vector indexer plugs in."""
        pods = self.pods_storing_vectors()
        if not pods:
            raise ConfigError(f"{self.file}: the flow has no pod that stores vectors (such as VectorIndexer)")
        counts = {p.config.shards for p in pods}
        if len(counts) > 1:
            raise ConfigError(f"{self.file}: every pod that stores vectors must have the same number of shards")
        return counts.pop()

    def check_can_index(self) -> None:
        """An index flow stores documents, and sends each document's vectors to one shard."""
        if not any(p.executor.stores_documents for p in self.pods.values()):
            raise ConfigError(f"{self.file}: an index flow needs a pod that stores documents (DocIndexer)")
        for pod in self.pods.values():
            if pod.executor.stores_vectors and pod.config.polling != "any":
                raise ConfigError(
                    f"{self.file}: pods.{pod.name}.polling: an index flow sends each document to one shard; use 'any'"
                )

    def fingerprint(self) -> str | None:
        """What identifies the vectors this flow writes or reads: its encoders' fingerprints and
        the preprocessing that feeds them."""
        parts = [fp for p in self.pods.values() if (fp := p.executor.fingerprint_of(p.params))]
        if not parts:
            return None
        parts += [fp for p in self.pods.values() if (fp := p.executor.preprocessing_fingerprint(p.params))]
        return "+".join(parts)

    def vector_space(self) -> tuple[int, str]:
        """(dimension, metric) of this flow's vectors, from its encoder(s); they must agree."""
        spaces = {vs for p in self.pods.values() if (vs := p.executor.vector_space_of(p.params))}
        if len(spaces) > 1:
            raise ConfigError(f"{self.file}: the flow's encoders produce different vectors: {sorted(spaces)}")
        return spaces.pop() if spaces else (1280, "cosine")

    @property
    def text(self) -> str:
        return self.loaded.text

    @property
    def file(self) -> str:
        return self.loaded.source.file

    # --- rendering ----------------------------------------------------------------------------

    @staticmethod
    def _scale(pod: Pod) -> str:
        bits = []
        if pod.config.parallel > 1:
            bits.append(f"x{pod.config.parallel} replicas")
        if pod.config.shards > 1:
            bits.append(f"{pod.config.shards} shards, polling {pod.config.polling}")
        return ", ".join(bits)

    def describe(self) -> str:
        """The DAG as text: one pod a line, with its executor, scale and inputs."""
        width = max(len(n) for n in self.pods)
        uses_w = max(len(p.uses) for p in self.pods.values())
        lines = [f"{self.file}  (prefetch {self.prefetch})"]
        for pod in self.pods.values():
            inputs = ", ".join(pod.needs) or GATEWAY
            scale = self._scale(pod)
            lines.append(
                f"  {pod.name:<{width}}  {pod.uses:<{uses_w}}  <- {inputs}" + (f"  [{scale}]" if scale else "")
            )
        lines.append(f"  result <- {self.sink}")
        return "\n".join(lines)

    def mermaid(self) -> str:
        lines = ["flowchart LR", f"  {GATEWAY}([input])"]
        for pod in self.pods.values():
            scale = self._scale(pod)
            label = f"{pod.name}<br/>{pod.uses}" + (f"<br/>{scale}" if scale else "")
            shape = f'{{{{"{label}"}}}}' if pod.is_merge else f'["{label}"]'
            lines.append(f"  {pod.name}{shape}")
        for pod in self.pods.values():
            for n in pod.needs or [GATEWAY]:
                lines.append(f"  {n} --> {pod.name}")
        lines.append(f"  {self.sink} --> result([result])")
        return "\n".join(lines) + "\n"

    def dot(self) -> str:
        lines = [
            "digraph flow {",
            "  rankdir=LR;",
            '  node [shape=box, fontname="Helvetica"];',
            f'  {GATEWAY} [label="input", shape=oval];',
            '  result [label="result", shape=oval];',
        ]
        for pod in self.pods.values():
            scale = self._scale(pod)
            label = f"{pod.name}\\n{pod.uses}" + (f"\\n{scale}" if scale else "")
            shape = (
                "diamond" if pod.is_merge else ("box3d" if pod.config.parallel > 1 or pod.config.shards > 1 else "box")
            )
            lines.append(f'  "{pod.name}" [label="{label}", shape={shape}];')
        for pod in self.pods.values():
            for n in pod.needs or [GATEWAY]:
                lines.append(f'  "{n}" -> "{pod.name}";')
        lines.append(f'  "{self.sink}" -> result;')
        lines.append("}")
        return "\n".join(lines) + "\n"


def builtin_flow_path(name: str) -> Path:
    return Path(str(resources.files("lookalike.flows").joinpath(f"{name}.yml")))


def open_flow(
    spec: str | os.PathLike | None, default: str, env: dict[str, str] | None = None, *, start_containers: bool = True
) -> Flow:
    """A flow from a file path, or the built-in ``default`` ("index" or "query") when ``spec`` is None.
    ``start_containers=False``: container pods are described, not started (`lookalike flow show`)."""
    if spec is None:
        path = builtin_flow_path(default)
        return Flow(load_flow_text(path.read_text("utf-8"), f"<built-in {default}.yml>", path.parent, env), default)
    return Flow(load_flow(spec, env), start_containers=start_containers)
