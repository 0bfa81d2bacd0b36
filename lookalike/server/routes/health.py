"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lookalike.server.routes import service_of
from lookalike.server.schemas import Health, Ready, errors_for
from lookalike.server.state import Service

router = APIRouter(tags=["health"])
ServiceDep = Annotated[Service, Depends(service_of)]


@router.get("/healthz", response_model=Health, responses=errors_for())
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, responses=errors_for(503))
async def readyz(service: ServiceDep) -> dict[str, bool]:
    service.ready()
    return {"ready": True}


@router.get(
    "/metrics",
    response_class=Response,  # not PlainTextResponse, whose media type the error responses would inherit
    responses=errors_for(ok={CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}),
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics, in the text exposition format."""
    return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)
