"""Scrolling the page's browse grid through 100,000 photos, in Chromium.

    .venv/bin/python -m bench.scroll [--docs 100000] [--workdir DIR] [--reuse] [--json]

1. **Workspace.** The 439 tuxpaint photos are indexed for real; then N - 439 synthetic documents are
   committed through ``Workspace.commit`` (vectors from ``bench.synthetic``, as ``bench.filtered``
   does). Each is a real file: a hard link (a copy across file systems) of a tuxpaint photo, in one
   of 1,000 folders under ``WORKDIR/photos``, which is recorded as an indexed root so the server
   serves its thumbnails. Each carries a date taken over ten years (2016-2025: 120 months, their
   counts uneven, as real libraries' are), one of four cameras, and its file's real size, pixel
   size and format. (The 439 real photos are dated by their files: a 121st month.)
2. **Server.** ``lookalike serve --read-only`` on a free loopback port, until /readyz says 200. The
   thumbnail cache is emptied before each viewport, so each run pays for its own thumbnails.
3. **Browser.** Debian's Chromium (through Playwright) at 1280x800 and at 390x844 (a phone,
   deviceScaleFactor 3) opens ``/`` and waits for a loaded ``#grid .tile img``; then, all driven
   from ``requestAnimationFrame`` inside the page, one phase after another:

   - ``read``: 5 s scrolling the window 40 px a frame (2,400 px/s at 60 fps, a reading pace, while
     thumbnails load);
   - ``jump``: clicks on ``#timeline [data-month]`` entries a quarter, half and three quarters of
     the way down the list, its last (oldest) and its first, each until that month's header is in
     view with a loaded thumbnail on screen (at most 10 s each);
   - ``sweep``: from the top, the whole page in at most 60 s, in a fixed step per frame chosen to
     reach the bottom in that time at 60 fps (a hard fling, or a dragged scrollbar: tiles mount and
     unmount every frame);
   - ``bottom``: the window held at the bottom until the oldest photo's tile (``.tile[data-id]``,
     the first of ``/api/docs?sort=taken&order=asc``) has a loaded image (at most 30 s).

   Every animation frame's duration (rAF deltas), long tasks (PerformanceObserver ``longtask``),
   and, sampled each frame, the number of ``.tile`` elements and of all elements, and whether any
   of four points around the viewport's centre shows a loaded thumbnail. Requests are counted from Playwright's
   events: ``/api/docs`` pages, ``/api/timeline``, thumbnails (and how long the server took for
   each: response start less request start).

Reported per viewport and phase: frames, frame time p50/p95/p99/max, the share of dropped frames
(longer than 1.5 frames of 16.7 ms), long tasks (count, total ms), the share of frames showing no
loaded thumbnail at those points ("unfilled"; a jump's frames are, by design, those before one
shows); per viewport: the most tiles and DOM elements ever present, time to the first thumbnail,
each jump, whether the last photo was rendered, and the thumbnails still awaited after each phase
(an image request outlives its tile unless the page cancels it). ``--json`` prints it all. Only
loopback is bound or connected to; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.net import free_port
from bench.scale import LOOSE, log, open_library
from bench.synthetic import RealisticVectors
from lookalike.datasets import fetch
from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.store.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"]
VIEWPORTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}, "device_scale_factor": 1},
    "phone": {
        "viewport": {"width": 390, "height": 844},
        "device_scale_factor": 3,
        "is_mobile": True,
        "has_touch": True,
    },
}
FOLDERS = 1000
MONTHS = 120  # ten years, 2016-01 to 2025-12
CAMERAS = (("Apple", "iPhone 12"), ("Canon", "Canon EOS 80D"), ("SONY", "ILCE-7M3"), ("Google", "Pixel 7"))
BLOCK = 2000
FRAME_MS = 1000 / 60
DROPPED_MS = 1.5 * FRAME_MS  # a frame this long means at least one refresh showed the previous frame
READ_STEP_PX, READ_S = 40, 5.0
SWEEP_S = 60.0
JUMP_S, BOTTOM_S = 10.0, 30.0
MAX_FRAMES_PER_S = 250  # a bound on frame counts should the display run far faster than 60 Hz
FIRST_TILE_S = 60.0  # the first screen of a cold server: a timeline, a page of docs, a dozen thumbnails
READY_S = 600.0


# --- the workspace -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourcePhoto:
    path: Path
    size: int
    mtime_ns: int
    width: int
    height: int
    format: str


def sources() -> list[SourcePhoto]:
    """The tuxpaint photos, each with what a document of it records."""
    from PIL import Image

    out = []
    for p in sorted(Path(p) for p in fetch("tuxpaint").images):
        with Image.open(p) as im:
            width, height, fmt = im.width, im.height, (im.format or "").lower()
        st = p.stat()
        out.append(SourcePhoto(p, st.st_size, st.st_mtime_ns, width, height, fmt))
    return out


def taken_times(n_docs: int, seed: int = 3) -> list[str]:
    """``n_docs`` distinct local times over MONTHS months, more in some months than in others."""
    rng = np.random.default_rng(seed)
    weights = rng.gamma(2.0, size=MONTHS)  # a real library's months differ several-fold
    month = np.sort(rng.choice(MONTHS, size=n_docs, p=weights / weights.sum()))
    # Distinct seconds within each month, so newest-first order is one order, not a choice among ties.
    out = []
    for m in np.unique(month):
        count = int((month == m).sum())
        year, mon = 2016 + int(m) // 12, 1 + int(m) % 12
        start = datetime(year, mon, 1)
        seconds = ((datetime(year + mon // 12, mon % 12 + 1, 1) - start).total_seconds()) - 1
        for s in np.sort(rng.choice(int(seconds), size=count, replace=False)):
            out.append((start + timedelta(seconds=int(s))).isoformat())
    return [out[i] for i in rng.permutation(n_docs)]


def link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def commit(
    ws: Workspace,
    vectors: np.ndarray,
    start: int,
    photos: Path,
    srcs: list[SourcePhoto],
    taken: list[str],
    folders: int = FOLDERS,
):
    req = Request("index", [])
    for n, v in enumerate(vectors, start):
        src = srcs[n % len(srcs)]
        path = photos / f"f{n % folders:05d}" / f"{n:07d}{src.path.suffix}"
        link(src.path, path)
        make, model = CAMERAS[n % len(CAMERAS)]
        meta = {"make": make, "model": model, "taken_at": taken[n], "taken_from": "exif", "format": src.format}
        doc = Document(id=f"syn{n:07d}", uri=str(path), meta=meta)
        doc.size, doc.mtime_ns, doc.content_hash = src.size, src.mtime_ns, f"syn{n}"
        doc.width, doc.height = src.width, src.height
        doc.chunks = [Chunk(kind="whole", embedding=v)]
        req.docs.append(doc)
        req.staged.doc_ids.append(doc.id)
        req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
    ws.commit(req)


def build(workdir: Path, n_docs: int, folders: int = FOLDERS) -> Path:
    """The workspace of ``n_docs`` documents in ``workdir/ws`` (see the module), their files in
    ``folders`` folders; its path."""
    path, photos = workdir / "ws", workdir / "photos"
    for old in (path, photos):
        shutil.rmtree(old, ignore_errors=True)
    for f in range(folders):
        (photos / f"f{f:05d}").mkdir(parents=True)
    srcs, taken = sources(), taken_times(n_docs)
    with open_library(path, index_latency_ms=LOOSE, index_memory=64 << 30) as library:
        library.index([fetch("tuxpaint").root])
        ws = library.workspace
        ws.add_roots([str(photos)])
        _, bases, _ = ws.store.all_vectors(ws.dim)
        gen, done, start = RealisticVectors(bases, seed=1), len(bases), time.perf_counter()
        while done < n_docs:
            block = gen.sample(min(BLOCK, n_docs - done))
            commit(ws, block, done, photos, srcs, taken, folders)
            done += len(block)
            if done % 20_000 < BLOCK:
                log(f"  committed {done:,} documents ({done / (time.perf_counter() - start):,.0f}/s)")
    return path


# --- the server ----------------------------------------------------------------------------------


@contextmanager
def serving(ws: Path, log_path: Path) -> Iterator[tuple[str, float]]:
    """``lookalike serve --read-only`` on a free loopback port: its base URL and seconds to ready."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "lookalike", "serve", "-w", str(ws), "--read-only"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    start = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited with {proc.returncode}; see {log_path}")
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() - start > READY_S:
                    raise RuntimeError(f"serve was not ready within {READY_S:.0f} s; see {log_path}")
                time.sleep(0.2)
            yield base, time.perf_counter() - start
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- the page ------------------------------------------------------------------------------------

