"""Scale: float16 vectors, index types chosen for a budget, background rebuilds, planning in SQL.

The ANN tests use vectors made from real photo embeddings (tuxpaint, encoded by the real model)
with structured noise (bench.synthetic), committed through the workspace's real commit path.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from bench.synthetic import RealisticVectors
from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.errors import StoreError
from lookalike.store import schema
from lookalike.store.shard_index import ShardIndex
from lookalike.store.vectors import IndexBudget, IndexSpec, VectorShard, choose_index, exact_limit
from lookalike.store.workspace import Workspace, WorkspaceLayout

from conftest import lookalike_cmd, one_space

DIM = 1280


@pytest.fixture(scope="module")
def real_vectors(encoder, tuxpaint) -> RealisticVectors:
    photos = sorted(tuxpaint.images)[::4]  # 110 photos across every class
    embeddings = np.concatenate([encoder.encode([str(p) for p in photos[i : i + 32]])[0] for i in range(0, 110, 32)])
    return RealisticVectors(embeddings, seed=7)


def commit_vectors(ws: Workspace, vectors: np.ndarray, start: int, batch: int = 1000) -> list[str]:
    """Commit one document per vector (doc ids d<start>...), through Workspace.commit."""
    ids = []
    for at in range(0, len(vectors), batch):
        req = Request("index", [])
        for n, v in enumerate(vectors[at : at + batch], start + at):
            doc = Document(id=f"d{n}", uri=f"/synthetic/{n}.jpg")
            doc.size, doc.mtime_ns, doc.content_hash = n, n, f"h{n}"
            doc.chunks = [Chunk(kind="whole", embedding=v)]
            req.docs.append(doc)
            req.staged.doc_ids.append(doc.id)
            req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
            ids.append(doc.id)
        ws.commit(req)
    return ids


def delete_docs(ws: Workspace, doc_ids: list[str]) -> None:
    req = Request("delete", [Document(id=d) for d in doc_ids])
    req.staged.deletes.extend(doc_ids)
    ws.commit(req)


def exact_top(ws: Workspace, queries: np.ndarray, k: int = 10) -> list[set[int]]:
    ids, vectors, _ = ws.store.all_vectors(ws.dim)
    scores = queries @ vectors.T
    return [set(ids[np.argsort(-row, kind="stable")[:k]].tolist()) for row in scores]


@contextmanager
def shard_pods(ws: Workspace) -> Iterator[list[ShardIndex]]:
    """Every shard's index, opened as its pod opens it (a writer: it builds and snapshots)."""
    shards = [ws.open_shard(i) for i in range(ws.n_shards_configured)]
    try:
        yield shards
    finally:
        for shard in shards:
            shard.close()


def workspace_top(shards: list[ShardIndex], queries: np.ndarray, k: int = 10) -> list[set[int]]:
    """The global top-k over every shard, merged by (exact) score, as the flow's merge does."""
    rows: list[list[tuple[float, int]]] = [[] for _ in queries]
    for shard in shards:
        scores, ids = shard.search(queries, k)
        for q in range(len(queries)):
            rows[q] += [(float(s), int(i)) for s, i in zip(scores[q], ids[q], strict=True) if i >= 0]
    return [{i for _, i in sorted(r, key=lambda x: (-x[0], x[1]))[:k]} for r in rows]


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    return sum(len(f & t) for f, t in zip(found, truth, strict=True)) / sum(len(t) for t in truth)


# --- choosing the index --------------------------------------------------------------------------


def test_the_index_type_follows_size_and_budget():
    budget = IndexBudget(2 << 30, 5.0)
    limit = exact_limit(DIM, budget)
    assert 5_000 < limit < 20_000  # a full scan of 1280-d float32 within 5 ms on one core
    assert choose_index(limit, DIM, budget).kind == "flat"
    assert choose_index(limit + 1, DIM, budget).kind == "ivf-sq8"
    assert choose_index(1_000_000, DIM, budget).kind == "ivf-sq8"  # 1.3 GB of codes fit 2 GB
    pq = choose_index(1_000_000, DIM, IndexBudget(512 << 20, 5.0))
    assert pq.kind == "ivf-pq" and 1_000_000 * (pq.pq_m + 8) <= 512 << 20
    assert choose_index(100_000, DIM, IndexBudget(2 << 30, 1000.0)).kind == "flat"  # a loose target: exact
    assert choose_index(500, DIM, IndexBudget(1, 0.001)).kind == "flat"  # too few to train cells on, whatever
    # Nothing fits 1 MB: the smallest PQ codes there are, or SQ8 where no PQ size divides the dimension.
    assert choose_index(10**6, 16, IndexBudget(1 << 20, 0.001)) == IndexSpec("ivf-pq", 2048, 8)
    assert choose_index(10**6, 12, IndexBudget(1 << 20, 0.001)).kind == "ivf-sq8"


