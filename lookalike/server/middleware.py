"""ASGI middleware: the Host check (DNS rebinding), security headers, request metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from lookalike.server.config import ServerConfig, parse_host_header
from lookalike.server.limits import ASGIApp
from lookalike.server.state import error_json

if TYPE_CHECKING:
    from lookalike.server.state import Service


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
    return error_json(400, "BadHost", message)


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


def docs_csp(scripts: Iterable[str] = (), styles: Iterable[str] = ()) -> str:
    """The policy of /docs and /redoc: 'self', plus the given sources (hashes of the page's inline scripts and
    styles). ReDoc runs its search in a worker made from a ``blob:``; both draw icons from ``data:`` URLs."""
    return "; ".join(
        [
            "default-src 'self'",
            " ".join(["script-src 'self'", *scripts]),
            " ".join(["style-src 'self'", *styles]),
            "img-src 'self' data:",
            "worker-src 'self' blob:",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


# What the docs' assets get, and the pages themselves should a route not set its own (with its hashes).
DOCS_CSP = docs_csp()


class SecurityHeaders:
    """``nosniff`` on every response, and a Content-Security-Policy on the pages: the web page's on ``/`` and
    ``/static/``, the API docs' on ``/docs``, ``/docs/`` and ``/redoc`` (where the route has not set one itself).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        policy = (
            PAGE_CSP
            if path == "/" or path.startswith("/static/")
            else DOCS_CSP
            if path in ("/docs", "/redoc") or path.startswith("/docs/")
            else None
        )

        async def adding_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                names = {k.lower() for k, _ in headers}
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                if policy and b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", policy.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, adding_send)


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
