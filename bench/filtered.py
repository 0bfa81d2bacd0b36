"""Filtered search, listing pages and metadata extraction at scale.

    .venv/bin/python -m bench.filtered --docs 100000 1000000 [--json] [--workdir DIR] [--reuse]
    .venv/bin/python -m bench.filtered --metadata-only

For each ``--docs N``, a workspace is built as ``bench.scale`` builds one (the 439 tuxpaint photos
indexed for real, then synthetic documents committed through ``Workspace.commit``, their vectors
from ``bench.synthetic``), each synthetic document with metadata chosen so that three filters keep
a known share of the collection:

- ``camera="alpha"``: every other document (50%);
- ``taken_after = taken_before = 2020-01-01``: one day in a hundred (1%);
- ``folder=/synthetic/f0000``: one folder in ten thousand (0.01%).

The shards are then rebuilt as the index type the default budget picks (IVF-SQ8 at both sizes) and
a fresh process opens the workspace read-only, as ``serve`` does, and measures on one core, over
300 never-indexed query vectors: p50 and p99 of the two shards' search (merged to the global top
10), unfiltered and under each filter, and recall@10 of each filtered search against an exact
scan of the vectors the filter keeps (read from the store). Filtered searches are measured twice:
each on its own (what the first search within a filter costs), and as a shard pod runs them,
remembering what a filter keeps of its shard until the next commit (``remembered_`` keys). Then
``list`` (``Library.list``, by date taken) for a first page and a page 90% of the way through.

``--metadata-only`` measures the cost of reading EXIF at index time: ``read_metadata`` over the
tuxpaint photos and over the scikit-image photos saved with camera EXIF, against the time the same
files take to index with the default flow (same run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from bench.scale import LOOSE, QUERIES, log, open_library, rebuild_as
from bench.synthetic import RealisticVectors
from lookalike.datasets import fetch
from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.filters import Filters
from lookalike.store.filtering import KeptByFilter, KeptCache
from lookalike.store.vectors import IndexBudget, choose_index
from lookalike.store.workspace import Workspace

FILTERS = {
    "50%": Filters(camera="alpha"),
    "1%": Filters(taken_after=date(2020, 1, 1), taken_before=date(2020, 1, 1)),
    "0.01%": Filters(folders=("/synthetic/f0000",)),
}
BLOCK = 2000
SECONDS_PER_LOOP = 30.0


def synthetic_meta(n: int) -> tuple[str, dict]:
    """Document ``n``'s path and metadata: the filters above keep 50%, 1% and 0.01% of them."""
    day = date.fromordinal(date(2020, 1, 1).toordinal() + n % 100)
    meta = {
        "make": "Alpha" if n % 2 == 0 else "Beta",
        "model": "A1" if n % 2 == 0 else "B2",
        "taken_at": f"{day.isoformat()}T12:00:00",
        "taken_from": "exif",
        "format": "jpeg",
    }
    return f"/synthetic/f{n % 10_000:04d}/{n:07d}.jpg", meta


def commit(ws: Workspace, vectors: np.ndarray, start: int) -> None:
    req = Request("index", [])
    for n, v in enumerate(vectors, start):
        uri, meta = synthetic_meta(n)
        doc = Document(id=f"syn{n:07d}", uri=uri, meta=meta)
        doc.size, doc.mtime_ns, doc.content_hash, doc.width, doc.height = 1, n, f"syn{n}", 500, 375
        doc.chunks = [Chunk(kind="whole", embedding=v)]
        req.docs.append(doc)
        req.staged.doc_ids.append(doc.id)
        req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
    ws.commit(req)


