"""The `lookalike` command, run for real in a subprocess: output, JSON and exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from lookalike.errors import BadInput, ConfigError, NotFound, StoreError

from conftest import copy_photos, lookalike_cmd, wait_until_ready

pytestmark = pytest.mark.slow


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lookalike_cmd(), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def indexed(tuxpaint, tmp_path_factory):
    """A workspace with 3 photos of each of a few classes, plus one corrupt file."""
    root = tmp_path_factory.mktemp("cli")
    photos = copy_photos(
        tuxpaint, root / "photos", per_class=3, classes=["animals/birds", "food/fruit", "space/planets"]
    )
    (root / "photos" / "broken.png").write_bytes(photos[0].read_bytes()[:500])
    done = run("index", str(root / "photos"), "-w", str(root / "ws"))
    assert done.returncode == 0, done.stderr
    return root, photos, done


def test_index_prints_a_summary_and_each_skip(indexed):
    root, photos, done = indexed
    assert f"{len(photos)} indexed, 0 updated, 0 unchanged, 0 removed, 0 moved, 1 skipped" in done.stdout
    assert "skipped: 1 truncated image" in done.stdout
    assert f"skipped {root / 'photos' / 'broken.png'}: truncated image" in done.stderr
    assert "Traceback" not in done.stderr


def test_index_again_json(indexed):
    root, photos, _ = indexed
    done = run("index", str(root / "photos"), "-w", str(root / "ws"), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["encoded"] == 0 and summary["unchanged"] == len(photos)
    assert summary["skipped"] == {"truncated image": 1} and summary["docs"] == len(photos)


def test_search_text_and_json(indexed):
    root, photos, _ = indexed
    text = run("search", str(photos[4]), "-w", str(root / "ws"), "-k", "3")
    assert text.returncode == 0, text.stderr
    first = text.stdout.splitlines()[0].split()
    assert first[:4] == ["1", "1.000", "same", str(photos[4])]
    data = json.loads(run("search", str(photos[4]), "-w", str(root / "ws"), "-k", "3", "--json").stdout)
    assert data["query"] == str(photos[4]) and len(data["results"]) == 3
    assert data["results"][0]["path"] == str(photos[4]) and data["results"][0]["tags"]
    assert data["results"][0]["match"] == "same"
    assert [r["rank"] for r in data["results"]] == [1, 2, 3]


def test_search_like_a_stored_photo_lists_the_others(indexed):
    root, photos, _ = indexed
    ws = str(root / "ws")
    plain = json.loads(run("search", str(photos[4]), "-w", ws, "-k", "4", "--json").stdout)
    for like in (str(photos[4]), plain["results"][0]["doc_id"]):  # by its path, or by its id
        done = run("search", "--like", like, "-w", ws, "-k", "3", "--json")
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        paths = [r["path"] for r in data["results"]]
        assert str(photos[4]) not in paths and len(paths) == 3  # not the photo itself
        assert paths[0] == plain["results"][1]["path"]  # the rest, in the same order
    missing = run("search", "--like", str(root / "nope.png"), "-w", ws)
    assert missing.returncode == NotFound.exit_code and "no indexed photo" in missing.stderr
    both = run("search", str(photos[4]), "--like", str(photos[4]), "-w", ws, env={"COLUMNS": "200"})
    assert both.returncode == 2 and "not IMAGES and --like" in both.stderr


def test_reads_that_need_no_model_leave_an_empty_model_cache_empty(indexed, tmp_path):
    """A tag search, info and dupes open no flow: nothing is built, converted or fetched."""
    root, _, _ = indexed
    empty = tmp_path / "models"
    empty.mkdir()
    env = {"LOOKALIKE_MODEL_DIR": str(empty), "LOOKALIKE_DATA_DIR": str(tmp_path / "datasets")}
    for args in (("search", "--tag", "bird"), ("info",), ("dupes",)):
        done = run(*args, "-w", str(root / "ws"), env=env)
        assert done.returncode == 0, (args, done.stderr)
    assert list(empty.iterdir()) == [] and not (tmp_path / "datasets").exists()
    assert "animals/birds" in run("search", "--tag", "bird", "-w", str(root / "ws"), env=env).stdout


def test_info_and_remove(indexed, tmp_path):
    root, photos, _ = indexed
    info = json.loads(run("info", "-w", str(root / "ws"), "--json").stdout)
    assert info["docs"] == len(photos) and info["consistent"] and sum(info["shards"].values()) == len(photos)
    assert info["encoder"].startswith("efficientnet-lite0:")
    assert re.search(r"consistency\s+ok", run("info", "-w", str(root / "ws")).stdout)
    removed = run("remove", str(photos[0]), "-w", str(root / "ws"))
    assert removed.returncode == 0 and "removed 1 image from" in removed.stdout
    assert json.loads(run("info", "-w", str(root / "ws"), "--json").stdout)["docs"] == len(photos) - 1


def test_workspace_from_environment(indexed):
    root, photos, _ = indexed
    done = run("info", "--json", env={"LOOKALIKE_WORKSPACE": str(root / "ws")})
    assert done.returncode == 0 and json.loads(done.stdout)["workspace"] == str(root / "ws")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("index", "/no/such/folder", "-w", "{tmp}/ws"), NotFound.exit_code, "error: no such file or directory"),
        (("search", "{photo}", "-w", "{tmp}/nothing"), StoreError.exit_code, "error: no workspace at"),
        (("search", "{tmp}/missing.jpg", "-w", "{ws}"), NotFound.exit_code, "error: no such image"),
        (("search", "{tmp}/garbage.jpg", "-w", "{ws}"), BadInput.exit_code, "not an image"),
        (
            ("index", "{photo}", "-w", "{tmp}/ws2", "--flow", "{tmp}/bad.yml"),
            ConfigError.exit_code,
            "bad.yml:4: pods.encoder.with.threadz: unknown key",
        ),
        (("search", "{photo}", "-k", "0", "-w", "{ws}"), 2, "Invalid value for '--top-k' / '-k'"),
    ],
)
def test_errors_are_one_line_with_their_exit_code(indexed, tmp_path, args, code, message):
    root, photos, _ = indexed
    (tmp_path / "garbage.jpg").write_text("hello")
    (tmp_path / "bad.yml").write_text(
        "pods:\n  loader: {uses: ImageReader}\n  normalizer: {uses: ImageNormalizer}\n"
        "  encoder: {uses: ImageEncoder, with: {threadz: 2}}\n"
    )
    values = {"tmp": str(tmp_path), "ws": str(root / "ws"), "photo": str(photos[0])}
    done = run(*(a.format(**values) for a in args))
    assert done.returncode == code, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if code != 2:
        assert len(done.stderr.strip().splitlines()) == 1


def test_flow_show(tmp_path):
    text = run("flow", "show", "index")
    assert text.returncode == 0
    assert "chunk_indexer" in text.stdout and "2 shards, polling any" in text.stdout
    mermaid = run("flow", "show", "query", "--format", "mermaid")
    assert mermaid.stdout.startswith("flowchart LR") and "encoder --> chunk_indexer" in mermaid.stdout
    out = tmp_path / "flow.dot"
    assert run("flow", "show", "index", "-o", str(out)).returncode == 0
    assert out.read_text().startswith("digraph flow {")


@pytest.mark.parametrize("command", ["", "index", "search", "info", "remove", "flow show", "demo", "datasets fetch"])
def test_help_everywhere(command):
    done = run(*command.split(), "--help")
    assert done.returncode == 0 and "Usage" in done.stdout


def test_demo_on_tuxpaint(tuxpaint, tmp_path):
    done = run("demo", "--dataset", "tuxpaint", "--no-serve", "-w", str(tmp_path / "ws"))
    assert done.returncode == 0, done.stderr
    assert f"indexed {len(tuxpaint.images)} new" in done.stdout
    assert "example search" in done.stdout
    lines = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("1 ")]
    assert lines and "0.9" in lines[0]  # the original of the mirrored, cropped query comes first


def test_demo_ends_serving_the_page(tmp_path):
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*lookalike_cmd(), "demo", "--dataset", "skimage", "-w", str(tmp_path / "ws"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", proc)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "<title>" in page.text
        stats = httpx.get(f"http://127.0.0.1:{port}/api/stats", timeout=10).json()
        assert stats["docs"] >= 10
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"open http://127.0.0.1:{port}/" in out
