"""People: the faces of a workspace's ``faces`` space grouped into people, named and corrected.

Grouping is incremental (:mod:`lookalike.people` holds the rule): after an index run, the faces
committed since the last grouping join people, and the faces of removed photos leave their
neighbours' counts; nothing else is looked at again. The grouping's state lives in the doc store
(:mod:`lookalike.store.people`), so any process (the CLI, a server, the watcher) carries on where
another left off. One process groups at a time (the workspace's ``people.lock``); the user's
corrections take the same lock, so they never cross a grouping half-way.

The user's corrections are facts the grouping never overrides: a name, a merge, a face moved to
someone (pinned) or to nobody, and a face taken from a person, which is never linked to it again.
"""

from __future__ import annotations

import builtins
import dataclasses
import time
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from lookalike.errors import BadInput, NotFound
from lookalike.filters import Filters
from lookalike.people import FaceGrouper, GroupingRule
from lookalike.store.locks import exclusive
from lookalike.store.people import FaceRow, GroupingState, PersonRow
from lookalike.store.spaces import FACES
from lookalike.store.workspace import Workspace

# The rule measured on dlib's labelled faces and group photos (docs/benchmarks.md, "Grouping faces
# into people"): every pair of one person's faces lay within 0.561, every two people's over 0.607,
# and from 0.45 to 0.6 with at least 3 faces the grouping was exact; 0.5 sits in the middle.
RULE = GroupingRule(max_distance=0.5, min_faces=3)
LOCK = "people.lock"


@dataclass
class GroupingReport:
    """What one grouping did."""

    new_faces: int = 0
    gone_faces: int = 0
    assigned: int = 0  # faces given a person
    new_people: int = 0
    people: int = 0  # people shown now
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Person:
    """A person as the front ends show them: the list entry, and their photos when asked."""

    row: PersonRow
    photos: list[str] | None = None  # document ids

    def to_dict(self) -> dict[str, Any]:
        r = self.row
        out: dict[str, Any] = {
            "id": r.id,
            "name": r.name,
            "hidden": r.hidden,
            "faces": r.faces,
            "photos": r.photos,
            "cover": {
                "face": r.cover_face,
                "doc_id": r.cover_doc,
                "bbox": list(r.cover_bbox) if r.cover_bbox else None,
            },
        }
        if self.photos is not None:
            out["photo_ids"] = self.photos
        return out


