"""What each pod of a flow runs: its executor class and its checked parameters.

A pod's ``uses:`` names a built-in, a class from its ``py_modules``, an executor YAML file, or a
container image; a pod with ``host``/``hosts`` runs elsewhere, as a service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lookalike.errors import ConfigError
from lookalike.executors.base import BUILTINS, Executor, builtin, is_builtin, load_py_module
from lookalike.flow.config import LoadedFlow, PodConfig, StrList, parse_yaml, validation_error

if TYPE_CHECKING:
    from lookalike.executors.containers import ContainerSet


class _ExecutorFile(BaseModel):
    """An executor YAML file named by `uses: some.yml`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    uses: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    py_modules: StrList = Field(default_factory=list)


class ExecutorResolver:
    """Resolves the pods of one flow file; errors name that file, the pod's key and its line.
    Container pods are started here (into ``containers``) unless ``start_containers`` is off."""

    def __init__(self, loaded: LoadedFlow, containers: ContainerSet, *, start_containers: bool = True):
        self.loaded = loaded
        self.containers = containers
        self.start_containers = start_containers

    def resolve(self, pod_name: str, cfg: PodConfig) -> tuple[type[Executor], BaseModel]:
        from lookalike.executors.containers import is_container

        if cfg.addresses:
            return self._service(pod_name, cfg, cfg.addresses)
        if is_container(cfg.uses):
            return self._container(pod_name, cfg)
        src = self.loaded.source
        assert cfg.uses is not None  # PodConfig requires it without host/hosts
        uses, with_, modules = cfg.uses, dict(cfg.with_), list(cfg.py_modules)
        if uses.endswith((".yml", ".yaml")):
            uses, with_, modules = self._executor_file(pod_name, uses, with_, modules)
        cls = self._find_class(pod_name, uses, modules)
        try:
            params = cls.Params.model_validate(with_)
        except ValidationError as e:
            raise validation_error(e, src, ("pods", pod_name, "with")) from e
        return cls, params

    def _executor_file(
        self, pod_name: str, uses: str, with_: dict[str, Any], modules: list[str]
    ) -> tuple[str, dict[str, Any], list[str]]:
        """(class, parameters, py_modules) from an executor YAML file; the pod's own `with:` wins."""
        path = (self.loaded.base_dir / uses).resolve()
        try:
            text = path.read_text("utf-8")
        except OSError as e:
            raise self.loaded.source.error(("pods", pod_name, "uses"), f"cannot read executor file {path}: {e}") from e
        data, file_src = parse_yaml(text, str(path))
        try:
            spec = _ExecutorFile.model_validate(data)
        except ValidationError as e:
            raise validation_error(e, file_src) from e
        if spec.uses.endswith((".yml", ".yaml")):
            raise file_src.error(("uses",), "an executor file must name a class, not another file")
        # The file's py_modules are relative to the file, the pod's to the flow.
        file_modules = [str((path.parent / m).resolve()) for m in spec.py_modules]
        return spec.uses, {**spec.with_, **with_}, file_modules + modules

    def _container(self, pod_name: str, cfg: PodConfig) -> tuple[type[Executor], BaseModel]:
        """A pod from a container image: one container a replica, then called as a service."""
        from lookalike.executors.service import RemoteExecutor

        assert cfg.uses is not None
        if cfg.py_modules:
            raise self.loaded.source.error(("pods", pod_name, "py_modules"), "a container image brings its own code")
        if not self.start_containers:  # described, not run (`lookalike flow show`)
            return RemoteExecutor, RemoteExecutor.Params()
        addresses = self.containers.start(
            pod_name, cfg.uses, cfg.parallel, dict(cfg.with_), dict(cfg.env), cfg.timeout_ready
        )
        return self._service(pod_name, cfg, addresses, with_given=False)

    def _service(
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

    def _find_class(self, pod_name: str, uses: str, modules: list[str]) -> type[Executor]:
        src, base = self.loaded.source, self.loaded.base_dir
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
