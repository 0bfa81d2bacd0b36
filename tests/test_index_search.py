"""Indexing and searching real photos with the real model, through the real flows."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps

import lookalike
from lookalike import Library, Options, SearchRequest
from lookalike.errors import BadInput, NotFound, StoreError
from lookalike.flow.graph import builtin_flow_path

from conftest import REPO, copy_photos

pytestmark = pytest.mark.slow

CLASSES = ["animals/birds", "animals/mammals", "food/fruit", "plants/flowers", "town/roadsigns", "space/planets"]


@pytest.fixture
def photos(tuxpaint, tmp_path) -> list[Path]:
    return copy_photos(tuxpaint, tmp_path / "photos", per_class=8, classes=CLASSES)


def _open(ws: Path, *, write: bool = True, **options) -> Library:
    return lookalike.open(Options(workspace=ws, **options), write=write)


def _search(library: Library, queries: list, top_k: int = 10) -> list[list]:
    return [r.hits for r in library.search_many(SearchRequest(image=q, top_k=top_k) for q in queries)]


def _flow(tmp_path: Path, name: str, *, parallel: int = 2, shards: int = 2, model: str | None = None) -> Path:
    """A copy of a built-in flow with other replicas, shards or model."""
    text = builtin_flow_path(name).read_text()
    text = text.replace("parallel: 2", f"parallel: {parallel}").replace("shards: 2", f"shards: {shards}")
    if model:
        flow = yaml.safe_load(text)
        flow["pods"]["encoder"].setdefault("with", {})["model"] = model
        text = yaml.safe_dump(flow, sort_keys=False)
    path = tmp_path / f"{name}-p{parallel}-s{shards}-{model or 'lite0'}.yml"
    path.write_text(text)
    return path


def test_each_photo_finds_itself_and_an_edited_copy_finds_its_original(photos, tmp_path):
    with _open(tmp_path / "ws") as engine:
        summary = engine.index([photos[0].parent.parent.parent])
        assert summary.indexed == len(photos) and summary.skipped_total == 0
        assert engine.workspace.verify() == []
    queries = photos[::7]
    edited = []
    for p in queries:
        img = Image.open(p).convert("RGBA")
        w, h = img.size
        crop = ImageOps.mirror(img.crop((w // 10, h // 10, w - w // 10, h - h // 10)))
        target = tmp_path / f"edited-{p.stem}.png"
        crop.resize((w * 3 // 4, h * 3 // 4)).save(target)
        edited.append(target)
    with _open(tmp_path / "ws", write=False) as engine:
        exact = _search(engine, [str(p) for p in queries], top_k=5)
        near = _search(engine, [str(p) for p in edited], top_k=5)
    for q, rs in zip(queries, exact, strict=True):
        assert rs[0].path == str(q) and rs[0].score == pytest.approx(1.0, abs=1e-4)
        assert len({r.doc_id for r in rs}) == len(rs) == 5
        assert rs[0].tags and rs[0].width and rs[0].height
    found = sum(rs[0].path == str(q) for q, rs in zip(queries, near, strict=True))
    assert found == len(queries), [(q.name, rs[0].path) for q, rs in zip(queries, near, strict=True)]


def test_incremental_reindexing(photos, tmp_path):
    root = photos[0].parent.parent.parent
    ws = tmp_path / "ws"
    with _open(ws) as engine:
        first = engine.index([root])
    assert first.indexed == len(photos)
    with _open(ws) as engine:
        again = engine.index([root])
    assert (again.indexed, again.updated, again.encoded, again.unchanged) == (0, 0, 0, len(photos))

    changed, touched, deleted = photos[0], photos[1], photos[2]
    Image.open(changed).convert("RGB").rotate(90, expand=True).save(changed, "PNG")  # new content
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))  # new mtime, same bytes
    deleted.unlink()
    new = root / "new" / "extra.png"
    new.parent.mkdir()
    shutil.copy(photos[3], new)
    with _open(ws) as engine:
        third = engine.index([root])
        info = engine.workspace.info()
        assert engine.workspace.verify() == []
    assert (third.indexed, third.updated, third.removed, third.encoded) == (1, 1, 1, 2)
    assert third.unchanged == len(photos) - 2  # the touched file is unchanged: same bytes
    assert info.docs == info.chunks == len(photos)

    with _open(ws) as engine:  # a glob limits what is scanned *and* what counts as removed
        only_birds = engine.index(lookalike.IndexRequest((str(root),), glob="animals/birds/*"))
        assert only_birds.removed == 0 and only_birds.encoded == 0
        limited = engine.remove([root / "new"])
        assert limited == 1 and engine.workspace.info().docs == len(photos) - 1


def _brute_force(engine: Library, query: Path, k: int) -> list[str]:
    from lookalike.models.encoder import EfficientNetEncoder

    ids, vecs, doc_ids = engine.workspace.store.all_vectors(engine.workspace.dim)
    q, _ = EfficientNetEncoder().encode([query])
    scores = vecs @ q[0]
    best: dict[str, float] = {}
    for s, d in zip(scores, doc_ids, strict=True):
        best[d] = max(best.get(d, -2.0), float(s))
    return [d for d, _ in sorted(best.items(), key=lambda t: (-t[1], t[0]))][:k]


def test_shards_and_replicas_give_the_exact_brute_force_top_k(photos, tmp_path):
    root = photos[0].parent.parent.parent
    queries = photos[::9]
    tops = {}
    for parallel, shards in [(1, 1), (4, 1), (1, 2), (4, 3)]:
        ws = tmp_path / f"ws-{parallel}-{shards}"
        index_flow = _flow(tmp_path, "index", parallel=parallel, shards=shards)
        query_flow = _flow(tmp_path, "query", parallel=parallel, shards=shards)
        with _open(ws, index_flow=index_flow, query_flow=query_flow) as engine:
            engine.index([root])
            assert engine.workspace.n_shards_configured == shards
            assert len(engine.workspace.info().indexes) == shards
            results = _search(engine, [str(q) for q in queries], top_k=10)
            tops[(parallel, shards)] = [[r.doc_id for r in rs] for rs in results]
            if (parallel, shards) == (1, 1):
                expected = [_brute_force(engine, q, 10) for q in queries]
    for setting, top in tops.items():
        assert top == expected, setting


def test_bad_files_are_skipped_with_reasons_and_the_rest_indexed(photos, tmp_path):
    root = photos[0].parent.parent.parent
    data = photos[0].read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    (root / "notes.jpg").write_text("not an image")
    (root / "empty.png").write_bytes(b"")
    with _open(tmp_path / "ws") as engine:
        summary = engine.index([root])
    assert summary.indexed == len(photos)
    assert summary.skipped == {"truncated image": 1, "not an image": 1, "empty file": 1}
    assert sorted(Path(p).name for p, _ in summary.skipped_files) == ["empty.png", "notes.jpg", "truncated.png"]
    with _open(tmp_path / "ws") as engine:  # unchanged bad files are reported, not re-processed
        again = engine.index([root])
    assert again.skipped == summary.skipped and again.encoded == 0


def test_a_workspace_refuses_a_query_flow_with_another_encoder(photos, tmp_path):
    with _open(tmp_path / "ws") as engine:
        engine.index([photos[0]])
    lite1 = _flow(tmp_path, "query", model="efficientnet-lite1")
    # The query flow is checked against the workspace when a search first needs it (a tag search needs none).
    with _open(tmp_path / "ws", query_flow=lite1, write=False) as engine:
        with pytest.raises(StoreError, match="lookalike index --reset"):
            engine.search(SearchRequest(image=str(photos[0])))


def test_query_errors(photos, tmp_path):
    with _open(tmp_path / "ws") as engine:
        engine.index([photos[0]])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with _open(tmp_path / "ws", write=False) as engine:
        with pytest.raises(BadInput, match="bad.jpg"):
            engine.search(SearchRequest(image=str(bad)))
        with pytest.raises(NotFound):
            engine.search(SearchRequest(image=str(tmp_path / "missing.jpg")))
        with pytest.raises(BadInput, match="top_k"):
            engine.search(SearchRequest(image=str(photos[0]), top_k=0))
        assert engine.search(SearchRequest(image=photos[0].read_bytes(), top_k=1)).hits[0].path == str(photos[0])


def test_limit_indexes_only_n_files_and_removes_nothing(photos, tmp_path):
    root = photos[0].parent.parent.parent
    with _open(tmp_path / "ws") as engine:
        engine.index([root])
        limited = engine.index(lookalike.IndexRequest((str(root),), limit=5))
        assert limited.removed == 0 and limited.unchanged == 5
        assert engine.workspace.info().docs == len(photos)


def test_missing_path_is_not_found(tmp_path):
    with _open(tmp_path / "ws") as engine, pytest.raises(NotFound, match="no such file"):
        engine.index([tmp_path / "nope"])


def test_flower_example_mirrored_query_finds_its_original_once(photos, tmp_path):
    root = photos[0].parent.parent.parent
    example = REPO / "examples" / "flower-search"
    with _open(tmp_path / "ws", index_flow=example / "index.yml", query_flow=example / "query.yml") as engine:
        engine.index([root])
        info = engine.workspace.info()
    assert info.chunks == 2 * info.docs  # the flipper added a mirrored chunk to each image
    query = photos[5]
    mirrored = tmp_path / "mirrored.png"
    ImageOps.mirror(Image.open(query)).save(mirrored)
    with _open(tmp_path / "ws", write=False) as engine:  # the remembered query flow
        results = engine.search(SearchRequest(image=str(mirrored), top_k=10)).hits
    assert results[0].path == str(query) and results[0].score > 0.99
    assert results[0].chunk == "mirror"
    ids = [r.doc_id for r in results]
    assert len(ids) == len(set(ids)) == 10  # each document once, though both its chunks match
    assert np.all(np.diff([r.score for r in results]) <= 0)


def test_top_k_is_met_when_a_shard_holds_fewer_vectors_than_k(photos, tmp_path):
    """Regression: merging shards used to keep only as many matches as the fullest shard returned."""
    few = photos[:7]
    folder = tmp_path / "few"
    folder.mkdir()
    for p in few:
        shutil.copy(p, folder / p.name)
    flows = {name: _flow(tmp_path, name, shards=3) for name in ("index", "query")}
    with _open(tmp_path / "ws", index_flow=flows["index"], query_flow=flows["query"]) as engine:
        engine.index([folder])
        assert max(engine.workspace.info().shards.values()) < 7
        results = engine.search(SearchRequest(image=str(folder / few[0].name), top_k=7)).hits
    assert len(results) == 7 and len({r.doc_id for r in results}) == 7
