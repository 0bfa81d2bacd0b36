"""The search service: a REST API and the built-in web page over one workspace.

The app is assembled here: routers per area (``routes/``) over one :class:`Service`, the error
handlers that make every error JSON ``{"error": {"type", "message"}}`` with a 4xx status (a 500 is
a bug), and the middleware (body limits, the Host check, metrics, security headers).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match as RouteMatch

from lookalike.errors import LookalikeError
from lookalike.server.config import ServerConfig
from lookalike.server.limits import BodyDeadline, BodyLimit
from lookalike.server.middleware import ASGIApp, HostCheck, Metrics, SecurityHeaders
from lookalike.server.routes import apidocs, browse, documents, dupes, explain, health, page, people, search
from lookalike.server.schemas import PATTERN_HINTS
from lookalike.server.state import ApiError, Service, error_json
from lookalike.version import __version__

__all__ = ["ServerConfig", "create_app"]


class _LookalikeAPI(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:  # type: ignore[override]
        # Outside Starlette's error middleware too, so that even a 500 carries the headers.
        return SecurityHeaders(super().build_middleware_stack())


def create_app(config: ServerConfig) -> FastAPI:
    service = Service(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load in the background: the port answers at once and /readyz says when search works.
        loader = threading.Thread(target=service.load, name="load-library", daemon=True)
        loader.start()
        yield
        loader.join()
        service.close()

    app = _LookalikeAPI(
        title="lookalike",
        description="Neural image search over a folder of photos.",
        version=__version__,
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their assets from a CDN: routes/apidocs.py serves them offline.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    for handler_of, handler in _ERROR_HANDLERS.items():
        app.add_exception_handler(handler_of, handler)
    routers = (
        health.router,
        search.router,
        explain.router,
        documents.router,
        browse.router,
        dupes.router,
        people.router,
        page.router,
    )
    for router in routers:
        app.include_router(router)
    app.state.api_routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    app.include_router(apidocs.router)
    app.mount(apidocs.ASSETS, StaticFiles(directory=apidocs.ASSETS_DIR), name="docs-assets")
    if page.STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    # The last added is the outermost: metrics see every response, the upload limit's 413s, the
    # slow body's 408s and the Host check's 400s included. The security headers wrap all of them.
    limit = int(config.max_upload_mb * 1024 * 1024)
    app.add_middleware(BodyDeadline, max_body=limit)
    app.add_middleware(BodyLimit, limit_bytes=limit)
    app.add_middleware(HostCheck, config=config)
    app.add_middleware(Metrics, service=service)
    return app


# --- errors: always JSON ---------------------------------------------------------------------------


async def _api_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return error_json(e.status, e.type, e.message, headers)


async def _lookalike_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, LookalikeError)
    return error_json(e.http_status, e.type_name, str(e))


async def _validation_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    errors = e.errors()
    if not errors:
        return error_json(422, "ValidationError", "the request is not valid")
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
    message = str(first["msg"]).removeprefix("Value error, ")
    if first.get("type") == "string_pattern_mismatch":  # say what the field takes, not the regex
        field = next((str(p) for p in reversed(first["loc"]) if isinstance(p, str)), "")
        message = PATTERN_HINTS.get(field, message)
    return error_json(422, "ValidationError", f"{where}: {message}" if where else message)


async def _http_error(request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, StarletteHTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
    message = "no such endpoint" if e.status_code == 404 and e.detail == "Not Found" else str(e.detail)
    headers = dict(e.headers or {})
    if e.status_code == 405:
        # Starlette names the methods of the first route on the path only; GET and DELETE
        # /api/docs/{id} are two routes.
        methods = {m for r in request.app.state.api_routes for m in _methods_on(r, request)}
        headers["Allow"] = ", ".join(sorted(methods)) or headers.get("Allow", "")
    return error_json(e.status_code, kind, message, headers or None)


async def _bug(request: Request, e: Exception) -> JSONResponse:
    return error_json(500, "InternalError", f"{type(e).__name__}: {e}")


_ERROR_HANDLERS = {
    ApiError: _api_error,
    LookalikeError: _lookalike_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    Exception: _bug,
}


def _methods_on(route: APIRoute, request: Request) -> set[str]:
    """The methods ``route`` answers, if it serves the request's path."""
    match, _ = route.matches(request.scope)
    return set(route.methods or ()) if match is not RouteMatch.NONE else set()
