"""The API's routers, one per area, over the one :class:`lookalike.server.state.Service`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from lookalike.errors import BadInput
from lookalike.filters import MAX_FOLDERS, MAX_PEOPLE, Filters, Orientation
from lookalike.server.schemas import FILTER_HELP, NEAR_PATTERN, NOT_BLANK, Day, FormatName, Path, PersonRef
from lookalike.server.state import ApiError, Service


async def service_of(request: Request) -> Service:
    """The app's service object (a FastAPI dependency; async, so it needs no worker thread)."""
    return request.app.state.service


async def filters_of(
    taken_after: Annotated[Day | None, Query(description=FILTER_HELP["taken_after"])] = None,
    taken_before: Annotated[Day | None, Query(description=FILTER_HELP["taken_before"])] = None,
    camera: Annotated[
        str | None, Query(min_length=1, max_length=200, pattern=NOT_BLANK, description=FILTER_HELP["camera"])
    ] = None,
    near: Annotated[str | None, Query(pattern=NEAR_PATTERN, description="LAT,LON,KM: " + FILTER_HELP["near"])] = None,
    folder: Annotated[
        list[Path] | None, Query(max_length=MAX_FOLDERS, description=FILTER_HELP["folder"] + " (repeat for several)")
    ] = None,
    orientation: Annotated[Orientation | None, Query(description=FILTER_HELP["orientation"])] = None,
    format: Annotated[FormatName | None, Query(description=FILTER_HELP["format"])] = None,
    person: Annotated[
        list[PersonRef] | None,
        Query(max_length=MAX_PEOPLE, description=FILTER_HELP["person"] + " (repeat for several)"),
    ] = None,
) -> Filters:
    """The filters of a GET's query (a FastAPI dependency): the keys of a body's ``filters``."""
    given: dict[str, Any] = {"taken_after": taken_after, "taken_before": taken_before, "camera": camera, "near": near}
    given |= {"folder": folder, "orientation": orientation, "format": format, "person": person}
    try:
        return Filters.from_dict({k: v for k, v in given.items() if v is not None})
    except BadInput as e:  # a day the pattern lets through that no calendar has (2024-02-30)
        raise ApiError(422, "ValidationError", str(e)) from None


FiltersDep = Annotated[Filters, Depends(filters_of)]
