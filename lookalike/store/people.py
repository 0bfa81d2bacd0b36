"""People in the doc store: each grouped face's person, the people (names, hidden, merged), and the
user's corrections, read and written for :mod:`lookalike.library.people`; part of :class:`DocStore`.

Every write bumps the generation (without touching the vector log), so whatever remembers what a
filter keeps (the shards' filter caches, listing totals) reads a ``person`` filter afresh.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from lookalike.errors import Conflict, NotFound
from lookalike.store.database import Database, decode_vector, encode_vector, in_batches, store_error
from lookalike.store.vector_log import bump_generation

BBox = tuple[int, int, int, int]


@dataclass
class GoneFace:
    """A grouped face whose chunk was deleted (its photo removed, or indexed again): where it was,
    whose it was, and the user's word on it."""

    face: int
    doc_id: str | None
    bbox: BBox | None
    person: int | None
    pinned: bool
    nobody: bool
    refused: list[int]


@dataclass
class GroupingState:
    """Everything the grouping knows, as stored, read at one moment: the grouped faces and their
    vectors, the faces not grouped yet (with their photo and box), and the grouped faces whose
    chunks are gone since."""

    ids: np.ndarray  # grouped faces (chunk ids)
    vectors: np.ndarray
    person: dict[int, int]
    degree: dict[int, int]
    pinned: dict[int, int]
    nobody: set[int]
    refused: set[tuple[int, int]]
    next_person: int
    new_ids: np.ndarray
    new_vectors: np.ndarray
    new_where: dict[int, tuple[str, BBox | None]] = field(default_factory=dict)  # face -> (doc id, box)
    gone: list[GoneFace] = field(default_factory=list)
    gone_vectors: np.ndarray | None = None


@dataclass
class PersonRow:
    """One person as listed: id, name, faces and photos, and the face that stands for them."""

    id: int
    name: str | None
    hidden: bool
    faces: int
    photos: int
    cover_face: int | None  # the face with the most neighbours: the most typical of them
    cover_doc: str | None
    cover_bbox: BBox | None


@dataclass
class FaceRow:
    """One face of a photo, with its person (if any) and that person's name."""

    face: int
    doc_id: str
    bbox: BBox | None
    person: int | None
    name: str | None
    pinned: bool
    nobody: bool


def _vectors(rows: list[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, dim), np.float32)
    return ids, np.stack([decode_vector(r[1]) for r in rows]).astype(np.float32)


