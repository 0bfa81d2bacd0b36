"""The API's routers, one per area, over the one :class:`lookalike.server.state.Service`."""

from __future__ import annotations

from fastapi import Request

from lookalike.server.state import Service


async def service_of(request: Request) -> Service:
    """The app's service object (a FastAPI dependency; async, so it needs no worker thread)."""
    return request.app.state.service
