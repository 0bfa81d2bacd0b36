"""Executors as services: the wire format, `lookalike executor serve` in real separate processes on
loopback, flows whose pods call them (same top-10 as in-process), a service killed mid-index, and
the handshake's checks."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from lookalike.document import Chunk, Document, Match, Request, Result
from lookalike.errors import BadInput
from lookalike.wire import decode, encode

from conftest import copy_photos, free_port, lookalike_cmd, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny"


# --- the wire format -------------------------------------------------------------------------------


def test_a_request_crosses_the_wire_whole_with_arrays_as_raw_bytes():
    doc = Document(id="d1", uri="/p/a.jpg", size=3, tags=[("tabby", 0.5)], blob=b"\x00\xffraw")
    tensor = np.random.default_rng(0).standard_normal((3, 224, 224)).astype(np.float32)
    chunk = Chunk(kind="mirror", bbox=(1, 2, 3, 4), tensor=tensor, embedding=np.ones(8, np.float16))
    chunk.matches = [Match(7, "d9", 0.25)]
    doc.chunks = [chunk]
    doc.results = [Result("d9", 0.5, 7, "/p/b.jpg", 10, 20, [("lynx", 0.1)], "whole", None)]
    doc.query_info = {"faces": [(0, 0, 5, 5)]}
    request = Request("search", [doc], parameters={"top_k": 3})
    request.staged.vectors[("d1", 1)] = [chunk]
    frame = encode(request)
    # The tensor travels once, as its bytes (the staged chunk is the same object), the rest is small.
    assert tensor.nbytes < len(frame) < tensor.nbytes + 4096
    back = decode(frame)
    got = back.docs[0]
    assert (back.kind, back.id, back.parameters) == ("search", request.id, {"top_k": 3})
    assert (got.uri, got.blob, got.tags, got.query_info) == (
        "/p/a.jpg",
        b"\x00\xffraw",
        [("tabby", 0.5)],
        doc.query_info,
    )
    np.testing.assert_array_equal(got.chunks[0].tensor, tensor)
    assert got.chunks[0].embedding.dtype == np.float16 and got.chunks[0].bbox == (1, 2, 3, 4)
    assert got.chunks[0].matches == [Match(7, "d9", 0.25)] and got.chunks[0].uid == chunk.uid
    assert got.results == doc.results
    assert list(back.staged.vectors) == [("d1", 1)] and back.staged.vectors[("d1", 1)][0].uid == chunk.uid


@pytest.mark.parametrize(
    "frame",
    [b"", b"GIF89a....", b"LKW2\x00\x00\x00\x02{}", b'LKW2\x00\x00\x00\x0e{"buffers":[]}xx'],
)
def test_anything_else_is_a_bad_frame(frame):
    with pytest.raises(BadInput, match="request frame"):
        decode(frame)


def _frame(header: object, buffers: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return b"LKW2" + len(head).to_bytes(4, "big") + head + buffers


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (_frame("just a string"), "not an object"),
        (_frame({"buffers": [-4]}, b""), "whole numbers"),
        (b"LKW2\x00\x00\x00\x11" + b'{"buffers":[1e9]}', "whole numbers"),
        (b"LKW2\x00\x00\x00\x17" + b'{"buffers":[Infinity]}x', "Infinity"),
        (_frame({"$t": "Request", "kind": "index", "docs": {"$buf": 3}, "buffers": []}), "no buffer 3"),
        (_frame("[" * 100_000), "broken header"),
    ],
)
def test_a_hostile_frame_is_a_bad_frame_not_a_crash(frame, why):
    with pytest.raises(BadInput, match=why):
        decode(frame)


def test_an_array_sent_once_is_decoded_once_and_odd_arrays_cross_intact():
    shared = np.arange(12, dtype=">f4").reshape(3, 4)  # big-endian: sent in native order
    doc = Document(id="d", chunks=[Chunk(tensor=shared, embedding=np.zeros(0, np.float32))])
    request = Request("index", [doc])
    request.parameters["again"] = shared
    back = decode(encode(request))
    np.testing.assert_array_equal(back.docs[0].chunks[0].tensor, shared)
    assert back.parameters["again"] is back.docs[0].chunks[0].tensor  # one buffer, one array
    assert back.docs[0].chunks[0].embedding.shape == (0,)


def test_a_frame_cannot_make_other_objects():
    frame = encode(Request("index", []))
    head_len = int.from_bytes(frame[4:8], "big")
    header = json.loads(frame[8 : 8 + head_len])
    header["$t"] = "Popen"
    head = json.dumps(header).encode()
    with pytest.raises(BadInput, match="'Popen' in a request frame"):
        decode(b"LKW2" + len(head).to_bytes(4, "big") + head)


# --- services in separate processes ----------------------------------------------------------------


class Service:
    """`lookalike executor serve ...` on a free loopback port, until stopped."""

    def __init__(self, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*lookalike_cmd(), "executor", "serve", *args, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until_ready(f"http://{self.address}", self.proc, timeout=120)

    def stop(self) -> bool:
        """SIGTERM; True if it shut down gracefully (uvicorn re-raises the signal once it has)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        return code in (0, 128 + signal.SIGTERM, -signal.SIGTERM) and "Traceback" not in err


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*lookalike_cmd(), *args], capture_output=True, text=True, timeout=timeout)