# --- float16 storage -----------------------------------------------------------------------------


@pytest.mark.slow  # the real model encodes the photos the vectors start from
def test_vectors_are_stored_as_float16_and_search_below_the_threshold_is_exact(tmp_path, real_vectors):
    vectors = real_vectors.sample(3000)
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(one_space("e", DIM, 2))) as ws:
        commit_vectors(ws, vectors, 0)
        shards = [ws.open_shard(i) for i in range(2)]
        assert {s.kind for s in shards} == {"flat"}
        (blob,) = ws.store._db.reader.execute("SELECT embedding FROM chunks LIMIT 1").fetchone()
        assert len(blob) == 2 * DIM  # 2,560 bytes a vector on disk, not 5,120
        queries = real_vectors.sample(50)
        ids, stored, _ = ws.store.all_vectors(DIM)
        np.testing.assert_allclose(stored, vectors, atol=1e-3)  # in commit order; float16 keeps ~3 digits
        for shard in range(2):
            scores, found = shards[shard].search(queries, 10)
            mine = np.array([shard_for(doc, 2) == shard for doc in ws.store.all_vectors(DIM)[2]])
            exact = queries @ stored[mine].T
            order = np.argsort(-exact, axis=1, kind="stable")[:, :10]
            np.testing.assert_array_equal(found, ids[mine][order])  # identical to exact search
            np.testing.assert_allclose(scores, np.take_along_axis(exact, order, 1), rtol=0, atol=1e-5)


