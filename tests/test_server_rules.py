"""The REST API's rules, whatever the model: errors as JSON, limits, Host, Origin and Sec-Fetch-Site,
tokens and read-only, CSP and headers, the schema, metrics, readiness, what is served and how uploads
are named. In-process, and once through a real uvicorn on loopback, over a workspace of generated
pictures indexed with the tiny encoder (tests/fixtures/tiny, loaded through py_modules): no model.

What needs the real model and real photos (match levels, ImageNet tags, a real photo finding
itself) is in test_server.py, marked slow.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

import lookalike
from lookalike import Options, SearchRequest
from lookalike.library.searching import Searcher
from lookalike.server.app import ServerConfig, create_app

from conftest import (
    TINY_FLOWS,
    check_a_served_workspace,
    client_ready,
    data_uri,
    free_port,
    quadrants,
    wait_until_ready,
)

FLOWS = TINY_FLOWS
# Starlette's TestClient says "Host: testserver" by default, which a loopback server refuses (DNS rebinding).
BASE = "http://127.0.0.1"
# What ServerConfig itself takes; every other override is one of the library's Options.
SERVER_FIELDS = ("host", "read_only", "allowed_hosts")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Twelve pictures indexed with the tiny encoder, plus a symlink inside the root that points outside it."""
    root = tmp_path_factory.mktemp("server-rules")
    (root / "photos").mkdir()
    photos = []
    for i in range(12):
        path = root / "photos" / f"p{i:02d}.png"
        quadrants(i, side=192).save(path)  # larger than a 128-pixel thumbnail
        photos.append(path)
    outside = root / "outside.png"
    shutil.copy(photos[-1], outside)
    os.symlink(outside, root / "photos" / "link-out.png")
    with lookalike.open(Options(workspace=root / "ws", **FLOWS)) as library:
        assert library.index([root / "photos"]).indexed == 13
    return root, photos


def _config(workspace: Path, **overrides: Any) -> ServerConfig:
    server = {k: overrides.pop(k) for k in SERVER_FIELDS if k in overrides}
    return ServerConfig(Options(workspace=workspace, **FLOWS, **overrides), **server)


def _client(corpus, **overrides) -> TestClient:
    root, _ = corpus
    return TestClient(create_app(_config(root / "ws", **overrides)), base_url=BASE)


@pytest.fixture(scope="module")
def client(corpus):
    with _client(corpus, read_only=True) as c:  # leaves the workspace lock to the tests that write
        client_ready(c)
        yield c