# Installed before the page's own scripts (an init script, which the page's CSP does not govern).
# One requestAnimationFrame loop records each frame's duration under the current phase, samples
# the DOM, and calls the phase's driver, if any. Bounded: at most MAX_SAMPLES frames per phase.
RECORDER = """(() => {
  const MAX_SAMPLES = 100000;
  const B = window.__scrollBench = {phase: 'load', frames: {}, unfilled: {}, longtasks: [], maxTiles: 0,
                                    maxNodes: 0, driver: null, last: 0};
  try {
    new PerformanceObserver(list => {
      for (const e of list.getEntries()) if (B.longtasks.length < MAX_SAMPLES) B.longtasks.push([B.phase, e.duration]);
    }).observe({type: 'longtask', buffered: true});
  } catch (e) { B.longtaskError = String(e); }
  const tiles = document.getElementsByClassName('tile');
  const all = document.getElementsByTagName('*');
  const loadedAt = (x, y) => {
    const el = document.elementFromPoint(x, y);
    const tile = el && el.closest('.tile');
    const img = tile && tile.querySelector('img');
    return !!(img && img.complete && img.naturalWidth > 0);
  };
  // Off-centre points, so a grid's gaps between tiles (a few px) cannot hide every one of them.
  const POINTS = [[0.31, 0.3], [0.47, 0.45], [0.53, 0.55], [0.69, 0.7]];
  function frame(now) {
    const frames = (B.frames[B.phase] ||= []);
    if (B.last && frames.length < MAX_SAMPLES) {
      frames.push(now - B.last);
      const filled = POINTS.some(([x, y]) => loadedAt(innerWidth * x, innerHeight * y));
      B.unfilled[B.phase] = (B.unfilled[B.phase] || 0) + (filled ? 0 : 1);
    }
    B.last = now;
    if (tiles.length > B.maxTiles) B.maxTiles = tiles.length;
    if (all.length > B.maxNodes) B.maxNodes = all.length;
    if (B.driver) B.driver(now);
    requestAnimationFrame(frame);
  }
  requestAnimationFrame(frame);
})();"""

