"""A shard's snapshot on disk, and what one holder of the shard knows about it.

A snapshot is two files in the shard's folder: ``index-<generation>-<token>.faiss`` (never
rewritten) and ``snapshot.json``, written last, which names it. The state names its index file, so
a crash between two saves cannot pair one save's index with another's state. Several holders of a
shard (a server's pods, other processes) share the folder: writes happen under the shard's lock,
and never over a newer snapshot another holder wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from lookalike.atomic import atomic_write
from lookalike.errors import StoreError
from lookalike.store.locks import exclusive, try_exclusive
from lookalike.store.shard_spec import ShardSpec
from lookalike.store.vectors import IndexInfo, VectorShard

STATE_FILE = "snapshot.json"
# A shard that applied this many commits since its last snapshot writes one when it next syncs
# (a long-running server); closing always does.
LAZY_FLUSH_GENERATIONS = 200
# How long a holder waits for another that is rebuilding this shard (a million vectors as IVF,SQ8
# take a few minutes on two cores).
REBUILD_WAIT_S = 1800.0


def read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or "file" not in state or not isinstance(state.get("generation"), int):
        return None  # includes snapshots of lookalike before 0.x's named files: rebuilt
    return state


def save_snapshot(vectors: VectorShard, folder: Path, generation: int) -> None:
    """Write the index to a new file, then the state that names it (each atomically), then delete
    older index files. The caller keeps the shard from changing meanwhile.

    A shard still mapped from its snapshot has not changed since it was loaded: the new state names
    that same file (FAISS would write a mapped index as a stub pointing elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    if vectors.mapped and vectors.file and (folder / vectors.file).exists():
        name, count = vectors.file, len(vectors)
    else:  # changed, or its file was replaced by another process's save: written out whole
        name = f"index-{generation}-{secrets.token_hex(4)}.faiss"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        os.close(fd)
        try:
            count = vectors.write_index(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        vectors.file = name
    state = {
        "file": name,
        "bytes": (folder / name).stat().st_size,
        "generation": generation,
        "count": count,
        "dim": vectors.dim,
        "shard": vectors.shard,
        "metric": vectors.metric,
        "index": asdict(vectors.info),
    }
    atomic_write(folder / STATE_FILE, json.dumps(state).encode())
    for old in folder.glob("index*.faiss"):
        if old.name != name:
            try:
                old.unlink()
            except OSError:
                pass


def load_snapshot(folder: Path, dim: int, shard: int, metric: str = "cosine") -> tuple[VectorShard, int] | None:
    """The snapshot in ``folder`` and the generation it reflects; None if missing or damaged. The
    caller decides whether the generation is usable (the store's, or one the log brings forward)."""
    for _ in range(3):  # another process may replace the snapshot between our two reads
        state = read_state(folder)
        if state is None or state.get("dim") != dim or state.get("metric", "cosine") != metric:
            return None
        path = folder / str(state.get("file"))
        try:
            size = path.stat().st_size
            if size != state.get("bytes"):
                return None
            info = IndexInfo.from_dict(state.get("index") or {})
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP if info.kind != "flat" else 0)
        except FileNotFoundError:
            continue
        except (OSError, RuntimeError, ValueError, TypeError):
            if not path.exists():  # FAISS says "could not open" when another save removed it
                continue
            return None
        out = VectorShard.from_index(dim, shard, metric, index, info, path.name)
        if index.ntotal != state.get("count") or index.d != dim:
            return None
        if (info.kind == "flat") != isinstance(index, faiss.IndexIDMap2):
            return None
        if out.mapped:
            ivf: Any = faiss.extract_index_ivf(index)
            if size < index.ntotal * (ivf.code_size + 8):  # the codes must be in this very file
                return None
        ids = out.ids()
        if len(np.unique(ids)) != len(ids):
            return None
        return out, int(state["generation"])
    return None


class ShardSnapshots:
    """One holder's view of its shard's folder: which snapshot it saved or looked at last, and
    whether another holder has written one since."""

    def __init__(self, spec: ShardSpec):
        self.spec = spec
        self.folder = spec.folder
        self.saved: int | None = None  # the generation of the snapshot on disk that we wrote or loaded
        self.error: str | None = None  # why the last lazy snapshot could not be written
        self._seen = 0  # mtime_ns of the snapshot state last looked at

    def load(self) -> tuple[VectorShard, int] | None:
        return load_snapshot(self.folder, self.spec.dim, self.spec.shard, self.spec.metric)

    def loaded(self, generation: int) -> None:
        """The snapshot on disk, at ``generation``, is the one this holder now holds."""
        self.saved = generation
        self.mark_seen()

    def mark_seen(self) -> None:
        self._seen = self._state_mtime()

    def _state_mtime(self) -> int:
        try:
            return (self.folder / STATE_FILE).stat().st_mtime_ns
        except OSError:
            return 0

    @contextmanager
    def rebuild_lock(self) -> Iterator[None]:
        """Held while rebuilding a shard without a usable snapshot: other holders wait for ours."""
        self.folder.mkdir(exist_ok=True)
        with exclusive(self.folder, timeout=REBUILD_WAIT_S):
            yield

    @contextmanager
    def build_lock(self) -> Iterator[bool]:
        """Whether this holder may build a new index type (no other holder is at it), for the block."""
        with try_exclusive(self.folder, "build.lock") as ours:
            yield ours

    def newer_type(self, ours: IndexInfo, generation: int) -> tuple[VectorShard, int] | None:
        """The snapshot another holder wrote since we last looked, if it is a newer build of at
        least our type, at or before ``generation`` (one written later is looked at next time)."""
        mtime = self._state_mtime()
        if mtime in (0, self._seen):
            return None
        state = read_state(self.folder)
        if state is None or int(state.get("generation", 0)) > generation:
            return None
        self._seen = mtime
        theirs = IndexInfo.from_dict(state.get("index") or {})
        if theirs.built_at <= ours.built_at or theirs.spec.rank < ours.spec.rank:
            return None
        loaded = self.load()
        if loaded is None or loaded[1] > generation:
            return None
        return loaded

    def current(
        self, ours: IndexInfo, generation: int, store_generation: Callable[[], int]
    ) -> tuple[VectorShard, int] | None:
        """The snapshot another holder wrote past ``generation`` at the store's own generation, if of
        at least our type: taken as it is, instead of replaying up to it."""
        state = read_state(self.folder)
        if state is None or int(state.get("generation", -1)) <= generation:
            return None
        if int(state["generation"]) != store_generation():
            return None
        theirs = IndexInfo.from_dict(state.get("index") or {})
        if theirs.spec.rank < ours.spec.rank:
            return None
        loaded = self.load()
        if loaded is None or loaded[1] != int(state["generation"]):
            return None
        self.loaded(loaded[1])
        return loaded

    def write(self, vectors: VectorShard, generation: int, lazy: bool) -> None:
        """Snapshot ``vectors`` at ``generation`` unless the one on disk is as new; ``lazy``: only
        once LAZY_FLUSH_GENERATIONS behind, and never waiting for another holder's lock (the
        search path). The caller keeps ``vectors`` from changing meanwhile."""
        saved = self.saved
        if generation == saved or (lazy and saved is not None and generation - saved < LAZY_FLUSH_GENERATIONS):
            return
        self.folder.mkdir(exist_ok=True)
        if lazy:
            with try_exclusive(self.folder, "lock") as ours:
                if ours:
                    self.save(vectors, generation)
            return
        with exclusive(self.folder):
            self.save(vectors, generation)

    def save(self, vectors: VectorShard, generation: int) -> None:
        """Write the snapshot unless the one on disk is newer; call under the shard's lock."""
        state = read_state(self.folder)
        on_disk = state["generation"] if state else None
        built = float(((state or {}).get("index") or {}).get("built_at", 0.0))
        if on_disk is not None and on_disk > generation:
            return  # another process saved a newer state: ours is written once we are newer again
        if on_disk != generation or vectors.info.built_at > built:
            try:
                save_snapshot(vectors, self.folder, generation)
            except OSError as e:
                raise StoreError(
                    f"the documents are committed, but the snapshot of shard {self.spec.shard} in "
                    f"{self.spec.workspace} could not be written ({e.strerror or e}); it is brought "
                    "forward when the workspace is next opened"
                ) from e
        self.saved = generation
        self.mark_seen()
        self.error = None
