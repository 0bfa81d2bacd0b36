"""Faces beside the photos end to end: `--faces` through the library, the CLI and the API, on real
faces: one workspace in which a search compares whole photos and a search by face compares faces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

import lookalike
from lookalike import Options, SearchRequest
from lookalike.errors import BadInput
from lookalike.flow.graph import builtin_flow_path
from lookalike.server.app import ServerConfig, create_app

from conftest import REPO, group_photo, lookalike_cmd

pytestmark = pytest.mark.slow

SAME_PERSON = 0.6  # dlib's convention


@pytest.fixture(scope="module")
def faces_dir(people, tmp_path_factory):
    """Obama (5 photos), Biden (1), the astronaut, and a photo without a face."""
    from skimage import data

    root = tmp_path_factory.mktemp("faces")
    for name, blob in people.items():
        if name.endswith(".jpg"):
            (root / name).write_bytes(blob)
    Image.fromarray(data.astronaut()).save(root / "astronaut.png")
    Image.fromarray(data.coffee()).save(root / "coffee.png")
    return root


@pytest.fixture(scope="module")
def face_ws(faces_dir, tmp_path_factory):
    ws = tmp_path_factory.mktemp("face-ws") / "ws"
    with lookalike.open(Options(workspace=ws, preset="faces")) as library:
        summary = library.index([faces_dir])
    assert summary.without_vectors == 0  # the coffee cup: its whole photo's vector, no face
    assert summary.skipped_total == 0
    return ws


def test_one_workspace_holds_the_photos_and_their_faces(face_ws, faces_dir):
    with lookalike.open(Options(workspace=face_ws), write=False) as library:
        spaces = library.workspace.spaces
        assert list(spaces) == ["image", "faces"] and spaces["faces"].metric == "l2" and spaces["faces"].dim == 128
        assert library.info().problems == []  # every space's shards agree with the store
        # A search by image compares whole photos, the photo itself first, faces or not.
        for name in ("obama.jpg", "coffee.png"):
            hits = library.search(SearchRequest(image=str(faces_dir / name), top_k=3)).hits
            assert hits[0].path.endswith(name) and hits[0].match == "same" and hits[0].chunk == "whole"
        # More like a stored photo's second face: the stored vectors, the photo itself left out.
        with pytest.raises(BadInput, match="face 1 asked for, but the photo has 1 face$"):
            library.search(SearchRequest(like=str(faces_dir / "obama.jpg"), face=1))
        like = library.search(SearchRequest(like=str(faces_dir / "obama.jpg"), face=0, top_k=4)).hits
        assert all("obama" in h.path and h.distance < SAME_PERSON for h in like)


def test_the_same_person_ranks_first(face_ws, faces_dir):
    obama = sorted(p for p in faces_dir.glob("obama*.jpg"))
    with lookalike.open(Options(workspace=face_ws), write=False) as library:  # the preset is remembered
        assert library.workspace.preset == "faces"
        results = library.search(SearchRequest(image=str(obama[0]), face=0, top_k=10)).hits
    names = [r.path.rsplit("/", 1)[1] for r in results]
    assert names[0] == obama[0].name and -results[0].score < 1e-3
    same = [r for r in results if "obama" in r.path]
    assert len(same) == len(obama) and all(-r.score < SAME_PERSON for r in same)
    assert names[: len(obama)] == [r.path.rsplit("/", 1)[1] for r in same]  # every Obama before anyone else
    biden = next(r for r in results if "biden" in r.path)
    assert -biden.score > SAME_PERSON
    assert all(r.bbox and r.chunk == "face" for r in results)  # each result carries its matched face


def test_the_astronaut_and_her_edits(face_ws, tmp_path):
    from skimage import data

    original = Image.fromarray(data.astronaut())
    w, h = original.size
    edits = {
        "mirror": ImageOps.mirror(original),
        "half": original.resize((w // 2, h // 2)),
        "grey": ImageOps.grayscale(original),
    }
    paths = []
    for name, img in edits.items():
        paths.append(tmp_path / f"{name}.png")
        img.save(paths[-1])
    paths.append(tmp_path / "jpeg60.jpg")
    original.save(paths[-1], quality=60)
    with lookalike.open(Options(workspace=face_ws), write=False) as library:
        reports = library.search_many(SearchRequest(image=str(p), face=0, top_k=3) for p in paths)
        for path, results in zip(paths, (r.hits for r in reports), strict=True):
            assert results[0].path.endswith("astronaut.png"), path.name
            assert -results[0].score < SAME_PERSON, (path.name, -results[0].score)


def test_choosing_a_face_of_a_group_photo(face_ws, faces_dir, people, tmp_path):
    """Obama large on the left, Biden smaller on the right: --face picks which one is searched."""
    path = group_photo(people, tmp_path / "group.jpg")
    with lookalike.open(Options(workspace=face_ws), write=False) as library:
        largest = library.search(SearchRequest(image=str(path), top_k=1, face=0)).hits
        second = library.search(SearchRequest(image=str(path), top_k=1, face=1)).hits
        with pytest.raises(BadInput, match="face 5 asked for, but the image has 2 faces"):
            library.search(SearchRequest(image=str(path), top_k=1, face=5))
        with pytest.raises(BadInput, match="no face"):
            library.search(SearchRequest(image=str(faces_dir / "coffee.png"), top_k=1, face=0))
    assert "obama" in largest[0].path and "biden" in second[0].path


def test_cli_index_with_faces_then_search_by_face(faces_dir, tmp_path):
    ws = tmp_path / "ws"
    done = subprocess.run(
        [*lookalike_cmd(), "index", "--faces", str(faces_dir), "-w", str(ws)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "indexed without vectors" not in done.stdout
    query = faces_dir / "obama2.jpg"
    found = subprocess.run(
        [*lookalike_cmd(), "search", str(query), "-w", str(ws), "--face", "0", "--json"], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert results[0]["path"] == str(query) and results[0]["distance"] < 1e-3
    assert "obama" in results[1]["path"] and results[1]["distance"] < SAME_PERSON
    text = subprocess.run(
        [*lookalike_cmd(), "search", str(query), "-w", str(ws), "-k", "2", "--face", "0"],
        capture_output=True,
        text=True,
    )
    assert "distance 0.000" in text.stdout and "face at" in text.stdout


def test_missing_faces_extra_is_one_clear_line(faces_dir, tmp_path):
    code = (
        "import sys; sys.modules['dlib'] = None\n"
        "from lookalike.cli import main\n"
        f"sys.exit(main(['index', '--faces', {str(faces_dir)!r}, '-w', {str(tmp_path / 'ws')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr  # ModelError
    assert done.stderr.strip() == "error: face search needs the faces extra: pip install 'lookalike[faces]'"


def test_api_lists_the_query_faces_and_distances(face_ws, faces_dir):
    with TestClient(
        create_app(ServerConfig(Options(workspace=face_ws), read_only=True)), base_url="http://127.0.0.1"
    ) as client:
        for _ in range(600):
            if client.get("/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        assert client.get("/api/stats").json()["faces"] is True
        with open(faces_dir / "obama.jpg", "rb") as f:
            r = client.post("/api/search", files={"file": ("q.jpg", f, "image/jpeg")}, data={"top_k": "3", "face": "0"})
        assert r.status_code == 200, r.text
        result = r.json()["results"][0]
        assert len(result["faces"]) == 1 and len(result["faces"][0]["bbox"]) == 4
        first = result["matches"][0]
        assert first["name"] == "obama.jpg" and first["distance"] < 1e-3 and len(first["bbox"]) == 4
        more = client.post("/api/search", json={"doc_id": first["doc_id"], "top_k": 3, "face": 0}).json()
        assert all("obama" in m["name"] for m in more["results"][0]["matches"])
        with open(faces_dir / "obama.jpg", "rb") as f:
            bad = client.post("/api/search", files={"file": ("q.jpg", f)}, data={"face": "3"})
        assert bad.status_code == 400 and "asked for" in bad.json()["error"]["message"]


def test_the_example_flows_are_the_preset():
    for example, builtin in (("index", "index-faces"), ("faces-query", "faces-query")):
        copy = (REPO / "examples" / "face-search" / f"{example}.yml").read_text()
        assert copy == builtin_flow_path(builtin).read_text()
