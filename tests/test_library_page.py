"""The page as a photo library, in Debian's Chromium against a real `lookalike serve` of 440 photos.

The 439 tuxpaint photos (dated by their files, a photo every two days back from today, so the
timeline spans two years) and a 60% JPEG copy of one of them that carries a GPS position:
440 photos, one pair of near duplicates. The page opens on the collection, scrolls through all of
it with a bounded DOM, opens the viewer, filters, reviews the duplicates (moving the copy aside
and back), adds and removes photos, and passes axe-core at desktop and phone widths. Screenshots
go to test-artifacts/library-*.png.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe import axe_violations
from browsing import ARTIFACTS, serving, wait_js, watched_page, without_errors
from PIL import Image

from conftest import lookalike_cmd

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHOTOS = 440
DAY_S = 86400
COPY_GPS = (48.8584, 2.2945)  # where the copy says it was taken
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def _gps_exif(lat: float, lon: float) -> Image.Exif:
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    to_dms = lambda v: (int(v), int(v * 60 % 60), round(v * 3600 % 60, 2))  # noqa: E731
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), to_dms(abs(lat))
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), to_dms(abs(lon))
    return exif


@pytest.fixture(scope="module")
def library(tuxpaint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """440 photos in their class folders, dated a photo every two days; the copy (a 60% JPEG of a
    photo, with a GPS position) is the newest."""
    root = tmp_path_factory.mktemp("library")
    now = time.time()
    sources = sorted(tuxpaint.images)
    for n, image in enumerate(sources):
        target = root / tuxpaint.labels[image] / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, target)
        os.utime(target, (now - (n + 1) * 2 * DAY_S, now - (n + 1) * 2 * DAY_S))
    # A large photo (1226 x 309): a copy at 60% is still a near duplicate (cosine 0.95), where the
    # small cut-outs lose too much detail when halved.
    large = next(image for image in sources if image.name == "indycar.png")
    original = root / tuxpaint.labels[large] / large.name
    big = Image.new("RGBA", Image.open(original).size, "white")  # its transparency on white, as lookalike sees it
    big.alpha_composite(Image.open(original).convert("RGBA"))
    big = big.convert("RGB")
    copy = root / "copies" / f"copy-of-{original.stem}.jpg"
    copy.parent.mkdir()
    big.resize((big.width * 3 // 5, big.height * 3 // 5)).save(copy, quality=90, exif=_gps_exif(*COPY_GPS))
    assert len(sources) + 1 == PHOTOS
    return {"root": root, "original": original, "copy": copy}


@pytest.fixture(scope="module")
def server(library: dict[str, Any], model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ws = tmp_path_factory.mktemp("ws")
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(library["root"]), "-w", str(ws)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    with serving(ws) as base:
        yield base


def _open(browser, server: str, viewport: dict, scale: float = 1, path: str = "/") -> tuple[Any, Any, list, list]:
    context, pg, errors, foreign = watched_page(browser, server, viewport, scale=scale, touch=viewport is PHONE)
    pg.goto(server + path)
    pg.wait_for_selector("#grid .tile img", state="attached") if path == "/" else None
    return context, pg, errors, foreign


@pytest.fixture
def page(browser, server: str) -> Iterator[Any]:
    """The page at desktop width; no script error, no CSP violation, nothing fetched from elsewhere."""
    with without_errors(_open(browser, server, DESKTOP)) as pg:
        yield pg


@pytest.fixture
def phone(browser, server: str) -> Iterator[Any]:
    context, pg, errors, foreign = _open(browser, server, PHONE, scale=3)
    try:
        yield pg
    finally:
        context.close()
    assert errors == [] and foreign == [], (errors, foreign)


def shot(pg, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"library-{name}.png"), full_page=full_page)


def no_serious_violations(pg, where: str) -> None:
    found = axe_violations(pg)
    assert found == [], f"axe-core, {where}: {found}"


def no_sideways_scroll(pg) -> None:
    scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page scrolls sideways: {scroll} > {inner}"


def docs(server: str, **params: Any) -> dict:
    return httpx.get(f"{server}/api/docs", params={"limit": 1000, **params}, timeout=30).json()


def doc_id_of(server: str, path: Path) -> str:
    found = [d for d in docs(server)["items"] if d["uri"] == str(path)]
    assert found, path
    return found[0]["doc_id"]


def tile_indexes(pg) -> list[int]:
    return pg.eval_on_selector_all("#grid .tile", "ts => ts.map(t => Number(t.dataset.index))")


# --- the collection first ------------------------------------------------------------------------


def test_the_page_opens_on_the_collection_and_scrolls_through_every_photo(page, server: str) -> None:
    assert page.evaluate("document.body.dataset.view") == "browse"
    assert page.text_content("#count") == f"{PHOTOS} photos"
    months = page.eval_on_selector_all("#timeline [data-month]", "bs => bs.map(b => b.dataset.month)")
    assert len(months) >= 24 and months == sorted(months, reverse=True)  # two years, newest first
    shot(page, "browse-desktop")
    # newest first: the first tile is the copy (dated now), the last the oldest file
    newest = docs(server, sort="taken", order="desc", limit=1)["items"][0]["doc_id"]
    assert page.get_attribute("#grid .tile[data-index='0']", "data-id") == newest

    seen: set[str] = set()
    most = 0
    for _ in range(400):  # bounded: a few hundred steps reach the end of 440 photos
        wait_js(page, "() => !document.querySelector('#grid .tile img:not([src])')")
        seen |= set(page.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.id)"))
        most = max(most, page.eval_on_selector_all("#grid .tile", "ts => ts.length"))
        at_end = page.evaluate("window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2")
        if at_end and len(seen) == PHOTOS:
            break
        # a reading pace (under half a window at a time): the grid fetches as it goes; flying
        # faster, it waits for the window to stay (bench/scroll.py measures that)
        page.evaluate("window.scrollBy(0, window.innerHeight * 0.4)")
        time.sleep(0.05)
    assert len(seen) == PHOTOS, f"scrolling reached {len(seen)} of {PHOTOS} photos"
    # windowed: never the whole collection in the DOM (three viewports of six columns at most)
    assert most <= 130, most

    # the jump list: a month's heading comes to the top of the window
    target = months[len(months) // 2]
    page.click(f"#timeline [data-month='{target}']")
    top = page.eval_on_selector(f".month-head[data-month='{target}']", "h => h.getBoundingClientRect().top")
    assert 0 <= top < 120, top
    assert page.get_attribute(f"#timeline [data-month='{target}']", "aria-current") == "true"


def test_thumbnails_keep_their_shape_and_are_revalidated_not_remade(page, server: str) -> None:
    url = page.get_attribute("#grid .tile[data-index='1'] img", "src")
    assert re.search(r"size=(256|512)", url)  # the size shown (176 px cells), not the original
    first = httpx.get(server + url, timeout=30)
    thumb = Image.open(io.BytesIO(first.content))
    doc = httpx.get(server + url.split("/thumbnail")[0], timeout=30).json()
    assert abs(thumb.width / thumb.height - doc["width"] / doc["height"]) < 0.05  # not cropped square
    again = httpx.get(server + url, headers={"If-None-Match": first.headers["etag"]}, timeout=30)
    assert again.status_code == 304 and again.content == b""
    fit = page.eval_on_selector("#grid .tile img", "i => getComputedStyle(i).objectFit")
    assert fit == "contain"


# --- the viewer ------------------------------------------------------------------------------------


def _viewer_image_loaded(pg) -> None:
    wait_js(pg, "() => { const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth > 0; }")


def test_the_viewer_walks_the_collection_and_closes_where_it_was(page, server: str) -> None:
    second = page.get_attribute("#grid .tile[data-index='1']", "data-id")
    third = page.get_attribute("#grid .tile[data-index='2']", "data-id")
    page.click("#grid .tile[data-index='1']")
    page.wait_for_selector("#viewer[open]")
    _viewer_image_loaded(page)
    assert page.get_by_role("dialog").count() == 1
    assert page.url.endswith(f"#photo={second}")
    assert page.text_content("#viewer-position") == f"2 of {PHOTOS}"
    info = page.text_content("#viewer-info")
    for field in ("Folder", "Taken", "Size", "Format"):
        assert field in info, info
    shot(page, "viewer-desktop")
    page.keyboard.press("ArrowRight")
    wait_js(page, "id => location.hash === '#photo=' + id", third)
    assert page.text_content("#viewer-position") == f"3 of {PHOTOS}"
    page.click("#viewer-prev")
    wait_js(page, "id => location.hash === '#photo=' + id", second)
    page.click("#viewer-zoom")
    assert page.get_attribute("#viewer-zoom", "aria-pressed") == "true"
    page.keyboard.press("Escape")
    wait_js(page, "() => !document.getElementById('viewer').open")
    wait_js(page, "() => location.hash === ''")  # Back, to before the viewer opened
    # focus is back on the photo the viewer showed last
    assert page.evaluate("document.activeElement.dataset.id") == second

    # Back closes the viewer; a bookmark opens it
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.go_back()
    wait_js(page, "() => !document.getElementById('viewer').open")
    page.goto(f"{server}/#photo={third}")
    page.wait_for_selector("#viewer[open]")
    _viewer_image_loaded(page)
    assert page.text_content("#viewer-position") == f"3 of {PHOTOS}"


def test_the_viewer_on_a_phone_swipes_and_fits(phone, server: str) -> None:
    phone.wait_for_selector("#grid .tile img")
    no_sideways_scroll(phone)
    shot(phone, "browse-phone")
    phone.tap("#grid .tile[data-index='0']")
    phone.wait_for_selector("#viewer[open]")
    _viewer_image_loaded(phone)
    no_sideways_scroll(phone)
    shot(phone, "viewer-phone")
    box = phone.locator("#viewer-stage").bounding_box()
    y = box["y"] + box["height"] / 2
    # a swipe to the left: the next photo
    phone.mouse.move(box["x"] + box["width"] * 0.8, y)
    phone.mouse.down()
    phone.mouse.move(box["x"] + box["width"] * 0.2, y, steps=5)
    phone.mouse.up()
    wait_js(phone, "() => document.getElementById('viewer-position').textContent.startsWith('2 of')")
    phone.keyboard.press("Escape")
    wait_js(phone, "() => !document.getElementById('viewer').open")


def test_more_like_this_and_duplicates_from_the_viewer(page, server: str, library) -> None:
    copy_id = doc_id_of(server, library["copy"])
    original_id = doc_id_of(server, library["original"])
    page.goto(f"{server}/#photo={copy_id}")
    page.wait_for_selector("#viewer[open]")
    _viewer_image_loaded(page)
    page.click("#viewer-dupes")
    page.wait_for_selector(f'#results[data-state="done"][data-query="dupes:{copy_id}"]', state="attached")
    assert not page.evaluate("document.getElementById('viewer').open")
    ids = page.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")
    assert ids == [original_id], ids
    assert page.evaluate("document.activeElement.closest('li').dataset.docId") == original_id
    assert "Duplicates of" in page.text_content("#query-label")
    # a result opens the viewer too, with its match level in the info panel
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert "near-duplicate" in page.text_content("#viewer-info") or "same" in page.text_content("#viewer-info")
    page.click("#viewer-more")
    page.wait_for_selector(f'#results[data-state="done"][data-query="doc:{original_id}"]', state="attached")
    more = page.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")
    assert more[0] == copy_id and original_id not in more


# --- filters ----------------------------------------------------------------------------------------


def test_filters_apply_to_browsing_and_every_search_and_show_as_chips(page, server: str, library) -> None:
    portrait = docs(server, orientation="portrait")["total"]
    assert 0 < portrait < PHOTOS
    page.click("#filters-toggle")
    page.select_option("#f-orientation", "portrait")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{portrait} of {PHOTOS} photos")
    assert "portrait" in page.text_content("#chips")
    assert "orientation=portrait" in page.url
    shot(page, "filters")
    # a tag search within the filter: only portrait photos come back
    page.fill("#tag", "bird")
    page.press("#tag", "Enter")
    page.wait_for_selector('#results[data-state="done"][data-query="tag:bird"]', state="attached")
    found = page.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")
    assert found
    for doc_id in found:
        d = httpx.get(f"{server}/api/docs/{doc_id}", timeout=10).json()
        assert d["height"] > d["width"], d
    assert page.text_content("#count") == f"{portrait} of {PHOTOS} photos"
    # back in the library, the filters still hold
    page.click("#back-to-library")
    page.wait_for_selector("#grid .tile img")
    assert page.evaluate("document.body.dataset.view") == "browse" and "orientation=portrait" in page.url
    assert page.text_content("#count") == f"{portrait} of {PHOTOS} photos"
    # a folder from the list
    page.goto(server + "/")
    page.click("#filters-toggle")
    folder = str(library["copy"].parent)
    wait_js(
        page,
        "f => [...document.querySelectorAll('#f-folder option')].some(o => o.value.startsWith(f))",
        str(library["root"]),
    )
    page.select_option("#f-folder", str(library["root"]))
    wait_js(page, "() => [...document.querySelectorAll('#f-folder option')].length > 3")
    page.select_option("#f-folder", folder)
    wait_js(page, "n => document.getElementById('count').textContent === n", f"1 of {PHOTOS} photos")
    # a chip takes its filter away, and the keyboard stays among the chips
    page.click("#chips [data-key='folder']")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{PHOTOS} photos")
    assert page.evaluate("document.activeElement.id") == "filters-toggle"


def test_photos_near_a_photos_own_position(page, server: str, library) -> None:
    copy_id = doc_id_of(server, library["copy"])
    page.goto(f"{server}/#photo={copy_id}")
    page.wait_for_selector("#viewer[open]")
    assert "48.858" in page.text_content("#viewer-info")
    page.click("#viewer-near")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"1 of {PHOTOS} photos")
    assert not page.evaluate("document.getElementById('viewer').open")
    assert "km of 48.858" in page.text_content("#chips")
    wait_js(page, "() => document.querySelectorAll('#grid .tile').length > 0")
    assert page.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.id)") == [copy_id]
    page.click("#chips [data-key='near']")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{PHOTOS} photos")


# --- duplicates -------------------------------------------------------------------------------------


def test_duplicates_are_reviewed_moved_aside_and_put_back(page, server: str, library) -> None:
    copy, original = library["copy"], library["original"]
    data = copy.read_bytes()
    page.click("#nav-dupes")
    page.wait_for_selector(".dupe-group")
    groups = page.eval_on_selector_all(
        ".dupe-group", "gs => gs.map(g => [...g.querySelectorAll('.dupe-file')].map(f => f.dataset.id))"
    )
    copy_id, original_id = doc_id_of(server, copy), doc_id_of(server, original)
    assert [original_id, copy_id] in groups, groups  # the larger original is suggested to keep, first
    group = page.locator(".dupe-group", has=page.locator(f".dupe-file[data-id='{copy_id}']"))
    assert group.locator(f"input[value='{original_id}']").is_checked()
    group.scroll_into_view_if_needed()
    wait_js(
        page,
        "id => [...document.querySelector(`.dupe-file[data-id='${id}']`).closest('.dupe-group')"
        ".querySelectorAll('img')].every(i => i.complete && i.naturalWidth)",
        copy_id,
    )
    shot(page, "dupes-desktop")
    group.locator(".dupe-folder").fill("review")
    group.locator(".dupe-move").click()
    page.wait_for_selector("#toast-undo:not([hidden])")
    assert "Moved 1 file" in page.text_content("#toast-text")
    wait_js(page, "n => document.getElementById('stats').textContent === n", f"{PHOTOS - 1} photos")
    assert not copy.exists()
    moved = [p for p in Path(httpx.get(f"{server}/api/stats", timeout=10).json()["workspace"]).rglob(copy.name)]
    assert len(moved) == 1 and moved[0].parent.name == "review" and moved[0].read_bytes() == data
    assert httpx.get(f"{server}/api/docs/{copy_id}", timeout=10).status_code == 404
    page.click("#toast-undo")
    wait_js(page, "() => document.getElementById('toast-text').textContent.startsWith('Put 1 file back')")
    wait_js(page, "n => document.getElementById('stats').textContent === n", f"{PHOTOS} photos")
    assert copy.read_bytes() == data and not moved[0].exists()
    assert httpx.get(f"{server}/api/docs/{copy_id}", timeout=10).status_code == 200
    # a name that climbs out of the trash folder is refused, and nothing moves
    page.wait_for_selector(f".dupe-file[data-id='{copy_id}']")
    group = page.locator(".dupe-group", has=page.locator(f".dupe-file[data-id='{copy_id}']"))
    group.locator(".dupe-folder").fill("../../outside")
    group.locator(".dupe-move").click()
    page.wait_for_selector("#error:not([hidden])")
    assert copy.exists()


# --- adding and removing -----------------------------------------------------------------------------


def test_photos_are_added_by_dropping_them_on_add_and_removed_by_selection(page, server: str, tmp_path) -> None:
    new = [tmp_path / "new-photo.png", tmp_path / "newer-photo.png"]
    Image.radial_gradient("L").convert("RGB").resize((300, 200)).save(new[0])
    Image.linear_gradient("L").convert("RGB").resize((200, 300)).save(new[1])
    page.evaluate(
        """(files) => {
            const dt = new DataTransfer();
            for (const [b64, name] of files) {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], name, {type: 'image/png'}));
            }
            const target = document.getElementById('drop-add');
            document.getElementById('drop-overlay').hidden = false;
            target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [[base64.b64encode(p.read_bytes()).decode(), p.name] for p in new],
    )
    wait_js(page, "() => document.getElementById('toast-text').textContent.startsWith('Added 2 photos')")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{PHOTOS + 2} photos")
    newest = docs(server, sort="indexed", order="desc", limit=2)["items"]
    assert all("uploads" in d["uri"] for d in newest)
    added, other = newest

    # one of them out of the index from a result's viewer: the keyboard goes on from the result
    # that took its place
    page.goto(f"{server}/#more={added['doc_id']}")
    page.wait_for_selector('#results[data-state="done"]', state="attached")
    first = page.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")
    at = first.index(other["doc_id"])  # the other gradient is among the photos most like it
    if page.is_visible("#more"):
        page.click("#more")
    page.click(f"#results > li:nth-child({at + 1}) .thumb")
    page.wait_for_selector("#viewer[open]")
    page.click("#viewer-remove")
    assert page.text_content("#viewer-remove") == "Remove? Press again"
    page.click("#viewer-remove")
    wait_js(page, "() => !document.getElementById('viewer').open")
    wait_js(
        page,
        "id => document.activeElement.closest('li') && document.activeElement.closest('li').dataset.docId === id",
        first[at + 1],
    )
    assert httpx.get(f"{server}/api/docs/{other['doc_id']}", timeout=10).status_code == 404
    page.click("#back-to-library")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{PHOTOS + 1} photos")
    wait_js(page, "() => document.activeElement.classList.contains('tile')")

    page.click("#select-toggle")
    page.wait_for_selector("#selection:not([hidden])")
    tile = page.locator(f"#grid .tile[data-id='{added['doc_id']}']")
    tile.click()
    assert tile.get_attribute("aria-checked") == "true"
    assert page.text_content("#selection-count") == "1 photo selected"
    shot(page, "select")
    page.click("#remove-selected")
    wait_js(page, "n => document.getElementById('count').textContent === n", f"{PHOTOS} photos")
    assert httpx.get(f"{server}/api/docs/{added['doc_id']}", timeout=10).status_code == 404


