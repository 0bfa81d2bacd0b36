"""Pods from container images (`uses: docker://IMAGE`), with a stand-in engine: no container engine
runs on these machines. The stand-in records its arguments and, for `run`, starts what the image
would run (`lookalike executor serve ...`) as a local process on the mapped port; `stop` ends it.
Everything else is real: the flow, the service, the HTTP hops, the workspace."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike
from lookalike import Library, Options, SearchRequest
from lookalike.errors import ClusterError, ConfigError

REPO = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny"
FLIPPER = REPO / "examples" / "flower-search" / "customized_executors.py"

# The engine's "images": what each one's entrypoint runs, as `lookalike executor serve` arguments.
IMAGES = {
    "lookalike/flipper:test": ["ImageFlipper", "--py-modules", str(FLIPPER)],
    "lookalike/never-ready:test": None,  # a container that starts but never serves
}

STAND_IN = r'''#!{python}
"""A container engine stand-in: records its arguments; `run` starts the image's command locally."""
import json, os, signal, subprocess, sys, time

state = os.environ["STAND_IN_STATE"]
argv = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps(argv) + "\n")
if argv[0] == "run":
    args, env, name, port, image = argv[1:], dict(os.environ), None, None, None
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-d", "--rm"):
            i += 1
        elif a == "--":
            image = args[i + 1]
            break
        elif a in ("--name", "--label", "-p", "-e"):
            value = args[i + 1]
            if a == "--name":
                name = value
            elif a == "-p":
                port = value.split(":")[1]  # 127.0.0.1:HOSTPORT:8000: serve on the host port
            elif a == "-e":
                key, _, val = value.partition("=")
                env[key] = val
            i += 2
        else:
            image = a
            break
    command = json.loads(os.environ["STAND_IN_IMAGES"])[image]
    if command is None:
        cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
    else:
        lookalike = os.path.join(os.path.dirname(sys.executable), "lookalike")
        cmd = [lookalike, "executor", "serve", *command, "--host", "127.0.0.1", "--port", port]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    with open(os.path.join(state, name + ".pid"), "w") as f:
        f.write(str(proc.pid))
    print("c0ffee" + name)
elif argv[0] == "inspect":
    pid_file = os.path.join(state, argv[-1] + ".pid")
    alive = os.path.exists(pid_file)
    if alive:
        try:
            os.kill(int(open(pid_file).read()), 0)
        except ProcessLookupError:
            alive = False
    print("running" if alive else "exited")
elif argv[0] == "rm":
    print(argv[-1])
elif argv[0] == "stop":
    pid_file = os.path.join(state, argv[-1] + ".pid")
    if not os.path.exists(pid_file):
        sys.exit("Error: no such container: " + argv[-1])
    pid = int(open(pid_file).read())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    os.unlink(pid_file)
    print(argv[-1])
elif argv[0] == "logs":
    print("stand-in: nothing logged")
else:
    sys.exit(125)
