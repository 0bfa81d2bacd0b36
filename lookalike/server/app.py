"""The search service: a REST API and the built-in web page over one workspace.

Errors are always JSON ``{"error": {"type", "message"}}`` with a 4xx status; a 500 is a bug.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike.document import Document, Result
from lookalike.engine import Engine, query_doc
from lookalike.errors import BadInput, LookalikeError, NotFound
from lookalike.server.batching import SearchBatcher
from lookalike.server.thumbnails import thumbnail

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
STATIC = Path(str(resources.files("lookalike.server").joinpath("static")))


@dataclass
class ServerConfig:
    workspace: Path
    host: str = "127.0.0.1"
    token: str | None = None
    max_upload_mb: float = 20.0
    batch_wait_ms: float = 4.0
    max_batch: int = 16
    index_flow: Path | None = None
    query_flow: Path | None = None
    read_only: bool = False  # no writes: the workspace lock stays free for `lookalike index`

    @property
    def loopback(self) -> bool:
        if self.host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def writes_enabled(self) -> bool:
        """Writes need a token beyond loopback; on loopback they are open unless a token is set."""
        return not self.read_only and (self.loopback or bool(self.token))


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


# --- request bodies --------------------------------------------------------------------------------


class SearchBody(BaseModel):
    """JSON body of POST /api/search: jinabox-style data URIs, or an indexed document's id."""

    model_config = ConfigDict(extra="ignore")  # jinabox sends more keys than we use
    data: list[str] | None = Field(default=None, description="images as data URIs (or bare base64)")
    doc_id: str | None = Field(default=None, description="more like this indexed image")
    top_k: int = Field(default=16, ge=1, le=1000)
    face: int | None = Field(default=None, ge=0, description="which face of the query to use (face workspaces)")


def _decode_data_uri(value: str, i: int) -> bytes:
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if value.startswith("data:") and ";base64" not in value.split(",", 1)[0]:
        raise BadInput(f"data[{i}] is a data URI without ;base64", "bad data URI")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput(f"data[{i}] is not valid base64", "bad data URI") from e


# --- the app -----------------------------------------------------------------------------------------


class Service:
    """Holds the engine once it has loaded; everything the endpoints need."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.engine: Engine | None = None
        self.batcher: SearchBatcher | None = None
        self.load_error: LookalikeError | None = None
        self.index_lock = threading.Lock()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lookalike_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lookalike_http_request_duration_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.indexed = Counter(
            "lookalike_documents_indexed_total", "images indexed via the API", registry=self.registry
        )
        self.registry.register(_WorkspaceCollector(self))

    def load(self) -> None:
        try:
            engine = Engine.open(
                self.config.workspace,
                index_flow=self.config.index_flow,
                query_flow=self.config.query_flow,
                for_indexing=self.config.writes_enabled,
            )
            engine.warm_up()
            self.batcher = SearchBatcher(engine, wait_ms=self.config.batch_wait_ms, max_batch=self.config.max_batch)
            self.engine = engine
        except LookalikeError as e:
            self.load_error = e

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.engine is not None:
            self.engine.close()

    def ready_engine(self) -> Engine:
        if self.engine is None:
            if self.load_error is not None:
                raise ApiError(503, type(self.load_error).__name__, str(self.load_error))
            raise ApiError(503, "NotReady", "the model and workspace are still loading; retry shortly")
        return self.engine

    def match(self, r: Result) -> dict[str, Any]:
        l2 = self.engine is not None and self.engine.workspace.metric == "l2"
        extra = {"distance": round(-float(r.score), 6)} if l2 else {}
        return extra | {
            "doc_id": r.doc_id,
            "uri": r.uri,
            "name": os.path.basename(r.uri or "") or r.doc_id,
            "score": round(float(r.score), 6),
            "tags": [{"label": label, "probability": round(p, 4)} for label, p in r.tags[:5]],
            "width": r.width,
            "height": r.height,
            "thumbnail_url": f"/api/docs/{r.doc_id}/thumbnail?size=256",
            "image_url": f"/api/docs/{r.doc_id}/image",
            "bbox": list(r.bbox) if r.bbox else None,
        }

    def check_write(self, request: Request) -> None:
        if self.config.read_only:
            raise ApiError(403, "Forbidden", "writes are disabled: this server was started with --read-only")
        if not self.config.writes_enabled:
            raise ApiError(
                403, "Forbidden", "writes are disabled: this server listens beyond loopback without LOOKALIKE_TOKEN"
            )
        if self.config.token:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode()):
                raise ApiError(401, "Unauthorized", "this endpoint needs the header 'Authorization: Bearer <token>'")


class _WorkspaceCollector:
    """Gauges read from the workspace at scrape time."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        docs = GaugeMetricFamily("lookalike_documents", "documents in the workspace")
        chunks = GaugeMetricFamily("lookalike_chunks", "vectors in the workspace")
        batch = GaugeMetricFamily("lookalike_search_batch_size_mean", "mean queries per encoder batch")
        engine, batcher = self.service.engine, self.service.batcher
        if engine is not None:
            docs.add_metric([], engine.workspace.store.count_docs())
            chunks.add_metric([], engine.workspace.store.count_chunks())
        if batcher is not None and batcher.batches:
            batch.add_metric([], batcher.batched_queries / batcher.batches)
        yield from (docs, chunks, batch)


