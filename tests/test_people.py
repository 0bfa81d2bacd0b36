"""Grouping faces into people (lookalike.people): the density rule, incremental runs, stable ids and
the user's corrections. Descriptors are synthetic here (tight groups far apart, on dlib's scale);
real faces are measured in bench/people.py."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.errors import BadInput, NotFound
from lookalike.people import FaceGrouper, GroupingRule

DIM = 128


def _groups(n_people: int, per_person: int, seed: int = 0, spread: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of ``n_people`` people, ``per_person`` each: centres about 1 apart, faces within
    ``spread`` of their centre (dlib: the same person below 0.6). Returns (vectors, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, DIM)) / np.sqrt(2 * DIM) * 1.4
    labels = np.repeat(np.arange(n_people), per_person)
    noise = rng.normal(size=(len(labels), DIM)) / np.sqrt(DIM) * spread
    return (centres[labels] + noise).astype(np.float32), labels


def _partition(g: FaceGrouper) -> set[frozenset[int]]:
    return {frozenset(faces) for faces in g.people(shown_only=False).values()}


def test_tight_groups_become_people_and_a_stray_face_stays_unassigned():
    vectors, labels = _groups(5, 11)
    stray = np.full((1, DIM), 3.0, np.float32)
    g = FaceGrouper(DIM, GroupingRule(max_distance=0.5, min_faces=3))
    changes = g.add(range(56), np.vstack([vectors, stray]))
    assert len(changes.new_people) == 5
    expected = {frozenset(np.flatnonzero(labels == p).tolist()) for p in range(5)}
    assert _partition(g) == expected
    assert 55 not in g.person


def test_adding_in_batches_gives_the_same_people_as_all_at_once():
    vectors, _ = _groups(6, 8, seed=1)
    order = np.random.default_rng(2).permutation(len(vectors))
    whole = FaceGrouper(DIM)
    whole.add(range(len(vectors)), vectors)
    parts = FaceGrouper(DIM)
    for chunk in np.array_split(order, 5):
        parts.add(chunk.tolist(), vectors[chunk])
    assert _partition(parts) == _partition(whole)


def test_faces_too_few_to_be_a_person_wait_until_one_lands_near_them():
    vectors, _ = _groups(1, 3, seed=3)
    g = FaceGrouper(DIM, GroupingRule(min_faces=3))
    assert not g.add([1, 2], vectors[:2]).assigned  # two faces: not yet a person
    changes = g.add([3], vectors[2:])
    assert sorted(changes.assigned) == [1, 2, 3] and len(set(changes.assigned.values())) == 1


def test_people_keep_their_ids_as_faces_come_and_go():
    vectors, labels = _groups(3, 6, seed=4)
    g = FaceGrouper(DIM)
    g.add(range(12), vectors[:12])  # people 0 and 1
    ids = {p: g.person[int(np.flatnonzero(labels == p)[0])] for p in (0, 1)}
    more, _ = _groups(3, 9, seed=4)  # the same centres, new faces
    g.add(range(100, 127), more)
    assert {p: g.person[int(np.flatnonzero(labels == p)[0])] for p in (0, 1)} == ids
    g.remove([0, 1])
    assert g.person[2] == ids[0]


def test_recluster_keeps_ids_and_the_users_corrections():
    vectors, labels = _groups(4, 7, seed=5)
    g = FaceGrouper(DIM)
    g.add(range(28), vectors)
    before = dict(g.person)
    alice, bob = g.person[0], g.person[7]
    g.move(1, None)  # "not this person", and no one else's
    g.move(2, bob)  # the user moves a face to another person
    g.recluster()
    assert 1 not in g.person and g.person[2] == bob
    assert all(g.person[f] == p for f, p in before.items() if f not in (1, 2)), "ids kept"
    assert g.person[0] == alice


def test_a_face_taken_from_a_person_never_goes_back():
    vectors, _ = _groups(1, 5, seed=6)
    g = FaceGrouper(DIM)
    g.add(range(5), vectors)
    person = g.person[0]
    g.move(0, None)
    g.move(0, None)
    g.nobody.discard(0)  # even once the user's "no one" is lifted, the refusal stays
    g.recluster()
    assert g.person.get(0) != person


def test_merge_and_errors():
    vectors, _ = _groups(2, 4, seed=7)
    g = FaceGrouper(DIM)
    g.add(range(8), vectors)
    a, b = g.person[0], g.person[4]
    assert g.merge(a, b) == 4 and set(g.person.values()) == {b}
    with pytest.raises(NotFound, match="no such person: 999"):
        g.merge(999, b)
    with pytest.raises(NotFound, match="no such face: 77"):
        g.move(77, b)
    with pytest.raises(BadInput, match="already grouped"):
        g.add([0], vectors[:1])
    with pytest.raises(BadInput, match="min_faces"):
        GroupingRule(min_faces=0)


def test_past_the_exact_limit_the_ivf_index_groups_the_same(monkeypatch):
    """Beyond EXACT_UP_TO faces the neighbours come from an IVF index: on well-separated people it
    must find the same groups, and removing faces still works."""
    import lookalike.people as people

    vectors, _ = _groups(30, 10, seed=9)
    exact = FaceGrouper(DIM)
    for lo in range(0, 300, 50):
        exact.add(range(lo, lo + 50), vectors[lo : lo + 50])
    monkeypatch.setattr(people, "EXACT_UP_TO", 100)
    ivf, at_once = FaceGrouper(DIM), FaceGrouper(DIM)
    for lo in range(0, 300, 50):
        ivf.add(range(lo, lo + 50), vectors[lo : lo + 50])
    at_once.add(range(300), vectors)  # past the limit in its first call: trained on what comes
    assert type(exact._index).__name__ == "IndexIDMap2"
    assert type(ivf._index).__name__ == type(at_once._index).__name__ == "IndexIVFFlat"
    assert _partition(ivf) == _partition(exact) == _partition(at_once)
    ivf.remove([0, 1])
    assert len(ivf) == 298 and 0 not in ivf.person
