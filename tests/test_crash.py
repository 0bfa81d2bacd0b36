"""kill -9 in the middle of `lookalike index`, three times, then a re-run that completes the job."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from lookalike.store.workspace import Workspace

from conftest import copy_photos, lookalike_cmd

pytestmark = pytest.mark.slow


def _committed(ws: Path) -> int:
    db = ws / "docs.sqlite"
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # created but not migrated yet
        return 0


def _check_consistent(ws: Path) -> tuple[int, int]:
    with Workspace.open(ws, writer=False, create=False) as w:
        assert w.verify() == []
        docs, chunks = w.store.count_docs(), w.store.count_chunks()
        assert docs == chunks  # the default flow gives every document exactly one vector
        per_doc = w.store._db.reader.execute("SELECT count(*) FROM docs WHERE id NOT IN (SELECT doc_id FROM chunks)")
        assert per_doc.fetchone()[0] == 0  # no document without its vectors
    return docs, chunks


def test_kill_9_mid_index_leaves_a_consistent_workspace_and_a_rerun_completes(tuxpaint, tmp_path):
    photos = copy_photos(tuxpaint, tmp_path / "photos", per_class=6)
    total = len(photos)
    assert total > 150
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [*lookalike_cmd(), "index", str(tmp_path / "photos"), "-w", str(ws), "--batch-size", "4"]
    kills = []
    # Kill points: before the first commit could finish, a third of the way, and near the end.
    for target in (0, total // 3, total - 15):
        before = _committed(ws)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if target == 0 and (ws / "manifest.json").exists():
                time.sleep(0.5)
                break
            if target > 0 and _committed(ws) >= target:
                break
            time.sleep(0.01)
        assert proc.poll() is None, f"index finished before the kill: {proc.stderr.read().decode()[-500:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        docs, _ = _check_consistent(ws)
        assert docs >= before
        kills.append(docs)
    print("kills at", kills, "of", total)
    assert kills[-1] < total

    done = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    import json

    summary = json.loads(done.stdout)
    assert summary["indexed"] == total - kills[-1]  # exactly the missing ones, nothing twice
    assert summary["unchanged"] == kills[-1]
    docs, chunks = _check_consistent(ws)
    assert docs == chunks == total
