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
import string
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match as RouteMatch

from lookalike.document import Document, Result, display_path
from lookalike.engine import Engine, query_doc
from lookalike.errors import BadInput, LookalikeError, NotFound
from lookalike.images import IMAGE_EXTENSIONS
from lookalike.server.batching import SearchBatcher
from lookalike.server.limits import BodyDeadline, BodyLimit
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
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback's (--allowed-host)

    @property
    def loopback(self) -> bool:
        return self.host == "" or is_loopback_name(self.host)

    def host_allowed(self, name: str) -> bool:
        """May a request addressed to ``name`` (a Host header's name, port stripped) be answered?

        On loopback only loopback names, so a web page whose own name was rebound to 127.0.0.1 (DNS
        rebinding) cannot talk to this server; beyond loopback, only the --allowed-host names if any
        are given.
        """
        if name in {_normal_host(h) for h in self.allowed_hosts}:
            return True
        if self.loopback:
            return is_loopback_name(name)
        return not self.allowed_hosts

    @property
    def writes_enabled(self) -> bool:
        """Writes need a token beyond loopback; on loopback they are open unless a token is set."""
        return not self.read_only and (self.loopback or bool(self.token))


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # Messages may quote file names, which need not be valid UTF-8.
    body = {"error": {"type": type_, "message": display_path(message)}}
    return JSONResponse(body, status_code=status, headers=headers)


# --- hosts and origins ----------------------------------------------------------------------------


def _normal_host(name: str) -> str:
    """A host name as compared: lower case, no IPv6 brackets, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.removesuffix(".")  # "localhost." is localhost, fully qualified


def is_loopback_name(name: str) -> bool:
    """``localhost``, ``*.localhost`` (RFC 6761 keeps them on this machine), 127.0.0.0/8 or ``::1``."""
    name = _normal_host(name)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


# What a host name or an IP literal is made of; a Host header with anything else is refused.
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")


def parse_host_header(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a ``Host`` header such as ``[::1]:8000``; ``None`` if it is malformed."""
    value = value.strip()
    if value.startswith("["):  # an IPv6 literal: [::1] or [::1]:8000
        end = value.find("]")
        name, rest = (value[1:end], value[end + 1 :]) if end > 0 else ("", "")
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
    allowed = _IPV6_CHARS if value.startswith("[") else _HOST_CHARS
    if not name or not set(name) <= allowed or (port and not (port.isascii() and port.isdigit())):
        return None
    return _normal_host(name), int(port) if port else None


def _origin_key(scheme: str, name: str, port: int | None) -> tuple[str, str, int]:
    scheme = scheme.lower()
    return scheme, _normal_host(name), port or (443 if scheme == "https" else 80)


def _parse_origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an ``Origin`` such as ``http://127.0.0.1:8000``; ``None`` for ``null`` or junk."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username or parts.path:
        return None
    return _origin_key(parts.scheme, parts.hostname, port)


# Sec-Fetch-Site values a browser sends for the page's own requests ("none": typed, or a bookmark).
# "same-site" is refused too: a page on 127.0.0.1:OTHERPORT is same-site with this server.
SAME_ORIGIN_FETCH_SITES = frozenset({"same-origin", "none"})


