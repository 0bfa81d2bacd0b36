"""Duplicates to review over HTTP: the groups, moving files aside and back, removing many at once, and
every write's rules (a folder outside the indexed folders and the trash, a link out, traversal, a
cross-site page, a missing token, a read-only server). In-process, over a workspace of generated
pictures indexed with the tiny encoder (tests/fixtures/tiny): what is checked does not depend on
the model (exact copies are found by their bytes; near duplicates by the real model in test_dupes.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import lookalike
from lookalike import Options
from lookalike.document import Document
from lookalike.server.app import ServerConfig, create_app

from conftest import TINY_FLOWS, client_ready, quadrants

BASE = "http://127.0.0.1"


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Four pictures and an exact copy of one in a subfolder, indexed; a link inside the root that
    leads out of it, to an empty folder."""
    root = tmp_path / "photos"
    (root / "copies").mkdir(parents=True)
    for i in range(4):
        quadrants(i, side=96).save(root / f"p{i}.png")
    shutil.copy2(root / "p0.png", root / "copies" / "p0.png")
    (tmp_path / "outside").mkdir()
    (root / "link-out").symlink_to(tmp_path / "outside")
    with lookalike.open(Options(workspace=tmp_path / "ws", **TINY_FLOWS)) as library:
        assert library.index([root]).indexed == 5
    return tmp_path


def _client(corpus: Path, **server: Any) -> TestClient:
    token = server.pop("token", None)
    config = ServerConfig(Options(workspace=corpus / "ws", token=token, **TINY_FLOWS), **server)
    return TestClient(create_app(config), base_url=BASE)


@pytest.fixture
def client(corpus):
    with _client(corpus) as c:
        client_ready(c)
        yield c


def _id(path: Path) -> str:
    return Document.from_path(str(path)).id


