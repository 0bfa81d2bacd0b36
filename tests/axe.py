"""axe-core in the browser tests: the accessibility rules run inside a Playwright page.

axe-core comes from npm into a cache folder outside the repository (never committed), once per
pinned version::

    from axe import axe_violations
    assert axe_violations(page) == []  # each violation reprs as one readable line

The page's Content-Security-Policy (``script-src 'self'``) refuses an injected ``<script>``, so
axe's source is evaluated through the DevTools protocol, which the policy does not govern; the page
and its context need no ``bypass_csp``. Missing npm skips on a developer machine and fails in CI,
as a missing Chromium does in test_browser.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from browsing import need

# Pinned so a new axe release (new rules, changed impacts) never fails a build by itself; move it on purpose.
AXE_VERSION = "4.11.4"
NPM_TIMEOUT_S = 300  # one small tarball; a cold npm cache on a slow mirror takes a minute at worst


def _need(what: str) -> None:
    need(what, "the accessibility checks need axe-core from npm (apt-get install npm)")


def npm_cache() -> Path:
    """Where npm packages for the tests go: ``$LOOKALIKE_NPM_DIR``, else the user cache dir's ``npm``."""
    if os.environ.get("LOOKALIKE_NPM_DIR"):
        return Path(os.environ["LOOKALIKE_NPM_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("lookalike")) / "npm"


def axe_script(version: str = AXE_VERSION) -> Path:
    """The path of ``axe.min.js`` at ``version``, installed by npm into the cache on first use."""
    home = npm_cache() / f"axe-core-{version}"
    script = home / "node_modules" / "axe-core" / "axe.min.js"
    if script.is_file():
        return script
    npm = shutil.which("npm")
    if npm is None:
        _need("npm is missing")
    home.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside the final folder, then renamed: two test processes never see half an install.
    staging = Path(tempfile.mkdtemp(prefix=f".axe-core-{version}-", dir=home.parent))
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--no-save", f"axe-core@{version}"],
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
        )
        if done.returncode != 0 or not (staging / script.relative_to(home)).is_file():
            _need(f"npm install axe-core@{version} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        try:
            staging.rename(home)
        except OSError:
            if not script.is_file():  # not another process winning the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return script


@dataclass(frozen=True)
class Violation:
    """One axe rule that fails, with the failing elements (CSS selectors) at the impacts asked for."""

    id: str
    impact: str
    help: str
    url: str
    targets: tuple[str, ...]

    def __repr__(self) -> str:
        shown = ", ".join(self.targets[:8]) + (f" and {len(self.targets) - 8} more" if len(self.targets) > 8 else "")
        return f"{self.impact} {self.id}: {self.help} ({self.url}) at {shown}"


def _selector(target: Any) -> str:
    # A node inside a shadow root (or a frame) is a list of selectors, outermost first.
    return " >>> ".join(_selector(t) for t in target) if isinstance(target, list) else str(target)


def axe_violations(
    page: Any, impacts: Iterable[str] = ("critical", "serious"), context: str | None = None
) -> list[Violation]:
    """axe-core's violations on ``page`` as it stands (``context``: a CSS selector to check, else the
    whole document), keeping the failing elements whose impact is one of ``impacts``."""
    wanted = set(impacts)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        # Wrapped in a function, so Playwright evaluates the source rather than calling its result.
        page.evaluate("() => {\n" + axe_script().read_text(encoding="utf-8") + "\n}")
    found = page.evaluate(
        """async (context) => {
            const results = await window.axe.run(context || document, {resultTypes: ['violations']});
            return results.violations.map(v => ({
                id: v.id, help: v.help, url: v.helpUrl,
                nodes: v.nodes.map(n => ({impact: n.impact || v.impact, target: n.target})),
            }));
        }""",
        context,
    )
    out = []
    for v in found:
        nodes = [n for n in v["nodes"] if n["impact"] in wanted]
        if nodes:
            worst = next(
                i for i in ("critical", "serious", "moderate", "minor") if any(n["impact"] == i for n in nodes)
            )
            out.append(Violation(v["id"], worst, v["help"], v["url"], tuple(_selector(n["target"]) for n in nodes)))
    return out
