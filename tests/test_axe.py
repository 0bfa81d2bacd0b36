"""The axe-core helper (tests/axe.py) on two tiny pages under a strict Content-Security-Policy: an
image without alt text is reported with its selector, and a clean page reports nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from axe import axe_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta http-equiv="Content-Security-Policy" content="default-src \'self\'; img-src data:">'
    "<title>axe self-test</title></head><body><main><h1>Photos</h1>"
)
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQV"
    "R42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def data_url(body: str) -> str:
    return "data:text/html;base64," + base64.b64encode((HEAD + body + "</main></body></html>").encode()).decode()


@pytest.fixture(scope="module")
def page(browser) -> Iterator[Any]:
    pg = browser.new_page()
    try:
        yield pg
    finally:
        pg.close()


def test_an_image_without_alt_is_a_critical_violation(page) -> None:
    page.goto(data_url(f'<img id="bare" src="{PIXEL}"><img src="{PIXEL}" alt="a dot">'))
    found = axe_violations(page)
    assert [(v.id, v.impact, v.targets) for v in found] == [("image-alt", "critical", ("#bare",))], found
    assert "image-alt" in repr(found[0]) and "#bare" in repr(found[0])
    # only the impacts asked for
    assert axe_violations(page, impacts=("minor",)) == []


def test_a_clean_page_reports_nothing(page) -> None:
    page.goto(data_url(f'<p>One photo.</p><img src="{PIXEL}" alt="a dot"><button>Search</button>'))
    assert axe_violations(page, impacts=("critical", "serious", "moderate", "minor")) == []