def undo_migration_4(conn: sqlite3.Connection) -> None:
    """Take out what schema migrations 4 (the photo metadata), 5 (its indexes) and 6 (people)
    added, as a store from before them."""
    conn.execute("DROP TRIGGER face_gone")
    for table in ("people", "face_people", "face_refusals", "faces_gone"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("DROP INDEX chunks_doc")
    conn.execute("CREATE INDEX chunks_doc ON chunks(doc_id)")
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND sql LIKE '%docs(%'").fetchall():
        if name not in ("docs_content_hash",):
            conn.execute(f"DROP INDEX {name}")
    before = {"id", "uri", "size", "mtime_ns", "content_hash", "width", "height", "tags", "indexed_at"}
    for column in [r[1] for r in conn.execute("PRAGMA table_info(docs)")]:
        if column not in before:
            conn.execute(f"ALTER TABLE docs DROP COLUMN {column}")
    conn.execute("DROP TABLE cameras")


def test_a_float32_store_is_converted_and_its_snapshots_rebuilt(tmp_path):
    """Schema migration 3: float32 vectors of an older lookalike become float16, in place."""
    path = tmp_path / "ws"
    with Workspace.open(path, WorkspaceLayout(one_space("e", 8, 1))) as ws:
        doc = Document(id="a", uri="/p/a.jpg")
        doc.size = doc.mtime_ns = 1
        doc.chunks = [Chunk(kind="whole", embedding=np.linspace(-1, 1, 8, dtype=np.float32))]
        req = Request("index", [doc])
        req.staged.doc_ids.append("a")
        req.staged.vectors[("a", 0)] = doc.chunks
        ws.commit(req)
    conn = sqlite3.connect(path / "docs.sqlite")  # as migration 2 left it: float32 blobs
    conn.execute("UPDATE chunks SET embedding = ?", (np.linspace(-1, 1, 8, dtype=np.float32).tobytes(),))
    undo_migration_4(conn)
    conn.execute("PRAGMA user_version=2")
    conn.commit()
    conn.close()
    with Workspace.open(path, WorkspaceLayout(one_space("e", 8, 1))) as ws:
        ids, vectors, _ = ws.store.all_vectors(8)
        np.testing.assert_allclose(vectors[0], np.linspace(-1, 1, 8), atol=1e-3)
        assert ws.store._db.reader.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        assert ws.verify() == [] and len(ws.open_shard(0)) == 1


# --- ANN: switched, tuned, kept up to date --------------------------------------------------------


@pytest.fixture(scope="module")
def ann_workspace(tmp_path_factory, real_vectors) -> Path:
    """50,000 realistic vectors in two shards: past the exact limit, so each shard switches to ANN."""
    path = tmp_path_factory.mktemp("scale") / "ws"
    with Workspace.open(path, WorkspaceLayout(one_space("e", DIM, 2), index_latency_ms=2.0)) as ws:
        commit_vectors(ws, real_vectors.sample(50_000), 0)
        with shard_pods(ws) as shards:
            for shard in shards:
                shard.finish()  # as the index flow's shard pods do when it closes
    return path


@pytest.mark.slow
def test_a_50k_collection_switches_to_ann_and_keeps_recall_after_adds_and_removes(ann_workspace, real_vectors):
    queries = real_vectors.sample(200)  # new vectors, none of them indexed
    with Workspace.open(ann_workspace, WorkspaceLayout(one_space("e", DIM))) as ws, shard_pods(ws) as shards:
        assert {s.kind for s in shards} == {"ivf-sq8"} and all(s.vectors.mapped for s in shards)
        assert all(s.vectors.info.recall_at_10 >= 0.95 for s in shards)  # as tuned at build, held out
        assert recall(workspace_top(shards, queries), exact_top(ws, queries)) >= 0.95
        # Adds and removes on the loaded (memory-mapped) index: copied into memory, then changed.
        added = commit_vectors(ws, real_vectors.sample(5_000), 50_000)
        removed = [f"d{i}" for i in range(0, 50_000, 10)]
        delete_docs(ws, removed)
        for shard in shards:
            shard.sync()  # the pods take in the commits from the log
        assert not any(s.vectors.mapped for s in shards)
        assert ws.store.count_docs() == 50_000 and ws.verify() == []
        removed_chunks = set()  # gone from the store, so they can only come back from a stale index
        assert recall(workspace_top(shards, queries), exact_top(ws, queries)) >= 0.95
        for shard in shards:
            _, found = shard.search(queries, 10)
            removed_chunks |= set(found.ravel().tolist()) - set(ws.store.all_vectors(DIM)[0].tolist())
        assert removed_chunks <= {-1}
        delete_docs(ws, added)
    # Brought forward from the snapshots the pods wrote when they closed.
    with Workspace.open(ann_workspace, WorkspaceLayout(one_space("e", DIM))) as ws, shard_pods(ws) as shards:
        assert ws.store.count_docs() == 45_000 and ws.verify() == []
        assert recall(workspace_top(shards, queries), exact_top(ws, queries)) >= 0.95


@pytest.mark.slow
def test_info_reports_the_index_type_its_memory_and_measured_recall(ann_workspace):
    done = subprocess.run(
        [*lookalike_cmd(), "info", "-w", str(ann_workspace), "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [x["type"] for x in data["index"]] == ["ivf-sq8", "ivf-sq8"]
    for x in data["index"]:
        assert x["factory"].startswith("IVF") and x["nprobe"] >= 1
        assert 0 < x["memory_bytes"] < x["vectors"] * 1400  # SQ8: ~1,288 bytes a vector
        assert x["recall_at_10"] >= 0.95 and x["recall_queries"] == 300
    text = subprocess.run(
        [*lookalike_cmd(), "info", "-w", str(ann_workspace), "--recall"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert text.returncode == 0, text.stderr
    assert "ivf-sq8 (IVF" in text.stdout and "recall@10 " in text.stdout and "on 200 held-out" in text.stdout


# --- moving up a type: in the background, atomically, crash-safe -----------------------------------


def _small_flat_workspace(path: Path, real_vectors: RealisticVectors, n: int = 2000) -> None:
    with Workspace.open(path, WorkspaceLayout(one_space("e", DIM, 1))) as ws:
        commit_vectors(ws, real_vectors.sample(n), 0)
        with ws.open_shard(0) as shard:
            assert shard.kind == "flat"


@pytest.mark.slow  # the real model encodes the photos the vectors start from
def test_the_new_index_is_built_in_the_background_while_the_old_one_serves(tmp_path, real_vectors, monkeypatch):
    path = tmp_path / "ws"
    _small_flat_workspace(path, real_vectors)
    release = threading.Event()
    real_build = VectorShard.build

    def slow_build(*args, **kwargs):
        release.wait(60)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(VectorShard, "build", slow_build)
    queries = real_vectors.sample(20)
    # A tighter latency target: exact search over 2,000 vectors no longer meets it.
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=0.5)) as ws,
        shard_pods(ws) as (shard,),
    ):
        assert shard.building and shard.kind == "flat"
        before = workspace_top([shard], queries)
        commit_vectors(ws, real_vectors.sample(100), 2000)  # commits go on meanwhile
        assert workspace_top([shard], queries) and shard.kind == "flat" and len(shard) == 2100
        release.set()
        shard.wait_for_build()
        assert shard.kind == "ivf-sq8" and len(shard) == 2100 and ws.verify() == []
        assert recall(workspace_top([shard], queries), exact_top(ws, queries)) >= 0.95
        assert before  # the old index answered while the new one was built
    state = json.loads((path / "shard-0" / "snapshot.json").read_text())
    assert state["index"]["kind"] == "ivf-sq8" and state["count"] == 2100
    assert sorted(p.name for p in (path / "shard-0").glob("index*.faiss")) == [state["file"]]


@pytest.mark.slow  # the real model encodes the photos the vectors start from
def test_a_commit_racing_the_swap_is_applied_once(tmp_path, real_vectors, monkeypatch):
    """Another process commits just as the new index is brought forward: it is replayed exactly once."""
    path = tmp_path / "ws"
    _small_flat_workspace(path, real_vectors)
    real_replay = ShardIndex._replay
    raced = []

    def replay(self, target, since, until=None):
        if threading.current_thread().name.startswith("index-build") and not raced:  # the build's catch-up
            with Workspace.open(path, WorkspaceLayout(one_space("e", DIM))) as other:
                commit_vectors(other, real_vectors.sample(50), 5000)
            raced.append(True)
        return real_replay(self, target, since, until)

    monkeypatch.setattr(ShardIndex, "_replay", replay)
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=0.5)) as ws,
        shard_pods(ws) as (shard,),
    ):
        shard.wait_for_build()
        shard.sync()
        assert raced and shard.kind == "ivf-sq8"
        assert ws.verify() == [] and len(shard) == 2050  # caught up once, no duplicates
        assert len(np.unique(shard.ids())) == 2050


