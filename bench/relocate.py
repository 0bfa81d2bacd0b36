"""A renamed folder of photos: followed by content hash, against encoding the same photos afresh.

    .venv/bin/python -m bench.relocate [--workdir DIR] [--repeat 3] [--json]

The 439 tuxpaint photos are copied into ``WORKDIR/photos/tuxpaint`` (in their class folders) and
indexed with the default flow (the real model) into a fresh workspace: that run's wall time is the
full index. Then the
folder is renamed and ``lookalike index`` runs again: every photo is a new path with the bytes of a
document whose file is gone, so it is relocated (new id and path, same chunks and vectors) instead
of encoded. Reported: both wall times (``Library.index``, scan to commit; the model's start-up is
in the full run only, as it would be), the files moved and encoded by the second run, and whether a
search by a moved photo finds it at its new path. ``--repeat`` renames it back and forth that many
times; the best is kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import lookalike
from lookalike import SearchRequest
from lookalike.datasets import fetch
from lookalike.library.types import IndexReport


def run(workdir: Path, repeat: int) -> dict:
    photos = workdir / "photos"
    if photos.exists():
        shutil.rmtree(photos)
    folder = photos / "tuxpaint"
    dataset = fetch("tuxpaint")
    for image in sorted(dataset.images):  # in their class folders, as fetched: three names repeat
        target = folder / image.relative_to(dataset.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
    ws = workdir / "ws"
    if ws.exists():
        shutil.rmtree(ws)
    with lookalike.open(lookalike.Options(workspace=ws)) as library:
        started = time.perf_counter()
        full = library.index([photos])
        full_s = time.perf_counter() - started
        renames = []
        for k in range(repeat):
            target = photos / f"renamed-{k}"
            folder.rename(target)
            folder = target
            started = time.perf_counter()
            moved = library.index([photos])
            renames.append({"seconds": round(time.perf_counter() - started, 3), **_counts(moved)})
        query = sorted(folder.rglob("*.png"))[0]
        hit = library.search(SearchRequest(image=query, top_k=1)).hits[0]
    best = min(r["seconds"] for r in renames)
    return {
        "photos": full.indexed,
        "full_index_s": round(full_s, 3),
        "full": _counts(full),
        "renamed_folder_s": best,
        "renames": renames,
        "speedup": round(full_s / best, 1),
        "found_at_new_path": hit.path == str(query) and (hit.similarity or 0) > 0.999,
    }


def _counts(report: IndexReport) -> dict:
    return {"indexed": report.indexed, "moved": report.moved, "encoded": report.encoded, "removed": report.removed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-relocate-") as tmp:
        result = run(args.workdir or Path(tmp), args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['photos']} photos: full index {result['full_index_s']:.2f}s; renamed folder "
        f"{result['renamed_folder_s']:.3f}s ({result['renames'][0]['moved']} moved, "
        f"{result['renames'][0]['encoded']} encoded), {result['speedup']}x; "
        f"found at the new path: {result['found_at_new_path']}"
    )


if __name__ == "__main__":
    main()