class People:
    """The people of one workspace (see the module)."""

    def __init__(self, workspace: Workspace, rule: GroupingRule = RULE):
        self.workspace, self.rule = workspace, rule

    @property
    def available(self) -> bool:
        return FACES in self.workspace.spaces

    def _need(self) -> None:
        if not self.available:  # no person can be found here
            raise NotFound(
                "this workspace holds no faces: index it with faces (`lookalike index --reset --faces PATH`)"
            )

    # --- grouping -----------------------------------------------------------------------------

    def update(self) -> GroupingReport:
        """Group the faces committed since the last grouping, and let the gone ones go."""
        self._need()
        start = time.perf_counter()
        ws = self.workspace
        with exclusive(ws.path, name=LOCK):
            slots, dim = ws.slots(FACES), ws.space(FACES).dim
            if not ws.writer:
                raise BadInput("grouping faces into people needs write access to the workspace", "read-only")
            peek = ws.store.grouping_state(slots, dim, grouped=False)
            if not len(peek.new_ids) and not peek.gone_ids:
                return GroupingReport(people=len(self.list()), seconds=time.perf_counter() - start)
            state = ws.store.grouping_state(slots, dim)
            grouper = self._restore(state)
            changes = grouper.add(state.new_ids.tolist(), state.new_vectors)
            changed = {int(f) for f in state.new_ids} | set(changes.assigned)
            changed |= {f for f, d in grouper.degree.items() if d != state.degree.get(f)}
            ws.store.save_grouping(_rows(grouper, changed), changes.new_people, state.gone_ids)
        return GroupingReport(
            new_faces=len(state.new_ids),
            gone_faces=len(state.gone_ids),
            assigned=len(changes.assigned),
            new_people=len(changes.new_people),
            people=len(self.list()),
            seconds=time.perf_counter() - start,
        )

    def recluster(self) -> GroupingReport:
        """Group every face afresh; names, merges and the user's corrections are kept (see
        :meth:`lookalike.people.FaceGrouper.recluster`)."""
        self._need()
        start = time.perf_counter()
        ws = self.workspace
        with exclusive(ws.path, name=LOCK):
            state = ws.store.grouping_state(ws.slots(FACES), ws.space(FACES).dim)
            grouper = self._restore(state)
            grouper.add(state.new_ids.tolist(), state.new_vectors)
            changes = grouper.recluster()
            rows = _rows(grouper, set(grouper.degree))
            ws.store.save_grouping(rows, changes.new_people, state.gone_ids, refused=grouper.refused)
        return GroupingReport(
            new_faces=len(state.new_ids),
            gone_faces=len(state.gone_ids),
            assigned=len(changes.assigned),
            new_people=len(changes.new_people),
            people=len(self.list()),
            seconds=time.perf_counter() - start,
        )

    def _restore(self, state: GroupingState) -> FaceGrouper:
        grouper = FaceGrouper.restore(
            state.ids,
            state.vectors,
            state.degree,
            state.person,
            pinned=state.pinned,
            nobody=state.nobody,
            refused=state.refused,
            next_person=state.next_person,
            rule=self.rule,
        )
        if state.gone_ids and state.gone_vectors is not None:
            grouper.forget(state.gone_vectors)
        return grouper

    # --- reading ------------------------------------------------------------------------------

    def list(self, *, hidden: bool = False) -> builtins.list[Person]:
        """The people shown (with the rule's minimum of faces, or a name), the most faces first."""
        if not self.available:
            return []
        return [Person(row) for row in self.workspace.store.list_people(self.rule.min_faces, hidden=hidden)]

    def person(self, person: int | str) -> Person:
        """One person, by id or name, with their photos."""
        self._need()
        store = self.workspace.store
        row = store.person_row(person)
        return Person(row, store.docs_of_person(row.id))

    def faces(self, doc_ids: builtins.list[str]) -> dict[str, builtins.list[FaceRow]]:
        """The faces of these photos, each with its person."""
        return self.workspace.store.faces_of(doc_ids) if self.available else {}

    def resolve(self, person: int | str) -> int:
        self._need()
        return self.workspace.store.resolve_person(person)

    def check(self, filters: Filters) -> Filters:
        """``filters`` with each person named by id, followed through merges (a NotFound names a
        person there is none of, so a search for nobody never quietly finds nothing)."""
        if not filters.people:
            return filters
        ids = tuple(str(self.resolve(p)) for p in filters.people)
        return dataclasses.replace(filters, people=ids)

    # --- the user's corrections ----------------------------------------------------------------

    def name(self, person: int | str, name: str | None) -> Person:
        """Name a person (None or blank: take the name away). Two people never share a name."""
        if name is not None:  # control and invisible characters dropped, spaces tidied
            name = " ".join("".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs")).split())
            if not name:
                name = None
            elif len(name) > 200:
                raise BadInput(f"a name is at most 200 characters, not {len(name)}", "bad name")
        with self._corrections():
            pid = self.resolve(person)
            self.workspace.store.name_person(pid, name)
        return self.person(pid)

    def merge(self, source: int | str, target: int | str) -> Person:
        """Every face of ``source`` becomes ``target``'s; the target keeps its id (and its name, or
        takes the source's)."""
        with self._corrections():
            a, b = self.resolve(source), self.resolve(target)
            self.workspace.store.merge_people(a, b)
        return self.person(b)

    def move(self, face: int, person: int | str | None) -> FaceRow:
        """Face ``face`` is ``person``'s ("new": a new person's; None: nobody's)."""
        with self._corrections():
            store = self.workspace.store
            if person == "new":
                pid: int | None = store.new_person()
            else:
                pid = None if person is None else self.resolve(person)
            store.move_face(int(face), pid)
            doc = store.chunk_info([int(face)])[int(face)][0]
        return next(f for f in store.faces_of([doc])[doc] if f.face == int(face))

    def hide(self, person: int | str, hidden: bool = True) -> Person:
        with self._corrections():
            pid = self.resolve(person)
            self.workspace.store.hide_person(pid, hidden)
        return self.person(pid)

    def _corrections(self) -> Any:
        """The people lock, after the faces are grouped: a correction acts on today's people."""
        self._need()
        if not self.workspace.writer:
            raise BadInput("correcting people needs write access to the workspace", "read-only")
        self.update()
        return exclusive(self.workspace.path, name=LOCK)


def _rows(grouper: FaceGrouper, faces: set[int]) -> dict[int, tuple[int | None, int, bool, bool]]:
    return {
        f: (grouper.person.get(f), grouper.degree[f], f in grouper.pinned, f in grouper.nobody)
        for f in faces
        if f in grouper.degree
    }
