"""People as the doc store keeps them, on synthetic faces committed as an index run commits them:
the grouping carried from process to process, faces removed or indexed again, races with other
writers, and what a person may be called. No model: the faces space holds made-up descriptors."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.errors import BadInput, NotFound
from lookalike.library.people import People
from lookalike.store.spaces import VectorSpace
from lookalike.store.workspace import Workspace, WorkspaceLayout

SPACES = {"image": VectorSpace("none", 8, "cosine", 1), "faces": VectorSpace("synthetic", 128, "l2", 2)}


def _person(seed: int, n: int, spread: float = 0.05) -> np.ndarray:
    """``n`` descriptors of one made-up person: a centre, faces within ``spread`` of it (dlib: the
    same person below 0.6, two people about 1 apart)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=128) / np.sqrt(256) * 1.4
    return (centre + rng.normal(size=(n, 128)) / np.sqrt(128) * spread).astype(np.float32)


def _commit(ws: Workspace, photos: dict[str, list[np.ndarray]], box: tuple[int, int, int, int] = (10, 10, 50, 50)):
    """Commit photos (doc id -> its faces' descriptors, each face at ``box`` moved along), as an
    index run would: a photo committed again replaces its chunks (new chunk ids)."""
    slots = ws.slots("faces")
    request = Request("index", [Document(id=d, uri=f"/photos/{d}.jpg", content_hash=d) for d in photos])
    for doc in request.docs:
        request.staged.doc_ids.append(doc.id)
        faces = [
            Chunk(kind="face", bbox=(box[0] + 100 * i, box[1], box[2], box[3]), embedding=v)
            for i, v in enumerate(photos[doc.id])
        ]
        request.staged.vectors[(doc.id, slots[shard_for(doc.id, 2)])] = faces
    ws.commit(request)


@pytest.fixture
def ws(tmp_path):
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(SPACES)) as workspace:
        yield workspace


def _face_of(ws: Workspace, doc: str) -> int:
    return People(ws).faces([doc])[doc][0].face


def test_a_photo_indexed_again_keeps_its_faces_corrections_and_person(ws):
    ann, bob = _person(1, 4), _person(2, 4)
    _commit(ws, {f"a{i}": [v] for i, v in enumerate(ann)} | {f"b{i}": [v] for i, v in enumerate(bob)})
    people = People(ws)
    people.update()
    ann_id = people.faces(["a0"])["a0"][0].person
    people.name(ann_id, "Ann")
    people.move(_face_of(ws, "a3"), None)  # "not Ann, and nobody"
    # Every photo of Ann indexed again (say a tool wrote a tag into each): new chunks, the same faces.
    _commit(ws, {f"a{i}": [v + 0.001] for i, v in enumerate(ann)})
    report = people.update()
    assert report.gone_faces == 4 and report.new_faces == 4 and report.new_people == 0
    again = {d: people.faces([d])[d][0] for d in ("a0", "a1", "a2", "a3")}
    assert {f.person for d, f in again.items() if d != "a3"} == {ann_id}
    assert again["a3"].person is None and again["a3"].nobody  # the user's word outlives the chunk
    assert [(p.row.name, p.row.faces) for p in people.list() if p.row.name] == [("Ann", 3)]


def test_regrouping_faces_nobody_grouped_yet_gives_every_person_a_row(ws):
    _commit(ws, {f"a{i}": [v] for i, v in enumerate(_person(1, 4))})
    people = People(ws)
    people.update()
    _commit(ws, {f"b{i}": [v] for i, v in enumerate(_person(2, 4))})  # committed, not grouped yet
    people.recluster()
    listed = people.list()
    assert sorted(p.row.faces for p in listed) == [4, 4]
    bob = people.faces(["b0"])["b0"][0].person
    people.name(bob, "Bob")  # a person of the regrouping can be named
    moved = people.move(_face_of(ws, "a0"), "new")
    assert moved.person not in {p.row.id for p in listed}  # someone new is new


def test_a_face_removed_while_it_is_grouped_leaves_no_count_behind(ws, monkeypatch):
    vectors = _person(1, 4)
    _commit(ws, {f"a{i}": [v] for i, v in enumerate(vectors)})
    people = People(ws)
    store = ws.store
    real_save = store.save_grouping

    def save_after_a_removal(*args, **kwargs):  # another process removes a3 while this one groups
        request = Request("delete", [Document(id="a3")])
        request.staged.deletes.append("a3")
        ws.commit(request)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(store, "save_grouping", save_after_a_removal)
    people.update()
    monkeypatch.undo()
    people.update()  # takes the face that went out of its neighbours' counts
    state = store.grouping_state(ws.slots("faces"), 128)
    assert sorted(state.degree.values()) == [2, 2, 2] and state.gone == []


def test_what_a_person_may_be_called_and_what_names_no_one(ws):
    _commit(ws, {f"a{i}": [v] for i, v in enumerate(_person(1, 3))})
    people = People(ws)
    people.update()
    pid = people.list()[0].row.id
    for name in ("12", "new", "None"):
        with pytest.raises(BadInput, match="a name cannot be"):
            people.name(pid, name)
    assert people.name(pid, " Ann\u200b\x07  Lee ").row.name == "Ann Lee"  # invisible characters dropped
    for reference in ("²", "9" * 25, "Nobody"):
        with pytest.raises(NotFound, match="no person"):
            people.person(reference)
    before = ws.store.grouping_state(ws.slots("faces"), 128).next_person
    with pytest.raises(NotFound, match="no face 999"):
        people.move(999, "new")
    assert ws.store.grouping_state(ws.slots("faces"), 128).next_person == before  # no one made for nothing


def test_a_search_of_whole_photos_asks_for_no_more_than_their_own_chunks(ws):
    _commit(ws, {"group": list(_person(1, 6))})  # six faces, no whole-photo chunk
    assert ws.max_chunks_per_doc("faces") == 6 and ws.max_chunks_per_doc("image") == 1
