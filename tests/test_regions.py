"""Regions: each photo's 4 windows as chunks of the regions space, searched by a box on the query,
and heat maps saying why a result matched; on real photos (tests/pasting.py) and the real model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pasting import make_composites
from PIL import Image

import lookalike
from lookalike import Options, SearchRequest
from lookalike.descriptors import REGION_DIM, l2_normalise, region_projection, region_windows
from lookalike.errors import BadInput, ConfigError
from lookalike.flow.graph import builtin_flow_path, open_flow
from lookalike.library import ExplainRequest
from lookalike.models.efficientnet_lite import get_variant, weights_path
from lookalike.models.torch_checkpoint import load_state_dict
from lookalike.server.app import ServerConfig, create_app
from lookalike.store.spaces import REGIONS

from conftest import client_ready, lookalike_cmd


@pytest.fixture(scope="module")
def composites(tuxpaint, photos: dict[str, Image.Image], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_composites(tuxpaint, photos, tmp_path_factory.mktemp("pasted"), tmp_path_factory.mktemp("upload"))


@pytest.fixture(scope="module")
def regions_ws(composites: dict[str, Any], model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("regions-ws") / "ws"
    with lookalike.open(Options(workspace=ws, preset="regions")) as library:
        report = library.index([composites["root"]])
    assert report.indexed == 8 and report.skipped_total == 0
    return ws


def _inside(cell: tuple[float, float, float, float], box: list[float]) -> bool:
    """Whether the centre of ``cell`` lies inside ``box`` (both x0, y0, x1, y1 fractions)."""
    cx, cy = (cell[0] + cell[2]) / 2, (cell[1] + cell[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _hottest_cell(heat: list[list[float]], grid_box: list[float]) -> tuple[float, float, float, float]:
    grid = np.asarray(heat)
    r, c = divmod(int(np.argmax(grid)), grid.shape[1])
    w, h = (grid_box[2] - grid_box[0]) / grid.shape[1], (grid_box[3] - grid_box[1]) / grid.shape[0]
    x0, y0 = grid_box[0] + c * w, grid_box[1] + r * h
    return x0, y0, x0 + w, y0 + h


def test_the_graph_pools_each_window_as_the_reference_does(encoder, photos):
    """The model's ``regions`` output is each window of its feature map max-pooled, normalised and
    projected onto the classifier's top directions; ``box`` the first window averaged."""
    from lookalike.images import to_tensor

    batch = np.stack([to_tensor(photos[n], 224) for n in ("astronaut", "coffee")])
    features, regions, box = encoder.run(batch, ["features", "regions", "box"])
    assert features.shape == (2, 1280, 7, 7) and regions.shape == (2, 4, REGION_DIM)
    windows = region_windows(7, 7)
    assert windows == ((0, 4, 0, 4), (0, 4, 3, 7), (3, 7, 0, 4), (3, 7, 3, 7))  # (top, bottom, left, right)
    projection = region_projection(load_state_dict(weights_path(get_variant("efficientnet-lite0")))["_fc.weight"])
    expected = np.stack([l2_normalise(features[:, :, t:b, lft:r].max(axis=(2, 3))) for t, b, lft, r in windows], 1)
    np.testing.assert_allclose(regions, expected @ projection, atol=2e-4)
    t, b, lft, r = windows[0]
    np.testing.assert_allclose(box, features[:, :, t:b, lft:r].mean(axis=(2, 3)) @ projection, rtol=1e-3, atol=2e-4)
    # The projection is made from the weights alone, the same way every time.
    assert np.array_equal(
        projection, region_projection(load_state_dict(weights_path(get_variant("efficientnet-lite0")))["_fc.weight"])
    )


def test_the_regions_flow_stores_two_spaces():
    spaces = open_flow(builtin_flow_path("index-regions"), "index").spaces()
    assert list(spaces) == ["image", REGIONS]
    assert (spaces["image"].dim, spaces[REGIONS].dim, spaces[REGIONS].metric) == (1280, REGION_DIM, "cosine")
    assert spaces[REGIONS].encoder.split(":regions")[0] in spaces["image"].encoder  # same model, its regions
    query = open_flow(builtin_flow_path("regions-query"), "query").spaces()
    assert query[REGIONS].encoder == spaces[REGIONS].encoder  # the query flow searches what was indexed


