"""Encoder ceiling and preprocessing throughput, in one run.

    .venv/bin/python bench/encoder.py [--seconds 5] [--threads N] [--json]

1. Model only: images/s of the ONNX graph on ready tensors, batch 1, 8 and 32. Every pipeline is
   measured against this ceiling.
2. Preprocessing (decode -> RGB -> resize/crop -> normalise), one thread, on JPEGs made from
   scikit-image's real photos: ~500 px on the long side, and 12 MP (4000 x 3000), each with and
   without JPEG draft().
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookalike.images import load_tensor  # noqa: E402
from lookalike.models.encoder import EfficientNetEncoder, available_cores  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _rate(fn, items: int, seconds: float) -> float:
    """items/s of fn(), repeated until `seconds` have passed (after one warm-up call)."""
    fn()
    done, start = 0, time.perf_counter()
    while True:
        fn()
        done += items
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def make_jpegs(long_side: int) -> list[bytes]:
    """One JPEG (quality 90) per real photo, scaled to `long_side`; 4000 means 12 MP (4000 x 3000)."""
    from skimage import data

    out = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        w, h = img.size
        if long_side >= 4000:  # 12 MP, 4:3, like a phone camera
            img = img.resize((4000, 3000), Image.Resampling.BICUBIC)
        else:
            scale = long_side / max(w, h)
            img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        encoder = EfficientNetEncoder(
            threads=args.threads, cache_dir=os.environ.get("LOOKALIKE_MODEL_DIR") or Path(tmp)
        )
        model = {}
        for batch in (1, 8, 32):
            x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
            model[batch] = _rate(lambda x=x: encoder.encode_tensors(x), batch, args.seconds)

        prep = {}
        for label, side in (("500px", 500), ("12MP", 4000)):
            jpegs = make_jpegs(side)
            for draft in (True, False):

                def run(jpegs=jpegs, draft=draft):
                    for j in jpegs:
                        load_tensor(j, draft=draft)

                prep[f"{label} draft={'on' if draft else 'off'}"] = _rate(run, len(jpegs), args.seconds)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {available_cores()} cores",
        "threads": encoder.threads,
        "model_images_per_s": {str(k): round(v, 1) for k, v in model.items()},
        "preprocess_images_per_s_one_thread": {k: round(v, 1) for k, v in prep.items()},
        "draft_speedup_12MP": round(prep["12MP draft=on"] / prep["12MP draft=off"], 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}; onnxruntime intra-op threads: {encoder.threads}\n")
    print("| model only (EfficientNet-Lite0, ONNX) | images/s |\n|---|---|")
    for batch, rate in model.items():
        print(f"| batch {batch} | {rate:.1f} |")
    print("\n| preprocessing, one thread | images/s |\n|---|---|")
    for name, rate in prep.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"\ndraft() speed-up on 12 MP JPEGs: {result['draft_speedup_12MP']}x")


if __name__ == "__main__":
    main()
