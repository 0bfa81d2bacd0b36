"""Runtime settings, and the one options object built from them.

Each setting has a ``LOOKALIKE_*`` environment variable, and most a flag that wins over it. The
:data:`SETTINGS` table is the one place they are defined: the CLI takes its flags' help from here,
`lookalike settings` lists them, and README's table is :func:`markdown_table`'s output (a test
checks it, and that every LOOKALIKE_* name the code mentions is here).

:class:`Options` is what the rest of lookalike is given: built once, by :meth:`Options.from_env`
(flags, then the variables, then the defaults), and passed down whole. This module is the only one
that reads the environment; a subprocess's environment (a Ray actor's, a container's) is built
from an Options object by :meth:`Options.environment`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lookalike.errors import ConfigError

RuntimeKind = Literal["local", "ray"]


@dataclass(frozen=True)
class Setting:
    env: str
    flag: str | None
    default: str
    help: str
    field: str  # the Options field it sets
    kind: str = "str"  # how the variable is read: str, path, int, float, bytes, bool, runtime
    low: float | None = None  # the range a number must lie in
    high: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "LOOKALIKE_WORKSPACE",
        "--workspace",
        "./.lookalike",
        "the workspace directory (index, docs, shards)",
        "workspace",
        "path",
    ),
    Setting(
        "LOOKALIKE_MODEL_DIR",
        None,
        "<user cache>/lookalike/models",
        "where converted ONNX models are cached (keyed by the weights' SHA-256)",
        "model_dir",
        "path",
    ),
    Setting(
        "LOOKALIKE_DATA_DIR",
        None,
        "<user cache>/lookalike/datasets",
        "where `datasets fetch` and `demo` keep sample photos",
        "data_dir",
        "path",
    ),
    Setting(
        "LOOKALIKE_PREFETCH",
        None,
        "10",
        "requests in flight in the built-in flows (bounds memory)",
        "prefetch",
        "int",
        1,
        10_000,
    ),
    Setting(
        "LOOKALIKE_MAX_FILE_MB",
        None,
        "200",
        "files larger than this are skipped as too large, unread (the built-in flows' loader max_file_mb)",
        "max_file_mb",
        "float",
        0.001,
        1e9,
    ),
    Setting(
        "LOOKALIKE_FLOWERS17_URL",
        None,
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz",
        "where the flowers17 dataset is downloaded from",
        "flowers17_url",
    ),
    Setting("LOOKALIKE_PORT", "--port", "45678", "the port `serve` and `demo` listen on", "port", "int", 1, 65535),
    Setting("LOOKALIKE_TOP_K", "--top-k", "10", "results per query, for `search` and the API", "top_k", "int", 1, 1000),
    Setting(
        "LOOKALIKE_QUERY_EXPANSION",
        None,
        "3",
        "image searches are expanded by this many nearest neighbours (alpha query expansion; 0 turns it off); "
        "a query with a copy in the collection is never expanded",
        "query_expansion",
        "int",
        0,
        100,
    ),
    Setting(
        "LOOKALIKE_TOKEN",
        "--token",
        "unset",
        "bearer token for the write endpoints; required for writes when serving beyond loopback",
        "token",
    ),
    Setting(
        "LOOKALIKE_MAX_UPLOAD_MB",
        "--max-upload-mb",
        "20",
        "largest request body the server accepts (413 above)",
        "max_upload_mb",
        "float",
        0.1,
        1e6,
    ),
    Setting(
        "LOOKALIKE_MAX_BATCH",
        "--max-batch",
        "16",
        "most searches that share one encoder batch; searches that queue while the encoder is busy "
        "share the next, none waits for company (1: no micro-batching)",
        "max_batch",
        "int",
        1,
        256,
    ),
    Setting(
        "LOOKALIKE_INDEX_MEMORY",
        "--index-memory",
        "2GB",
        "RAM the vector index may take (all shards); picks exact search, IVF-SQ8 or IVF-PQ codes",
        "index_memory",
        "bytes",
    ),
    Setting(
        "LOOKALIKE_INDEX_LATENCY_MS",
        "--index-latency-ms",
        "5",
        "target milliseconds per query on one core; exact search is used while a full scan meets it",
        "index_latency_ms",
        "float",
        0.1,
        10_000,
    ),
    Setting(
        "LOOKALIKE_RUNTIME",
        "--runtime",
        "local",
        "where flows run: local (threads on this machine) or ray (actors on a Ray cluster); "
        "unset, a flow's own runtime: key decides",
        "runtime",
        "runtime",
    ),
    Setting(
        "LOOKALIKE_RAY_ADDRESS",
        "--ray-address",
        "unset",
        "the Ray cluster to run on (its head's HOST:PORT, or auto); unset with --runtime ray, a local one is started",
        "ray_address",
    ),
    Setting(
        "LOOKALIKE_EXECUTOR_WITH",
        "--with",
        "unset",
        "`executor serve`: the executor's parameters as JSON (how a container pod passes its with:)",
        "executor_with",
    ),
    Setting(
        "LOOKALIKE_CONTAINER_ENGINE",
        None,
        "docker, else podman",
        "the container engine for pods with uses: docker://IMAGE (an executable name or path)",
        "container_engine",
    ),
    Setting(
        "LOOKALIKE_WATCH_SETTLE",
        "--settle",
        "2",
        "`watch`: seconds a file's size and mtime must stay unchanged before it is indexed (a copy in progress waits)",
        "watch_settle",
        "float",
        0,
        3600,
    ),
    Setting(
        "LOOKALIKE_WATCH_POLL",
        "--poll",
        "unset",
        "`watch`: poll the folders every this many seconds instead of using file events "
        "(unset: events, and polling every 10 s only where events cannot be trusted or run out)",
        "watch_poll",
        "float",
        0.1,
        86_400,
    ),
    Setting(
        "LOOKALIKE_WATCH_RECONCILE",
        "--reconcile",
        "600",
        "`watch`: seconds between reconcile scans of the watched folders, catching what events missed "
        "(one also runs at start; 0 turns the periodic ones off)",
        "watch_reconcile",
        "float",
        0,
        1e7,
    ),
    Setting(
        "LOOKALIKE_WATCH_MAX_DIRS",
        "--max-watches",
        "unset",
        "`watch`: most folders to watch with file events; beyond it, or when the system's inotify watches "
        "run out, the watcher polls (unset: as many as the system allows)",
        "watch_max_dirs",
        "int",
        1,
        1e9,
    ),
    Setting("LOOKALIKE_DEBUG", None, "unset", "set to 1 to print tracebacks of unexpected errors", "debug", "bool"),
)


def setting(env: str) -> Setting:
    for s in SETTINGS:
        if s.env == env:
            return s
    raise KeyError(env)


def default(env: str) -> str:
    """A setting's default, as written in the table (and shown by `--help`)."""
    return setting(env).default


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| variable | flag | what | default |", "|---|---|---|---|"]
    for s in SETTINGS:
        flag = f"`{s.flag}`" if s.flag else ""
        shown = s.default if s.default == "unset" else f"`{s.default}`"
        rows.append(f"| `{s.env}` | {flag} | {s.help} | {shown} |")
    return "\n".join(rows) + "\n"


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
_UNITS |= {"T": 1 << 40, "TB": 1 << 40}