def cross_site_reason(request: Request) -> str | None:
    """Why a browser request is cross-site (from Sec-Fetch-Site or Origin), or ``None``.

    Requests with neither header (curl, scripts) are not browsers' and pass; the token rules still apply.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in SAME_ORIGIN_FETCH_SITES:
        return f"Sec-Fetch-Site is {site!r}"
    origin = request.headers.get("origin")
    if origin is not None:
        host = parse_host_header(request.headers.get("host") or "")
        own = _origin_key(request.url.scheme, *host) if host else None
        if own is None or _parse_origin(origin) != own:
            return f"Origin {origin!r} is not this server's"
    return None


# --- request bodies --------------------------------------------------------------------------------


# Images in one search request: one encoder batch, and a bound on the work one request asks for.
MAX_QUERY_IMAGES = 64


class SearchBody(BaseModel):
    """JSON body of POST /api/search: jinabox-style data URIs, or an indexed document's id."""

    # jinabox sends more keys than we use. One of data and doc_id is required, as the schema says.
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["data"], "properties": {"data": {"type": "array"}}},
                {"required": ["doc_id"], "properties": {"doc_id": {"type": "string"}}},
            ]
        },
    )
    data: list[str] | None = Field(
        default=None, min_length=1, max_length=MAX_QUERY_IMAGES, description="images as data URIs (or bare base64)"
    )
    doc_id: str | None = Field(default=None, description="more like this indexed image")
    top_k: int = Field(default=16, ge=1, le=1000)
    face: int | None = Field(default=None, ge=0, description="which face of the query to use (face workspaces)")


# --- responses ---------------------------------------------------------------------------------------
# The JSON the endpoints return, so /openapi.json describes it (and schemathesis can hold us to it).
# Keys that only some answers carry (``distance`` on L2 workspaces, ``faces`` on face queries) are
# optional here and left out when unset.


class ErrorDetail(BaseModel):
    type: str = Field(description="the error's kind, e.g. NotFound, BadInput, ValidationError")
    message: str = Field(description="what went wrong, for people")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


class Tag(BaseModel):
    label: str = Field(description="an ImageNet label")
    probability: float


class DocSummary(BaseModel):
    doc_id: str
    uri: str | None = Field(description="the file's path (bytes that are not UTF-8 shown as \\xNN)")
    name: str = Field(description="the file's name")
    tags: list[Tag] = Field(description="the most probable ImageNet labels, at most 5")
    width: int | None
    height: int | None
    thumbnail_url: str
    image_url: str


class Match(DocSummary):
    score: float = Field(description="cosine similarity to the query; on face (L2) workspaces minus the distance")
    distance: float | None = Field(default=None, description="L2 distance (face workspaces only)")
    bbox: list[int] | None = Field(description="x, y, w, h of the matched region (a face), or null")


class Box(BaseModel):
    bbox: list[int] = Field(description="x, y, w, h of a face found in the query")


class QueryResult(BaseModel):
    matches: list[Match]
    faces: list[Box] | None = Field(default=None, description="the query's faces (face workspaces only)")


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="one per query image, in order")
    top_k: int
    took_ms: float


class DocDetail(DocSummary):
    size: int | None
    content_hash: str | None
    indexed_at: float | None


class Stats(BaseModel):
    ready: bool
    workspace: str
    writable: bool
    error: ErrorDetail | None = Field(default=None, description="why loading failed (while not ready)")
    docs: int | None = None
    chunks: int | None = None
    shards: dict[str, int] | None = Field(default=None, description="vectors per shard")
    encoder: str | None = None
    preset: str | None = None
    faces: bool | None = None
    batching: bool | None = None


class IndexedFile(BaseModel):
    name: str | None = Field(description="the uploaded file's name")
    doc_id: str
    error: str | None = Field(description="why it was not indexed, or null")


class IndexResponse(BaseModel):
    indexed: int
    updated: int
    unchanged: int
    skipped: dict[str, int] = Field(description="files not indexed, by reason")
    files: list[IndexedFile]


class Deleted(BaseModel):
    removed: int
    doc_id: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool


_ERROR_DESCRIPTIONS = {
    400: "a malformed request or image, or a Host header this server does not answer to",
    401: "a token is set and the request does not carry it",
    403: "writes are disabled here, or the request comes from another web site",
    404: "no such document or file",
    409: "the workspace cannot be written",
    408: "the request body arrived too slowly",
    413: "the request body is over the upload limit",
    422: "a parameter is missing or out of range",
    503: "the model and workspace are still loading, or failed to load",
}


