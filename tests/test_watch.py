"""`lookalike watch` as users run it: a real process, real files, real events (and polls).

The tiny py_modules encoder (conftest.TINY_FLOWS) keeps the model beside the point; every wait is
bounded.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import lookalike
from lookalike.library import ListRequest
from lookalike.settings import Options
from lookalike.watch import Changes, count_folders, ignored, network_filesystem

from conftest import TINY_FLOWS, drop_root_read, lookalike_cmd, quadrants

# Every wait is bounded by this: a batch takes a settle time (1 s here) plus an index run.
WAIT_S = 30.0


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    quadrants(seed).save(buf, "PNG")
    return buf.getvalue()


def _docs(ws: Path) -> dict[str, int]:
    """The indexed files and their stored sizes, read as another process's reader sees them."""
    with lookalike.open(Options(workspace=ws), write=False) as library:
        return {d.uri: d.size for d in library.list(ListRequest(limit=1000)).docs if d.uri is not None}


def _until(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "first.png").write_bytes(_png(0))
    return folder


@pytest.fixture
def ws(tmp_path: Path, photos: Path) -> Path:
    """A workspace indexed from ``photos`` with the tiny flows (remembered for the watcher)."""
    ws = tmp_path / "ws"
    flows = ["--flow", str(TINY_FLOWS["index_flow"]), "--query-flow", str(TINY_FLOWS["query_flow"])]
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(photos), "-w", str(ws), *flows], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return ws


class Watch:
    """A running `lookalike watch`, its output in files (no pipe to fill)."""

    def __init__(self, ws: Path, *args: str, tmp: Path, prefix: Sequence[str] = ()):
        self.out, self.err = tmp / f"watch-{time.monotonic_ns()}.out", tmp / f"watch-{time.monotonic_ns()}.err"
        cmd = [*prefix, *lookalike_cmd(), "watch", "-w", str(ws), "--settle", "1", *args]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, text: str, stream: str = "stdout") -> None:
        _until(lambda: text in (self.stdout() if stream == "stdout" else self.stderr()), f"{text!r} in {stream}")

    def stop(self) -> float:
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("SIGTERM did not stop the watcher within 15 s") from None
        return time.monotonic() - start


@pytest.fixture
def watching(ws: Path, tmp_path: Path) -> Iterator[Callable[..., Watch]]:
    started: list[Watch] = []

    def start(*args: str, prefix: Sequence[str] = ()) -> Watch:
        w = Watch(ws, *args, tmp=tmp_path, prefix=prefix)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def _copy_in(folder: Path, n: int, start: int = 100) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        path = folder / f"p{start + i}.png"
        path.write_bytes(_png(start + i))
        names.append(str(path))
    return names