def test_every_photo_has_four_region_chunks_with_their_boxes(regions_ws):
    with lookalike.open(Options(workspace=regions_ws), write=False) as library:
        assert library.info().problems == []
        store, slots = library.workspace.store, library.workspace.slots(REGIONS)
        for doc in library.list().docs:
            rows = store.chunks_of(doc.id, slots)
            assert [kind for _, kind, _, _ in rows] == ["region"] * 4
            for _, _, (x, y, w, h), vector in rows:
                assert 0 <= x and 0 <= y and x + w <= doc.width + 1 and y + h <= doc.height + 1
                assert w == h == round(4 / 7 * 384 * 224 / 256)  # 4 of the 7 cells of the 336 px the model sees
                assert vector.shape == (REGION_DIM,) and abs(np.linalg.norm(vector) - 1) < 1e-2
            assert [kind for _, kind, _, _ in store.chunks_of(doc.id, library.workspace.slots("image"))] == ["whole"]


def test_a_box_finds_the_object_elsewhere_and_says_where(regions_ws, composites):
    root, boxes = composites["root"], composites["boxes"]
    with lookalike.open(Options(workspace=regions_ws), write=False) as library:
        for obj, other in (("orange", "chelsea"), ("daffodil", "chelsea"), ("daffodil", "coffee")):
            query = next(name for name in boxes if name.startswith(obj) and not name.endswith(other))
            box = tuple(boxes[query])
            hits = library.search(SearchRequest(like=str(root / f"{query}.jpg"), box=box, top_k=3)).hits
            assert Path(hits[0].path).stem == f"{obj}-{other}", [h.path for h in hits]
            assert hits[0].chunk == "region" and hits[0].match is None  # no level: nothing calibrated there
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            x0, y0, x1, y1 = hits[0].region
            found = boxes[f"{obj}-{other}"]
            overlap = max(0, min(x1, found[2]) - max(x0, found[0])) * max(0, min(y1, found[3]) - max(y0, found[1]))
            assert overlap > 0.5 * (x1 - x0) * (y1 - y0)  # the region that matched is mostly the object
            assert hits[0].to_dict()["region"] == list(hits[0].region)
        # The same photo searched whole meets the photo with the same background first.
        whole = library.search(SearchRequest(like=str(root / "orange-coffee.jpg"), top_k=1)).hits
        assert Path(whole[0].path).stem.endswith("coffee") and whole[0].chunk == "whole"
        # An unindexed photo, by the box around its object; and the clean object, by all of it.
        upload = library.search(
            SearchRequest(image=str(composites["upload"]), box=tuple(composites["upload_box"]), top_k=2)
        )
        assert {Path(h.path).stem for h in upload.hits} == {"daffodil-coffee", "daffodil-chelsea"}
        for obj in ("orange", "daffodil"):
            clean = library.search(SearchRequest(image=str(composites["clean"][obj]), box=(0, 0, 1, 1), top_k=2))
            assert {Path(h.path).stem.split("-")[0] for h in clean.hits} == {obj}


def test_a_plain_search_matches_the_photos_parts_too(regions_ws, composites, tmp_path):
    """Without a box, a search compares whole photos and every photo's regions: the clean object
    finds the photos holding it by a region, ranked by the better score, levels never rising."""
    clean = str(composites["clean"]["daffodil"])
    with lookalike.open(Options(workspace=regions_ws), write=False) as library:
        hits = library.search(SearchRequest(image=clean, top_k=8)).hits
    assert {Path(h.path).stem for h in hits[:2]} == {"daffodil-coffee", "daffodil-chelsea"}
    assert hits[0].chunk == "region" and hits[0].region is not None and hits[0].score >= hits[0].similarity
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len({h.doc_id for h in hits}) == len(hits) == 8  # each photo once
    levels = [h.match for h in hits]
    assert all(levels[i] is not None for i in range(len(levels)))
    # The same photos without regions: whole photos only, nothing framed.
    with lookalike.open(Options(workspace=tmp_path / "ws")) as library:
        library.index([composites["root"]])
        plain = library.search(SearchRequest(image=clean, top_k=8)).hits
    assert all(h.chunk == "whole" and h.region is None for h in plain)


def test_boxes_that_are_not_inside_the_photo_are_refused():
    for box, why in (
        ((0.5, 0.2, 0.4, 0.9), "is not inside the photo"),
        ((0, 0, 1, 1.5), "is not inside the photo"),
        ((0, 0, 1), "must be four numbers"),
        ("a,b,c,d", "must be four numbers"),
        ((0, 0, float("nan"), 1), "must be four numbers"),
    ):
        with pytest.raises(BadInput, match=why):
            SearchRequest(image=b"x", box=box)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="not with tag or face"):
        SearchRequest(tag="dog", box=(0, 0, 1, 1))
    assert SearchRequest(image=b"x", box="0,0.25,1,.75").box == (0, 0.25, 1, 0.75)  # type: ignore[arg-type]


