"""End-to-end `index` throughput against the model ceiling and a naive pipeline, in one run.

    .venv/bin/python -m bench.index [--images 300] [--naive-images 100] [--seconds 5] [--repeat 1]
        [--model efficientnet-lite0] [--variants default encoder-1x2 ...] [--flow FILE]
        [--torch-python .venv-ref/bin/python] [--json]

docs/benchmarks.md: ``python -m bench.index --repeat 3 --torch-python .venv-ref/bin/python``

1. Test photos: the tuxpaint photos (Debian ``tuxpaint-stamps-default``, real photos of objects,
   composited onto white) by path, and beyond its 439 the same again mirrored or turned, written as
   JPEGs (quality 90) into temporary folders: ``--images`` scaled to 500 px on the long side, and
   ``--large-images`` at 12 MP (4000 x 3000, scaled to cover and centre-cropped).
   The tuxpaint photos are small (median 150 px), so the 12 MP ones are upscaled; they get seeded
   Gaussian grain (sigma 6 levels) so that each file holds ~2 MB of entropy-coded data like a
   camera JPEG, instead of ~0.5 MB of smooth gradients.
2. The model-only **ceiling**: images/s of ``EfficientNetEncoder.encode_tensors`` on ready batches
   (as in ``bench.encoder``) in its best configuration: one session with every core as threads, or
   one single-threaded session per core running at once (an encoder pod with ``parallel: 2``),
   each at the encoder's batch (8) and at 32.
3. **lookalike**: ``lookalike.open(...).index`` with the built-in index flow as shipped ("default")
   and with one change each (``--variants``, see VARIANTS), into a fresh workspace each time;
   ``--model`` puts another model in every encoder pod (and the ceiling). End-to-end is
   ``IndexReport.files_per_second`` (what `lookalike index` prints: scan, model start-up,
   pipeline, commits and snapshot). Steady is the rate between the first commit
   and the last one made while the pipeline was still full (``prefetch`` requests in flight), so
   it leaves out both the start-up and the final drain.
4. The **2-core bound**: one thread doing the flow's per-image work before the model (read, SHA-256,
   decode with draft(), preprocess) gives its cost in core-seconds; with the model's in its best
   layout (``cores / ceiling``), ``cores / (both)`` is the most any pipeline could index on this
   machine. Each row's "of bound" is its rate over that.
5. **naive**: :class:`bench.baselines.NaivePipeline`, one image at a time with full decode and
   batch 1 on the same ONNX model; with ``--torch-python`` (an interpreter that has torch and
   efficientnet-lite-pytorch, never .venv), also the same weights on torch eager.

Every configuration runs in its own subprocess, so its peak RSS (``VmHWM``) is its own. The
machine is shared: compare the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]  # each child runs as `python -m bench.index` from here

# Grain added to the upscaled 12 MP photos, in 8-bit levels: enough entropy for a camera-like file
# size (~2 MB at quality 90), small enough to leave the picture as it was.
GRAIN_SIGMA = 6.0
SIZES = {"500px": 500, "12MP": 4000}


# --- children: one configuration each, reporting JSON on stdout ------------------------------------


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking
    parent across exec, so every child would report at least the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """``replicas`` sessions of ``threads`` threads each, running batches of ``batch`` at once."""
    from bench.encoder import model_rate
    from lookalike.models.encoder import EfficientNetEncoder

    encoders = [
        EfficientNetEncoder(spec["model"], threads=spec["threads"], batch_size=spec["batch"])
        for _ in range(spec["replicas"])
    ]
    rate = model_rate(encoders, spec["batch"], spec["seconds"])
    return {"images_per_s": rate, "replicas": spec["replicas"], "threads": spec["threads"]}


# The built-in index flow as shipped, and with one change each: {pod: {field: value}}.
VARIANTS: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "default": ("the default flow (as shipped)", {}),
    "encoder-1x2": ("encoder 1 replica x 2 threads (the old default)", {"encoder": {"parallel": 1}}),
    "io-1": ("loader/normalizer `parallel: 1`", {"loader": {"parallel": 1}, "normalizer": {"parallel": 1}}),
    "io-4": ("loader/normalizer `parallel: 4`", {"loader": {"parallel": 4}, "normalizer": {"parallel": 4}}),
    "encoder-3": ("encoder `parallel: 3`", {"encoder": {"parallel": 3}}),
}


def variant_flow(edits: dict[str, dict[str, Any]], model: str | None) -> str:
    """The built-in index flow's YAML with ``edits`` applied (and ``model`` in its encoder pod)."""
    import yaml

    from lookalike.flow.graph import builtin_flow_path

    flow = yaml.safe_load(builtin_flow_path("index").read_text())
    for pod, fields in edits.items():
        flow["pods"][pod].update(fields)
    if model:
        encoder = flow["pods"]["encoder"]
        encoder["with"] = {**encoder.get("with", {}), "model": model}
    return yaml.safe_dump(flow, sort_keys=False)


