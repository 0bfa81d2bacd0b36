"""Faults: kill -9 mid-index, searches while another process indexes, a full disk, a load test.

    .venv/bin/python -m bench.faults [--seed 0] [--quick] [--json OUT] [--parts kill concurrent disk load]

Every part runs the real `lookalike` command in subprocesses on real photos, talks only to 127.0.0.1,
and bounds every loop in count and time. It prints a summary (markdown tables) and exits 1 if any
check fails.

1. kill: one clean `lookalike index` of ~160 tuxpaint photos (plus two bad files) measures when its
   phases happen: start-up (imports, model, workspace; nothing committed), encoding (a commit every
   16 documents), the final snapshot of the FAISS shards. Then 20 trials, 5 per phase, each on a fresh
   workspace, SIGKILL the run at a seeded moment: a delay into start-up, or into encoding (counted
   from the run's first commit); for "commit" a delay into encoding and then the instant the SQLite
   WAL grows (a commit being written); for "final snapshot" the k-th change (k = 1..4) of the
   shard-*/ files after the last commit. A kill that misses its phase (the shared machine sped up or
   slowed down) times the phases again and draws again, 3 tries in all. After each kill:
   `lookalike index` again (exit 0, encodes exactly the missing files), `lookalike info --json`
   (consistent, docs == good files, chunks == docs), and 3 seeded probe photos searched with
   `lookalike search --json -k 1` find themselves first.
2. concurrent: `lookalike serve` (plain, not --read-only) over ~300 indexed photos, 8 client threads
   posting multipart searches in a loop while a separate `lookalike index` adds 1,000 new openclipart
   drawings to the same workspace (after 5 s of searches alone, the baseline). Errors must be 0, and
   3 new drawings must find themselves first within 2 s of the index finishing. A control run then
   indexes the same drawings into a separate workspace under the same load: the latency the two
   runs share is the cores, the difference is the cost of sharing the workspace.
3. disk: the workspace on a tmpfs sized to about half of what the clean run needs (needs root for
   mount). `lookalike index` must fail with exit 4 (workspace error) and one line on stderr naming the
   full disk, no traceback; the workspace must still open consistent; a re-run on the still-full disk
   must fail the same clean way; after a remount with room, a re-run completes the job.
4. load: a fixed number of searches at 1, 4 and 16 concurrent clients against `lookalike serve`.

The clients run in this process (threads, httpx) on the same cores as the server and the indexer,
so the figures include the load generator; on a shared machine compare counts and ratios.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.net import free_port
from lookalike.datasets import FetchedDataset, fetch

LOOKALIKE = str(Path(sys.executable).parent / "lookalike")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
PHASES = ("start-up", "encoding", "commit", "final snapshot")
BAD_FILES = 2  # a truncated PNG and a text file named .jpg, in every photo folder
CLI_TIMEOUT_S = 300  # any one `lookalike` command; the largest here indexes 1,000 drawings under load
FINDABLE_WITHIN_S = 2.0
BASELINE_S = 5.0  # searches before the indexer starts: the latency to compare against


@dataclass
class Check:
    part: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)

    def check(self, part: str, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(part, name, bool(ok), detail))
        return bool(ok)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


# --- photos and the command line ------------------------------------------------------------------


def unique_images(dataset: FetchedDataset) -> list[Path]:
    """The dataset's images with byte-identical copies dropped, so a probe has exactly one self."""
    seen: set[str] = set()
    out = []
    for image in sorted(dataset.images):
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append(image)
    return out


def copy_sample(dataset: FetchedDataset, images: list[Path], dest: Path, n: int, rng: random.Random) -> list[Path]:
    """Copy a seeded sample of ``n`` images into ``dest/<label>/``; returns the copies (absolute)."""
    out = []
    for i, image in enumerate(sorted(rng.sample(images, min(n, len(images))))):
        folder = dest / dataset.labels[image].replace("/", "_")
        target = folder / image.name
        if target.exists():
            target = folder / f"{i}-{image.name}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        out.append(target.resolve())
    return out


BAD_FOLDER = "broken"