def parse_bytes(text: str, name: str) -> int:
    """A size such as ``2GB``, ``512MB`` or ``1.5G`` (binary units) in bytes; a ConfigError naming
    ``name`` otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", text.upper())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{name}={text!r} is not a size such as 2GB or 512MB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _parse(s: Setting, raw: str, name: str) -> Any:
    """A setting's text (a variable's value, or its default) as its Options field holds it."""
    if s.kind == "path":
        return Path(raw).expanduser()
    if s.kind == "bool":
        return raw.strip().lower() not in ("", "0", "false", "no", "off")
    if s.kind == "bytes":
        return parse_bytes(raw, name)
    if s.kind == "runtime":
        if raw not in ("local", "ray"):
            raise ConfigError(f"{name}={raw!r}: the runtimes are local and ray")
        return raw
    if s.kind in ("int", "float"):
        try:
            number = int(raw) if s.kind == "int" else float(raw)
        except ValueError:
            what = "a whole number" if s.kind == "int" else "a number"
            raise ConfigError(f"{name}={raw!r} is not {what}") from None
        check_range(s, number, name)
        return number
    return raw


def check_range(s: Setting, number: float, name: str) -> None:
    if (s.low is not None and number < s.low) or (s.high is not None and number > s.high):
        raise ConfigError(f"{name}={number:g} is out of range {s.low:g}..{s.high:g}")


def _table_default(env: str) -> Any:
    """The Options default of a setting: its table default, or None where the table says "unset"
    or names a place that is worked out later (the user cache)."""
    s = setting(env)
    if s.default == "unset" or s.default.startswith("<") or s.env == "LOOKALIKE_CONTAINER_ENGINE":
        return None
    return _parse(s, s.default, s.env)


@dataclass(frozen=True)
class Options:
    """Everything lookalike is told: one object, built once and passed down whole.

    Build it with :meth:`from_env` to honour the ``LOOKALIKE_*`` variables as the CLI does (the
    keyword arguments you give win over them), or construct it directly for exactly the values you
    name (the rest are the documented defaults). ``None`` means "not set": a workspace's remembered
    value, the flow's own runtime, or a default place in the user's cache.
    """

    workspace: Path = _table_default("LOOKALIKE_WORKSPACE")
    model_dir: Path | None = None
    data_dir: Path | None = None
    prefetch: int = _table_default("LOOKALIKE_PREFETCH")
    max_file_mb: float = _table_default("LOOKALIKE_MAX_FILE_MB")
    flowers17_url: str = _table_default("LOOKALIKE_FLOWERS17_URL")
    port: int = _table_default("LOOKALIKE_PORT")
    top_k: int = _table_default("LOOKALIKE_TOP_K")
    query_expansion: int = _table_default("LOOKALIKE_QUERY_EXPANSION")
    token: str | None = None
    max_upload_mb: float = _table_default("LOOKALIKE_MAX_UPLOAD_MB")
    max_batch: int = _table_default("LOOKALIKE_MAX_BATCH")
    index_memory: int | None = None  # bytes; None: as the workspace remembers, else 2GB
    index_latency_ms: float | None = None  # None: as the workspace remembers, else 5
    runtime: RuntimeKind | None = None
    ray_address: str | None = None
    executor_with: str | None = None
    container_engine: str | None = None
    watch_settle: float = _table_default("LOOKALIKE_WATCH_SETTLE")
    watch_poll: float | None = None  # None: file events (polling only where they fail)
    watch_reconcile: float = _table_default("LOOKALIKE_WATCH_RECONCILE")
    watch_max_dirs: int | None = None  # None: as many as the system allows
    debug: bool = False
    # Flags without a variable: the flows a workspace is indexed and searched with (a file, or
    # None: the workspace's remembered flow, else the built-in one) and a preset of built-in flows.
    index_flow: Path | None = None
    query_flow: Path | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        for s in SETTINGS:
            v = getattr(self, s.field)
            if s.kind in ("int", "float") and v is not None:
                check_range(s, v, s.flag or s.field)
        if self.runtime == "local" and self.ray_address is not None:
            raise ConfigError("--ray-address goes with --runtime ray, not --runtime local")
        # A path given as text is a path; a workspace is a folder name, whatever the caller typed.
        for name in ("workspace", "model_dir", "data_dir", "index_flow", "query_flow"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, Path):
                object.__setattr__(self, name, Path(v))

    @classmethod
    def from_env(cls, **flags: Any) -> Options:
        """Flags (the keyword arguments that are not None) win, then ``LOOKALIKE_*`` variables,
        then the defaults. A bad variable is a ConfigError naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(flags) - known
        if unknown:
            raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = os.environ.get(s.env, "")
            if raw.strip():
                values[s.field] = _parse(s, raw.strip(), s.env)
        values.update({k: v for k, v in flags.items() if v is not None})
        if flags.get("ray_address") is not None and flags.get("runtime") is None:
            values["runtime"] = "ray"  # --ray-address alone means Ray
        if flags.get("runtime") == "local" and flags.get("ray_address") is None:
            values.pop("ray_address", None)  # --runtime local wins over a variable's address
        return cls(**values)

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)

    @property
    def model_cache(self) -> Path:
        """Where converted ONNX models are cached."""
        return self.model_dir if self.model_dir is not None else _user_cache() / "models"

    @property
    def dataset_cache(self) -> Path:
        """Where sample datasets are cached."""
        return self.data_dir if self.data_dir is not None else _user_cache() / "datasets"

    def environment(self, *, secrets: bool = False) -> dict[str, str]:
        """These options as ``LOOKALIKE_*`` variables, for a process that builds its own Options
        from them (a Ray actor, a service): only what is set, and the token only if ``secrets``."""
        out = {}
        for s in SETTINGS:
            v = getattr(self, s.field)
            if v is None or v is False or (s.field == "token" and not secrets):
                continue
            out[s.env] = "1" if v is True else str(v)
        return out

    def flow_variables(self) -> dict[str, str]:
        """What a flow's ``${VAR}`` substitutes: the process's environment, with these options'
        settings over it (so ``Options(prefetch=4)`` reaches ``${LOOKALIKE_PREFETCH:-10}``)."""
        return {**os.environ, **self.environment()}


def _user_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike"))


def ambient_environment() -> dict[str, str]:
    """This process's environment, for the one place that passes it on whole: a subprocess."""
    return dict(os.environ)


def ray_variables() -> dict[str, str]:
    """Ray's own variables a Ray actor is given: usage statistics stay off unless turned on here."""
    return {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}


def quiet_ray_usage_stats() -> None:
    """Keep Ray from reporting usage statistics from this process (it reads its variable at init)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def raw_value(env: str) -> str | None:
    """A variable as set in this process, unparsed (for `lookalike settings`, which shows it)."""
    return os.environ.get(env)
