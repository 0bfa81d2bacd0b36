"""The flows on a real two-node Ray cluster, on loopback: placement, parity with the local runtime,
serving, and a worker node killed mid-index.

The cluster is two `ray start` processes (a head and a second node, one CPU each, the dashboard
off, usage stats disabled) that this module starts and stops by their process groups; it never
touches another Ray on the machine. Ray advertises the machine's own address whatever it is told,
so these tests only run inside a network namespace that has nothing but loopback (`make test` runs
them with `unshare -n`); elsewhere they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.raycluster import Cluster, free_port, only_loopback

from conftest import copy_photos, lookalike_cmd, wait_until_ready

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(
        not only_loopback(),
        reason="Ray tests bind only to loopback: run them in a loopback-only network namespace "
        "(unshare -n sh -c 'ip link set lo up && exec python -m pytest -m ray'), as `make test` does",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pytest.importorskip("ray")  # imported here, not at collection: the other tiers do not pay for it
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def album(tmp_path_factory, tuxpaint) -> Path:
    """Real photos: up to 4 of each of the 16 first tuxpaint classes (50)."""
    root = tmp_path_factory.mktemp("album")
    classes = sorted(set(tuxpaint.labels.values()))[:16]
    copy_photos(tuxpaint, root, 4, classes)
    return root


def _flows(tmp: Path, *, parallel: int, shards: int) -> tuple[Path, Path]:
    """The built-in flows with the encoder replicated and the vectors sharded."""
    index = tmp / f"index-p{parallel}-s{shards}.yml"
    index.write_text(
        "prefetch: 4\n"
        "pods:\n"
        f"  loader:        {{uses: ImageReader, parallel: {parallel}}}\n"
        f"  normalizer:    {{uses: ImageNormalizer, parallel: {parallel}}}\n"
        f"  encoder:       {{uses: ImageEncoder, parallel: {parallel}, resources: {{num_cpus: 0.25}}}}\n"
        f"  chunk_indexer: {{uses: VectorIndexer, shards: {shards}}}\n"
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}\n"
    )
    query = tmp / f"query-p{parallel}-s{shards}.yml"
    query.write_text(
        "pods:\n"
        "  loader:        {uses: ImageReader}\n"
        "  normalizer:    {uses: ImageNormalizer}\n"
        f"  encoder:       {{uses: ImageEncoder, parallel: {parallel}}}\n"
        f"  chunk_indexer: {{uses: VectorIndexer, shards: {shards}, polling: all}}\n"
        "  ranker:        {uses: BestChunkRanker}\n"
        "  doc_indexer:   {uses: DocIndexer}\n"
    )
    return index, query


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}
    return subprocess.run([*lookalike_cmd(), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _top10(ws: Path, queries: list[Path], *runtime: str) -> list[list[str]]:
    done = _cli("search", "-w", str(ws), "-k", "10", "--json", *runtime, *map(str, queries))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    return [[r["path"] for r in q["results"]] for q in payload]


@pytest.mark.parametrize(("parallel", "shards"), [(2, 1), (1, 2)])
def test_the_same_flow_on_ray_indexes_and_finds_what_the_local_runtime_does(
    cluster, album, tmp_path, parallel, shards, model_dir
):
    index_flow, query_flow = _flows(tmp_path, parallel=parallel, shards=shards)
    queries = sorted(album.rglob("*.png"))[::9]
    ray_args = ("--runtime", "ray", "--ray-address", cluster.address)
    local_ws, ray_ws = tmp_path / "local", tmp_path / "ray"
    for ws, runtime in ((local_ws, ()), (ray_ws, ray_args)):
        done = _cli(
            "index", str(album), "-w", str(ws), "--flow", str(index_flow), "--query-flow", str(query_flow), *runtime
        )
        assert done.returncode == 0, done.stderr
        assert f"{len(list(album.rglob('*.png')))} indexed" in done.stdout
    local = _top10(local_ws, queries)
    assert all(len(top) == 10 for top in local)
    assert _top10(ray_ws, queries, *ray_args) == local  # indexed on Ray, searched on Ray
    assert _top10(ray_ws, queries) == local  # indexed on Ray, searched here
    assert _top10(local_ws, queries, *ray_args) == local  # indexed here, searched on Ray
    info = _cli("info", "-w", str(ray_ws), "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["consistent"], info.stdout + info.stderr


def test_the_pods_are_actors_spread_over_both_nodes(cluster, album, tmp_path, model_dir):
    import ray

    import lookalike
    from lookalike import Options, SearchRequest
    from lookalike.flow.ray_runtime import RayRuntime, connect

    index_flow, query_flow = _flows(tmp_path, parallel=2, shards=2)
    connect(cluster.address)
    try:
        options = Options(
            workspace=tmp_path / "ws",
            index_flow=index_flow,
            query_flow=query_flow,
            runtime="ray",
            ray_address=cluster.address,
        )
        with lookalike.open(options) as library:
            library.index([album])
            library.search(SearchRequest(image=str(sorted(album.rglob("*.png"))[0]), top_k=3))
            runtime = library.flows.running("query")
            assert isinstance(runtime, RayRuntime)
            placement = runtime.placement()
            # Every replica and shard is its own actor, and they sit on both nodes.
            assert set(placement) == {
                "loader/s0/r0", "normalizer/s0/r0", "encoder/s0/r0", "encoder/s0/r1",
                "chunk_indexer/s0/r0", "chunk_indexer/s1/r0", "ranker/s0/r0", "doc_indexer/s0/r0",
            }  # fmt: skip
            assert set(placement.values()) == set(cluster.alive_nodes())
            # The pods that open the workspace (SQLite's WAL is one host's) sit on this node.
            here = ray.get_runtime_context().get_node_id()
            assert {placement[p] for p in ("chunk_indexer/s0/r0", "chunk_indexer/s1/r0", "doc_indexer/s0/r0")} == {here}
            # Each shard actor holds its own part of the index, and says so.
            described = runtime.ask("chunk_indexer", "describe")
            assert [d["shard"] for d in described] == [0, 1]
            assert sum(d["vectors"] for d in described) == len(list(album.rglob("*.png")))
    finally:
        ray.shutdown()


def test_serve_on_ray_keeps_http_here_and_the_pods_on_the_cluster(cluster, album, tmp_path, model_dir):
    ws = tmp_path / "ws"
    assert _cli("index", str(album), "-w", str(ws)).returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [
            *lookalike_cmd(),
            "serve",
            "-w",
            str(ws),
            "--port",
            str(port),
            "--runtime",
            "ray",
            "--ray-address",
            cluster.address,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc, timeout=300)
        query = sorted(album.rglob("*.png"))[5]
        r = httpx.post(f"{base}/api/search", files={"file": query.read_bytes()}, data={"top_k": "3"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["matches"][0]["uri"] == str(query)
        stats = httpx.get(f"{base}/api/stats", timeout=60).json()
        assert stats["runtime"]["kind"] == "ray"
        nodes = set(stats["runtime"]["pods"].values())
        assert nodes == set(cluster.alive_nodes())  # the query pods sit on both nodes
        assert [x["shard"] for x in stats["index"]] == [0, 1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_a_worker_node_killed_mid_index_loses_nothing_and_the_rerun_completes(cluster, tuxpaint, tmp_path, model_dir):
    import sqlite3

    album = tmp_path / "album"
    n = len(copy_photos(tuxpaint, album, 8))
    ws = tmp_path / "ws"
    flow, _ = _flows(tmp_path, parallel=2, shards=2)
    cmd = [*lookalike_cmd(), "index", str(album), "-w", str(ws), "--flow", str(flow), "--batch-size", "4"]
    cmd += ["--runtime", "ray", "--ray-address", cluster.address]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
    try:
        deadline = time.monotonic() + 300
        committed = 0
        while committed < 16:  # mid-index: some requests committed, most still to come
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nothing was committed within 300 s"
            time.sleep(0.2)
            try:
                with sqlite3.connect(f"file:{ws / 'docs.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
                    committed = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
            except sqlite3.Error:
                committed = 0
        cluster.kill_worker()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if cluster.worker is None:
            cluster.add_worker()  # for whatever runs after
    # Either Ray brought the lost actors back on the head and the run finished, or it stopped with
    # an error that names the pod. Nothing committed is lost either way.
    assert proc.returncode in (0, 8), err
    if proc.returncode == 8:
        assert "pod " in err and "died" in err and "running `lookalike index` again" in err, err
    info = _cli("info", "-w", str(ws), "--json")
    assert json.loads(info.stdout)["consistent"], info.stdout + info.stderr
    assert json.loads(info.stdout)["docs"] >= committed
    again = _cli(
        "index",
        str(album),
        "-w",
        str(ws),
        "--flow",
        str(flow),
        "--json",
        "--runtime",
        "ray",
        "--ray-address",
        cluster.address,
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["docs"] == n and summary["skipped_total"] == 0
    info = json.loads(_cli("info", "-w", str(ws), "--json").stdout)
    assert info["consistent"] and info["docs"] == n


def test_a_pod_that_keeps_dying_stops_the_run_naming_it_and_keeps_what_was_committed(cluster, tmp_path):
    """Ray restarts a dead actor and retries its request; a pod that dies every time is given up on,
    and the run stops with one line that names it (fast: the tiny encoder, no model)."""
    tiny = Path(__file__).parent / "fixtures" / "tiny"
    for name in ("tiny_encoder.py", "query.yml"):
        (tmp_path / name).write_text((tiny / name).read_text())
    (tmp_path / "crasher.py").write_text(
        "import os\n"
        "from lookalike.executors.base import Executor, requests\n\n"
        "class Crasher(Executor):\n"
        "    @requests(on='index')\n"
        "    def crash(self, docs):\n"
        "        if any('p3' in (d.uri or '') for d in docs):\n"
        "            os._exit(1)  # the actor's process dies, as on a lost node\n"
    )
    flow = tmp_path / "index.yml"
    flow.write_text(
        "prefetch: 1\n"
        "pods:\n"
        "  loader:        {uses: ImageReader}\n"
        "  normalizer:    {uses: ImageNormalizer}\n"
        "  crasher:       {uses: Crasher, py_modules: crasher.py}\n"
        "  encoder:       {uses: TinyEncoder, py_modules: tiny_encoder.py}\n"
        "  chunk_indexer: {uses: VectorIndexer}\n"
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}\n"
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 255 - 40 * i, 90)).save(photos / f"p{i}.png")
    args = ["-w", str(tmp_path / "ws"), "--flow", str(flow), "--query-flow", str(tmp_path / "query.yml")]
    args += ["--batch-size", "1", "--runtime", "ray"]
    done = _cli("index", str(photos), *args, "--ray-address", cluster.address)
    assert done.returncode == 8, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: indexing stopped: pod crasher/s0/r0 (Crasher) died: "), line
    assert line.endswith("3 images were committed, and running `lookalike index` again finishes the job"), line
    info = json.loads(_cli("info", "-w", str(tmp_path / "ws"), "--json").stdout)
    assert info["consistent"] and info["docs"] == 3  # p0..p2, committed before p3 killed the pod


def test_a_pod_that_cannot_open_on_the_cluster_is_one_clear_error(cluster, tmp_path):
    (tmp_path / "broken.py").write_text(
        "from lookalike.executors.base import Executor\n\n"
        "class Broken(Executor):\n"
        "    def open(self):\n"
        "        raise RuntimeError('no licence for this node')\n"
    )
    flow = tmp_path / "index.yml"
    flow.write_text(
        "pods:\n"
        "  loader:        {uses: ImageReader}\n"
        "  broken:        {uses: Broken, py_modules: broken.py}\n"
        "  normalizer:    {uses: ImageNormalizer}\n"
        "  encoder:       {uses: ImageEncoder}\n"
        "  chunk_indexer: {uses: VectorIndexer}\n"
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}\n"
    )
    (tmp_path / "photos").mkdir()
    done = _cli(
        "index",
        str(tmp_path / "photos"),
        "-w",
        str(tmp_path / "ws"),
        "--flow",
        str(flow),
        "--runtime",
        "ray",
        "--ray-address",
        cluster.address,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: pod broken (Broken) failed to open: RuntimeError: no licence for this node"
    ]


def test_an_unreachable_cluster_is_one_clear_error(tmp_path):
    (tmp_path / "photos").mkdir()
    done = _cli(
        "index",
        str(tmp_path / "photos"),
        "-w",
        str(tmp_path / "ws"),
        "--ray-address",
        f"127.0.0.1:{free_port()}",
        timeout=180,
    )
    assert done.returncode == 8, done.stderr
    assert done.stderr.startswith("error: cannot connect to the Ray cluster at 127.0.0.1:"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_faces_index_on_ray_into_their_own_space_as_they_do_here(cluster, people, tmp_path, model_dir):
    """`--faces` on the cluster: the photo branch and the face branch are actors, each vector space
    its own shard actors, and the workspace holds what a local run makes: the same people, the same
    face search."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, blob in people.items():
        if name.endswith(".jpg"):
            (photos / name).write_bytes(blob)
    ray_args = ("--runtime", "ray", "--ray-address", cluster.address)
    listed, found = [], []
    for ws, runtime in ((tmp_path / "local", ()), (tmp_path / "ray", ray_args)):
        done = _cli("index", "--faces", str(photos), "-w", str(ws), *runtime)
        assert done.returncode == 0, done.stderr
        people_json = _cli("people", "-w", str(ws), "--json")
        assert people_json.returncode == 0, people_json.stderr
        listed.append([(p["faces"], p["photos"]) for p in json.loads(people_json.stdout)["people"]])
        search = _cli("search", str(photos / "obama.jpg"), "--face", "0", "-k", "3", "-w", str(ws), "--json", *runtime)
        assert search.returncode == 0, search.stderr
        found.append([r["path"].rsplit("/", 1)[1] for r in json.loads(search.stdout)["results"]])
        info = json.loads(_cli("info", "-w", str(ws), "--json").stdout)
        assert info["consistent"] and list(info["spaces"]) == ["image", "faces"], info
    assert listed[0] == listed[1] and listed[0][0][0] >= 5  # Obama's faces make a person, both ways
    assert found[0] == found[1] and found[0][0] == "obama.jpg"


