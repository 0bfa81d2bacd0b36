"""Face search throughput: detection and descriptor, and the faces preset with detector parallel 1 and 2.

    .venv/bin/python -m bench.faces [--copies 5] [--json]

Photos: face-recognition 1.3.0's test images (5 photos of one person, 1 of another; downloaded
once from PyPI with `pip download --no-binary :all:`) plus scikit-image's astronaut, each repeated
``--copies`` times under different names (so every file is encoded; timings are per photo anyway).

1. Model only, one thread: faces/s of HOG detection (upsample 1) and of the 128-d descriptor.
2. End to end: the faces preset through ``lookalike.open`` (as `lookalike index --preset faces`), into
   a fresh workspace, with the detector pod's `parallel` at 1 and at 2: photos/s and faces/s.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import lookalike
from lookalike.flow.graph import builtin_flow_path
from lookalike.images import decode
from lookalike.library import Options
from lookalike.models.faces import FaceModel


def photos(folder: Path, copies: int) -> list[Path]:
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
            + ["face-recognition==1.3.0", "-d", tmp],
            check=True,
        )
        with tarfile.open(next(Path(tmp).glob("*.tar.gz"))) as tar:
            blobs = {
                Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and "/tests/test_images/" in m.name and m.name.endswith(".jpg")
            }
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    blobs["astronaut.png"] = buf.getvalue()
    out = []
    for i in range(copies):
        for name, blob in sorted(blobs.items()):
            path = folder / f"{i}-{name}"
            path.write_bytes(blob)
            out.append(path)
    return out


def model_only(paths: list[Path]) -> dict[str, float]:
    model = FaceModel(detection=True, description=True)
    images = [np.asarray(decode(p, draft_size=None).image) for p in paths]
    t0 = time.perf_counter()
    boxes = [model.detect(img, upsample=1, max_side=1600, min_score=0.3) for img in images]  # as the preset flow
    detect_s = time.perf_counter() - t0
    faces = sum(len(b) for b in boxes)
    chips = [c for img, b in zip(images, boxes, strict=True) for c in model.chips(img, b)]
    t0 = time.perf_counter()
    model.describe(chips)
    describe_s = time.perf_counter() - t0
    return {
        "photos": len(paths),
        "faces": faces,
        "detect_faces_per_s": round(faces / detect_s, 1),
        "detect_photos_per_s": round(len(paths) / detect_s, 1),
        "describe_faces_per_s": round(len(chips) / describe_s, 1),
    }


def end_to_end(folder: Path, parallel: int, work: Path) -> dict[str, float]:
    flow = work / f"faces-index-p{parallel}.yml"
    text = builtin_flow_path("faces-index").read_text()
    flow.write_text(
        text.replace(
            "detector:      {uses: FaceDetector, parallel: 2",
            f"detector:      {{uses: FaceDetector, parallel: {parallel}",
        )
    )
    ws = work / f"ws-{parallel}"
    with lookalike.open(Options.from_env(workspace=ws, preset="faces", index_flow=flow)) as library:
        summary = library.index([folder])
        faces = library.info(verify=False).info.chunks
    shutil.rmtree(ws)
    return {
        "detector_parallel": parallel,
        "photos_per_s": round(summary.indexed / summary.seconds, 2),
        "faces_per_s": round(faces / summary.seconds, 2),
        "seconds": round(summary.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "photos"
        folder.mkdir()
        paths = photos(folder, args.copies)
        result = {
            "model_one_thread": model_only(paths[: len(paths) // args.copies]),
            "index": [end_to_end(folder, p, work) for p in (1, 2)],
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["model_one_thread"]
    print(f"model only, one thread, {m['photos']} photos with {m['faces']} faces:")
    print(f"  HOG detection (upsample 1): {m['detect_faces_per_s']} faces/s ({m['detect_photos_per_s']} photos/s)")
    print(f"  128-d descriptor: {m['describe_faces_per_s']} faces/s\n")
    print("| `index --preset faces`, detector parallel | photos/s | faces/s |\n|---|---|---|")
    for r in result["index"]:
        print(f"| {r['detector_parallel']} | {r['photos_per_s']} | {r['faces_per_s']} |")


if __name__ == "__main__":
    main()