def child_lookalike(spec: dict[str, Any]) -> dict[str, Any]:
    import lookalike
    from lookalike.evaluate import eval_flows
    from lookalike.library import IndexRequest, Options

    if spec.get("flow"):  # --flow: the user's own index flow, as written
        text = Path(spec["flow"]).read_text()
    else:
        text = variant_flow(VARIANTS[spec["variant"]][1], spec.get("model"))
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        flow = Path(tmp) / "index.yml"
        flow.write_text(text)
        stamps: list[float] = []

        class Clock:
            def planned(self, total: int) -> None: ...
            def skipped(self, doc: Any) -> None: ...
            def still_bad(self, path: str, message: str) -> None: ...
            def unusable(self, path: str, message: str) -> None: ...
            def note(self, message: str) -> None: ...

            def done(self, doc: Any) -> None:
                stamps.append(time.perf_counter())

        start = time.perf_counter()
        # The built-in query flow with this flow's encoder, so that their fingerprints agree.
        _, query = eval_flows(flow, "efficientnet", Path(tmp))
        options = Options.from_env(workspace=Path(tmp) / "ws", index_flow=flow, query_flow=query)
        with lookalike.open(options) as library:
            request = IndexRequest((spec["dir"],), batch_size=spec["batch_size"])
            summary = library.index(request, progress=Clock())
        wall = time.perf_counter() - start
    # Work is bought ahead: at the first commit the loader is already `prefetch` requests ahead, and
    # it stays that far ahead until it runs out of files. Between the first commit and the last one
    # made while it was that far ahead, work in progress is the same at both ends: an unbiased rate.
    batch = spec["batch_size"]
    first, last = batch, len(stamps) - options.prefetch * batch
    steady = (last - first) / (stamps[last - 1] - stamps[first - 1]) if last - first >= 3 * batch else None
    return {
        "images": summary.encoded,
        "skipped": summary.skipped_total,
        "seconds": summary.seconds,
        "images_per_s": summary.files_per_second,
        "steady_images_per_s": steady,
        "wall_with_open_s": wall,
    }


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    from bench.baselines import NaivePipeline, onnx_model, torch_model

    files = sorted(str(p) for p in Path(spec["dir"]).glob("*.jpg"))[: spec["limit"]]
    model = torch_model() if spec["model"] == "torch" else onnx_model()
    pipeline = NaivePipeline(model, batch_size=1)
    pipeline.index(files[:2])  # warm-up: first calls allocate
    run = pipeline.index(files)
    out: dict[str, Any] = {"images": run.images, "seconds": run.seconds, "images_per_s": run.images_per_second}
    if spec["model"] == "torch":
        import torch

        out["torch"] = torch.__version__
        out["threads"] = torch.get_num_threads()
    return out


