"""What the endpoints share: the library once it has loaded, metrics, write rules."""

from __future__ import annotations

import hmac
import logging
import threading
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from lookalike.document import display_path
from lookalike.errors import LookalikeError
from lookalike.library import Hit, Library
from lookalike.library import open as open_library
from lookalike.library.types import stored_doc_fields
from lookalike.server.config import ServerConfig, cross_site_reason
from lookalike.store.docstore import StoredDoc

if TYPE_CHECKING:
    from lookalike.watch import WatchBatch, Watcher

# `serve --watch` reports each index run on stderr, beside the server's own lines (uvicorn logs only
# warnings there, so the watcher has a logger of its own).
log = logging.getLogger("lookalike.serve.watch")

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
    """Holds the library once it has loaded; everything the endpoints need."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.library: Library | None = None
        self.load_error: LookalikeError | None = None
        self.index_lock = threading.Lock()
        self.watching: threading.Thread | None = None  # `serve --watch`: the watcher's thread
        self.watcher: Watcher | None = None
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
            library = open_library(self.config.options, write=self.config.writes_enabled)
        except LookalikeError as e:
            self.load_error = e
            return
        try:
            library.searcher.warm_up()
        except LookalikeError as e:
            self.load_error = e
            try:
                library.close(flush=False)  # its pods and workspace go too (on Ray, its actors)
            except LookalikeError:
                pass  # the warm-up's error is the one to report
            return
        self.library = library
        if self.config.watch:
            self._start_watching(library)

    def _start_watching(self, library: Library) -> None:
        """`serve --watch`: the watcher of `lookalike watch`, in a thread, taking turns with uploads
        and deletes (the index lock). Its lines go to the server's log; if it fails (another watcher
        holds the workspace), the server goes on serving and says why."""
        from lookalike.watch import Watcher, WatchRequest

        if not log.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
            log.propagate = False
        watcher = self.watcher = Watcher(library, WatchRequest(background=True), _WatchLog(), lock=self.index_lock)

        def run() -> None:
            try:
                watcher.run()
            except LookalikeError as e:
                log.error("not watching: %s", e)

        self.watching = threading.Thread(target=run, name="watch", daemon=True)
        self.watching.start()

    def close(self) -> None:
        # Forgotten first: a lifespan can start again on the same app (a test client entered twice),
        # and until it has loaded anew, requests must get 503, not a closed database or a stopped batcher.
        library, self.library = self.library, None
        if self.watching is not None and self.watcher is not None:
            self.watcher.stop()
            self.watching.join(timeout=60)  # an index run in flight finishes first
            self.watching = None
        if library is not None:
            library.close()

    def ready(self) -> Library:
        if self.library is None:
            if self.load_error is not None:
                raise ApiError(503, type(self.load_error).__name__, str(self.load_error))
            raise ApiError(503, "NotReady", "the model and workspace are still loading; retry shortly")
        return self.library

    def describe(self, doc: StoredDoc) -> dict[str, Any]:
        """What the API says about a document: the shared fields, and where to fetch its pixels."""
        return stored_doc_fields(doc, MAX_TAGS) | urls(doc.id)

    def match(self, hit: Hit) -> dict[str, Any]:
        """A search result: the library's own fields, and where to fetch its pixels."""
        return hit.to_dict(MAX_TAGS) | urls(hit.doc_id)

    def stored(self, doc_id: str) -> tuple[Library, StoredDoc]:
        """The library and an indexed document, or NotFound."""
        library = self.ready()
        return library, library.doc(doc_id)

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
        library = self.service.library
        if library is not None:
            docs.add_metric([], library.workspace.store.count_docs())
            chunks.add_metric([], library.workspace.store.count_chunks())
            batcher = library.searcher.batcher
            if batcher.batches:
                batch.add_metric([], batcher.batched / batcher.batches)
        yield from (docs, chunks, batch)


def urls(doc_id: str) -> dict[str, str]:
    return {"thumbnail_url": f"/api/docs/{doc_id}/thumbnail?size=256", "image_url": f"/api/docs/{doc_id}/image"}


class _WatchLog:
    """`serve --watch`'s progress: one log line per index run, and its notes."""

    def started(self, roots: list[str]) -> None:
        log.info("watching %s", ", ".join(display_path(r) for r in roots))

    def batch(self, batch: WatchBatch) -> None:
        log.info("watch %s", batch.summary())

    def note(self, message: str) -> None:
        log.warning("%s", message)
