"""Searching by a part of a photo, and "why did it match", in Debian's Chromium against a real
`lookalike serve` of a workspace indexed with ``--regions``.

The photos are tests/pasting.py's: three tuxpaint cut-outs (an orange, a lobster, a daffodil) pasted onto
square crops of two scikit-image photos (a cup of coffee, a cat), each object on both, in different
corners, at 45% of the side; two plain photos besides. A search by the whole of a composite meets
the other objects on the same background; a box drawn around its object finds that object on the
other background (the orange and the daffodil, solid things, are searched by; the lobster, mostly
legs and feelers, is there to be passed over). The page draws the box with the mouse, the keyboard
and a finger, frames the part of each result that matched, and overlays the heat map of
/api/explain in the viewer.
Screenshots go to test-artifacts/regions-*.png.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe import axe_violations
from browsing import ARTIFACTS, serving, wait_js, watched_page, without_errors
from pasting import make_composites
from PIL import Image

from conftest import lookalike_cmd

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
QUERY = "orange-coffee"  # the composite searched by in the mouse and Why? tests
LOADED = "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)"  # images shown


@pytest.fixture(scope="module")
def composites(tuxpaint, photos: dict[str, Image.Image], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_composites(
        tuxpaint, photos, tmp_path_factory.mktemp("regions-photos"), tmp_path_factory.mktemp("upload")
    )


@pytest.fixture(scope="module")
def server(composites: dict[str, Any], model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`lookalike index --regions` then `lookalike serve`."""
    ws = tmp_path_factory.mktemp("regions-ws")
    done = subprocess.run(
        [*lookalike_cmd(), "index", "--regions", str(composites["root"]), "-w", str(ws)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with serving(ws) as base:
        yield base


@pytest.fixture(scope="module")
def ids(server: str) -> dict[str, str]:
    """Each indexed photo's document id, by its file's stem."""
    items = httpx.get(f"{server}/api/docs", params={"limit": 100}, timeout=30).json()["items"]
    return {Path(d["name"]).stem: d["doc_id"] for d in items}


@pytest.fixture
def page(browser, server: str) -> Iterator[Any]:
    """The page at desktop width; no script error, no CSP violation, nothing fetched from elsewhere."""
    with without_errors(watched_page(browser, server, DESKTOP)) as pg:
        yield pg


# --- helpers ---------------------------------------------------------------------------------------------


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"regions-{name}.png"))


def open_search(pg, server: str, doc_id: str) -> None:
    """More like an indexed photo, in a workspace the page knows has regions, its preview loaded."""
    pg.goto(f"{server}/#more={doc_id}")
    wait_js(pg, "() => document.body.classList.contains('region-workspace')")
    wait_results(pg)
    wait_js(pg, LOADED, "#query-img")


def wait_results(pg, box: str | None = None) -> list[str]:
    """The results, once a search is done (by the whole photo when ``box`` is None, else by ``box``
    given as the page sends it, "x0,y0,x1,y1"; "*": by any box) and its thumbnails have loaded."""
    has_box = "" if box is None else "[data-box]" if box == "*" else f'[data-box="{box}"]'
    selector = f'#results[data-state="done"]{has_box}' + (":not([data-box])" if box is None else "")
    pg.wait_for_selector(selector, state="attached")
    if pg.is_visible("#more"):
        pg.click("#more")
    wait_js(pg, LOADED, "#results .thumb img")
    return pg.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")


def query_box(pg) -> list[float] | None:
    got = pg.get_attribute("#results", "data-box")
    return [float(v) for v in got.split(",")] if got else None


def name_of(ids: dict[str, str], doc_id: str) -> str:
    return next(name for name, i in ids.items() if i == doc_id)


