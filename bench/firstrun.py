"""A fresh clone to a served page: how long `make demo` takes, and what its venv holds.

    python3 -m bench.firstrun [--ref HEAD] [--cache cold|warm|both] [--rounds 1] [--json]

Each round clones this repository (``--ref``: a commit, by default the one checked out) into a
temporary folder and runs ``make demo`` there as a newcomer would, timing it until the page answers
``GET /`` with 200. lookalike's own caches (models, sample photos) are fresh each time, in the
temporary folder, so the figure includes converting the model and fetching the photos. The package
caches are the point of ``--cache``: ``cold`` gives pip and uv empty cache folders, ``warm`` their
usual ones (run a warm round after a cold one to fill them). Reported per round: seconds to the
page, the venv's installed size, and which of the test-only or optional packages it holds.

It needs the network for PyPI and Debian's archive, binds only 127.0.0.1, and stops each demo
after the page answers (or after ``--timeout`` seconds).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.net import free_port

REPO = Path(__file__).resolve().parent.parent
OPTIONAL = (
    "ray",
    "dlib-bin",
    "playwright",
    "schemathesis",
    "scikit-image",
    "ruff",
    "mypy",
    "matplotlib",
    "pytest",
    "httpx",
)


def page_answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def venv_size_mb(venv: Path) -> float:
    total = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    return round(total / 1e6, 1)


def installed(venv: Path) -> list[str]:
    """The distributions in ``venv`` (read from its metadata: the venv need not have pip)."""
    names = []
    for meta in venv.glob("lib/python*/site-packages/*.dist-info"):
        names.append(meta.name.split("-")[0].lower().replace("_", "-"))
    return sorted(names)


def one_round(ref: str, cold: bool, timeout: float, say) -> dict:
    with tempfile.TemporaryDirectory(prefix="lookalike-setup-") as tmp:
        root = Path(tmp)
        clone = root / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", ref], check=True)
        port = free_port()
        env = dict(
            os.environ,
            LOOKALIKE_PORT=str(port),
            LOOKALIKE_MODEL_DIR=str(root / "models"),
            LOOKALIKE_DATA_DIR=str(root / "data"),
            LOOKALIKE_WORKSPACE=str(root / "ws"),
        )
        env.pop("VIRTUAL_ENV", None)
        if cold:
            env["PIP_CACHE_DIR"] = str(root / "pip-cache")
            env["UV_CACHE_DIR"] = str(root / "uv-cache")
        log = (root / "demo.log").open("wb")
        start = time.perf_counter()
        demo = subprocess.Popen(
            ["make", "demo"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        seconds = None
        try:
            while time.perf_counter() - start < timeout and demo.poll() is None:
                if page_answers(port):
                    seconds = round(time.perf_counter() - start, 1)
                    break
                time.sleep(0.2)
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()
            log.close()
        if seconds is None:
            tail = (root / "demo.log").read_text(errors="replace")[-1500:]
            raise SystemExit(f"make demo did not serve the page within {timeout:g}s:\n{tail}")
        venv = clone / ".venv"
        have = installed(venv)
        result = {
            "ref": ref,
            "cache": "cold" if cold else "warm",
            "seconds_to_page": seconds,
            "venv_mb": venv_size_mb(venv),
            "packages": len(have),
            "optional_present": [p for p in OPTIONAL if p in have],
        }
        say(json.dumps(result))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", nargs="+", default=["HEAD"], help="commits to measure, alternated each round")
    parser.add_argument("--cache", choices=["cold", "warm", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("make") is None:
        raise SystemExit("bench.firstrun needs make")
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    caches = ["cold", "warm"] if args.cache == "both" else [args.cache]
    rows = []
    for _ in range(args.rounds):
        for cache in caches:
            for ref in args.ref:
                rev = subprocess.run(
                    ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
                ).stdout.strip()
                rows.append(one_round(rev, cache == "cold", args.timeout, say))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| commit | package caches | seconds to the page | venv MB | packages | optional packages present |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        present = ", ".join(r["optional_present"]) or "none"
        print(f"| {r['ref']} | {r['cache']} | {r['seconds_to_page']} | {r['venv_mb']} | {r['packages']} | {present} |")


if __name__ == "__main__":
    main()
