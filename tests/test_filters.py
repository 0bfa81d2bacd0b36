"""Filters on every search and listing: exactly the photos they keep, the true top-k among them.

Sixty pictures with known EXIF (three cameras, nine months, five places, three folders, three
shapes) are indexed with the tiny py_modules encoder. What each filter must keep is worked out here
from what was written into the files, never from the store, and the order from the stored vectors.
"""

from __future__ import annotations

import json
import math
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_metadata import encoded, exif

import lookalike
from lookalike import Filters, ListRequest, Near, Options, SearchRequest
from lookalike.filters import km_between
from lookalike.server.app import create_app
from lookalike.server.config import ServerConfig
from lookalike.store.filtered import EXACT_LIMIT, filtered_search
from lookalike.store.vectors import IndexSpec, VectorShard

from conftest import TINY_FLOWS, client_ready, lookalike_cmd, one_space, quadrants

CAMERAS = [("Apple", "iPhone 12"), ("Canon", "Canon EOS R5"), ("Google", "Pixel 8")]
PLACES = [(48.8584, 2.2945), (48.8606, 2.3376), (41.8902, 12.4922), (40.7484, -73.9857), (-33.8568, 151.2153)]
SHAPES = [(96, 64), (64, 96), (80, 80)]  # landscape, portrait, square