def picture_rect(pg, selector: str) -> dict[str, float]:
    """Where an image's picture lies on the screen (its element is object-fit: contain, or its own shape)."""
    return pg.eval_on_selector(
        selector,
        """i => {
            const r = i.getBoundingClientRect();
            const w = i.clientWidth, h = i.clientHeight;
            const s = Math.min(w / i.naturalWidth, h / i.naturalHeight);
            const pw = i.naturalWidth * s, ph = i.naturalHeight * s;
            return {x: r.left + i.clientLeft + (w - pw) / 2, y: r.top + i.clientTop + (h - ph) / 2,
                    width: pw, height: ph};
        }""",
    )


def query_rect(pg) -> dict[str, float]:
    """The query's picture on the screen, scrolled into view first ("show more" may have scrolled it away)."""
    pg.locator("#query-preview").scroll_into_view_if_needed()
    return picture_rect(pg, "#query-img")


def on_photo(rect: dict[str, float], box: list[float], pad: float = 0.0) -> tuple[float, float, float, float]:
    """``box`` (fractions of a photo, grown by ``pad`` on each side, held inside it) in screen pixels."""
    x0, y0, x1, y1 = max(0, box[0] - pad), max(0, box[1] - pad), min(1, box[2] + pad), min(1, box[3] + pad)
    return (
        rect["x"] + x0 * rect["width"],
        rect["y"] + y0 * rect["height"],
        rect["x"] + x1 * rect["width"],
        rect["y"] + y1 * rect["height"],
    )


def region_frames(pg) -> list[dict]:
    """Each result card's region frame, as fractions of its thumbnail's picture (None: no frame)."""
    return pg.eval_on_selector_all(
        "#results > li",
        """lis => lis.map(li => {
            const frame = li.querySelector('.thumb .region-box');
            if (!frame || frame.hidden) return null;
            const i = li.querySelector('.thumb img');
            const r = i.getBoundingClientRect(), f = frame.getBoundingClientRect();
            const s = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
            const pw = i.naturalWidth * s, ph = i.naturalHeight * s;
            const x = r.left + (r.width - pw) / 2, y = r.top + (r.height - ph) / 2;
            const box = [(f.left - x) / pw, (f.top - y) / ph, (f.right - x) / pw, (f.bottom - y) / ph];
            return {doc: li.dataset.docId, box};
        })""",
    )


def overlap(a: list[float], b: list[float]) -> float:
    """The share of ``b``'s area that ``a`` covers."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h) / ((b[2] - b[0]) * (b[3] - b[1]))


def drag(pg, start: tuple[float, float], end: tuple[float, float]) -> None:
    pg.mouse.move(*start)
    pg.mouse.down()
    pg.mouse.move(*end, steps=8)
    pg.mouse.up()


def hottest_cell(pg, picture: str = "#viewer-img") -> tuple[float, float]:
    """The centre of the heat map's hottest cell, as fractions of the photo shown under it."""
    rect = picture_rect(pg, picture)
    cx, cy = pg.evaluate(
        """() => {
            const cells = [...document.querySelectorAll('#viewer-heat .heat-cell')];
            const best = cells.reduce((a, c) => (Number(c.dataset.heat) > Number(a.dataset.heat) ? c : a));
            const r = best.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2];
        }"""
    )
    return (cx - rect["x"]) / rect["width"], (cy - rect["y"]) / rect["height"]


def no_sideways_scroll(pg) -> None:
    scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page scrolls sideways: {scroll} > {inner}"


# --- tests -------------------------------------------------------------------------------------------------


def test_the_workspace_says_it_has_regions(server: str) -> None:
    assert httpx.get(f"{server}/api/stats", timeout=30).json().get("regions") is True