# --- keyboard and accessibility ------------------------------------------------------------------------


def test_the_keyboard_moves_through_the_grid_and_opens_the_viewer(page) -> None:
    for _ in range(30):  # Tab reaches the grid: one tile in the Tab order
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('tile')"):
            break
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    cols = page.evaluate(
        "() => { const ts = [...document.querySelectorAll('#grid .tile')];"
        " const y = ts.find(t => t.dataset.index === '0').getBoundingClientRect().top;"
        " return ts.filter(t => t.getBoundingClientRect().top === y).length; }"
    )
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowDown")
    down = int(page.evaluate("document.activeElement.dataset.index"))
    assert 0 < down <= cols  # the next row, or the next month's first row
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    assert page.evaluate("document.activeElement.closest('dialog') !== null")
    page.keyboard.press("Escape")
    wait_js(page, "() => !document.getElementById('viewer').open")
    assert page.evaluate("document.activeElement.dataset.index") == str(down)


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_axe_text_sizes_and_tap_targets_in_every_view(browser, server: str, library, width: str) -> None:
    viewport = DESKTOP if width == "desktop" else PHONE
    context, pg, errors, _ = _open(browser, server, viewport, scale=1 if width == "desktop" else 3)
    try:
        pg.click("#filters-toggle")
        views = {"browse": lambda: None}
        copy_id = doc_id_of(server, library["copy"])
        views["viewer"] = lambda: (pg.goto(f"{server}/#photo={copy_id}"), pg.wait_for_selector("#viewer[open]"))
        views["search"] = lambda: (
            pg.goto(f"{server}/#more={copy_id}"),
            pg.wait_for_selector('#results[data-state="done"]', state="attached"),
        )
        views["dupes"] = lambda: (pg.goto(f"{server}/#view=dupes"), pg.wait_for_selector(".dupe-group"))
        for name, show in views.items():
            show()
            time.sleep(0.3)
            no_serious_violations(pg, f"{name} at {width} width")
            no_sideways_scroll(pg)
            small = pg.evaluate(
                """() => [...document.querySelectorAll('body *')].filter(e => {
                    if (!e.offsetParent && getComputedStyle(e).position !== 'fixed') return false;
                    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
                    return own && parseFloat(getComputedStyle(e).fontSize) < 12
                        && !e.closest('.visually-hidden');
                }).map(e => e.tagName + '.' + e.className + ': ' + e.textContent.trim().slice(0, 30))"""
            )
            assert small == [], f"text under 12 px in {name}: {small}"
            if width == "phone":
                tiny = pg.evaluate(
                    """() => [...document.querySelectorAll('button, a, input, select, [role=checkbox]')]
                        .filter(e => e.offsetParent && !e.closest('.visually-hidden') && e.type !== 'radio'
                                && e.getBoundingClientRect().right > 0)
                        .filter(e => { const r = e.getBoundingClientRect();
                                         return r.width > 0 && (r.width < 44 || r.height < 44); })
                        .map(e => (e.id || e.className || e.tagName) + ' ' + Math.round(e.getBoundingClientRect().width)
                                  + 'x' + Math.round(e.getBoundingClientRect().height))"""
                )
                assert tiny == [], f"tap targets under 44x44 px in {name}: {tiny}"
            shot(pg, f"{name}-{width}-axe")
    finally:
        context.close()
    assert errors == [], errors