def _events_then_changes(ws: Path, photos: Path, w: Watch) -> None:
    """Copies, a slow write, a delete and a folder rename, each found in the index."""
    w.wait_for("reconcile of")
    added = _copy_in(photos / "new", 20)
    _until(lambda: set(added) <= set(_docs(ws)), "20 copied photos indexed")

    slow = photos / "slow.png"
    data = _png(999)
    with slow.open("wb") as f:
        for part in range(3):  # three parts over about 3 s: each looks settled for a moment, never for 1 s
            f.write(data[part * len(data) // 3 : (part + 1) * len(data) // 3])
            f.flush()
            time.sleep(0.9)
    _until(lambda: _docs(ws).get(str(slow)) == len(data), "the slow file indexed whole")

    for path in added[:5]:
        os.unlink(path)
    _until(lambda: not set(added[:5]) & set(_docs(ws)), "5 deleted photos removed")

    (photos / "new").rename(photos / "renamed")
    moved = {p.replace(f"{os.sep}new{os.sep}", f"{os.sep}renamed{os.sep}") for p in added[5:]}
    _until(lambda: moved <= set(_docs(ws)) and not set(added) & set(_docs(ws)), "the renamed folder's photos")
    assert "skipped" not in w.stderr()  # the slow file was never remembered as bad


def test_watch_follows_copies_slow_writes_deletes_and_renames(ws, photos, watching):
    w = watching()
    _events_then_changes(ws, photos, w)
    assert w.stop() < 15
    assert w.proc.returncode == 0, w.stderr()
    assert "polling" not in w.stderr()
    lines = [line for line in w.stdout().splitlines() if " batch of " in line]
    assert lines and all(" added, " in line and " removed, " in line for line in lines)


def test_polling_does_the_same_without_events(ws, photos, watching):
    w = watching("--poll", "1")
    _events_then_changes(ws, photos, w)
    assert w.stop() < 15 and w.proc.returncode == 0


def test_a_watch_limit_reached_falls_back_to_polling_and_says_so_once(ws, photos, watching):
    for name in ("a", "b", "c"):
        (photos / name).mkdir()
    w = watching("--max-watches", "1")
    w.wait_for("reconcile of")
    added = _copy_in(photos / "b", 3)
    _until(lambda: set(added) <= set(_docs(ws)), "photos found by polling")
    w.stop()
    assert w.stderr().count("fs.inotify.max_user_watches") == 1, w.stderr()
    assert "polling every" in w.stderr()


def test_kill_9_then_restart_catches_up_and_duplicates_nothing(ws, photos, watching):
    w = watching()
    w.wait_for("reconcile of")
    first = _copy_in(photos, 3)
    _until(lambda: set(first) <= set(_docs(ws)), "photos indexed before the kill")
    w.proc.kill()
    w.proc.wait()
    later = _copy_in(photos, 2, start=200)
    again = watching()
    _until(lambda: set(later) <= set(_docs(ws)), "a photo added while no watcher ran")
    docs = _docs(ws)
    assert len(docs) == 1 + 3 + 2  # the first photo, then five: nothing twice
    assert again.stop() < 15 and again.proc.returncode == 0


def test_a_second_watcher_on_the_workspace_refuses(ws, watching):
    first = watching()
    first.wait_for("watching", "stderr")
    second = subprocess.run([*lookalike_cmd(), "watch", "-w", str(ws)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 4, second.stderr  # StoreError's
    assert second.stderr.strip().splitlines() == [
        f"error: workspace {ws} is already watched by another `lookalike watch` or `serve --watch`"
    ]
    assert first.proc.poll() is None


def test_ignored_names_folders_and_mount_types(tmp_path):
    root = str(tmp_path)
    for name in ("a.jpg.part", "b.crdownload", "c.tmp", "d.jpg~", ".e.jpg", "@eaDir/f.jpg", ".thumbnails/g.png"):
        assert ignored(os.path.join(root, name), root), name
    assert not ignored(os.path.join(root, "sub", "photo.jpg"), root)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/nas rw - nfs4 nas:/photos rw\n"
        "41 22 0:51 / /mnt/ssh rw - fuse.sshfs me@host:/ rw\n"
    )
    assert network_filesystem("/mnt/nas/2024", str(mountinfo)) == "nfs4"
    assert network_filesystem("/mnt/ssh", str(mountinfo)) == "fuse.sshfs"
    assert network_filesystem("/home/me", str(mountinfo)) is None
    for name in ("a", "b/c", "@eaDir"):
        (tmp_path / "tree" / name).mkdir(parents=True)
    assert count_folders([str(tmp_path / "tree")], 100) == 4  # tree, a, b, b/c
    assert count_folders([str(tmp_path / "tree")], 1) == 2  # stops once over the limit


def test_changes_settle_before_they_are_taken(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"1")
    changes = Changes(settle=1.0)
    changes.add(str(path), 0.0)
    assert changes.take(0.0) == ([], [])  # first look
    path.write_bytes(b"12")
    assert changes.take(0.9) == ([], [])  # it changed: settling starts again
    assert changes.take(1.5) == ([], [])
    assert changes.take(2.0) == ([str(path)], [])
    changes.remove(str(tmp_path / "gone.png"), 3.0)
    assert changes.take(3.5) == ([], [])
    assert changes.take(4.0) == ([], [str(tmp_path / "gone.png")])


def test_serve_watch_indexes_what_lands_in_the_folders_while_it_serves(ws: Path, photos: Path, tmp_path: Path):
    """`lookalike serve --watch`: the watcher runs inside the server, and the API sees its work."""
    import httpx

    from conftest import free_port, wait_until_ready

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {**os.environ, "LOOKALIKE_WATCH_SETTLE": "1"}
    cmd = [*lookalike_cmd(), "serve", "--watch", "-w", str(ws), "--port", str(port), "--host", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc)
        for n in range(1, 6):
            (photos / f"served-{n}.png").write_bytes(_png(100 + n))
        docs = lambda: httpx.get(f"{base}/api/stats", timeout=5).json()["docs"]  # noqa: E731
        _until(lambda: docs() == 6, "the five new photos are served")
        (photos / "served-1.png").unlink()
        _until(lambda: docs() == 5, "a deleted photo leaves the index")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, 128 + signal.SIGTERM)  # uvicorn's graceful stop says which signal
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "watching" in text and "added" in text, text


def test_serve_watch_refuses_read_only(ws: Path):
    done = subprocess.run(
        [*lookalike_cmd(), "serve", "--watch", "--read-only", "-w", str(ws)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 5 and "--watch indexes what changes: it cannot go with --read-only" in done.stderr


@pytest.mark.parametrize("mode", [["--poll", "1"], []], ids=["poll", "events"])
def test_a_watched_folder_that_goes_away_keeps_its_photos_and_is_followed_when_it_is_back(
    ws: Path, photos: Path, watching, mode: list[str]
):
    """An unmounted drive: its photos stay indexed while it is gone, and what it brings back is indexed."""
    w = watching(str(photos), *mode)
    w.wait_for("reconcile of")
    first = str(photos / "first.png")
    away = photos.with_name("away")
    photos.rename(away)
    time.sleep(3)  # a few polls, and a settle time
    assert first in _docs(ws), "the photos of a folder that went away stay indexed"
    (away / "while-away.png").write_bytes(_png(55))
    away.rename(photos)
    _until(lambda: str(photos / "while-away.png") in _docs(ws), "the folder is followed when it is back")
    assert set(_docs(ws)) == {first, str(photos / "while-away.png")}
    assert w.proc.poll() is None, w.stderr()


def test_a_failed_index_run_is_retried_and_loses_nothing(ws: Path, photos: Path, watching):
    """The disk stops taking writes (the watcher's file size limit, lowered from outside, fails
    them as a full disk would): the watcher says so once, keeps running, and once writes work
    again a reconcile scan indexes what failed, each photo once."""
    import resource

    w = watching("--reconcile", "2")
    w.wait_for("reconcile of")
    # Past 8 KB no file of the watcher's may grow: its logs stay under that, SQLite's WAL does not.
    resource.prlimit(w.proc.pid, resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY))
    added = _copy_in(photos, 3)
    w.wait_for("an index run failed", "stderr")
    assert "cannot commit" in w.stderr() and not set(added) & set(_docs(ws))
    time.sleep(3)  # a retry that fails too is not said again
    assert w.stderr().count("an index run failed") == 1 and w.proc.poll() is None
    resource.prlimit(w.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    _until(lambda: set(added) <= set(_docs(ws)), "the photos that failed are indexed by the retry")
    w.wait_for("index runs work again", "stderr")
    assert len(_docs(ws)) == 1 + 3
    assert w.stop() < 15 and w.proc.returncode == 0, w.stderr()


def test_a_folder_that_cannot_be_read_keeps_its_photos_until_it_can(ws: Path, photos: Path, watching):
    """Its permission taken away, a watched folder's photos stay indexed (a scan that cannot list
    it says so, and does not take it for gone); given back, nothing is encoded again. As root, the
    watcher runs without the capabilities that read any folder whatever its mode."""
    if os.geteuid() == 0 and not drop_root_read():
        pytest.skip("running as root without setpriv: root reads a chmod 000 folder")
    locked = _copy_in(photos / "locked", 2)
    w = watching("--reconcile", "1", prefix=drop_root_read())
    _until(lambda: set(locked) <= set(_docs(ws)), "the photos of the folder, before it is locked")
    (photos / "locked").chmod(0)
    try:
        seen = w.stdout().count("reconcile of")
        _until(lambda: w.stdout().count("reconcile of") >= seen + 2, "two reconcile scans of the locked folder")
        assert "cannot list folder: Permission denied" in w.stderr(), w.stderr()
        assert set(locked) <= set(_docs(ws)), "the locked folder's photos stay indexed"
    finally:
        (photos / "locked").chmod(0o755)
    new = _copy_in(photos / "locked", 1, start=300)
    _until(lambda: set(new) <= set(_docs(ws)), "a photo added once the folder can be read")
    assert w.stop() < 15 and w.proc.returncode == 0, w.stderr()
    assert len(_docs(ws)) == 1 + 2 + 1
    out = w.stdout()
    assert " 1 removed" not in out and " 2 removed" not in out, out
    assert all(" 0 updated" in line for line in out.splitlines()), out


def test_a_folder_that_cannot_be_read_at_start_costs_no_other_folder_its_events(ws: Path, photos: Path, watching):
    """notify stops setting up watches at a folder it cannot read: the watcher sees that its
    watches fall short of the folders and polls, so a photo in a later folder is still found."""
    if os.geteuid() == 0 and not drop_root_read():
        pytest.skip("running as root without setpriv: root reads a chmod 000 folder")
    for name in ("a", "b", "c", "d"):
        (photos / name).mkdir()
    (photos / "b").chmod(0)
    try:
        w = watching(prefix=drop_root_read())
        w.wait_for("reconcile of")
        added = _copy_in(photos / "d", 1) + _copy_in(photos / "a", 1, start=400)
        _until(lambda: set(added) <= set(_docs(ws)), "photos in the folders around the unreadable one")
    finally:
        (photos / "b").chmod(0o755)
    assert w.stop() < 15 and w.proc.returncode == 0, w.stderr()