def test_a_box_drawn_with_the_mouse_searches_by_that_part(page, server: str, ids, composites) -> None:
    """The orange on the coffee photo: a box drawn around it finds the orange on the cat photo first,
    and every result frames the part of it that matched; "Whole photo" searches the whole again."""
    open_search(page, server, ids[QUERY])
    assert page.is_visible("#region-tools") and page.is_visible("#region-clear")
    assert page.get_attribute("#region-clear", "aria-pressed") == "true"
    assert page.get_attribute("#query-preview", "tabindex") == "0"
    assert page.get_attribute("#query-preview", "aria-label")
    assert page.eval_on_selector("#query-preview", "e => getComputedStyle(e).touchAction") == "none"
    assert not any(region_frames(page))  # a whole-photo search frames nothing
    shot(page, "whole")

    box = composites["boxes"][QUERY]
    rect = query_rect(page)
    x0, y0, x1, y1 = on_photo(rect, box, pad=0.02)
    # While the button is held, the box shows where it is drawn.
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=4)
    assert page.is_visible("#query-region-box")
    page.mouse.move(x1, y1, steps=4)
    page.mouse.up()
    results = wait_results(page, "*")
    sent = query_box(page)
    assert sent is not None and overlap(sent, box) > 0.95, (sent, box)
    assert page.is_visible("#query-region-box")
    assert page.get_attribute("#region-clear", "aria-pressed") == "false"
    assert "boxed part" in page.text_content("#status")

    assert ids[QUERY] not in results  # the photo itself is no answer
    assert name_of(ids, results[0]) == "orange-chelsea", [name_of(ids, r) for r in results]
    frames = region_frames(page)
    assert frames and all(frames), frames  # every match of a box search says which part matched
    first = frames[0]["box"]
    assert overlap(first, composites["boxes"]["orange-chelsea"]) > 0.3, (first, composites["boxes"]["orange-chelsea"])
    assert all(-0.02 <= v <= 1.02 for f in frames for v in f["box"]), frames  # on the photo, not beside it
    shot(page, "box-mouse")

    # A click (a box too small to be a part) changes nothing; "Whole photo" searches the whole again.
    page.mouse.click((x0 + x1) / 2, (y0 + y1) / 2)
    page.wait_for_timeout(400)
    assert query_box(page) == sent
    page.click("#region-clear")
    wait_results(page)
    assert page.is_hidden("#query-region-box")
    assert page.get_attribute("#region-clear", "aria-pressed") == "true"
    assert not any(region_frames(page))