def add_bad_files(dest: Path, sample_png: Path) -> None:
    """A truncated PNG and a text file named .jpg: `index` skips both, so docs == good files."""
    bad = dest / BAD_FOLDER
    bad.mkdir(parents=True, exist_ok=True)
    data = sample_png.read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) * 2 // 5])
    (bad / "notes.jpg").write_bytes(b"not an image, just words\n")


def photo_folder(dest: Path, n: int, seed: int) -> list[Path]:
    tux = fetch("tuxpaint")
    images = unique_images(tux)
    rng = random.Random(seed)
    good = copy_sample(tux, images, dest, n, rng)
    add_bad_files(dest, images[0])  # its truncated bytes are nobody's duplicate
    return good


def cli(args: list[str], timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([LOOKALIKE, *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(
            e.cmd, 124, _text(e.stdout), _text(e.stderr) + f"\n(timed out after {timeout}s)"
        )


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def popen_index(src: Path, ws: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [LOOKALIKE, "index", str(src), "-w", str(ws), *extra],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def committed(ws: Path) -> int:
    """Documents committed so far, read the way another process would (read-only SQLite)."""
    db = ws / "docs.sqlite"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # created but not migrated yet
        return 0


def info(ws: Path) -> tuple[int, dict[str, Any] | None, str]:
    r = cli(["info", "--json", "-w", str(ws)], timeout=120)
    try:
        return r.returncode, json.loads(r.stdout) if r.returncode == 0 else None, r.stderr.strip()
    except ValueError:
        return r.returncode, None, r.stderr.strip()


def probes_find_themselves(ws: Path, probes: list[Path]) -> list[bool]:
    r = cli(["search", "--json", "-k", "1", *map(str, probes), "-w", str(ws)], timeout=120)
    if r.returncode != 0:
        return [False] * len(probes)
    data = json.loads(r.stdout)
    entries = data if isinstance(data, list) else [data]
    return [bool(e["results"]) and e["results"][0]["path"] == str(p) for e, p in zip(entries, probes, strict=True)]


def shard_files(ws: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of every file in the shard folders, temp files included."""
    out = []
    for folder in sorted(ws.glob("shard-*")):
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    try:
                        st = e.stat()
                    except OSError:
                        continue  # renamed away between the listing and the stat
                    out.append((f"{folder.name}/{e.name}", st.st_size, st.st_mtime_ns))
        except OSError:
            continue
    return tuple(sorted(out))


def file_sig(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def percentiles(latencies_s: list[float]) -> dict[str, float | None]:
    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None}
    ms = np.array(latencies_s) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


# --- part 1: kill -9 at seeded moments of an index run --------------------------------------------


@dataclass
class Timeline:
    """When the phases of one clean `lookalike index` happened, in seconds from its start."""

    first_commit: float
    last_commit: float
    snapshot: float | None  # first change of the shard files after the last commit
    exit: float
    commits: int
    workspace_bytes: int


def clean_run(src: Path, ws: Path, good: int, limit_s: float = 300) -> Timeline:
    shutil.rmtree(ws, ignore_errors=True)
    t0 = time.monotonic()
    proc = popen_index(src, ws)
    first = last = snapshot = None
    seen, commits = 0, 0
    before_done = shard_files(ws)
    try:
        while proc.poll() is None and time.monotonic() - t0 < limit_s:
            now = time.monotonic() - t0
            if seen < good:
                docs = committed(ws)
                if docs != seen:
                    commits += 1
                    first = first if first is not None else now
                    seen = docs
                    if docs >= good:
                        last = now
                if seen < good:
                    before_done = shard_files(ws)
            elif snapshot is None and shard_files(ws) != before_done:
                snapshot = now
            time.sleep(0.003)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    end = time.monotonic() - t0
    if proc.returncode != 0 or first is None or last is None:
        raise SystemExit(f"the clean index run failed (exit {proc.returncode}, {seen} of {good} documents)")
    return Timeline(first, last, snapshot, end, commits, disk_bytes(ws))


def kill_once(phase: str, rng: random.Random, tl: Timeline, src: Path, ws: Path, good: int) -> dict[str, Any]:
    """Start `lookalike index`, SIGKILL it at a seeded moment of ``phase``; report where it landed.

    The moment is an offset into the phase, drawn from the clean run's timings. Encoding and commit
    offsets count from the first commit this run makes, not from its start: on a shared machine the
    start-up alone varies by seconds, which would smear a fixed delay across phases.
    """
    shutil.rmtree(ws, ignore_errors=True)
    encoding = tl.last_commit - tl.first_commit
    offset = {
        "start-up": rng.uniform(0.1, 0.9 * tl.first_commit),
        "encoding": rng.uniform(0.1, 0.9) * encoding,
        "commit": rng.uniform(0.0, 0.8) * encoding,
        "final snapshot": 0.0,
    }[phase]
    nth_change = rng.randint(1, 4)  # final snapshot: which change of the shard files to kill at
    wal = ws / "docs.sqlite-wal"
    t0 = time.monotonic()
    until = t0 + CLI_TIMEOUT_S
    proc = popen_index(src, ws)
    trigger = ""
    try:
        if phase in ("encoding", "commit"):
            while proc.poll() is None and time.monotonic() < until and committed(ws) == 0:
                time.sleep(0.01)
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < offset:
            time.sleep(0.002)
        if phase == "commit":
            before, wal_until = file_sig(wal), time.monotonic() + 5
            while proc.poll() is None and time.monotonic() < wal_until:
                if file_sig(wal) != before:
                    trigger = "WAL grew"
                    break
                time.sleep(0.0002)
        elif phase == "final snapshot":
            done, state, changes = False, shard_files(ws), 0
            while proc.poll() is None and time.monotonic() < until:
                if not done:
                    done = committed(ws) >= good
                    state = shard_files(ws)
                    time.sleep(0.002)
                    continue
                now = shard_files(ws)
                if now != state:
                    changes, state = changes + 1, now
                    if changes >= nth_change:
                        trigger = f"shard file change {changes}"
                        break
                time.sleep(0.0002)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        at = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    docs = committed(ws)
    landed = (
        alive
        and {
            "start-up": docs == 0,
            "encoding": 0 < docs < good,
            "commit": docs < good and trigger != "",
            "final snapshot": docs == good and trigger != "",
        }[phase]
    )
    return {
        "offset_s": round(offset, 3),
        "killed_at_s": round(at, 3),
        "docs_at_kill": docs,
        "landed": landed,
        "alive": alive,
        "trigger": trigger,
    }


def part_kill(args: argparse.Namespace, tmp: Path, report: Report) -> dict[str, Any]:
    n_photos, trials = (80, 8) if args.quick else (160, 20)
    src = tmp / "kill-photos"
    good = photo_folder(src, n_photos, args.seed)
    ws = tmp / "kill-ws"
    tl = clean_run(src, ws, len(good))
    timelines = [tl]
    print(
        f"kill: clean run of {len(good)} photos: first commit {tl.first_commit:.2f}s, last {tl.last_commit:.2f}s, "
        f"snapshot {tl.snapshot}, exit {tl.exit:.2f}s, {tl.commits} commits seen",
        file=sys.stderr,
    )
    rng = random.Random(args.seed)
    rows = []
    for trial in range(trials):
        phase = PHASES[trial % len(PHASES)]
        probes = sorted(rng.sample(good, 3))
        attempt, kill = 0, {"landed": False}
        while attempt < 3 and not kill["landed"]:
            attempt += 1
            if attempt > 1:  # the shared machine's speed moved: time the phases again, then draw again
                tl = clean_run(src, ws, len(good))
                timelines.append(tl)
            kill = kill_once(phase, rng, tl, src, ws, len(good))
        _, at_kill, _ = info(ws) if (ws / "manifest.json").exists() else (0, {"consistent": True}, "")
        t0 = time.monotonic()
        rerun = cli(["index", str(src), "-w", str(ws), "--json"])
        rerun_s = time.monotonic() - t0
        summary = json.loads(rerun.stdout) if rerun.returncode == 0 else {}
        rc, after, err = info(ws)
        found = probes_find_themselves(ws, probes)
        failures = []
        if not kill["landed"]:
            failures.append(f"kill did not land in {phase} after {attempt} attempts")
        if not (at_kill or {}).get("consistent"):
            failures.append(f"inconsistent right after the kill: {at_kill}")
        if rerun.returncode != 0:
            failures.append(f"re-run exit {rerun.returncode}: {rerun.stderr.strip()[-300:]}")
        elif summary.get("indexed") != len(good) - kill["docs_at_kill"]:
            failures.append(f"re-run indexed {summary.get('indexed')}, expected {len(good) - kill['docs_at_kill']}")
        elif summary.get("skipped_total") != BAD_FILES:
            failures.append(f"re-run skipped {summary.get('skipped_total')} files, expected {BAD_FILES}")
        if after is None or not after["consistent"]:
            failures.append(f"info after the re-run: exit {rc} {after or err}")
        elif not (after["docs"] == len(good) and after["chunks"] == after["docs"]):
            failures.append(
                f"info after the re-run: {after['docs']} docs, {after['chunks']} chunks, expected {len(good)}"
            )
        if not all(found):
            missed = [p.name for p, f in zip(probes, found, strict=True) if not f]
            failures.append(f"probes that did not find themselves first: {missed}")
        row = {
            "trial": trial + 1,
            "phase": phase,
            "attempts": attempt,
            **kill,
            "rerun_s": round(rerun_s, 2),
            "rerun_indexed": summary.get("indexed"),
            "docs_after": (after or {}).get("docs"),
            "probes_found": sum(found),
            "passed": not failures,
            "failures": failures,
        }
        rows.append(row)
        print(f"kill: {json.dumps(row)}", file=sys.stderr)
        report.check("kill", f"trial {trial + 1} ({phase})", not failures, "; ".join(failures))
    return {
        "photos": len(good),
        "bad_files": BAD_FILES,
        "clean_run": asdict(timelines[0]),
        "clean_runs": [asdict(t) for t in timelines],
        "trials": rows,
    }


# --- a server on loopback and clients ---------------------------------------------------------------


@contextmanager
def serving(ws: Path, log: Path) -> Iterator[str]:
    """`lookalike serve` on a free loopback port, until it answers /readyz; stopped on the way out."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [LOOKALIKE, "serve", "-w", str(ws), "--host", "127.0.0.1", "--port", str(port)],
            env=ENV,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    r = httpx.get(f"{base}/readyz", timeout=5)
                    if r.status_code == 200:
                        break
                    kind = (
                        r.json().get("error", {}).get("type")
                        if r.headers.get("content-type", "").startswith("application/json")
                        else None
                    )
                    if kind not in (None, "NotReady"):
                        raise RuntimeError(f"the server cannot load: {r.text[:300]}")
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')[-500:]}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def search(http: httpx.Client, base: str, image: bytes, top_k: int = 16) -> httpx.Response:
    return http.post(f"{base}/api/search", files={"file": ("q.png", image, "image/png")}, data={"top_k": str(top_k)})


@dataclass
class Load:
    """Shared by client threads: a request budget, and what came back."""

    max_requests: int
    deadline: float
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    samples: list[tuple[float, float]] = field(default_factory=list)  # (start, seconds), successes
    errors: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.stop.is_set() or self.sent >= self.max_requests or time.monotonic() >= self.deadline:
                return False
            self.sent += 1
            return True


def client(base: str, images: list[bytes], worker: int, load: Load) -> None:
    i = worker
    with httpx.Client(timeout=60) as http:
        while load.take():
            body = images[i % len(images)]
            i += 7  # co-prime with the image count, so clients do not send the same photo in step
            t0 = time.monotonic()
            try:
                r = search(http, base, body)
                ok = r.status_code == 200 and bool(r.json()["results"][0]["matches"])
                what = "" if ok else f"HTTP {r.status_code}: {r.text[:120]}"
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as e:
                what = f"{type(e).__name__}: {e}"
            dt = time.monotonic() - t0
            with load.lock:
                if what:
                    load.errors[what] += 1
                else:
                    load.samples.append((t0, dt))


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def probes_found(http: httpx.Client, base: str, probes: list[Path], uris: list[str]) -> list[bool]:
    """Does each probe image, searched by its pixels (one JSON request), find its own file first?"""
    r = http.post(f"{base}/api/search", json={"data": uris, "top_k": 1})
    if r.status_code != 200:
        return [False] * len(probes)
    results = r.json()["results"]
    return [bool(m["matches"]) and m["matches"][0]["uri"] == str(p) for m, p in zip(results, probes, strict=True)]


def run_clients(base: str, images: list[bytes], n: int, load: Load) -> list[threading.Thread]:
    threads = [threading.Thread(target=client, args=(base, images, w, load), daemon=True) for w in range(n)]
    for t in threads:
        t.start()
    return threads


# --- part 2: searches while another process indexes -------------------------------------------------


def index_under_load(
    base: str, queries: list[bytes], clients: int, new_dir: Path, ws: Path, probes: list[Path]
) -> dict[str, Any]:
    """``clients`` search threads against ``base``: first alone for BASELINE_S, then while a separate
    `lookalike index new_dir -w ws` runs; then (if ``probes``) how soon the new images are findable."""
    load = Load(max_requests=50_000, deadline=time.monotonic() + BASELINE_S + CLI_TIMEOUT_S + 60)
    threads = run_clients(base, queries, clients, load)
    out: dict[str, Any] = {}
    try:
        time.sleep(BASELINE_S)  # the clients' latency with nothing else running, for comparison
        t_start = time.monotonic()
        proc = subprocess.Popen(
            [LOOKALIKE, "index", str(new_dir), "-w", str(ws), "--json"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            stdout, stderr = proc.communicate(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate(timeout=30)
        t_end = time.monotonic()
        out.update(index_exit=proc.returncode, index_stderr=_text(stderr).strip()[-300:])
        out["index_s"] = round(t_end - t_start, 1)
        out["index_indexed"] = json.loads(stdout).get("indexed") if proc.returncode == 0 else None
        out["index_images_per_s"] = round((out["index_indexed"] or 0) / (t_end - t_start), 1)
        if probes and proc.returncode == 0:
            # One request holds the probes, and what counts is when it was sent: under 8 clients a
            # search takes about a second, which is queueing, not staleness.
            uris = [data_uri(p) for p in probes]
            with httpx.Client(timeout=30) as http:
                while time.monotonic() < t_end + 10 and "findable_after_s" not in out:
                    sent = time.monotonic()
                    if all(probes_found(http, base, probes, uris)):
                        out["findable_after_s"] = round(max(0.0, sent - t_end), 2)
                    else:
                        time.sleep(0.05)
    finally:
        load.stop.set()
        for t in threads:
            t.join(timeout=90)
    during = [dt for t0, dt in load.samples if t_start <= t0 <= t_end]
    before = [dt for t0, dt in load.samples if t0 < t_start]
    out.update(
        requests=len(load.samples) + sum(load.errors.values()),
        errors=sum(load.errors.values()),
        error_kinds=dict(load.errors.most_common(5)),
        requests_before_index=len(before),
        **{f"before_{k}": v for k, v in percentiles(before).items()},
        requests_during_index=len(during),
        **{f"during_{k}": v for k, v in percentiles(during).items()},
    )
    return out


def part_concurrent(args: argparse.Namespace, tmp: Path, report: Report) -> dict[str, Any]:
    n_pre, n_new, clients = (100, 200, 8) if args.quick else (300, 1000, 8)
    rng = random.Random(args.seed + 2)
    tux = fetch("tuxpaint")
    pre = copy_sample(tux, unique_images(tux), tmp / "conc-pre", n_pre, rng)
    clip = fetch("openclipart")
    new = copy_sample(clip, unique_images(clip), tmp / "conc-new", n_new, rng)
    probes = rng.sample(new, 3)
    ws = tmp / "conc-ws"
    r = cli(["index", str(tmp / "conc-pre"), "-w", str(ws)])
    if not report.check("concurrent", "pre-index", r.returncode == 0, r.stderr.strip()[-300:]):
        return {}
    queries = [p.read_bytes() for p in rng.sample(pre, min(32, len(pre)))]
    out: dict[str, Any] = {"pre_indexed": len(pre), "new": len(new), "clients": clients}
    try:
        with serving(ws, tmp / "conc-serve.log") as base:
            shared = index_under_load(base, queries, clients, tmp / "conc-new", ws, probes)
            # Control: the same indexing into a workspace of its own. What the two runs share is the
            # two cores; what only the first has is a second process writing the served workspace.
            control = index_under_load(base, queries, clients, tmp / "conc-new", tmp / "conc-control-ws", [])
    except RuntimeError as e:
        report.check("concurrent", "serve starts", False, str(e))
        return out
    out.update(shared=shared, control=control)
    report.check("concurrent", "index exits 0 while serving", shared["index_exit"] == 0, shared["index_stderr"])
    report.check(
        "concurrent",
        f"new documents findable within {FINDABLE_WITHIN_S:g}s of the index finishing",
        shared.get("findable_after_s", 99) <= FINDABLE_WITHIN_S,
        f"after {shared['findable_after_s']}s" if "findable_after_s" in shared else "not within 10s",
    )
    report.check("concurrent", "0 search errors", shared["errors"] == 0, json.dumps(shared["error_kinds"])[:300])
    report.check("concurrent", "control: 0 search errors", control["errors"] == 0, json.dumps(control["error_kinds"]))
    rc, after, err = info(ws)
    expected = len(pre) + len(new)
    out["docs_after"] = (after or {}).get("docs")
    report.check(
        "concurrent",
        "consistent, docs == pre-indexed + new",
        after is not None and after["consistent"] and after["docs"] == after["chunks"] == expected,
        f"exit {rc}: {after or err}",
    )
    return out


# --- part 3: a full disk during a commit --------------------------------------------------------------


FULL_DISK = re.compile(r"no space left|disk is full|disk full|full disk", re.IGNORECASE)


def error_lines(stderr: str, src: Path) -> list[str]:
    """What `index` said on stderr, less its `skipped PATH: reason` reports of the two bad files."""
    bad = f"skipped {src.resolve() / BAD_FOLDER}{os.sep}"
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(bad)]


def clean_exit(part: str, what: str, r: subprocess.CompletedProcess[str], src: Path, report: Report) -> None:
    lines = error_lines(r.stderr, src)
    report.check(part, f"{what}: exit 4 (workspace error)", r.returncode == 4, f"exit {r.returncode}: {lines[-1:]}")
    report.check(
        part,
        f"{what}: one line on stderr naming the full disk, no traceback",
        len(lines) == 1 and bool(FULL_DISK.search(lines[0])) and "Traceback" not in r.stderr,
        f"{len(lines)} lines: " + " | ".join(lines[:2] + (["..."] if len(lines) > 3 else []) + lines[2:][-1:])[-400:],
    )


def part_disk(args: argparse.Namespace, tmp: Path, report: Report, timeline: Timeline | None) -> dict[str, Any]:
    src = tmp / "kill-photos"
    if not src.exists():
        photo_folder(src, 80 if args.quick else 160, args.seed)
    good = sum(1 for p in src.rglob("*") if p.is_file()) - BAD_FILES
    if timeline is None:
        timeline = clean_run(src, tmp / "disk-sizing-ws", good)
    # Half of what the whole job needs on disk: room for the start and some commits, not all of them.
    size_k = max(256, timeline.workspace_bytes // 2 // 1024)
    mnt = tmp / "disk-mnt"
    mnt.mkdir()
    ws = mnt / "ws"
    out: dict[str, Any] = {"photos": good, "tmpfs_kb": size_k, "clean_workspace_kb": timeline.workspace_bytes // 1024}
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(mnt)], capture_output=True)
    if not report.check("disk", "mount a tmpfs (needs root)", mount.returncode == 0, _text(mount.stderr).strip()):
        return out
    try:
        first = cli(["index", str(src), "-w", str(ws)])
        out["full_exit"] = first.returncode
        out["full_stderr"] = error_lines(first.stderr, src)[-3:]
        out["full_stderr_lines"] = len(error_lines(first.stderr, src))
        clean_exit("disk", "index on a full disk", first, src, report)
        docs_full = committed(ws)
        out["docs_when_full"] = docs_full
        report.check("disk", "ran out of space midway", 0 < docs_full < good, f"{docs_full} of {good} committed")
        rc, at_full, err = info(ws)
        report.check(
            "disk", "workspace opens consistent on the full disk", bool(at_full and at_full["consistent"]), err
        )
        again = cli(["index", str(src), "-w", str(ws)])
        out["still_full_exit"] = again.returncode
        out["still_full_stderr"] = error_lines(again.stderr, src)[-3:]
        out["still_full_stderr_lines"] = len(error_lines(again.stderr, src))
        clean_exit("disk", "re-run on the still-full disk", again, src, report)
        remount = subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], capture_output=True)
        report.check("disk", "remount with room", remount.returncode == 0, _text(remount.stderr).strip())
        t0 = time.monotonic()
        final = cli(["index", str(src), "-w", str(ws), "--json"])
        out["rerun_s"] = round(time.monotonic() - t0, 2)
        out["rerun_exit"] = final.returncode
        summary = json.loads(final.stdout) if final.returncode == 0 else {}
        out["rerun_indexed"] = summary.get("indexed")
        report.check("disk", "re-run with room exits 0", final.returncode == 0, final.stderr.strip()[-300:])
        rc, after, err = info(ws)
        out["docs_after"] = (after or {}).get("docs")
        report.check(
            "disk",
            "consistent, docs == chunks == good files",
            bool(after and after["consistent"] and after["docs"] == after["chunks"] == good),
            f"exit {rc}: {after or err}",
        )
    finally:
        umount = subprocess.run(["umount", str(mnt)], capture_output=True)
        if umount.returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    return out


# --- part 4: a bounded load test -----------------------------------------------------------------------


def part_load(args: argparse.Namespace, tmp: Path, report: Report) -> dict[str, Any]:
    n_docs, n_requests, levels, max_s = (200, 100, (1, 4, 16), 60) if args.quick else (438, 2000, (1, 4, 16), 180)
    rng = random.Random(args.seed + 4)
    tux = fetch("tuxpaint")
    photos = copy_sample(tux, unique_images(tux), tmp / "load-photos", n_docs, rng)
    ws = tmp / "load-ws"
    r = cli(["index", str(tmp / "load-photos"), "-w", str(ws)])
    if not report.check("load", "index", r.returncode == 0, r.stderr.strip()[-300:]):
        return {}
    images = [p.read_bytes() for p in rng.sample(photos, 64)]
    rows = []
    try:
        with serving(ws, tmp / "load-serve.log") as base:
            warm = Load(max_requests=20, deadline=time.monotonic() + 60)
            for t in run_clients(base, images, 2, warm):
                t.join(timeout=90)
            for level in levels:
                load = Load(max_requests=n_requests, deadline=time.monotonic() + max_s)
                t0 = time.monotonic()
                for t in run_clients(base, images, level, load):
                    t.join(timeout=max_s + 90)
                elapsed = time.monotonic() - t0
                errors = sum(load.errors.values())
                row = {
                    "clients": level,
                    "requests": len(load.samples) + errors,
                    "errors": errors,
                    "qps": round(len(load.samples) / elapsed, 1),
                    **percentiles([dt for _, dt in load.samples]),
                    "seconds": round(elapsed, 1),
                }
                rows.append(row)
                print(f"load: {row}", file=sys.stderr)
                report.check("load", f"{level} clients: 0 errors", errors == 0, json.dumps(dict(load.errors))[:300])
                report.check(
                    "load",
                    f"{level} clients: all {n_requests} requests within {max_s}s",
                    row["requests"] == n_requests,
                    f"{row['requests']} sent",
                )
    except RuntimeError as e:
        report.check("load", "serve starts", False, str(e))
    return {"docs": len(photos), "requests_per_level": n_requests, "rows": rows}


# --- the summary --------------------------------------------------------------------------------------


def print_tables(result: dict[str, Any], report: Report) -> None:
    parts = result["parts"]
    if "kill" in parts:
        k = parts["kill"]
        print(f"\n## kill -9 during `lookalike index` ({k['photos']} photos + {k['bad_files']} bad files)\n")
        print("| clean run | first commit s | last commit s | exit s | commits seen |")
        print("|---|---|---|---|---|")
        for i, tl in enumerate(k["clean_runs"]):
            name = "first" if i == 0 else f"re-timed after a miss ({i})"
            print(
                f"| {name} | {tl['first_commit']:.2f} | {tl['last_commit']:.2f} | {tl['exit']:.2f} | {tl['commits']} |"
            )
        print()
        print(
            "| trial | phase | delay into phase s | killed at s | docs at kill | re-run s | re-run indexed | checks |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in k["trials"]:
            print(
                f"| {r['trial']} | {r['phase']} | {r['offset_s']:.2f} | {r['killed_at_s']:.2f} | {r['docs_at_kill']} "
                f"| {r['rerun_s']:.1f} "
                f"| {r['rerun_indexed']} | {'pass' if r['passed'] else 'FAIL'} |"
            )
    if parts.get("concurrent", {}).get("shared"):
        c = parts["concurrent"]
        print(
            f"\n## {c['clients']} search clients while `lookalike index` adds {c['new']} images "
            f"({c['pre_indexed']} indexed before)\n"
        )
        print(
            "| index into | index s | images/s | requests | errors | p50 ms before / during | p99 ms before / during |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, row in (("the served workspace", c["shared"]), ("a separate workspace (control)", c["control"])):
            print(
                f"| {name} | {row['index_s']} | {row['index_images_per_s']} | {row['requests']} | {row['errors']} "
                f"| {row['before_p50_ms']} / {row['during_p50_ms']} | {row['before_p99_ms']} / {row['during_p99_ms']} |"
            )
        print(
            f"\nnew images findable {c['shared'].get('findable_after_s')} s after the index exited; docs after: "
            f"{c.get('docs_after')}"
        )
    if parts.get("disk"):
        d = parts["disk"]
        print(f"\n## full disk (tmpfs of {d['tmpfs_kb']} KB; the whole job needs {d['clean_workspace_kb']} KB)\n")
        for key in (
            "full_exit",
            "full_stderr_lines",
            "full_stderr",
            "docs_when_full",
            "still_full_exit",
            "still_full_stderr_lines",
            "still_full_stderr",
            "rerun_exit",
            "rerun_indexed",
            "rerun_s",
            "docs_after",
        ):
            print(f"- {key}: {d.get(key)}")
    if parts.get("load"):
        lo = parts["load"]
        print(f"\n## load test ({lo['requests_per_level']} searches per level, {lo['docs']} documents)\n")
        print("| clients | requests | errors | QPS | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        for r in lo["rows"]:
            print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['qps']} | {r['p50_ms']} | {r['p99_ms']} |")
    print(f"\n## checks: {len(report.checks) - len(report.failed)} of {len(report.checks)} passed\n")
    for c in report.failed:
        print(f"- FAIL [{c.part}] {c.name}: {c.detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer photos, trials and requests")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results to OUT")
    parts = ["kill", "concurrent", "disk", "load"]
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts, help="which parts to run (default: all)")
    args = parser.parse_args()
    report = Report()
    result: dict[str, Any] = {
        "seed": args.seed,
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "parts": {},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lookalike-faults-") as tmp_name:
        tmp = Path(tmp_name)
        timeline = None
        if "kill" in args.parts:
            result["parts"]["kill"] = part_kill(args, tmp, report)
            timeline = Timeline(**result["parts"]["kill"]["clean_run"])
        if "concurrent" in args.parts:
            result["parts"]["concurrent"] = part_concurrent(args, tmp, report)
        if "disk" in args.parts:
            result["parts"]["disk"] = part_disk(args, tmp, report, timeline)
        if "load" in args.parts:
            result["parts"]["load"] = part_load(args, tmp, report)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["checks"] = [asdict(c) for c in report.checks]
    result["failed"] = len(report.failed)
    print_tables(result, report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