def build(path: Path, n_docs: int) -> float:
    """The workspace of ``n_docs`` (see the module), rebuilt as the default budget's index type."""
    with open_library(path, index_latency_ms=LOOSE, index_memory=64 << 30) as library:
        library.index([fetch("tuxpaint").root])
        ws = library.workspace
        _, bases, _ = ws.store.all_vectors(ws.dim)
        gen, done, start = RealisticVectors(bases, seed=1), len(bases), time.perf_counter()
        while done < n_docs:
            block = gen.sample(min(BLOCK, n_docs - done))
            commit(ws, block, done)
            done += len(block)
            if done % 100_000 < BLOCK:
                log(f"  committed {done:,} documents ({done / (time.perf_counter() - start):,.0f}/s)")
        dim, shards = ws.dim, ws.n_shards_configured
    spec = choose_index(n_docs // shards, dim, IndexBudget(2 << 30, 5.0).per_shard(shards))  # the default budget's
    log(f"  rebuilding each shard as {spec.factory()}")
    return rebuild_as(path, spec)


def probe(path: Path) -> dict:
    """In a fresh process: filtered search latency and recall, and listing pages (see the module)."""
    import faiss

    faiss.omp_set_num_threads(1)
    library = open_library(path, write=False)
    ws = library.workspace
    shards = ws.shard_indexes()
    queries = _queries(ws)

    def top(q: np.ndarray, filters: Filters | None, caches: list[KeptCache] | None) -> list[int]:
        rows = []
        for i, shard in enumerate(shards):
            kept = None
            if filters is not None:
                kept = KeptByFilter(ws.store, filters, i, caches[i] if caches is not None else None)
            scores, ids = shard.search(q[None], 10, kept)
            rows += [(float(s), int(c)) for s, c in zip(scores[0], ids[0], strict=True) if c >= 0]
        return [c for _, c in sorted(rows, key=lambda x: (-x[0], x[1]))[:10]]

    out: dict = {"docs": ws.store.count_docs(), "index": shards[0].describe()["factory"], "filters": {}}
    for name, filters in [("none", None), *FILTERS.items()]:
        truth = _exact_truth(ws, queries, filters) if filters is not None else None
        kept = ws.store.count_matching(filters) if filters is not None else out["docs"]
        row: dict = {"kept": kept}
        # Each search on its own (what the first search within a filter costs), then as a pod
        # searches: remembering what the filter keeps of its shard until the next commit.
        for mode, caches in (("", None), ("remembered_", [KeptCache(ws.store) for _ in shards])):
            if filters is None and mode:
                continue
            latencies, hits, wanted = [], 0, 0
            deadline = time.perf_counter() + SECONDS_PER_LOOP
            for n, q in enumerate(queries):
                t = time.perf_counter()
                got = top(q, filters, caches)
                latencies.append(time.perf_counter() - t)
                if truth is not None:
                    hits += len(set(got) & set(truth[n]))
                    wanted += len(truth[n])
                if time.perf_counter() > deadline:
                    break
            row |= {
                f"{mode}queries": len(latencies),
                f"{mode}p50_ms": float(np.percentile(latencies, 50) * 1000),
                f"{mode}p99_ms": float(np.percentile(latencies, 99) * 1000),
                f"{mode}recall_at_10": hits / wanted if wanted else None,
            }
        out["filters"][name] = row
        log(f"  {name}: {row}")
    out["list"] = _list_pages(library)
    for shard in shards:
        shard.close(flush=False)
    library.close()
    return out


def _queries(ws: Workspace) -> np.ndarray:
    """QUERIES new vectors from the generator (never indexed), as bench.scale makes them."""
    ids = ws.store.chunk_ids()[:439]
    _, bases = ws.exact(ids)
    return RealisticVectors(bases, seed=2).sample(min(QUERIES, 300))


def _exact_truth(ws: Workspace, queries: np.ndarray, filters: Filters) -> list[list[int]]:
    """Each query's exact top-10 among the chunks ``filters`` keep, scanned from the stored vectors."""
    kept = np.concatenate([ws.store.chunks_kept(filters, s) for s in range(ws.n_shards_configured)])
    best = np.full((len(queries), 10), -np.inf, np.float32), np.full((len(queries), 10), -1, np.int64)
    for start in range(0, len(kept), 50_000):
        ids, vectors = ws.exact(np.sort(kept[start : start + 50_000]))
        scores = queries @ vectors.T
        merged_s = np.concatenate([best[0], scores], axis=1)
        merged_i = np.concatenate([best[1], np.broadcast_to(ids, scores.shape)], axis=1)
        order = np.argsort(-merged_s, axis=1)[:, :10]
        best = np.take_along_axis(merged_s, order, 1), np.take_along_axis(merged_i, order, 1)
    return [[int(c) for c in row if c >= 0] for row in best[1]]


def _list_pages(library) -> dict:
    """p50 of a first page and of a page 90% of the way through, by date taken (100 a page)."""
    from lookalike.library.types import ListRequest
    from lookalike.store.filtering import _encode_cursor

    store = library.workspace.store
    total = store.count_docs()
    row = store._db.reader.execute(
        "SELECT taken_at, id FROM docs ORDER BY taken_at, id LIMIT 1 OFFSET ?", (int(total * 0.9),)
    ).fetchone()
    deep = _encode_cursor("taken", False, row[0], row[1])
    out = {}
    for name, cursor, filters in (
        ("first page", None, Filters()),
        ("page at 90%", deep, Filters()),
        ("first page, camera filter (50%)", None, FILTERS["50%"]),
    ):
        times = []
        for _ in range(30):
            t = time.perf_counter()
            page = library.list(ListRequest(filters, "taken", False, 100, cursor))
            times.append(time.perf_counter() - t)
        assert len(page.docs) == 100
        # The first call counts the total (kept until the next commit); the rest reuse it.
        out[name] = {"first_ms": times[0] * 1000, "p50_ms": float(np.percentile(times[1:], 50) * 1000)}
        out[name]["total"] = page.total
        log(f"  list {name}: {out[name]}")
    return out


def metadata_cost() -> dict:
    """read_metadata's time per file against indexing the same files (see the module)."""
    from PIL import Image

    import lookalike
    from lookalike.library import Options
    from lookalike.metadata import read_metadata

    tux = fetch("tuxpaint")
    files = [Path(p) for p in tux.images]
    with tempfile.TemporaryDirectory() as tmp:
        exif_dir = Path(tmp) / "exif"
        exif_dir.mkdir()
        info = Image.Exif()
        info[0x010F], info[0x0110] = "Apple", "iPhone 12"
        info.get_ifd(0x8769)[0x9003] = "2024:07:14 18:03:22"
        skimage = fetch("skimage")
        for p in skimage.images:
            with Image.open(p) as im:
                im.convert("RGB").save(exif_dir / (Path(p).stem + ".jpg"), quality=90, exif=info)
        files += sorted(exif_dir.iterdir())
        blobs = [(f, f.read_bytes()) for f in files]
        start = time.process_time()
        for _ in range(5):
            for f, data in blobs:
                read_metadata(data, str(f), 0)
        per_file_ms = (time.process_time() - start) / (5 * len(blobs)) * 1000
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        with lookalike.open(Options.from_env(workspace=Path(tmp) / "ws")) as library:
            report = library.index([tux.root, exif_dir])
        index_cpu_s = time.process_time() - start_cpu
        index_wall_s = time.perf_counter() - start_wall
    share = per_file_ms * report.indexed / 1000 / index_cpu_s
    return {
        "files": len(blobs),
        "read_metadata_ms_per_file": per_file_ms,
        "index_wall_s": index_wall_s,
        "index_cpu_s": index_cpu_s,
        "indexed": report.indexed,
        "share_of_index_cpu": share,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="*", default=[100_000])
    ap.add_argument("--workdir", type=Path, help="where the workspaces go (kept; default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true", help="probe workspaces already built in --workdir")
    ap.add_argument("--metadata-only", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--probe", type=Path, help=argparse.SUPPRESS)  # the fresh process's part
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    results: list[dict] = []
    if args.metadata_only:
        results.append({"metadata": metadata_cost()})
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-filtered-"))
        for n in args.docs:
            path = workdir / f"ws-{n}"
            if not args.reuse:
                log(f"building {n:,} documents in {path}")
                build_s = build(path, n)
                log(f"  rebuilt in {build_s:.0f} s")
            import subprocess

            done = subprocess.run(
                [sys.executable, "-m", "bench.filtered", "--probe", str(path)],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            sys.stderr.write(done.stderr)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
