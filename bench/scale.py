"""A million images on one machine: index types against exact search, and planning at scale.

    .venv/bin/python -m bench.scale --docs 100000 1000000 [--json] [--workdir DIR]

For each ``--docs N``:

1. **Workspace.** The 439 tuxpaint photos are indexed for real (``lookalike.open``, the built-in
   flow); then N - 439 synthetic documents are committed through its ``Workspace.commit`` (the real
   commit path: SQLite, float16 vectors, vector log) in requests of 2,000. Their vectors come from
   ``bench.synthetic.RealisticVectors``: a real photo's embedding blended with another's
   (weight 0.6-1) plus noise along the real embeddings' principal components, normalised. While
   committing, the index is held exact (a loose latency budget), so no background build competes.
2. **Ground truth.** 1,000 new vectors from the same generator (never indexed) are the queries;
   their exact top-10 comes from a float32 brute-force scan of every stored (float16) vector.
3. **Per index type** (exact ``flat``; ``ivf-sq8``, what the default 2 GB budget picks; ``ivf-pq``,
   what a 256 MB budget picks): the shard is rebuilt as that type through the workspace's own
   background build (train, add, tune nprobe on a held-out sample, snapshot), timed as
   ``build_s``. Then a **fresh process** opens the workspace read-only, as `serve` would (IVF
   snapshots memory-mapped), and measures: time to ready, recall@10 of the 1,000 queries against
   the ground truth, latency on one thread (p50/p99; exact re-ranking from SQLite included), QPS
   with two threads, and its peak RSS. The flat baseline's latency loop stops after 60 s.
4. **Serving.** For the default index type, a real `lookalike serve --read-only` is started on
   loopback: seconds until /api/health says ready, and its RSS after 20 searches with real photos.
5. **Planning.** (Once, at 100,000 files.) 100,000 small files are written and committed as
   documents; `lookalike index DIR` then runs as a subprocess: a no-op. Its wall time and peak RSS.

``--json`` prints one object per configuration with ``docs``, ``index``, ``recall_at_10``,
``p50_ms``, ``p99_ms``, ``qps_2_threads``, ``rss_mb``, ``build_s``, ``ready_s``, ``index_mb``,
``disk_mb`` and (for the planning row) ``noop_reindex_s``. Everything binds to loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import lookalike
from bench.net import free_port
from bench.synthetic import RealisticVectors
from lookalike.datasets import fetch
from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.library import Library, Options
from lookalike.store.vectors import IndexBudget, IndexSpec, choose_index
from lookalike.store.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]  # the probe runs as `python -m bench.scale` from here
# ms: a latency target exact search always meets (no builds while committing). The highest the
# setting takes; a one-core exact scan meets it up to ~20M vectors of 1280-d.
LOOSE = 10_000.0
QUERIES = 1000
SECONDS_PER_LOOP = 60.0


def log(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def commit_synthetic(ws: Workspace, vectors: np.ndarray, start: int) -> None:
    req = Request("index", [])
    for n, v in enumerate(vectors, start):
        doc = Document(id=f"syn{n:07d}", uri=f"/synthetic/{n:07d}.jpg")
        doc.size, doc.mtime_ns, doc.content_hash, doc.width, doc.height = 1, n, f"syn{n}", 500, 375
        doc.tags = [("synthetic", 1.0)]
        doc.chunks = [Chunk(kind="whole", embedding=v)]
        req.docs.append(doc)
        req.staged.doc_ids.append(doc.id)
        req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
    ws.commit(req)


def open_library(path: Path, write: bool = True, **options: object) -> Library:
    """The workspace at ``path`` through the library, with the settings in effect and ``options``."""
    return lookalike.open(Options.from_env(workspace=path, **options), write=write)


def build_workspace(path: Path, n_docs: int) -> tuple[RealisticVectors, float]:
    dataset = fetch("tuxpaint")
    with open_library(path, index_latency_ms=LOOSE, index_memory=64 << 30) as library:
        library.index([dataset.root])
        ws = library.workspace
        _, bases, _ = ws.store.all_vectors(ws.dim)
        gen = RealisticVectors(bases, seed=1)
        start, done = time.perf_counter(), len(bases)
        while done < n_docs:
            block = gen.sample(min(2000, n_docs - done))
            commit_synthetic(ws, block, done)
            done += len(block)
            if done % 100_000 < 2000:
                log(f"  committed {done:,} documents ({done / (time.perf_counter() - start):,.0f}/s)")
        commit_s = time.perf_counter() - start
    return RealisticVectors(bases, seed=2), commit_s


def ground_truth(path: Path, queries: np.ndarray, k: int = 10) -> np.ndarray:
    import faiss

    with open_library(path, write=False) as library:
        ws = library.workspace
        flat = faiss.IndexFlatIP(ws.dim)
        ids = []
        with ws.store.snapshot_read():
            for shard in range(ws.n_shards_configured):
                for block_ids, block in ws.store.shard_vector_blocks(shard, ws.dim):
                    flat.add(block)
                    ids.append(block_ids)
        _, rows = flat.search(queries, k)
    return np.concatenate(ids)[rows]


def disk_mb(path: Path) -> dict[str, float]:
    sqlite = sum(f.stat().st_size for f in path.glob("docs.sqlite*"))
    shards = sum(f.stat().st_size for f in path.glob("shard-*/*") if f.is_file())
    return {"sqlite_mb": sqlite / 2**20, "snapshot_mb": shards / 2**20}


def rebuild_as(path: Path, spec: IndexSpec) -> float:
    """Rebuild every shard as ``spec`` through the workspace's background build; seconds taken."""
    with open_library(path, index_latency_ms=LOOSE, index_memory=64 << 30) as library:
        ws = library.workspace
        shards = [ws.open_shard(i) for i in range(ws.n_shards_configured)]  # as their pods open them
        start = time.perf_counter()
        for shard in shards:
            shard.start_build(spec)
        for shard in shards:
            shard.wait_for_build()
            shard.close()
        return time.perf_counter() - start