def test_the_keyboard_places_moves_resizes_and_clears_the_box(page, server: str, ids, composites) -> None:
    """An uploaded photo (the daffodil in the middle of a photo not indexed): B puts a box on the
    middle half, which finds a daffodil first; the arrow keys move it, Shift+arrows resize it, Esc
    clears it; each change searches again (once, after a run of keys)."""
    page.goto(server)
    wait_js(page, "() => document.body.classList.contains('region-workspace')")
    page.set_input_files("#file", str(composites["upload"]))
    wait_results(page)
    wait_js(page, LOADED, "#query-img")
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.method) if r.url.endswith("/api/search") else None)

    page.focus("#query-preview")
    page.keyboard.press("b")
    results = wait_results(page, "0.25,0.25,0.75,0.75")
    assert page.is_visible("#query-region-box")
    assert name_of(ids, results[0]).startswith("daffodil-"), [name_of(ids, r) for r in results]
    assert all(region_frames(page)), region_frames(page)  # the server had the box: each match is a region
    assert "Box 50% wide" in page.text_content("#region-say")
    shot(page, "box-keyboard")

    before = len(searches)
    for key in ("ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    wait_results(page, "0.35,0.3,0.85,0.8")
    assert len(searches) == before + 1, "a run of keys searches once"
    page.keyboard.press("Shift+ArrowLeft")
    page.keyboard.press("Shift+ArrowUp")
    wait_results(page, "0.35,0.3,0.8,0.75")
    assert page.evaluate("document.activeElement.id") == "query-preview"  # the keyboard stays on the photo
    page.keyboard.press("Escape")
    wait_results(page)
    assert page.is_hidden("#query-region-box")
    assert page.get_attribute("#region-clear", "aria-pressed") == "true"


def test_why_overlays_where_the_result_is_like_the_query(page, server: str, ids, composites) -> None:
    """In the viewer, "Why?" lays the heat map of /api/explain over the result: its hottest cell lies
    on the pasted object. It follows next and previous, goes off when pressed again, and an error
    says so."""
    open_search(page, server, ids[QUERY])
    rect = query_rect(page)
    x0, y0, x1, y1 = on_photo(rect, composites["boxes"][QUERY], pad=0.02)
    drag(page, (x0, y0), (x1, y1))
    results = wait_results(page, "*")
    explains: list[str] = []
    page.on("request", lambda r: explains.append(r.post_data or "") if "/api/explain" in r.url else None)

    page.click("#results > li:first-child .thumb")
    page.wait_for_selector("#viewer[open]")
    wait_js(page, LOADED, "#viewer-img")
    assert page.is_visible("#viewer-region")  # the part that matched, framed on the photo
    assert page.is_visible("#viewer-why")
    assert page.get_attribute("#viewer-why", "aria-pressed") == "false"
    page.click("#viewer-why")
    assert page.get_attribute("#viewer-why", "aria-pressed") == "true"
    page.wait_for_selector("#viewer-heat .heat-cell")
    wait_js(page, "() => !document.getElementById('viewer-heat').hidden")
    assert page.locator("#viewer-heat .heat-cell").count() == 49
    assert json.loads(explains[-1]) == {"doc_id": ids[QUERY], "result": results[0], "box": query_box(page)}
    assert page.eval_on_selector("#viewer-heat", "e => getComputedStyle(e).pointerEvents") == "none"
    x, y = hottest_cell(page)
    box = composites["boxes"][name_of(ids, results[0])]
    cell = 1 / 7  # the hottest cell lies on the object: its centre within a cell of the object's box
    assert box[0] - cell <= x <= box[2] + cell and box[1] - cell <= y <= box[3] + cell, ((x, y), box)
    assert "most alike" in page.text_content("#viewer-why-text")
    page.wait_for_timeout(300)
    shot(page, "why")

    # The next result: its own explanation, fetched for it.
    page.keyboard.press("ArrowRight")
    wait_js(page, "() => document.getElementById('viewer-position').textContent.startsWith('2 of')")
    wait_js(page, "() => !document.getElementById('viewer-heat').hidden")
    assert json.loads(explains[-1])["result"] == results[1]
    assert page.get_attribute("#viewer-why", "aria-pressed") == "true"
    page.keyboard.press("ArrowLeft")
    wait_js(page, "() => document.getElementById('viewer-position').textContent.startsWith('1 of')")
    wait_js(page, "() => !document.getElementById('viewer-heat').hidden")

    page.click("#viewer-why")
    assert page.get_attribute("#viewer-why", "aria-pressed") == "false"
    assert page.is_hidden("#viewer-heat") and page.is_hidden("#viewer-why-panel")

    # A server that cannot explain (a result not explained before): the viewer says so, and stays usable.
    page.route(
        "**/api/explain",
        lambda route: route.fulfill(
            status=422,
            content_type="application/json",
            body=json.dumps({"error": {"type": "BadInput", "message": "no regions here"}}),
        ),
    )
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_js(page, "() => document.getElementById('viewer-position').textContent.startsWith('3 of')")
    page.click("#viewer-why")
    wait_js(page, "() => document.getElementById('viewer-why-text').textContent.startsWith('Could not explain')")
    assert page.text_content("#viewer-why-text") == "Could not explain: no regions here"
    assert page.is_hidden("#viewer-heat")
    page.keyboard.press("Escape")
    wait_js(page, "() => !document.getElementById('viewer').open")


def test_a_tag_search_and_the_library_have_no_why(page, server: str, ids) -> None:
    page.goto(f"{server}/#photo={ids[QUERY]}")
    page.wait_for_selector("#viewer[open]")
    assert page.is_hidden("#viewer-why") and page.is_hidden("#viewer-region")
    page.keyboard.press("Escape")
    page.goto(f"{server}/#tag=orange")
    page.wait_for_selector('#results[data-state="done"]', state="attached")
    assert page.is_hidden("#region-tools")
    if page.locator("#results > li").count():
        page.click("#results > li:first-child .thumb")
        page.wait_for_selector("#viewer[open]")
        assert page.is_hidden("#viewer-why")


def test_a_phone_draws_the_box_with_a_finger(browser, server: str, ids, composites) -> None:
    """375 px wide, with touch: a finger drags a box (the page does not scroll under it), the results
    frame their parts, and the viewer's Why? fits; axe-core finds nothing serious, nothing scrolls
    sideways, and the new controls are at least 44 px."""
    context, pg, errors, foreign = watched_page(browser, server, PHONE, scale=2, touch=True)
    try:
        open_search(pg, server, ids[QUERY])
        no_sideways_scroll(pg)
        rect = query_rect(pg)
        assert rect["width"] >= 200, rect  # large enough to draw on with a finger
        x0, y0, x1, y1 = on_photo(rect, composites["boxes"][QUERY], pad=0.02)
        cdp = context.new_cdp_session(pg)
        scroll = pg.evaluate("window.scrollY")
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x0, "y": y0}]})
        for i in range(1, 9):
            point = {"x": x0 + (x1 - x0) * i / 8, "y": y0 + (y1 - y0) * i / 8}
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        results = wait_results(pg, "*")
        assert pg.evaluate("window.scrollY") == scroll  # the finger drew; the page stayed
        assert name_of(ids, results[0]) == "orange-chelsea"
        assert all(region_frames(pg))
        no_sideways_scroll(pg)
        for control in ("#region-clear",):
            size = pg.locator(control).bounding_box()
            assert size and size["width"] >= 44 and size["height"] >= 44, (control, size)
        assert axe_violations(pg) == []
        shot(pg, "phone-results")

        pg.tap("#results > li:first-child .thumb")
        pg.wait_for_selector("#viewer[open]")
        pg.tap("#viewer-why")
        wait_js(pg, "() => !document.getElementById('viewer-heat').hidden")
        wait_js(pg, LOADED, "#viewer-why-query-img")
        size = pg.locator("#viewer-why").bounding_box()
        assert size and size["width"] >= 44 and size["height"] >= 44, size
        no_sideways_scroll(pg)
        assert axe_violations(pg) == []
        pg.wait_for_timeout(300)
        shot(pg, "phone-why")
    finally:
        context.close()
    assert errors == [] and foreign == [], (errors, foreign)