@pytest.mark.slow  # the real model encodes the photos the vectors start from
def test_a_failed_build_leaves_the_old_index_serving_and_says_why(tmp_path, real_vectors, monkeypatch):
    path = tmp_path / "ws"
    _small_flat_workspace(path, real_vectors)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in k-means")

    monkeypatch.setattr(VectorShard, "build", broken)
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=0.5)) as ws,
        shard_pods(ws) as (shard,),
    ):
        with pytest.raises(StoreError, match="building the IVF.* index of shard 0 failed: out of memory"):
            shard.wait_for_build()
        assert shard.kind == "flat" and len(shard) == 2000
        assert shard.search(real_vectors.sample(1), 5)[1].shape == (1, 5)


@pytest.mark.slow
def test_a_process_killed_mid_build_leaves_the_old_index_on_disk(tmp_path, real_vectors):
    path = tmp_path / "ws"
    _small_flat_workspace(path, real_vectors)
    state = (path / "shard-0" / "snapshot.json").read_bytes()
    code = (
        "import sys, time\n"
        "from lookalike.store.vectors import VectorShard\n"
        "from lookalike.store.workspace import Workspace, WorkspaceLayout\n"
        "from lookalike.store.spaces import VectorSpace\n"
        "VectorShard.build = classmethod(lambda cls, *a, **k: time.sleep(600))  # stuck in k-means\n"
        "space = {'image': VectorSpace('e', 1280, 'cosine', 0)}\n"
        "ws = Workspace.open(sys.argv[1], WorkspaceLayout(space, index_latency_ms=0.5))\n"
        "print('building', ws.open_shard(0).building, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "building True"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert (path / "shard-0" / "snapshot.json").read_bytes() == state
    # The old snapshot serves (the killed process remembered its budget: 5 ms again keeps it exact).
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=5.0)) as ws,
        shard_pods(ws) as (shard,),
    ):
        assert shard.kind == "flat" and not shard.building and ws.verify() == []
    # The build runs again (the killed holder's build lock died with it).
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=0.5)) as ws,
        shard_pods(ws) as (shard,),
    ):
        shard.wait_for_build()
        assert shard.kind == "ivf-sq8" and ws.verify() == []
    # No commit came between: the new index is written at the same generation as the old one.
    assert json.loads((path / "shard-0" / "snapshot.json").read_text())["index"]["kind"] == "ivf-sq8"
    with Workspace.open(path, WorkspaceLayout(one_space("e", DIM))) as ws, shard_pods(ws) as (shard,):
        assert shard.kind == "ivf-sq8" and shard.vectors.mapped