def _errors(*statuses: int, ok: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer; 400 (a bad Host) with every one.

    ``ok`` is the 200's ``content``, for the routes that answer other than JSON."""
    out: dict[int | str, dict[str, Any]] = {200: {"content": ok}} if ok else {}
    for status in sorted({400, *statuses}):
        out[status] = {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]}
    return out


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
        self.load_error = None
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
        # Forgotten first: a lifespan can start again on the same app (a test client entered twice),
        # and until it has loaded anew, requests must get 503, not a closed database or a stopped batcher.
        batcher, engine = self.batcher, self.engine
        self.batcher = self.engine = None
        if batcher is not None:
            batcher.close()
        if engine is not None:
            engine.close()

    def ready_engine(self) -> Engine:
        if self.engine is None:
            if self.load_error is not None:
                raise ApiError(503, type(self.load_error).__name__, str(self.load_error))
            raise ApiError(503, "NotReady", "the model and workspace are still loading; retry shortly")
        return self.engine

    def describe(
        self, doc_id: str, uri: str | None, width: int | None, height: int | None, tags: list[tuple[str, float]]
    ) -> dict[str, Any]:
        """What the API says about a document, in results and on its own. File names are shown with
        display_path (they may not be valid UTF-8); the files themselves are served from the real uri."""
        shown = display_path(uri) if uri is not None else None
        return {
            "doc_id": doc_id,
            "uri": shown,
            "name": os.path.basename(shown or "") or doc_id,
            "tags": [{"label": label, "probability": round(p, 4)} for label, p in tags[:5]],
            "width": width,
            "height": height,
            "thumbnail_url": f"/api/docs/{doc_id}/thumbnail?size=256",
            "image_url": f"/api/docs/{doc_id}/image",
        }

    def match(self, r: Result) -> dict[str, Any]:
        l2 = self.engine is not None and self.engine.workspace.metric == "l2"
        extra = {"distance": round(-float(r.score), 6)} if l2 else {}
        return (
            extra
            | self.describe(r.doc_id, r.uri, r.width, r.height, r.tags)
            | {"score": round(float(r.score), 6), "bbox": list(r.bbox) if r.bbox else None}
        )

    def check_write(self, request: Request) -> None:
        if self.config.read_only:
            raise ApiError(403, "Forbidden", "writes are disabled: this server was started with --read-only")
        if not self.config.writes_enabled:
            raise ApiError(
                403, "Forbidden", "writes are disabled: this server listens beyond loopback without LOOKALIKE_TOKEN"
            )
        # Before the token, so that a page on another site learns nothing about it.
        reason = cross_site_reason(request)
        if reason is not None:
            raise ApiError(403, "CrossSiteRequest", f"refused a write from another web site: {reason}")
        if self.config.token:
            # Starlette decodes header bytes as latin-1, so this gives back the bytes sent; it cannot raise.
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {self.config.token}".encode()):
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


class HostCheck:
    """400 for a request addressed to a host name this server does not answer to (DNS rebinding)."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            for key, value in scope.get("headers") or []:
                if key == b"host":
                    host = parse_host_header(value.decode("latin-1"))
                    if host is None or not self.config.host_allowed(host[0]):
                        await _bad_host(value.decode("latin-1"), self.config)(scope, receive, send)
                        return
            # No Host header at all (HTTP/1.0) cannot come from a browser, whose requests always name one.
        await self.app(scope, receive, send)


def _bad_host(value: str, config: ServerConfig) -> JSONResponse:
    if config.loopback:
        why = "this server listens on loopback and answers only to localhost, 127.0.0.1 and [::1]"
    else:
        why = "this server answers only to " + ", ".join(config.allowed_hosts)
    message = f"the Host header {value!r} is not allowed: {why}; start it with --allowed-host NAME to add a name"
    return _error(400, "BadHost", message)


# The page needs nothing inline and nothing from elsewhere; blob: and data: are the previews of a query.
PAGE_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class SecurityHeaders:
    """``nosniff`` on every response, and the page's Content-Security-Policy on ``/`` and ``/static/``.

    /docs and /redoc are left without the policy: FastAPI's pages load Swagger UI from a CDN, inline.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def adding_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if page and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, adding_send)


