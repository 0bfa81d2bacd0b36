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
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.engine import Engine, query_doc
from lookalike.server.app import ServerConfig, create_app
from lookalike.server.batching import SearchBatcher

from conftest import copy_photos, lookalike_cmd, wait_until_ready

pytestmark = pytest.mark.slow

# Starlette's TestClient says "Host: testserver" by default, which a loopback server refuses (DNS rebinding).
BASE = "http://127.0.0.1"


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
    return TestClient(create_app(config), base_url=BASE)


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


def test_match_levels_and_min_match(client, corpus):
    _, photos = corpus
    body = {"data": [_data_uri(photos[0])], "top_k": 12}
    every = client.post("/api/search", json=body).json()["results"][0]["matches"]
    assert every[0]["match"] == "same" and {m["match"] for m in every} <= {"same", "near_duplicate", "similar", "weak"}
    assert "weak" in {m["match"] for m in every}  # birds, fruit and planets: most are not alike
    kept = client.post("/api/search", json=body | {"min_match": "similar"}).json()["results"][0]["matches"]
    assert [m["doc_id"] for m in kept] == [m["doc_id"] for m in every if m["match"] != "weak"]
    with open(photos[0], "rb") as f:  # the multipart form takes it too
        r = client.post("/api/search", files={"file": ("q.png", f, "image/png")}, data={"min_match": "same"})
    assert r.status_code == 200 and {m["match"] for m in r.json()["results"][0]["matches"]} == {"same"}
    r = client.post("/api/search", json=body | {"min_match": "close"})
    assert r.status_code == 422 and "min_match" in r.json()["error"]["message"], r.text
    r = client.get("/api/tags", params={"prefix": "bi"})
    assert r.status_code == 200 and r.json()["suggestions"][0] == {"word": "bird", "classes": 59}


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


