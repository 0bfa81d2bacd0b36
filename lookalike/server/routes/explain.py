"""Why a result matched: heat maps over the query and the result (lookalike.library.explaining)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lookalike.library import ExplainRequest
from lookalike.library.types import check_box
from lookalike.server.routes import service_of
from lookalike.server.routes.search import decode_data_uri, inline_defs, json_body
from lookalike.server.schemas import EXPLAIN_FORM_SCHEMA, ExplainBody, ExplainForm, ExplainResponse, errors_for
from lookalike.server.state import ApiError, Service

router = APIRouter(tags=["search"])
ServiceDep = Annotated[Service, Depends(service_of)]

_REQUEST_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": inline_defs(ExplainBody.model_json_schema())},
            "multipart/form-data": {"schema": EXPLAIN_FORM_SCHEMA},
        },
        "required": True,
    }
}
_PNG: dict[str, Any] = {
    "content": {"image/png": {}},
    "description": "with format=png: both pictures side by side, heat laid over",
}


async def _parse(request: Request) -> ExplainRequest:
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "ValidationError", "file: a multipart explain needs the query image as 'file'")
            fields = ExplainForm.model_validate({k: v for k, v in form.items() if k in ExplainForm.model_fields})
            box = check_box(fields.box) if fields.box is not None else None
            return ExplainRequest(fields.result, image=await upload.read(), box=box)
        body = await json_body(request, ExplainBody)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from e
    box = check_box(body.box) if body.box is not None else None
    if body.doc_id is not None:
        return ExplainRequest(body.result, like=body.doc_id, box=box)
    assert body.data is not None
    return ExplainRequest(body.result, image=decode_data_uri(body.data, "data"), box=box)


@router.post(
    "/api/explain",
    response_model=ExplainResponse,
    responses={**errors_for(404, 408, 409, 413, 422, 503), 200: _PNG},
    openapi_extra=_REQUEST_BODY,
)
async def explain(
    request: Request,
    service: ServiceDep,
    format: Literal["json", "png"] = Query(  # noqa: A002 - the query parameter's name
        default="json", description="json: the heat maps as grids; png: a picture of both, side by side"
    ),
) -> Any:
    """Why a result matched a query: for each picture, a 7 x 7 heat map of how much each part of it
    makes them alike (the similarity's fall with that cell greyed out). The query is an indexed
    photo (doc_id) or an image (data, or a multipart file), whole or by its box (a workspace indexed
    with regions)."""
    explain_request = await _parse(request)
    library = service.ready()
    explanation = await run_in_threadpool(library.explain, explain_request)
    if format == "png":
        return Response(await run_in_threadpool(explanation.png), media_type="image/png")
    return explanation.to_dict()