class _LookalikeAPI(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:  # type: ignore[override]
        # Outside Starlette's error middleware too, so that even a 500 carries the headers.
        return SecurityHeaders(super().build_middleware_stack())


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

    app = _LookalikeAPI(
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
        errors = e.errors()
        if not errors:
            return _error(422, "ValidationError", "the request is not valid")
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return _error(422, "ValidationError", f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
        message = "no such endpoint" if e.status_code == 404 and e.detail == "Not Found" else str(e.detail)
        headers = dict(e.headers or {})
        if e.status_code == 405:
            # Starlette names the methods of the first route on the path only; GET and DELETE
            # /api/docs/{id} are two routes.
            methods = {m for r in app.router.routes if isinstance(r, APIRoute) for m in _methods_on(r, request)}
            headers["Allow"] = ", ".join(sorted(methods)) or headers.get("Allow", "")
        return _error(e.status_code, kind, message, headers or None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, e: Exception) -> JSONResponse:
        return _error(500, "InternalError", f"{type(e).__name__}: {e}")

    # --- health -----------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"], response_model=Health, responses=_errors())
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Ready, responses=_errors(503))
    async def readyz() -> dict[str, bool]:
        service.ready_engine()
        return {"ready": True}

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,  # not PlainTextResponse, whose media type the error responses would inherit
        responses=_errors(ok={CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}),
    )
    async def metrics() -> Response:
        """Prometheus metrics, in the text exposition format."""
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
        response_model=SearchResponse,
        response_model_exclude_unset=True,
        responses=_errors(404, 408, 413, 422, 503),
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

    @app.get(
        "/api/search/tags",
        tags=["search"],
        response_model=SearchResponse,
        response_model_exclude_unset=True,
        responses=_errors(422, 503),
    )
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

    @app.get(
        "/api/stats", tags=["documents"], response_model=Stats, response_model_exclude_unset=True, responses=_errors()
    )
    async def stats() -> dict[str, Any]:
        """The workspace: documents, vectors, encoder; ``ready`` is false while the model loads."""
        engine = service.engine
        if engine is None:
            error = service.load_error
            return {
                "ready": False,
                "workspace": display_path(str(config.workspace)),
                "writable": config.writes_enabled,
                "error": {"type": type(error).__name__, "message": display_path(str(error))} if error else None,
            }
        info = await run_in_threadpool(engine.workspace.info)
        return {
            "ready": True,
            "workspace": display_path(str(info.path)),
            "docs": info.docs,
            "chunks": info.chunks,
            "shards": {str(k): v for k, v in info.shards.items()},
            "encoder": info.encoder,
            "preset": info.preset,
            "faces": info.preset == "faces",
            "writable": config.writes_enabled,
            "batching": service.batcher.enabled if service.batcher else False,
        }

    @app.get("/api/docs/{doc_id}", tags=["documents"], response_model=DocDetail, responses=_errors(404, 422, 503))
    async def get_doc(doc_id: str) -> dict[str, Any]:
        """An indexed document: its file, size, content hash and tags."""
        _, doc = _stored(doc_id)
        return service.describe(doc.id, doc.uri, doc.width, doc.height, doc.tags) | {
            "size": doc.size,
            "content_hash": doc.content_hash,
            "indexed_at": doc.indexed_at,
        }

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

    binary = {"schema": {"type": "string", "format": "binary"}}

    @app.get(
        "/api/docs/{doc_id}/image",
        tags=["documents"],
        response_class=FileResponse,
        responses=_errors(404, 422, 503, ok={"image/*": binary, "application/octet-stream": binary}),
    )
    async def get_image(doc_id: str) -> FileResponse:
        """The original file, as indexed (only from inside the indexed folders)."""
        engine, doc = _stored(doc_id)
        path = _servable(engine, doc.uri)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @app.get(
        "/api/docs/{doc_id}/thumbnail",
        tags=["documents"],
        response_class=FileResponse,
        responses=_errors(404, 422, 503, ok={"image/jpeg": binary}),
    )
    async def get_thumbnail(doc_id: str, size: int = Query(default=256, ge=16, le=1024)) -> FileResponse:
        """A JPEG at most ``size`` pixels on its longer side, cached in the workspace."""
        engine, doc = _stored(doc_id)
        path = _servable(engine, doc.uri)
        cache = engine.workspace.path / "thumbnails"
        thumb = await run_in_threadpool(thumbnail, path, doc.id, doc.content_hash or "", size, cache)
        etag = hashlib.sha1(f"{doc.content_hash}:{size}".encode()).hexdigest()[:16]
        return FileResponse(
            thumb, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400", "ETag": etag}
        )

    @app.post(
        "/api/index",
        tags=["documents"],
        response_model=IndexResponse,
        responses=_errors(401, 403, 408, 409, 413, 422, 503),
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "files": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "binary"},
                                    "minItems": 1,
                                },
                            },
                            "required": ["files"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def index(request: Request) -> dict[str, Any]:
        """Upload images (multipart field 'files', one or more) and index them.

        They are kept in the workspace's ``uploads/`` folder, named by their content's SHA-256."""
        service.check_write(request)
        engine = service.ready_engine()
        form = await request.form()
        uploads = [f for f in form.getlist("files") + form.getlist("file") if not isinstance(f, str)]
        if not uploads:
            raise ApiError(422, "ValidationError", "files: upload at least one image in multipart field 'files'")
        # Absolute, as the engine records roots: then it is one root, and every upload lies inside it.
        folder = Path(os.path.abspath(engine.workspace.path / "uploads"))
        folder.mkdir(exist_ok=True)
        saved = []
        for up in uploads:
            data = await up.read()
            target = folder / upload_name(data, up.filename)
            target.write_bytes(data)
            saved.append((up.filename, target))

        def run() -> Any:
            with service.index_lock:  # one indexing run at a time; searches go on meanwhile
                engine.workspace.add_roots([str(folder)])  # once: later uploads lie inside it
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
            "files": [
                {
                    "name": display_path(name) if name is not None else None,
                    "doc_id": ids[str(p)],
                    "error": display_path(failed[str(p)]) if str(p) in failed else None,
                }
                for name, p in saved
            ],
        }

    @app.delete(
        "/api/docs/{doc_id}",
        tags=["documents"],
        response_model=Deleted,
        responses=_errors(401, 403, 404, 409, 422, 503),
    )
    async def delete_doc(doc_id: str, request: Request) -> dict[str, Any]:
        """Take a document out of the index (and delete the file, if it was uploaded)."""
        service.check_write(request)
        engine, doc = _stored(doc_id)

        def run() -> int:
            with service.index_lock:
                removed = engine.delete_ids([doc.id])
            uploads = Path(os.path.abspath(engine.workspace.path / "uploads"))
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

    # The last added is the outermost: metrics see every response, the upload limit's 413s, the
    # slow body's 408s and the Host check's 400s included. The security headers wrap all of them (see _LookalikeAPI).
    limit = int(config.max_upload_mb * 1024 * 1024)
    app.add_middleware(BodyDeadline, max_body=limit)
    app.add_middleware(BodyLimit, limit_bytes=limit)
    app.add_middleware(HostCheck, config=config)
    app.add_middleware(Metrics, service=service)
    return app


def _methods_on(route: APIRoute, request: Request) -> set[str]:
    """The methods ``route`` answers, if it serves the request's path."""
    match, _ = route.matches(request.scope)
    return set(route.methods or ()) if match is not RouteMatch.NONE else set()


def upload_name(data: bytes, filename: str | None) -> str:
    """An uploaded file's name in ``uploads/``: its content's SHA-256 prefix, and its suffix only if it
    is an image extension (nothing of the client's name reaches the filesystem otherwise)."""
    suffix = Path(filename or "").suffix.lower()
    return hashlib.sha256(data).hexdigest()[:20] + (suffix if suffix in IMAGE_EXTENSIONS else ".img")