def test_a_workspace_without_regions_says_how_to_get_them(composites, tmp_path):
    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws)) as library:
        library.index([composites["root"] / "orange-coffee.jpg"])
        hint = "index it with `lookalike index --reset --regions PATH`"
        with pytest.raises(ConfigError, match=hint.replace("`", ".")):
            library.search(SearchRequest(image=str(composites["upload"]), box=(0, 0, 1, 1)))
        with pytest.raises(ConfigError, match="holds no regions"):
            library.explain(
                ExplainRequest(
                    str(composites["root"] / "orange-coffee.jpg"), image=str(composites["upload"]), box=(0, 0, 1, 1)
                )
            )
    done = _cli("index", "--regions", "-w", str(ws), str(composites["root"]))
    assert done.returncode != 0 and "--reset" in done.stderr, done.stderr


def test_explain_puts_the_heat_on_the_object(regions_ws, composites):
    root, boxes = composites["root"], composites["boxes"]
    with lookalike.open(Options(workspace=regions_ws), write=False) as library:
        for query, result in (("orange-coffee", "orange-chelsea"), ("daffodil-chelsea", "daffodil-coffee")):
            e = library.explain(
                ExplainRequest(str(root / f"{result}.jpg"), like=str(root / f"{query}.jpg"), box=tuple(boxes[query]))
            )
            d = e.to_dict()
            heat = np.asarray(d["heat"])
            assert d["grid"] == [7, 7] and heat.shape == (7, 7) and heat.max() == 1 and heat.min() >= 0
            assert d["heat_box"] == [0.0625, 0.0625, 0.9375, 0.9375]  # the centred 7/8 the model sees
            assert _inside(_hottest_cell(d["heat"], d["heat_box"]), boxes[result])
            assert d["space"] == REGIONS and d["region"] is not None
            searched = library.search(SearchRequest(like=str(root / f"{query}.jpg"), box=tuple(boxes[query]), top_k=8))
            assert abs(next(h.score for h in searched.hits if Path(h.path).stem == result) - e.score) < 2e-3
            picture = Image.open(__import__("io").BytesIO(e.png()))
            assert picture.size == (320 + 12 + 320, 320)
        # Whole photos: the heat is where they agree, and the score is the search's similarity.
        e = library.explain(ExplainRequest(str(root / "orange-chelsea.jpg"), like=str(root / "orange-coffee.jpg")))
        whole = library.search(SearchRequest(like=str(root / "orange-coffee.jpg"), top_k=8)).hits
        assert (
            e.space == "image"
            and abs(next(h.similarity for h in whole if h.path.endswith("orange-chelsea.jpg")) - e.score) < 2e-3
        )


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*lookalike_cmd(), *args], capture_output=True, text=True)


