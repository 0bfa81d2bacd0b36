"""Search: by image (data URIs, jinabox style, or a multipart file), by an indexed doc_id, by tag."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from lookalike.errors import BadInput
from lookalike.filters import Filters
from lookalike.library import SearchReport, SearchRequest
from lookalike.library.types import MAX_TOP_K, check_box
from lookalike.server.routes import FiltersDep, service_of
from lookalike.server.schemas import (
    SEARCH_FORM_SCHEMA,
    TOP_K_HELP,
    SearchBody,
    SearchForm,
    SearchResponse,
    TagSuggestions,
    errors_for,
)
from lookalike.server.state import ApiError, Service

router = APIRouter(tags=["search"])
BodyT = TypeVar("BodyT", bound=BaseModel)
ServiceDep = Annotated[Service, Depends(service_of)]


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each ``$ref`` to its ``$defs`` replaced by the definition (the models are not recursive).

    Inside an operation a ``"#/$defs/..."`` points at the root of the OpenAPI document, which has none: ReDoc
    refuses the whole page over it ("Invalid reference token: $defs").
    """
    defs = schema.get("$defs", {})

    def resolved(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return resolved({**defs[ref.removeprefix("#/$defs/")], **rest})
            return {k: resolved(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolved(v) for v in node]
        return node

    return resolved(schema)


# The body is JSON (SearchBody) or multipart (SearchForm): one endpoint, as jinabox posts JSON and
# the page posts a file, so FastAPI cannot pick the parser from the signature; pydantic validates both.
_REQUEST_BODY = {
    "requestBody": {
        "content": {
            "application/json": {"schema": inline_defs(SearchBody.model_json_schema())},
            "multipart/form-data": {"schema": SEARCH_FORM_SCHEMA},
        },
        "required": True,
    }
}


def decode_data_uri(value: str, where: str) -> bytes:
    payload = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    if value.startswith("data:") and ";base64" not in value.split(",", 1)[0]:
        raise BadInput(f"{where} is a data URI without ;base64", "bad data URI")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise BadInput(f"{where} is not valid base64", "bad data URI") from e


async def json_body(request: Request, model: type[BodyT]) -> BodyT:
    """The request's JSON body as ``model``; a body that is not JSON at all is a 400 saying what to
    send, and a ValidationError (a 422 naming the field) is raised for the caller to convert."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as e:
        if any(err["type"] == "json_invalid" for err in e.errors()):
            raise ApiError(400, "BadInput", "send JSON, or multipart/form-data with a 'file' field") from e
        raise


async def _parse(request: Request) -> tuple[SearchBody, list[bytes], Filters]:
    """The search parameters, the query images (none for a doc_id search) and the filters."""
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "ValidationError", "file: a multipart search needs a 'file' field")
            # An empty field is not a number (422), as the schema says: leave a field out for its default.
            listed = ("folder", "person")  # repeatable fields
            twice = next((k for k in SearchForm.model_fields if k not in listed and len(form.getlist(k)) > 1), None)
            if twice is not None:
                raise ApiError(
                    422, "ValidationError", f"{twice}: give it once (only folder and person may be repeated)"
                )
            given: dict[str, Any] = {k: v for k, v in form.items() if k in SearchForm.model_fields and k not in listed}
            for key in listed:
                if form.getlist(key):
                    given[key] = form.getlist(key)
            fields = SearchForm.model_validate(given)
            body = SearchBody.model_construct(
                data=None,
                doc_id=None,
                top_k=fields.top_k,
                face=fields.face,
                min_match=fields.min_match,
                box=None if fields.box is None else list(check_box(fields.box)),
            )
            return body, [await upload.read()], fields.filters()  # (SearchForm validated the fields)
        body = await json_body(request, SearchBody)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from e
    filters = body.filters.filters() if body.filters is not None else Filters()
    if body.doc_id is not None:  # more like an indexed image: any data is not looked at
        return body, [], filters
    return body, [decode_data_uri(d, f"data[{i}]") for i, d in enumerate(body.data or [])], filters


def _requests(body: SearchBody, images: list[bytes], filters: Filters) -> list[SearchRequest]:
    """The library's requests for a search body (one per image, or one for a doc_id)."""
    box = None if body.box is None else check_box(body.box)
    common: dict[str, Any] = {"face": body.face, "box": box, "top_k": body.top_k, "min_match": body.min_match}
    if body.doc_id is not None and not images:  # (a multipart search always has its file)
        return [SearchRequest(like=body.doc_id, filters=filters, **common)]
    return [SearchRequest(image=i, filters=filters, **common) for i in images]


def _payload(service: Service, reports: list[SearchReport], top_k: int, start: float) -> dict[str, Any]:
    out = []
    for report in reports:
        entry: dict[str, Any] = {
            "matches": [service.match(h) for h in report.hits],
            "weak": report.weak,
            "total": report.total,
            "total_exact": report.total_exact,
        }
        if report.faces is not None:
            entry["faces"] = [{"bbox": list(b)} for b in report.faces]
        out.append(entry)
    return {"results": out, "top_k": top_k, "took_ms": round((time.perf_counter() - start) * 1000, 2)}


@router.post(
    "/api/search",
    response_model=SearchResponse,
    response_model_exclude_unset=True,
    responses=errors_for(404, 408, 413, 422, 503),
    openapi_extra=_REQUEST_BODY,
)
async def search(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Images like the query: data URIs (jinabox style), an uploaded file, or an indexed doc_id."""
    start = time.perf_counter()
    body, images, filters = await _parse(request)
    library = service.ready()
    requests = _requests(body, images, filters)
    if len(requests) == 1:  # the common case: batched with other clients' searches
        reports = [await run_in_threadpool(library.search, requests[0])]
    else:  # several images in one request are a batch already
        reports = await run_in_threadpool(library.search_many, requests)
    return _payload(service, reports, requests[0].top_k or library.options.top_k, start)


@router.get(
    "/api/search/tags",
    response_model=SearchResponse,
    response_model_exclude_unset=True,
    responses=errors_for(404, 422, 503),
)
async def search_tags(
    service: ServiceDep,
    filters: FiltersDep,
    q: str = Query(
        min_length=1,
        max_length=100,
        pattern=r"\S",
        description="a word such as bird, dog or daisy, or part of an ImageNet label (not blank)",
    ),
    top_k: int | None = Query(default=None, ge=1, le=MAX_TOP_K, description=TOP_K_HELP),
) -> dict[str, Any]:
    """Indexed images tagged with what ``q`` names: a WordNet word finds every ImageNet class under
    it (``bird``: all 59 bird classes), ranked by summed probability; other text matches inside labels."""
    start = time.perf_counter()
    library = service.ready()
    report = await run_in_threadpool(library.search, SearchRequest(tag=q, top_k=top_k, filters=filters))
    return _payload(service, [report], top_k or library.options.top_k, start)


@router.get("/api/tags", response_model=TagSuggestions, responses=errors_for(422, 503))
async def suggest_tags(
    service: ServiceDep,
    prefix: str = Query(min_length=1, max_length=100, pattern=r"\S", description="the start of a word, e.g. fl"),
    limit: int = Query(default=10, ge=1, le=50),
) -> dict[str, Any]:
    """Tag words starting with ``prefix`` that this collection holds (WordNet's words above ImageNet
    classes: flower, bird, dog, golden retriever), each with how many photos a tag search for it
    finds, the most first."""
    library = service.ready()
    words = await run_in_threadpool(library.tag_words, prefix, limit)
    return {
        "prefix": prefix,
        "suggestions": [{"word": w.word, "photos": w.photos, "classes": w.classes} for w in words],
    }