# A phase that scrolls the window by a fixed step each frame, for at most `seconds` and `maxFrames`,
# or (toEnd) until the bottom. step 0 means: reach the bottom in `seconds` at 60 frames a second.
SCROLL = """async ({phase, step, seconds, maxFrames, toEnd}) => {
  const B = window.__scrollBench;
  B.phase = phase;
  const root = document.documentElement;
  const y0 = scrollY;
  const px = step || Math.max(1, Math.ceil((root.scrollHeight - innerHeight - y0) / (seconds * 60)));
  return await new Promise(resolve => {
    let start = null, frames = 0;
    B.driver = now => {
      if (start === null) start = now;
      const atEnd = scrollY >= root.scrollHeight - innerHeight - 1;
      if (now - start >= seconds * 1000 || frames >= maxFrames || (toEnd && atEnd)) {
        B.driver = null;
        resolve({step_px: px, frames, ms: now - start, from_y: y0, to_y: scrollY, height: root.scrollHeight,
                 at_end: atEnd});
        return;
      }
      frames++;
      window.scrollBy(0, px);
    };
  });
}"""

# A click on a timeline entry, then frames until that month's header is in view with a loaded
# thumbnail on screen (or `seconds` pass).
JUMP = """async ({month, seconds}) => {
  const B = window.__scrollBench;
  B.phase = 'jump';
  const button = document.querySelector(`#timeline [data-month="${month}"]`);
  if (!button) return {month, landed: false, ms: null, error: 'no such timeline entry'};
  const loadedInView = () => Array.from(document.querySelectorAll('#grid .tile img')).some(img => {
    if (!(img.complete && img.naturalWidth > 0)) return false;
    const r = img.getBoundingClientRect();
    return r.bottom > 0 && r.top < innerHeight && r.width > 0;
  });
  return await new Promise(resolve => {
    const t0 = performance.now();
    button.click();
    let scrolledMs = null;
    B.driver = now => {
      const head = document.querySelector(`.month-head[data-month="${month}"]`);
      const top = head ? head.getBoundingClientRect().top : null;
      const there = top !== null && top > -innerHeight / 2 && top < innerHeight / 2;
      if (there && scrolledMs === null) scrolledMs = Math.max(0, now - t0);
      const landed = there && loadedInView();
      if (landed || now - t0 > seconds * 1000) {
        B.driver = null;
        resolve({month, landed, ms: Math.max(0, now - t0), header_ms: scrolledMs, header_top: top, y: scrollY});
      }
    };
  });
}"""

