"""The web page in a real browser (Debian's chromium through playwright) against a real `lookalike serve`.

Real photos are indexed by the real command; the page uploads a photo, runs "more like this", searches a
tag, pastes and drops images, shows a server error, and is checked at phone width and by keyboard, all
under the page's Content-Security-Policy. Pages on other loopback origins, and a DNS rebinding, try
to upload and delete. Screenshots go to test-artifacts/browser-*.png.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe import axe_violations
from browsing import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, serving, wait_js, watched_page, without_errors
from PIL import Image

from conftest import copy_photos, group_photo, lookalike_cmd

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Five visually distinct classes, six photos each: a full first screen of results, small to index.
CLASSES = ["animals/birds", "plants/flowers", "food/fruit", "town/roadsigns", "space/planets"]
K = 8  # thumbnails that must really load before a result set counts as shown


@pytest.fixture(scope="module")
def photo_root(tuxpaint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    copy_photos(tuxpaint, root, per_class=6, classes=CLASSES)
    return root


@pytest.fixture(scope="module")
def photos(photo_root: Path) -> list[Path]:
    return sorted(p for p in photo_root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def server(photo_root: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`lookalike index` then `lookalike serve`."""
    ws = tmp_path_factory.mktemp("ws")
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(photo_root), "-w", str(ws)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with serving(ws) as base:
        yield base


@pytest.fixture
def page(browser, server: str) -> Iterator[Any]:
    """A fresh page that records uncaught script errors and every request leaving this server."""
    with without_errors(watched_page(browser, server, {"width": 1280, "height": 900})) as pg:
        # Intercept file choosers from the start: enabling it only inside expect_file_chooser races the key press.
        pg.on("filechooser", lambda chooser: None)
        pg.goto(server)
        wait_js(pg, "() => document.getElementById('stats').textContent.includes('photos')")
        yield pg


# --- helpers ---------------------------------------------------------------------------------------


def screenshot(pg, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=full_page)


