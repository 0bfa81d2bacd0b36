"""Duplicates to review: the groups, moving the others' files aside (and back), removing many at once.

Moves and removals are writes like uploads and deletes (token, Origin and Host rules), run one at a
time under the index lock. A move can only put files inside the indexed folders or the trash folder
the server was started with (``lookalike serve --trash``); the library checks where a folder leads
(links followed) and refuses anything else with a 400 that says why, before any file moves.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from lookalike.document import display_path
from lookalike.dupes import DupeFile, DupeReport
from lookalike.errors import NotFound
from lookalike.library.moving import MoveReport
from lookalike.server.routes import service_of
from lookalike.server.routes.documents import delete_uploaded
from lookalike.server.schemas import (
    DupesResponse,
    MoveBody,
    MoveResponse,
    RemoveBody,
    RemovedMany,
    UndoBody,
    errors_for,
)
from lookalike.server.state import Service, urls

router = APIRouter(tags=["duplicates"])
ServiceDep = Annotated[Service, Depends(service_of)]


@router.get("/api/dupes", response_model=DupesResponse, responses=errors_for(422, 503))
async def dupes(
    service: ServiceDep,
    threshold: Annotated[
        float | None,
        Query(
            gt=0,
            le=1,
            description="the cosine similarity from which images are near duplicates "
            "(default: the floor search results are badged near_duplicate from)",
        ),  # fmt: skip
    ] = None,
) -> dict[str, Any]:
    """Groups of exact copies and near duplicates, each with its suggested keeper first; the frames
    of a burst (one camera, another moment) are left out, and counted."""
    library = service.ready()
    found: DupeReport = await run_in_threadpool(library.dupes, threshold)
    groups = [
        {
            "kind": g.kind,
            "similarity": round(g.similarity, 4),
            "keep": g.keep.doc_id,
            "files": [_file(f) for f in g.files],
        }
        for g in found.groups
    ]
    return {"threshold": found.threshold, "docs": found.docs, "distinct_shots": found.distinct_shots, "groups": groups}


def _file(f: DupeFile) -> dict[str, Any]:
    path = display_path(f.path)
    return f.to_dict() | {"path": path, "name": os.path.basename(path)} | urls(f.doc_id)


_WRITE_ERRORS = errors_for(401, 403, 404, 409, 422, 503)


@router.post("/api/dupes/move", response_model=MoveResponse, responses=_WRITE_ERRORS)
async def move(body: MoveBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Move these documents' files into a folder (inside the indexed folders, or a name inside the
    trash folder) and take them out of the index. Never deletes and never overwrites; the answer's
    batch id undoes it. Refused (400, nothing moved) where the folder leads elsewhere, or a file is
    gone or changed since it was indexed."""
    service.check_write(request)
    library = service.ready()

    def run() -> MoveReport:
        with service.index_lock:
            return library.move(body.doc_ids, body.folder, service.config.trash, background=True)

    return (await run_in_threadpool(run)).to_dict()


@router.post("/api/dupes/undo", response_model=MoveResponse, responses=_WRITE_ERRORS)
async def undo(request: Request, service: ServiceDep, body: UndoBody | None = None) -> dict[str, Any]:
    """Put a batch of moved files back where they were (by default the latest batch not yet
    undone), and index them there again."""
    service.check_write(request)
    library = service.ready()
    batch = body.batch if body is not None else None

    def run() -> MoveReport:
        with service.index_lock:
            return library.undo_move(batch, background=True)

    return (await run_in_threadpool(run)).to_dict()


@router.post("/api/remove", response_model=RemovedMany, responses=_WRITE_ERRORS)
async def remove(body: RemoveBody, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Take several documents out of the index at once, as DELETE /api/docs/{doc_id} does one: the
    file of an uploaded image is deleted (it is the server's copy), any other file stays. An id not
    indexed is a 404, and nothing is removed."""
    service.check_write(request)
    library = service.ready()
    ids = list(dict.fromkeys(body.doc_ids))

    def run() -> int:
        with service.index_lock:
            docs = library.workspace.store.get_docs(ids)
            missing = [i for i in ids if i not in docs]
            if missing:
                raise NotFound(f"no indexed document {missing[0]!r}")
            removed = library.indexer.delete_ids(ids, background=True)
        delete_uploaded(library, [d.uri for d in docs.values()])
        return removed

    return {"removed": await run_in_threadpool(run), "doc_ids": ids}
