"""Flow YAML -> validated pydantic models, with errors that name the file, the key and the line.

A flow file looks like::

    prefetch: 10
    pods:
      loader:        {uses: ImageReader, parallel: 2}
      encoder:       {uses: ImageEncoder, with: {threads: 2}}
      chunk_indexer: {uses: VectorIndexer, shards: 2}
      doc_indexer:   {uses: DocIndexer, needs: loader}
      join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}

Strings may use ``${VAR}`` or ``${VAR:-default}``; they are substituted before validation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from lookalike.errors import ConfigError
from lookalike.settings import ambient_environment
from lookalike.store.spaces import DEFAULT_SPACE

KeyPath = tuple[str | int, ...]

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


# `needs: loader` and `needs: [a, b]` both work, and so do one or several py_modules.
StrList = Annotated[list[str], BeforeValidator(_one_or_many)]


class PodResources(BaseModel):
    """What one replica of a pod reserves on a Ray cluster (ignored by the local runtime, which
    shares this machine's cores out itself)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(default=0.0, ge=0, description="CPUs reserved per replica (its onnxruntime threads)")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica (fractions share one)")
    memory: int | str | None = Field(default=None, description='memory reserved per replica, in bytes or "2GB"')
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources per replica, to pin a pod to the nodes that offer them "
        "(`ray start --resources '{\"workspace\": 1}'`)",
    )

    @field_validator("memory")
    @classmethod
    def _bytes(cls, v: int | str | None) -> int | str | None:
        if isinstance(v, str):
            from lookalike.settings import parse_bytes

            try:
                return parse_bytes(v, "memory")
            except ConfigError as e:
                raise ValueError(str(e)) from None  # pydantic names the key and the line
        return v


class PodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    uses: str | None = Field(
        default=None,
        description="a built-in executor, a class from py_modules, or an executor YAML file (optional with host/hosts)",
    )
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="the executor's parameters")
    needs: StrList | None = Field(default=None, description="upstream pods (default: the pod above)")
    parallel: PositiveInt = Field(default=1, description="replicas of this pod, run concurrently")
    shards: PositiveInt = Field(default=1, description="shards: each holds part of the data")
    space: str = Field(
        default=DEFAULT_SPACE,
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="for a pod that stores vectors: the named vector space it holds (image, faces, ...)",
    )
    polling: Literal["any", "all"] = Field(
        default="any", description="any: each document goes to one shard; all: every shard sees every request"
    )
    py_modules: StrList = Field(default_factory=list, description="Python files with executors, relative to YAML")
    resources: PodResources = Field(default_factory=PodResources, description="per replica, on Ray")
    host: str | None = Field(default=None, description="an executor service's host (`lookalike executor serve`)")
    port: int | None = Field(default=None, ge=1, le=65535, description="that service's port")
    hosts: list[str] | None = Field(
        default=None, min_length=1, description="several services (HOST:PORT each), balanced like parallel"
    )
    timeout: float = Field(default=120.0, gt=0, description="seconds a service may take to answer one request")
    timeout_ready: float = Field(
        default=120.0, gt=0, description="seconds a container (uses: docker://IMAGE) may take to be ready"
    )
    env: dict[str, str] = Field(default_factory=dict, description="environment variables for the pod's container")

    @model_validator(mode="after")
    def _where(self) -> PodConfig:
        if self.host is not None and self.port is None:
            raise ValueError("host needs a port (or use hosts: [HOST:PORT, ...])")
        if self.port is not None and self.host is None:
            raise ValueError("port needs a host")
        if self.host is not None and self.hosts is not None:
            raise ValueError("give host/port or hosts, not both")
        for h in self.hosts or []:
            name, sep, port = h.rpartition(":")
            if not sep or not name or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"hosts: {h!r} is not HOST:PORT")
        if self.uses is None and not self.addresses:
            raise ValueError("uses is missing (a pod needs uses, or host/port of an executor service)")
        if self.addresses and self.uses is not None and self.uses.startswith(("docker://", "podman://")):
            raise ValueError("a pod runs its container image (uses: docker://...) or calls host/port, not both")
        if self.addresses and self.parallel not in (1, len(self.addresses)):
            raise ValueError(f"parallel {self.parallel} with {len(self.addresses)} services: one replica per service")
        return self

    @property
    def addresses(self) -> list[str]:
        """The executor services this pod sends its requests to (``http://HOST:PORT``), if any."""
        if self.host is not None:
            return [f"http://{_bracket(self.host)}:{self.port}"]
        return [f"http://{_bracket(h.rpartition(':')[0])}:{h.rpartition(':')[2]}" for h in self.hosts or []]

    @field_validator("with_", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class FlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefetch: PositiveInt = Field(default=10, description="requests in flight at once (bounds memory)")
    runtime: Literal["local", "ray"] | None = Field(
        default=None, description="where the pods run: this machine's threads, or a Ray cluster (--runtime wins)"
    )
    pods: dict[str, PodConfig] = Field(min_length=1)


class SourceMap:
    """Where each key of a YAML document was written, for error messages."""

    def __init__(self, file: str, lines: dict[KeyPath, int]):
        self.file = file
        self.lines = lines

    def line(self, path: Iterable[str | int]) -> int | None:
        path = tuple(path)
        while path:  # the nearest enclosing key that we know the line of
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: Iterable[str | int], message: str) -> ConfigError:
        path = tuple(path)
        line = self.line(path)
        where = f"{self.file}:{line}" if line else self.file
        key = ".".join(str(p) for p in path) or "(top level)"
        return ConfigError(f"{where}: {key}: {message}")


def _lines(node: yaml.Node, path: KeyPath, out: dict[KeyPath, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            out[(*path, k)] = key.start_mark.line + 1
            _lines(value, (*path, k), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, (*path, i), out)


def _substitute(value: Any, path: KeyPath, env: dict[str, str], source: SourceMap) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), env, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, source) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise source.error(path, f"environment variable {name} is not set and ${{{name}}} has no default")

    return _ENV.sub(replace, value)


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML keeping each key's line; YAML syntax errors become ConfigError with the line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from e
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _lines(node, (), lines)
    return data, SourceMap(file, lines)


def validation_error(e: ValidationError, source: SourceMap, prefix: KeyPath = ()) -> ConfigError:
    """The first pydantic error as one ConfigError line (naming the key and line)."""
    first = e.errors()[0]
    loc = tuple("with" if p == "with_" else p for p in first["loc"])
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling)"
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    count = len(e.errors())
    more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
    return source.error((*prefix, *loc), msg + more)


class LoadedFlow:
    """A validated flow file: the config, where it came from, and its source map."""

    def __init__(self, config: FlowConfig, source: SourceMap, base_dir: Path, text: str):
        self.config = config
        self.source = source
        self.base_dir = base_dir
        self.text = text


def load_flow_text(text: str, file: str = "<flow>", base_dir: Path | None = None, env: dict[str, str] | None = None):
    data, source = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise source.error((), "a flow file must be a mapping with a 'pods:' key")
    data = _substitute(data, (), ambient_environment() if env is None else env, source)
    try:
        config = FlowConfig.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, source) from e
    return LoadedFlow(config, source, base_dir or Path.cwd(), text)


def load_flow(path: str | os.PathLike, env: dict[str, str] | None = None) -> LoadedFlow:
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"flow file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read flow file {path}: {e}") from e
    return load_flow_text(text, str(path), path.resolve().parent, env)
