"""The built-in web page (its static files are mounted by the app)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse, Response

STATIC = Path(str(resources.files("lookalike.server").joinpath("static")))
router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> Response:
    index_html = STATIC / "index.html"
    if not index_html.is_file():
        return PlainTextResponse("the web page is not installed; the API is at /docs", status_code=404)
    return FileResponse(index_html, headers={"Cache-Control": "no-cache"})