def wait_results(pg, query_prefix: str, k: int = K) -> list[str]:
    """Wait for a finished result set of the given query kind whose first ``k`` thumbnails have loaded
    (weak matches shown: "show more" is pressed when there are any)."""
    pg.wait_for_selector(f'#results[data-state="done"][data-query^="{query_prefix}"]', state="attached")
    if pg.is_visible("#more"):
        pg.click("#more")
    wait_js(
        pg,
        """k => {
            const imgs = Array.from(document.querySelectorAll('#results .thumb img'));
            return imgs.length >= k && imgs.slice(0, k).every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=k,
    )
    return pg.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.docId)")


def top_tag(server: str, doc_ids: list[str]) -> tuple[str, str]:
    """(a photo, its top tag) among ``doc_ids`` whose top tag is sure enough to tag it (half the probability)."""
    for doc_id in doc_ids:
        doc = httpx.get(f"{server}/api/docs/{doc_id}", timeout=10).json()
        if doc["tags"] and doc["tags"][0]["probability"] >= 0.5:
            return doc_id, doc["tags"][0]["label"]
    raise AssertionError(f"no photo among {doc_ids} is surely tagged")


# --- tests -----------------------------------------------------------------------------------------


def test_upload_then_more_like_this_then_tag(page, server: str, photos: list[Path]) -> None:
    bird = next(p for p in photos if "birds" in p.parts)
    page.set_input_files("#file", str(bird))
    # every result shows its match level; weak ones wait behind "show more"
    page.wait_for_selector('#results[data-state="done"][data-query^="file:"]', state="attached")
    assert page.text_content("#results > li:first-child .match") == "same"
    levels = page.eval_on_selector_all("#results > li", "lis => lis.map(li => li.dataset.match)")
    weak = levels.count("weak")
    assert set(levels) <= {"same", "near_duplicate", "similar", "weak"} and 0 < weak < len(levels), levels
    visible = page.eval_on_selector_all("#results > li", "lis => lis.filter(li => li.offsetParent !== null).length")
    assert visible == len(levels) - weak
    assert page.text_content("#more") == f"Show {weak} weaker match" + ("es" if weak != 1 else "")
    first = wait_results(page, "file:")  # presses "show more"
    assert page.eval_on_selector_all("#results > li", "lis => lis.every(li => li.offsetParent !== null)")
    assert not page.is_visible("#more")
    assert page.is_visible("#query-img") and "Photos like" in page.text_content("#query-label")
    assert page.eval_on_selector("#query-img", "i => i.complete && i.naturalWidth > 0")
    # the uploaded photo is itself indexed, so it comes first, scored about 1
    assert page.text_content("#results > li:first-child .name") == bird.name
    assert float(page.text_content("#results > li:first-child .score")) > 0.99
    assert re.fullmatch(rf"{len(first)} results in \d+ ms, {weak} of them weak", page.text_content("#status"))
    screenshot(page, "upload")

    # a result opens the viewer; "More like this" there searches by it: the photo itself is
    # excluded, its name shows as the query
    clicked = first[1]
    clicked_name = page.text_content("#results > li:nth-child(2) .name")
    page.click("#results > li:nth-child(2) .thumb")
    page.wait_for_selector("#viewer[open]")
    assert page.text_content("#viewer-title") == clicked_name
    original = page.get_attribute("#viewer-original", "href")
    page.click("#viewer-more")
    more = wait_results(page, f"doc:{clicked}")
    assert clicked not in more and more != first
    assert clicked_name in page.text_content("#query-label")
    assert page.url.endswith(f"#more={clicked}")
    screenshot(page, "more-like-this")

    # a tag that one of these photos surely carries: the list holds only photos with it, and says how many
    tagged_photo, tag = top_tag(server, more)
    page.fill("#tag", tag)
    page.press("#tag", "Enter")
    tagged = wait_results(page, f"tag:{tag}", k=1)
    assert tagged_photo in tagged
    assert tag in page.text_content("#query-label")
    assert re.fullmatch(rf"{len(tagged)} results? tagged “{re.escape(tag)}” in \d+ ms", page.text_content("#status"))
    screenshot(page, "tag")

    # Back returns to the more-like-this results, from the URL alone
    page.go_back()
    assert wait_results(page, f"doc:{clicked}") == more

    # the viewer's link serves the original
    assert httpx.get(server + original, timeout=10).status_code == 200


def test_top_k_and_empty_tag(page) -> None:
    page.fill("#tag", "no-such-imagenet-label")
    page.press("#tag", "Enter")
    page.wait_for_selector('#results[data-state="done"]', state="attached")
    assert page.eval_on_selector_all("#results > li", "lis => lis.length") == 0
    assert "No photos tagged" in page.text_content("#status")
    # the number of results is chosen beside a search, applies at once and is remembered
    page.select_option("#topk", "16")
    page.reload()
    page.wait_for_selector('#results[data-state="done"]', state="attached")
    assert page.input_value("#topk") == "16"


def test_paste_and_drop(page, photos: list[Path]) -> None:
    """A pasted image and a dropped file search like an upload (synthetic events carrying real files)."""
    flower = next(p for p in photos if "flowers" in p.parts)
    planet = next(p for p in photos if "planets" in p.parts)
    send = """([kind, b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], name, {type: 'image/png'}));
        if (kind === 'paste') document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
        else document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }"""
    for kind, photo in (("paste", flower), ("drop", planet)):
        page.evaluate(send, [kind, base64.b64encode(photo.read_bytes()).decode(), photo.name])
        wait_results(page, "file:")
        assert photo.name in page.text_content("#query-label"), kind
        assert page.text_content("#results > li:first-child .name") == photo.name, kind  # itself, indexed


def test_server_error_is_shown(page) -> None:
    page.set_input_files("#file", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}])
    page.wait_for_selector('#results[data-state="error"]', state="attached")
    error = page.text_content("#error")
    assert page.is_visible("#error") and error.strip()
    assert "HTTPError" not in error and "answered" not in error  # the server's own message, from its JSON
    assert page.eval_on_selector_all("#results > li", "lis => lis.length") == 0


def test_phone_width(page, photos: list[Path]) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.set_input_files("#file", str(photos[0]))
    wait_results(page, "file:")
    screenshot(page, "phone", full_page=False)
    screenshot(page, "phone-full")
    for width in (390, 360):
        page.set_viewport_size({"width": width, "height": 844})
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"horizontal overflow at {width}px: {scroll} > {inner}"
    # two columns of thumbnails side by side, each a usable size
    boxes = [page.locator("#results > li").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["width"] >= 140


def test_a_photo_from_outside_the_collection_is_said_to_be_unlike_anything(page, tmp_path: Path) -> None:
    """A grey square among birds, flowers, fruit, road signs and planets: the page says nothing here
    is really like it, rather than letting its weak results pass for answers."""
    grey = tmp_path / "grey.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(grey)
    page.set_input_files("#file", str(grey))
    page.wait_for_selector('#results[data-state="done"][data-query^="file:"]', state="attached")
    status = page.text_content("#status")
    assert status.startswith("Nothing here is really like it: even the best match is weak."), status
    screenshot(page, "weak", full_page=False)


def test_keyboard(page, photos: list[Path]) -> None:
    """Tab reaches the chooser and the tag box, both named; Enter opens the chooser and runs a result."""
    chooser = page.get_by_role("button", name="Search by a photo")
    tag_box = page.get_by_role("combobox", name="Tag")  # a search box with suggestions
    assert chooser.count() == 1 and tag_box.count() == 1
    reached = []
    for _ in range(10):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id"))
    assert "pick" in reached and "tag" in reached and "add" in reached
    assert reached.index("pick") < reached.index("tag")

    page.focus("#pick")
    with page.expect_file_chooser() as chosen:
        page.keyboard.press("Enter")
    chosen.value.set_files(str(photos[0]))
    first = wait_results(page, "file:")

    # results are links named after their photo; Enter opens the viewer, whose actions the keyboard
    # reaches; focus lands on the new results, and comes back to the result the viewer closed on
    thumb = page.locator("#results > li:nth-child(2) .thumb")
    name = page.text_content("#results > li:nth-child(2) .name")
    assert page.get_by_role("link", name=name).count() >= 1
    assert thumb.locator("img").get_attribute("alt") == name
    thumb.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.focus("#viewer-more")
    page.keyboard.press("Enter")
    more = wait_results(page, f"doc:{first[1]}")
    assert first[1] not in more
    wait_js(page, "() => document.activeElement.classList.contains('thumb')")
    at = more.index(page.evaluate("document.activeElement.closest('li').dataset.docId"))
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.keyboard.press("ArrowRight")
    wait_js(page, "id => location.hash.endsWith('photo=' + id)", more[at + 1])
    page.keyboard.press("Escape")
    wait_js(page, "() => !document.getElementById('viewer').open")
    # Back (the viewer's entry) runs after the close: the focus is where the viewer ended once it has
    wait_js(page, "() => !location.hash.includes('photo=')")
    wait_js(
        page,
        "id => document.activeElement.closest('li') && document.activeElement.closest('li').dataset.docId === id",
        more[at + 1],
        timeout_s=5,
    )


# --- a workspace with faces: search by a face, and people ---------------------------------------------

PHONE = {"width": 390, "height": 844}
COUNT_BOXES = "lis => lis.map(li => li.querySelectorAll('.thumb .box').length)"  # the matched face, per result
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def face_server(people, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """face-recognition's photos (five of Obama, one of Biden) indexed with faces, then served: the
    base URL and each photo's document id by file name."""
    photos = tmp_path_factory.mktemp("people")
    for name, blob in people.items():
        if name.endswith(".jpg"):
            (photos / name).write_bytes(blob)
    ws = tmp_path_factory.mktemp("faces-ws")
    done = subprocess.run(
        [*lookalike_cmd(), "index", "--faces", str(photos), "-w", str(ws)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with serving(ws) as base:
        items = httpx.get(f"{base}/api/docs", params={"limit": 100}, timeout=10).json()["items"]
        yield base, {d["name"]: d["doc_id"] for d in items}


@contextmanager
def _face_page(browser, base: str, viewport: dict, path: str = "/") -> Iterator[Any]:
    """A page of the faces workspace; no script error, no CSP violation, nothing fetched elsewhere."""
    phone = viewport is PHONE
    context, pg, errors, foreign = watched_page(browser, base, viewport, scale=3 if phone else 1, touch=phone)
    pg.goto(base + path)
    wait_js(pg, "() => document.body.classList.contains('face-workspace')")
    try:
        yield pg
    finally:
        context.close()
    assert errors == [] and foreign == [], (errors, foreign)


def _images_loaded(pg, selector: str) -> None:
    wait_js(pg, "s => [...document.querySelectorAll(s)].every(i => i.complete && i.naturalWidth > 0)", selector)


def _check_view(pg, name: str, phone: bool) -> None:
    """axe-core finds nothing serious, nothing scrolls sideways, no text is under 12 px and, at phone
    width, every control is at least 44 x 44 px (as test_library_page.py checks the other views)."""
    found = axe_violations(pg)
    assert found == [], f"axe-core, {name}: {found}"
    scroll, inner = pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"{name} scrolls sideways: {scroll} > {inner}"
    small = pg.evaluate(
        """() => [...document.querySelectorAll('body *')].filter(e => {
            if (!e.offsetParent && getComputedStyle(e).position !== 'fixed') return false;
            const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
            return own && parseFloat(getComputedStyle(e).fontSize) < 12 && !e.closest('.visually-hidden');
        }).map(e => e.tagName + '.' + e.className + ': ' + e.textContent.trim().slice(0, 30))"""
    )
    assert small == [], f"text under 12 px in {name}: {small}"
    if phone:
        tiny = pg.evaluate(
            """() => [...document.querySelectorAll('button, a, input, select')]
                .filter(e => e.offsetParent && !e.closest('.visually-hidden') && e.getBoundingClientRect().right > 0)
                .filter(e => { const r = e.getBoundingClientRect();
                               return r.width > 0 && (r.width < 44 || r.height < 44); })
                .map(e => (e.id || e.className || e.tagName) + ' ' + Math.round(e.getBoundingClientRect().width)
                          + 'x' + Math.round(e.getBoundingClientRect().height))"""
        )
        assert tiny == [], f"tap targets under 44x44 px in {name}: {tiny}"


def _faces(base: str, doc_id: str) -> list[dict]:
    return httpx.get(f"{base}/api/docs/{doc_id}/faces", timeout=10).json()["faces"]


def _boxes_on_the_photo(pg) -> list[dict]:
    """Each face box drawn in the viewer: its frame's rectangle, its tag, and whether it lies on the photo."""
    return pg.evaluate(
        """() => {
            const img = document.getElementById('viewer-img').getBoundingClientRect();
            return [...document.querySelectorAll('#viewer-boxes .face-box')].map(b => {
                const f = b.querySelector('.face-frame').getBoundingClientRect();
                const inside = f.left >= img.left - 1 && f.right <= img.right + 1
                    && f.top >= img.top - 1 && f.bottom <= img.bottom + 1;
                return {tag: b.querySelector('.face-tag').textContent, label: b.getAttribute('aria-label'),
                        width: f.width, inside};
            });
        }"""
    )


def test_a_face_workspace_searches_whole_photos_and_by_a_face_the_user_picks(browser, face_server, people, tmp_path):
    """A group photo (Obama large, Biden small) on a workspace indexed with faces: the search compares
    whole photos (no face boxes on the results); choosing its largest face searches by that face, lists
    both of its faces to choose from, and every result boxes the face that matched; the second face
    finds the other person."""
    base, _ = face_server
    query = group_photo(people, tmp_path / "group.jpg")
    with _face_page(browser, base, DESKTOP) as pg:
        pg.set_input_files("#file", str(query))
        wait_results(pg, "file:", k=3)
        boxes = pg.eval_on_selector_all("#results > li", COUNT_BOXES)
        assert boxes and not any(boxes), boxes  # whole photos: no face matched
        assert pg.eval_on_selector_all("#results .score", "s => s.every(e => !e.textContent.startsWith('d '))")
        choices = pg.eval_on_selector_all("#faces button", "bs => bs.map(b => [b.textContent, b.ariaPressed])")
        assert choices == [["Whole photo", "true"], ["Its largest face", "false"]], choices

        pg.click("#faces button[data-face='0']")
        pg.wait_for_selector("#faces button[data-face='1']")  # both faces are known now
        choices = pg.eval_on_selector_all("#faces button", "bs => bs.map(b => [b.textContent, b.ariaPressed])")
        assert choices == [["Whole photo", "false"], ["Face 1", "true"], ["Face 2", "false"]], choices
        assert pg.evaluate("document.activeElement.dataset.face") == "0"  # the keyboard stays on the choice
        first = wait_results(pg, "file:", k=3)
        assert pg.locator("#query-boxes .box").count() == 2  # numbered on the query's preview
        boxes = pg.eval_on_selector_all("#results > li", COUNT_BOXES)
        assert boxes and all(n == 1 for n in boxes), boxes
        names = pg.eval_on_selector_all("#results .name", "els => els.map(e => e.textContent)")
        assert names[0].startswith("obama")
        assert pg.text_content("#results > li:first-child .score").startswith("d 0.")  # a distance, under 1
        _images_loaded(pg, "#results .thumb img")
        screenshot(pg, "faces")

        pg.locator("#faces button[data-face='1']").click()
        wait_js(
            pg,
            "first => { const li = document.querySelector('#results > li');"
            " return li && li.dataset.docId !== first"
            " && document.querySelector('#results').dataset.state === 'done'; }",
            arg=first[0],
        )
        names = pg.eval_on_selector_all("#results .name", "els => els.map(e => e.textContent)")
        assert names[0].startswith("biden"), names
        assert pg.get_attribute("#faces button[data-face='1']", "aria-pressed") == "true"


def test_people_are_listed_named_shown_corrected_and_merged(browser, face_server) -> None:
    """People: the one person with three faces or more (Obama, in five photos) is listed; their page is
    the library filtered on them; they are named; the viewer boxes their face with the name; "not this
    person" takes a face away, which then goes to someone new, who is merged back. Checked with axe,
    text sizes and tap targets at desktop and phone widths."""
    base, ids = face_server
    listed = httpx.get(f"{base}/api/people", timeout=10).json()["people"]
    assert [(p["name"], p["photos"]) for p in listed] == [(None, 5)], listed
    obama = listed[0]["id"]
    obama_photos = set(httpx.get(f"{base}/api/people/{obama}", timeout=10).json()["photo_ids"])
    assert obama_photos == {doc_id for name, doc_id in ids.items() if name.startswith("obama")}

    with _face_page(browser, base, DESKTOP) as pg:
        # People, from the navigation: a card a person, their face, name and count
        pg.click("#nav-people")
        pg.wait_for_selector(".person-card img")
        assert "view=people" in pg.url and pg.get_attribute("#nav-people", "aria-current") == "page"
        cards = pg.eval_on_selector_all(
            ".person-card",
            "cs => cs.map(c => [c.querySelector('.person-name').textContent,"
            " c.querySelector('.person-count').textContent])",
        )
        assert cards == [["Unnamed", "5 photos"]], cards
        _images_loaded(pg, ".person-card img")
        assert pg.get_attribute(".person-card", "tabindex") == "0"  # the grid's one stop for Tab
        _check_view(pg, "people at desktop width", phone=False)
        screenshot(pg, "people")

        # Enter opens their photos: the library with a person filter, as a chip
        pg.focus(".person-card")
        pg.keyboard.press("Enter")
        pg.wait_for_selector("#person-panel:not([hidden])")
        wait_js(pg, "() => document.getElementById('count').textContent === '5 of 6 photos'")
        assert f"person={obama}" in pg.url
        wait_js(pg, "() => document.querySelectorAll('#grid .tile').length === 5")
        assert set(pg.eval_on_selector_all("#grid .tile", "ts => ts.map(t => t.dataset.id)")) == obama_photos
        assert pg.text_content("#chips [data-key='person']").startswith("person Unnamed")

        # rename: Enter saves, and the chip follows
        pg.fill("#person-rename-input", "Barack Obama")
        pg.press("#person-rename-input", "Enter")
        wait_js(pg, "() => document.getElementById('person-name').textContent === 'Barack Obama'")
        named = httpx.get(f"{base}/api/people", timeout=10).json()["people"]
        assert [(p["id"], p["name"]) for p in named] == [(obama, "Barack Obama")]
        assert pg.text_content("#chips [data-key='person']").startswith("person Barack Obama")
        _images_loaded(pg, "#person-cover, #grid .tile img")
        _check_view(pg, "a person's page at desktop width", phone=False)
        screenshot(pg, "person")

        # the viewer boxes the face on the photo, with the name
        photo = pg.get_attribute("#grid .tile[data-index='0']", "data-id")
        pg.click("#grid .tile[data-index='0']")
        pg.wait_for_selector("#viewer[open] #viewer-boxes .face-box")
        _images_loaded(pg, "#viewer-img, .viewer-face .face-crop")
        boxes = _boxes_on_the_photo(pg)
        assert len(boxes) == len(_faces(base, photo)) == 1, boxes
        assert boxes[0]["tag"] == "Barack Obama" and boxes[0]["inside"] and boxes[0]["width"] > 20, boxes
        assert pg.text_content(".viewer-face .face-who") == "Face 1: Barack Obama"
        _check_view(pg, "the viewer's faces at desktop width", phone=False)
        screenshot(pg, "viewer-faces", full_page=False)

        # a box takes the keyboard to what can be said about its face; "Not this person" says it
        pg.focus("#viewer-boxes .face-box")
        pg.keyboard.press("Enter")
        assert pg.evaluate("document.activeElement.textContent") == "Barack Obama’s photos"
        pg.click(".viewer-face [data-action='not']")
        pg.wait_for_selector(".viewer-face select")
        assert pg.evaluate("document.activeElement.tagName") == "SELECT"  # now: who is it?
        assert pg.text_content("#viewer-note-text") == "Face 1 is no longer Barack Obama’s."
        assert [f["person"] for f in _faces(base, photo)] == [None]
        assert pg.text_content("#viewer-boxes .face-tag") == "?"
        # someone new, then their page
        pg.select_option(".viewer-face select", "new")
        pg.click(".viewer-face [data-action='assign']")
        pg.wait_for_selector(".viewer-face [data-action='person']")
        newcomer = _faces(base, photo)[0]["person"]
        assert newcomer not in (None, obama)
        pg.click(".viewer-face [data-action='person']")
        wait_js(pg, "() => !document.getElementById('viewer').open")
        wait_js(pg, "id => location.hash.includes('person=' + id)", str(newcomer))
        wait_js(pg, "() => document.getElementById('count').textContent === '1 of 6 photos'")
        assert pg.get_attribute("#grid .tile[data-index='0']", "data-id") == photo

        # a name that someone else has is refused, with the server's reason
        pg.wait_for_selector("#person-panel:not([hidden])")
        pg.fill("#person-rename-input", "Barack Obama")
        pg.press("#person-rename-input", "Enter")
        pg.wait_for_selector("#person-rename-error:not([hidden])")
        assert "already named 'Barack Obama'" in pg.text_content("#person-rename-error")
        assert pg.get_attribute("#person-rename-input", "aria-invalid") == "true"
        # they are Obama after all: merged, and the page is his, with every photo again
        pg.select_option("#person-merge-into", str(obama))
        pg.click("#person-merge-go")
        assert pg.text_content("#person-merge-go") == "Merge into Barack Obama? Press again"
        pg.click("#person-merge-go")
        wait_js(pg, "id => location.hash.includes('person=' + id)", str(obama))
        wait_js(pg, "() => document.getElementById('person-name').textContent === 'Barack Obama'")
        wait_js(pg, "() => document.getElementById('count').textContent === '5 of 6 photos'")
        assert pg.evaluate("document.activeElement.id") == "person-name"
        assert set(httpx.get(f"{base}/api/people/{obama}", timeout=10).json()["photo_ids"]) == obama_photos

        # hidden from People, and back with Undo
        pg.click("#person-hide")
        wait_js(pg, "() => document.getElementById('person-hide').textContent === 'Show in People again'")
        assert httpx.get(f"{base}/api/people", timeout=10).json()["people"] == []
        pg.click("#toast-undo")
        wait_js(pg, "() => document.getElementById('person-hide').textContent === 'Hide from People'")
        assert [p["id"] for p in httpx.get(f"{base}/api/people", timeout=10).json()["people"]] == [obama]

        # the chip takes the filter away: the whole library again
        pg.click("#chips [data-key='person']")
        wait_js(pg, "() => document.getElementById('count').textContent === '6 photos'")
        assert pg.is_hidden("#person-panel") and "person=" not in pg.url

    with _face_page(browser, base, PHONE, path="/#view=people") as phone:
        phone.wait_for_selector(".person-card img")
        _images_loaded(phone, ".person-card img")
        _check_view(phone, "people at phone width", phone=True)
        screenshot(phone, "people-phone", full_page=False)
        phone.tap(".person-card")
        phone.wait_for_selector("#person-panel:not([hidden])")
        wait_js(phone, "() => document.querySelectorAll('#grid .tile img[src]').length === 5")
        _images_loaded(phone, "#person-cover, #grid .tile img")
        _check_view(phone, "a person's page at phone width", phone=True)
        screenshot(phone, "person-phone", full_page=False)
        phone.tap(f"#grid .tile[data-id='{ids['obama.jpg']}']")
        phone.wait_for_selector("#viewer[open] #viewer-boxes .face-box")
        _images_loaded(phone, "#viewer-img, .viewer-face .face-crop")
        boxes = _boxes_on_the_photo(phone)
        assert [b["tag"] for b in boxes] == ["Barack Obama"] and boxes[0]["inside"], boxes
        _check_view(phone, "the viewer's faces at phone width", phone=True)
        screenshot(phone, "viewer-faces-phone", full_page=False)


# --- another web site attacks the server -----------------------------------------------------------

ATTACK_PAGE = """<!doctype html><title>cute cats</title><script>
const jpeg = Uint8Array.from(atob("%(jpeg)s"), c => c.charCodeAt(0));
(async () => {
  const out = {};
  const form = new FormData();
  form.append("files", new Blob([jpeg], {type: "image/jpeg"}), "cat.jpg");
  try {  // a simple request: the browser sends it, and only the server can refuse it
    await fetch("%(target)s/api/index", {method: "POST", mode: "no-cors", body: form});
    out.upload = "sent";
  } catch (e) { out.upload = String(e); }
  try {
    const r = await fetch("%(target)s/api/docs/%(doc_id)s", {method: "DELETE"});
    out.delete = r.status;
  } catch (e) { out.delete = String(e); }
  window.attack = out;
})();
</script>"""


@contextmanager
def _website(host: str, page: str) -> Iterator[str]:
    """A one-page web site on ``host`` (a loopback address) and a free port; its origin."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer((host, 0), Page)
    thread = threading.Thread(target=httpd.serve_forever, name=f"website-{host}", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _a_doc_and_a_jpeg(server: str, photos: list[Path]) -> tuple[str, bytes, int]:
    """The id of an indexed photo, a JPEG that is not indexed yet, and the document count."""
    from PIL import Image

    with open(photos[0], "rb") as f:
        found = httpx.post(f"{server}/api/search", files={"file": ("q.png", f)}, timeout=30).json()
    doc_id = found["results"][0]["matches"][0]["doc_id"]
    buf = io.BytesIO()
    Image.open(photos[1]).convert("RGB").rotate(90, expand=True).save(buf, "JPEG")
    return doc_id, buf.getvalue(), httpx.get(f"{server}/api/stats", timeout=10).json()["docs"]


@pytest.mark.parametrize("attacker_host", ["127.0.0.1", "127.0.0.2"])
def test_another_origin_on_loopback_cannot_upload_or_delete(browser, server: str, photos, attacker_host) -> None:
    """A page on 127.0.0.1:OTHERPORT (same-site with the server) or 127.0.0.2 (cross-site) posts a
    real JPEG with a no-cors fetch, which the browser does send, and tries a DELETE. The server,
    on loopback with no token, refuses the upload by its Origin and Sec-Fetch-Site; the DELETE
    fails the browser's CORS preflight. Nothing changes."""
    doc_id, jpeg, docs = _a_doc_and_a_jpeg(server, photos)
    page = ATTACK_PAGE % {"jpeg": base64.b64encode(jpeg).decode(), "target": server, "doc_id": doc_id}
    with _website(attacker_host, page) as attacker:
        assert attacker != server
        context = browser.new_context()
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        answers: dict[str, list[int]] = {}
        pg.on("response", lambda r: answers.setdefault(f"{r.request.method} {r.url}", []).append(r.status))
        pg.goto(attacker)
        wait_js(pg, "() => window.attack !== undefined")
        outcome = pg.evaluate("window.attack")
        context.close()
    assert outcome["upload"] == "sent"  # the browser sent it: only the server stood in the way
    assert answers[f"POST {server}/api/index"] == [403], answers
    assert not any(k.startswith(f"DELETE {server}") for k in answers), answers  # stopped at the preflight
    assert outcome["delete"] != 200
    assert httpx.get(f"{server}/api/stats", timeout=10).json()["docs"] == docs
    assert httpx.get(f"{server}/api/docs/{doc_id}", timeout=10).status_code == 200


def test_dns_rebinding_is_refused_by_host_name(browser, server: str, photos) -> None:
    """evil.example resolves to 127.0.0.1 (a rebinding, as Chromium's resolver rules fake it), so its
    page is same-origin with the server as far as the browser knows: only the Host name tells."""
    doc_id, _, docs = _a_doc_and_a_jpeg(server, photos)
    port = server.rsplit(":", 1)[1]
    rebinding = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1"]
    chromium = browser.browser_type.launch(executable_path=str(CHROMIUM), args=rebinding)
    try:
        pg = chromium.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        landing = pg.goto(f"http://evil.example:{port}/")
        assert landing is not None and landing.status == 400
        assert "--allowed-host" in pg.text_content("body")
        got = pg.evaluate(
            """async (id) => {
                const stats = await fetch("/api/stats");
                const del = await fetch(`/api/docs/${id}`, {method: "DELETE"});
                return [stats.status, (await stats.json()).error.type, del.status];
            }""",
            doc_id,
        )
    finally:
        chromium.close()
    assert got == [400, "BadHost", 400]
    assert httpx.get(f"{server}/api/stats", timeout=10).json()["docs"] == docs
    assert httpx.get(f"{server}/api/docs/{doc_id}", timeout=10).status_code == 200
