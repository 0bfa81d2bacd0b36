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
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from lookalike.errors import BadInput, Conflict, NotFound
from lookalike.filters import Filters
from lookalike.people import Changes, FaceGrouper, GroupingRule
from lookalike.store.locks import exclusive
from lookalike.store.people import BBox, FaceRow, GoneFace, GroupingState, PersonRow
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

    def _need_writer(self) -> None:
        self._need()
        if not self.workspace.writer:
            raise BadInput("grouping faces into people needs write access to the workspace", "read-only")

    def _need(self) -> None:
        if not self.available:  # no person can be found here
            raise NotFound(
                "this workspace holds no faces: index it with faces (`lookalike index --reset --faces PATH`)"
            )

    # --- grouping -----------------------------------------------------------------------------

    def update(self) -> GroupingReport:
        """Group the faces committed since the last grouping, and let the gone ones go. A photo
        indexed again gives its new faces the corrections and people of its old ones."""
        self._need_writer()
        start = time.perf_counter()
        ws = self.workspace
        with exclusive(ws.path, name=LOCK):
            slots, dim = ws.slots(FACES), ws.space(FACES).dim
            if not ws.store.grouping_pending(slots):
                return GroupingReport(people=len(self.list()), seconds=time.perf_counter() - start)
            state = ws.store.grouping_state(slots, dim)
            grouper, inherit = self._prepare(state)
            changes = grouper.add(state.new_ids.tolist(), state.new_vectors)
            _inherit(grouper, inherit, changes)
            changed = {int(f) for f in state.new_ids} | set(changes.assigned)
            changed |= {f for f, d in grouper.degree.items() if d != state.degree.get(f)}
            ws.store.save_grouping(_rows(grouper, changed), state, grouper.refused)
        return self._report(state, changes, start)

    def recluster(self) -> GroupingReport:
        """Group every face afresh; names, merges and the user's corrections are kept (see
        :meth:`lookalike.people.FaceGrouper.recluster`)."""
        self._need_writer()
        start = time.perf_counter()
        ws = self.workspace
        with exclusive(ws.path, name=LOCK):
            state = ws.store.grouping_state(ws.slots(FACES), ws.space(FACES).dim)
            grouper, inherit = self._prepare(state)
            _inherit(grouper, inherit, grouper.add(state.new_ids.tolist(), state.new_vectors))
            changes = grouper.recluster()
            ws.store.save_grouping(_rows(grouper, set(grouper.degree)), state, grouper.refused)
        return self._report(state, changes, start)

    def _report(self, state: GroupingState, changes: Changes, start: float) -> GroupingReport:
        return GroupingReport(
            new_faces=len(state.new_ids),
            gone_faces=len(state.gone),
            assigned=len(changes.assigned),
            new_people=len(changes.new_people),
            people=len(self.list()),
            seconds=time.perf_counter() - start,
        )

    def _prepare(self, state: GroupingState) -> tuple[FaceGrouper, dict[int, int]]:
        """The grouper as stored, the gone faces out of their neighbours' counts, and each new face
        that takes a gone one's place (the same photo indexed again, a face in the same place) given
        its corrections; the people such faces were in, to go back to (face -> person)."""
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
        if state.gone and state.gone_vectors is not None:
            grouper.forget(state.gone_vectors)
        inherit: dict[int, int] = {}
        for face, (doc, box) in state.new_where.items():
            twin = _twin(state.gone, doc, box)
            if twin is None:
                continue
            grouper.refused |= {(face, p) for p in twin.refused}
            if twin.nobody:
                grouper.nobody.add(face)
            elif twin.pinned and twin.person is not None:
                grouper.pinned[face] = twin.person
            elif twin.person is not None:
                inherit[face] = twin.person
        return grouper, inherit

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
            elif (name.isascii() and name.isdigit()) or name.lower() in ("new", "none"):
                raise Conflict(
                    f"a name cannot be {name!r}: a number names a person by id, 'new' someone new and 'none' nobody",
                    "bad name",
                )
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
            new = isinstance(person, str) and person.strip().lower() == "new"
            pid = None if person is None or new else self.resolve(person)
            store.move_face(int(face), pid, new=new)
            doc = store.chunk_info([int(face)])[int(face)][0]
        return next(f for f in store.faces_of([doc])[doc] if f.face == int(face))

    def hide(self, person: int | str, hidden: bool = True) -> Person:
        with self._corrections():
            pid = self.resolve(person)
            self.workspace.store.hide_person(pid, hidden)
        return self.person(pid)

    def _corrections(self) -> Any:
        """The people lock, after the faces are grouped: a correction acts on today's people."""
        self.update()
        return exclusive(self.workspace.path, name=LOCK)


def _twin(gone: builtins.list[GoneFace], doc: str, box: BBox | None) -> GoneFace | None:
    """The gone face of photo ``doc`` whose box overlaps ``box`` most (intersection over union at
    least 0.5): the same face, its photo indexed again."""
    best, best_iou = None, 0.5
    for g in gone:
        if g.doc_id == doc and g.bbox is not None and box is not None:
            iou = _iou(g.bbox, box)
            if iou >= best_iou:
                best, best_iou = g, iou
    return best


def _iou(a: BBox, b: BBox) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _inherit(grouper: FaceGrouper, inherit: dict[int, int], changes: Changes) -> None:
    """Faces of photos indexed again go back to their people: a person the grouping just made of
    them goes back whole (with any new face that joined it), a face left alone goes back by itself."""
    born = set(changes.new_people)
    votes = Counter((grouper.person[f], p) for f, p in inherit.items() if grouper.person.get(f) in born)
    back: dict[int, int] = {}
    for (made, old), _ in votes.most_common():
        back.setdefault(made, old)
    for face, person in list(grouper.person.items()):
        target = back.get(person)
        if target is not None and face not in grouper.pinned and (face, target) not in grouper.refused:
            grouper.person[face] = changes.assigned[face] = target
    for face, old in inherit.items():
        if face not in grouper.person and face not in grouper.nobody and (face, old) not in grouper.refused:
            grouper.person[face] = changes.assigned[face] = old
    changes.new_people = [p for p in changes.new_people if p not in back]


def _rows(grouper: FaceGrouper, faces: set[int]) -> dict[int, tuple[int | None, int, bool, bool]]:
    return {
        f: (grouper.person.get(f), grouper.degree[f], f in grouper.pinned, f in grouper.nobody)
        for f in faces
        if f in grouper.degree
    }