def test_an_empty_number_field_or_a_blank_tag_query_is_refused(client, corpus):
    _, photos = corpus
    for field in ("top_k", "face"):
        with open(photos[2], "rb") as f:
            r = client.post("/api/search", files={"file": ("q.png", f, "image/png")}, data={field: ""})
        assert r.status_code == 422 and field in r.json()["error"]["message"], r.text
    r = client.get("/api/search/tags", params={"q": "\n "})
    assert r.status_code == 422 and "q" in r.json()["error"]["message"], r.text


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
    root, photos = corpus
    queries = photos[:-1]  # the last photo has an exact copy (the symlink's target): a tie at 1.0
    with Engine.open(root / "ws", for_indexing=False) as engine:
        # Queries that queue while the flow is busy share the next batch (up to max_batch); the
        # batcher is started only once all of them wait, so how they group is deterministic.
        for max_batch, batches in [(len(queries), 1), (4, -(-len(queries) // 4)), (1, len(queries))]:
            batcher = SearchBatcher(engine, max_batch=max_batch, workers=1, start=False)
            with ThreadPoolExecutor(len(queries)) as pool:
                futures = [pool.submit(batcher.search, query_doc(0, p.read_bytes()), 2) for p in queries]
                deadline = time.monotonic() + 30  # (max_batch 1: each search runs in its caller's thread)
                while batcher.enabled and batcher.queued < len(queries) and time.monotonic() < deadline:
                    time.sleep(0.01)
                batcher.start()
                results = [f.result(timeout=60) for f in futures]
            batcher.close()
            for photo, rs in zip(queries, results, strict=True):
                assert rs[0].uri == str(photo) and len(rs) == 2  # each got its own answer
            assert (batcher.batches, batcher.batched_queries) == (batches, len(queries))


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


def test_a_lifespan_can_start_again_on_the_same_app(corpus):
    """A second lifespan (a test client entered twice, schemathesis between tests) loads the engine
    anew: requests meanwhile get 503, never the closed database or the stopped batcher of the first."""
    _, photos = corpus
    app = create_app(ServerConfig(workspace=corpus[0] / "ws"))
    for _ in range(2):
        with TestClient(app, base_url=BASE) as c:
            _ready(c)
            r = c.post("/api/search", json={"data": [_data_uri(photos[0])], "top_k": 1})
            assert r.status_code == 200 and r.json()["results"][0]["matches"][0]["uri"] == str(photos[0])
            assert c.delete("/api/docs/0000000000000000").status_code == 404  # the writer is open again
        assert app.state.service.engine is None  # closed and forgotten


# --- web security --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, ok",
    [
        ("127.0.0.1", True),
        ("127.0.0.1:45678", True),
        ("127.8.9.10:1", True),
        ("localhost:45678", True),
        ("LocalHost", True),
        ("photos.localhost", True),
        ("[::1]:45678", True),
        ("[::1]", True),
        ("evil.example", False),
        ("evil.example:45678", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.evil.example", False),
        ("10.0.0.1", False),
        ("[::2]:80", False),
        ("::1", False),  # IPv6 without brackets is no Host header
        ("127.0.0.1:80:80", False),
        ("127.0.0.1:x", False),
        ("evil@127.0.0.1", False),
        ("", False),
    ],
)
def test_on_loopback_only_loopback_host_names_are_answered(client, host, ok):
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 still says its own name."""
    for path in ("/api/stats", "/healthz", "/"):
        r = client.get(path, headers={"Host": host})
        if ok:
            assert r.status_code == 200, (host, path, r.text)
        else:
            assert r.status_code == 400, (host, path)
            error = r.json()["error"]
            assert error["type"] == "BadHost" and "--allowed-host" in error["message"]


def test_allowed_hosts_add_names_on_loopback_and_are_the_only_names_beyond_it(corpus):
    with _client(corpus, read_only=True, allowed_hosts=("Photos.Example",)) as c:
        assert c.get("/healthz", headers={"Host": "photos.example:45678"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "localhost"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "other.example"}).status_code == 400
    with _client(corpus, read_only=True, host="0.0.0.0") as c:  # beyond loopback, nothing given: any name
        assert c.get("/healthz", headers={"Host": "192.168.1.20:45678"}).status_code == 200
    with _client(corpus, read_only=True, host="0.0.0.0", allowed_hosts=("photos.example",)) as c:
        assert c.get("/healthz", headers={"Host": "photos.example"}).status_code == 200
        r = c.get("/healthz", headers={"Host": "127.0.0.1"})
        assert r.status_code == 400 and "photos.example" in r.json()["error"]["message"]


def _jpeg(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").rotate(90, expand=True).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a page on 127.0.0.1:OTHERPORT is same-site
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "https://127.0.0.1"},
        {"Origin": "null"},  # sandboxed frames, file: pages
        {"Origin": "junk"},
        {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "cross-site"},
    ],
)
def test_cross_site_writes_are_refused_even_on_loopback_without_a_token(corpus, headers):
    _, photos = corpus
    with _client(corpus) as c:
        _ready(c)
        before = c.get("/api/stats").json()["docs"]
        victim = c.post("/api/search", json={"data": [_data_uri(photos[0])], "top_k": 1}).json()
        victim = victim["results"][0]["matches"][0]["doc_id"]
        r = c.post("/api/index", files={"files": ("x.jpg", _jpeg(photos[1]), "image/jpeg")}, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["type"] == "CrossSiteRequest"
        assert c.delete(f"/api/docs/{victim}", headers=headers).status_code == 403
        assert c.get("/api/stats").json()["docs"] == before
        assert c.get(f"/api/docs/{victim}").status_code == 200
        assert not list((corpus[0] / "ws" / "uploads").glob("*"))  # refused before anything was saved


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin", "Origin": BASE},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": "http://127.0.0.1:80"},
        {"Origin": "HTTP://127.0.0.1"},
    ],
)
def test_same_origin_writes_pass(corpus, headers):
    with _client(corpus) as c:
        _ready(c)
        r = c.delete("/api/docs/0000000000000000", headers=headers)
        assert r.status_code == 404, r.text  # allowed through; the document just does not exist


def test_origin_must_match_the_host_the_request_was_addressed_to(corpus):
    with _client(corpus) as c:
        _ready(c)
        same = {"Host": "localhost:8000", "Origin": "http://localhost:8000"}
        assert c.delete("/api/docs/0000000000000000", headers=same).status_code == 404
        other = {"Host": "localhost:8000", "Origin": "http://127.0.0.1:8000"}
        assert c.delete("/api/docs/0000000000000000", headers=other).status_code == 403


def test_odd_authorization_headers_get_401_not_500(corpus):
    with _client(corpus, token="s3cret") as c:
        _ready(c)
        for value in [b"Bearer s3cr\xe9t", b"Bearer \xff\xfe", b"", b"Basic s3cret", b"Bearer s3cret "]:
            r = c.delete("/api/docs/0000000000000000", headers=[(b"authorization", value)])
            assert r.status_code == 401, (value, r.text)
        ok = c.delete("/api/docs/0000000000000000", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 404


def test_the_page_has_a_content_security_policy_and_everything_is_nosniff(client):
    for path in ("/", "/static/app.js", "/static/style.css"):
        r = client.get(path)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    for path in ("/api/stats", "/api/nothing/here", "/openapi.json", "/docs", "/metrics"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "content-security-policy" not in r.headers, path  # /docs loads Swagger UI from a CDN
    assert client.get("/healthz", headers={"Host": "evil.example"}).headers["x-content-type-options"] == "nosniff"
    # The page needs nothing the policy forbids: no inline script or style, no handler attributes.
    inline: list[str] = []

    class Inline(HTMLParser):
        def handle_starttag(self, tag, attrs):
            names = {name for name, _ in attrs}
            if tag == "style" or (tag == "script" and "src" not in names):
                inline.append(tag)
            inline.extend(f"{tag} {n}" for n in names if n == "style" or n.startswith("on"))

    Inline().feed(client.get("/").text)
    assert inline == []


def test_uploads_get_safe_names_and_register_one_root(corpus):
    """Five uploads: named by content with an image suffix only, and the uploads folder is one root,
    so neither the roots nor manifest.json grow per upload."""
    root, photos = corpus
    ws = root / "ws"
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0), (0, 250, 250)]
    names = ["../../../etc/evil.PNG", "run.sh", "photo.JPEG", "noext", "a.png.exe"]
    ids = []
    with _client(corpus) as c:
        _ready(c)
        for i, (colour, name) in enumerate(zip(colours, names, strict=True)):
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), colour).save(buf, "PNG")
            r = c.post("/api/index", files={"files": (name, buf.getvalue(), "image/png")})
            assert r.status_code == 200 and r.json()["indexed"] == 1, r.text
            assert r.json()["files"][0]["name"] == name
            ids.append(r.json()["files"][0]["doc_id"])
            if i == 0:
                roots = c.app.state.service.engine.workspace.roots
                manifest_size = (ws / "manifest.json").stat().st_size
        engine = c.app.state.service.engine
        assert engine.workspace.roots == roots
        assert str(ws.resolve() / "uploads") in roots or str(ws.absolute() / "uploads") in roots
        assert (ws / "manifest.json").stat().st_size == manifest_size
        stored = sorted(p.name for p in (ws / "uploads").iterdir())
        suffixes = sorted(p.split(".", 1)[1] for p in stored)
        assert suffixes == ["img", "img", "img", "jpeg", "png"]
        assert all(len(p.split(".")[0]) == 20 and set(p.split(".")[0]) <= set("0123456789abcdef") for p in stored)
        assert not list(ws.parent.glob("etc")) and not (ws / "etc").exists()
        for doc_id in ids:  # served, then cleaned up for the other tests
            assert c.get(f"/api/docs/{doc_id}/image").status_code == 200
            assert c.delete(f"/api/docs/{doc_id}").json()["removed"] == 1
        assert not list((ws / "uploads").iterdir())


def test_file_names_that_are_not_utf8_are_shown_escaped_and_served(tmp_path, corpus):
    _, photos = corpus
    folder = tmp_path / "photos"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    shutil.copy(photos[0], odd)
    with Engine.open(tmp_path / "ws") as engine:
        assert engine.index([folder]).indexed == 1
    with TestClient(create_app(ServerConfig(workspace=tmp_path / "ws", read_only=True)), base_url=BASE) as c:
        _ready(c)
        r = c.post("/api/search", json={"data": [_data_uri(photos[0])], "top_k": 1})
        assert r.status_code == 200, r.text
        match = r.json()["results"][0]["matches"][0]
        assert match["name"] == "caf\\xe9.png" and match["uri"] == str(folder) + "/caf\\xe9.png"
        meta = c.get(f"/api/docs/{match['doc_id']}")
        assert meta.status_code == 200 and meta.json()["name"] == "caf\\xe9.png"
        tagged = c.get("/api/search/tags", params={"q": match["tags"][0]["label"]})
        assert tagged.status_code == 200 and tagged.json()["results"][0]["matches"][0]["name"] == "caf\\xe9.png"
        image = c.get(f"/api/docs/{match['doc_id']}/image")  # from the real path, bytes and all
        assert image.status_code == 200 and image.content == photos[0].read_bytes()
        assert c.get(f"/api/docs/{match['doc_id']}/thumbnail").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_server_on_loopback(corpus):
    root, photos = corpus
    port = _free_port()
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
        r = httpx.post(f"{base}/api/search", json={"data": [_data_uri(photos[4])], "top_k": 3}, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["matches"][0]["uri"] == str(photos[4])
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # DNS rebinding: the name a browser puts in Host is the attacker's, even when it resolves here.
        evil = httpx.get(f"{base}/api/stats", headers={"Host": "evil.example"}, timeout=10)
        assert evil.status_code == 400 and evil.json()["error"]["type"] == "BadHost"
        assert httpx.get(f"{base}/api/stats", headers={"Host": f"photos.example:{port}"}, timeout=10).is_success
        # A cross-site form post, as a browser marks it, changes nothing.
        before = httpx.get(f"{base}/api/stats", timeout=10).json()["docs"]
        r = httpx.post(
            f"{base}/api/index",
            files={"files": ("x.png", photos[0].read_bytes(), "image/png")},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:1"},
            timeout=30,
        )
        assert r.status_code == 403 and r.json()["error"]["type"] == "CrossSiteRequest"
        assert httpx.get(f"{base}/api/stats", timeout=10).json()["docs"] == before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"serving {root / 'ws'} at http://127.0.0.1:{port}/" in proc.stderr.read()
