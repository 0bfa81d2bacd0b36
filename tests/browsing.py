"""Helpers of the browser tests: Debian's Chromium driven by Playwright against a real `lookalike serve`.

The ``browser`` fixture (tests/conftest.py) launches Chromium once a module; a missing browser or
playwright skips on a developer machine and fails in CI (``need``)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import REPO, free_port, lookalike_cmd

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
ARTIFACTS = REPO / "test-artifacts"  # screenshots, kept for a person to look at
READY_WAIT_S = 120  # model conversion on a cold cache takes seconds; far less than this
TIMEOUT_MS = 30_000


def need(what: str, why: str = "the browser tests need it (apt-get install chromium; pip install playwright)") -> None:
    """Skip when a tool is missing on a developer machine, but fail in CI, which must run these."""
    message = f"{what}; {why}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def serving(ws: Path) -> Iterator[str]:
    """`lookalike serve` on a free loopback port; the base URL once /readyz says 200."""
    port = free_port()
    log = (ws.parent / f"serve-{port}.log").open("w+")
    proc = subprocess.Popen(
        [*lookalike_cmd(), "serve", "-w", str(ws), "--port", str(port), "--host", "127.0.0.1"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_WAIT_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"lookalike serve exited with {proc.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"lookalike serve was not ready within {READY_WAIT_S}s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_js(pg, expression: str, arg=None, timeout_s: float = TIMEOUT_MS / 1000) -> None:
    """Poll a JavaScript predicate from here until it holds. Not Playwright's wait_for_function: its
    polling compiles the predicate inside the page, which the page's CSP (no eval) rightly refuses."""
    deadline = time.monotonic() + timeout_s
    while not pg.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s:.0f}s: {expression}")
        time.sleep(0.05)


def watched_page(browser, base: str, viewport: dict, scale: float = 1, touch: bool = False):
    """A fresh page that records uncaught script errors, what the page's Content-Security-Policy
    blocked (it shows on the console), and every request leaving ``base``: (context, page, errors,
    foreign requests)."""
    context = browser.new_context(viewport=viewport, device_scale_factor=scale, has_touch=touch)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    foreign: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    pg.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:")) else foreign.append(r.url))
    return context, pg, errors, foreign


@contextmanager
def without_errors(opened: tuple) -> Iterator[Any]:
    """The page of a :func:`watched_page` tuple; on leaving, its context is closed and the page is
    held to no script error, no CSP violation and nothing fetched from elsewhere."""
    context, pg, errors, foreign = opened
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], errors
    assert foreign == [], f"the page must work offline, yet asked for {foreign}"
