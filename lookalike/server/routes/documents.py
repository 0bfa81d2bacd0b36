"""Documents: workspace stats, one document, its image and thumbnail, uploads and deletes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from lookalike.document import Document, display_path
from lookalike.errors import NotFound
from lookalike.images import IMAGE_EXTENSIONS
from lookalike.library import IndexReport, IndexRequest, Library, ListRequest
from lookalike.library.types import MAX_LIMIT, Sort
from lookalike.server.routes import FiltersDep, service_of
from lookalike.server.schemas import Deleted, DocDetail, DocPage, IndexResponse, Stats, errors_for
from lookalike.server.state import ApiError, Service
from lookalike.server.thumbnails import thumbnail

router = APIRouter(tags=["documents"])
ServiceDep = Annotated[Service, Depends(service_of)]
BINARY = {"schema": {"type": "string", "format": "binary"}}
# What every browser shows as it is; any other image is served as a JPEG of VIEW_SIZE.
BROWSER_FORMATS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif", ".bmp"})
VIEW_SIZE = 2048
_UPLOAD_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1}
                    },
                    "required": ["files"],
                }
            },
        },
        "required": True,
    }
}


@router.get("/api/stats", response_model=Stats, response_model_exclude_unset=True, responses=errors_for())
async def stats(service: ServiceDep) -> dict[str, Any]:
    """The workspace: documents, vectors, encoder; ``ready`` is false while the model loads."""
    config, library = service.config, service.library
    if library is None:
        error = service.load_error
        return {
            "ready": False,
            "workspace": display_path(str(config.workspace)),
            "writable": config.writes_enabled,
            "error": {"type": type(error).__name__, "message": display_path(str(error))} if error else None,
        }
    report = await run_in_threadpool(library.inspector.stats)
    batching = library.searcher.batcher.enabled
    return {"ready": True, "writable": config.writes_enabled} | report.to_dict() | {"batching": batching}


@router.get("/api/docs", response_model=DocPage, responses=errors_for(404, 422, 503))
async def list_docs(
    service: ServiceDep,
    filters: FiltersDep,
    sort: Annotated[Sort, Query(description="taken (date taken), indexed, name (the path) or size")] = "taken",
    order: Annotated[Literal["asc", "desc"], Query(description="asc: oldest, first or smallest first")] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="documents on this page")] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512, description="a page's next_cursor")] = None,
) -> dict[str, Any]:
    """Browse the collection, a page at a time: the photos the filters keep, with how many there are
    in all. Pages follow by cursor, so photos indexed meanwhile never shift a page; a cursor this
    server did not give is a 400."""
    library = service.ready()
    request = ListRequest(filters, sort, order == "desc", limit, cursor)
    report = await run_in_threadpool(library.list, request)
    return {
        "total": report.total,
        "items": [service.describe(d) for d in report.docs],
        "next_cursor": report.next_cursor,
    }


@router.get("/api/docs/{doc_id}", response_model=DocDetail, responses=errors_for(404, 422, 503))
async def get_doc(doc_id: str, service: ServiceDep) -> dict[str, Any]:
    """An indexed document: its file, size, content hash, tags and what the camera recorded."""
    _, doc = service.stored(doc_id)
    return service.describe(doc)


def servable(library: Library, uri: str | None) -> Path:
    """The file behind a document, only if it really lies inside an indexed root."""
    if not uri:
        raise NotFound("this document has no file")
    real = Path(os.path.realpath(uri))
    for root in library.workspace.roots:
        root_real = Path(os.path.realpath(root))
        if real == root_real or root_real in real.parents:
            if real.is_file():
                return real
            break
    raise NotFound("no such image")  # outside the indexed roots (a symlink out), or gone


@router.get(
    "/api/docs/{doc_id}/image",
    response_class=FileResponse,
    responses=errors_for(404, 422, 503, ok={"image/*": BINARY, "application/octet-stream": BINARY}),
)
async def get_image(doc_id: str, service: ServiceDep) -> FileResponse:
    """The original file, as indexed (only from inside the indexed folders); a format browsers do
    not show (HEIC, TIFF, camera RAW) comes as a JPEG of up to 2048 pixels a side, cached."""
    library, doc = service.stored(doc_id)
    path = servable(library, doc.uri)
    if path.suffix.lower() in BROWSER_FORMATS:
        return FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})
    cache = library.workspace.path / "thumbnails"
    shown = await run_in_threadpool(thumbnail, path, doc.id, doc.content_hash or "", VIEW_SIZE, cache)
    return FileResponse(shown, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/api/docs/{doc_id}/thumbnail",
    response_class=FileResponse,
    responses=errors_for(404, 422, 503, ok={"image/jpeg": BINARY}),
)
async def get_thumbnail(
    doc_id: str, request: Request, service: ServiceDep, size: int = Query(default=256, ge=16, le=1024)
) -> Response:
    """A JPEG at most ``size`` pixels on its longer side (its aspect ratio kept), cached in the
    workspace. Its ETag is the file's content hash and the size: a browser revisiting it is
    answered 304 without the file being read or a thumbnail made."""
    library, doc = service.stored(doc_id)
    headers, unchanged = revalidated(request, f"{doc.content_hash}:{size}")
    if unchanged is not None:
        return unchanged
    path = servable(library, doc.uri)
    cache = library.workspace.path / "thumbnails"
    thumb = await run_in_threadpool(thumbnail, path, doc.id, doc.content_hash or "", size, cache)
    return FileResponse(thumb, media_type="image/jpeg", headers=headers)


def revalidated(request: Request, key: str) -> tuple[dict[str, str], Response | None]:
    """The caching headers of a picture made from ``key`` (the content hash and what was made of
    it), and the 304 to answer a browser that already holds it (else None): decided before the file
    is read or anything is encoded."""
    etag = '"' + hashlib.sha1(key.encode()).hexdigest()[:16] + '"'
    headers = {"Cache-Control": "private, max-age=3600", "ETag": etag}
    if etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return headers, Response(status_code=304, headers=headers)
    return headers, None


def upload_name(data: bytes, filename: str | None) -> str:
    """An uploaded file's name in ``uploads/``: its content's SHA-256 prefix, and its suffix only if it
    is an image extension (nothing of the client's name reaches the filesystem otherwise)."""
    suffix = Path(filename or "").suffix.lower()
    return hashlib.sha256(data).hexdigest()[:20] + (suffix if suffix in IMAGE_EXTENSIONS else ".img")


@router.post(
    "/api/index",
    response_model=IndexResponse,
    responses=errors_for(401, 403, 408, 409, 413, 422, 503),
    openapi_extra=_UPLOAD_BODY,
)
async def index(request: Request, service: ServiceDep) -> dict[str, Any]:
    """Upload images (multipart field 'files', one or more) and index them.

    They are kept in the workspace's ``uploads/`` folder, named by their content's SHA-256. The
    answer is the index run's report (as `lookalike index --json` prints it), and each file's fate."""
    service.check_write(request)
    library = service.ready()
    form = await request.form()
    uploads = [f for f in form.getlist("files") + form.getlist("file") if not isinstance(f, str)]
    if not uploads:
        raise ApiError(422, "ValidationError", "files: upload at least one image in multipart field 'files'")
    # Absolute, as the library records roots: then it is one root, and every upload lies inside it.
    folder = Path(os.path.abspath(library.workspace.uploads))
    folder.mkdir(exist_ok=True)
    saved = []
    for up in uploads:
        data = await up.read()
        target = folder / upload_name(data, up.filename)
        target.write_bytes(data)
        saved.append((up.filename, target))

    def run() -> IndexReport:
        with service.index_lock:  # one indexing run at a time; searches go on meanwhile
            library.workspace.add_roots([str(folder)])  # once: later uploads lie inside it
            # A new vector index, when one is due, is built behind the searches: never waited for here.
            return library.index(IndexRequest(tuple(str(p) for _, p in saved), background=True))

    report = await run_in_threadpool(run)
    service.indexed.inc(report.indexed + report.updated)
    failed = dict(report.skipped_files)
    for _, p in saved:
        if str(p) in failed:
            p.unlink(missing_ok=True)  # keep no copy of what could not be indexed
    files = [
        {
            "name": display_path(name) if name is not None else None,
            "doc_id": Document.from_path(p).id,
            "error": display_path(failed[str(p)]) if str(p) in failed else None,
        }
        for name, p in saved
    ]
    return report.to_dict() | {"files": files}


@router.delete("/api/docs/{doc_id}", response_model=Deleted, responses=errors_for(401, 403, 404, 409, 422, 503))
async def delete_doc(doc_id: str, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Take a document out of the index (and delete the file, if it was uploaded)."""
    service.check_write(request)
    library, doc = service.stored(doc_id)

    def run() -> int:
        with service.index_lock:
            removed = library.indexer.delete_ids([doc.id], background=True)
        delete_uploaded(library, [doc.uri])
        return removed

    removed = await run_in_threadpool(run)
    return {"removed": removed, "doc_id": doc_id}


def delete_uploaded(library: Library, uris: list[str | None]) -> None:
    """Delete the server's own copies of uploaded images (files of ``uploads/``), once they are out
    of the index; any other file stays where it is."""
    uploads = Path(os.path.abspath(library.workspace.uploads))
    for uri in uris:
        if uri and Path(uri).parent == uploads:
            Path(uri).unlink(missing_ok=True)