@pytest.mark.slow  # the real model encodes the photos the vectors start from
def test_a_mapped_index_left_untouched_by_commits_is_saved_and_reopened(tmp_path, real_vectors):
    """The generation moves on without touching a memory-mapped shard (a commit without vectors):
    its next snapshot names the file it maps (FAISS would write a mapped index as a stub)."""
    path = tmp_path / "ws"
    _small_flat_workspace(path, real_vectors)
    with (
        Workspace.open(path, WorkspaceLayout(one_space("e", DIM), index_latency_ms=0.5)) as ws,
        shard_pods(ws) as (shard,),
    ):
        shard.wait_for_build()
    with Workspace.open(path, WorkspaceLayout(one_space("e", DIM))) as ws, shard_pods(ws) as (shard,):
        assert shard.vectors.mapped
        doc = Document(id="no-vectors", uri="/synthetic/none.jpg")
        doc.size = doc.mtime_ns = 1
        req = Request("index", [doc])
        req.staged.doc_ids.append(doc.id)
        ws.commit(req)
        shard.sync()
        assert shard.vectors.mapped  # nothing to add: still mapped when flushed
    with Workspace.open(path, WorkspaceLayout(one_space("e", DIM))) as ws, shard_pods(ws) as (shard,):
        assert shard.kind == "ivf-sq8" and len(shard) == 2000 and ws.verify() == []
        assert ws.store.generation == json.loads((path / "shard-0" / "snapshot.json").read_text())["generation"]


# --- planning in SQL -----------------------------------------------------------------------------


def test_documents_under_a_root_are_a_prefix_range_not_a_scan(tmp_path):
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(one_space("e", 8, 1))) as ws:
        paths = ["/p/a.jpg", "/p/sub/b.jpg", "/p2/c.jpg", "/p-x/d.jpg", "/q/p/e.jpg", os.fsdecode(b"/p/\xe9.jpg")]
        req = Request("index", [])
        for n, uri in enumerate(paths):
            doc = Document.from_path(uri)
            doc.size = doc.mtime_ns = n
            req.docs.append(doc)
            req.staged.doc_ids.append(doc.id)
        ws.commit(req)
        under = sorted(uri for _, uri in ws.store.docs_under(["/p"]))
        assert under == sorted(["/p/a.jpg", "/p/sub/b.jpg", os.fsdecode(b"/p/\xe9.jpg")])
        assert [uri for _, uri in ws.store.docs_under(["/p/a.jpg"])] == ["/p/a.jpg"]
        assert len(list(ws.store.docs_under(["/"]))) == len(paths)
        many = [f"/p/file-{i}.jpg" for i in range(3000)] + ["/p2", "/p"]  # `index dir/*.jpg`: a root a file
        assert len(ws.store.docs_under(many)) == 4  # /p (3) and /p2 (1); the 3,000 roots add none
        plan = ws.store._db.reader.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM docs WHERE uri >= ? AND uri < ?", (b"/p/", b"/p0")
        ).fetchall()
        assert any("USING INDEX" in str(row[-1]) or "USING COVERING INDEX" in str(row[-1]) for row in plan)


def test_a_no_op_reindex_never_loads_the_docs_table(tmp_path, monkeypatch):
    import lookalike
    from lookalike import IndexRequest, Options

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.png").write_bytes(b"not decoded")  # planning only: nothing is read
    tiny = Path(__file__).parent / "fixtures" / "tiny"
    options = Options(workspace=tmp_path / "ws", index_flow=tiny / "index.yml", query_flow=tiny / "query.yml")
    request = IndexRequest((str(folder),))
    with lookalike.open(options) as library:
        first = library.indexer.plan(request)
        assert len(first.todo) == 30
        store = library.workspace.store
        req = Request("index", [])
        for f in first.todo[:20]:
            doc = Document.from_path(f.path)
            doc.size, doc.mtime_ns = f.size, f.mtime_ns
            req.docs.append(doc)
            req.staged.doc_ids.append(doc.id)
        library.workspace.commit(req)
        (folder / "0.png").unlink()
        monkeypatch.setattr(type(store), "iter_docs", lambda self: pytest.fail("read every document"))
        monkeypatch.setattr(type(store), "docs_by_uri", lambda self: pytest.fail("read every document"))
        again = library.indexer.plan(request)
        assert again.unchanged == 19 and len(again.todo) == 10 and len(again.removed) == 1
        assert library.remove([folder / "sub-folder-that-is-not-there", folder / "1.png"]) == 1
        started = time.perf_counter()
        assert library.indexer.plan(request).unchanged == 18
        assert time.perf_counter() - started < 10


def test_a_bad_index_budget_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(tmp_path), "-w", str(tmp_path / "ws"), "--index-memory", "lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: --index-memory='lots' is not a size such as 2GB or 512MB"
    assert not (tmp_path / "ws").exists()  # refused before anything was opened