# The window held at the bottom until the last photo's tile shows its image (or `seconds` pass).
BOTTOM = """async ({lastId, seconds}) => {
  const B = window.__scrollBench;
  B.phase = 'bottom';
  const root = document.documentElement;
  const selector = `.tile[data-id="${CSS.escape(lastId)}"]`;
  return await new Promise(resolve => {
    const t0 = performance.now();
    let rendered = false;
    B.driver = now => {
      const tile = document.querySelector(selector);
      const img = tile && tile.querySelector('img');
      rendered ||= !!tile;
      const loaded = !!(img && img.complete && img.naturalWidth > 0);
      if (loaded || now - t0 > seconds * 1000) {
        B.driver = null;
        resolve({rendered, loaded, ms: now - t0, y: scrollY, height: root.scrollHeight});
        return;
      }
      window.scrollTo(0, root.scrollHeight);
    };
  });
}"""

FIRST_TILE = """() => Array.from(document.querySelectorAll('#grid .tile img')).some(
  img => img.complete && img.naturalWidth > 0)"""


class Requests:
    """What the page asked the server for, from Playwright's request events."""

    def __init__(self, base: str):
        self.base = base
        self.pages = self.timelines = self.thumbnails = self.loaded = self.failed = self.other = 0
        self.thumbnail_ms: list[float] = []

    @property
    def pending(self) -> int:
        """Thumbnails asked for and not yet answered (a tile removed from the DOM may still wait)."""
        return self.thumbnails - self.loaded - self.failed

    def started(self, request: Any) -> None:
        path = request.url.removeprefix(self.base).split("?")[0]
        if path == "/api/docs":
            self.pages += 1
        elif path == "/api/timeline":
            self.timelines += 1
        elif path.endswith("/thumbnail"):
            self.thumbnails += 1
        else:
            self.other += 1

    def finished(self, request: Any) -> None:
        if request.url.split("?")[0].endswith("/thumbnail"):
            self.loaded += 1
            t = request.timing
            if t.get("requestStart", -1) >= 0 and t.get("responseStart", -1) >= 0:
                self.thumbnail_ms.append(t["responseStart"] - t["requestStart"])

    def failed_one(self, request: Any) -> None:
        if request.url.split("?")[0].endswith("/thumbnail"):
            self.failed += 1

    def report(self) -> dict[str, Any]:
        ms = self.thumbnail_ms
        return {
            "doc_pages": self.pages,
            "timeline": self.timelines,
            "thumbnails": self.thumbnails,
            "thumbnails_loaded": self.loaded,
            "thumbnails_failed_or_cancelled": self.failed,
            "other": self.other,
            "thumbnail_server_p50_ms": float(np.percentile(ms, 50)) if ms else None,
            "thumbnail_server_p95_ms": float(np.percentile(ms, 95)) if ms else None,
        }


def frame_stats(frames: list[float], unfilled: int, longtasks: list[float]) -> dict[str, Any]:
    f = np.asarray(frames, dtype=float)
    if not len(f):
        return {"frames": 0}
    return {
        "frames": len(f),
        "p50_ms": float(np.percentile(f, 50)),
        "p95_ms": float(np.percentile(f, 95)),
        "p99_ms": float(np.percentile(f, 99)),
        "max_ms": float(f.max()),
        "dropped_share": float((f > DROPPED_MS).mean()),
        "long_tasks": len(longtasks),
        "long_task_ms": float(sum(longtasks)),
        "unfilled_share": unfilled / len(f),
    }


