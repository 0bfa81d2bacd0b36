"""The query path of `lookalike serve` against the in-process decode and encode of the same images.

    .venv/bin/python -m bench.query [--docs 439] [--seconds 15] [--clients 1 8 32] [--max-batch 16 1]
        [--query-flow FILE ...] [--json]

1. Builds a workspace: the 439 tuxpaint photos, indexed for real with the default flow, plus (with
   ``--docs`` above 439) synthetic documents whose vectors are real photo embeddings with Gaussian
   noise added and re-normalised, committed through the workspace like any document, so the index
   has the size and rough geometry of a larger collection without minutes of encoding.
2. The **in-process baseline**, on the same query images, with the model at its fastest: the
   median time to decode and encode one image (``EfficientNetEncoder.encode`` of its bytes,
   batch 1) on one onnxruntime session with every core (idle threads spinning, the fastest alone),
   and the rate of decoding and encoding them 8 at a time (the best of that session and one
   single-threaded session per core, the layout the index flow uses). Nothing of the server is in
   it: no HTTP, no flow, no search. It is measured before the server runs and again after them,
   and the ratios use the mean of the two (this machine's speed drifts by tens of percent within
   minutes; both are printed).
3. For each ``--max-batch`` (16, the default, and 1: no micro-batching), and then with
   each ``--query-flow FILE`` (at the first --max-batch) if given, starts `lookalike serve --read-only`
   on loopback; for each client count, that many clients post real photos (multipart
   uploads of 64 tuxpaint PNGs, round-robin) to /api/search with top_k=16, one request after
   another, for ``--seconds`` (bounded: each client stops at the deadline).
4. Prints QPS, p50/p95/p99 latency, the CPU time each request cost the server (all its threads)
   and the load generator, and the server's peak RSS per setting, and the two ratios: 1-client p50 over the
   in-process single-image time, and 8-client QPS over the in-process batch-8 rate.

The clients run on the same 2 cores as the server, in a separate process (so their interpreter
lock is not the server's), each on one keep-alive connection with a prebuilt request body: the
load generator costs as little CPU as it can. Compare figures within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import lookalike
from bench.net import free_port
from lookalike.datasets import fetch
from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.library import Options

REPO = Path(__file__).resolve().parents[1]  # the load generator runs as `python -m bench.query` from here
BOUNDARY = "lookalike-bench-boundary"


def build_workspace(ws: Path, n_docs: int, seed: int = 0) -> list[Path]:
    dataset = fetch("tuxpaint")
    with lookalike.open(Options.from_env(workspace=ws)) as library:
        library.index([dataset.root])
        workspace = library.workspace  # the synthetic documents skip the flow: committed as its indexers would
        _, vecs, doc_ids = workspace.store.all_vectors(workspace.dim)
        real = {d.id: d for d in workspace.store.iter_docs()}
        rng = np.random.default_rng(seed)
        extra = max(0, n_docs - len(real))
        # Noise of norm ~0.35 per vector: neighbours of a real photo, about as far from it as an
        # edited copy of a photo is (cosine ~0.9), so the top-k stays meaningful.
        sigma = 0.35 / np.sqrt(vecs.shape[1])
        for start in range(0, extra, 500):
            docs = []
            for i in range(start, min(start + 500, extra)):
                j = int(rng.integers(len(vecs)))
                v = (vecs[j] + rng.normal(0, sigma, vecs.shape[1])).astype(np.float32)
                v /= np.linalg.norm(v)
                src = real[doc_ids[j]]
                doc = Document(id=f"syn{i:07d}", uri=f"synthetic://{i}", width=src.width, height=src.height)
                doc.tags, doc.content_hash = src.tags, f"synthetic-{i}"
                doc.chunks = [Chunk(kind="whole", embedding=v)]
                docs.append(doc)
            request = Request("index", docs)
            for d in docs:
                request.staged.doc_ids.append(d.id)
                request.staged.vectors[(d.id, shard_for(d.id, workspace.n_shards_configured))] = d.chunks
            workspace.commit(request)
        workspace.finish_shards()
    return dataset.images


# --- the in-process baseline ------------------------------------------------------------------------


def baseline(images: list[bytes], seconds: float) -> dict[str, Any]:
    """Decode + encode in this process: one image at a time (median ms), and 8 at a time (images/s)."""
    from lookalike.models.encoder import EfficientNetEncoder, available_cores

    cores = available_cores()
    session = EfficientNetEncoder()  # every core, spinning: the fastest for one image
    for image in images[:4]:
        session.encode([image])  # warm-up
    times = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline or len(times) < 20:
        t0 = time.perf_counter()
        session.encode([images[i % len(images)]])
        times.append(time.perf_counter() - t0)
        i += 1

    def rate(encoders: list[EfficientNetEncoder]) -> float:
        counts = [0] * len(encoders)
        stop = time.monotonic() + seconds

        def run(k: int) -> None:
            j = k * 8
            while time.monotonic() < stop:
                encoders[k].encode([images[(j + n) % len(images)] for n in range(8)])
                counts[k] += 8
                j += 8 * len(encoders)

        start = time.perf_counter()
        workers = [threading.Thread(target=run, args=(k,)) for k in range(len(encoders))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return sum(counts) / (time.perf_counter() - start)

    replicas = [EfficientNetEncoder(threads=1) for _ in range(cores)]
    rates = {f"1x{cores}": rate([session]), f"{cores}x1": rate(replicas)}
    best = max(rates, key=lambda k: rates[k])
    return {
        "single_p50_ms": round(statistics.median(times) * 1000, 2),
        "single_images": len(times),
        "batch8_images_per_s": round(rates[best], 1),
        "batch8_layout": best,
        "batch8_layouts": {k: round(v, 1) for k, v in rates.items()},
    }


# --- the load ---------------------------------------------------------------------------------------


def multipart(image: bytes, top_k: int = 16) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n{top_k}\r\n'.encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="q.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + image
        + b"\r\n",
        f"--{BOUNDARY}--\r\n".encode(),
    ]
    return b"".join(parts)


def child_load(spec: dict[str, Any]) -> dict[str, Any]:
    """``clients`` threads, each posting one request after another until the deadline."""
    bodies = [multipart(Path(p).read_bytes()) for p in spec["images"]]
    clients, port = spec["clients"], spec["port"]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    stop = [0.0]

    def client(worker: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        i = worker
        barrier.wait()
        if worker == 0:
            stop[0] = time.monotonic() + spec["seconds"]
        while stop[0] == 0.0:
            time.sleep(0.001)
        try:
            while time.monotonic() < stop[0]:
                body = bodies[i % len(bodies)]
                i += clients
                t0 = time.perf_counter()
                conn.request("POST", "/api/search", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                dt = time.perf_counter() - t0
                with lock:
                    if response.status == 200:
                        latencies.append(dt)
                    else:
                        errors.append(f"{response.status}: {payload[:200]!r}")
        finally:
            conn.close()

    cpu_start = time.process_time()
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    client_cpu = time.process_time() - cpu_start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "client_cpu_ms_per_request": round(client_cpu / max(1, len(latencies)) * 1000, 2),
    }


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    port: int, images: list[str], clients: int, seconds: float, server_pid: int | None = None
) -> dict[str, Any]:
    """One load run; with ``server_pid``, also the CPU each request cost the server."""
    spec = {"port": port, "images": images, "clients": clients, "seconds": seconds}
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    done = subprocess.run(
        [sys.executable, "-m", "bench.query", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise SystemExit(f"load generator failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if server_pid and row["requests"]:
        row["server_cpu_ms_per_request"] = round((cpu_seconds(server_pid) - cpu_before) / row["requests"] * 1000, 1)
    return row


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak RSS (VmHWM), in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def serve(ws: Path, max_batch: int, query_flow: str | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "lookalike"), "serve", "-w", str(ws), "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--read-only"]
    cmd += ["--query-flow", query_flow] if query_flow else []
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    conn_deadline = time.monotonic() + 120
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return server, port
            conn.close()
        except OSError:
            pass
        if time.monotonic() > conn_deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"server did not start: {server.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=439, help="documents in the workspace (439 real, then synthetic)")
    parser.add_argument("--seconds", type=float, default=15.0, help="time per setting and client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[16, 1], help="serve --max-batch settings")
    parser.add_argument(
        "--query-flow", nargs="+", default=[], help="also serve with these query flow YAMLs (at the first --max-batch)"
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_load(json.loads(args.child))))
        return
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        photos = build_workspace(ws, args.docs)
        built = time.perf_counter() - t0
        queries = [str(p) for p in random.Random(1).sample(photos, 64)]
        with lookalike.open(Options.from_env(workspace=ws), write=False) as library:
            n_docs = library.workspace.store.count_docs()
        blobs = [Path(p).read_bytes() for p in queries]
        before = baseline(blobs, min(args.seconds, 10.0))
        say(f"in-process: {before}")
        rows = []
        settings = [(m, None) for m in args.max_batch]
        settings += [(args.max_batch[0], str(Path(f).resolve())) for f in args.query_flow]
        for max_batch, query_flow in settings:
            server, port = serve(ws, max_batch, query_flow)
            try:
                run_load(port, queries, 2, 2.0)  # warm-up
                for clients in args.clients:
                    row = run_load(port, queries, clients, args.seconds, server.pid)
                    row["max_batch"] = max_batch
                    row["flow"] = Path(query_flow).name if query_flow else "built-in"
                    rows.append(row)
                    say(f"{row['flow']} max-batch {max_batch:>3}  clients {clients:>3}  {row}")
                rss = peak_rss_mb(server.pid)
                for row in rows[-len(args.clients) :]:
                    row["server_peak_rss_mb"] = rss
            finally:
                server.terminate()
                server.wait(timeout=30)
        after = baseline(blobs, min(args.seconds, 10.0))
        say(f"in-process again: {after}")
        base = {
            "single_p50_ms": round((before["single_p50_ms"] + after["single_p50_ms"]) / 2, 2),
            "batch8_images_per_s": round((before["batch8_images_per_s"] + after["batch8_images_per_s"]) / 2, 1),
            "before": before,
            "after": after,
        }

    def ratio(max_batch: int, clients: int, key: str, over: float) -> float | None:
        row = next(
            (r for r in rows if r["max_batch"] == max_batch and r["clients"] == clients and r["flow"] == "built-in"),
            None,
        )
        return round(row[key] / over, 2) if row else None

    default = args.max_batch[0]
    result = {
        "docs": n_docs,
        "workspace_build_s": round(built, 1),
        "seconds_per_setting": args.seconds,
        "in_process": base,
        "rows": rows,
        "ratios": {
            "one_client_p50_over_in_process": ratio(default, 1, "p50_ms", base["single_p50_ms"]),
            "eight_clients_qps_over_in_process_batch8": ratio(default, 8, "qps", base["batch8_images_per_s"]),
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\nworkspace: {n_docs} documents (built in {built:.0f}s); {args.seconds:g}s per setting\n")
    for when in ("before", "after"):
        b = base[when]
        print(
            f"in-process decode + encode, {when}: one image {b['single_p50_ms']} ms (median), 8 at a time "
            f"{b['batch8_images_per_s']} images/s (best of {b['batch8_layouts']})"
        )
    print()
    print(
        "| query flow | --max-batch | clients | QPS | p50 ms | p95 ms | p99 ms | errors | server CPU ms/request "
        "| client CPU ms/request | server peak RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        keys = ("flow", "max_batch", "clients", "qps", "p50_ms", "p95_ms", "p99_ms", "errors")
        keys += ("server_cpu_ms_per_request", "client_cpu_ms_per_request", "server_peak_rss_mb")
        cells = [r[k] for k in keys]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    ratios = result["ratios"]
    print(
        f"\n1 client: p50 {ratios['one_client_p50_over_in_process']}x the in-process single image; "
        f"8 clients: QPS {ratios['eight_clients_qps_over_in_process_batch8']}x the in-process batch-8 rate "
        f"(--max-batch {default})"
    )


if __name__ == "__main__":
    main()
