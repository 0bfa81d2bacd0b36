"""manifest.json: a workspace's format, what its vectors are, and what its writers remember.

The vector spaces' descriptions (each one's encoder fingerprint, size, metric and shard count,
:mod:`lookalike.store.spaces`) decide whether flows may read or write the workspace; a writer also
remembers its flows, preset and index budget here, so that later opens (a reader, `lookalike
serve`) use the same ones. Format 1 (one space, described at the top level) is read as format 2's
one ``image`` space; a writer rewrites it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lookalike.atomic import atomic_write
from lookalike.errors import StoreError
from lookalike.store.docstore import DocStore
from lookalike.store.spaces import DEFAULT_SPACE, FACES, VectorSpace, first_slots, unknown_space
from lookalike.store.vectors import IndexBudget
from lookalike.version import __version__

FORMAT_VERSION = 2
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

    spaces: dict[str, VectorSpace] | None = None  # the index flow's (None: whatever the workspace holds)
    preset: str | None = None
    flows: dict[str, str] | None = None  # the flows' texts, remembered for later opens
    index_memory: int | None = None  # the vector index's budget (None: as remembered)
    index_latency_ms: float | None = None


class Manifest:
    """The manifest of the workspace in ``folder`` (``data``: as read, or empty for a new one)."""

    def __init__(self, folder: Path, data: dict[str, Any] | None = None):
        self.folder = folder
        self.data: dict[str, Any] = _upgraded(data) if data is not None else {}
        self.old_faces_only = data is not None and data.get("format_version") == 1 and data.get("preset") == "faces"
        # Set by adopt() when the spaces' shards move: (the old spaces, the new ones).
        self.moved: tuple[dict[str, VectorSpace], dict[str, VectorSpace]] | None = None

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
    def spaces(self) -> dict[str, VectorSpace]:
        """The vector spaces, in slot order (see :mod:`lookalike.store.spaces`)."""
        stored = self.data.get("spaces") or [{"name": DEFAULT_SPACE, "dim": DEFAULT_DIM}]
        return {d["name"]: VectorSpace.from_dict(d) for d in stored}

    def space(self, name: str | None = None) -> VectorSpace:
        """The space ``name`` (None: the first, the one a search names by default)."""
        spaces = self.spaces
        if name is None:
            return next(iter(spaces.values()))
        if name not in spaces:
            raise unknown_space(name, spaces)
        return spaces[name]

    @property
    def preset(self) -> str:
        return str(self.data.get("preset", "default"))

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
        process of an older lookalike writing float32 is refused). A workspace of one ``image``
        space says it as it did before spaces, so upgrading lookalike rebuilds no index."""
        spaces = self.spaces
        if list(spaces) == [DEFAULT_SPACE]:
            described: dict[str, Any] = spaces[DEFAULT_SPACE].to_dict()
        else:  # a list: the spaces' order is their slots'
            described = {"spaces": _dicts(spaces)}
        return json.dumps({**described, "vectors": "float16"}, sort_keys=True)

    # --- what the flows say -------------------------------------------------------------------

    def adopt(self, layout: WorkspaceLayout, store: DocStore, *, new: bool, reset: bool, writer: bool) -> bool:
        """Take what the flows say, or refuse flows whose vectors are not this workspace's (a
        non-empty one; ``reset`` empties it first). Whether the spaces' shards move (re-sharding)."""
        m = self.data
        if layout.spaces:
            layout = replace(layout, spaces=self._with_shards(layout.spaces))
        if new:
            m.update(format_version=FORMAT_VERSION, created_at=time.time(), preset="default", flows={})
            m["spaces"] = _dicts(layout.spaces or {DEFAULT_SPACE: VectorSpace(None, DEFAULT_DIM, DEFAULT_METRIC, 1)})
        if m.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{self.folder} has workspace format {m.get('format_version')}, this lookalike reads "
                f"{FORMAT_VERSION}: upgrade lookalike or re-index into a new --workspace"
            )
        if self.old_faces_only and not reset:
            raise StoreError(
                f"{self.folder} holds faces only, as the faces preset did before faces joined the photos in "
                f"one workspace; re-index it with `lookalike index --reset --faces PATH...` (add "
                f"--workspace {self.folder} if it is not the default)"
            )
        if reset:
            if not writer:
                raise StoreError("resetting a workspace needs write access")
            if layout.spaces:
                m["spaces"] = _dicts(layout.spaces)
            m["preset"] = layout.preset or m.get("preset", "default")
        moved = self._adopt_spaces(layout.spaces, store, new=new, reset=reset, writer=writer)
        if layout.preset and writer:
            m["preset"] = layout.preset
        if layout.flows and writer:
            m["flows"] = layout.flows
        m["lookalike_version"] = __version__
        return moved

    def _with_shards(self, spaces: dict[str, VectorSpace]) -> dict[str, VectorSpace]:
        """``spaces`` with each shard count left to the workspace (0) filled in: as it has, else 1."""
        have = self.spaces if self.data.get("spaces") else {}
        return {
            name: space if space.shards else replace(space, shards=have[name].shards if name in have else 1)
            for name, space in spaces.items()
        }

    def _adopt_spaces(
        self, wanted: dict[str, VectorSpace] | None, store: DocStore, *, new: bool, reset: bool, writer: bool
    ) -> bool:
        if not wanted or new or reset:
            return False
        have = self.spaces
        docs = store.count_docs()
        for name, space in wanted.items():
            old = have.get(name)
            if old is None:
                if docs:
                    raise StoreError(
                        f"workspace {self.folder} holds {docs} photos indexed without {name!r} vectors; to add "
                        f"them, re-index every photo: `lookalike index --reset{' --faces' if name == FACES else ''} "
                        f"PATH...`, or index into a new --workspace"
                    )
                continue
            self._check_vectors(old, space, store)
        dropped = [name for name in have if name not in wanted]
        if dropped and docs:
            raise StoreError(
                f"workspace {self.folder} holds {', '.join(dropped)} vectors that this index flow does not "
                f"make; index with the flows it remembers (no --flow), or {_REINDEX}"
            )
        # Existing spaces keep their order (and so their slots, unless a shard count changes), and
        # their encoder where a flow names none (a flow of precomputed vectors).
        kept = {n: replace(wanted[n], encoder=wanted[n].encoder or have[n].encoder) for n in have if n in wanted}
        merged = kept | {n: s for n, s in wanted.items() if n not in have}
        before, after = first_slots(have), first_slots(merged)
        moved = any(have[n].shards != merged[n].shards or before[n] != after[n] for n in have if n in merged)
        if moved and not writer:
            shards = {n: s.shards for n, s in merged.items()}
            raise StoreError(f"workspace {self.folder} has other shards than the flow asks for ({shards})")
        if moved:
            self.moved = (have, merged)
        self.data["spaces"] = _dicts(merged)
        return moved

    def check_flow(self, spaces: dict[str, VectorSpace], store: DocStore) -> None:
        """Refuse flows whose vectors are not this workspace's (a reader's flows, built after it opened)."""
        for name, space in spaces.items():
            self._check_vectors(self.space(name), space, store)

    def _check_vectors(self, mine: VectorSpace, flows: VectorSpace, store: DocStore) -> None:
        """Refuse a flow's space whose encoder or vectors are not the workspace's (unless it is empty)."""
        recorded = current_fingerprint(mine.encoder)
        if flows.encoder and recorded and recorded != flows.encoder and store.count_docs() > 0:
            raise StoreError(
                f"workspace {self.folder} was built with encoder {recorded}, but this flow encodes with "
                f"{flows.encoder}; {_REINDEX}"
            )
        if (mine.dim, mine.metric) != (flows.dim, flows.metric) and store.count_chunks():
            raise StoreError(
                f"workspace {self.folder} holds {mine.dim}-d {mine.metric} vectors, not "
                f"{flows.dim}-d {flows.metric}; {_REINDEX}"
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


def spaces_of_identity(identity: str | None) -> dict[str, VectorSpace] | None:
    """The spaces, in slot order, that an identity (as :meth:`Manifest.identity` writes it) describes;
    None if it says none."""
    try:
        data = json.loads(identity or "")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        if "spaces" in data:
            return {d["name"]: VectorSpace.from_dict(d) for d in data["spaces"]}
        return {DEFAULT_SPACE: VectorSpace.from_dict(data)} if data.get("dim") else None
    except (KeyError, TypeError, ValueError):
        return None


def _dicts(spaces: dict[str, VectorSpace]) -> list[dict[str, Any]]:
    """The spaces as the manifest keeps them: a list, whose order is their slots' (JSON objects'
    keys are written sorted)."""
    return [{"name": name, **space.to_dict()} for name, space in spaces.items()]


def _upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 read as format 2: its one space, described at the top level, is the ``image`` space."""
    if data.get("format_version") != 1:
        return data
    data = dict(data)
    space = {k: data.pop(k) for k in ("encoder", "dim", "metric", "shards") if k in data}
    space.setdefault("dim", DEFAULT_DIM)
    data["spaces"] = [{"name": DEFAULT_SPACE, **space}]
    data["format_version"] = FORMAT_VERSION
    return data


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
