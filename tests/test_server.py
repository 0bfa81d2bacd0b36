"""The REST API, in-process with the real engine, and once through a real uvicorn on loopback."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import struct
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.engine import Engine
from lookalike.server.app import ServerConfig, create_app

from conftest import copy_photos, lookalike_cmd, wait_until_ready

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tuxpaint, tmp_path_factory):
    """A workspace of real photos, plus a symlink inside the root that points outside it."""
    root = tmp_path_factory.mktemp("server")
    photos = copy_photos(
        tuxpaint, root / "photos", per_class=4, classes=["animals/birds", "food/fruit", "space/planets"]
    )
    outside = root / "outside.png"
    shutil.copy(photos[-1], outside)
    os.symlink(outside, root / "photos" / "link-out.png")
    with Engine.open(root / "ws") as engine:
        engine.index([root / "photos"])
    return root, photos


def _client(corpus, **overrides) -> TestClient:
    root, _ = corpus
    config = ServerConfig(workspace=root / "ws", **overrides)
    return TestClient(create_app(config))


def _ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(client.get("/readyz").json())


@pytest.fixture(scope="module")
def client(corpus):
    with _client(corpus, read_only=True) as c:  # leaves the workspace lock to the tests that write
        _ready(c)
        yield c


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_jinabox_body(client, corpus):
    _, photos = corpus
    r = client.post("/api/search", json={"data": [_data_uri(photos[0]), _data_uri(photos[5])], "top_k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"] == 4 and len(body["results"]) == 2
    for photo, result in zip([photos[0], photos[5]], body["results"], strict=True):
        first = result["matches"][0]
        assert first["uri"] == str(photo) and first["score"] == pytest.approx(1.0, abs=1e-4)
        assert set(first) >= {"doc_id", "uri", "name", "score", "tags", "thumbnail_url", "image_url"}
        assert first["tags"][0]["label"] and len(result["matches"]) == 4


def test_multipart_and_more_like_this(client, corpus):
    _, photos = corpus
    with open(photos[2], "rb") as f:
        r = client.post("/api/search", files={"file": ("q.png", f, "image/png")}, data={"top_k": "3"})
    assert r.status_code == 200, r.text
    first = r.json()["results"][0]["matches"][0]
    assert first["name"] == photos[2].name
    similar = client.post("/api/search", json={"doc_id": first["doc_id"], "top_k": 5}).json()
    ids = [m["doc_id"] for m in similar["results"][0]["matches"]]
    assert len(ids) == 5 and first["doc_id"] not in ids  # more like this leaves itself out


def test_tag_search(client):
    r = client.get("/api/search/tags", params={"q": "a", "top_k": 5})
    assert r.status_code == 200
    matches = r.json()["results"][0]["matches"]
    assert 0 < len(matches) <= 5
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)


@pytest.mark.parametrize(
    "call, status, kind",
    [
        (lambda c, p: c.post("/api/search", json={"data": [_data_uri(p)], "top_k": 0}), 422, "ValidationError"),
        (lambda c, p: c.post("/api/search", json={"data": [_data_uri(p)], "top_k": 1001}), 422, "ValidationError"),
        (lambda c, p: c.get("/api/search/tags", params={"q": "cat", "top_k": 5000}), 422, "ValidationError"),
        (
            lambda c, p: c.post("/api/search", files={"file": ("x.png", p.read_bytes())}, data={"top_k": "0"}),
            422,
            "ValidationError",
        ),
        (lambda c, p: c.post("/api/search", json={"data": ["data:image/png;base64,aGVsbG8="]}), 400, "BadInput"),
        (lambda c, p: c.post("/api/search", json={"data": ["data:image/png;base64,@@@"]}), 400, "BadInput"),
        (
            lambda c, p: c.post("/api/search", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "BadInput",
        ),
        (lambda c, p: c.post("/api/search", json={"top_k": 3}), 422, "ValidationError"),
        (lambda c, p: c.post("/api/search", json={"doc_id": "0000000000000000"}), 404, "NotFound"),
        (lambda c, p: c.get("/api/docs/0000000000000000"), 404, "NotFound"),
        (lambda c, p: c.get("/api/nothing/here"), 404, "NotFound"),
    ],
)
def test_errors_are_json_with_the_right_status(client, corpus, call, status, kind):
    _, photos = corpus
    r = call(client, photos[0])
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind and r.json()["error"]["message"]


def _png_bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_non_images_and_bombs_get_400_with_the_reason(client):
    r = client.post("/api/search", files={"file": ("bomb.png", _png_bomb(), "image/png")})
    assert r.status_code == 400 and "decompression bomb" in r.json()["error"]["message"]
    r = client.post("/api/search", files={"file": ("notes.txt", b"just text", "text/plain")})
    assert r.status_code == 400 and "not an image" in r.json()["error"]["message"]


def test_oversized_uploads_get_413(corpus):
    with _client(corpus, max_upload_mb=1) as c:
        _ready(c)
        big = io.BytesIO()
        Image.effect_noise((1200, 1200), 64).convert("RGB").save(big, "PNG")
        assert len(big.getvalue()) > 1024 * 1024
        r = c.post("/api/search", files={"file": ("big.png", big.getvalue(), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
        # A body that streams in without Content-Length is counted as it arrives.
        chunks = (b"x" * 65536 for _ in range(40))
        r = c.post("/api/search", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_thumbnails_are_small_jpegs_cached_on_disk(client, corpus):
    root, photos = corpus
    doc_id = client.post("/api/search", json={"data": [_data_uri(photos[1])], "top_k": 1}).json()
    doc_id = doc_id["results"][0]["matches"][0]["doc_id"]
    r = client.get(f"/api/docs/{doc_id}/thumbnail", params={"size": 128})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 128
    assert list((root / "ws" / "thumbnails").glob(f"{doc_id}-128-*.jpg"))
    assert client.get(f"/api/docs/{doc_id}/thumbnail", params={"size": 5000}).status_code == 422
    image = client.get(f"/api/docs/{doc_id}/image")
    assert image.status_code == 200 and image.content == photos[1].read_bytes()
    meta = client.get(f"/api/docs/{doc_id}").json()
    assert meta["uri"] == str(photos[1]) and meta["width"] > 0


def test_images_outside_the_indexed_roots_are_never_served(client, corpus):
    root, _ = corpus
    link = Engine.open(root / "ws", for_indexing=False)
    try:
        doc = link.workspace.store.docs_by_uri()[str(root / "photos" / "link-out.png")]
    finally:
        link.close()
    assert client.get(f"/api/docs/{doc.id}").status_code == 200  # indexed, and searchable
    assert client.get(f"/api/docs/{doc.id}/image").status_code == 404  # but its file lies outside the root
    assert client.get(f"/api/docs/{doc.id}/thumbnail").status_code == 404
    for path in [
        "/api/docs/../../../etc/passwd",
        "/api/docs/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
        f"/api/docs/{doc.id}/image/../../../../etc/passwd",
    ]:
        r = client.get(path)
        assert r.status_code == 404 and "root:" not in r.text


def test_upload_index_then_delete(corpus, tmp_path):
    root, photos = corpus
    fresh = tmp_path / "new.png"
    Image.open(photos[3]).convert("RGB").rotate(180).save(fresh)
    with _client(corpus) as c:
        _ready(c)
        with open(fresh, "rb") as f:
            r = c.post(
                "/api/index", files=[("files", ("new.png", f, "image/png")), ("files", ("bad.png", b"no", "image/png"))]
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["indexed"] == 1 and body["skipped"] == {"not an image": 1}
        new_id = body["files"][0]["doc_id"]
        assert body["files"][1]["error"]
        with open(fresh, "rb") as f:
            found = c.post("/api/search", files={"file": ("q.png", f)}).json()["results"][0]["matches"][0]
        assert found["doc_id"] == new_id and found["score"] > 0.999  # searchable at once
        assert c.get(f"/api/docs/{new_id}/image").status_code == 200  # uploads are served
        assert c.delete(f"/api/docs/{new_id}").json() == {"removed": 1, "doc_id": new_id}
        assert c.get(f"/api/docs/{new_id}").status_code == 404
        assert not list((root / "ws" / "uploads").iterdir())  # no copy kept of deleted or bad uploads


def test_writes_need_the_token_when_one_is_set(corpus):
    with _client(corpus, token="s3cret") as c:
        _ready(c)
        assert c.delete("/api/docs/0000000000000000").status_code == 401
        bad = c.delete("/api/docs/0000000000000000", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "Unauthorized"
        ok = c.delete("/api/docs/0000000000000000", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 404  # authorised; the document just does not exist


def test_beyond_loopback_writes_are_disabled_without_a_token(corpus):
    with _client(corpus, host="0.0.0.0") as c:
        _ready(c)
        r = c.post("/api/index", files={"files": ("a.png", b"x")})
        assert r.status_code == 403 and "LOOKALIKE_TOKEN" in r.json()["error"]["message"]
        assert c.get("/api/stats").json()["writable"] is False
        assert c.post("/api/search", json={"doc_id": "0000000000000000"}).status_code == 404  # reads still work


def test_read_only_refuses_writes(client):
    r = client.delete("/api/docs/0000000000000000")
    assert r.status_code == 403 and "--read-only" in r.json()["error"]["message"]


def test_concurrent_searches_are_micro_batched(corpus):
    _, photos = corpus
    queries = photos[:-1]  # the last photo has an exact copy (the symlink's target): a tie at 1.0
    payloads = [{"data": [_data_uri(p)], "top_k": 2} for p in queries]
    for wait_ms, batched in [(50.0, True), (0.0, False)]:
        with _client(corpus, batch_wait_ms=wait_ms) as c:
            _ready(c)
            batcher = c.app.state.service.batcher
            before = (batcher.batches, batcher.batched_queries)
            with ThreadPoolExecutor(len(queries)) as pool:
                results = list(pool.map(lambda p: c.post("/api/search", json=p).json(), payloads))
            for photo, body in zip(queries, results, strict=True):
                assert body["results"][0]["matches"][0]["uri"] == str(photo)  # each got its own answer
            batches = batcher.batches - before[0]
            n = batcher.batched_queries - before[1]
            assert n == len(queries)
            assert (batches < n) if batched else (batches == n)


def test_health_metrics_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    client.get("/api/stats")
    text = client.get("/metrics").text
    assert 'lookalike_http_requests_total{method="GET",route="/api/stats",status="200"}' in text
    assert "lookalike_http_request_duration_seconds_bucket" in text
    assert "lookalike_documents " in text
    spec = client.get("/openapi.json").json()
    assert {"/api/search", "/api/search/tags", "/api/index", "/api/docs/{doc_id}/thumbnail"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_on_loopback(corpus):
    root, photos = corpus
    port = _free_port()
    proc = subprocess.Popen(
        [*lookalike_cmd(), "serve", "-w", str(root / "ws"), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, proc)
        r = httpx.post(f"{base}/api/search", json={"data": [_data_uri(photos[4])], "top_k": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["matches"][0]["uri"] == str(photos[4])
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"serving {root / 'ws'} at http://127.0.0.1:{port}/" in proc.stderr.read()
