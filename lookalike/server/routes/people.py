"""People: the faces of a workspace indexed with faces, grouped into people; names and corrections.

Reading is open like every GET; naming, merging, hiding and moving a face are writes (token, Origin
and Host rules) and wait their turn with index runs. A person is named by id or by name in a path.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike.library import Library
from lookalike.library.people import Person
from lookalike.server.routes import service_of
from lookalike.server.routes.documents import BINARY, revalidated, servable
from lookalike.server.schemas import (
    FacePersonBody,
    FacesResponse,
    HideBody,
    MergeBody,
    NameBody,
    PeopleResponse,
    PersonInfo,
    errors_for,
)
from lookalike.server.state import ApiError, Service
from lookalike.server.thumbnails import face_thumbnail

router = APIRouter(tags=["people"])
ServiceDep = Annotated[Service, Depends(service_of)]
_WRITE_ERRORS = errors_for(401, 403, 404, 409, 422, 503)
# A face is named by its chunk's id (SQLite's INTEGER), a person by id or name.
FaceId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="a face's id (its chunk's)")]
PersonRef = Annotated[str, PathParam(min_length=1, max_length=200, description="a person's id or name")]


def person_json(person: Person) -> dict[str, Any]:
    out = person.to_dict()
    face = out["cover"]["face"]
    out["cover"]["thumbnail_url"] = f"/api/faces/{face}/thumbnail?size=160" if face is not None else None
    return out


@router.get("/api/people", response_model=PeopleResponse, responses=errors_for(422, 503))
async def people(
    service: ServiceDep, hidden: Annotated[bool, Query(description="hidden people too")] = False
) -> dict[str, Any]:
    """The people found (with 3 faces or more, or a name), the most faces first; none in a
    workspace indexed without faces."""
    library = service.ready()
    listed = await run_in_threadpool(lambda: library.people.list(hidden=hidden))
    return {"people": [person_json(p) for p in listed]}


@router.get("/api/people/{person}", response_model=PersonInfo, responses=errors_for(404, 422, 503))
async def person(person: PersonRef, service: ServiceDep) -> dict[str, Any]:
    """One person, by id or name, with the documents they are in (``photo_ids``)."""
    library = service.ready()
    return person_json(await run_in_threadpool(library.people.person, person))


@router.get("/api/docs/{doc_id}/faces", response_model=FacesResponse, responses=errors_for(404, 422, 503))
async def faces(doc_id: str, service: ServiceDep) -> dict[str, Any]:
    """The faces found in a photo, with whose they are: what a viewer draws."""
    library, doc = service.stored(doc_id)
    found = await run_in_threadpool(library.people.faces, [doc.id])
    return {"faces": [_face(f) for f in found.get(doc.id, [])]}


def _face(f: Any) -> dict[str, Any]:
    return {
        "face": f.face,
        "doc_id": f.doc_id,
        "bbox": list(f.bbox) if f.bbox else None,
        "person": f.person,
        "name": f.name,
        "pinned": f.pinned,
        "nobody": f.nobody,
    }


@router.get(
    "/api/faces/{face}/thumbnail",
    response_class=FileResponse,
    responses=errors_for(404, 422, 503, ok={"image/jpeg": BINARY}),
)
async def face_thumb(
    face: FaceId, request: Request, service: ServiceDep, size: int = Query(default=160, ge=16, le=512)
) -> Response:
    """A face cut out of its photo as a square JPEG of ``size`` pixels, with a margin around it; cached."""
    library = service.ready()
    info = library.workspace.store.chunk_info([face]).get(face)
    if info is None or info[1] != "face" or info[2] is None:
        raise ApiError(404, "NotFound", f"no face {face}")
    doc = library.doc(info[0])
    headers, unchanged = revalidated(request, f"{doc.content_hash}:{face}:{size}")
    if unchanged is not None:
        return unchanged
    path = servable(library, doc.uri)
    cache = library.workspace.path / "thumbnails"
    thumb = await run_in_threadpool(face_thumbnail, path, face, info[2], doc.content_hash or "", size, cache)
    return FileResponse(thumb, media_type="image/jpeg", headers=headers)


async def _write(request: Request, service: Service, change: Any) -> Any:
    """Run a correction as a write: the write rules, then one at a time with index runs."""
    service.check_write(request)
    library = service.ready()

    def run() -> Any:
        with service.index_lock:
            return change(library)

    return await run_in_threadpool(run)


@router.post("/api/people/{person}/name", response_model=PersonInfo, responses=_WRITE_ERRORS)
async def name(person: PersonRef, body: NameBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Name a person (null: no name). A name another person has is refused (400): merge them instead."""
    done = await _write(request, service, lambda library: library.people.name(person, body.name))
    return person_json(done)


@router.post("/api/people/{person}/merge", response_model=PersonInfo, responses=_WRITE_ERRORS)
async def merge(person: PersonRef, body: MergeBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Merge this person into ``into``: every face becomes theirs. The answer is the merged person."""
    done = await _write(request, service, lambda library: library.people.merge(person, body.into))
    return person_json(done)


@router.post("/api/people/{person}/hide", response_model=PersonInfo, responses=_WRITE_ERRORS)
async def hide(person: PersonRef, body: HideBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Hide a person from the list (or show them again); their faces stay theirs."""
    done = await _write(request, service, lambda library: library.people.hide(person, body.hidden))
    return person_json(done)


@router.post("/api/faces/{face}/person", response_model=FacesResponse, responses=_WRITE_ERRORS)
async def move_face(face: FaceId, body: FacePersonBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Say whose a face is ("not this person": null, or another person). The answer is the face."""

    def change(library: Library) -> Any:
        return library.people.move(face, body.person)

    return {"faces": [_face(await _write(request, service, change))]}
