"""Faces: detection and descriptor throughput, and what the face branch costs an index run.

    .venv/bin/python -m bench.faces [--copies 5] [--json]

Photos: face-recognition 1.3.0's test images (5 photos of one person, 1 of another; downloaded
once from PyPI with `pip download --no-binary :all:`) plus scikit-image's astronaut, each repeated
``--copies`` times under different names (so every file is encoded; timings are per photo anyway);
and the same photos padded to 1600x1200 JPEGs, as a camera's photos are large (the detector works
on at most 1600 px a side).

1. Model only, one thread: faces/s of HOG detection (upsample 1) and of the 128-d descriptor.
2. End to end through ``lookalike.open``, into a fresh workspace each: the default flow (whole
   photos), then ``--faces`` (whole photos and faces, then the grouping into people) with the
   detector pod's `parallel` at 1 and 2, on the same photos in the same run: photos/s, faces/s,
   and the faces run's time as a multiple of the default flow's.
3. Detector settings (`--detector`): on bench.people_data's labelled photos (dlib's five johns and
   face_recognition's photos padded to 1600x1200, and group photos of two: 81 faces of 108-150 px),
   photos/s and faces found for each longer side the detector works at and each `upsample`.
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


def padded(paths: list[Path], folder: Path) -> Path:
    """The photos pasted onto 1600x1200 canvases, as JPEGs (a camera's photo size)."""
    from bench.people_data import pad_to_photo

    folder.mkdir()
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            pad_to_photo(img, seed=i).save(folder / f"{path.stem}.jpg", quality=90)
    return folder


def end_to_end(folder: Path, work: Path, parallel: int | None) -> dict[str, float | int | None]:
    """One index run into a fresh workspace: the default flow (``parallel`` None), else --faces with
    the detector's ``parallel``. Its seconds include the grouping into people."""
    opts = Options.from_env(workspace=work / f"ws-{folder.name}-{parallel}")
    if parallel is not None:
        flow = work / f"index-faces-p{parallel}.yml"
        text = builtin_flow_path("index-faces").read_text()
        flow.write_text(text.replace("{uses: FaceDetector, parallel: 2", f"{{uses: FaceDetector, parallel: {parallel}"))
        opts = Options.from_env(workspace=opts.workspace, preset="faces", index_flow=flow)
    start = time.perf_counter()
    with lookalike.open(opts) as library:
        summary = library.index([folder])
        shards = library.info(verify=False).info.shards
    seconds = time.perf_counter() - start
    shutil.rmtree(opts.workspace)
    faces = sum(n for label, n in shards.items() if label.startswith("faces/"))
    return {
        "photos": folder.name,
        "detector_parallel": parallel,
        "photos_per_s": round(summary.indexed / seconds, 2),
        "faces_per_s": round(faces / seconds, 2) if parallel is not None else None,
        "seconds": round(seconds, 2),
    }


DETECTOR_SETTINGS = ((1600, 1), (1600, 0), (1200, 1), (1024, 1), (800, 1))


def detector_settings() -> list[dict[str, int | float]]:
    """Photos/s and faces found per (max_side, upsample), one thread, min_score 0.3 as the preset."""
    from bench.people_data import labelled_photos

    images, labels = labelled_photos()
    rgbs = [np.asarray(im.convert("RGB")) for im in images]
    model = FaceModel(detection=True, description=False)
    model.locate(rgbs[0], 0, 800, 0.3)  # the detector loaded before timing
    out = []
    for max_side, upsample in DETECTOR_SETTINGS:
        start = time.perf_counter()
        found = [len(model.locate(rgb, upsample, max_side, 0.3)) for rgb in rgbs]
        seconds = time.perf_counter() - start
        out.append(
            {
                "max_side": max_side,
                "upsample": upsample,
                "smallest_face_px_at_1600": 80 // 2**upsample * 1600 // max_side,
                "photos_per_s": round(len(rgbs) / seconds, 2),
                "faces": sum(found),
                "expected": sum(len(names) for names in labels),
                "photos_all_found": sum(1 for f, names in zip(found, labels, strict=True) if f == len(names)),
                "photos": len(rgbs),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--detector", action="store_true", help="only part 3, the detector's settings")
    args = parser.parse_args()
    if args.detector:
        rows = detector_settings()
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        print("| longer side | upsample | smallest face (px at 1600) | photos/s | faces found | photos with all |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['max_side']} | {r['upsample']} | {r['smallest_face_px_at_1600']} | {r['photos_per_s']} "
                f"| {r['faces']} of {r['expected']} | {r['photos_all_found']} of {r['photos']} |"
            )
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "photos"
        folder.mkdir()
        paths = photos(folder, args.copies)
        large = padded(paths, work / "photos-1600x1200")
        runs = []
        for where in (folder, large):
            base = end_to_end(where, work, None)
            runs.append(base)
            for p in (1, 2):
                run = end_to_end(where, work, p)
                run["x_default"] = round(float(run["seconds"]) / float(base["seconds"]), 2)
                runs.append(run)
        result = {"model_one_thread": model_only(paths[: len(paths) // args.copies]), "index": runs}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["model_one_thread"]
    print(f"model only, one thread, {m['photos']} photos with {m['faces']} faces:")
    print(f"  HOG detection (upsample 1): {m['detect_faces_per_s']} faces/s ({m['detect_photos_per_s']} photos/s)")
    print(f"  128-d descriptor: {m['describe_faces_per_s']} faces/s\n")
    print("| photos | flow | photos/s | faces/s | time vs the default flow |\n|---|---|---|---|---|")
    for r in result["index"]:
        flow = "default" if r["detector_parallel"] is None else f"--faces, detector parallel {r['detector_parallel']}"
        ratio = f"{r['x_default']}x" if "x_default" in r else "1x"
        print(f"| {r['photos']} | {flow} | {r['photos_per_s']} | {r['faces_per_s'] or '-'} | {ratio} |")


if __name__ == "__main__":
    main()