def child_prep(spec: dict[str, Any]) -> dict[str, Any]:
    """One thread doing the flow's per-image work before the model: read, SHA-256, decode with
    draft(), resize + crop + normalise (ImageReader + ImageNormalizer)."""
    import hashlib

    from lookalike.images import decode, to_tensor

    files = sorted(Path(spec["dir"]).glob("*.jpg"))

    def one(path: Path) -> None:
        blob = path.read_bytes()
        hashlib.sha256(blob).hexdigest()
        to_tensor(decode(blob, draft_size=256).image)

    for path in files[:4]:
        one(path)  # warm-up
    start = time.perf_counter()
    for path in files:
        one(path)
    return {"images_per_s": len(files) / (time.perf_counter() - start)}


CHILDREN = {"ceiling": child_ceiling, "lookalike": child_lookalike, "naive": child_naive, "prep": child_prep}


def run_child(spec: dict[str, Any], python: str = sys.executable) -> dict[str, Any]:
    load = os.getloadavg()[0]
    done = subprocess.run(
        [python, "-m", "bench.index", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{spec['kind']} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": round(load, 2)}


def best_of(
    specs: dict[str, dict[str, Any]],
    repeat: int,
    pythons: dict[str, str],
    report: Any = None,
) -> dict[str, dict[str, Any]]:
    """Run every spec ``repeat`` times, round-robin (so a noisy minute hits them all alike), and keep
    each one's fastest run, with every run's rate under "runs"."""
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in specs}
    for _ in range(repeat):
        for key, spec in specs.items():
            result = run_child(spec, pythons.get(key, sys.executable))
            runs[key].append(result)
            if report is not None:
                report(key, result["images_per_s"])
    out = {}
    for key, results in runs.items():
        best = dict(max(results, key=lambda r: r["images_per_s"]))
        best["runs"] = [round(r["images_per_s"], 1) for r in results]
        out[key] = best
    return out


# --- the photos -------------------------------------------------------------------------------------


# Beyond the 439 tuxpaint photos, each is used again mirrored or turned: another file, other pixels.
TURNS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_180)