def _with_remote(flow: Path, pod: str, address: str, dest: Path) -> Path:
    """``flow`` with pod ``pod`` replaced by the service at ``address`` (its other pods unchanged)."""
    import yaml

    data = yaml.safe_load(flow.read_text())
    host, port = address.split(":")
    data["pods"][pod] = {"host": host, "port": int(port)}
    for spec in data["pods"].values():  # py_modules stay relative to the original flow's folder
        if isinstance(spec, dict) and "py_modules" in spec:
            spec["py_modules"] = [str((flow.parent / m).resolve()) for m in np.atleast_1d(spec["py_modules"])]
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _top10(ws: Path, queries: list[Path]) -> list[list[str]]:
    done = _run("search", "-w", str(ws), "-k", "10", "--json", *map(str, queries))
    assert done.returncode == 0, done.stderr
    return [[r["path"] for r in q["results"]] for q in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def album(tmp_path_factory, tuxpaint) -> Path:
    root = tmp_path_factory.mktemp("album")
    copy_photos(tuxpaint, root, 3, sorted(set(tuxpaint.labels.values()))[:12])
    return root


@pytest.mark.slow
def test_a_remote_encoder_indexes_and_finds_what_the_in_process_one_does(album, tmp_path, model_dir):
    from lookalike.flow.graph import builtin_flow_path

    queries = sorted(album.rglob("*.png"))[::5]
    assert _run("index", str(album), "-w", str(tmp_path / "local")).returncode == 0
    service = Service("ImageEncoder")
    try:
        index = _with_remote(builtin_flow_path("index"), "encoder", service.address, tmp_path / "index.yml")
        query = _with_remote(builtin_flow_path("query"), "encoder", service.address, tmp_path / "query.yml")
        done = _run(
            "index", str(album), "-w", str(tmp_path / "remote"), "--flow", str(index), "--query-flow", str(query)
        )
        assert done.returncode == 0, done.stderr
        assert _top10(tmp_path / "remote", queries) == _top10(tmp_path / "local", queries)
        shown = _run("flow", "show", str(index)).stdout
        assert f"ImageEncoder @ {service.address}" in shown
    finally:
        assert service.stop()  # SIGTERM: a graceful stop


@pytest.mark.slow
def test_a_remote_custom_executor_from_py_modules_gives_the_same_results(album, tmp_path, model_dir):
    example = REPO / "examples" / "flower-search"
    queries = sorted(album.rglob("*.png"))[::7]
    args = ("--query-flow", str(example / "query.yml"))
    assert (
        _run("index", str(album), "-w", str(tmp_path / "local"), "--flow", str(example / "index.yml"), *args).returncode
        == 0
    )
    service = Service(
        "ImageFlipper", "--py-modules", str(example / "customized_executors.py"), "--with", '{"horizontal": true}'
    )
    try:
        index = _with_remote(example / "index.yml", "flipper", service.address, tmp_path / "index.yml")
        done = _run("index", str(album), "-w", str(tmp_path / "remote"), "--flow", str(index), *args)
        assert done.returncode == 0, done.stderr
        info = json.loads(_run("info", "-w", str(tmp_path / "remote"), "--json").stdout)
        assert info["chunks"] == 2 * info["docs"]  # each image and its mirror
        assert _top10(tmp_path / "remote", queries) == _top10(tmp_path / "local", queries)
    finally:
        service.stop()


@pytest.mark.slow
def test_a_service_killed_mid_index_is_one_line_naming_the_pod_and_the_rerun_completes(tuxpaint, tmp_path, model_dir):
    from lookalike.flow.graph import builtin_flow_path

    album = tmp_path / "album"
    n = len(copy_photos(tuxpaint, album, 6))
    service = Service("ImageEncoder")
    index = _with_remote(builtin_flow_path("index"), "encoder", service.address, tmp_path / "index.yml")
    query = _with_remote(builtin_flow_path("query"), "encoder", service.address, tmp_path / "query.yml")
    ws = tmp_path / "ws"
    args = [str(album), "-w", str(ws), "--flow", str(index), "--query-flow", str(query), "--batch-size", "4"]
    proc = subprocess.Popen(
        [*lookalike_cmd(), "index", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    committed = 0
    deadline = time.monotonic() + 300
    while committed < 12:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
        try:
            with sqlite3.connect(f"file:{ws / 'docs.sqlite'}?mode=ro", uri=True, timeout=5) as conn:
                committed = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
        except sqlite3.Error:
            pass
    service.proc.kill()  # SIGKILL, mid-index
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 8, err
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith(f"error: indexing stopped: pod encoder (http://{service.address}) is unreachable: "), err
    assert "running `lookalike index` again finishes the job" in line
    info = json.loads(_run("info", "-w", str(ws), "--json").stdout)
    assert info["consistent"] and info["docs"] >= committed
    again = Service("ImageEncoder", port=service.port)  # the service is back, on its port
    try:
        done = _run("index", *args[:-2], "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["docs"] == n
    finally:
        again.stop()
    info = json.loads(_run("info", "-w", str(ws), "--json").stdout)
    assert info["consistent"] and info["docs"] == n


@pytest.mark.slow
def test_a_remote_encoder_other_than_the_workspace_s_is_refused_like_a_local_one(tmp_path, model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(photos / "red.png")
    for name in ("index.yml", "query.yml", "tiny_encoder.py"):
        (tmp_path / name).write_text((TINY / name).read_text())
    ws = str(tmp_path / "ws")
    flows = ("--flow", str(tmp_path / "index.yml"), "--query-flow", str(tmp_path / "query.yml"))
    assert _run("index", str(photos), "-w", ws, *flows).returncode == 0
    service = Service("ImageEncoder")
    try:
        query = tmp_path / "remote-query.yml"
        query.write_text((TINY / "query.yml").read_text().replace(
            "{uses: TinyEncoder, py_modules: tiny_encoder.py}", f"{{host: 127.0.0.1, port: {service.port}}}"
        ))  # fmt: skip
        done = _run("search", str(photos / "red.png"), "-w", ws, "--flow", str(query))
        assert done.returncode == 4, done.stderr
        assert "was built with encoder tiny-encoder" in done.stderr and "efficientnet-lite0" in done.stderr
    finally:
        service.stop()


@pytest.mark.slow  # runs the lookalike command in a subprocess
def test_executors_that_own_workspace_state_are_not_served():
    done = _run("executor", "serve", "VectorIndexer", "--port", str(free_port()), timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: VectorIndexer owns a workspace's state (vector shards or the doc store); it runs in the "
        "flow's process, not as a service"
    )


def test_a_pod_s_service_address_is_checked_with_the_yaml_line(tmp_path):
    from lookalike.errors import ClusterError, ConfigError
    from lookalike.flow.graph import Flow, load_flow

    bad = tmp_path / "bad.yml"
    bad.write_text("pods:\n  loader: {uses: ImageReader}\n  encoder: {host: 127.0.0.1}\n")
    with pytest.raises(ConfigError, match=r"bad.yml:3: pods.encoder: host needs a port"):
        Flow(load_flow(bad))
    bad.write_text("pods:\n  loader: {uses: ImageReader}\n  encoder: {hosts: [127.0.0.1]}\n")
    with pytest.raises(ConfigError, match=r"'127.0.0.1' is not HOST:PORT"):
        Flow(load_flow(bad))
    gone = tmp_path / "gone.yml"
    gone.write_text(f"pods:\n  loader: {{uses: ImageReader}}\n  encoder: {{host: 127.0.0.1, port: {free_port()}}}\n")
    with pytest.raises(ClusterError, match=r"pod encoder: no executor service at http://127.0.0.1:\d+ \(.*refused"):
        Flow(load_flow(gone))
