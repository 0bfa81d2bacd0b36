"""The workspace: SQLite commits, FAISS shards derived from them, snapshots, locks, encoder checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lookalike.document import Chunk, Document, Request, shard_for
from lookalike.errors import StoreError
from lookalike.store.shard_index import ShardIndex
from lookalike.store.workspace import Workspace, WorkspaceLayout

from conftest import one_space

DIM = 8
ENC = "test-encoder:1"


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _request(ws: Workspace, seeds: list[int], *, chunks_per_doc: int = 1, failed: set[int] = frozenset()) -> Request:
    docs = []
    for s in seeds:
        doc = Document.from_path(f"/photos/{s}.jpg")
        doc.size, doc.mtime_ns, doc.content_hash = s, s, f"h{s}"
        doc.tags = [("tabby", 0.5), ("lynx", 0.1)]
        doc.chunks = [
            Chunk(kind="whole" if i == 0 else "mirror", embedding=_vec(s * 10 + i)) for i in range(chunks_per_doc)
        ]
        if s in failed:
            doc.fail("broken", "corrupt image")
        docs.append(doc)
    req = Request("index", docs)
    for doc in docs:
        req.staged.doc_ids.append(doc.id)
        req.staged.vectors[(doc.id, shard_for(doc.id, ws.n_shards_configured))] = doc.chunks
    return req


class _WorkspaceWithPods(Workspace):
    """A workspace with its shard pods' indexes, as a flow's VectorIndexer pods hold them: opened on
    first use, brought forward on each, and finished (caught up, snapshotted) when it closes."""

    _pods: list[ShardIndex] | None = None

    def pods(self) -> list[ShardIndex]:
        if self._pods is None:
            self._pods = [self.open_shard(i) for i in range(self.n_shards_configured)]
        for pod in self._pods:
            pod.sync()
        return self._pods

    def close(self, flush: bool = True) -> None:
        try:
            for pod in self.pods() if self.writer else self._pods or []:
                if flush and self.writer:
                    pod.finish()
                pod.close(flush=flush)
        except StoreError as e:  # re-indexed by another process: this one's vectors are not worth keeping
            assert "re-indexed by another process" in str(e)
        finally:
            super().close()


def _open(path, *, writer: bool = True, reset: bool = False, **layout) -> _WorkspaceWithPods:
    space = one_space(layout.pop("encoder", ENC), layout.pop("dim", DIM), layout.pop("shards", 2))
    ws = _WorkspaceWithPods.open(path, WorkspaceLayout(space, **layout), writer=writer, reset=reset)
    assert isinstance(ws, _WorkspaceWithPods)
    return ws


def searchable(ws: _WorkspaceWithPods) -> int:
    return sum(len(s) for s in ws.pods())


def test_commit_makes_documents_and_vectors_searchable_together(tmp_path):
    with _open(tmp_path / "ws") as ws:
        stored = ws.commit(_request(ws, [1, 2, 3], failed={2}))
        assert [d.uri for d in stored] == ["/photos/1.jpg", "/photos/3.jpg"]  # the failed doc is not stored
        assert ws.store.count_docs() == 2 and ws.store.count_chunks() == 2
        assert searchable(ws) == 2
        assert ws.verify() == []
        doc3 = Document.from_path("/photos/3.jpg").id
        shard = shard_for(doc3, 2)
        scores, ids = ws.pods()[shard].search(_vec(30)[None], 1)
        assert ws.store.chunk_info([int(ids[0, 0])])[int(ids[0, 0])][0] == doc3
        assert scores[0, 0] == pytest.approx(1.0, abs=1e-3)  # stored as float16
        assert ws.store.search_tags("tab")[0][0][1] == "tabby"


def test_vectors_without_an_accepted_document_are_never_stored(tmp_path):
    with _open(tmp_path / "ws") as ws:
        req = _request(ws, [1, 2])
        req.staged.doc_ids.remove(req.docs[1].id)  # the doc indexer did not accept doc 2
        ws.commit(req)
        assert ws.store.count_docs() == 1 and ws.store.count_chunks() == 1
        assert req.docs[1].error is not None
        assert ws.verify() == []


def test_reindexing_a_document_replaces_its_vectors(tmp_path):
    with _open(tmp_path / "ws") as ws:
        ws.commit(_request(ws, [1, 2], chunks_per_doc=2))
        ws.commit(_request(ws, [1], chunks_per_doc=1))
        assert ws.store.count_docs() == 2 and ws.store.count_chunks() == 3
        assert searchable(ws) == 3
        assert ws.verify() == []


def test_snapshots_are_reused_when_current_and_rebuilt_when_stale(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as ws:
        ws.commit(_request(ws, list(range(20))))
    state = json.loads((path / "shard-0" / "snapshot.json").read_text())
    with _open(path) as ws:
        assert ws.store.generation == state["generation"]  # nothing changed: the snapshot is current
        assert searchable(ws) == 20
    # A process that commits and dies before it can write the snapshots.
    code = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import test_workspace as t\n"
        "ws = t._open(sys.argv[1])\n"
        "ws.commit(t._request(ws, [100, 101]))\n"
        "os._exit(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path), str(Path(__file__).parent)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads((path / "shard-0" / "snapshot.json").read_text()) == state  # stale now
    with _open(path) as ws:
        assert ws.store.generation > state["generation"]
        assert searchable(ws) == 22  # brought forward from what SQLite committed
        assert ws.verify() == []


def test_a_damaged_snapshot_is_rebuilt(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as ws:
        ws.commit(_request(ws, list(range(10))))
    (path / "shard-1" / "index.faiss").write_bytes(b"garbage")
    with _open(path) as ws:
        assert searchable(ws) == 10 and ws.verify() == []


def test_changing_the_shard_count_reshards_without_losing_anything(tmp_path):
    path = tmp_path / "ws"
    with _open(path, shards=2) as ws:
        ws.commit(_request(ws, list(range(30))))
    with _open(path, shards=3) as ws:
        assert ws.n_shards_configured == 3
        assert searchable(ws) == 30
        assert ws.verify() == []
        for doc in ws.store.iter_docs():
            ids = set(ws.pods()[shard_for(doc.id, 3)].ids().tolist())
            chunk_ids = {cid for cid, *_ in ws.store.chunks_of(doc.id)}
            assert chunk_ids and chunk_ids <= ids  # every doc's vectors sit in its hash's shard


def test_another_encoder_is_refused_with_how_to_reindex(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as ws:
        ws.commit(_request(ws, [1]))
    with pytest.raises(StoreError, match=r"built with encoder test-encoder:1.*lookalike index --reset"):
        _open(path, encoder="other-encoder:2")
    with _open(path, encoder="other-encoder:2", reset=True) as ws:  # --reset empties it and adopts the new one
        assert ws.store.count_docs() == 0 and ws.encoder == "other-encoder:2"


def _search_ids(ws: _WorkspaceWithPods, seed: int) -> set[str]:
    """The documents of every shard's top matches for one query vector (after catching up)."""
    found: set[str] = set()
    for shard in range(ws.n_shards_configured):
        _, ids = ws.pods()[shard].search(_vec(seed)[None], 100)
        found |= {ws.store.chunk_info([int(i)])[int(i)][0] for i in ids[0] if i >= 0}
    return found


