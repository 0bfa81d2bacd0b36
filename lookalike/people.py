"""Grouping faces into people: an incremental density rule over face descriptors, with person ids
that stay the same from run to run, and the user's corrections as facts the grouping never overrides.

The rule is DBSCAN's, run incrementally (Immich's "core faces" rule is the same idea):

- A face is *core* when at least ``min_faces - 1`` other faces lie within ``max_distance`` of it
  (Euclidean, on dlib's 128-d descriptors, where 0.6 is dlib's own same-person bound).
- A new face joins the person of its nearest core neighbour within the distance that has one.
- Otherwise a core face starts a person, which grows through its core neighbours (and takes in
  their unassigned neighbours) as DBSCAN's clusters do.
- Otherwise it stays unassigned, and is looked at again only when a face lands within the distance
  of it: never all unassigned faces on every run.
- A person is shown once it has ``min_faces`` faces, or a name.

Corrections: a face the user moved to a person stays there (``pin``); a face the user took from a
person is never linked to it again (``refuse``); merged people keep the id they were merged into.
:meth:`FaceGrouper.recluster` regroups everything from scratch and keeps them all, and gives each
new group the id most of its faces had before, so names stay with their people.

This module holds the rule and its state in memory; the numbers it was chosen by are measured in
``bench/people.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import faiss
import numpy as np

from lookalike.errors import BadInput, NotFound

# Up to this many faces, neighbours come from an exact search; beyond it, from an inverted-file
# index (faiss IVF, 4·√n lists, 16 probed): a face's neighbours within the distance lie in its own
# list or the next few, and an exact search of every new face against a million would take hours.
EXACT_UP_TO = 200_000
IVF_PROBES = 16


@dataclass(frozen=True)
class GroupingRule:
    """How close faces must be to be one person's, and how many make a person."""

    max_distance: float = 0.5
    min_faces: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.max_distance < 2:
            raise BadInput(f"max_distance must be between 0 and 2, got {self.max_distance}")
        if self.min_faces < 1:
            raise BadInput(f"min_faces must be at least 1, got {self.min_faces}")


@dataclass
class Changes:
    """What one call changed: faces given a person (face id -> person id), and people made."""

    assigned: dict[int, int] = field(default_factory=dict)
    new_people: list[int] = field(default_factory=list)


