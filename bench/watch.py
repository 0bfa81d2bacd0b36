"""`lookalike watch`: how soon copied photos are searchable, and what the watcher costs when idle.

    .venv/bin/python -m bench.watch [--workdir DIR] [--reuse] [--json] [--parts latency idle]

1. **Latency.** A fresh workspace, the default flow (the real model), and ``lookalike watch DIR``
   on an empty folder (default settle time). Then N photos (100, then 1,000: the tuxpaint photos,
   each copy under a new name and mirrored or rotated so that every file is a new picture) are
   copied in one after another, as fast as the disk takes them. Measured: seconds from the end
   of the last copy until the workspace lists all N (a read-only ``Library.list`` total, polled
   every 0.2 s, at most 300 s). With events, then with ``--poll 2``.
2. **Idle.** A workspace of 100,000 documents whose files exist (hard links in 10,000 folders,
   built as ``bench.scroll`` builds its workspace, here with 10,000 folders), watched with events
   and with ``--poll 10``, and, for the baseline, the same watcher on one of its folders (10
   photos, the same workspace opened). After start-up (its reconcile scan, which finds everything
   unchanged, has reported), the watcher process's CPU time (its threads' run time, from /proc
   schedstat) and RSS over 30 s of nothing happening: CPU as a share of one core, and the RSS it
   holds beyond the baseline, per watched file.

Every wait is bounded; the watchers are stopped with SIGTERM (and how long that takes is
reported too). Nothing here binds a port.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

import lookalike
from bench.scale import log
from bench.scroll import build
from lookalike.datasets import fetch
from lookalike.library import ListRequest

LATENCY_SIZES = (100, 1000)
IDLE_DOCS, IDLE_FOLDERS = 100_000, 10_000
IDLE_S = 30.0
WAIT_S = 300.0


def lookalike_cmd() -> list[str]:
    return [str(Path(sys.executable).parent / "lookalike")]


def variants(n: int, dest: Path) -> list[Path]:
    """``n`` new pictures made from the tuxpaint photos (each one mirrored, flipped or rotated),
    written under ``dest/staging``; copied into the watched folder later."""
    staging = dest / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    images = sorted(fetch("tuxpaint").images)
    edits = (
        ImageOps.mirror,
        ImageOps.flip,
        lambda im: im.rotate(90, expand=True),
        lambda im: im.rotate(270, expand=True),
    )
    out = []
    for k in range(n):
        src = images[k % len(images)]
        target = staging / f"v{k:05d}.png"
        if not target.exists():
            edits[(k // len(images)) % len(edits)](Image.open(src)).save(target)
        out.append(target)
    return out


def listed(ws: Path) -> int:
    try:
        with lookalike.open(ws, write=False) as library:
            return library.list(ListRequest(limit=1)).total
    except lookalike.LookalikeError:
        return 0


def cpu_s(pid: int) -> float:
    """Seconds on a CPU, summed over the process's threads, in nanoseconds from the scheduler
    (/proc/PID/task/TID/schedstat): utime and stime are counted in 10 ms ticks, too coarse for a
    process that wakes for microseconds a few times a second."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_watch(folder: Path, ws: Path, log_path: Path, *extra: str) -> subprocess.Popen:
    cmd = [*lookalike_cmd(), "watch", str(folder), "-w", str(ws), *extra]
    return subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> float:
    """SIGTERM, and the seconds until it exits (killed after 30)."""
    start = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.perf_counter() - start


def first_reconcile(log_path: Path, limit_s: float = WAIT_S) -> float:
    """Wait for the watcher's start-up reconcile scan to finish (its line in the log); the seconds."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s and " reconcile of " not in log_path.read_text(errors="replace"):
        time.sleep(0.5)
    return time.perf_counter() - start


def settle_cpu(pid: int, limit_s: float = WAIT_S) -> float:
    """Wait until the process uses under 5% of a core over 2 s (start-up done); the seconds it took."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        before = cpu_s(pid)
        time.sleep(2.0)
        if cpu_s(pid) - before < 0.1:
            break
    return time.perf_counter() - start


