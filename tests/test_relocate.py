"""Renamed and moved files are followed by their bytes: the document moves to the new path with its
vectors, tags and header fields, and nothing is encoded again. A copy, or a file renamed and changed,
is encoded like any new file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import lookalike
from lookalike import Options, SearchRequest
from lookalike.document import Document
from lookalike.errors import StoreError
from lookalike.server.app import create_app
from lookalike.server.config import ServerConfig
from lookalike.store.docstore import Relocation

from conftest import TINY_FLOWS, client_ready, copy_photos, lookalike_cmd, quadrants


def _id(path: Path) -> str:
    return Document.from_path(str(path)).id


def _library(tmp_path: Path, count: int = 4) -> tuple[lookalike.Library, Path]:
    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    (root / "other").mkdir()
    for i in range(count):
        quadrants(i).save(root / f"{i}.png")
        quadrants(10 + i).save(root / "trip" / f"t{i}.png")
    library = lookalike.open(Options(workspace=tmp_path / "ws", **TINY_FLOWS))
    library.index([root])
    return library, root


def _stored(library: lookalike.Library, path: Path) -> tuple:
    """What must survive a move: the chunks (ids, shards, vectors), the tags and the header fields."""
    store, doc_id = library.workspace.store, _id(path)
    doc = store.get_docs([doc_id])[doc_id]
    chunks = store.chunks_of(doc_id)
    shards = store._db.reader.execute("SELECT id, shard FROM chunks WHERE doc_id=? ORDER BY id", (doc_id,)).fetchall()
    tags = store._db.reader.execute("SELECT label, probability FROM doc_tags WHERE doc_id=?", (doc_id,)).fetchall()
    return (
        [(c[0], c[1], c[2]) for c in chunks],
        np.stack([c[3] for c in chunks]),
        shards,
        sorted(tags),
        doc.tags,
        doc.content_hash,
        doc.meta,
    )


def _same(before: tuple, after: tuple) -> None:
    assert before[0] == after[0] and before[2:] == after[2:]
    np.testing.assert_array_equal(before[1], after[1])


def test_a_renamed_file_keeps_its_vectors_and_is_not_encoded(tmp_path):
    library, root = _library(tmp_path)
    with library:
        old, new = root / "0.png", root / "renamed.png"
        before, generation = _stored(library, old), library.workspace.store.generation
        old.rename(new)
        report = library.index([root])
        assert (report.indexed, report.updated, report.removed, report.encoded, report.moved) == (0, 0, 0, 0, 1)
        assert report.to_dict()["moved"] == 1 and report.docs == 8
        store = library.workspace.store
        assert store.get_docs([_id(old)]) == {}
        doc = store.get_docs([_id(new)])[_id(new)]
        assert doc.uri == str(new) and doc.folder == str(root)
        _same(before, _stored(library, new))
        assert store.generation > generation  # readers' caches (listings, timelines) refresh
        assert library.workspace.verify() == []
        hit = library.search(SearchRequest(image=new, top_k=1)).hits[0]
        assert hit.path == str(new) and hit.doc_id == _id(new) and hit.similarity == pytest.approx(1, abs=1e-3)
        again = library.index([root])  # nothing left to do
        assert (again.moved, again.encoded, again.removed, again.unchanged) == (0, 0, 0, 8)


def test_a_renamed_folder_moves_every_file_in_it(tmp_path):
    library, root = _library(tmp_path)
    with library:
        before = [_stored(library, root / "trip" / f"t{i}.png") for i in range(4)]
        (root / "trip").rename(root / "holiday")
        report = library.index([root])
        assert (report.moved, report.encoded, report.removed) == (4, 0, 0)
        for i, b in enumerate(before):
            _same(b, _stored(library, root / "holiday" / f"t{i}.png"))
        folders = {d.uri: d.folder for d in library.workspace.store.iter_docs()}
        assert {f for u, f in folders.items() if "/holiday/" in u} == {str(root / "holiday")}
        assert not any("/trip/" in u for u in folders)
        assert library.workspace.verify() == []


def test_a_file_moved_into_another_folder_is_followed(tmp_path):
    library, root = _library(tmp_path)
    with library:
        before = _stored(library, root / "1.png")
        shutil.move(root / "1.png", root / "other" / "1.png")
        report = library.index([root])
        assert (report.moved, report.encoded, report.removed) == (1, 0, 0)
        _same(before, _stored(library, root / "other" / "1.png"))


def test_a_copy_is_a_new_document_and_a_renamed_changed_file_is_encoded(tmp_path):
    library, root = _library(tmp_path)
    with library:
        shutil.copy(root / "0.png", root / "copy.png")  # the original stays: a copy, not a move
        report = library.index([root])
        assert (report.indexed, report.moved, report.removed) == (1, 0, 0)
        # Renamed and changed, at the same size (BMP: same dimensions, same bytes count).
        quadrants(20).save(root / "a.bmp")
        library.index([root])
        (root / "a.bmp").unlink()
        quadrants(21).save(root / "b.bmp")
        assert (
            os.path.getsize(root / "b.bmp") == library.workspace.store.get_docs([_id(root / "a.bmp")]).popitem()[1].size
        )
        report = library.index([root])
        assert (report.indexed, report.moved, report.removed) == (1, 0, 1)
        # One gone document pairs with one new file: two copies of a moved file, one of them new.
        shutil.move(root / "2.png", root / "x.png")
        shutil.copy(root / "x.png", root / "y.png")
        report = library.index([root])
        assert (report.indexed, report.moved, report.removed) == (1, 1, 0)
        assert library.workspace.verify() == []


def test_a_failed_move_leaves_every_document_where_it_was(tmp_path):
    """One transaction: a move that cannot be written rolls back the ones before it."""
    library, root = _library(tmp_path)
    with library:
        store = library.workspace.store
        (root / "0.png").rename(root / "m0.png")
        (root / "1.png").rename(root / "m1.png")
        good = Relocation(_id(root / "0.png"), str(root / "m0.png"), 1, 1)
        bad = Relocation(_id(root / "1.png"), str(root / "m1.png"), object(), 1)  # type: ignore[arg-type]
        generation = store.generation
        with pytest.raises(StoreError):
            store.relocate([good, bad])
        assert set(store.get_docs([_id(root / "0.png"), _id(root / "m0.png")])) == {_id(root / "0.png")}
        assert store.generation == generation
        report = library.index([root])  # the next run finishes the job
        assert (report.moved, report.encoded) == (2, 0)
        assert library.workspace.verify() == []


def test_the_server_answers_at_the_new_path_after_another_process_indexes(tmp_path):
    library, root = _library(tmp_path)
    library.close()
    env = os.environ | {"LOOKALIKE_INDEX_FLOW": str(TINY_FLOWS["index_flow"])}
    env["LOOKALIKE_QUERY_FLOW"] = str(TINY_FLOWS["query_flow"])
    old, new = root / "trip" / "t0.png", root / "other" / "moved.png"
    with TestClient(create_app(ServerConfig(library.options)), base_url="http://127.0.0.1") as client:
        client_ready(client)
        assert client.get(f"/api/docs/{_id(old)}").status_code == 200
        folder = {"folder": str(root / "other")}
        assert client.get("/api/docs", params=folder).json()["total"] == 0
        shutil.move(old, new)
        done = subprocess.run(
            [*lookalike_cmd(), "index", str(root), "-w", str(library.workspace.path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0 and "1 moved" in done.stdout, done.stdout + done.stderr
        assert client.get(f"/api/docs/{_id(old)}").status_code == 404
        r = client.get(f"/api/docs/{_id(new)}")
        assert r.status_code == 200 and r.json()["uri"] == str(new)
        listed = client.get("/api/docs", params=folder).json()  # the listing's totals were read afresh
        assert listed["total"] == 1 and [i["uri"] for i in listed["items"]] == [str(new)]
        with open(new, "rb") as f:
            best = client.post("/api/search", files={"file": f}, data={"top_k": "1"}).json()["results"][0]["matches"][0]
        assert best["uri"] == str(new) and best["similarity"] == pytest.approx(1, abs=1e-3)


@pytest.mark.slow
def test_the_real_model_follows_a_renamed_folder_of_photos(tuxpaint, tmp_path):
    root = tmp_path / "photos"
    photos = copy_photos(tuxpaint, root, per_class=3, classes=["animals/birds", "food/fruit"])
    with lookalike.open(Options(workspace=tmp_path / "ws")) as library:
        library.index([root])
        (root / "food").rename(root / "meals")
        report = library.index([root])
        assert (report.moved, report.encoded, report.removed) == (3, 0, 0)
        query = root / "meals" / "fruit" / photos[-1].name
        hit = library.search(SearchRequest(image=query, top_k=1)).hits[0]
        assert hit.path == str(query) and hit.similarity == pytest.approx(1, abs=1e-3)
        assert json.loads(json.dumps(report.to_dict()))["moved"] == 3


def test_nas_metadata_folders_are_never_scanned(tmp_path):
    """A Synology's @eaDir (its thumbnails of every photo) and a #recycle bin are not the user's photos."""
    from lookalike.library.planning import scan

    from conftest import quadrants

    for folder in ("photos", "photos/@eaDir/a.jpg", "photos/#recycle"):
        (tmp_path / folder).mkdir(parents=True)
    quadrants(1).save(tmp_path / "photos" / "a.png")
    quadrants(2).save(tmp_path / "photos" / "@eaDir" / "a.jpg" / "SYNOPHOTO_THUMB_M.png")
    quadrants(3).save(tmp_path / "photos" / "#recycle" / "old.png")
    assert scan([str(tmp_path / "photos")]).files == [str(tmp_path / "photos" / "a.png")]
