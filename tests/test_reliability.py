"""Reliability, end to end with the real CLI, model and server: hostile folders, what is remembered
as a bad file, the README's Lite1/Lite2 recipes, and one workspace shared by several processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import copy_photos, free_port, lookalike_cmd, wait_until_ready

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*lookalike_cmd(), *args], capture_output=True, text=True, timeout=timeout)


def index_json(*args: str) -> dict:
    done = run("index", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def skipped(summary: dict) -> dict[str, str]:
    """skipped file name -> message."""
    return {os.path.basename(f["path"]): f["reason"] for f in summary["skipped_files"]}


# --- a hostile folder --------------------------------------------------------------------------------


def _corrupt_files(folder: Path, photo: bytes) -> list[str]:
    """A dozen files with image names whose bytes are not usable images."""
    import zlib

    header_only = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR"
    ihdr = b"IHDR" + (40).to_bytes(4, "big") + (30).to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    bad_crc = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + ihdr + (zlib.crc32(ihdr) ^ 1).to_bytes(4, "big")
    files = {
        "empty.jpg": b"",
        "truncated.jpg": photo[: len(photo) // 3],
        "header-only.jpg": photo[:200],
        "garbage.jpg": photo[:20] + os.urandom(4000),
        "text.jpg": b"this is not an image\n" * 10,
        "html.png": b"<!doctype html><html><body>hello</body></html>",
        "zeros.png": bytes(5000),
        "header-only.png": header_only,
        "bad-crc.png": bad_crc,
        "random.gif": b"GIF89a" + os.urandom(300),
        "pdf.tif": b"%PDF-1.4\n" + os.urandom(500),
        "zip.webp": b"PK\x03\x04" + os.urandom(500),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return list(files)


def test_a_hostile_folder_indexes_every_good_photo_and_lists_every_bad_one(tuxpaint, tmp_path):
    folder = tmp_path / "photos"
    good = copy_photos(tuxpaint, folder, per_class=2, classes=["animals/birds", "food/fruit"])
    latin1 = os.fsdecode(bytes(folder) + b"/caf\xe9.jpg")  # a Latin-1 name, as old Samba shares have
    other = next(p for p in sorted(tuxpaint.images) if tuxpaint.labels[p] == "space/planets")
    Path(latin1).write_bytes(other.read_bytes())
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/zero", folder / "zero.jpg")
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    os.symlink(folder / "loop-b.jpg", folder / "loop-a.jpg")
    os.symlink(folder / "loop-a.jpg", folder / "loop-b.jpg")
    corrupt = _corrupt_files(folder, good[0].read_bytes())
    ws = str(tmp_path / "ws")

    first = index_json(str(folder), "-w", ws)  # finishes: the FIFO is never opened, /dev/zero never read
    assert first["indexed"] == len(good) + 1
    bad = skipped(first)
    assert "FIFO" in bad["pipe.jpg"] and "never opened" in bad["pipe.jpg"]
    assert "character device" in bad["zero.jpg"] and "/dev/zero" in bad["zero.jpg"]
    assert bad["dangling.jpg"].startswith("dangling symlink")
    assert bad["loop-a.jpg"].startswith("symlink loop") and bad["loop-b.jpg"].startswith("symlink loop")
    assert set(corrupt) <= set(bad)
    assert len(bad) == 5 + len(corrupt)  # every bad entry listed, no good one among them
    assert first["skipped"]["not a regular file"] == 2 and first["skipped_total"] == len(bad)

    again = index_json(str(folder), "-w", ws)  # a no-op: nothing read again, every bad one listed again
    assert (again["indexed"], again["updated"], again["encoded"]) == (0, 0, 0)
    assert again["unchanged"] == len(good) + 1 and skipped(again) == bad

    # The Latin-1 name is searchable and shown (escaped) without a crash, in text and JSON.
    found = run("search", latin1, "-w", ws, "-k", "1")
    assert found.returncode == 0, found.stderr
    assert "caf\\xe9.jpg" in found.stdout and "1.000" in found.stdout
    as_json = json.loads(run("search", latin1, "-w", ws, "-k", "1", "--json").stdout)
    assert as_json["results"][0]["path"].endswith("caf\\xe9.jpg")
    listed = run("index", str(folder), "-w", ws)
    assert listed.returncode == 0 and "(unchanged since it failed before" in listed.stderr


# --- only the file's own faults are remembered -----------------------------------------------------

BROKEN_STEP = '''
from lookalike.executors.base import Executor, requests


class BrokenStep(Executor):
    """A flow bug: fails every request, whatever the files are."""

    @requests(on="index")
    def fail(self, docs):
        raise RuntimeError("this executor is broken")
'''


def test_a_flow_error_is_never_remembered_as_a_bad_file(tuxpaint, tmp_path):
    folder = tmp_path / "photos"
    good = copy_photos(tuxpaint, folder, per_class=2, classes=["animals/birds"])
    (tmp_path / "broken.py").write_text(BROKEN_STEP)
    flow = (REPO / "lookalike" / "flows" / "index.yml").read_text()
    broken = flow.replace(
        "  encoder:       {uses: ImageEncoder, parallel: 2}\n",
        "  broken:        {uses: BrokenStep, py_modules: broken.py}\n"
        "  encoder:       {uses: ImageEncoder, parallel: 2}\n",
    )
    assert broken != flow
    (tmp_path / "broken.yml").write_text(broken)
    ws = str(tmp_path / "ws")
    failed = index_json(str(folder), "-w", ws, "--flow", str(tmp_path / "broken.yml"))
    assert failed["indexed"] == 0 and failed["skipped"] == {"executor error": len(good)}
    # The flow is fixed; the files were never at fault, so every one is indexed now.
    fixed = index_json(str(folder), "-w", ws, "--flow", str(REPO / "lookalike" / "flows" / "index.yml"))
    assert fixed["indexed"] == len(good) and fixed["skipped_total"] == 0


def test_reset_forgets_bad_files_and_retry_skipped_reads_them_again(tuxpaint, tmp_path):
    folder = tmp_path / "photos"
    copy_photos(tuxpaint, folder, per_class=1, classes=["animals/birds"])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    ws = str(tmp_path / "ws")
    assert run("index", str(folder), "-w", ws).returncode == 0
    remembered = run("index", str(folder), "-w", ws)
    assert "broken.png: " in remembered.stderr and "unchanged since it failed before" in remembered.stderr
    for flag in ("--retry-skipped", "--reset"):
        again = run("index", str(folder), "-w", ws, flag)
        assert again.returncode == 0, again.stderr
        line = next(x for x in again.stderr.splitlines() if "broken.png" in x)
        assert "unchanged since it failed before" not in line, f"{flag} did not read it again: {line}"


# --- the README's recipes ----------------------------------------------------------------------------


def _readme_blocks() -> tuple[dict[str, str], list[str]]:
    """The README's Lite1 flow files (by the name on their first line) and the commands after them."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    flows = {body.splitlines()[0][2:].strip(): body for lang, body in blocks if body.startswith("# lite1-")}
    commands = next(body for _, body in blocks if "--flow lite1-index.yml" in body).splitlines()
    return flows, commands


