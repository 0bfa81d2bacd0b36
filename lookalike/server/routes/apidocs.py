"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), with no request beyond this server.

FastAPI's own pages load their scripts and styles from a CDN (and ReDoc its fonts from Google), so offline
they are blank. Here the assets are the files of the ``fastapi-offline`` package, mounted at :data:`ASSETS`
by the app, and each page is served with a Content-Security-Policy that allows only this server, plus by
hash the few inline scripts and styles the pages need (see :func:`_with_policy`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from lookalike.server.middleware import docs_csp

# The package's static folder: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png.
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = "/docs/assets"
router = APIRouter()


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    app = request.app
    html = get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        # No badge from the online validator (FastAPI's layout has none anyway).
        swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
    )
    return _with_policy(html)


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    app = request.app
    html = get_redoc_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{root}{REDOC_JS}",
        redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
        with_google_fonts=False,
    )
    # ReDoc's styled-components adds empty <style> elements and fills them through the CSSOM (insertRule),
    # which the policy does not govern: the empty string's hash lets those in and nothing else.
    return _with_policy(html, styles=[_sha256(""), *redoc_bundle().style_hashes])


# Served from memory, before the mount of the package's files: see redoc_bundle.
REDOC_JS = f"{ASSETS}/redoc.standalone.js"


@router.get(REDOC_JS, include_in_schema=False)
async def redoc_js(request: Request) -> Response:
    bundle = redoc_bundle()
    headers = {"ETag": bundle.etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == bundle.etag:
        return Response(status_code=304, headers=headers)
    return Response(bundle.source, media_type="text/javascript; charset=utf-8", headers=headers)


_INLINE = {  # a <script> or <style> with no attributes: inline, not src=
    kind: re.compile(rf"<{kind}>(.*?)</{kind}>", re.DOTALL | re.IGNORECASE) for kind in ("script", "style")
}


def _with_policy(response: HTMLResponse, styles: Iterable[str] = ()) -> HTMLResponse:
    """The page with its Content-Security-Policy: 'self', the hashes of the page's own inline scripts and
    styles (Swagger UI's init script, ReDoc's body margin), and ``styles``."""
    body = bytes(response.body).decode()
    hashes = {kind: [_sha256(text) for text in pattern.findall(body)] for kind, pattern in _INLINE.items()}
    policy = docs_csp(scripts=hashes["script"], styles=[*hashes["style"], *styles])
    response.headers["Content-Security-Policy"] = policy
    response.headers["Cache-Control"] = "no-cache"
    return response


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


_JS_STRING = r'"(?:[^"\\]|\\.)*"'
# css-loader's module: s.push([e.id, "<css>", "<media>", {<source map, a JS object literal>}])
_CSS_MODULE = re.compile(rf"\.push\(\[\w+\.id,({_JS_STRING}),({_JS_STRING}),")
_STRING, _KEY = re.compile(_JS_STRING), re.compile(r"([{,])([A-Za-z_$][\w$]*):")


class RedocBundle(NamedTuple):
    source: bytes
    etag: str
    style_hashes: tuple[str, ...]


# The one address beyond this server that ReDoc's bundle asks for: Redocly's logo in the menu's footer. A
# "data:," is no image, so ReDoc's onError drops the <img> and leaves the words "API docs by Redocly".
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@functools.cache
def redoc_bundle() -> RedocBundle:
    """The package's redoc.standalone.js with Redocly's logo left out, and the hashes of its styles."""
    source = (ASSETS_DIR / "redoc.standalone.js").read_text(encoding="utf-8").replace(REDOC_LOGO, "data:,")
    data = source.encode()
    return RedocBundle(data, f'"{hashlib.sha256(data).hexdigest()[:32]}"', _bundled_styles(source))


def _bundled_styles(source: str) -> tuple[str, ...]:
    """The hashes of the <style> elements that ReDoc's bundle adds as it loads (perfect-scrollbar's CSS).

    webpack's style-loader writes each CSS module into a <style> of its own, its source map appended as a
    data: URL, before ReDoc reads any option that could give it a nonce. The text is in the bundle: the CSS
    as a string, the map as an object literal that style-loader passes through ``JSON.stringify``. Rebuilt
    here the same way; a bundle laid out otherwise yields fewer hashes, which the tests catch.
    """
    hashes = []
    for match in _CSS_MODULE.finditer(source):
        try:
            css, media = json.loads(match.group(1)), json.loads(match.group(2))
            source_map = json.loads(_json_of_literal(source, match.end()))
        except ValueError:
            continue
        if media:  # style-loader wraps it in @media; not in the bundles seen
            continue
        encoded = json.dumps(source_map, separators=(",", ":"), ensure_ascii=False).encode()
        data_url = "data:application/json;base64," + base64.b64encode(encoded).decode()
        hashes.append(_sha256(f"{css}\n/*# sourceMappingURL={data_url} */"))
    return tuple(hashes)


def _json_of_literal(source: str, start: int) -> str:
    """The JS object literal at ``source[start]`` (string keys unquoted, values strings, numbers, arrays) as JSON."""
    if source[start] != "{":
        raise ValueError("not an object literal")
    depth, out, i = 0, [], start
    while i < len(source):
        string = _STRING.match(source, i)
        if string:
            out.append(string.group())
            i = string.end()
            continue
        key = _KEY.match(source, i)
        if key:
            out.append(f'{key.group(1)}"{key.group(2)}":')
            depth += key.group(1) == "{"
            i = key.end()
            continue
        char = source[i]
        depth += {"{": 1, "}": -1}.get(char, 0)
        out.append(char)
        i += 1
        if depth == 0:
            return "".join(out)
    raise ValueError("the object literal does not end")
