"""Query latency and throughput of `lookalike serve`, with micro-batching on and off.

    .venv/bin/python bench/query.py [--docs 10000] [--seconds 15] [--clients 1 8 32] [--json]

1. Builds a workspace of ``--docs`` documents: the 439 tuxpaint photos, indexed for real, plus
   synthetic documents whose vectors are real photo embeddings with Gaussian noise added and
   re-normalised (so the index has the size and rough geometry of a real 10k-photo collection,
   without spending minutes encoding augmented images). They are committed through the workspace
   like any document, with pseudo-paths as uris (this benchmark never fetches their files).
2. For each batching setting (``--batch-wait-ms 4`` and ``0``), starts `lookalike serve` on
   loopback, and for each client count runs that many concurrent clients for ``--seconds``, each
   posting real photos (multipart uploads of tuxpaint PNGs, round-robin) to /api/search with
   top_k=16, one request after another.
3. Prints p50/p95/p99 latency and QPS per setting.

The clients run in this process (threads, httpx) on the same 2 cores as the server, so the
figures include the cost of the load generator; compare settings within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lookalike.datasets import fetch  # noqa: E402
from lookalike.document import Chunk, Document, Request, shard_for  # noqa: E402
from lookalike.engine import Engine  # noqa: E402


def build_workspace(ws: Path, n_docs: int, seed: int = 0) -> list[Path]:
    dataset = fetch("tuxpaint")
    with Engine.open(ws) as engine:
        engine.index([dataset.root])
        _, vecs, doc_ids = engine.workspace.store.all_vectors(engine.workspace.dim)
        real = {d.id: d for d in engine.workspace.store.iter_docs()}
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
                request.staged.vectors[d.id] = (shard_for(d.id, engine.workspace.n_shards_configured), d.chunks)
            engine.workspace.commit(request)
        engine.workspace.finish_shards()
    return dataset.images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_load(base: str, images: list[bytes], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(worker: int) -> None:
        nonlocal errors
        i = worker
        with httpx.Client(timeout=60) as http:
            while time.monotonic() < stop:
                body = images[i % len(images)]
                i += clients
                t0 = time.perf_counter()
                r = http.post(f"{base}/api/search", files={"file": ("q.png", body, "image/png")}, data={"top_k": "16"})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors += 1

    t_start = time.monotonic()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t_start
    lat = np.array(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p95_ms": round(float(np.percentile(lat, 95)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        t0 = time.perf_counter()
        photos = build_workspace(ws, args.docs)
        built = time.perf_counter() - t0
        rng = random.Random(1)
        images = [p.read_bytes() for p in rng.sample(photos, 64)]
        with Engine.open(ws, for_indexing=False) as e:
            n_docs = e.workspace.store.count_docs()
        rows = []
        for wait_ms in (4.0, 0.0):
            port = free_port()
            cmd = [str(Path(sys.executable).parent / "lookalike"), "serve", "-w", str(ws), "--port", str(port)]
            cmd += ["--batch-wait-ms", str(wait_ms), "--read-only"]
            server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
            base = f"http://127.0.0.1:{port}"
            try:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit(f"server did not start: {server.stderr.read().decode()[-500:]}")
                    time.sleep(0.1)
                run_load(base, images, 2, 2.0)  # warm-up: thumbnails are not involved, the model is
                for clients in args.clients:
                    row = run_load(base, images, clients, args.seconds)
                    row["batching"] = "on (4 ms)" if wait_ms else "off"
                    rows.append(row)
                    if not args.json:
                        print(f"batching {row['batching']:>9}  clients {clients:>3}  {row}", file=sys.stderr)
            finally:
                server.terminate()
                server.wait(timeout=30)

    result = {"docs": n_docs, "workspace_build_s": round(built, 1), "seconds_per_setting": args.seconds, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\nworkspace: {n_docs} documents (built in {built:.0f}s); {args.seconds:g}s per setting\n")
    print("| micro-batching | clients | QPS | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batching']} | {r['clients']} | {r['qps']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {r['errors']} |"
        )


if __name__ == "__main__":
    main()