def test_a_workspace_without_regions_draws_no_box_yet_says_why(browser, composites, model_dir: Path, tmp_path) -> None:
    """The same photos indexed without --regions: the query takes no box, its results frame nothing,
    and Why? still lays the heat of the whole photos over a result."""
    ws = tmp_path / "ws"
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(composites["root"]), "-w", str(ws)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    with serving(ws) as base:
        items = httpx.get(f"{base}/api/docs", params={"limit": 100}, timeout=30).json()["items"]
        query = next(d["doc_id"] for d in items if d["name"] == f"{QUERY}.jpg")
        context, pg, errors, foreign = watched_page(browser, base, DESKTOP)
        try:
            pg.goto(f"{base}/#more={query}")
            wait_results(pg)
            assert not pg.evaluate("document.body.classList.contains('region-workspace')")
            assert pg.is_hidden("#region-tools")
            assert pg.get_attribute("#query-preview", "tabindex") is None
            assert not any(region_frames(pg))
            pg.click("#results > li:first-child .thumb")
            pg.wait_for_selector("#viewer[open]")
            pg.click("#viewer-why")
            wait_js(pg, "() => !document.getElementById('viewer-heat').hidden")
            assert pg.locator("#viewer-heat .heat-cell").count() == 49
            assert pg.is_hidden("#viewer-region")
        finally:
            context.close()
    assert errors == [] and foreign == [], (errors, foreign)