def test_regions_index_on_ray_and_box_searches_find_what_they_do_here(cluster, album, tmp_path, model_dir):
    """`--regions` on the cluster: the region chunks travel from the encoder actors to the regions
    space's shard actors, and a box search on Ray finds what it finds here."""
    ray_args = ("--runtime", "ray", "--ray-address", cluster.address)
    queries = [str(p) for p in sorted(album.rglob("*.png"))[::15]]
    found = []
    for ws, runtime in ((tmp_path / "local", ()), (tmp_path / "ray", ray_args)):
        done = _cli("index", "--regions", str(album), "-w", str(ws), *runtime)
        assert done.returncode == 0, done.stderr
        search = _cli("search", *queries, "--box", "0.2,0.2,0.8,0.8", "-k", "5", "-w", str(ws), "--json", *runtime)
        assert search.returncode == 0, search.stderr
        found.append([[(r["path"], r["region"]) for r in q["results"]] for q in json.loads(search.stdout)])
        info = json.loads(_cli("info", "-w", str(ws), "--json").stdout)
        assert info["consistent"] and list(info["spaces"]) == ["image", "regions"], info
        assert info["chunks"] == 5 * len(list(album.rglob("*.png"))), info  # a whole chunk and 4 regions each
    assert found[0] == found[1] and all(len(q) == 5 for q in found[0])
