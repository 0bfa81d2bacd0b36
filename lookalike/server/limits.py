"""Request-body limits as ASGI middleware: a size cap, and a deadline for slow bodies.

uvicorn times out idle keep-alive connections but not a body that trickles in: a client sending a
few bytes a second would hold its request open for as long as it likes (slowloris). The deadline
here grows with the body's declared size, so a large upload on a slow link still gets through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.responses import JSONResponse

from lookalike.server.state import error_json

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]

# Every body gets this long, plus its size at the slowest rate we wait for: 100 kB/s brings a
# 20 MB upload in ~3.5 minutes, while a body that trickles in is cut off after ~10 s.
BODY_GRACE_S = 10.0
MIN_BODY_RATE = 100_000  # bytes per second


class BodyDeadline:
    """408 for a request body that has not fully arrived by its deadline."""

    def __init__(
        self, app: ASGIApp, max_body: int, grace_s: float = BODY_GRACE_S, min_rate: float = MIN_BODY_RATE
    ) -> None:
        self.app, self.max_body, self.grace_s, self.min_rate = app, max_body, grace_s, min_rate

    def deadline_s(self, declared: int | None) -> float:
        return self.grace_s + (declared if declared is not None else self.max_body) / self.min_rate

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(header) if header is not None and header.isdigit() else None
        loop = asyncio.get_running_loop()
        allowed = self.deadline_s(declared)
        deadline = loop.time() + allowed
        body_done = False
        started = False  # the app began its response
        timed_out = False  # we answered 408; whatever the app sends after is dropped

        async def time_out() -> dict:
            nonlocal timed_out
            timed_out = True
            if not started:
                response = error_json(
                    408,
                    "RequestTimeout",
                    f"the request body did not arrive within {allowed:.0f}s; send it faster or in a smaller request",
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
            # To the app the client is gone: it stops reading, whatever it does with that.
            return {"type": "http.disconnect"}

        async def timed_receive() -> dict:
            nonlocal body_done
            if body_done or timed_out:  # afterwards the app only listens for a disconnect
                return {"type": "http.disconnect"} if timed_out else await receive()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return await time_out()
            try:
                message = await asyncio.wait_for(receive(), remaining)
            except asyncio.TimeoutError:
                return await time_out()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if timed_out:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, timed_receive, tracking_send)


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
    return error_json(413, "PayloadTooLarge", f"the request body is over the {limit / 1024 / 1024:g} MB upload limit")
