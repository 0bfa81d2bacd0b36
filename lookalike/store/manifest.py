"""manifest.json: a workspace's format, what its vectors are, and what its writers remember.

The vectors' description (encoder fingerprint, size, metric, shard count) decides whether flows
may read or write the workspace; a writer also remembers its flows, preset and index budget here,
so that later opens (a reader, `lookalike serve`) use the same ones.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.atomic import atomic_write
from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore
from lookalike.store.vectors import IndexBudget
from lookalike.version import __version__

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The vectors when neither the flows nor the manifest say: the default model's.
DEFAULT_DIM = 1280
DEFAULT_METRIC = "cosine"

_REINDEX = "re-index it with `lookalike index --reset PATH...`, or pass another --workspace"
_REPAIR = (
    "restore it from a backup, or move the workspace aside and index again into a new one "
    "(`lookalike index --workspace NEW PATH...`); the documents in docs.sqlite are untouched"
)
# Until 2026-12, an INT8 model's fingerprint named the digest of its calibration photos ("q1-" and
# 12 hex digits); it names its recipe now ("q1-tuxpaint64"). The vectors are the same: an old
# workspace's record is read as the new name (a writer rewrites it).
_OLD_INT8 = re.compile(r":q1-[0-9a-f]{12}(?=[:+]|$)")


@dataclass(frozen=True)
class WorkspaceLayout:
    """What the flows that open a workspace say it holds, and what a writer remembers in it."""

    encoder: str | None = None  # the flows' fingerprint (None: whatever the workspace holds)
    dim: int | None = None
    metric: str | None = None
    shards: int | None = None  # the index flow's (None: as many as the workspace has)
    preset: str | None = None
    flows: dict[str, str] | None = None  # the flows' texts, remembered for later opens
    index_memory: int | None = None  # the vector index's budget (None: as remembered)
    index_latency_ms: float | None = None


class Manifest:
    """The manifest of the workspace in ``folder`` (``data``: as read, or empty for a new one)."""

    def __init__(self, folder: Path, data: dict[str, Any] | None = None):
        self.folder = folder
        self.data: dict[str, Any] = data if data is not None else {}

    @classmethod
    def read(cls, folder: Path) -> Manifest | None:
        """The manifest in ``folder``; None if there is none. A damaged one is a StoreError."""
        path = folder / MANIFEST
        return cls(folder, _read(path)) if path.exists() else None

    def write(self) -> None:
        try:
            atomic_write(self.folder / MANIFEST, json.dumps(self.data, indent=2, sort_keys=True).encode())
        except OSError as e:
            raise StoreError(f"cannot write {self.folder / MANIFEST}: {e.strerror or e}") from e

    @staticmethod
    def stored_flow(folder: str | os.PathLike, kind: str) -> tuple[str, Path | None] | None:
        """The text and base folder of the ``kind`` flow the workspace in ``folder`` remembers."""
        path = Path(folder) / MANIFEST
        if not path.exists():
            return None
        flows = _read(path).get("flows", {})
        text, base = flows.get(kind), flows.get(f"{kind}_base_dir")
        return (text, Path(base) if base else None) if text else None

    # --- what it says -------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.data["dim"])

    @property
    def metric(self) -> str:
        return str(self.data.get("metric", DEFAULT_METRIC))

    @property
    def encoder(self) -> str | None:
        return self.data.get("encoder")

    @property
    def preset(self) -> str:
        return str(self.data.get("preset", "default"))

    @property
    def shards(self) -> int:
        return int(self.data.get("shards", 1))

    @property
    def created_at(self) -> float | None:
        return self.data.get("created_at")

    @property
    def budget(self) -> IndexBudget:
        """The whole workspace's index budget (split evenly between its shards)."""
        b = self.data.get("index_budget") or {}
        default = IndexBudget()  # the settings' defaults
        return IndexBudget(
            int(b.get("memory_bytes", default.memory_bytes)), float(b.get("latency_ms", default.latency_ms))
        )

    def identity(self) -> str:
        """What the vectors are, as the doc store records it ("vectors": how they are stored, so a
        process of an older lookalike writing float32 is refused)."""
        described = {k: self.data.get(k) for k in ("encoder", "dim", "metric", "shards")}
        return json.dumps({**described, "vectors": "float16"}, sort_keys=True)

    # --- what the flows say -------------------------------------------------------------------

    def adopt(self, layout: WorkspaceLayout, store: DocStore, *, new: bool, reset: bool, writer: bool) -> bool:
        """Take what the flows say, or refuse flows whose vectors are not this workspace's (a
        non-empty one; ``reset`` empties it first). Whether the shard count changes (re-sharding)."""
        m = self.data
        # Not told (a reader such as `lookalike info`): the vectors are whatever the workspace holds.
        dim = layout.dim or int(m.get("dim", DEFAULT_DIM))
        metric = layout.metric or str(m.get("metric", DEFAULT_METRIC))
        if new:
            m.update(
                format_version=FORMAT_VERSION,
                created_at=time.time(),
                encoder=layout.encoder,
                dim=dim,
                shards=layout.shards or 1,
                preset=layout.preset or "default",
                flows=layout.flows or {},
            )
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.folder} has workspace format {m.get('format_version')}, this lookalike reads "
                f"{FORMAT_VERSION}: upgrade lookalike or re-index into a new --workspace"
            )
        if reset:
            if not writer:
                raise StoreError("resetting a workspace needs write access")
            m.update(encoder=layout.encoder, dim=dim, metric=metric, preset=layout.preset or m.get("preset", "default"))
        self._adopt_encoder(layout.encoder, reset, store)
        self._adopt_space(dim, metric, reset, store)
        if layout.preset and writer:
            m["preset"] = layout.preset
        if layout.flows and writer:
            m["flows"] = layout.flows
        reshard = self._adopt_shards(layout.shards, new, writer)
        m["lookalike_version"] = __version__
        return reshard

    def _adopt_encoder(self, encoder: str | None, reset: bool, store: DocStore) -> None:
        recorded = current_fingerprint(self.encoder)
        if encoder and recorded and recorded != encoder:
            if not reset and store.count_docs() > 0:
                raise StoreError(
                    f"workspace {self.folder} was built with encoder {recorded}, but this flow encodes with "
                    f"{encoder}; {_REINDEX}"
                )
            self.data["encoder"] = encoder  # an empty workspace simply adopts the new encoder
        elif encoder:
            self.data["encoder"] = encoder

    def _adopt_space(self, dim: int, metric: str, reset: bool, store: DocStore) -> None:
        m = self.data
        if (m.get("dim"), m.get("metric", DEFAULT_METRIC)) != (dim, metric) and not reset and store.count_chunks():
            raise StoreError(
                f"workspace {self.folder} holds {m.get('dim')}-d {m.get('metric', DEFAULT_METRIC)} vectors, not "
                f"{dim}-d {metric}; {_REINDEX}"
            )
        m["dim"], m["metric"] = dim, metric

    def _adopt_shards(self, shards: int | None, new: bool, writer: bool) -> bool:
        m = self.data
        n = shards or int(m.get("shards", 1))
        reshard = n != m.get("shards") and not new
        if reshard and not writer:
            raise StoreError(f"workspace {self.folder} has {m.get('shards')} shards, the flow asks for {n}")
        m["shards"] = n
        return reshard

    def check_flow(self, encoder: str | None, dim: int, metric: str, store: DocStore) -> None:
        """Refuse flows whose vectors are not this workspace's (a reader's flows, built after it opened)."""
        recorded = current_fingerprint(self.encoder)
        if encoder and recorded and recorded != encoder and store.count_docs() > 0:
            raise StoreError(
                f"workspace {self.folder} was built with encoder {recorded}, but this flow encodes with "
                f"{encoder}; {_REINDEX}"
            )
        if (self.dim, self.metric) != (dim, metric) and store.count_chunks():
            raise StoreError(
                f"workspace {self.folder} holds {self.dim}-d {self.metric} vectors, not {dim}-d {metric}; {_REINDEX}"
            )

    def set_budget(self, memory: int | None, latency_ms: float | None) -> bool:
        """Given values replace the remembered ones; whether any was given."""
        if memory is None and latency_ms is None:
            return False
        budget = dict(self.data.get("index_budget") or {})
        if memory is not None:
            budget["memory_bytes"] = int(memory)
        if latency_ms is not None:
            budget["latency_ms"] = float(latency_ms)
        self.data["index_budget"] = budget
        return True

    def take_old_roots(self) -> list[str]:
        """The roots a format-1 manifest kept (the doc store keeps them now), removed from it."""
        return self.data.pop("roots", None) or []


def current_fingerprint(recorded: str | None) -> str | None:
    return _OLD_INT8.sub(":q1-tuxpaint64", recorded) if recorded else recorded


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise StoreError(f"{path} is damaged ({e}); {_REPAIR}") from e
    if not isinstance(data, dict) or "format_version" not in data:
        raise StoreError(f"{path} is not a lookalike manifest; {_REPAIR}")
    return data