def measure(browser: Any, base: str, last_id: str, name: str, jumps: int = 5) -> dict[str, Any]:
    """One viewport's run of the phases (see the module) on the page at ``base``."""
    context = browser.new_context(**VIEWPORTS[name])
    context.add_init_script(script=RECORDER)
    page = context.new_page()
    page.set_default_timeout(30_000)
    requests = Requests(base)
    errors: list[str] = []
    page.on("request", requests.started)
    page.on("requestfinished", requests.finished)
    page.on("requestfailed", requests.failed_one)
    page.on("pageerror", lambda e: errors.append(str(e)) if len(errors) < 20 else None)
    out: dict[str, Any] = {
        "viewport": name,
        **VIEWPORTS[name]["viewport"],
        "dpr": VIEWPORTS[name]["device_scale_factor"],
    }
    try:
        start = time.perf_counter()
        page.goto(base + "/")
        page.wait_for_selector("#grid .tile img", state="attached", timeout=FIRST_TILE_S * 1000)
        while not page.evaluate(FIRST_TILE):
            if time.perf_counter() - start > FIRST_TILE_S:
                raise RuntimeError(f"no thumbnail loaded within {FIRST_TILE_S:.0f} s")
            time.sleep(0.02)
        out["first_thumbnail_ms"] = (time.perf_counter() - start) * 1000
        phases = {}
        budget = int(MAX_FRAMES_PER_S * READ_S)
        read = {"phase": "read", "step": READ_STEP_PX, "seconds": READ_S, "maxFrames": budget, "toEnd": True}
        phases["read"] = page.evaluate(SCROLL, read) | {"thumbnails_pending": requests.pending}
        months = page.eval_on_selector_all("#timeline [data-month]", "els => els.map(e => e.dataset.month)")
        out["timeline_entries"] = len(months)
        # A quarter, half and three quarters down the list, its last (oldest) and back to its first.
        picks = [months[min(len(months) - 1, round(len(months) * k / 4))] for k in (1, 2, 3, 4)] + months[:1]
        out["jumps"] = []
        for month in picks[:jumps] if months else []:
            jump = page.evaluate(JUMP, {"month": month, "seconds": JUMP_S})
            out["jumps"].append(jump | {"thumbnails_pending": requests.pending})
        page.evaluate("() => window.scrollTo(0, 0)")
        budget = int(MAX_FRAMES_PER_S * SWEEP_S)
        sweep = {"phase": "sweep", "step": 0, "seconds": SWEEP_S, "maxFrames": budget, "toEnd": True}
        phases["sweep"] = page.evaluate(SCROLL, sweep) | {"thumbnails_pending": requests.pending}
        last = page.evaluate(BOTTOM, {"lastId": last_id, "seconds": BOTTOM_S})
        out["last_photo"] = last | {"id": last_id, "thumbnails_pending": requests.pending}
        recorded = page.evaluate("() => window.__scrollBench")
        out["scrolls"] = phases
    finally:
        context.close()
    by_phase: dict[str, list[float]] = {}
    for phase, duration in recorded["longtasks"]:
        by_phase.setdefault(phase, []).append(duration)
    out["phases"] = {
        phase: frame_stats(frames, recorded["unfilled"].get(phase, 0), by_phase.get(phase, []))
        for phase, frames in recorded["frames"].items()
    }
    moving = [p for p in ("read", "jump", "sweep", "bottom") if p in recorded["frames"]]
    out["all"] = frame_stats(
        [f for p in moving for f in recorded["frames"][p]],
        sum(recorded["unfilled"].get(p, 0) for p in moving),
        [d for p in moving for d in by_phase.get(p, [])],
    )
    out["max_tiles"], out["max_dom_nodes"] = recorded["maxTiles"], recorded["maxNodes"]
    out["requests"] = requests.report()
    out["page_errors"] = errors
    if recorded.get("longtaskError"):
        out["longtask_error"] = recorded["longtaskError"]
    return out


def run(base: str, workspace: Path | None, viewports: list[str]) -> list[dict[str, Any]]:
    """Each viewport in turn on the server at ``base``; the workspace's thumbnail cache, if given,
    is emptied before each."""
    import httpx
    from playwright.sync_api import sync_playwright

    oldest = httpx.get(f"{base}/api/docs", params={"sort": "taken", "order": "asc", "limit": 1}, timeout=30)
    oldest.raise_for_status()
    last_id = oldest.json()["items"][0]["doc_id"]
    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for name in viewports:
                if workspace is not None:
                    shutil.rmtree(workspace / "thumbnails", ignore_errors=True)
                log(f"  {name}: scrolling")
                results.append(measure(browser, base, last_id, name))
        finally:
            browser.close()
    return results


