"""/docs (Swagger UI) and /redoc (ReDoc) work offline, under a Content-Security-Policy of 'self'.

In-process: the pages name only this server's assets, which answer with their types, and the policy
allows by hash exactly the inline script and styles the pages need. In real Chromium against a real
`lookalike serve`: nothing is asked of any other origin, nothing is blocked by the policy, and both
pages render the API (screenshots: test-artifacts/docs-swagger.png and docs-redoc.png).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from browsing import ARTIFACTS, TIMEOUT_MS, serving
from fastapi.testclient import TestClient

from lookalike import Options
from lookalike.server.app import ServerConfig, create_app
from lookalike.server.routes import apidocs

from conftest import TINY_FLOWS

BASE = "http://127.0.0.1"  # the TestClient's default "testserver" is no loopback name
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app, its lifespan not started: the pages need no workspace."""
    ws = tmp_path_factory.mktemp("api-docs") / "ws"
    yield TestClient(create_app(ServerConfig(Options(workspace=ws, **TINY_FLOWS))), base_url=BASE)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
        self._open = tag if tag in self.inline and not dict(attrs).get("src") else None
        if self._open:
            self.inline[self._open].append("")

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open][-1] += data

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _directives(policy: str) -> dict[str, list[str]]:
    return {name: rest for name, *rest in (d.split() for d in policy.split(";") if d.strip())}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_pages_name_only_this_servers_assets_under_a_policy_of_self(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(r.text)
    assert page.urls and all(u.startswith("/") and not u.startswith("//") for u in page.urls), page.urls
    assert "googleapis" not in r.text and "tiangolo" not in r.text and "cdn" not in r.text

    policy = _directives(r.headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"] and policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    # Inline code only by hash: exactly the page's own; no 'unsafe-inline', 'unsafe-eval' or other origin.
    assert policy["script-src"] == ["'self'", *map(_sha256, page.inline["script"])]
    assert policy["style-src"][0] == "'self'" and set(map(_sha256, page.inline["style"])) <= set(policy["style-src"])
    assert all(s == "'self'" or s.startswith("'sha256-") for s in policy["script-src"] + policy["style-src"])
    assert r.headers["x-content-type-options"] == "nosniff"

    for url in page.urls:
        if url == "/openapi.json":
            continue
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(TYPES[Path(url).suffix]), (url, asset.headers)
        assert asset.headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in asset.headers["content-security-policy"]


def test_swagger_ui_runs_its_init_script_and_no_other(client: TestClient) -> None:
    page = _Page()
    page.feed(client.get("/docs").text)
    assert len(page.inline["script"]) == 1 and "SwaggerUIBundle(" in page.inline["script"][0]
    assert "/openapi.json" in page.inline["script"][0]


def test_redocs_bundle_is_served_without_redoclys_logo_and_its_style_is_allowed(client: TestClient) -> None:
    r = client.get(apidocs.REDOC_JS)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert apidocs.REDOC_LOGO not in r.text
    original = (apidocs.ASSETS_DIR / "redoc.standalone.js").read_text(encoding="utf-8")
    assert apidocs.REDOC_LOGO in original  # else the rewrite is no longer needed (or needs another URL)
    assert client.get(apidocs.REDOC_JS, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    # The one CSS module in the bundle (perfect-scrollbar), as style-loader writes it: the browser test
    # checks that Chromium computes the same hash.
    (style,) = apidocs.redoc_bundle().style_hashes
    styles = _directives(client.get("/redoc").headers["content-security-policy"])["style-src"]
    assert style in styles and _sha256("") in styles
    assert "blob:" in _directives(client.get("/redoc").headers["content-security-policy"])["worker-src"]


def test_the_default_policy_covers_the_pages_assets_and_fastapis_own_pages_are_gone(client: TestClient) -> None:
    r = client.get(f"{apidocs.ASSETS}/favicon.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get(f"{apidocs.ASSETS}/nothing.js").status_code == 404
    assert "content-security-policy" not in client.get("/openapi.json").headers
    assert client.get("/docs/oauth2-redirect").status_code == 404


def test_every_ref_of_the_schema_resolves_in_the_document(client: TestClient) -> None:
    """ReDoc refuses the whole page over one "$ref" it cannot follow (a "#/$defs/..." inside an operation)."""
    spec = client.get("/openapi.json").json()

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    found = set(refs(spec))
    assert found
    for ref in found:
        assert ref.startswith("#/"), ref
        target: Any = spec
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict) and token in target, f"{ref} does not resolve"
            target = target[token]


# --- in Chromium -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`lookalike serve` over an empty workspace: the docs need no photos."""
    with serving(tmp_path_factory.mktemp("api-docs-serve") / "ws") as base:
        yield base


# Reported by the page itself too, so that nothing the console leaves out goes unseen.
_LISTEN_FOR_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_render_in_chromium_asking_nothing_of_any_other_origin(browser, served: str, path: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    requests: list[str] = []
    problems: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" or "Content Security" in m.text else None)
    pg.add_init_script(_LISTEN_FOR_VIOLATIONS)
    try:
        pg.goto(served + path)
        if path == "/docs":
            pg.wait_for_selector(".opblock")
            paths = pg.locator(".opblock-summary-path").all_inner_texts()
            assert "/api/search" in paths and "/api/docs/{doc_id}" in paths, paths
            search = pg.locator(
                ".opblock-post", has=pg.locator(".opblock-summary-path", has_text=re.compile("^/api/search$"))
            )
            search.locator(".opblock-summary").click()  # its request body: JSON with the filters, or multipart
            example = search.locator(".opblock-section-request-body .body-param__example")
            example.wait_for()
            assert '"filters"' in example.inner_text() and '"near"' in example.inner_text()  # its $defs resolved
            assert "Resolver error" not in pg.content()
            search.locator(".opblock-summary").click()
        else:
            pg.wait_for_selector("[role=menu] >> text=search")
            pg.wait_for_selector("h1 >> text=lookalike")
            assert pg.get_by_text("/api/search", exact=True).count() > 0  # an operation, in the right-hand panel
            assert "Something went wrong" not in pg.content()
        pg.wait_for_load_state("networkidle")
        ARTIFACTS.mkdir(exist_ok=True)
        name = "swagger" if path == "/docs" else "redoc"
        pg.screenshot(path=str(ARTIFACTS / f"docs-{name}.png"))
        violations = pg.evaluate("window.__violations")
    finally:
        context.close()
    foreign = [u for u in requests if not u.startswith((served + "/", "data:", f"blob:{served}/"))]
    assert foreign == [], f"{path} must work offline, yet asked for {foreign}"
    assert f"{served}{path}" in requests and f"{served}/openapi.json" in requests
    assert violations == [] and problems == [], (violations, problems)