class FaceGrouper:
    """Faces (int64 ids, descriptors) grouped into people (int ids from 1)."""

    def __init__(self, dim: int = 128, rule: GroupingRule | None = None):
        self.rule = rule or GroupingRule()
        self.dim = dim
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        self.person: dict[int, int] = {}  # face -> person
        self.degree: dict[int, int] = {}  # face -> other faces within the distance
        self.pinned: dict[int, int] = {}  # face -> the person the user put it with
        self.nobody: set[int] = set()  # faces the user said are no one's: never grouped
        self.refused: set[tuple[int, int]] = set()  # (face, person) the user took apart
        self.next_person = 1

    @classmethod
    def restore(
        cls,
        ids: np.ndarray,
        vectors: np.ndarray,
        degree: dict[int, int],
        person: dict[int, int],
        *,
        pinned: dict[int, int] | None = None,
        nobody: set[int] | None = None,
        refused: set[tuple[int, int]] | None = None,
        next_person: int = 1,
        rule: GroupingRule | None = None,
    ) -> FaceGrouper:
        """A grouper as it was left (faces, their vectors and neighbour counts, people and
        corrections, as :mod:`lookalike.store.people` keeps them), without grouping anything again."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        grouper = cls(vectors.shape[1] if vectors.ndim == 2 and vectors.shape[1] else 128, rule)
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids):
            grouper._grow_index(vectors)
            grouper._index.add_with_ids(vectors, ids)
        grouper.degree = {int(f): int(degree.get(int(f), 0)) for f in ids}
        grouper.person = {f: p for f, p in person.items() if f in grouper.degree}
        grouper.pinned = {f: p for f, p in (pinned or {}).items() if f in grouper.degree}
        grouper.nobody = {f for f in nobody or set() if f in grouper.degree}
        grouper.refused = {(f, p) for f, p in refused or set() if f in grouper.degree}
        grouper.next_person = max([next_person, *(p + 1 for p in person.values())])
        return grouper

    # --- reading -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.degree)

    def people(self, shown_only: bool = True, named: Iterable[int] = ()) -> dict[int, list[int]]:
        """Person id -> its faces (sorted); only those with ``min_faces`` faces (or in ``named``)
        unless ``shown_only`` is False."""
        out: dict[int, list[int]] = {}
        for face, person in self.person.items():
            out.setdefault(person, []).append(face)
        keep = set(named)
        return {
            p: sorted(faces)
            for p, faces in sorted(out.items())
            if not shown_only or len(faces) >= self.rule.min_faces or p in keep
        }

    def _core(self, face: int) -> bool:
        return self.degree.get(face, 0) >= self.rule.min_faces - 1

    def _grow_index(self, coming: np.ndarray) -> None:
        """Before the ``coming`` vectors take the count past EXACT_UP_TO: move the faces into an
        IVF index trained on them (on the coming ones too)."""
        n = self._index.ntotal + len(coming)
        if n <= EXACT_UP_TO or not isinstance(self._index, faiss.IndexIDMap2):
            return
        ids = np.array(sorted(self.degree), dtype=np.int64)
        vectors = self._index.reconstruct_batch(ids) if len(ids) else np.empty((0, self.dim), np.float32)
        pool = np.vstack([vectors, coming])
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, int(4 * np.sqrt(n)))
        sample = np.random.default_rng(0).choice(len(pool), min(len(pool), 100 * ivf.nlist), replace=False)
        ivf.train(pool[np.sort(sample)])
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # by face id
        if len(ids):
            ivf.add_with_ids(vectors, ids)
        ivf.nprobe = IVF_PROBES
        self._index = ivf

    def _neighbours(self, vectors: np.ndarray) -> list[list[tuple[float, int]]]:
        """For each vector, the stored faces within the distance: (distance², face), nearest first."""
        if len(vectors) == 0 or self._index.ntotal == 0:
            return [[] for _ in range(len(vectors))]
        lims, dist, ids = self._index.range_search(np.ascontiguousarray(vectors, np.float32), self.rule.max_distance**2)
        return [
            sorted(zip(dist[lims[i] : lims[i + 1]].tolist(), ids[lims[i] : lims[i + 1]].tolist(), strict=True))
            for i in range(len(vectors))
        ]

    # --- writing -----------------------------------------------------------------------------

    def add(self, faces: Iterable[int], vectors: np.ndarray) -> Changes:
        """Take in new faces; group them, and the unassigned faces near them."""
        ids = np.fromiter(faces, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, np.float32).reshape(len(ids), self.dim)
        known = [int(f) for f in ids if int(f) in self.degree]
        if known:
            raise BadInput(f"faces already grouped: {known[:5]}")
        if len(set(ids.tolist())) != len(ids):
            raise BadInput("a face id is given twice")
        self._grow_index(vectors)
        self._index.add_with_ids(vectors, ids)
        near = self._neighbours(vectors)
        new, touched = set(ids.tolist()), set()
        for face, found in zip(ids.tolist(), near, strict=True):
            others = [n for _, n in found if n != face]
            self.degree[face] = len(others)  # the new faces see each other in their own searches
            for n in others:
                if n not in new:
                    self.degree[n] += 1
            touched.update(others)
        # Faces to (re)consider: the new ones, and the unassigned ones they landed near.
        todo = new | {f for f in touched if f not in self.person}
        return self._group(todo)

    def _group(self, todo: set[int]) -> Changes:
        changes = Changes()
        order = sorted(todo, key=lambda f: (not self._core(f), f))  # core faces first, as DBSCAN
        vectors = self._index.reconstruct_batch(np.array(order, dtype=np.int64)) if order else np.empty((0, self.dim))
        near = dict(zip(order, self._neighbours(vectors), strict=True))
        for face in order:
            if face in self.person or face in self.nobody:
                continue
            if face in self.pinned:
                self._assign(face, self.pinned[face], changes)
                continue
            found = [n for _, n in near[face] if n != face]
            # A face the user placed is an exception, not evidence: it draws no other face along.
            homes = (self.person[n] for n in found if n in self.person and n not in self.pinned and self._core(n))
            home = next((p for p in homes if self._allowed(face, p)), None)
            if home is None and self._core(face):
                home = self.next_person
                self.next_person += 1
                changes.new_people.append(home)
            if home is not None:
                self._assign(face, home, changes)
                if self._core(face):
                    self._expand(home, found, changes)
        return changes

    def _expand(self, person: int, found: list[int], changes: Changes) -> None:
        """DBSCAN's growth: unassigned neighbours of a core face join it, and core ones carry it
        on, wave by wave (each wave's neighbours in one range search)."""
        wave = found
        while wave:
            joined = []
            for face in dict.fromkeys(wave):
                if face in self.person or face in self.pinned or face in self.nobody or not self._allowed(face, person):
                    continue
                self._assign(face, person, changes)
                if self._core(face):
                    joined.append(face)
            if not joined:
                return
            vectors = self._index.reconstruct_batch(np.array(joined, dtype=np.int64))
            wave = [n for near in self._neighbours(vectors) for _, n in near if n not in self.person]

    def _allowed(self, face: int, person: int) -> bool:
        return (face, person) not in self.refused

    def _assign(self, face: int, person: int, changes: Changes) -> None:
        self.person[face] = person
        changes.assigned[face] = person

    def remove(self, faces: Iterable[int]) -> None:
        """Forget faces (their photos were removed); the people they were in keep their ids."""
        gone = [int(f) for f in faces if int(f) in self.degree]
        if not gone:
            return
        vectors = self._index.reconstruct_batch(np.array(gone, dtype=np.int64))
        for face, found in zip(gone, self._neighbours(vectors), strict=True):
            for _, n in found:
                if n != face and n in self.degree:
                    self.degree[n] -= 1
        ids = np.array(gone, dtype=np.int64)
        self._index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids)))  # both index kinds take it
        for face in gone:
            del self.degree[face]
            self.person.pop(face, None)
            self.pinned.pop(face, None)
            self.nobody.discard(face)
        self.refused = {(f, p) for f, p in self.refused if f in self.degree}

    def forget(self, vectors: np.ndarray) -> None:
        r"""Faces gone before they could be :meth:`remove`\ d here (another process removed their
        photos): their vectors, no longer held, are taken out of their neighbours' counts."""
        for found in self._neighbours(np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dim)):
            for _, n in found:
                if n in self.degree:
                    self.degree[n] = max(0, self.degree[n] - 1)

    # --- the user's corrections ----------------------------------------------------------------

    def _need(self, face: int) -> None:
        if face not in self.degree:
            raise NotFound(f"no such face: {face}")

    def move(self, face: int, person: int | None) -> None:
        """The user says ``face`` is ``person``'s (None: nobody's). Either way it never goes back
        to the person it was taken from."""
        self._need(face)
        if person is not None and not 1 <= person < self.next_person:  # one that lost its faces may take one back
            raise NotFound(f"no such person: {person}")
        old = self.person.pop(face, None)
        if old is not None and old != person:
            self.refused.add((face, old))
        self.pinned.pop(face, None)
        if person is None:
            self.nobody.add(face)
            return
        self.nobody.discard(face)
        self.refused.discard((face, person))
        self.pinned[face] = person
        self.person[face] = person

    def merge(self, source: int, target: int) -> int:
        """Every face of ``source`` becomes ``target``'s; how many."""
        faces = [f for f, p in self.person.items() if p == source]
        for p, have in ((source, faces), (target, target in self.person.values())):
            if not have:
                raise NotFound(f"no such person: {p}")
        for face in faces:
            self.person[face] = target
            if self.pinned.get(face) == source:
                self.pinned[face] = target
        moved = set(faces)
        self.refused = {(f, target if p == source else p) for f, p in self.refused}
        self.refused = {(f, p) for f, p in self.refused if not (p == target and f in moved)}
        return len(faces)

    def recluster(self) -> Changes:
        """Group every face afresh (the user's corrections kept), then give each new group the
        id most of its faces had, so that a person keeps its id and name."""
        before = dict(self.person)
        self.person = {f: p for f, p in before.items() if self.pinned.get(f) == p}
        changes = self._group(set(self.degree))
        fresh = set(changes.new_people)
        votes: Counter[tuple[int, int]] = Counter(
            (p, before[f]) for f, p in self.person.items() if p in fresh and f in before
        )
        # The largest agreements first: a big group keeps its old id (and name), not a fragment.
        taken: set[int] = set()  # a person's pinned faces do not keep its id from its group
        renamed: dict[int, int] = {}
        for (new, old), _ in votes.most_common():
            if new not in renamed and old not in taken:
                renamed[new] = old
                taken.add(old)
        if renamed:
            self.person = {f: renamed.get(p, p) for f, p in self.person.items()}
            changes.assigned = {f: renamed.get(p, p) for f, p in changes.assigned.items()}
            changes.new_people = [p for p in changes.new_people if p not in renamed]
        for face, person in list(self.person.items()):  # a refusal holds under the person's old id too
            if (face, person) in self.refused:
                del self.person[face]
                changes.assigned.pop(face, None)
        return changes
