"""What the endpoints share: the engine once it has loaded, the batcher, metrics, write rules."""

from __future__ import annotations

import hmac
import threading
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from lookalike.document import Result, display_path
from lookalike.engine import Engine
from lookalike.errors import LookalikeError, NotFound
from lookalike.server.batching import SearchBatcher
from lookalike.server.config import ServerConfig, cross_site_reason
from lookalike.service import doc_fields, result_fields
from lookalike.store.docstore import StoredDoc

MAX_TAGS = 5  # tags per document in API answers: what the page shows


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


def error_json(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    # Messages may quote file names, which need not be valid UTF-8.
    body = {"error": {"type": type_, "message": display_path(message)}}
    return JSONResponse(body, status_code=status, headers=headers)


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
                index_memory=self.config.index_memory,
                index_latency_ms=self.config.index_latency_ms,
                runtime=self.config.runtime,
            )
        except LookalikeError as e:
            self.load_error = e
            return
        try:
            engine.warm_up()
        except LookalikeError as e:
            self.load_error = e
            try:
                engine.close(flush=False)  # its pods and workspace go too (on Ray, its actors)
            except LookalikeError:
                pass  # the warm-up's error is the one to report
            return
        self.batcher = SearchBatcher(engine, max_batch=self.config.max_batch)
        self.engine = engine

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

    @property
    def metric(self) -> str:
        return self.engine.workspace.metric if self.engine is not None else "cosine"

    def describe(
        self, doc_id: str, uri: str | None, width: int | None, height: int | None, tags: list[tuple[str, float]]
    ) -> dict[str, Any]:
        """What the API says about a document: the shared fields, and where to fetch its pixels."""
        return doc_fields(doc_id, uri, width, height, tags, MAX_TAGS) | urls(doc_id)

    def match(self, r: Result, by_tag: bool = False) -> dict[str, Any]:
        """A search result; a tag search's score is the tag's probability, no similarity."""
        return result_fields(r, None if by_tag else self.metric, MAX_TAGS) | urls(r.doc_id)

    def stored(self, doc_id: str) -> tuple[Engine, StoredDoc]:
        """The engine and an indexed document, or NotFound."""
        engine = self.ready_engine()
        doc = engine.workspace.store.get_docs([doc_id]).get(doc_id)
        if doc is None:
            raise NotFound(f"no indexed document {doc_id!r}")
        return engine, doc

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


def urls(doc_id: str) -> dict[str, str]:
    return {"thumbnail_url": f"/api/docs/{doc_id}/thumbnail?size=256", "image_url": f"/api/docs/{doc_id}/image"}
