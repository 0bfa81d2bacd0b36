"""The REST API with the real model over real photos: what depends on them (a real photo finds
itself with its ImageNet tags, match levels from the collection's calibration, tag search), in-process
and once through `lookalike serve` on loopback.

The rules that do not depend on the model (errors, limits, Host/Origin, tokens, CSP, the schema,
what is served) are in test_server_rules.py, over the tiny encoder, in the fast tier.
"""

from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient

import lookalike
from lookalike import Options
from lookalike.server.app import ServerConfig, create_app

from conftest import (
    check_a_served_workspace,
    client_ready,
    copy_photos,
    data_uri,
    free_port,
    lookalike_cmd,
    wait_until_ready,
)

pytestmark = pytest.mark.slow

# Starlette's TestClient says "Host: testserver" by default, which a loopback server refuses (DNS rebinding).
BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def corpus(tuxpaint, model_dir, tmp_path_factory):
    """A workspace of real photos: four birds, four fruit, four planets."""
    root = tmp_path_factory.mktemp("server")
    photos = copy_photos(
        tuxpaint, root / "photos", per_class=4, classes=["animals/birds", "food/fruit", "space/planets"]
    )
    with lookalike.open(Options.from_env(workspace=root / "ws")) as library:
        library.index([root / "photos"])
    return root, photos


@pytest.fixture(scope="module")
def client(corpus):
    root, _ = corpus
    config = ServerConfig(Options.from_env(workspace=root / "ws"), read_only=True)
    with TestClient(create_app(config), base_url=BASE) as c:
        client_ready(c)
        yield c


def test_match_levels_and_min_match(client, corpus):
    """The levels come from the collection's calibration: birds, fruit and planets are mostly not alike.
    (An unknown min_match and the tag words: test_server_rules.py.)"""
    _, photos = corpus
    body = {"data": [data_uri(photos[0])], "top_k": 12}
    every = client.post("/api/search", json=body).json()["results"][0]["matches"]
    assert every[0]["match"] == "same" and {m["match"] for m in every} <= {"same", "near_duplicate", "similar", "weak"}
    assert "weak" in {m["match"] for m in every}  # birds, fruit and planets: most are not alike
    kept = client.post("/api/search", json=body | {"min_match": "similar"}).json()["results"][0]["matches"]
    assert [m["doc_id"] for m in kept] == [m["doc_id"] for m in every if m["match"] != "weak"]
    with open(photos[0], "rb") as f:  # the multipart form takes it too
        r = client.post("/api/search", files={"file": ("q.png", f, "image/png")}, data={"min_match": "same"})
    assert r.status_code == 200 and {m["match"] for m in r.json()["results"][0]["matches"]} == {"same"}


def test_tag_search(client):
    r = client.get("/api/search/tags", params={"q": "a", "top_k": 5})
    assert r.status_code == 200
    matches = r.json()["results"][0]["matches"]
    assert 0 < len(matches) <= 5
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)


def test_a_real_server_on_loopback(corpus):
    """`lookalike serve` with the real model: it loads, warms up and finds a real photo, and its flags
    reach the server. (The same rules over the tiny encoder, in the fast tier: test_server_rules.py.)"""
    root, photos = corpus
    port = free_port()
    proc = subprocess.Popen(
        [*lookalike_cmd(), "serve", "-w", str(root / "ws"), "--port", str(port), "--host", "127.0.0.1"]
        + ["--allowed-host", "photos.example"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, proc)
        check_a_served_workspace(base, port, photos)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"serving {root / 'ws'} at http://127.0.0.1:{port}/" in proc.stderr.read()