class PeopleStore:
    """People and their faces; part of :class:`DocStore`."""

    _db: Database

    # --- the grouping's state -----------------------------------------------------------------

    def grouping_pending(self, slots: range) -> bool:
        """Whether a face in shards ``slots`` waits to be grouped, or a grouped one is gone (no
        vector read: most index runs of a photo library add no face)."""
        try:
            row = self._db.reader.execute(
                "SELECT EXISTS (SELECT 1 FROM faces_gone) OR EXISTS (SELECT 1 FROM chunks c WHERE c.shard BETWEEN ? "
                "AND ? AND c.kind = 'face' AND NOT EXISTS (SELECT 1 FROM face_people f WHERE f.chunk_id = c.id))",
                (slots.start, slots.stop - 1),
            ).fetchone()
        except sqlite3.Error as e:
            raise store_error(self._db.path, "read", e) from e
        return bool(row[0])

    def grouping_state(self, slots: range, dim: int) -> GroupingState:
        """The faces in shards ``slots`` (the faces space) as the grouping needs them, read in one
        transaction."""
        conn = self._db.reader
        try:
            conn.execute("BEGIN")
            try:
                return self._grouping_state(conn, slots, dim)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise store_error(self._db.path, "read", e) from e

    def _grouping_state(self, conn: sqlite3.Connection, slots: range, dim: int) -> GroupingState:
        new = conn.execute(
            "SELECT c.id, c.embedding, c.doc_id, c.bbox FROM chunks c WHERE c.shard BETWEEN ? AND ? "
            "AND c.kind = 'face' AND NOT EXISTS (SELECT 1 FROM face_people f WHERE f.chunk_id = c.id) ORDER BY c.id",
            (slots.start, slots.stop - 1),
        ).fetchall()
        gone = conn.execute(
            "SELECT chunk_id, embedding, doc_id, bbox, person_id, pinned, nobody, refused FROM faces_gone "
            "ORDER BY chunk_id"
        ).fetchall()
        new_ids, new_vectors = _vectors([(r[0], r[1]) for r in new], dim)
        state = GroupingState(
            np.zeros(0, np.int64), np.zeros((0, dim), np.float32), {}, {}, {}, set(), set(), 1, new_ids, new_vectors
        )
        state.new_where = {int(r[0]): (r[2], _box(r[3])) for r in new}
        state.gone = [
            GoneFace(int(r[0]), r[2], _box(r[3]), r[4], bool(r[5]), bool(r[6]), json.loads(r[7] or "[]")) for r in gone
        ]
        state.gone_vectors = _vectors([(r[0], r[1]) for r in gone], dim)[1]
        rows = conn.execute(
            "SELECT f.chunk_id, c.embedding, f.person_id, f.degree, f.pinned, f.nobody FROM face_people f "
            "JOIN chunks c ON c.id = f.chunk_id ORDER BY f.chunk_id"
        ).fetchall()
        state.ids, state.vectors = _vectors([(r[0], r[1]) for r in rows], dim)
        for face, _, person, degree, pinned, nobody in rows:
            state.degree[face] = int(degree)
            if person is not None:
                state.person[face] = int(person)
                if pinned:
                    state.pinned[face] = int(person)
            if nobody:
                state.nobody.add(face)
        state.refused = {(int(f), int(p)) for f, p in conn.execute("SELECT chunk_id, person_id FROM face_refusals")}
        state.next_person = _next_person(conn)
        return state

    def save_grouping(
        self,
        faces: dict[int, tuple[int | None, int, bool, bool]],
        state: GroupingState,
        refused: set[tuple[int, int]],
    ) -> None:
        """Write the grouping's changes in one transaction: ``faces`` (face -> person, degree,
        pinned, nobody) for faces whose chunks still exist, a row for every person they name, the
        refusals added, and the gone faces of ``state`` taken in. A new face whose chunk went
        meanwhile (its photo removed as it was grouped) is kept as gone, so that the next grouping
        takes it out of its neighbours' counts."""
        now = time.time()
        new = {int(f): v for f, v in zip(state.new_ids.tolist(), state.new_vectors, strict=True)}
        with self._db.transaction() as conn:
            people = sorted({p for p, _, _, _ in faces.values() if p is not None})
            conn.executemany("INSERT OR IGNORE INTO people (id, created_at) VALUES (?, ?)", [(p, now) for p in people])
            conn.executemany(
                "INSERT OR REPLACE INTO face_people (chunk_id, person_id, degree, pinned, nobody) "
                "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?)",
                [(f, p, d, int(pin), int(no), f) for f, (p, d, pin, no) in faces.items()],
            )
            vanished = [
                f for f in faces if f in new and not conn.execute("SELECT 1 FROM chunks WHERE id=?", (f,)).fetchone()
            ]
            conn.executemany(
                "INSERT OR IGNORE INTO faces_gone (chunk_id, embedding) VALUES (?, ?)",
                [(f, encode_vector(new[f])) for f in vanished],
            )
            for marks, part in in_batches([g.face for g in state.gone]):
                conn.execute(f"DELETE FROM faces_gone WHERE chunk_id IN ({marks})", part)
            added = sorted(refused - state.refused)
            conn.executemany(
                "INSERT OR IGNORE INTO face_refusals SELECT ?, ? "
                "WHERE EXISTS (SELECT 1 FROM face_people WHERE chunk_id = ?)",
                [(f, p, f) for f, p in added],
            )
            bump_generation(conn)

    # --- reading people -----------------------------------------------------------------------

    def list_people(self, min_faces: int, *, hidden: bool = False) -> list[PersonRow]:
        """The people shown: with ``min_faces`` faces or a name (and not hidden, unless
        ``hidden``), the most faces first."""
        sql = (
            "SELECT p.id, p.name, p.hidden, count(f.chunk_id), count(DISTINCT c.doc_id) FROM people p "
            "JOIN face_people f ON f.person_id = p.id JOIN chunks c ON c.id = f.chunk_id "
            "WHERE p.merged_into IS NULL GROUP BY p.id"
        )
        rows = self._db.reader.execute(sql).fetchall()
        named = self._db.reader.execute(
            "SELECT id, name, hidden FROM people WHERE merged_into IS NULL AND name IS NOT NULL"
        ).fetchall()
        counted = {r[0] for r in rows}
        rows += [(i, n, h, 0, 0) for i, n, h in named if i not in counted]  # a named person whose faces all went
        out = []
        for pid, name, is_hidden, faces, photos in rows:
            if (faces < min_faces and name is None) or (is_hidden and not hidden):
                continue
            out.append(PersonRow(int(pid), name, bool(is_hidden), int(faces), int(photos), *self._cover(int(pid))))
        out.sort(key=lambda p: (-p.faces, p.id))
        return out

    def _cover(self, person: int) -> tuple[int | None, str | None, BBox | None]:
        row = self._db.reader.execute(
            "SELECT f.chunk_id, c.doc_id, c.bbox FROM face_people f JOIN chunks c ON c.id = f.chunk_id "
            "WHERE f.person_id = ? ORDER BY f.degree DESC, f.chunk_id LIMIT 1",
            (person,),
        ).fetchone()
        if row is None:
            return None, None, None
        return int(row[0]), row[1], tuple(json.loads(row[2])) if row[2] else None

    def person_row(self, person: int | str) -> PersonRow:
        """One person, by id or name (a merged person's id leads to whom it was merged into)."""
        pid = self.resolve_person(person)
        conn = self._db.reader
        name, hidden = conn.execute("SELECT name, hidden FROM people WHERE id = ?", (pid,)).fetchone()
        faces, photos = conn.execute(
            "SELECT count(f.chunk_id), count(DISTINCT c.doc_id) FROM face_people f JOIN chunks c ON c.id = f.chunk_id "
            "WHERE f.person_id = ?",
            (pid,),
        ).fetchone()
        return PersonRow(pid, name, bool(hidden), int(faces), int(photos), *self._cover(pid))

    def resolve_person(self, person: int | str) -> int:
        """A person's id from its id or name; NotFound for neither."""
        conn = self._db.reader
        text = str(person).strip()
        if text.isascii() and text.isdigit() and len(text) <= 18:  # an id (SQLite's INTEGER holds 18 digits)
            pid: int | None = int(text)
            for _ in range(100):  # follow merges
                row = conn.execute("SELECT merged_into FROM people WHERE id = ?", (pid,)).fetchone()
                if row is None:
                    break
                if row[0] is None:
                    return int(pid)  # type: ignore[arg-type]
                pid = int(row[0])
        row = conn.execute(
            "SELECT id FROM people WHERE merged_into IS NULL AND name = ? COLLATE NOCASE", (text,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no person {text!r}: give a person's id or name (`lookalike people` lists them)")
        return int(row[0])

    def faces_of(self, doc_ids: Iterable[str]) -> dict[str, list[FaceRow]]:
        """The faces of these photos, largest first as found, with their people."""
        out: dict[str, list[FaceRow]] = {}
        for marks, part in in_batches(list(doc_ids)):
            sql = (
                "SELECT c.id, c.doc_id, c.bbox, f.person_id, p.name, f.pinned, f.nobody FROM chunks c "
                "LEFT JOIN face_people f ON f.chunk_id = c.id LEFT JOIN people p ON p.id = f.person_id "
                f"WHERE c.doc_id IN ({marks}) AND c.kind = 'face' ORDER BY c.id"
            )
            for cid, doc, bbox, person, name, pinned, nobody in self._db.reader.execute(sql, part):
                box = tuple(json.loads(bbox)) if bbox else None
                out.setdefault(doc, []).append(FaceRow(int(cid), doc, box, person, name, bool(pinned), bool(nobody)))
        return out

    def docs_of_person(self, person: int) -> list[str]:
        sql = (
            "SELECT DISTINCT c.doc_id FROM face_people f JOIN chunks c ON c.id = f.chunk_id "
            "WHERE f.person_id = ? ORDER BY c.doc_id"
        )
        return [r[0] for r in self._db.reader.execute(sql, (person,))]

    # --- the user's corrections ----------------------------------------------------------------

    def name_person(self, person: int, name: str | None) -> None:
        with self._db.transaction() as conn:
            _need_person(conn, person)
            if name is not None:
                other = conn.execute(
                    "SELECT id, name FROM people WHERE merged_into IS NULL AND name = ? COLLATE NOCASE AND id != ?",
                    (name, person),
                ).fetchone()
                if other is not None:
                    raise Conflict(
                        f"person {other[0]} is already named {other[1]!r}: if they are one person, merge person "
                        f"{person} into person {other[0]}",
                        "name taken",
                    )
            conn.execute("UPDATE people SET name = ? WHERE id = ?", (name, person))
            bump_generation(conn)

    def hide_person(self, person: int, hidden: bool) -> None:
        with self._db.transaction() as conn:
            _need_person(conn, person)
            conn.execute("UPDATE people SET hidden = ? WHERE id = ?", (int(hidden), person))
            bump_generation(conn)

    def merge_people(self, source: int, target: int) -> int:
        """Every face of ``source`` becomes ``target``'s (names: the target's, else the source's);
        how many faces moved."""
        if source == target:
            raise Conflict("a person cannot be merged into itself", "bad request")
        with self._db.transaction() as conn:
            names = {p: _need_person(conn, p) for p in (source, target)}
            moved = [r[0] for r in conn.execute("SELECT chunk_id FROM face_people WHERE person_id = ?", (source,))]
            conn.execute("UPDATE face_people SET person_id = ? WHERE person_id = ?", (target, source))
            conn.execute("UPDATE OR IGNORE face_refusals SET person_id = ? WHERE person_id = ?", (target, source))
            conn.execute("DELETE FROM face_refusals WHERE person_id = ?", (source,))
            for marks, part in in_batches(moved):
                conn.execute(
                    f"DELETE FROM face_refusals WHERE person_id = ? AND chunk_id IN ({marks})", [target, *part]
                )
            conn.execute("UPDATE people SET merged_into = ?, name = NULL WHERE id = ?", (target, source))
            if names[target] is None and names[source] is not None:
                conn.execute("UPDATE people SET name = ? WHERE id = ?", (names[source], target))
            bump_generation(conn)
        return len(moved)

    def move_face(self, face: int, person: int | None, *, new: bool = False) -> None:
        """The user says ``face`` is ``person``'s (None: nobody's; ``new``: someone new's); it never
        goes back to the person it was taken from."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT person_id FROM face_people WHERE chunk_id = ?", (face,)).fetchone()
            if row is None:
                raise NotFound(f"no face {face} (a face's id is its chunk id, as `lookalike people show` lists)")
            if new:
                person = _next_person(conn)
                conn.execute("INSERT INTO people (id, created_at) VALUES (?, ?)", (person, time.time()))
            elif person is not None:
                _need_person(conn, person)
            old = row[0]
            if old is not None and old != person:
                conn.execute("INSERT OR IGNORE INTO face_refusals VALUES (?, ?)", (face, old))
            if person is None:
                conn.execute(
                    "UPDATE face_people SET person_id = NULL, pinned = 0, nobody = 1 WHERE chunk_id = ?", (face,)
                )
            else:
                conn.execute("DELETE FROM face_refusals WHERE chunk_id = ? AND person_id = ?", (face, person))
                conn.execute(
                    "UPDATE face_people SET person_id = ?, pinned = 1, nobody = 0 WHERE chunk_id = ?", (person, face)
                )
            bump_generation(conn)


def _next_person(conn: sqlite3.Connection) -> int:
    """An id no person has had: past every person's, and every face's person (a grouping's)."""
    top = conn.execute(
        "SELECT max(m) FROM (SELECT max(id) AS m FROM people UNION ALL SELECT max(person_id) FROM face_people)"
    )
    return int(top.fetchone()[0] or 0) + 1


def _box(text: str | None) -> BBox | None:
    return tuple(json.loads(text)) if text else None


def _need_person(conn: sqlite3.Connection, person: int) -> str | None:
    """The person's name; NotFound unless ``person`` is one (not merged away)."""
    row = conn.execute("SELECT name, merged_into FROM people WHERE id = ?", (person,)).fetchone()
    if row is None:
        raise NotFound(f"no person {person} (`lookalike people` lists them)")
    if row[1] is not None:
        raise NotFound(f"person {person} was merged into person {row[1]}")
    return row[0]