def test_cli_search_by_box_and_explain(regions_ws, composites, tmp_path):
    root, boxes = composites["root"], composites["boxes"]
    box = ",".join(f"{v:.4f}" for v in boxes["daffodil-chelsea"])
    query = ("search", "-w", str(regions_ws), "--like", str(root / "daffodil-chelsea.jpg"), "--box", box, "-k", "1")
    done = _cli(*query, "--json")
    assert done.returncode == 0, done.stderr
    hit = json.loads(done.stdout)["results"][0]
    assert hit["name"] == "daffodil-coffee.jpg" and hit["chunk"] == "region" and len(hit["region"]) == 4
    text = _cli(*query)
    assert "daffodil-coffee.jpg" in text.stdout and "region" in text.stdout, text.stdout
    out = tmp_path / "why.png"
    pair = (str(root / "daffodil-chelsea.jpg"), str(root / "daffodil-coffee.jpg"))
    done = _cli("explain", "-w", str(regions_ws), *pair, "--box", box, "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    d = json.loads(done.stdout)
    assert _inside(_hottest_cell(d["heat"], d["heat_box"]), boxes["daffodil-coffee"])
    assert Image.open(out).size == (652, 320)
    for bad, why in (("0.5,0.5,0.2,0.9", "is not inside the photo"), ("1,2", "must be four numbers")):
        done = _cli("search", "-w", str(regions_ws), str(composites["upload"]), "--box", bad)
        assert done.returncode == 2 and why in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_api_box_search_and_explain(regions_ws, composites):
    boxes = composites["boxes"]
    with TestClient(
        create_app(ServerConfig(Options(workspace=regions_ws), read_only=True)), base_url="http://127.0.0.1"
    ) as client:
        client_ready(client)
        assert client.get("/api/stats").json()["regions"] is True
        ids = {
            Path(d["name"]).stem: d["doc_id"] for d in client.get("/api/docs", params={"limit": 100}).json()["items"]
        }
        body = {"doc_id": ids["orange-coffee"], "box": boxes["orange-coffee"], "top_k": 2}
        r = client.post("/api/search", json=body)
        assert r.status_code == 200, r.text
        first = r.json()["results"][0]["matches"][0]
        assert first["name"] == "orange-chelsea.jpg" and first["chunk"] == "region" and len(first["region"]) == 4
        with open(composites["upload"], "rb") as f:
            form = {"box": ",".join(map(str, composites["upload_box"])), "top_k": "2"}
            r = client.post("/api/search", files={"file": ("q.jpg", f, "image/jpeg")}, data=form)
        assert {m["name"] for m in r.json()["results"][0]["matches"]} == {"daffodil-coffee.jpg", "daffodil-chelsea.jpg"}
        r = client.post(
            "/api/explain",
            json={"doc_id": ids["orange-coffee"], "result": ids["orange-chelsea"], "box": boxes["orange-coffee"]},
        )
        assert r.status_code == 200, r.text
        d = r.json()
        assert _inside(_hottest_cell(d["heat"], d["heat_box"]), boxes["orange-chelsea"]) and len(d["query_heat"]) == 7
        with open(composites["upload"], "rb") as f:
            r = client.post(
                "/api/explain?format=png", files={"file": ("q.jpg", f)}, data={"result": ids["daffodil-coffee"]}
            )
        assert (
            r.status_code == 200
            and r.headers["content-type"] == "image/png"
            and Image.open(__import__("io").BytesIO(r.content)).height == 320
        )
        for path, payload, status, why in (
            (
                "/api/search",
                {"doc_id": ids["orange-coffee"], "box": [0.5, 0.5, 0.2, 0.9]},
                400,
                "is not inside the photo",
            ),
            ("/api/search", {"doc_id": ids["orange-coffee"], "box": [0, 0, 1]}, 422, "box"),
            ("/api/explain", {"doc_id": ids["orange-coffee"], "result": "nope"}, 404, "no indexed document"),
            ("/api/explain", {"result": ids["orange-coffee"]}, 422, "doc_id"),
        ):
            r = client.post(path, json=payload)
            assert r.status_code == status and why in r.json()["error"]["message"], r.text
        r = client.post("/api/search", files={"file": ("q.jpg", b"x")}, data={"box": "0.9,0.1,0.2,0.5"})
        assert r.status_code == 400 and "is not inside the photo" in r.json()["error"]["message"]


def test_regions_reorder_photos_within_a_match_level_never_above_one():
    """Fused: whole + half the best region's score, then levels (judged on the whole photo) first:
    a photo its region lifts never demotes one whose whole photo is closer by level."""
    from lookalike.document import Result
    from lookalike.library.fusing import fuse, within_levels

    whole = [Result("A", 0.80, 1), Result("B", 0.70, 2), Result("C", 0.50, 3)]
    regions = [Result("C", 0.95, 13, chunk_kind="region"), Result("A", 0.5, 11), Result("D", 0.9, 14)]
    fused = fuse(whole, regions, found={"D": 0.45})
    assert [r.doc_id for r in fused] == ["A", "C", "B", "D"]  # 1.05, 0.975, 0.7 + 0.5 x the lowest region, 0.9
    assert fused[1].chunk_kind == "region" and fused[1].similarity == 0.5  # C shown by its region, judged whole
    assert fused[3].similarity == 0.45  # D: only its regions found it; its whole photo's cosine looked up
    levels = {"A": "similar", "B": "similar", "C": "weak", "D": "weak"}
    ranked = within_levels(fused, [levels[r.doc_id] for r in fused])  # type: ignore[misc]
    assert [r.doc_id for r in ranked] == ["A", "B", "C", "D"]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)  # never rising
    assert len({r.doc_id for r in ranked}) == 4


def test_a_box_is_searched_whole_whatever_its_shape(photos):
    """The normalizer's crop centres the box on a grey square the model's view holds entirely."""
    from lookalike.executors.crafters import crop
    from lookalike.images import model_view

    photo = photos["astronaut"]  # 512 x 512
    square = crop(photo, [0.0, 0.25, 0.75, 0.5])  # 384 x 128 px
    left, top, side = model_view(*square.size)
    assert side >= 384 and square.size[0] == square.size[1]
    pixels, mid = np.asarray(square), square.width // 2
    assert (pixels[round(top) + 2, mid] == 127).all()  # grey above the box, inside the model's view
    box_top = (square.height - 128) // 2
    assert np.array_equal(pixels[box_top + 5, (square.width - 384) // 2 + 5], np.asarray(photo)[128 + 5, 5])
