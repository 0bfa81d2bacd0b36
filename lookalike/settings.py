"""Runtime settings: each has a LOOKALIKE_* environment variable, and most a flag that wins over it.

This table is the one place they are defined: the CLI takes its defaults, environment variables
and `--help` text from here, the server its defaults, `lookalike settings` lists them, and
README's table is :func:`markdown_table`'s output (a test checks it, and that every LOOKALIKE_*
name the code reads is here).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    env: str
    flag: str | None
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("LOOKALIKE_WORKSPACE", "--workspace", "./.lookalike", "the workspace directory (index, docs, shards)"),
    Setting(
        "LOOKALIKE_MODEL_DIR",
        None,
        "<user cache>/lookalike/models",
        "where converted ONNX models are cached (keyed by the weights' SHA-256)",
    ),
    Setting(
        "LOOKALIKE_DATA_DIR",
        None,
        "<user cache>/lookalike/datasets",
        "where `datasets fetch` and `demo` keep sample photos",
    ),
    Setting("LOOKALIKE_PREFETCH", None, "10", "requests in flight in the built-in flows (bounds memory)"),
    Setting(
        "LOOKALIKE_MAX_FILE_MB",
        None,
        "200",
        "files larger than this are skipped as too large, unread (the built-in flows' loader max_file_mb)",
    ),
    Setting(
        "LOOKALIKE_FLOWERS17_URL",
        None,
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz",
        "where the flowers17 dataset is downloaded from",
    ),
    Setting("LOOKALIKE_PORT", "--port", "45678", "the port `serve` and `demo` listen on"),
    Setting("LOOKALIKE_TOP_K", "--top-k", "10", "results per query, for `search` and the API"),
    Setting(
        "LOOKALIKE_QUERY_EXPANSION",
        None,
        "3",
        "image searches are expanded by this many nearest neighbours (alpha query expansion; 0 turns it off); "
        "a query with a copy in the collection is never expanded",
    ),
    Setting(
        "LOOKALIKE_TOKEN",
        "--token",
        "unset",
        "bearer token for the write endpoints; required for writes when serving beyond loopback",
    ),
    Setting("LOOKALIKE_MAX_UPLOAD_MB", "--max-upload-mb", "20", "largest request body the server accepts (413 above)"),
    Setting(
        "LOOKALIKE_MAX_BATCH",
        "--max-batch",
        "16",
        "most searches that share one encoder batch; searches that queue while the encoder is busy "
        "share the next, none waits for company (1: no micro-batching)",
    ),
    Setting(
        "LOOKALIKE_INDEX_MEMORY",
        "--index-memory",
        "2GB",
        "RAM the vector index may take (all shards); picks exact search, IVF-SQ8 or IVF-PQ codes",
    ),
    Setting(
        "LOOKALIKE_INDEX_LATENCY_MS",
        "--index-latency-ms",
        "5",
        "target milliseconds per query on one core; exact search is used while a full scan meets it",
    ),
    Setting(
        "LOOKALIKE_RUNTIME",
        "--runtime",
        "local",
        "where flows run: local (threads on this machine) or ray (actors on a Ray cluster); "
        "unset, a flow's own runtime: key decides",
    ),
    Setting(
        "LOOKALIKE_RAY_ADDRESS",
        "--ray-address",
        "unset",
        "the Ray cluster to run on (its head's HOST:PORT, or auto); unset with --runtime ray, a local one is started",
    ),
    Setting(
        "LOOKALIKE_EXECUTOR_WITH",
        "--with",
        "unset",
        "`executor serve`: the executor's parameters as JSON (how a container pod passes its with:)",
    ),
    Setting(
        "LOOKALIKE_CONTAINER_ENGINE",
        None,
        "docker, else podman",
        "the container engine for pods with uses: docker://IMAGE (an executable name or path)",
    ),
    Setting("LOOKALIKE_DEBUG", None, "unset", "set to 1 to print tracebacks of unexpected errors"),
)


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| variable | flag | what | default |", "|---|---|---|---|"]
    for s in SETTINGS:
        flag = f"`{s.flag}`" if s.flag else ""
        shown = s.default if s.default == "unset" else f"`{s.default}`"
        rows.append(f"| `{s.env}` | {flag} | {s.help} | {shown} |")
    return "\n".join(rows) + "\n"


def value(env: str) -> str:
    """A setting's value in this process: its environment variable, else its default."""
    import os

    return os.environ.get(env) or setting(env).default


def int_value(env: str, low: int = 1, high: int = 1_000_000) -> int:
    """An integer setting, checked (a bad one is a ConfigError naming the variable)."""
    from lookalike.errors import ConfigError

    raw = value(env)
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{env}={raw!r} is not a whole number") from None
    if not low <= n <= high:
        raise ConfigError(f"{env}={n} is out of range {low}..{high}")
    return n


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20, "G": 1 << 30, "GB": 1 << 30}
_UNITS |= {"T": 1 << 40, "TB": 1 << 40}


def parse_bytes(text: str, name: str) -> int:
    """A size such as ``2GB``, ``512MB`` or ``1.5G`` (binary units) in bytes; a ConfigError naming
    ``name`` otherwise."""
    import re

    from lookalike.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*", text.upper())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{name}={text!r} is not a size such as 2GB or 512MB")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def default(env: str) -> str:
    """A setting's default, as the code uses it."""
    return setting(env).default


def setting(env: str) -> Setting:
    for s in SETTINGS:
        if s.env == env:
            return s
    raise KeyError(env)