def latency(workdir: Path, n: int, poll: float | None) -> dict:
    run = workdir / f"latency-{n}-{'poll' if poll else 'events'}"
    shutil.rmtree(run, ignore_errors=True)
    watched, ws = run / "photos", run / "ws"
    watched.mkdir(parents=True)
    subprocess.run([*lookalike_cmd(), "index", str(watched), "-w", str(ws)], check=True, capture_output=True)
    pictures = variants(n, workdir)
    proc = start_watch(watched, ws, run / "watch.log", *(["--poll", str(poll)] if poll else []))
    try:
        first_reconcile(run / "watch.log", 60)
        settle_cpu(proc.pid, 60)
        start = time.perf_counter()
        for p in pictures:
            shutil.copyfile(p, watched / p.name)
        copied = time.perf_counter()
        while listed(ws) < n and time.perf_counter() - copied < WAIT_S:
            time.sleep(0.2)
        searchable = time.perf_counter() - copied
        count = listed(ws)
    finally:
        stop_s = stop(proc)
    return {
        "photos": n,
        "mode": f"poll {poll} s" if poll else "events",
        "copy_s": round(copied - start, 2),
        "last_copy_to_searchable_s": round(searchable, 2),
        "listed": count,
        "sigterm_s": round(stop_s, 2),
    }


def idle(workdir: Path, reuse: bool) -> list[dict]:
    big = workdir / "idle-100k"
    if not (reuse and (big / "ws").is_dir()):
        log(f"building {IDLE_DOCS:,} documents in {IDLE_FOLDERS:,} folders")
        build(big, IDLE_DOCS, IDLE_FOLDERS)
    # The baseline watches one folder (10 files) of the same workspace, opened the same way, so
    # the difference is what watching 100,000 files costs.
    out = []
    for label, folder, ws, files in (
        ("10 files", big / "photos" / "f00000", big / "ws", 10),
        (f"{IDLE_DOCS:,} files", big / "photos", big / "ws", IDLE_DOCS),
    ):
        for mode, extra in (("events", ()), ("poll 10 s", ("--poll", "10"))):
            log(f"idle: {label}, {mode}")
            log_path = workdir / f"idle-{files}-{mode.split()[0]}.log"
            proc = start_watch(folder, ws, log_path, *extra)
            try:
                startup = first_reconcile(log_path) + settle_cpu(proc.pid)
                cpu0, t0 = cpu_s(proc.pid), time.perf_counter()
                samples = []
                while time.perf_counter() - t0 < IDLE_S:
                    time.sleep(1.0)
                    samples.append(rss_bytes(proc.pid))
                cpu = (cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0)
                rss = max(samples)
            finally:
                stop_s = stop(proc)
            out.append(
                {
                    "files": files,
                    "mode": mode,
                    "startup_s": round(startup, 1),
                    "cpu_share": round(cpu, 4),
                    "rss_mb": round(rss / 2**20, 1),
                    "sigterm_s": round(stop_s, 2),
                }
            )
    base = {r["mode"]: r["rss_mb"] for r in out if r["files"] == 10}
    for r in out:
        if r["files"] == IDLE_DOCS:
            r["bytes_per_file_over_baseline"] = round((r["rss_mb"] - base[r["mode"]]) * 2**20 / IDLE_DOCS, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="reuse the 100k workspace built by an earlier run")
    ap.add_argument("--parts", nargs="+", default=["latency", "idle"], choices=["latency", "idle"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-watch-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    if "latency" in args.parts:
        results["latency"] = [latency(workdir, n, poll) for n in LATENCY_SIZES for poll in (None, 2.0)]
        for r in results["latency"]:
            log(f"  {r}")
    if "idle" in args.parts:
        results["idle"] = idle(workdir, args.reuse)
        for r in results["idle"]:
            log(f"  {r}")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