def test_jinabox_body(client, corpus):
    _, photos = corpus
    r = client.post("/api/search", json={"data": [data_uri(photos[0]), data_uri(photos[5])], "top_k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"] == 4 and len(body["results"]) == 2
    for photo, result in zip([photos[0], photos[5]], body["results"], strict=True):
        first = result["matches"][0]
        assert first["uri"] == str(photo) and first["score"] == pytest.approx(1.0, abs=1e-4)
        assert set(first) >= {"doc_id", "uri", "name", "score", "tags", "thumbnail_url", "image_url"}
        assert first["tags"][0]["label"] and len(result["matches"]) == 4


def test_top_k_left_out_is_the_server_s_own(corpus):
    """The schema's top_k default is None: the server's options decide (LOOKALIKE_TOP_K, else 10)."""
    _, photos = corpus
    with _client(corpus, read_only=True, top_k=3) as c:
        client_ready(c)
        body = c.post("/api/search", json={"data": [data_uri(photos[0])]}).json()
        assert body["top_k"] == 3 and len(body["results"][0]["matches"]) == 3


def test_an_unknown_min_match_is_refused_and_tag_words_are_suggested(client, corpus):
    _, photos = corpus
    body = {"data": [data_uri(photos[0])], "top_k": 12}
    r = client.post("/api/search", json=body | {"min_match": "close"})
    assert r.status_code == 422 and "min_match" in r.json()["error"]["message"], r.text
    # Suggestions are the words the collection holds, each with the photos a tag search finds (the
    # tiny encoder is sure of no tag, so there may be none: test_quality checks them on the real model).
    r = client.get("/api/tags", params={"prefix": "b"})
    assert r.status_code == 200, r.text
    for s in r.json()["suggestions"]:
        found = client.get("/api/search/tags", params={"q": s["word"], "top_k": 1000}).json()["results"][0]
        assert s["photos"] == found["total"] == len(found["matches"]) > 0, s


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


@pytest.mark.parametrize(
    "call, status, kind",
    [
        (lambda c, p: c.post("/api/search", json={"data": [data_uri(p)], "top_k": 0}), 422, "ValidationError"),
        (lambda c, p: c.post("/api/search", json={"data": [data_uri(p)], "top_k": 1001}), 422, "ValidationError"),
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
        (lambda c, p: c.put("/api/search", json={}), 405, "MethodNotAllowed"),
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
        client_ready(c)
        big = io.BytesIO()
        Image.effect_noise((1200, 1200), 64).convert("RGB").save(big, "PNG", compress_level=1)  # fast, still big
        assert len(big.getvalue()) > 1024 * 1024
        r = c.post("/api/search", files={"file": ("big.png", big.getvalue(), "image/png")})
        assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"
        # A body that streams in without Content-Length is counted as it arrives.
        chunks = (b"x" * 65536 for _ in range(40))
        r = c.post("/api/search", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_thumbnails_are_small_jpegs_cached_on_disk(client, corpus):
    root, photos = corpus
    doc_id = client.post("/api/search", json={"data": [data_uri(photos[1])], "top_k": 1}).json()
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
    with lookalike.open(Options(workspace=root / "ws", **FLOWS), write=False) as reader:
        doc = reader.workspace.store.docs_by_uri()[str(root / "photos" / "link-out.png")]
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
        client_ready(c)
        with open(fresh, "rb") as f:
            r = c.post(
                "/api/index", files=[("files", ("new.png", f, "image/png")), ("files", ("bad.png", b"no", "image/png"))]
            )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["indexed"] == 1 and body["skipped"] == {"not an image": 1}
        # The full index report, as `lookalike index --json` prints it, besides each file's fate.
        assert {"scanned", "updated", "unchanged", "removed", "skipped_files", "encoded", "docs"} <= set(body)
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
        client_ready(c)
        assert c.delete("/api/docs/0000000000000000").status_code == 401
        bad = c.delete("/api/docs/0000000000000000", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "Unauthorized"
        ok = c.delete("/api/docs/0000000000000000", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 404  # authorised; the document just does not exist


def test_beyond_loopback_writes_are_disabled_without_a_token(corpus):
    with _client(corpus, host="0.0.0.0") as c:
        client_ready(c)
        r = c.post("/api/index", files={"files": ("a.png", b"x")})
        assert r.status_code == 403 and "LOOKALIKE_TOKEN" in r.json()["error"]["message"]
        assert c.get("/api/stats").json()["writable"] is False
        assert c.post("/api/search", json={"doc_id": "0000000000000000"}).status_code == 404  # reads still work


def test_read_only_refuses_writes(client):
    r = client.delete("/api/docs/0000000000000000")
    assert r.status_code == 403 and "--read-only" in r.json()["error"]["message"]


def test_concurrent_searches_are_micro_batched(corpus):
    root, photos = corpus
    queries = photos[:-1]  # the last picture has an exact copy (the symlink's target): a tie at 1.0
    with lookalike.open(Options(workspace=root / "ws", **FLOWS), write=False) as library:
        # Queries that queue while the flow is busy share the next batch (up to max_batch); the
        # batcher is started only once all of them wait, so how they group is deterministic.
        for max_batch, batches in [(len(queries), 1), (4, -(-len(queries) // 4)), (1, len(queries))]:
            searcher = Searcher(
                library.workspace, library.flows, library.options, max_batch=max_batch, workers=1, start=False
            )
            batcher = searcher.batcher
            with ThreadPoolExecutor(len(queries)) as pool:
                futures = [pool.submit(searcher.search, SearchRequest(image=p.read_bytes(), top_k=2)) for p in queries]
                deadline = time.monotonic() + 30  # (max_batch 1: each search runs in its caller's thread)
                while batcher.enabled and batcher.queued < len(queries) and time.monotonic() < deadline:
                    time.sleep(0.01)
                batcher.start()
                results = [f.result(timeout=60).hits for f in futures]
            searcher.close()
            for photo, rs in zip(queries, results, strict=True):
                assert rs[0].path == str(photo) and len(rs) == 2  # each got its own answer
            assert (batcher.batches, batcher.batched) == (batches, len(queries))


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
    """A second lifespan (a test client entered twice, schemathesis between tests) loads the library
    anew: requests meanwhile get 503, never the closed database or the stopped batcher of the first."""
    _, photos = corpus
    app = create_app(_config(corpus[0] / "ws"))
    for _ in range(2):
        with TestClient(app, base_url=BASE) as c:
            client_ready(c)
            r = c.post("/api/search", json={"data": [data_uri(photos[0])], "top_k": 1})
            assert r.status_code == 200 and r.json()["results"][0]["matches"][0]["uri"] == str(photos[0])
            assert c.delete("/api/docs/0000000000000000").status_code == 404  # the writer is open again
        assert app.state.service.library is None  # closed and forgotten


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


@pytest.fixture(scope="module")
def writer(corpus):
    """A writable server (loopback, no token) for the tests that only try writes that must be refused
    or that find nothing to change; the tests that do write open their own."""
    with _client(corpus) as c:
        client_ready(c)
        yield c


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
def test_cross_site_writes_are_refused_even_on_loopback_without_a_token(writer, corpus, headers):
    _, photos = corpus
    c = writer
    before = c.get("/api/stats").json()["docs"]
    victim = c.post("/api/search", json={"data": [data_uri(photos[0])], "top_k": 1}).json()
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
def test_same_origin_writes_pass(writer, headers):
    r = writer.delete("/api/docs/0000000000000000", headers=headers)
    assert r.status_code == 404, r.text  # allowed through; the document just does not exist


def test_origin_must_match_the_host_the_request_was_addressed_to(writer):
    same = {"Host": "localhost:8000", "Origin": "http://localhost:8000"}
    assert writer.delete("/api/docs/0000000000000000", headers=same).status_code == 404
    other = {"Host": "localhost:8000", "Origin": "http://127.0.0.1:8000"}
    assert writer.delete("/api/docs/0000000000000000", headers=other).status_code == 403


def test_odd_authorization_headers_get_401_not_500(corpus):
    with _client(corpus, token="s3cret") as c:
        client_ready(c)
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
    for path in ("/api/stats", "/api/nothing/here", "/openapi.json", "/metrics"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "content-security-policy" not in r.headers, path
    for path in ("/docs", "/redoc"):  # their own policy, by hash for their inline parts (test_api_docs.py)
        csp = client.get(path).headers["content-security-policy"]
        assert csp.startswith("default-src 'self'") and "unsafe-inline" not in csp and "unsafe-eval" not in csp
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
        client_ready(c)
        for i, (colour, name) in enumerate(zip(colours, names, strict=True)):
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), colour).save(buf, "PNG")
            r = c.post("/api/index", files={"files": (name, buf.getvalue(), "image/png")})
            assert r.status_code == 200 and r.json()["indexed"] == 1, r.text
            assert r.json()["files"][0]["name"] == name
            ids.append(r.json()["files"][0]["doc_id"])
            if i == 0:
                roots = c.app.state.service.library.workspace.roots
                manifest_size = (ws / "manifest.json").stat().st_size
        library = c.app.state.service.library
        assert library.workspace.roots == roots
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
    with lookalike.open(Options(workspace=tmp_path / "ws", **FLOWS)) as library:
        assert library.index([folder]).indexed == 1
    with TestClient(create_app(_config(tmp_path / "ws", read_only=True)), base_url=BASE) as c:
        client_ready(c)
        r = c.post("/api/search", json={"data": [data_uri(photos[0])], "top_k": 1})
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


def test_a_real_uvicorn_on_loopback(corpus):
    """The app behind a real uvicorn (in a thread: no process to start), over real sockets: Host,
    CSP and cross-site rules as a browser meets them. `lookalike serve` itself, with the real model:
    test_server.py."""
    root, photos = corpus
    port = free_port()
    app = create_app(_config(root / "ws", allowed_hosts=("photos.example",)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, timeout=60)
        check_a_served_workspace(base, port, photos)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive() and app.state.service.library is None  # the lifespan ended: closed
