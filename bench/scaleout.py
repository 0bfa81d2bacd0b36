"""The Ray runtime against the local one: indexing throughput on one node and on two, and what the
actor hop costs a request.

    unshare -n sh -c 'ip link set lo up && exec .venv/bin/python -m bench.scaleout [--images 439] [--json]'

Ray only binds to loopback inside a network namespace with nothing else (see bench/raycluster.py),
so the benchmark refuses to run elsewhere; fetch the photos first (`lookalike datasets fetch
tuxpaint`), since nothing can be downloaded in there.

1. Indexing N tuxpaint photos with the real model through ``lookalike.open``, each configuration
   from a fresh workspace (``runtime`` and ``ray_address`` in its Options):
   - local: the built-in flow (one encoder with all cores' threads), and the flow with two
     encoder replicas of one thread each; the faster is the one to beat;
   - ray, one node with 2 CPUs, and two nodes with 1 CPU each, both with the two-replica flow
     (each encoder replica reserves one CPU, so on two nodes there is one on each).
   Wall time includes starting the pods (Ray: the actors' processes, each loading its model), so
   that is also reported on its own, and the rate without it.
2. The actor hop: one search (a query image through loader, normalizer, encoder, the shards,
   ranker and doc indexer) on the local runtime and on the two-node cluster, median of 40; and a
   bare round trip of an empty request to one actor, median of 300.

Both nodes share the same 2 cores, so a second node adds no compute here: the figures to read are
the ratios to the local runtime (the overhead), not the absolute rates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lookalike
from bench.raycluster import Cluster, only_loopback
from lookalike.datasets import fetch
from lookalike.document import Request
from lookalike.flow.graph import builtin_flow_path
from lookalike.library import Library, Options, SearchRequest

# Where the flows run: the Options fields that say so (--runtime, --ray-address).
Runtime = dict[str, Any]
LOCAL: Runtime = {"runtime": "local"}

REPLICATED = """\
prefetch: 10
pods:
  loader:        {uses: ImageReader, parallel: 2}
  normalizer:    {uses: ImageNormalizer, parallel: 2}
  encoder:       {uses: ImageEncoder, parallel: 2, resources: {num_cpus: 1}}
  chunk_indexer: {uses: VectorIndexer, shards: 2}
  doc_indexer:   {uses: DocIndexer, needs: loader}
  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}
"""


def _album(n: int, dest: Path) -> list[Path]:
    dataset = fetch("tuxpaint")
    out = []
    for image in sorted(dataset.images)[:n]:
        target = dest / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        out.append(target)
    return out


def _index(work: Path, name: str, album: Path, flow: Path, runtime: Runtime) -> dict[str, float]:
    ws = work / f"ws-{name}"
    started = time.perf_counter()
    with lookalike.open(Options.from_env(workspace=ws, index_flow=flow, **runtime)) as library:
        opened = time.perf_counter()
        library.flows.runtime("index")  # started here, so that its start is timed on its own; index uses it
        up = time.perf_counter()
        summary = library.index([album])
    wall = time.perf_counter() - started
    start = up - opened
    n = summary.indexed
    return {"images": n, "wall_s": wall, "start_s": start, "rate": n / wall, "rate_after_start": n / (wall - start)}


def _search_p50(library: Library, queries: list[Path], rounds: int) -> float:
    library.search(SearchRequest(image=str(queries[0]), top_k=10))  # warm: the pods are up, the model loaded
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        library.search(SearchRequest(image=str(queries[i % len(queries)]), top_k=10))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=439, help="tuxpaint photos to index (all 439 by default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not only_loopback():
        print("run inside a loopback-only network namespace: unshare -n sh -c 'ip link set lo up && exec ...'")
        return 2
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    results: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "images": args.images}
    with tempfile.TemporaryDirectory(prefix="lk-raybench-") as tmp:
        work = Path(tmp)
        album = work / "album"
        photos = _album(args.images, album)
        replicated = work / "index-replicated.yml"
        replicated.write_text(REPLICATED)
        runs: dict[str, dict[str, float]] = {}
        runs["local, built-in flow"] = _index(work, "local-builtin", album, builtin_flow_path("index"), LOCAL)
        runs["local, 2 encoder replicas"] = _index(work, "local-replicated", album, replicated, LOCAL)
        for nodes, cpus in ((1, 2), (2, 1)):
            cluster = Cluster(nodes=nodes, cpus=cpus)
            try:
                cluster.start()
                on_ray: Runtime = {"runtime": "ray", "ray_address": cluster.address}
                runs[f"ray, {nodes} node{'s' if nodes > 1 else ''} x {cpus} CPU"] = _index(
                    work, f"ray-{nodes}", album, replicated, on_ray
                )
                if nodes == 2:
                    results["hop"] = _hops(work, photos, on_ray)
            finally:
                ray.shutdown()
                cluster.stop()
        best_local = max(v["rate"] for k, v in runs.items() if k.startswith("local"))
        best_after = max(v["rate_after_start"] for k, v in runs.items() if k.startswith("local"))
        for v in runs.values():
            v["vs_best_local"] = v["rate"] / best_local
            v["after_start_vs_best_local"] = v["rate_after_start"] / best_after
        results["index"] = runs
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['machine']}; {args.images} tuxpaint photos, real model; wall includes starting the pods")
    heads = f"{'wall s':>7} {'start s':>8} {'img/s':>7} {'vs best local':>14} {'after start':>12} {'vs best':>8}"
    print(f"{'configuration':30} {heads}")
    for name, v in runs.items():
        print(
            f"{name:30} {v['wall_s']:7.1f} {v['start_s']:8.1f} {v['rate']:7.1f} {v['vs_best_local']:14.2f} "
            f"{v['rate_after_start']:12.1f} {v['after_start_vs_best_local']:8.2f}"
        )
    hop = results["hop"]
    assert isinstance(hop, dict)
    print(
        f"search p50: local {hop['search_local_ms']:.1f} ms, ray {hop['search_ray_ms']:.1f} ms "
        f"({hop['search_ratio']:.2f}x); bare actor round trip p50 {hop['round_trip_ms']:.2f} ms"
    )
    return 0


def _hops(work: Path, photos: list[Path], on_ray: Runtime) -> dict[str, float]:
    """Search latency on both runtimes over one workspace, and a bare actor round trip."""
    import ray

    from lookalike.flow.ray_runtime import RayRuntime

    ws = work / "ws-ray-2"
    queries = photos[::7]
    with lookalike.open(Options.from_env(workspace=ws, **LOCAL), write=False) as library:
        local_ms = _search_p50(library, queries, 40)
    with lookalike.open(Options.from_env(workspace=ws, **on_ray), write=False) as library:
        ray_ms = _search_p50(library, queries, 40)
        runtime = library.flows.running("query")
        assert isinstance(runtime, RayRuntime)
        # The hop itself, below the flow: one actor's handler on an empty request.
        actor = runtime._replicas[("loader", 0)][0].actor
        empty = Request("search", [])
        ray.get(actor.handle.remote(empty))
        times = []
        for _ in range(300):
            t = time.perf_counter()
            ray.get(actor.handle.remote(empty))
            times.append(time.perf_counter() - t)
    return {
        "search_local_ms": local_ms,
        "search_ray_ms": ray_ms,
        "search_ratio": ray_ms / local_ms,
        "round_trip_ms": statistics.median(times) * 1000,
    }


if __name__ == "__main__":
    sys.exit(main())
