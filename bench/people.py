"""Grouping faces into people (lookalike.people): how well, and how fast.

    .venv/bin/python -m bench.people [--json] [--parts quality speed] [--sizes 10000 100000]

1. **Quality.** dlib's labelled example faces (5 people x 11 photos, from Debian's dlib source
   tarball) and face_recognition's test photos (Obama x5, Biden x1), each padded to an ordinary
   photo of 1600x1200, plus 10 group photos of two johns (every pair), through the project's
   own FaceDetector and FaceEncoder (bench.people_data). The faces are grouped incrementally, a
   batch of 16 photos at a time in a shuffled order, as indexing would, for a grid of rules
   (``max_distance`` x ``min_faces``). Reported: pairwise precision and recall over every face
   (an unassigned face is a group of its own, so it costs recall), the faces left unassigned, and
   how many group-photo faces went to their own person (the person most of that label's faces
   are in).
2. **Speed.** Synthetic descriptors on dlib's scale (people's centres about 1 apart, faces within
   about 0.12 of theirs), 20 faces a person: the time to group N faces added 10,000 at a time,
   then the time to add 1,000 more, and the peak RSS, each size in a process of its own.
3. **Stored.** The same faces as a workspace holds them: committed to the doc store's faces
   space, grouped by ``People.update()`` (which reads the grouping's state from the store and
   writes it back), then 1,000 more committed and grouped, as the next index run would.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from collections import Counter

import numpy as np

from lookalike.people import FaceGrouper, GroupingRule

DISTANCES = (0.4, 0.45, 0.5, 0.55, 0.6)
MIN_FACES = (2, 3, 4)
BATCH_PHOTOS = 16
SIZES = (10_000, 100_000)


def labelled_faces() -> tuple[np.ndarray, list[str], list[int], dict]:
    """(descriptors, person of each, photo of each, counts): every face found in the padded single
    photos (those with exactly one face) and in the group photos (left face, right face)."""
    from bench.people_data import face_descriptors, labelled_photos

    images, labels = labelled_photos()
    start = time.perf_counter()
    found = face_descriptors(images)
    counts = {"photos": len(images), "describe_s": round(time.perf_counter() - start, 1), "left_out": 0}
    vectors, people, photos = [], [], []
    for i, (faces, names) in enumerate(zip(found, labels, strict=True)):
        if len(faces) != len(names):  # a face missed (or one too many): its label is unknown
            counts["left_out"] += 1
            continue
        for (_, vector), name in zip(sorted(faces, key=lambda f: f[0][0]), names, strict=True):
            vectors.append(vector)
            people.append(name)
            photos.append(i)
    counts["faces"] = len(people)
    counts["group_faces"] = sum(1 for i in photos if len(labels[i]) == 2)
    return np.array(vectors, np.float32), people, photos, counts


def pairwise(assigned: dict[int, int], labels: list[str]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping (unassigned faces: groups of one)."""
    groups: dict[object, list[int]] = {}
    for i in range(len(labels)):
        groups.setdefault(assigned.get(i, ("alone", i)), []).append(i)
    together = same = 0
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            together += 1
            same += labels[a] == labels[b]
    truth = sum(n * (n - 1) // 2 for n in Counter(labels).values())
    return (same / together if together else 1.0), (same / truth if truth else 1.0)


def grouped(vectors: np.ndarray, photos: list[int], rule: GroupingRule, seed: int = 0) -> dict[int, int]:
    """Faces added a batch of photos at a time, in a shuffled order of photos: face -> person."""
    order = np.random.default_rng(seed).permutation(max(photos) + 1)
    g = FaceGrouper(vectors.shape[1], rule)
    for batch in np.array_split(order, max(1, len(order) // BATCH_PHOTOS)):
        wanted = set(batch.tolist())
        faces = [i for i, p in enumerate(photos) if p in wanted]
        if faces:
            g.add(faces, vectors[faces])
    return dict(g.person)


def quality() -> dict:
    vectors, labels, photos, counts = labelled_faces()
    group = [i for i, p in enumerate(photos) if photos.count(p) == 2]
    rows = []
    for distance, min_faces in itertools.product(DISTANCES, MIN_FACES):
        assigned = grouped(vectors, photos, GroupingRule(distance, min_faces))
        precision, recall = pairwise(assigned, labels)
        home = {}  # each label's person: the one most of its faces are in
        for name in set(labels):
            votes = Counter(assigned[i] for i, lab in enumerate(labels) if lab == name and i in assigned)
            home[name] = votes.most_common(1)[0][0] if votes else None
        rows.append(
            {
                "max_distance": distance,
                "min_faces": min_faces,
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "people": len(set(assigned.values())),
                "unassigned": len(labels) - len(assigned),
                "group_faces_home": sum(assigned.get(i) == home[labels[i]] for i in group),
            }
        )
    same: list[float] = []
    other: list[float] = []
    for a, b in itertools.combinations(range(len(labels)), 2):
        (same if labels[a] == labels[b] else other).append(float(np.linalg.norm(vectors[a] - vectors[b])))
    margins = {"same_person_max": round(max(same), 3), "other_person_min": round(min(other), 3)}
    return {**counts, **margins, "people_labelled": len(set(labels)), "rules": rows}


def synthetic(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` + 1,000 synthetic descriptors (20 faces a person), and each one's person."""
    rng = np.random.default_rng(0)
    centres = (rng.normal(size=(n // 20, 128)) / np.sqrt(256) * 1.4).astype(np.float32)
    labels = rng.integers(0, len(centres), n + 1000)
    vectors = centres[labels] + (rng.normal(size=(n + 1000, 128)) / np.sqrt(128) * 0.12).astype(np.float32)
    return vectors, labels


def speed_one(n: int) -> dict:
    """Group ``n`` synthetic faces, then add 1,000: seconds, and this process's peak RSS."""
    vectors, labels = synthetic(n)
    g = FaceGrouper(128)
    start = time.perf_counter()
    for lo in range(0, n, 10_000):
        g.add(range(lo, min(lo + 10_000, n)), vectors[lo : min(lo + 10_000, n)])
    grouped_s = time.perf_counter() - start
    start = time.perf_counter()
    g.add(range(n, n + 1000), vectors[n:])
    add_s = time.perf_counter() - start
    precision, recall = pairwise(g.person, labels.tolist())
    return {
        "faces": n,
        "group_s": round(grouped_s, 1),
        "add_1000_s": round(add_s, 2),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "people": len(g.people()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
    }


def stored_one(n: int) -> dict:
    """As a workspace does it: ``n`` synthetic faces committed (one a photo, 5,000 a commit) and
    grouped by ``People.update()`` (state read from and written to the doc store), then 1,000 more
    committed and grouped: seconds of each update, and this process's peak RSS."""
    import tempfile
    from pathlib import Path

    from lookalike.document import Chunk, Document, Request, shard_for
    from lookalike.library.people import People
    from lookalike.store.spaces import VectorSpace
    from lookalike.store.workspace import Workspace, WorkspaceLayout

    vectors, labels = synthetic(n)
    spaces = {"image": VectorSpace("none", 8, "cosine", 1), "faces": VectorSpace("synthetic", 128, "l2", 2)}
    with tempfile.TemporaryDirectory() as tmp, Workspace.open(Path(tmp) / "ws", WorkspaceLayout(spaces)) as ws:
        slots = ws.slots("faces")

        def commit(lo: int, hi: int) -> None:
            for start in range(lo, hi, 5000):
                ids = range(start, min(start + 5000, hi))
                request = Request(
                    "index", [Document(id=f"d{i}", uri=f"/photos/{i}.jpg", content_hash=str(i)) for i in ids]
                )
                for i, doc in zip(ids, request.docs, strict=True):
                    request.staged.doc_ids.append(doc.id)
                    face = Chunk(kind="face", bbox=(0, 0, 100, 100), embedding=vectors[i])
                    request.staged.vectors[(doc.id, slots[shard_for(doc.id, 2)])] = [face]
                ws.commit(request)

        people = People(ws)
        commit(0, n)
        first = people.update()
        commit(n, n + 1000)
        start = time.perf_counter()
        added = people.update()
        add_s = time.perf_counter() - start
        shown = len(people.list())
    return {
        "faces": n,
        "group_s": round(first.seconds, 1),
        "add_1000_s": round(add_s, 2),
        "assigned_of_1000": added.assigned,
        "people": shown,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "true_people": len(set(labels.tolist())),
    }


def speed(sizes: list[int], stored: bool = False) -> list[dict]:
    out = []
    for n in sizes:
        flag = "--stored-one" if stored else "--speed-one"
        done = subprocess.run(
            [sys.executable, "-m", "bench.people", flag, str(n)], capture_output=True, text=True, timeout=3600
        )
        if done.returncode != 0:
            raise RuntimeError(f"speed run for {n} faces failed: {done.stderr.strip().splitlines()[-1:]}")
        out.append(json.loads(done.stdout))
        print(f"  {out[-1]}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--parts", nargs="+", default=["quality", "speed", "stored"], choices=["quality", "speed", "stored"]
    )
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--speed-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stored-one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.speed_one:
        print(json.dumps(speed_one(args.speed_one)))
        return
    if args.stored_one:
        print(json.dumps(stored_one(args.stored_one)))
        return
    results: dict = {}
    if "quality" in args.parts:
        results["quality"] = quality()
        for row in results["quality"]["rules"]:
            print(f"  {row}", file=sys.stderr)
    if "speed" in args.parts:
        results["speed"] = speed(args.sizes)
    if "stored" in args.parts:
        results["stored"] = speed(args.sizes, stored=True)
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
