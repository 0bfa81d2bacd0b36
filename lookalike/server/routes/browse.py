"""Browsing: the collection's timeline (photos a month), folder tree, cameras and formats."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from lookalike.library.browsing import folder_dict
from lookalike.server.routes import FiltersDep, service_of
from lookalike.server.schemas import Facets, Folders, Path, Timeline, errors_for
from lookalike.server.state import Service

router = APIRouter(tags=["browse"])
ServiceDep = Annotated[Service, Depends(service_of)]


@router.get("/api/timeline", response_model=Timeline, responses=errors_for(404, 422, 503))
async def timeline(service: ServiceDep, filters: FiltersDep) -> dict[str, Any]:
    """Every month holding photos the filters keep (by local date taken), the latest first, with
    how many: a page lays out its timeline from this, then fills each month from GET /api/docs."""
    library = service.ready()
    months = await run_in_threadpool(library.timeline, filters)
    return {
        "total": sum(m.photos for m in months),
        "months": [{"month": m.month, "photos": m.photos} for m in months],
    }


@router.get("/api/folders", response_model=Folders, responses=errors_for(404, 422, 503))
async def folders(
    service: ServiceDep,
    parent: Annotated[Path | None, Query(description="a folder; without it, the indexed folders themselves")] = None,
) -> dict[str, Any]:
    """The folders directly below ``parent`` that hold photos, each with its photos counted down its
    whole tree and how many sub-folders it has: a folder tree, opened a level at a time."""
    library = service.ready()
    found = await run_in_threadpool(library.folders, parent)
    return {"parent": parent, "folders": [folder_dict(f) for f in found]}


@router.get("/api/facets", response_model=Facets, responses=errors_for(503))
async def facets(service: ServiceDep) -> dict[str, Any]:
    """What the filters can choose from: the cameras, formats and indexed folders, with photo counts."""
    library = service.ready()
    return (await run_in_threadpool(library.facets)).to_dict()
