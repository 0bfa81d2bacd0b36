"""Encoder ceiling (fp32 and INT8, every replicas x threads layout) and preprocessing, in one run.

    .venv/bin/python -m bench.encoder [--seconds 5] [--models efficientnet-lite0 efficientnet-lite0-int8] [--json]

1. Model only: images/s of the ONNX graph on ready tensors, batch 32, in each way of spending the
   cores: one session with every core as intra-op threads, or one single-threaded session per core,
   all running at once (what an encoder pod with ``parallel: N, with: {threads: 1}`` does). The
   best of them is the **ceiling** every pipeline is measured against. The models alternate
   (A B A B, the best of each kept), so a noisy minute hits them alike; INT8 / fp32 is quoted at
   each one's best layout. Batch 1 and 8 are measured in the best layout too (the query path).
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
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.images import load_tensor
from lookalike.models.encoder import EfficientNetEncoder, available_cores

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


def model_rate(encoders: list[EfficientNetEncoder], batch: int, seconds: float) -> float:
    """Images/s of every encoder running batches at once, one thread each (onnxruntime releases
    the GIL), summed: the rate of an encoder pod with that many replicas. Each warms up before
    they all start together."""
    size = encoders[0].input_size
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    rates = [0.0] * len(encoders)
    start = threading.Barrier(len(encoders))

    def run(i: int) -> None:
        encoders[i].encode_tensors(x)  # the first run allocates
        start.wait()
        rates[i] = _rate(lambda: encoders[i].encode_tensors(x), batch, seconds)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(len(encoders))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(rates)


def layouts(cores: int) -> list[tuple[int, int]]:
    """(replicas, threads each) that use every core once: 1 x cores, ..., cores x 1."""
    return [(r, cores // r) for r in range(1, cores + 1) if cores % r == 0]


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
    parser.add_argument(
        "--models", nargs="+", default=["efficientnet-lite0", "efficientnet-lite0-int8"], help="models to compare"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each model's best is kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    cores = available_cores()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        cache = os.environ.get("LOOKALIKE_MODEL_DIR") or Path(tmp)
        model: dict[str, dict[str, float]] = {m: {} for m in args.models}
        sessions = {
            (m, r, t): [EfficientNetEncoder(m, threads=t, cache_dir=cache) for _ in range(r)]
            for m in args.models
            for r, t in layouts(cores)
        }
        for _ in range(args.rounds):
            for (m, r, t), encoders in sessions.items():
                key = f"{r}x{t}"
                rate = model_rate(encoders, 32, args.seconds)
                model[m][key] = max(model[m].get(key, 0.0), rate)
                say(f"{m} {r} replica(s) x {t} thread(s), batch 32: {rate:.1f} images/s")
        best = {m: max(rates, key=lambda k: rates[k]) for m, rates in model.items()}
        small = {}
        for m, key in best.items():
            r = int(key.split("x")[0])
            encoders = sessions[(m, r, cores // r)]
            small[m] = {str(b): round(model_rate(encoders, b, args.seconds), 1) for b in (1, 8)}
        del sessions

        prep = {}
        for label, side in (("500px", 500), ("12MP", 4000)):
            jpegs = make_jpegs(side)
            for draft in (True, False):

                def run(jpegs=jpegs, draft=draft):
                    for j in jpegs:
                        load_tensor(j, draft=draft)

                prep[f"{label} draft={'on' if draft else 'off'}"] = _rate(run, len(jpegs), args.seconds)

    first = args.models[0]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "model_images_per_s_batch32": {m: {k: round(v, 1) for k, v in r.items()} for m, r in model.items()},
        "best_layout": best,
        "ceiling_images_per_s": {m: round(model[m][best[m]], 1) for m in model},
        "x_first_model": {m: round(model[m][best[m]] / model[first][best[first]], 2) for m in model},
        "best_layout_batch_1_8": small,
        "preprocess_images_per_s_one_thread": {k: round(v, 1) for k, v in prep.items()},
        "draft_speedup_12MP": round(prep["12MP draft=on"] / prep["12MP draft=off"], 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}\n")
    keys = [f"{r}x{t}" for r, t in layouts(cores)]
    layout_cols = " | ".join(f"{k.split('x')[0]} replica(s) x {k.split('x')[1]} thread(s)" for k in keys)
    print(f"| model only, batch 32, images/s | {layout_cols} | ceiling (best layout) | ratio | batch 1 / 8 |")
    print("|---|" + "---|" * len(keys) + "---|---|---|")
    for m in args.models:
        cells = " | ".join(f"{model[m][k]:.1f}" for k in keys)
        print(
            f"| {m} | {cells} | {result['ceiling_images_per_s'][m]} ({best[m]}) | "
            f"{result['x_first_model'][m]}x {first} | {small[m]['1']} / {small[m]['8']} |"
        )
    print("\n| preprocessing, one thread | images/s |\n|---|---|")
    for name, rate in prep.items():
        print(f"| {name} | {rate:.1f} |")
    print(f"\ndraft() speed-up on 12 MP JPEGs: {result['draft_speedup_12MP']}x")


if __name__ == "__main__":
    main()