'''


@pytest.fixture
def engine_stand_in(tmp_path, monkeypatch) -> Path:
    """The stand-in as LOOKALIKE_CONTAINER_ENGINE; its state folder (calls.jsonl, NAME.pid)."""
    state = tmp_path / "engine-state"
    state.mkdir()
    exe = tmp_path / "stand-in-engine"
    exe.write_text(STAND_IN.replace("{python}", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("LOOKALIKE_CONTAINER_ENGINE", str(exe))
    monkeypatch.setenv("STAND_IN_STATE", str(state))
    monkeypatch.setenv("STAND_IN_IMAGES", json.dumps(IMAGES))
    return state


def _calls(state: Path) -> list[list[str]]:
    path = state / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _flows(tmp_path: Path, flipper: str) -> tuple[Path, Path]:
    (tmp_path / "tiny_encoder.py").write_text((TINY / "tiny_encoder.py").read_text())
    index = tmp_path / "index.yml"
    index.write_text(
        "pods:\n"
        "  loader:        {uses: ImageReader}\n"
        "  normalizer:    {uses: ImageNormalizer}\n"
        f"  flipper:       {flipper}\n"
        "  encoder:       {uses: TinyEncoder, py_modules: tiny_encoder.py}\n"
        "  chunk_indexer: {uses: VectorIndexer, shards: 2}\n"
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}\n"
    )
    query = tmp_path / "query.yml"
    query.write_text((TINY / "query.yml").read_text())
    return index, query


def _open(workspace: Path, index_flow: Path, query_flow: Path | None = None) -> Library:
    """A library over ``workspace`` with these flows; the container engine comes from the environment."""
    return lookalike.open(Options.from_env(workspace=workspace, index_flow=index_flow, query_flow=query_flow))


def _search_ids(library: Library, pictures: Path) -> list[list[str]]:
    """The ranked doc ids of each picture searched for, in one batch."""
    reports = library.search_many([SearchRequest(image=str(p)) for p in sorted(pictures.glob("*.png"))])
    return [[hit.doc_id for hit in report.hits] for report in reports]


@pytest.fixture
def pictures(tmp_path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        arr = np.zeros((32, 32, 3), np.uint8)
        arr[:, :16], arr[:, 16:] = rng.integers(0, 256, 3), rng.integers(0, 256, 3)  # two halves: flips show
        Image.fromarray(arr).save(folder / f"p{i}.png")
    return folder


@pytest.mark.slow  # starts executor services as processes
def test_a_container_pod_runs_its_image_with_with_and_env_and_is_stopped_at_close(engine_stand_in, tmp_path, pictures):
    (tmp_path / "local").mkdir()
    local_index, query = _flows(tmp_path / "local", f"{{uses: ImageFlipper, py_modules: {FLIPPER}}}")
    boxed_index, _ = _flows(
        tmp_path,
        "{uses: docker://lookalike/flipper:test, with: {horizontal: true}, env: {FLIP_NOTE: mirrored}, "
        "timeout_ready: 60}",
    )
    with _open(tmp_path / "ws-local", local_index, query) as library:
        library.index([pictures])
        expected = _search_ids(library, pictures)
    with _open(tmp_path / "ws", boxed_index, query) as library:
        (run,) = [c for c in _calls(engine_stand_in) if c[0] == "run"]
        pid = int(next(engine_stand_in.glob("*.pid")).read_text())
        summary = library.index([pictures])
        assert summary.indexed == 8 and library.workspace.store.count_chunks() == 16  # flipped in the container
        got = _search_ids(library, pictures)
        assert got == expected
        assert library.flows.flow("index").pods["flipper"].uses == "docker://lookalike/flipper:test"
    # What the engine was asked: the image, detached and removed on stop, the port mapped on loopback,
    # the pod's env and its with: passed in.
    assert run[:2] == ["run", "-d"] and run[-2:] == ["--", "lookalike/flipper:test"]
    port_map = run[run.index("-p") + 1]
    assert port_map.startswith("127.0.0.1:") and port_map.endswith(":8000")
    envs = [run[i + 1] for i, a in enumerate(run) if a == "-e"]
    assert "FLIP_NOTE=mirrored" in envs and 'LOOKALIKE_EXECUTOR_WITH={"horizontal": true}' in envs
    name = run[run.index("--name") + 1]
    assert _calls(engine_stand_in)[-2:] == [["stop", "-t", "10", name], ["rm", "-f", name]]  # at close
    assert not _alive(pid) and not list(engine_stand_in.glob("*.pid"))


@pytest.mark.slow  # starts executor services as processes
def test_a_container_that_never_gets_ready_is_one_clear_error_and_is_stopped(engine_stand_in, tmp_path):
    index, query = _flows(tmp_path, "{uses: docker://lookalike/never-ready:test, timeout_ready: 1.5}")
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        _open(tmp_path / "ws", index, query)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert message.startswith("pod flipper: the container from lookalike/never-ready:test was not ready within 1.5s")
    assert "timeout_ready" in message and "\n" not in message
    (run,) = [c for c in _calls(engine_stand_in) if c[0] == "run"]
    name = run[run.index("--name") + 1]
    assert _calls(engine_stand_in)[-2:] == [["stop", "-t", "10", name], ["rm", "-f", name]]
    assert not list(engine_stand_in.glob("*.pid"))


@pytest.mark.slow  # starts executor services as processes
def test_a_flow_that_fails_after_its_container_started_stops_it(engine_stand_in, tmp_path):
    index, _ = _flows(tmp_path, "{uses: docker://lookalike/flipper:test}")
    # The built-in query flow encodes with EfficientNet, the index flow with the tiny encoder.
    with pytest.raises(ConfigError, match="the query flow encodes with"):
        _open(tmp_path / "ws", index)
    calls = [c[0] for c in _calls(engine_stand_in)]
    assert calls[0] == "run" and calls[-2:] == ["stop", "rm"] and set(calls[1:-2]) <= {"inspect"}
    assert not list(engine_stand_in.glob("*.pid"))


@pytest.mark.slow  # runs the lookalike command in a subprocess
def test_flow_show_describes_a_container_pod_without_starting_it(engine_stand_in, tmp_path):
    import subprocess

    from conftest import lookalike_cmd

    index, _ = _flows(tmp_path, "{uses: docker://lookalike/flipper:test}")
    done = subprocess.run([*lookalike_cmd(), "flow", "show", str(index)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "docker://lookalike/flipper:test" in done.stdout
    assert _calls(engine_stand_in) == []


@pytest.mark.slow  # starts a process as the container
def test_a_container_that_exits_fails_at_once_with_its_output(engine_stand_in, tmp_path, monkeypatch):
    images = {**IMAGES, "lookalike/crashes:test": ["NoSuchExecutor"]}  # serve fails at start
    monkeypatch.setenv("STAND_IN_IMAGES", json.dumps(images))
    index, query = _flows(tmp_path, "{uses: docker://lookalike/crashes:test, timeout_ready: 60}")
    started = time.monotonic()
    with pytest.raises(ClusterError, match="pod flipper: the container from lookalike/crashes:test exited before"):
        _open(tmp_path / "ws", index, query)
    assert time.monotonic() - started < 30  # not the whole timeout_ready
    assert _calls(engine_stand_in)[-1][:2] == ["rm", "-f"]


def test_no_container_engine_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_CONTAINER_ENGINE", "no-such-engine-here")
    index, query = _flows(tmp_path, "{uses: docker://lookalike/flipper:test}")
    with pytest.raises(ConfigError, match="pod flipper: LOOKALIKE_CONTAINER_ENGINE='no-such-engine-here' is not an"):
        _open(tmp_path / "ws", index, query)


def test_the_example_flows_and_the_dockerfile_agree_with_the_container_contract():
    import re

    from lookalike.executors.containers import CONTAINER_PORT
    from lookalike.flow.config import load_flow
    from lookalike.flow.graph import Flow

    example = REPO / "examples" / "encoder-container"
    for name in ("index.yml", "query.yml", "index-services.yml", "query-services.yml"):
        load_flow(example / name)  # valid YAML and keys, whatever runs them
    for name in ("index.yml", "query.yml"):
        flow = Flow(load_flow(example / name), start_containers=False)
        assert flow.pods["encoder"].uses == "docker://lookalike-encoder"
    dockerfile = (REPO / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))
    assert entrypoint[:3] == ["lookalike", "executor", "serve"]
    assert entrypoint[entrypoint.index("--port") + 1] == str(CONTAINER_PORT)
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"  # reachable through the port mapping