@pytest.mark.parametrize("model", ["efficientnet-lite1", "efficientnet-lite2"])
def test_the_readme_lite_recipes_work_as_written(model, tuxpaint, tmp_path):
    flows, commands = _readme_blocks()
    assert set(flows) == {"lite1-index.yml", "lite1-query.yml"}
    for name, body in flows.items():
        (tmp_path / name).write_text(body.replace("efficientnet-lite1", model))
    photos = copy_photos(tuxpaint, tmp_path / "Pictures", per_class=2, classes=["animals/birds", "food/fruit"])
    ws = str(tmp_path / "ws")
    for line in commands:
        args = line.split("#")[0].split()[1:]  # drop "lookalike" and the comment
        args = [str(tmp_path / "Pictures") if a == "~/Pictures" else a for a in args]
        if args[0] == "search":
            args = ["search", str(photos[1]), "--json", "-k", "2"]
        done = subprocess.run(
            [*lookalike_cmd(), *args, "-w", ws], capture_output=True, text=True, timeout=600, cwd=tmp_path
        )
        assert done.returncode == 0, f"{line}: {done.stderr}"
    result = json.loads(done.stdout)["results"]
    assert result[0]["path"] == str(photos[1]) and result[0]["score"] > 0.99
    manifest = json.loads((tmp_path / "ws" / "manifest.json").read_text())
    size = {"efficientnet-lite1": 240, "efficientnet-lite2": 260}[model]
    encoder = manifest["spaces"][0]["encoder"]
    assert manifest["spaces"][0]["name"] == "image" and encoder.startswith(model) and f"pre1-{size}" in encoder


# --- one workspace, many processes ---------------------------------------------------------------------


def _search_top(base: str, image: Path) -> list[str]:
    with image.open("rb") as f:
        r = httpx.post(f"{base}/api/search", files={"file": (image.name, f, "image/jpeg")}, data={"top_k": "3"})
    assert r.status_code == 200, r.text
    return [m["uri"] for m in r.json()["results"][0]["matches"]]


def _within(seconds: float, check) -> float:
    """Seconds until ``check()`` holds; fails after ``seconds``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > seconds:
            pytest.fail(f"not within {seconds:g}s")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("read_only", [False, True], ids=["serve", "serve-read-only"])
def test_serve_index_and_remove_share_one_workspace(read_only, tuxpaint, tmp_path):
    first = copy_photos(tuxpaint, tmp_path / "first", per_class=2, classes=["animals/birds"])
    later = copy_photos(tuxpaint, tmp_path / "later", per_class=3, classes=["food/fruit", "space/planets"])
    ws = str(tmp_path / "ws")
    assert run("index", str(tmp_path / "first"), "-w", ws).returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["serve", "-w", ws, "--port", str(port)] + (["--read-only"] if read_only else [])
    server = subprocess.Popen([*lookalike_cmd(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_ready(base, server)
        assert _search_top(base, first[0])[0] == str(first[0])
        # The CLI indexes into the workspace the server holds open, while an upload comes in.
        indexer = subprocess.Popen(
            [*lookalike_cmd(), "index", str(tmp_path / "later"), "-w", ws], stderr=subprocess.PIPE, text=True
        )
        if not read_only:
            upload = tuxpaint.images[-1]
            with upload.open("rb") as f:
                r = httpx.post(f"{base}/api/index", files={"files": (upload.name, f, "image/png")}, timeout=120)
            assert r.status_code == 200 and r.json()["indexed"] == 1, r.text
        _, err = indexer.communicate(timeout=600)
        assert indexer.returncode == 0, err
        assert "in use by" not in err
        # Found without a restart, within 2 s of the commit.
        _within(2.0, lambda: _search_top(base, later[0])[0] == str(later[0]))
        stats = httpx.get(f"{base}/api/stats").json()
        assert stats["docs"] == len(first) + len(later) + (0 if read_only else 1)
        removed = run("remove", str(tmp_path / "later"), "-w", ws)
        assert removed.returncode == 0, removed.stderr
        _within(2.0, lambda: not set(map(str, later)) & set(_search_top(base, later[0])))
        info = json.loads(run("info", "-w", ws, "--json").stdout)
        assert info["consistent"] and info["docs"] == len(first) + (0 if read_only else 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