# --- the serving probe: a fresh process, as `serve` opens a workspace ------------------------------


def probe(path: Path, queries_file: Path, truth_file: Path) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    queries, truth = np.load(queries_file), np.load(truth_file)
    start = time.perf_counter()
    library = open_library(path, write=False)
    shards = library.workspace.shard_indexes()  # as the query flow's shard pods open them
    ready_s = time.perf_counter() - start

    def top(q: np.ndarray) -> list[int]:
        rows = []
        for shard in shards:
            scores, ids = shard.search(q[None], 10)
            rows += [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        return [i for _, i in sorted(rows, key=lambda x: (-x[0], x[1]))[:10]]

    latencies, hits = [], 0
    deadline = time.perf_counter() + SECONDS_PER_LOOP
    for q, want in zip(queries, truth, strict=True):
        t = time.perf_counter()
        got = top(q)
        latencies.append(time.perf_counter() - t)
        hits += len(set(got) & set(want.tolist()))
        if time.perf_counter() > deadline:
            break
    n = len(latencies)
    done = [0, 0]
    stop = time.perf_counter() + min(SECONDS_PER_LOOP / 4, 15.0)

    def client(me: int) -> None:
        i = me
        while time.perf_counter() < stop and done[me] < 5000:
            top(queries[i % len(queries)])
            done[me] += 1
            i += 2

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    qps = sum(done) / (time.perf_counter() - t)
    info = [shard.describe() for shard in shards]
    for shard in shards:
        shard.close(flush=False)
    library.close()
    current, peak = rss_mb()
    return {
        "index": info[0]["type"],
        "factory": info[0]["factory"],
        "nprobe": info[0]["nprobe"],
        "index_mb": sum(x["memory_bytes"] for x in info) / 2**20,
        "tuned_recall": info[0]["recall_at_10"],
        "recall_at_10": hits / (10 * n),
        "queries": n,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
        "qps_2_threads": qps,
        "ready_s": ready_s,
        "rss_mb": peak,
    }


def serve_probe(path: Path) -> dict:
    """A real `lookalike serve --read-only`: seconds to ready, and RSS after 20 real searches."""
    import httpx

    port = free_port()
    photos = sorted(fetch("tuxpaint").images)[:20]
    cmd = [sys.executable, "-m", "lookalike", "serve", "-w", str(path), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--read-only"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        ready = None
        while time.perf_counter() - start < 600 and proc.poll() is None:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    ready = time.perf_counter() - start
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        if ready is None:
            raise RuntimeError(f"serve never became ready: {proc.stderr.read().decode() if proc.stderr else ''}")
        took = []
        for p in photos:
            t = time.perf_counter()
            r = httpx.post(f"{base}/api/search", files={"file": (p.name, p.read_bytes(), "image/png")}, timeout=30)
            r.raise_for_status()
            took.append(time.perf_counter() - t)
        current, peak = rss_mb(proc.pid)
        return {"serve_ready_s": ready, "serve_rss_mb": current, "serve_search_p50_ms": float(np.median(took) * 1000)}
    finally:
        proc.terminate()
        proc.wait(30)


# --- planning --------------------------------------------------------------------------------------


def planning(workdir: Path, files: int) -> dict:
    folder = workdir / "small-files"
    ws_path = workdir / "ws-planning"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(ws_path, ignore_errors=True)
    for i in range(files):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"{i:06d}.png").write_bytes(b"small file %d" % i)
    dataset = fetch("tuxpaint")
    with open_library(ws_path) as library:  # the default budget: the index it picks, as a user's would be
        library.index([dataset.root])
        ws = library.workspace
        _, bases, _ = ws.store.all_vectors(ws.dim)
        gen = RealisticVectors(bases, seed=3)
        paths = sorted(str(p) for p in folder.rglob("*.png"))
        ws.add_roots([str(folder)])
        for start in range(0, len(paths), 2000):
            req = Request("index", [])
            for p, v in zip(paths[start : start + 2000], gen.sample(len(paths[start : start + 2000])), strict=True):
                doc = Document.from_path(p)
                st = os.stat(p)
                doc.size, doc.mtime_ns, doc.content_hash = st.st_size, st.st_mtime_ns, None
                doc.chunks = [Chunk(kind="whole", embedding=v)]
                req.docs.append(doc)
                req.staged.doc_ids.append(doc.id)
                req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
            ws.commit(req)
        log(f"  planning workspace: {[x['factory'] for x in ws.finish_shards()]}")
    # The index run's own peak RSS: a wrapper process whose only child it is reports it.
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=600)\n"
        "print(json.dumps({'rc': done.returncode, 'out': done.stdout, 'err': done.stderr, "
        "'s': time.perf_counter() - t, 'kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    cmd = [sys.executable, "-m", "lookalike", "index", str(folder), "-w", str(ws_path), "--json"]
    run = json.loads(subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True).stdout)
    if run["rc"] != 0:
        raise RuntimeError(run["err"])
    summary = json.loads(run["out"])
    took, peak = run["s"], run["kb"]
    return {
        "docs": files + 439,
        "index": "planning",
        "noop_reindex_s": took,
        "unchanged": summary["unchanged"],
        "encoded": summary["encoded"],
        "rss_mb": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="*", default=[100_000])
    parser.add_argument("--planning-files", type=int, default=100_000, help="0 to skip the planning run")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the workspaces here (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the workspaces and queries already in --workdir (skip step 1-2)"
    )
    parser.add_argument(
        "--kinds", nargs="+", default=["flat", "ivf-sq8", "ivf-pq"], help="index types to measure (default: all)"
    )
    parser.add_argument("--probe", nargs=3, type=Path, help=argparse.SUPPRESS)  # internal: WS QUERIES TRUTH
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(*args.probe)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lookalike-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.docs:
        path = workdir / f"ws-{n}"
        queries_file, truth_file = workdir / f"queries-{n}.npy", workdir / f"truth-{n}.npy"
        commit_s = None
        if not (args.reuse and path.exists() and truth_file.exists()):
            shutil.rmtree(path, ignore_errors=True)
            log(f"{n:,} documents: committing")
            gen, commit_s = build_workspace(path, n)
            sizes = disk_mb(path)
            log(f"  committed in {commit_s:.0f}s; docs.sqlite {sizes['sqlite_mb']:.0f} MB")
            queries = gen.sample(QUERIES)
            np.save(queries_file, queries)
            np.save(truth_file, ground_truth(path, queries))
        with open_library(path, write=False) as library:
            dim, shards = library.workspace.dim, library.workspace.n_shards_configured
        specs = [
            IndexSpec("flat"),
            choose_index(n // shards, dim, IndexBudget(2 << 30, 5.0).per_shard(shards)),
            choose_index(n // shards, dim, IndexBudget(256 << 20, 5.0).per_shard(shards)),
        ]
        for spec in dict.fromkeys(specs):
            if spec.kind not in args.kinds:
                continue
            log(f"  building {spec.factory()}")
            build_s = rebuild_as(path, spec)
            sizes = disk_mb(path)
            log(f"  built in {build_s:.0f}s; probing")
            cmd = [sys.executable, "-m", "bench.scale", "--probe", str(path), str(queries_file), str(truth_file)]
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            row = {"docs": n, **json.loads(done.stdout), "build_s": build_s, "commit_s": commit_s, **sizes}
            row["disk_mb"] = row["sqlite_mb"] + row["snapshot_mb"]
            row["sqlite_bytes_per_doc"] = row["sqlite_mb"] * 2**20 / n
            if spec == specs[1]:
                row |= serve_probe(path)
            rows.append(row)
            log("  " + json.dumps(row))
        # Back to the default budget: the workspace moves to the type it picks by itself.
        with open_library(path, index_latency_ms=5.0, index_memory=2 << 30) as library:
            log(f"  default budget: {[x['factory'] for x in library.workspace.finish_shards()]}")
    if args.planning_files:
        log(f"planning: a no-op re-index of {args.planning_files:,} small files")
        rows.append(planning(workdir, args.planning_files))
        log("  " + json.dumps(rows[-1]))
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    heads = ("docs", "index", "recall@10", "p50 ms", "p99 ms", "QPS x2", "RSS MB", "build s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, (9, 14, 9, 7, 7, 7, 7, 7), strict=True)))
    for r in rows:
        if r["index"] == "planning":
            print(f"{r['docs']:>9,} no-op re-index {r['noop_reindex_s']:.1f}s, peak RSS {r['rss_mb']:.0f} MB")
            continue
        print(
            f"{r['docs']:>9,} {r['factory']:>14} {r['recall_at_10']:>9.3f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['qps_2_threads']:>7.0f} {r['rss_mb']:>7.0f} {r['build_s']:>7.1f}"
        )


if __name__ == "__main__":
    main()
