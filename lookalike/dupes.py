"""Near-duplicate and exact-duplicate images in a workspace.

Exact duplicates share a content hash (the same bytes). Near duplicates are found with a range
search on the vector shards: every document's whole-image vector asks each shard for all chunks
with cosine similarity at least ``threshold``, and union-find joins the pairs into groups across
shards. Each set of exact copies counts once among the near duplicates (its first file stands for
it), so a near-duplicate group lists each distinct image once.

Within a group the file to keep (the suggested keeper) comes first: the largest pixel size (width
times height), then the most camera-recorded metadata (:func:`metadata_count`: a camera date taken,
make, model, lens, exposure, GPS, ...; an exported copy usually loses them), then the oldest (date
taken, else the file's mtime), then the path. Every other file carries its cosine similarity to that
first one, and is at least ``threshold`` from it: a chain of look-alikes (A like B, B like C, A not
like C) is split so that no group lists a file below the threshold it states.

Look-alikes that are distinct shots, the frames of a burst, are not near duplicates however close
their vectors: :mod:`lookalike.bursts` tells them apart from edited copies (by the camera's clock,
then by the pixels), and the report counts the pairs it set aside.

The threshold is by default the workspace's near-duplicate floor, the same one search results are
badged ``near_duplicate`` from (:attr:`lookalike.relevance.Calibration.near_floor`): one meaning of
"near duplicate" everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.bursts import ShotJudge
from lookalike.errors import ConfigError
from lookalike.metadata import local_time
from lookalike.store.docstore import StoredDoc
from lookalike.store.workspace import Workspace

# Queries per range search: bounds the result buffers FAISS allocates at once.
_QUERY_BLOCK = 1024


@dataclass
class DupeFile:
    path: str
    doc_id: str
    similarity: float  # cosine similarity to the group's first file (1.0 for the first)
    width: int | None
    height: int | None
    size: int | None
    mtime_ns: int | None
    taken: str | None = None  # the date taken (ISO 8601), or the file's mtime without one

    def to_dict(self) -> dict[str, Any]:
        out = {"doc_id": self.doc_id, "path": self.path, "width": self.width, "height": self.height}
        return out | {"bytes": self.size, "similarity": round(self.similarity, 4), "taken": self.taken}


@dataclass
class DupeGroup:
    files: list[DupeFile]
    similarity: float  # the lowest similarity of any file to the first
    content_hash: str | None = None  # exact groups only

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def kind(self) -> str:
        return "exact" if self.content_hash is not None else "near"

    @property
    def keep(self) -> DupeFile:
        """The suggested keeper (see the module docstring)."""
        return self.files[0]

    @property
    def others(self) -> list[DupeFile]:
        """Every file but the keeper: what resolving the group moves or removes."""
        return self.files[1:]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "size": len(self.files), "keep": self.keep.doc_id}
        out |= {"similarity": round(self.similarity, 4), "paths": self.paths}
        if self.content_hash is not None:
            out |= {"content_hash": self.content_hash, "bytes": self.files[0].size}
        return out | {"files": [f.to_dict() for f in self.files]}


@dataclass
class DupeReport:
    threshold: float
    docs: int
    exact: list[DupeGroup] = field(default_factory=list)
    near: list[DupeGroup] = field(default_factory=list)
    distinct_shots: int = 0  # look-alike pairs within the threshold set aside as a burst's frames

    @property
    def groups(self) -> list[DupeGroup]:
        """Every group, the exact copies first."""
        return self.exact + self.near

    @property
    def redundant_exact(self) -> int:
        """Files that could go without losing any content: all but one of each exact group."""
        return sum(len(g.files) - 1 for g in self.exact)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "docs": self.docs,
            "exact": [g.to_dict() for g in self.exact],
            "near": [g.to_dict() for g in self.near],
            "distinct_shots": self.distinct_shots,
        }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def metadata_count(doc: StoredDoc) -> int:
    """How many fields the camera recorded: its date taken (not the file's mtime), make, model, lens,
    focal length, exposure, aperture, ISO and position. Orientation is left out: software writes it."""
    m = doc.meta
    fields = (m.make, m.model, m.lens, m.focal_mm, m.exposure_s, m.f_number, m.iso, m.lat)
    return (m.taken_from == "exif" and m.taken_at is not None) + sum(v is not None for v in fields)


def _taken(doc: StoredDoc) -> str | None:
    """The date taken, else the file's mtime, as local ISO 8601 (comparable as text)."""
    return doc.meta.taken_at if doc.meta.taken_from == "exif" else local_time(doc.mtime_ns) or doc.meta.taken_at


def _keep_order(doc: StoredDoc) -> tuple:
    """The suggested keeper first: the most pixels, the most metadata, the oldest, the path."""
    pixels = (doc.width or 0) * (doc.height or 0)
    taken = _taken(doc)
    return (-pixels, -metadata_count(doc), taken is None, taken or "", doc.uri or "", doc.id)


def _file(doc: StoredDoc, similarity: float) -> DupeFile:
    return DupeFile(doc.uri or doc.id, doc.id, similarity, doc.width, doc.height, doc.size, doc.mtime_ns, _taken(doc))


def _sort_groups(groups: list[DupeGroup]) -> list[DupeGroup]:
    return sorted(groups, key=lambda g: (-len(g.files), -g.similarity, g.files[0].path))


def find_duplicates(workspace: Workspace, threshold: float) -> DupeReport:
    """Exact and near-duplicate groups among the workspace's documents (see the module docstring)."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"--threshold is a cosine similarity in (0, 1], got {threshold}")
    docs = {d.id: d for d in workspace.store.iter_docs()}
    exact, stand_in = _exact_groups(docs)
    near, distinct = _near_groups(workspace, docs, stand_in, threshold)
    return DupeReport(threshold, len(docs), _sort_groups(exact), _sort_groups(near), distinct)


def _exact_groups(docs: dict[str, StoredDoc]) -> tuple[list[DupeGroup], dict[str, str]]:
    """Groups of the same bytes, and for each copy the doc id that stands for its group among the
    near duplicates."""
    by_hash: dict[str, list[StoredDoc]] = {}
    for doc in docs.values():
        if doc.content_hash:
            by_hash.setdefault(doc.content_hash, []).append(doc)
    groups: list[DupeGroup] = []
    stand_in: dict[str, str] = {}
    for content_hash, copies in by_hash.items():
        if len(copies) < 2:
            continue
        copies.sort(key=_keep_order)
        for c in copies:
            stand_in[c.id] = copies[0].id
        groups.append(DupeGroup([_file(c, 1.0) for c in copies], 1.0, content_hash))
    return groups, stand_in


def _near_groups(
    workspace: Workspace, docs: dict[str, StoredDoc], stand_in: dict[str, str], threshold: float
) -> tuple[list[DupeGroup], int]:
    """Groups of distinct images whose whole vectors are within ``threshold`` of one another, and
    how many pairs within it were set aside as distinct shots."""
    doc_ids, vectors = workspace.store.vectors_by_doc(workspace.dim)
    rows = [i for i, d in enumerate(doc_ids) if stand_in.get(d, d) == d and d in docs]
    query_ids = [doc_ids[i] for i in rows]
    joined = _join_in_range(workspace, docs, stand_in, query_ids, vectors[rows], threshold)
    vector_of = {d: vectors[i] for i, d in enumerate(doc_ids)}
    members: dict[str, list[str]] = {}
    for d in query_ids:
        members.setdefault(joined.find(d), []).append(d)
    groups: list[DupeGroup] = []
    shots, distinct = ShotJudge(), 0
    for ids in members.values():
        remaining = sorted((docs[i] for i in ids), key=_keep_order)
        while len(remaining) >= 2:  # the best file to keep, and what is within threshold of it
            keeper, rest = remaining[0], remaining[1:]
            sims = np.minimum(np.stack([vector_of[d.id] for d in rest]) @ vector_of[keeper.id], 1.0).tolist()
            within = [s >= threshold for s in sims]
            burst = [w and shots.distinct(keeper, d) for d, w in zip(rest, within, strict=True)]
            distinct += sum(burst)
            close = [(d, s) for d, s, w, b in zip(rest, sims, within, burst, strict=True) if w and not b]
            if close:
                files = [_file(keeper, 1.0)] + [_file(d, s) for d, s in close]
                groups.append(DupeGroup(files, min(s for _, s in close)))
            remaining = [d for d, w, b in zip(rest, within, burst, strict=True) if b or not w]
    return groups, distinct


def _join_in_range(
    workspace: Workspace,
    docs: dict[str, StoredDoc],
    stand_in: dict[str, str],
    query_ids: list[str],
    queries: np.ndarray,
    threshold: float,
) -> _UnionFind:
    """Each query's range search on every shard, its hits joined to it (a copy by its stand-in)."""
    store = workspace.store
    joined = _UnionFind()
    shards = workspace.shard_indexes(next(iter(workspace.spaces)))  # read here, as their pods would open them
    try:
        for start in range(0, len(query_ids), _QUERY_BLOCK):
            block = queries[start : start + _QUERY_BLOCK]
            for shard in shards:
                lims, _scores, hit_ids = shard.range_search(block, threshold)
                if len(hit_ids) == 0:
                    continue
                owner = {cid: info[0] for cid, info in store.chunk_info(set(hit_ids.tolist())).items()}
                for q in range(len(block)):
                    me = query_ids[start + q]
                    for cid in hit_ids[lims[q] : lims[q + 1]].tolist():
                        other = owner.get(cid)
                        if other is None or other not in docs:
                            continue  # removed since the shard was built
                        other = stand_in.get(other, other)
                        if other != me:
                            joined.union(me, other)
    finally:
        for shard in shards:
            shard.close(flush=False)
    return joined