def truth(i: int, root: Path) -> dict:
    """What photo ``i`` says of itself."""
    make, model = CAMERAS[i % 3]
    return {
        "path": str(root / f"f{i % 4}" / ("deep" if i % 8 >= 4 else "") / f"p{i:02d}.jpg").replace("//", "/"),
        "make": make,
        "model": model,
        "day": date(2024, 1 + i % 9, 1 + i % 28),
        "place": PLACES[i % 5],
        "shape": SHAPES[i % 7 % 3],
    }


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters") / "photos"
    photos = [truth(i, root) for i in range(60)]
    for i, p in enumerate(photos):
        path = Path(p["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        info = exif(make=p["make"], model=p["model"], taken=p["day"].strftime("%Y:%m:%d 12:00:00"), gps=p["place"])
        path.write_bytes(encoded(quadrants(i).resize(p["shape"]), "JPEG", info))
    options = Options(workspace=root.parent / "ws", **TINY_FLOWS)
    with lookalike.open(options) as library:
        library.index([root])
        yield library, root, photos


def kept_paths(photos: list[dict], keep) -> set[str]:
    return {p["path"] for p in photos if keep(p)}


def check_exact(library, query: Path, filters: Filters, expected: set[str]) -> None:
    """The search returns exactly ``expected`` (k larger than it); its shown scores never rise."""
    report = library.search(SearchRequest(image=query, top_k=100, filters=filters))
    assert {h.path for h in report.hits} == expected
    scores = [h.score for h in report.hits]
    assert scores == sorted(scores, reverse=True) and all(h.similarity <= 1.0 for h in report.hits)


def test_without_expansion_the_order_is_the_cosine_to_the_query(collection):
    """The true top-k among the kept photos: k smaller than the kept set, checked against every kept vector."""
    library, root, photos = collection
    with lookalike.open(
        Options(workspace=library.workspace.path, query_expansion=0, **TINY_FLOWS), write=False
    ) as plain:
        query = Path(photos[7]["path"])
        report = plain.search(SearchRequest(image=query, top_k=5, filters=Filters(camera="apple")))
        store = plain.workspace.store
        kept = [d for d in store.iter_docs() if d.meta.make == "Apple"]
        cosine = {d.id: float(np.dot(store.chunks_of(d.id)[0][3], report.vector)) for d in kept}
        best = sorted(cosine, key=lambda i: -cosine[i])[:5]
        assert [h.doc_id for h in report.hits] == best
        assert [h.score for h in report.hits] == pytest.approx([min(cosine[i], 1.0) for i in best], abs=1e-4)


CASES = {
    "camera": (Filters(camera="canon"), lambda p: p["make"] == "Canon"),
    "camera, any case, in the model": (Filters(camera="IPHONE"), lambda p: p["model"] == "iPhone 12"),
    "taken between two days, inclusive": (
        Filters(taken_after=date(2024, 3, 3), taken_before=date(2024, 5, 5)),
        lambda p: date(2024, 3, 3) <= p["day"] <= date(2024, 5, 5),
    ),
    "near Paris": (
        Filters(near=Near(48.8566, 2.3522, 8)),
        lambda p: km_between(*p["place"], 48.8566, 2.3522) <= 8,
    ),
    "portrait": (Filters(orientation="portrait"), lambda p: p["shape"][1] > p["shape"][0]),
    "camera in a date range near Rome": (
        Filters(camera="pixel", taken_before=date(2024, 6, 30), near=Near(41.9, 12.5, 50)),
        lambda p: p["model"] == "Pixel 8" and p["day"] <= date(2024, 6, 30) and p["place"] == PLACES[2],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_a_filtered_search_returns_exactly_the_photos_the_filter_keeps(collection, name):
    library, root, photos = collection
    filters, keep = CASES[name]
    expected = kept_paths(photos, keep)
    assert 0 < len(expected) < 60, name
    check_exact(library, Path(photos[0]["path"]), filters, expected)


def test_a_folder_filter_takes_sub_folders_and_not_lookalike_names(collection, tmp_path):
    library, root, photos = collection
    expected = kept_paths(photos, lambda p: Path(p["path"]).is_relative_to(root / "f1"))
    assert any("/deep/" in p for p in expected)
    check_exact(library, Path(photos[5]["path"]), Filters(folders=(str(root / "f1"),)), expected)
    both = kept_paths(
        photos, lambda p: any(Path(p["path"]).is_relative_to(f) for f in (root / "f1" / "deep", root / "f3"))
    )
    check_exact(library, Path(photos[5]["path"]), Filters(folders=(str(root / "f1" / "deep"), str(root / "f3"))), both)
    assert library.workspace.store.count_matching(Filters(folders=(str(root / "f"),))) == 0  # no prefix match


def test_more_like_a_stored_photo_and_tags_take_the_same_filters(collection):
    library, root, photos = collection
    expected = kept_paths(photos, lambda p: p["make"] == "Google")
    report = library.search(SearchRequest(like=photos[2]["path"], top_k=100, filters=Filters(camera="google")))
    assert {h.path for h in report.hits} == expected - {photos[2]["path"]}
    label = library.workspace.store.get_docs([report.hits[0].doc_id])[report.hits[0].doc_id].tags[0][0]
    tagged = library.search(SearchRequest(tag=label, top_k=100, filters=Filters(camera="google")))
    assert tagged.hits and {h.path for h in tagged.hits} <= expected


def test_listing_pages_through_the_whole_collection_in_date_order(collection):
    library, root, photos = collection
    seen, cursor = [], None
    while True:
        page = library.list(ListRequest(sort="taken", limit=7, cursor=cursor))
        assert page.total == 60
        seen += page.docs
        cursor = page.next_cursor
        if cursor is None:
            break
    assert len(seen) == 60 and len({d.id for d in seen}) == 60
    days = [d.meta.taken_at for d in seen]
    assert days == sorted(days)
    newest = library.list(ListRequest(sort="taken", desc=True, limit=5))
    assert [d.meta.taken_at for d in newest.docs] == sorted(days, reverse=True)[:5]
    canon = library.list(ListRequest(Filters(camera="canon"), sort="size", limit=1000))
    assert canon.total == 20 and canon.next_cursor is None and len(canon.docs) == 20


def test_documents_without_a_sort_key_are_listed_once_either_way(tmp_path):
    """A document with no size (nothing read it) sorts first ascending and last descending, and the
    cursor pages past it: every document once, in both orders."""
    from lookalike.document import Chunk, Document, Request
    from lookalike.store.workspace import Workspace, WorkspaceLayout

    with Workspace.open(tmp_path / "ws", WorkspaceLayout(one_space("e", 4, 1))) as ws:
        req = Request("index", [])
        for i in range(9):
            doc = Document(id=f"d{i}", uri=f"/p/{i}.jpg", size=None if i % 3 == 0 else i, mtime_ns=1)
            doc.chunks = [Chunk(kind="whole", embedding=np.eye(4, dtype=np.float32)[i % 4])]
            req.docs.append(doc)
            req.staged.doc_ids.append(doc.id)
            req.staged.vectors[(doc.id, 0)] = doc.chunks
        ws.commit(req)
        for desc in (False, True):
            seen, cursor = [], None
            while True:
                page = ws.store.list_docs(Filters(), "size", desc, 2, cursor)
                seen += [d.id for d in page.docs]
                if (cursor := page.next_cursor) is None:
                    break
            assert sorted(seen) == [f"d{i}" for i in range(9)], (desc, seen)
            nulls = [d for d in seen if int(d[1:]) % 3 == 0]
            assert seen[-len(nulls) :] == sorted(nulls, reverse=True) if desc else seen[: len(nulls)] == sorted(nulls)


def test_the_last_day_there_is_keeps_everything(collection):
    library, root, photos = collection
    assert library.list(ListRequest(Filters(taken_before=date.max))).total == 60


def test_a_page_stays_put_while_others_index(collection, tmp_path):
    """Keyset paging: a photo indexed between two pages neither shifts the second nor shows twice."""
    library, root, photos = collection
    first = library.list(ListRequest(sort="name", limit=10))
    extra = root / "f0" / "a-new-one.jpg"  # sorts before the next page's first path
    extra.write_bytes(encoded(quadrants(99), "JPEG", exif()))
    try:
        library.index([root])
        second = library.list(ListRequest(sort="name", limit=10, cursor=first.next_cursor))
        assert second.total == 61
        assert not {d.id for d in first.docs} & {d.id for d in second.docs}
        assert [d.uri for d in second.docs] == sorted(d.uri for d in second.docs) and second.docs[0].uri > first.docs[
            -1
        ].uri
    finally:
        extra.unlink()
        library.index([root])


def test_the_cli_filters_and_lists(collection):
    library, root, photos = collection
    env_flows = {
        "LOOKALIKE_INDEX_FLOW": str(TINY_FLOWS["index_flow"]),
        "LOOKALIKE_QUERY_FLOW": str(TINY_FLOWS["query_flow"]),
    }
    ws = str(library.workspace.path)
    import os

    env = os.environ | env_flows
    run = [*lookalike_cmd(), "search", photos[0]["path"], "-w", ws, "-k", "100", "--camera", "canon", "--json"]
    done = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {r["path"] for r in json.loads(done.stdout)["results"]} == kept_paths(photos, lambda p: p["make"] == "Canon")
    run = [*lookalike_cmd(), "list", "-w", ws, "--near", "48.8566,2.3522,8", "--json", "--limit", "3"]
    listed = json.loads(subprocess.run(run, capture_output=True, text=True, env=env, timeout=120, check=True).stdout)
    assert listed["total"] == len(kept_paths(photos, lambda p: p["place"] in PLACES[:2])) and len(listed["items"]) == 3
    for bad, flag in (
        ("--taken-after=2024-02-30", "--taken-after"),
        ("--near=91,0,1", "--near"),
        ("--camera= ", "--camera"),
    ):
        done = subprocess.run(
            [*lookalike_cmd(), "list", "-w", ws, bad], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 2 and flag in done.stderr, (bad, done.stderr)


def test_the_api_filters_searches_and_lists(collection):
    library, root, photos = collection
    canon = kept_paths(photos, lambda p: p["make"] == "Canon")
    doc_ids = {d.uri: d.id for d in library.workspace.store.iter_docs()}
    with TestClient(create_app(ServerConfig(library.options)), base_url="http://127.0.0.1") as client:
        client_ready(client)
        body = {"doc_id": doc_ids[photos[0]["path"]], "top_k": 100, "filters": {"camera": "canon"}}
        r = client.post("/api/search", json=body)
        assert r.status_code == 200 and {m["uri"] for m in r.json()["results"][0]["matches"]} == canon
        with open(photos[0]["path"], "rb") as f:
            r = client.post("/api/search", files={"file": f}, data={"top_k": "100", "folder": [str(root / "f2")]})
        assert {m["uri"] for m in r.json()["results"][0]["matches"]} == kept_paths(
            photos, lambda p: "/f2/" in p["path"]
        )
        pages, cursor = [], None
        while True:
            r = client.get(
                "/api/docs", params={"limit": 25, "taken_after": "2024-02-01"} | ({"cursor": cursor} if cursor else {})
            )
            assert r.status_code == 200, r.text
            pages.append(r.json())
            cursor = pages[-1]["next_cursor"]
            if cursor is None:
                break
        wanted = kept_paths(photos, lambda p: p["day"] >= date(2024, 2, 1))
        assert {pages[0]["total"]} == {p["total"] for p in pages} == {len(wanted)}
        assert {i["uri"] for p in pages for i in p["items"]} == wanted
        for params, key in (
            ({"taken_after": "2024-02-30"}, "taken_after"),
            ({"near": "95,1,1"}, "near"),
            ({"orientation": "diagonal"}, "orientation"),
        ):
            r = client.get("/api/docs", params=params)
            assert r.status_code == 422 and key in r.json()["error"]["message"], r.text
        r = client.post("/api/search", json={"doc_id": "x", "filters": {"colour": "red"}})
        assert r.status_code == 422 and "colour" in r.json()["error"]["message"]
        r = client.post("/api/search", json={"doc_id": "x", "filters": {"near": {"lat": 1, "lon": 2}}})
        assert r.status_code == 422 and "near.km" in r.json()["error"]["message"]
        r = client.get("/api/docs", params={"cursor": "not-a-cursor"})
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]


# --- the shard's filtered search, exact and ANN ---------------------------------------------------------


class KeptSet:
    """What a filter keeps of a shard, as a set of chunk ids (the store's side is tested above)."""

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)
        self._set = set(self.ids.tolist())

    def among(self, chunk_ids: np.ndarray) -> np.ndarray:
        return np.asarray([c for c in chunk_ids.tolist() if c in self._set], dtype=np.int64)

    def all(self) -> np.ndarray:
        return self.ids

    def vectors(self, exact):
        return exact(self.ids)

    def known(self):
        return None


@pytest.fixture(scope="module")
def clustered():
    """20,000 vectors in 200 clusters (64-d): enough for an IVF index to be approximate."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((200, 64)).astype(np.float32)
    v = centres[rng.integers(0, 200, 20_000)] + 0.6 * rng.standard_normal((20_000, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = np.arange(1, 20_001, dtype=np.int64)
    return ids, v


def _exact(ids: np.ndarray, v: np.ndarray):
    row = {int(c): i for i, c in enumerate(ids)}

    def exact(wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = np.asarray([c for c in wanted.tolist() if c in row], dtype=np.int64)
        return found, v[[row[c] for c in found.tolist()]]

    return exact


@pytest.mark.parametrize("kind", ["flat", "ivf-sq8"])
@pytest.mark.parametrize("keep", [0.5, 0.06, 0.01, 0.0005])  # post-filtered, selector, selector, exact
def test_a_shard_finds_the_true_top_k_within_a_filter(clustered, kind, keep):
    ids, v = clustered
    exact = _exact(ids, v)
    spec = IndexSpec(kind, 128 if kind != "flat" else 0)
    blocks = lambda: iter([(ids, v)])  # noqa: E731
    shard = VectorShard.build(64, 0, "cosine", spec, blocks, exact)
    assert shard is not None and shard.kind == kind
    rng = np.random.default_rng(1)
    allowed = np.sort(rng.choice(ids, max(1, int(len(ids) * keep)), replace=False))
    queries = v[rng.integers(0, len(v), 30)] + 0.05 * rng.standard_normal((30, 64)).astype(np.float32)
    k = 10
    scores, found = filtered_search(shard, queries, k, exact, KeptSet(allowed), max(2 * k, 20) if kind != "flat" else k)
    kept_v = v[allowed - 1]
    truth = np.argsort(-(queries @ kept_v.T), axis=1)[:, :k]
    hits = 0
    for q in range(len(queries)):
        got = set(found[q][found[q] >= 0].tolist())
        assert got <= set(allowed.tolist())
        want = set(allowed[truth[q]].tolist())
        hits += len(got & want)
        assert len(got) == min(k, len(allowed))
    recall = hits / (len(queries) * min(k, len(allowed)))
    assert recall == 1.0 if kind == "flat" or len(allowed) <= EXACT_LIMIT else recall >= 0.95, recall
    assert math.isfinite(float(scores[0, 0]))


def test_a_filter_remembered_by_the_shards_sees_a_photo_indexed_since(collection):
    """The shards remember what a selective filter keeps; a commit (a new generation) forgets it."""
    library, root, photos = collection
    filters = Filters(camera="leica")
    query = Path(photos[0]["path"])
    assert library.search(SearchRequest(image=query, top_k=10, filters=filters)).hits == []
    new = root / "f2" / "leica.jpg"
    new.write_bytes(encoded(quadrants(77), "JPEG", exif(make="Leica", model="M11")))
    try:
        library.index([root])
        assert [h.path for h in library.search(SearchRequest(image=query, top_k=10, filters=filters)).hits] == [
            str(new)
        ]
    finally:
        new.unlink()
        library.index([root])
    assert library.search(SearchRequest(image=query, top_k=10, filters=filters)).hits == []


def test_the_api_names_the_formats_the_reader_gives():
    """The API's format names are a Literal for the schema; they must be the reader's own list."""
    from typing import get_args

    from lookalike.metadata import FORMAT_NAMES
    from lookalike.server.schemas import FormatName

    assert get_args(FormatName) == FORMAT_NAMES


# --- browsing: the timeline, the folder tree, the facets --------------------------------------------


def test_the_timeline_counts_each_month_the_filters_keep(collection):
    library, _, photos = collection
    canon = [p for p in photos if p["make"] == "Canon"]
    for filters, kept in ((Filters(), photos), (Filters(camera="canon"), canon)):
        expected: dict[str, int] = {}
        for p in kept:
            month = p["day"].strftime("%Y-%m")
            expected[month] = expected.get(month, 0) + 1
        months = library.timeline(filters)
        assert [(m.month, m.photos) for m in months] == sorted(expected.items(), reverse=True)
        # each month's photos are what a listing within that month's days finds
        first = months[0]
        end = date(int(first.month[:4]), int(first.month[5:]) % 12 + 1, 1) if first.month[5:] != "12" else None
        within = Filters(
            camera=filters.camera,
            taken_after=date.fromisoformat(first.month + "-01"),
            taken_before=date.fromordinal(end.toordinal() - 1) if end else date(int(first.month[:4]), 12, 31),
        )
        assert library.list(ListRequest(within, limit=100)).total == first.photos


def test_the_folder_tree_counts_photos_down_each_branch(collection):
    library, root, photos = collection
    tops = library.folders()
    assert [(f.path, f.photos) for f in tops] == [(str(root), len(photos))]
    below = {f.path: (f.photos, f.folders) for f in library.folders(str(root))}
    for n in range(4):
        branch = str(root / f"f{n}")
        in_branch = [p for p in photos if p["path"].startswith(branch + "/")]
        deep = any("/deep/" in p["path"] for p in in_branch)
        assert below[branch] == (len(in_branch), 1 if deep else 0)
    deep = library.folders(str(root / "f0"))
    assert [f.path for f in deep] == [str(root / "f0" / "deep")]
    with pytest.raises(lookalike.NotFound, match="no indexed photo lies in the folder"):
        library.folders(str(root / "nowhere"))


def test_the_api_offers_the_timeline_folders_and_facets(collection):
    library, root, photos = collection
    with TestClient(create_app(ServerConfig(library.options)), base_url="http://127.0.0.1") as client:
        client_ready(client)
        r = client.get("/api/timeline", params={"camera": "pixel"})
        assert r.status_code == 200, r.text
        pixel = [p for p in photos if p["make"] == "Google"]
        assert r.json()["total"] == len(pixel) == sum(m["photos"] for m in r.json()["months"])
        facets = client.get("/api/facets").json()
        assert facets["photos"] == len(photos)
        assert {c["name"]: c["photos"] for c in facets["cameras"]} == {
            f"{make} {model}": sum(1 for p in photos if p["model"] == model) for make, model in CAMERAS
        }
        assert facets["formats"] == [{"format": "jpeg", "photos": len(photos)}]
        r = client.get("/api/folders", params={"parent": str(root)})
        assert sorted(f["path"] for f in r.json()["folders"]) == [str(root / f"f{n}") for n in range(4)]
        r = client.get("/api/folders", params={"parent": str(root / "nowhere")})
        assert r.status_code == 404 and "no indexed photo" in r.json()["error"]["message"]