# --- the report ----------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['docs']:,} photos in {result['months']} months; serve ready in {result['serve_ready_s']:.1f} s"]
    for v in result["viewports"]:
        lines.append("")
        lines.append(
            f"{v['viewport']} {v['width']}x{v['height']} @{v['dpr']}x:"
            f" first thumbnail {v['first_thumbnail_ms']:.0f} ms,"
            f" at most {v['max_tiles']:,} tiles and {v['max_dom_nodes']:,} elements"
        )
        lines.append(
            f"  {'phase':<8}{'frames':>7}{'p50':>7}{'p95':>7}{'p99':>7}{'max':>8}{'dropped':>9}"
            f"{'long tasks':>12}{'(ms)':>8}{'unfilled':>10}"
        )
        for phase in ("read", "jump", "sweep", "bottom", "all"):
            s = v["all"] if phase == "all" else v["phases"].get(phase)
            if not s or not s["frames"]:
                continue
            lines.append(
                f"  {phase:<8}{s['frames']:>7}{s['p50_ms']:>7.1f}{s['p95_ms']:>7.1f}{s['p99_ms']:>7.1f}"
                f"{s['max_ms']:>8.1f}{s['dropped_share']:>9.1%}{s['long_tasks']:>12}{s['long_task_ms']:>8.0f}"
                f"{s['unfilled_share']:>10.1%}"
            )
        for j in v["jumps"]:
            header = f"header in view {j['header_ms']:.0f} ms, " if j.get("header_ms") is not None else ""
            state = f"a thumbnail {j['ms']:.0f} ms" if j["landed"] else f"NO thumbnail within {j['ms'] or 0:.0f} ms"
            lines.append(f"  jump to {j['month']}: {header}{state} ({j['thumbnails_pending']} thumbnails pending)")
        sweep = v["scrolls"]["sweep"]
        lines.append(
            f"  sweep: {sweep['step_px']} px a frame, y {sweep['from_y']:,.0f} -> {sweep['to_y']:,.0f}"
            f" of {sweep['height']:,} px in {sweep['ms'] / 1000:.1f} s{' (bottom)' if sweep['at_end'] else ''},"
            f" {sweep['thumbnails_pending']} thumbnails pending"
        )
        last = v["last_photo"]
        state = "loaded" if last["loaded"] else "rendered, not loaded" if last["rendered"] else "NOT rendered"
        lines.append(f"  last photo {last['id']}: {state} after {last['ms']:.0f} ms at the bottom")
        r = v["requests"]
        p50 = r["thumbnail_server_p50_ms"]
        server = f", server p50 {p50:.0f} ms, p95 {r['thumbnail_server_p95_ms']:.0f} ms" if p50 is not None else ""
        lines.append(
            f"  requests: {r['doc_pages']} doc pages, {r['timeline']} timeline, {r['thumbnails']} thumbnails"
            f" ({r['thumbnails_loaded']} loaded{server}, {r['thumbnails_failed_or_cancelled']} failed or cancelled)"
        )
        if v["page_errors"]:
            lines.append(f"  page errors: {v['page_errors'][:3]}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument(
        "--workdir", type=Path, help="where the workspace and photos go (kept; default: a temporary folder)"
    )
    ap.add_argument("--reuse", action="store_true", help="measure the workspace already built in --workdir")
    ap.add_argument("--viewport", choices=sorted(VIEWPORTS), nargs="*", default=list(VIEWPORTS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.reuse and not args.workdir:
        ap.error("--reuse needs --workdir")
    if not CHROMIUM.exists():
        ap.error(f"{CHROMIUM} is missing (apt-get install chromium)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-scroll-"))
    workdir = workdir.resolve()  # the server compares real paths with the recorded root
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if not args.reuse:
        log(f"building {args.docs:,} documents in {workdir}")
        start = time.perf_counter()
        build(workdir, args.docs)
        result["build_s"] = time.perf_counter() - start
        log(f"  built in {result['build_s']:.0f} s")
    ws = workdir / "ws"
    with closing(sqlite3.connect(f"file:{ws / 'docs.sqlite'}?mode=ro", uri=True)) as db:
        query = "SELECT count(*), count(DISTINCT substr(taken_at, 1, 7)) FROM docs"
        result["docs"], result["months"] = db.execute(query).fetchone()
    with serving(ws, workdir / "serve.log") as (base, ready_s):
        result["serve_ready_s"] = ready_s
        log(f"  serving {base} (ready in {ready_s:.1f} s)")
        result["viewports"] = run(base, ws, args.viewport)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(table(result))


if __name__ == "__main__":
    main()
