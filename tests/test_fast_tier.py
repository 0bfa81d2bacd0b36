"""The library, the server and the CLI with a tiny encoder (tests/fixtures/tiny, loaded through
py_modules): real flows, SQLite, FAISS, FastAPI and subprocesses, no model, in seconds.

The real-model versions of these paths are in test_index_search.py, test_server.py and test_cli.py.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import lookalike
from lookalike import Options, SearchRequest
from lookalike.server.app import ServerConfig, create_app

from conftest import lookalike_cmd

TINY = Path(__file__).parent / "fixtures" / "tiny"
FLOWS = {"index_flow": TINY / "index.yml", "query_flow": TINY / "query.yml"}


def _picture(seed: int) -> Image.Image:
    """A distinct picture per seed: four coloured quadrants."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((64, 64, 3), np.uint8)
    for y in (0, 32):
        for x in (0, 32):
            arr[y : y + 32, x : x + 32] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pictures"
    root.mkdir()
    for i in range(8):
        _picture(i).save(root / f"p{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return root


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_the_library_indexes_searches_and_removes(folder, tmp_path):
    with lookalike.open(Options(workspace=tmp_path / "ws", **FLOWS)) as library:
        summary = library.index([folder])
        assert (summary.indexed, summary.skipped_total) == (8, 1)
        assert library.index([folder]).encoded == 0  # incremental
        results = library.search(SearchRequest(image=str(folder / "p3.png"), top_k=3)).hits
        assert results[0].path == str(folder / "p3.png") and results[0].score > 0.999
        assert library.remove([folder / "p3.png"]) == 1
        results = library.search(SearchRequest(image=_png(_picture(3)), top_k=3)).hits
        assert str(folder / "p3.png") not in {r.path for r in results}
        assert library.workspace.verify() == []


def test_a_query_flow_searches_the_workspace_s_shards_whatever_it_restates(folder, tmp_path):
    """The shard pods are the workspace's shards: a query flow that says 3 searches the 2 there are."""
    with lookalike.open(Options(workspace=tmp_path / "ws", **FLOWS)) as library:
        library.index([folder])
        expected = library.search(SearchRequest(image=str(folder / "p2.png"), top_k=8)).hits
    three = tmp_path / "query-3.yml"
    three.write_text((TINY / "query.yml").read_text().replace("shards: 2", "shards: 3"))
    (tmp_path / "tiny_encoder.py").write_text((TINY / "tiny_encoder.py").read_text())
    with lookalike.open(Options(workspace=tmp_path / "ws", query_flow=three), write=False) as library:
        results = library.search(SearchRequest(image=str(folder / "p2.png"), top_k=8)).hits
        assert library.flows.flow("query").pods["chunk_indexer"].config.shards == 2
        assert [r.doc_id for r in results] == [r.doc_id for r in expected]
        assert sorted(d["shard"] for d in library.inspector.stats().info.indexes) == [0, 1]


def test_the_server_searches_uploads_and_deletes(folder, tmp_path):
    with lookalike.open(Options(workspace=tmp_path / "ws", **FLOWS)) as library:
        library.index([folder])
    config = ServerConfig(Options(workspace=tmp_path / "ws", **FLOWS))
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        for _ in range(200):  # the engine loads in the background
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        uri = "data:image/png;base64," + base64.b64encode(_png(_picture(5))).decode()
        r = client.post("/api/search", json={"data": [uri], "top_k": 2})
        assert r.status_code == 200, r.text
        best = r.json()["results"][0]["matches"][0]
        assert best["name"] == "p5.png" and best["similarity"] == best["score"] > 0.999
        r = client.post("/api/index", files={"files": ("new.png", _png(_picture(42)), "image/png")})
        assert r.status_code == 200 and r.json()["indexed"] == 1, r.text
        doc_id = r.json()["files"][0]["doc_id"]
        assert client.get("/api/stats").json()["docs"] == 9
        assert client.delete(f"/api/docs/{doc_id}").json() == {"removed": 1, "doc_id": doc_id}
        assert client.get(f"/api/docs/{doc_id}").status_code == 404


def test_the_cli_indexes_and_searches(folder, tmp_path):
    ws = str(tmp_path / "ws")
    flags = ["--flow", str(FLOWS["index_flow"]), "--query-flow", str(FLOWS["query_flow"])]
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(folder), "-w", ws, *flags, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["indexed"] == 8 and summary["skipped_files"][0]["path"].endswith("broken.png")
    query = str(folder / "p1.png")
    found = subprocess.run(
        [*lookalike_cmd(), "search", query, "-w", ws, "-k", "2", "--json"], capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0, found.stderr
    first = json.loads(found.stdout)["results"][0]
    assert first["path"] == query and first["rank"] == 1 and first["similarity"] > 0.999
    info = subprocess.run([*lookalike_cmd(), "info", "-w", ws, "--json"], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr  # a 48-d workspace: info takes the size from it
    assert json.loads(info.stdout)["consistent"] and json.loads(info.stdout)["docs"] == 8