def make_photos(root: Path, count: int, large_count: int) -> dict[str, Path]:
    """The 500 px (``count``) and 12 MP (``large_count``) JPEG folders, made from the tuxpaint photos
    in path order, then again turned (TURNS) for counts beyond them."""
    from lookalike.datasets import fetch
    from lookalike.images import decode

    sources = fetch("tuxpaint").images
    if max(count, large_count) > len(sources) * len(TURNS):
        raise SystemExit(f"at most {len(sources) * len(TURNS)} photos per size")
    grain = np.random.default_rng(0).normal(0, GRAIN_SIGMA, (3000, 4000, 3)).astype(np.int16)
    folders = {name: root / name for name in SIZES}
    for folder in folders.values():
        folder.mkdir(parents=True)

    def one(i: int) -> None:
        img = decode(sources[i % len(sources)], draft_size=None).image  # RGB, alpha composited onto white
        turn = TURNS[i // len(sources)]
        img = img.transpose(turn) if turn is not None else img
        w, h = img.size
        if i < count:
            scale = 500 / max(w, h)
            small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
            small.save(folders["500px"] / f"{i:04d}.jpg", quality=90)
        if i < large_count:
            scale = max(4000 / w, 3000 / h)  # cover 4000 x 3000, then crop the middle
            big = img.resize((max(4000, round(w * scale)), max(3000, round(h * scale))), Image.Resampling.BICUBIC)
            left, top = (big.width - 4000) // 2, (big.height - 3000) // 2
            pixels = np.asarray(big.crop((left, top, left + 4000, top + 3000)), dtype=np.int16)
            shift = (i * 7919) % 3000  # a different slice of the same grain for each photo
            noisy = np.clip(pixels + np.roll(grain, shift, axis=0), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folders["12MP"] / f"{i:04d}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(one, range(max(count, large_count))))
    return folders


def _folder_mb(folder: Path) -> float:
    files = list(folder.glob("*.jpg"))
    return sum(f.stat().st_size for f in files) / len(files) / 1e6


# --- the run --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="500 px photos (439 tuxpaint photos, then turned)")
    parser.add_argument("--large-images", type=int, default=300, help="12 MP photos")
    parser.add_argument("--naive-images", type=int, default=100, help="photos the naive pipelines index")
    parser.add_argument("--seconds", type=float, default=5.0, help="time for each ceiling measurement")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration (the best is kept)")
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="built-in flow variants to run"
    )
    parser.add_argument("--model", help="the encoder model of every variant and the ceiling (default: the flow's)")
    parser.add_argument("--batch-size", type=int, default=16, help="documents per request (lookalike index's default)")
    parser.add_argument("--torch-python", help="an interpreter with torch + efficientnet-lite-pytorch")
    parser.add_argument(
        "--flow", help="also measure this index flow YAML (its pods as written), beside the built-in variants"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        result = CHILDREN[spec["kind"]](spec)
        print(json.dumps({**result, "peak_rss_mb": round(_peak_rss_mb(), 1)}))
        return

    from lookalike.models.efficientnet_lite import DEFAULT_MODEL, ensure_onnx
    from lookalike.models.encoder import MODEL_BATCH, available_cores

    model_name = args.model or DEFAULT_MODEL
    ensure_onnx(model_name)  # convert (and quantize) once here, not inside a timed child
    cores = available_cores()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores",
        "model": model_name,
        "images": {"500px": args.images, "12MP": args.large_images},
        "naive_images": args.naive_images,
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        start = time.perf_counter()
        folders = make_photos(Path(tmp), args.images, args.large_images)
        results["photos"] = {name: {"mean_mb": round(_folder_mb(f), 2)} for name, f in folders.items()}
        took = time.perf_counter() - start
        say(f"made {args.images} + {args.large_images} photos in {took:.0f}s: {results['photos']}")

        layouts = [(r, cores // r) for r in range(1, cores + 1) if cores % r == 0]
        model = best_of(
            {
                f"{r}x{t}-b{b}": {
                    "kind": "ceiling",
                    "model": model_name,
                    "replicas": r,
                    "threads": t,
                    "batch": b,
                    "seconds": args.seconds,
                }
                for r, t in layouts
                for b in (MODEL_BATCH, 32)
            },
            args.repeat,
            {},
            lambda key, rate: say(f"ceiling {key}: {rate:.1f} images/s"),
        )
        best_layout = max(model, key=lambda k: model[k]["images_per_s"])
        ceiling = results["ceiling"] = dict(model[best_layout], layout=best_layout)
        results["ceiling_layouts"] = {k: round(v["images_per_s"], 1) for k, v in model.items()}
        model_core_s = cores / ceiling["images_per_s"]  # every layout keeps every core busy
        for name, folder in folders.items():
            specs: dict[str, dict[str, Any]] = {
                v: {
                    "kind": "lookalike",
                    "dir": str(folder),
                    "variant": v,
                    "model": args.model,
                    "batch_size": args.batch_size,
                }
                for v in args.variants
            }
            if args.flow:
                specs["flow"] = {
                    "kind": "lookalike",
                    "dir": str(folder),
                    "flow": str(Path(args.flow).resolve()),
                    "batch_size": args.batch_size,
                }
            specs["prep"] = {"kind": "prep", "dir": str(folder)}
            specs["naive_onnx"] = {"kind": "naive", "dir": str(folder), "limit": args.naive_images, "model": "onnx"}
            pythons = {}
            if args.torch_python:
                specs["naive_torch"] = {**specs["naive_onnx"], "model": "torch"}
                pythons["naive_torch"] = args.torch_python
            best = best_of(
                specs, args.repeat, pythons, lambda key, r, name=name: say(f"{name} {key}: {r:.1f} images/s")
            )
            prep = best["prep"]
            # The most any pipeline can do here: every core busy, with no overhead, paying per image
            # the model's core-seconds (in its best layout) and 1/prep for the work before it.
            bound = prep["cpu_bound_images_per_s"] = cores / (1 / prep["images_per_s"] + model_core_s)
            rows = []
            for key in [*args.variants, *(["flow"] if args.flow else [])]:
                row = best[key]
                row["label"] = f"lookalike, {args.flow}" if key == "flow" else f"lookalike, {VARIANTS[key][0]}"
                row["of_ceiling"] = row["images_per_s"] / ceiling["images_per_s"]
                row["of_bound"] = row["images_per_s"] / bound
                if row.get("steady_images_per_s"):
                    row["steady_of_bound"] = row["steady_images_per_s"] / bound
                row["x_naive"] = row["images_per_s"] / best["naive_onnx"]["images_per_s"]
                rows.append(row)
            results[name] = {
                "lookalike": rows,
                "prep": prep,
                "naive_onnx": best["naive_onnx"],
                "naive_torch": best.get("naive_torch"),
            }

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print_tables(results)


def _runs(row: dict[str, Any]) -> str:
    return ", ".join(f"{r:.1f}" for r in row.get("runs", []))


def _layout(key: str) -> str:
    """'2x1-b8' -> '2 x 1 thread, batch 8'."""
    layout, batch = key.split("-b")
    replicas, threads = layout.split("x")
    return f"{replicas} x {threads} thread{'s' if threads != '1' else ''}, batch {batch}"


def print_tables(r: dict[str, Any]) -> None:
    ceiling = r["ceiling"]
    layouts = ", ".join(f"{_layout(k)}: {v}" for k, v in r["ceiling_layouts"].items())
    print(f"machine: {r['machine']}; {r['model']}; request batch {r['batch_size']}")
    print(
        f"model-only ceiling (best layout, {_layout(ceiling['layout'])}): "
        f"{ceiling['images_per_s']:.1f} images/s ({layouts}), peak RSS {ceiling['peak_rss_mb']:.0f} MB\n"
    )
    for name in SIZES:
        s = r[name]
        prep = s["prep"]
        bound = prep["cpu_bound_images_per_s"]
        print(
            f"### {r['images'][name]} {name} JPEGs (mean {r['photos'][name]['mean_mb']} MB)\n\n"
            f"read + SHA-256 + decode + preprocess, one thread: {prep['images_per_s']:.1f} images/s; so "
            f"{r['machine'].split(', ')[-1]} can index at most {bound:.1f} images/s "
            f"({bound / ceiling['images_per_s']:.0%} of the ceiling): the 2-core bound\n"
        )
        print(
            "| pipeline | images/s | of bound | of ceiling | x naive | steady images/s (of bound) "
            "| peak RSS MB | runs |\n"
            "|---|---|---|---|---|---|---|---|"
        )
        for row in s["lookalike"]:
            steady = row.get("steady_images_per_s")
            steady_txt = f"{steady:.1f} ({row['steady_of_bound']:.0%})" if steady else "-"
            print(
                f"| {row['label']} | {row['images_per_s']:.1f} | {row['of_bound']:.0%} | {row['of_ceiling']:.0%} | "
                f"{row['x_naive']:.1f}x | {steady_txt} | {row['peak_rss_mb']:.0f} | {_runs(row)} |"
            )
        naive = s["naive_onnx"]
        print(
            f"| naive: 1 image at a time, full decode, batch 1 (ONNX) | {naive['images_per_s']:.1f} | "
            f"{naive['images_per_s'] / bound:.0%} | {naive['images_per_s'] / ceiling['images_per_s']:.0%} | 1.0x | - | "
            f"{naive['peak_rss_mb']:.0f} | {_runs(naive)} |"
        )
        t = s["naive_torch"]
        if t:
            print(
                f"| naive, torch {t['torch']} eager ({t['threads']} threads) | {t['images_per_s']:.1f} | "
                f"{t['images_per_s'] / bound:.0%} | {t['images_per_s'] / ceiling['images_per_s']:.0%} | "
                f"{t['images_per_s'] / naive['images_per_s']:.1f}x | - | {t['peak_rss_mb']:.0f} | {_runs(t)} |"
            )
        else:
            print("| naive, torch eager | not measured: pass --torch-python | | | | | | |")
        print()


if __name__ == "__main__":
    main()