def test_the_groups_name_their_keeper_and_every_file_with_its_urls(client, corpus):
    r = client.get("/api/dupes", params={"threshold": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == 1 and body["docs"] == 5 and body["distinct_shots"] == 0
    (group,) = body["groups"]
    root = corpus / "photos"
    # The same bytes, size and mtime (copy2): the keeper falls to the path.
    assert group["kind"] == "exact" and group["keep"] == _id(root / "copies" / "p0.png")
    first = group["files"][0]
    assert first == {
        "doc_id": group["keep"], "path": str(root / "copies" / "p0.png"), "name": "p0.png", "width": 96,
        "height": 96, "bytes": (root / "p0.png").stat().st_size, "similarity": 1.0, "taken": first["taken"],
        "thumbnail_url": f"/api/docs/{group['keep']}/thumbnail?size=256",
        "image_url": f"/api/docs/{group['keep']}/image",
    }  # fmt: skip
    assert client.get("/api/dupes", params={"threshold": 0}).status_code == 422


def test_move_then_undo_over_http(client, corpus):
    root = corpus / "photos"
    original = (root / "p0.png").read_bytes()
    r = client.post("/api/dupes/move", json={"doc_ids": [_id(root / "p0.png")], "folder": "review"})
    assert r.status_code == 200, r.text
    batch = r.json()
    target = corpus / "ws" / "trash" / "review" / "p0.png"
    assert batch["moved"] == 1 and batch["moves"][0] == {
        "doc_id": _id(root / "p0.png"),
        "from": str(root / "p0.png"),
        "to": str(target),
    }
    assert not (root / "p0.png").exists() and target.read_bytes() == original
    assert client.get(f"/api/docs/{_id(root / 'p0.png')}").status_code == 404
    r = client.post("/api/dupes/undo", json={})
    assert r.status_code == 200, r.text
    assert r.json()["batch"] == batch["batch"] and r.json()["undo"] is True
    assert (root / "p0.png").read_bytes() == original and not target.exists()
    assert client.get(f"/api/docs/{_id(root / 'p0.png')}").status_code == 200
    again = client.post("/api/dupes/undo", json={"batch": batch["batch"]})
    assert again.status_code == 400 and again.json()["error"]["message"] == f"batch {batch['batch']} was already undone"
    assert client.post("/api/dupes/undo").json()["error"]["type"] == "NotFound"


@pytest.mark.parametrize(
    "folder, message",
    [
        ("../x", "may not climb out with '..'"),
        ("review/../../../x", "may not climb out with '..'"),
        ("/tmp/lookalike-refused", "is outside the indexed folders and the trash folder"),
        ("{root}/link-out", "leads out of the indexed folders through a symbolic link"),
        ("{root}/link-out/deeper", "leads out of the indexed folders through a symbolic link"),
        ("{root}/../outside", "may not climb out with '..'"),
        ("{tmp}/outside", "is outside the indexed folders"),
        ("{root}/p1.png", "is a file, not a folder"),
        ("{tmp}/ws", "is inside the workspace"),
    ],
)
def test_a_move_outside_the_indexed_folders_and_the_trash_is_refused_and_nothing_moves(client, corpus, folder, message):
    root = corpus / "photos"
    named = folder.format(root=root, tmp=corpus)
    r = client.post("/api/dupes/move", json={"doc_ids": [_id(root / "p1.png")], "folder": named})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "BadInput" and message in r.json()["error"]["message"]
    assert (root / "p1.png").exists() and os.listdir(corpus / "outside") == []
    assert not os.path.exists("/tmp/lookalike-refused") and not (corpus / "x").exists()
    assert client.get(f"/api/docs/{_id(root / 'p1.png')}").status_code == 200


def test_percent_encoded_dots_are_a_name_inside_the_trash_not_a_way_out(client, corpus):
    """A JSON body is not URL-decoded: "%2e%2e" is a folder's name, and it stays inside the trash."""
    root = corpus / "photos"
    r = client.post("/api/dupes/move", json={"doc_ids": [_id(root / "p2.png")], "folder": "%2e%2e/%2e%2e/x"})
    assert r.status_code == 200, r.text
    trash = (corpus / "ws" / "trash").resolve()
    assert Path(r.json()["moves"][0]["to"]).parent == trash / "%2e%2e" / "%2e%2e" / "x"
    assert client.post("/api/dupes/undo", json={}).status_code == 200 and (root / "p2.png").exists()


def test_the_trash_is_the_one_serve_was_started_with(corpus, tmp_path_factory):
    trash = tmp_path_factory.mktemp("elsewhere") / "trash"
    root = corpus / "photos"
    with _client(corpus, trash=trash) as c:
        client_ready(c)
        r = c.post("/api/dupes/move", json={"doc_ids": [_id(root / "p3.png")], "folder": "dupes"})
        assert r.status_code == 200, r.text
        assert (trash / "dupes" / "p3.png").exists() and not (corpus / "ws" / "trash").exists()
        # The default trash is no longer a place a request may name.
        r = c.post("/api/dupes/move", json={"doc_ids": [_id(root / "p2.png")], "folder": str(corpus / "ws" / "trash")})
        assert r.status_code == 400 and "inside the workspace" in r.json()["error"]["message"]


def test_a_file_changed_since_indexing_is_refused(client, corpus):
    root = corpus / "photos"
    os.utime(root / "p1.png", ns=(1, 1))
    r = client.post("/api/dupes/move", json={"doc_ids": [_id(root / "p2.png"), _id(root / "p1.png")], "folder": "x"})
    assert r.status_code == 400 and "p1.png changed since it was indexed" in r.json()["error"]["message"]
    assert (root / "p2.png").exists() and (root / "p1.png").exists()


def test_remove_takes_several_out_of_the_index_and_leaves_the_files(client, corpus):
    root = corpus / "photos"
    ids = [_id(root / "p1.png"), _id(root / "p2.png")]
    r = client.post("/api/remove", json={"doc_ids": [*ids, "0" * 16]})
    assert r.status_code == 404 and r.json()["error"]["message"] == f"no indexed document {'0' * 16!r}"
    assert all(client.get(f"/api/docs/{i}").status_code == 200 for i in ids)
    r = client.post("/api/remove", json={"doc_ids": ids})
    assert r.status_code == 200 and r.json() == {"removed": 2, "doc_ids": ids}
    assert all(client.get(f"/api/docs/{i}").status_code == 404 for i in ids)
    assert (root / "p1.png").exists() and (root / "p2.png").exists()
    assert client.post("/api/remove", json={"doc_ids": []}).status_code == 422
    assert client.post("/api/remove", json={"doc_ids": ["x"] * 1001}).status_code == 422


@pytest.mark.parametrize(
    "headers", [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}]
)
def test_cross_site_moves_undos_and_removals_are_refused(client, corpus, headers):
    root = corpus / "photos"
    doc = _id(root / "p1.png")
    calls = [
        ("/api/dupes/move", {"doc_ids": [doc], "folder": "x"}),
        ("/api/dupes/undo", {}),
        ("/api/remove", {"doc_ids": [doc]}),
    ]
    for path, body in calls:
        r = client.post(path, json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["type"] == "CrossSiteRequest", (path, r.text)
    assert (root / "p1.png").exists() and client.get(f"/api/docs/{doc}").status_code == 200


def test_writes_need_the_token_and_a_writable_server(corpus):
    root = corpus / "photos"
    body = {"doc_ids": [_id(root / "p1.png")], "folder": "x"}
    with _client(corpus, token="s3cret") as c:
        client_ready(c)
        assert c.post("/api/dupes/move", json=body).status_code == 401
        assert c.post("/api/remove", json={"doc_ids": body["doc_ids"]}).status_code == 401
        ok = c.post("/api/dupes/move", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text
    with _client(corpus, read_only=True) as c:
        client_ready(c)
        r = c.post("/api/dupes/undo", json={})
        assert r.status_code == 403 and "--read-only" in r.json()["error"]["message"]
        assert c.get("/api/dupes").status_code == 200  # reading the groups is no write