class BodyLimit:
    """413 for request bodies over the limit, counted as they stream in (Content-Length can lie)."""

    def __init__(self, app: ASGIApp, limit_bytes: int):
        self.app, self.limit = app, limit_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _TOO_LARGE(self.limit)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _TOO_LARGE(self.limit)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _TOO_LARGE(limit: int) -> JSONResponse:  # noqa: N802 - reads as a constant response
    return _error(413, "PayloadTooLarge", f"the request body is over the {limit / 1024 / 1024:g} MB upload limit")


class Metrics:
    """Counts requests and their latency by route template (not by raw path, which is unbounded)."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static") else "other")
            self.service.requests.labels(scope["method"], template, str(status)).inc()
            self.service.latency.labels(template).observe(time.perf_counter() - start)


def create_app(config: ServerConfig) -> FastAPI:
    service = Service(config)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load in the background: the port answers at once and /readyz says when search works.
        loader = threading.Thread(target=service.load, name="load-engine", daemon=True)
        loader.start()
        yield
        loader.join()
        service.close()

    app = FastAPI(
        title="lookalike",
        description="Neural image search over a folder of photos.",
        version=__import__("lookalike").__version__,
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
        return _error(e.status, e.type, e.message, headers)

    @app.exception_handler(LookalikeError)
    async def _lookalike_error(request: Request, e: LookalikeError) -> JSONResponse:
        return _error(e.http_status, e.type_name, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return _error(422, "ValidationError", f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
        message = "no such endpoint" if e.status_code == 404 and e.detail == "Not Found" else str(e.detail)
        return _error(e.status_code, kind, message)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        return _error(500, "InternalError", f"{type(e).__name__}: {e}")

    # --- health -----------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        service.ready_engine()
        return JSONResponse({"ready": True})

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    # --- search -----------------------------------------------------------------------------

    def _search_payload(
        results: list[list[Result]], top_k: int, start: float, extra: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        out = []
        for i, rs in enumerate(results):
            entry: dict[str, Any] = {"matches": [service.match(r) for r in rs]}
            if extra:
                entry.update(extra[i])
            out.append(entry)
        return {"results": out, "top_k": top_k, "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    @app.post(
        "/api/search",
        tags=["search"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": SearchBody.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
                                "face": {"type": "integer", "minimum": 0},
                            },
                            "required": ["file"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def search(request: Request) -> dict[str, Any]:
        """Images like the query: data URIs (jinabox style), an uploaded file, or an indexed doc_id."""
        start = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "ValidationError", "file: a multipart search needs a 'file' field")
            try:
                body = SearchBody(
                    top_k=form.get("top_k") or 16,  # type: ignore[arg-type]
                    face=form.get("face") or None,  # type: ignore[arg-type]
                )
            except ValidationError as e:
                raise RequestValidationError(e.errors()) from e
            images = [await upload.read()]
        else:
            try:
                raw = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ApiError(400, "BadInput", "send JSON, or multipart/form-data with a 'file' field") from e
            try:
                body = SearchBody.model_validate(raw)
            except ValidationError as e:
                raise RequestValidationError(e.errors()) from e
            if body.doc_id is not None:
                engine = service.ready_engine()
                batcher = service.batcher
                assert batcher is not None
                doc = await run_in_threadpool(engine.stored_query_doc, body.doc_id)
                rs = await run_in_threadpool(batcher.search, doc, body.top_k, body.doc_id)
                return _search_payload([rs], body.top_k, start)
            if not body.data:
                raise ApiError(422, "ValidationError", "give 'data' (a list of data URIs) or 'doc_id'")
            if len(body.data) > 64:
                raise ApiError(422, "ValidationError", "data: at most 64 images per request")
            images = [_decode_data_uri(d, i) for i, d in enumerate(body.data)]
        engine = service.ready_engine()
        batcher = service.batcher
        assert batcher is not None
        docs = [query_doc(i, m) for i, m in enumerate(images)]
        if len(images) == 1:  # the common case: batched with other clients' queries
            results = [await run_in_threadpool(batcher.search, docs[0], body.top_k, None, body.face)]
        else:  # several images in one request are a batch already
            results = await run_in_threadpool(engine.query_docs, docs, body.top_k, body.face)
        faces = [
            {"faces": [{"bbox": b} for b in d.query_info["faces"]]} if "faces" in d.query_info else {} for d in docs
        ]
        return _search_payload(results, body.top_k, start, faces)

    @app.get("/api/search/tags", tags=["search"])
    async def search_tags(
        q: str = Query(min_length=1, max_length=100, description="part of an ImageNet label, e.g. daisy"),
        top_k: int = Query(default=16, ge=1, le=1000),
    ) -> dict[str, Any]:
        """Indexed images whose ImageNet tags contain ``q``, the most probable first."""
        start = time.perf_counter()
        engine = service.ready_engine()
        results = await run_in_threadpool(engine.search_tags, q, top_k)
        return _search_payload([results], top_k, start)

    # --- documents ---------------------------------------------------------------------------

    def _stored(doc_id: str):
        engine = service.ready_engine()
        doc = engine.workspace.store.get_docs([doc_id]).get(doc_id)
        if doc is None:
            raise NotFound(f"no indexed document {doc_id!r}")
        return engine, doc

    @app.get("/api/stats", tags=["documents"])
    async def stats() -> dict[str, Any]:
        engine = service.engine
        if engine is None:
            error = service.load_error
            return {
                "ready": False,
                "workspace": str(config.workspace),
                "writable": config.writes_enabled,
                "error": {"type": type(error).__name__, "message": str(error)} if error else None,
            }
        info = await run_in_threadpool(engine.workspace.info)
        return {
            "ready": True,
            "workspace": str(info.path),
            "docs": info.docs,
            "chunks": info.chunks,
            "shards": {str(k): v for k, v in info.shards.items()},
            "encoder": info.encoder,
            "preset": info.preset,
            "faces": info.preset == "faces",
            "writable": config.writes_enabled,
            "batching": service.batcher.enabled if service.batcher else False,
        }

    @app.get("/api/docs/{doc_id}", tags=["documents"])
    async def get_doc(doc_id: str) -> dict[str, Any]:
        _, doc = _stored(doc_id)
        match = service.match(Result(doc.id, 0.0, -1, doc.uri, doc.width, doc.height, doc.tags))
        match.pop("score")
        match.update(size=doc.size, content_hash=doc.content_hash, indexed_at=doc.indexed_at)
        return match

    def _servable(engine: Engine, uri: str | None) -> Path:
        """The file behind a document, only if it really lies inside an indexed root."""
        if not uri:
            raise NotFound("this document has no file")
        real = Path(os.path.realpath(uri))
        for root in engine.workspace.roots:
            root_real = Path(os.path.realpath(root))
            if real == root_real or root_real in real.parents:
                if real.is_file():
                    return real
                break
        raise NotFound("no such image")  # outside the indexed roots (a symlink out), or gone

    @app.get("/api/docs/{doc_id}/image", tags=["documents"])
    async def get_image(doc_id: str) -> FileResponse:
        engine, doc = _stored(doc_id)
        path = _servable(engine, doc.uri)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/docs/{doc_id}/thumbnail", tags=["documents"])
    async def get_thumbnail(doc_id: str, size: int = Query(default=256, ge=16, le=1024)) -> FileResponse:
        engine, doc = _stored(doc_id)
        path = _servable(engine, doc.uri)
        cache = engine.workspace.path / "thumbnails"
        thumb = await run_in_threadpool(thumbnail, path, doc.id, doc.content_hash or "", size, cache)
        etag = hashlib.sha1(f"{doc.content_hash}:{size}".encode()).hexdigest()[:16]
        return FileResponse(
            thumb, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400", "ETag": etag}
        )

    @app.post("/api/index", tags=["documents"])
    async def index(request: Request) -> dict[str, Any]:
        """Upload images (multipart field 'files', one or more) and index them."""
        service.check_write(request)
        engine = service.ready_engine()
        form = await request.form()
        uploads = [f for f in form.getlist("files") + form.getlist("file") if not isinstance(f, str)]
        if not uploads:
            raise ApiError(422, "ValidationError", "files: upload at least one image in multipart field 'files'")
        folder = engine.workspace.path / "uploads"
        folder.mkdir(exist_ok=True)
        saved = []
        for up in uploads:
            data = await up.read()
            digest = hashlib.sha256(data).hexdigest()[:20]
            suffix = Path(up.filename or "").suffix.lower()[:8] or ".img"
            target = folder / f"{digest}{suffix}"
            target.write_bytes(data)
            saved.append((up.filename, target))

        def run() -> Any:
            with service.index_lock:  # one indexing run at a time; searches go on meanwhile
                return engine.index([p for _, p in saved])

        summary = await run_in_threadpool(run)
        service.indexed.inc(summary.indexed + summary.updated)
        ids = {str(p): Document.from_path(p).id for _, p in saved}
        failed = dict(summary.skipped_files)
        for _, p in saved:
            if str(p) in failed:
                p.unlink(missing_ok=True)  # keep no copy of what could not be indexed
        return {
            "indexed": summary.indexed,
            "updated": summary.updated,
            "unchanged": summary.unchanged,
            "skipped": summary.skipped,
            "files": [{"name": name, "doc_id": ids[str(p)], "error": failed.get(str(p))} for name, p in saved],
        }

    @app.delete("/api/docs/{doc_id}", tags=["documents"])
    async def delete_doc(doc_id: str, request: Request) -> dict[str, Any]:
        service.check_write(request)
        engine, doc = _stored(doc_id)

        def run() -> int:
            with service.index_lock:
                removed = engine.delete_ids([doc.id])
            uploads = engine.workspace.path / "uploads"
            if doc.uri and Path(doc.uri).parent == uploads:  # an uploaded copy is ours to delete
                Path(doc.uri).unlink(missing_ok=True)
            return removed

        removed = await run_in_threadpool(run)
        return {"removed": removed, "doc_id": doc_id}

    # --- the page ---------------------------------------------------------------------------

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index_html = STATIC / "index.html"
        if not index_html.is_file():
            return PlainTextResponse("the web page is not installed; the API is at /docs", status_code=404)
        return FileResponse(index_html, headers={"Cache-Control": "no-cache"})

    # The last added is the outermost: metrics see every response, the upload limit's 413s included.
    app.add_middleware(BodyLimit, limit_bytes=int(config.max_upload_mb * 1024 * 1024))
    app.add_middleware(Metrics, service=service)
    return app