def test_writers_take_turns_per_commit_and_readers_catch_up(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as a, _open(path) as b, _open(path, writer=False) as reader:
        # Two writers at once (as `serve` and `index` are): neither waits for the other's lifetime.
        ra = a.commit(_request(a, [1, 2, 3]))
        rb = b.commit(_request(b, [4, 5]))
        a.commit(_request(a, [6]))  # a's shards were behind b's commit: a replays it first
        assert len(ra) == 3 and len(rb) == 2
        ids = {Document.from_path(f"/photos/{s}.jpg").id for s in range(1, 7)}
        for ws in (a, b, reader):
            assert _search_ids(ws, 1) == ids, "every process sees every commit"
            assert ws.verify() == []
        # Removals travel the same way.
        gone = Document.from_path("/photos/4.jpg").id
        delete = Request("delete", [Document(id=gone)])
        delete.staged.deletes.append(gone)
        a.commit(delete)
        for ws in (a, b, reader):
            assert gone not in _search_ids(ws, 4)
            assert searchable(ws) == 5 and ws.verify() == []


def test_a_snapshot_is_brought_forward_from_the_log_not_rebuilt(tmp_path, monkeypatch):
    path = tmp_path / "ws"
    with _open(path) as ws:
        ws.commit(_request(ws, [1, 2, 3]))
    ws = _open(path)
    ws.commit(_request(ws, [4, 5]))
    ws.store.close()  # as if killed: committed, but no new snapshot
    monkeypatch.setattr(ShardIndex, "_rebuild", lambda self: pytest.fail("rebuilt instead of replaying the log"))
    with _open(path) as again:
        assert searchable(again) == 5 and again.verify() == []


def test_a_reader_behind_a_reset_rebuilds_and_one_behind_a_new_encoder_refuses(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as ws:
        ws.commit(_request(ws, [1, 2, 3]))
    with _open(path, writer=False) as reader:
        with _open(path, reset=True) as writer:  # --reset: the log cannot bring anyone past it
            writer.commit(_request(writer, [7]))
        assert _search_ids(reader, 7) == {Document.from_path("/photos/7.jpg").id}
        assert reader.verify() == []
        with _open(path, encoder="other-encoder:2", reset=True):
            pass
        with pytest.raises(StoreError, match="re-indexed by another process"):
            reader.pods()[0].search(_vec(1)[None], 1)


def test_paths_that_are_not_utf8_are_stored_and_found(tmp_path):
    import os

    name = os.fsdecode(b"/photos/caf\xe9.jpg")
    with _open(tmp_path / "ws") as ws:
        doc = Document.from_path(name)
        doc.size, doc.mtime_ns, doc.content_hash = 1, 1, "h"
        doc.chunks = [Chunk(embedding=_vec(9))]
        req = Request("index", [doc])
        req.staged.doc_ids.append(doc.id)
        req.staged.vectors[(doc.id, shard_for(doc.id, 2))] = doc.chunks
        ws.commit(req)
        ws.store.record_skips([(name + ".bad", 1, 1, "corrupt image", "corrupt")])
        ws.add_roots([os.fsdecode(b"/photos/d\xfcr")])
        assert ws.store.docs_by_uri()[name].id == doc.id
        assert name + ".bad" in ws.store.skips()
        assert os.fsdecode(b"/photos/d\xfcr") in ws.roots


def test_a_format_1_workspace_is_migrated(tmp_path):
    """Text paths become bytes, and the roots move from the manifest into the doc store."""
    import sqlite3

    from lookalike.store.schema import MIGRATIONS

    path = tmp_path / "ws"
    path.mkdir()
    conn = sqlite3.connect(path / "docs.sqlite", isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO docs (id, uri, tags, indexed_at) VALUES ('d1', '/photos/a.jpg', '[]', 0)")
    conn.execute("INSERT INTO skips VALUES ('/photos/bad.jpg', 1, 2, 'corrupt image', 'corrupt')")
    conn.close()
    manifest = {"format_version": 1, "encoder": ENC, "dim": DIM, "shards": 2, "roots": ["/photos"]}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with _open(path) as ws:
        assert set(ws.store.docs_by_uri()) == {"/photos/a.jpg"}
        assert ws.store.skips()["/photos/bad.jpg"][:2] == (1, 2)
        assert ws.roots == ["/photos"]
    assert "roots" not in json.loads((path / "manifest.json").read_text())


def test_missing_workspace_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="no workspace at"):
        Workspace.open(tmp_path / "nothing", writer=False, create=False)


def test_read_only_workspace_refuses_commits(tmp_path):
    path = tmp_path / "ws"
    _open(path).close()
    with _open(path, writer=False) as ws, pytest.raises(StoreError, match="read-only"):
        ws.commit(_request(ws, [1]))


def test_delete_removes_documents_and_their_vectors(tmp_path):
    with _open(tmp_path / "ws") as ws:
        req = _request(ws, [1, 2, 3], chunks_per_doc=2)
        ws.commit(req)
        delete = Request("delete", [Document(id=req.docs[0].id)])
        delete.staged.deletes.append(req.docs[0].id)
        ws.commit(delete)
        assert ws.store.count_docs() == 2 and ws.store.count_chunks() == 4
        assert searchable(ws) == 4 and ws.verify() == []


def test_schema_newer_than_the_code_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / "ws"
    _open(path).close()
    conn = sqlite3.connect(path / "docs.sqlite")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="newer than this lookalike knows"):
        _open(path)


def test_a_writer_of_the_old_vectors_is_refused_after_another_process_resets(tmp_path):
    path = tmp_path / "ws"
    with _open(path) as old:
        old.commit(_request(old, [1]))
        with _open(path, encoder="other-encoder:2", reset=True) as new:
            new.commit(_request(new, [2]))
            with pytest.raises(StoreError, match="re-indexed by another process"):
                old.commit(_request(old, [3]))  # refused inside the transaction: nothing written
            assert {d.uri for d in new.store.iter_docs()} == {"/photos/2.jpg"}
            assert new.verify() == []


def test_a_reader_of_an_empty_workspace_refuses_once_it_adopts_another_encoder(tmp_path):
    path = tmp_path / "ws"
    _open(path).close()
    with _open(path, writer=False) as reader:
        with _open(path, encoder="other-encoder:2") as writer:  # empty: adopts the new encoder
            writer.commit(_request(writer, [1]))
        with pytest.raises(StoreError, match="re-indexed by another process"):
            reader.pods()[0].search(_vec(1)[None], 1)


def test_a_torn_snapshot_is_refused_not_replayed_into_duplicates(tmp_path):
    """A crash between the index's rename and its state's pairs a new index with the old state."""
    path = tmp_path / "ws"
    with _open(path, shards=1) as ws:
        ws.commit(_request(ws, [1, 2]))
    old_state = (path / "shard-0" / "snapshot.json").read_bytes()
    with _open(path, shards=1) as ws:
        again = _request(ws, [1])  # the same document again: the count stays the same
        ws.commit(again)
    (path / "shard-0" / "snapshot.json").write_bytes(old_state)  # the new index, the old state
    with _open(path, shards=1) as ws:
        assert len(ws.pods()[0]) == 2 and ws.verify() == []


def test_a_damaged_manifest_is_an_error_that_says_how_to_repair_it(tmp_path):
    import lookalike
    from lookalike import Options

    path = tmp_path / "ws"
    _open(path).close()
    (path / "manifest.json").write_text('{"format_version": 1, "enc')  # cut short
    for opening in (lambda: _open(path), lambda: lookalike.open(Options(workspace=path), write=False)):
        with pytest.raises(StoreError, match=r"manifest.json is damaged .*restore it from a backup"):
            opening()
