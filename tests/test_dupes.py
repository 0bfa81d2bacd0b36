"""`lookalike dupes`: range search on the shards, exact copies, and an injected near copy of a real photo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import lookalike
from lookalike.images import decode
from lookalike.relevance import NEAR_DUPLICATE_FLOOR
from lookalike.store.vectors import VectorShard

from conftest import lookalike_cmd, one_space


def test_range_search_keeps_scores_at_or_above_the_threshold():
    shard = VectorShard(4)
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = [0.6, 0.8, 0, 0]
    shard.add(np.array([10, 11, 12, 13]), vectors)
    lims, scores, ids = shard.range_search(vectors[:2], 0.6)
    assert lims.tolist() == [0, 2, 4]
    assert dict(zip(ids[:2].tolist(), scores[:2].tolist(), strict=True)) == pytest.approx({10: 1.0, 11: 0.6})
    lims, _, ids = shard.range_search(vectors, 1.0)
    assert lims.tolist() == [0, 1, 2, 3, 4] and ids.tolist() == [10, 11, 12, 13]  # identical vectors at exactly 1
    lims, _, ids = VectorShard(4).range_search(vectors, 0.5)
    assert lims.tolist() == [0] * 5 and len(ids) == 0


# One photo from each of these classes: unrelated subjects (no mirrored pairs or colour variants).
PHOTOS = [
    "animals/birds/crow.png",
    "food/fruit/banana.png",
    "plants/flowers/daffodil.png",
    "space/planets/6_saturn.png",
    "household/tools/cementmixer.png",
    "vehicles/emergency/firetruck.png",
    "animals/insects/bee.png",
    "food/pizza.png",
]
ORIGINAL = "military/paratrooper.png"  # 917 x 975: its copy is a real downscale
EXACT = "naturalforces/lightningbolt.png"


def _dupes(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*lookalike_cmd(), "dupes", *args], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


@pytest.mark.slow
def test_dupes_finds_an_injected_copy_and_an_exact_copy(tuxpaint, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    names = [*PHOTOS, ORIGINAL, EXACT]
    for name in names:
        shutil.copy2(tuxpaint.root / name, root / name.replace("/", "_"))
    original = root / ORIGINAL.replace("/", "_")
    # The injected copy: 60% of the size, re-encoded as a JPEG at quality 80, under another name.
    img = decode(original, draft_size=None).image
    img.resize((round(img.width * 0.6), round(img.height * 0.6)), Image.Resampling.LANCZOS).save(
        root / "holiday-copy.jpg", quality=80
    )
    exact = root / EXACT.replace("/", "_")
    (root / "backup").mkdir()
    shutil.copy2(exact, root / "backup" / exact.name)

    ws = tmp_path / "ws"
    done = subprocess.run(
        [*lookalike_cmd(), "index", str(root), "-w", str(ws)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr

    result = _dupes("-w", str(ws), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # The threshold is the floor results are badged near_duplicate from (a collection this small has
    # no background to raise it).
    assert data["docs"] == len(names) + 2 and data["threshold"] == NEAR_DUPLICATE_FLOOR
    # Same pixels, size and mtime (copy2): the order falls back to the path.
    assert [g["paths"] for g in data["exact"]] == [[str(root / "backup" / exact.name), str(exact)]]
    assert data["exact"][0]["size"] == 2 and data["exact"][0]["bytes"] == exact.stat().st_size
    # Only the injected copy is a near duplicate; the original (more pixels) comes first.
    assert len(data["near"]) == 1, data["near"]
    group = data["near"][0]
    assert group["paths"] == [str(original), str(root / "holiday-copy.jpg")]
    assert group["size"] == 2 and NEAR_DUPLICATE_FLOOR <= group["similarity"] <= 1.0
    assert group["files"][0]["width"] == img.width and group["files"][1]["similarity"] == group["similarity"]

    text = _dupes("-w", str(ws))
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("1 group of exact copies (1 redundant file), 1 group of near duplicates")
    assert f"keep   {original}" in text.stdout

    # Unrelated photos score far below 0.95 (under 0.4 here): a threshold of 0.2 chains most of them
    # into one group, and 1.0 keeps only identical images.
    loose = json.loads(_dupes("-w", str(ws), "--json", "--threshold", "0.2").stdout)
    assert max(g["size"] for g in loose["near"]) > len(names) // 2
    strict = json.loads(_dupes("-w", str(ws), "--json", "--threshold", "1").stdout)
    assert strict["near"] == [] and len(strict["exact"]) == 1
    assert _dupes("-w", str(tmp_path / "nowhere")).returncode == 4


def test_a_chain_of_look_alikes_is_split_so_no_group_lists_a_file_below_its_threshold(tmp_path):
    """A like B and B like C, but A not like C: A's group holds B only; C is no near duplicate of A."""
    from lookalike.document import Chunk, Document, Request
    from lookalike.dupes import find_duplicates
    from lookalike.store.workspace import Workspace, WorkspaceLayout

    a = np.array([1.0, 0, 0, 0], np.float32)
    b = np.array([0.96, 0.28, 0, 0], np.float32)  # a.b = 0.96
    c = np.array([0.85, 0.52, 0.08, 0], np.float32)
    c /= np.linalg.norm(c)  # b.c > 0.95, a.c < 0.9
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(one_space("e", 4, 1))) as ws:
        req = Request("index", [])
        for name, vector, pixels in (("a", a, 300), ("b", b, 200), ("c", c, 100)):
            doc = Document(id=name, uri=f"/photos/{name}.jpg", width=pixels, height=pixels, size=1, mtime_ns=1)
            doc.chunks = [Chunk(kind="whole", embedding=vector)]
            req.docs.append(doc)
            req.staged.doc_ids.append(name)
            req.staged.vectors[(name, 0)] = doc.chunks
        ws.commit(req)
        assert float(b @ c) >= 0.95 and float(a @ c) < 0.9
        found = find_duplicates(ws, 0.9)
    assert [g.paths for g in found.near] == [["/photos/a.jpg", "/photos/b.jpg"]]
    assert all(f.similarity >= 0.9 for g in found.near for f in g.files)


# --- the keeper, bursts, moving and undoing ---------------------------------------------------------------


def _exif(when: str = "2024:05:01 10:00:00", subsec: str | None = None, model: str = "EOS R6") -> Image.Exif:
    """A camera's EXIF: make, model, DateTimeOriginal and (if given) SubsecTimeOriginal."""
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", model
    sub = exif.get_ifd(0x8769)
    sub[36867] = when
    if subsec is not None:
        sub[37521] = subsec
    return exif


def _moved(img: Image.Image, shift: float = 0.04) -> Image.Image:
    """The next frame of a burst: the middle third of the picture (the subject) moved right."""
    w, h = img.size
    box = (w // 3, h // 3, 2 * w // 3, 2 * h // 3)
    frame = img.copy()
    frame.paste(img.crop(box), (box[0] + round(w * shift), box[1]))
    return frame


def test_the_keeper_is_the_largest_then_the_best_described_then_the_oldest(tmp_path):
    from lookalike.document import Chunk, Document, Request
    from lookalike.dupes import find_duplicates
    from lookalike.metadata import PhotoMeta
    from lookalike.store.workspace import Workspace, WorkspaceLayout

    camera = PhotoMeta(taken_at="2020-01-01T10:00:00", taken_from="exif", make="Canon", model="EOS", iso=100)
    docs = [  # (name, side, metadata, mtime): b is largest; c and d tie on size, d has the camera's fields
        ("a", 100, PhotoMeta(), 5),
        ("b", 300, PhotoMeta(), 9),
        ("c", 200, PhotoMeta(), 1),
        ("d", 200, camera, 8),
        ("e", 100, PhotoMeta(), 3),  # as large and as bare as a, but older: before it
    ]
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(one_space("e", 4, 1))) as ws:
        req = Request("index", [])
        for name, side, meta, mtime in docs:
            doc = Document(id=name, uri=f"/p/{name}.jpg", width=side, height=side, size=1, mtime_ns=mtime * 10**18)
            doc.meta = meta.to_dict()
            doc.chunks = [Chunk(kind="whole", embedding=np.array([1.0, 0, 0, 0], np.float32))]
            req.docs.append(doc)
            req.staged.doc_ids.append(name)
            req.staged.vectors[(name, 0)] = doc.chunks
        ws.commit(req)
        found = find_duplicates(ws, 0.9)
    (group,) = found.near
    assert [f.doc_id for f in group.files] == ["b", "d", "c", "e", "a"]
    data = group.to_dict()
    assert data["kind"] == "near" and data["keep"] == "b" and data["paths"][0] == "/p/b.jpg"
    assert data["files"][1] == {
        "doc_id": "d", "path": "/p/d.jpg", "width": 200, "height": 200, "bytes": 1, "similarity": 1.0,
        "taken": "2020-01-01T10:00:00",
    }  # fmt: skip


@pytest.mark.slow
def test_an_edited_copy_is_a_near_duplicate_and_a_burst_frame_is_not(model_dir, photos, tmp_path):
    """Measured on the real model: each burst frame below scores above the near-duplicate floor
    against its first frame (so the vectors alone would group it), and is left out by the camera's
    clock (sub-second times) or, within one second and without them, by its pixels."""
    from lookalike import Options

    root = tmp_path / "photos"
    root.mkdir()
    astronaut, coffee, chelsea, rocket = (
        photos[n].convert("RGB") for n in ("astronaut", "coffee", "chelsea", "rocket")
    )
    astronaut.save(root / "astronaut.jpg", quality=92, exif=_exif())
    astronaut.resize((307, 307), Image.Resampling.LANCZOS).save(root / "astronaut-small.jpg", quality=80)  # no EXIF
    w, h = astronaut.size
    astronaut.crop((25, 25, w - 25, h - 25)).save(root / "astronaut-crop.jpg", quality=90, exif=_exif())
    coffee.save(root / "coffee-1.jpg", quality=92, exif=_exif("2024:05:01 11:00:00", "10"))
    _moved(coffee).save(root / "coffee-2.jpg", quality=92, exif=_exif("2024:05:01 11:00:00", "40"))
    chelsea.save(root / "chelsea-1.jpg", quality=92, exif=_exif("2024:05:01 12:00:00"))
    _moved(chelsea).save(root / "chelsea-2.jpg", quality=92, exif=_exif("2024:05:01 12:00:00"))
    rocket.save(root / "rocket.jpg", quality=92, exif=_exif("2024:05:01 13:00:00"))
    recoloured = Image.eval(rocket, lambda v: min(255, int(v * 1.2)))
    recoloured.save(root / "warm-rocket.jpg", quality=92, exif=_exif("2024:05:01 13:00:00"))
    with lookalike.open(Options(workspace=tmp_path / "ws")) as library:
        library.index([root])
        found = library.dupes()
        loose = library.dupes(0.85)  # below every pair's similarity: what the clock and pixels leave out
    paths = sorted(sorted(os.path.basename(p) for p in g.paths) for g in found.near)
    assert paths == [["astronaut-crop.jpg", "astronaut-small.jpg", "astronaut.jpg"], ["rocket.jpg", "warm-rocket.jpg"]]
    keepers = {os.path.basename(g.keep.path) for g in found.near}
    assert keepers == {"astronaut.jpg", "rocket.jpg"}  # the most pixels, then the most metadata, then the path
    assert found.distinct_shots == 2 and loose.distinct_shots == 2
    assert [os.path.basename(p) for p in found.near[0].paths] == [
        "astronaut.jpg",
        "astronaut-crop.jpg",
        "astronaut-small.jpg",
    ]


def _tiny_library(tmp_path, names=("a", "b", "c")):
    from lookalike import Options

    from conftest import TINY_FLOWS, quadrants

    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, name in enumerate(names):
        quadrants(i).save(root / f"{name}.png")
    quadrants(9).save(root / "sub" / "a.png")  # the same name as photos/a.png, elsewhere
    library = lookalike.open(Options(workspace=tmp_path / "ws", **TINY_FLOWS))
    library.index([root])
    return library, root


def _id(library, path) -> str:
    from lookalike.document import Document

    doc_id = Document.from_path(str(path)).id
    assert library.workspace.store.get_docs([doc_id]), path
    return doc_id


def test_move_then_undo_puts_the_files_back_byte_for_byte_and_indexes_them_again(tmp_path):
    library, root = _tiny_library(tmp_path)
    with library:
        before = {p: p.read_bytes() for p in (root / "a.png", root / "sub" / "a.png")}
        ids = [_id(library, p) for p in before]
        report = library.move(ids, str(root / "_dupes"))
        # One name, two files: the second gets a suffix; nothing is overwritten.
        assert [os.path.basename(m.target) for m in report.moves] == ["a.png", "a-1.png"]
        assert all(not p.exists() for p in before) and sorted(os.listdir(root / "_dupes")) == ["a-1.png", "a.png"]
        assert library.workspace.store.get_docs(ids) == {}
        # The next index run leaves the moved files out, and says so.
        again = library.index([root])
        assert again.indexed == 0 and again.set_aside == 2 and library.workspace.store.get_docs(ids) == {}
        assert [b.batch for b in library.moves()] == [report.batch]

        back = library.undo_move()
        assert back.batch == report.batch and back.index is not None and back.index.indexed == 2
        assert {p: p.read_bytes() for p in before} == before and os.listdir(root / "_dupes") == []
        assert set(library.workspace.store.get_docs(ids)) == set(ids)
        assert library.index([root]).set_aside == 0
        with pytest.raises(lookalike.NotFound, match="nothing to undo"):
            library.undo_move()
        with pytest.raises(lookalike.BadInput, match="already undone"):
            library.undo_move(report.batch)


def test_a_folder_indexed_through_a_link_keeps_its_moved_files_out(tmp_path):
    """~/Pictures -> /data/pics: the log holds where the files really went, the scan walks the
    linked name; a moved file must stay out all the same."""
    from lookalike import Options

    from conftest import TINY_FLOWS, quadrants

    real = tmp_path / "real"
    real.mkdir()
    for i in range(3):
        quadrants(i).save(real / f"p{i}.png")
    linked = tmp_path / "linked"
    linked.symlink_to(real, target_is_directory=True)
    with lookalike.open(Options(workspace=tmp_path / "ws", **TINY_FLOWS)) as library:
        library.index([linked])
        doc_id = _id(library, linked / "p0.png")
        library.move([doc_id], str(linked / "_dupes"))
        again = library.index([linked])
        assert again.set_aside == 1 and again.indexed == 0
        assert library.workspace.store.get_docs([doc_id]) == {}


def test_a_move_log_line_cut_short_by_a_crash_loses_nothing_else(tmp_path):
    library, root = _tiny_library(tmp_path)
    with library:
        first = library.move([_id(library, root / "a.png")], "one")
        log = library.workspace.path / "moves.jsonl"
        with open(log, "ab") as f:
            f.write(b'{"op": "move", "batch": "cut')  # a crash mid-write
        second = library.move([_id(library, root / "b.png")], "two")
        third = library.move([_id(library, root / "c.png")], "three")
        assert [b.batch for b in library.moves()] == [first.batch, second.batch, third.batch]
        again = library.index([root])  # indexing goes on, and what moved stays out
        assert again.indexed == 0 and again.unchanged == 1  # photos/sub/a.png
        assert library.undo_move().batch == third.batch


def test_a_relative_folder_is_inside_the_trash_and_a_name_taken_on_undo_is_kept(tmp_path):
    library, root = _tiny_library(tmp_path)
    with library:
        doc_id = _id(library, root / "b.png")
        original = (root / "b.png").read_bytes()
        moved = library.move([doc_id], "dupes/2024")
        assert moved.moves[0].target == str((tmp_path / "ws" / "trash" / "dupes" / "2024" / "b.png").resolve())
        (root / "b.png").write_bytes(b"a new file took the name")
        back = library.undo_move(moved.batch)
        assert back.moves[0].target == str(root / "b-1.png") and (root / "b-1.png").read_bytes() == original
        assert (root / "b.png").read_bytes() == b"a new file took the name"


@pytest.mark.parametrize(
    "folder, message",
    [
        ("../x", "may not climb out with '..'"),
        ("dupes/../../x", "may not climb out with '..'"),
        ("/tmp/lookalike-elsewhere", "is outside the indexed folders and the trash folder"),
        ("{root}/../elsewhere", "may not climb out"),
        ("{root}/link-out", "leads out of the indexed folders through a symbolic link"),
        ("{root}/link-out/inner", "leads out of the indexed folders through a symbolic link"),
        ("{root}/c.png", "is a file, not a folder"),
        ("{ws}", "is inside the workspace"),
        ("{ws}/shard-0", "is inside the workspace"),
        ("", "name the folder"),
        ("  ", "name the folder"),
    ],
)
def test_a_move_anywhere_else_is_refused_and_nothing_moves(tmp_path, folder, message):
    library, root = _tiny_library(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link-out").symlink_to(outside)
    with library:
        doc_id = _id(library, root / "a.png")
        with pytest.raises(lookalike.BadInput, match=re.escape(message)):
            library.move([doc_id], folder.format(root=root, ws=tmp_path / "ws"))
        assert (root / "a.png").exists() and library.workspace.store.get_docs([doc_id])
        assert list(outside.iterdir()) == [] and library.moves() == []
        assert not (tmp_path / "elsewhere").exists() and not os.path.exists("/tmp/lookalike-elsewhere")


def test_a_file_changed_or_gone_since_indexing_is_refused_and_nothing_moves(tmp_path):
    library, root = _tiny_library(tmp_path)
    with library:
        a, b, c = (_id(library, root / f"{n}.png") for n in "abc")
        os.utime(root / "b.png", ns=(1, 1))
        with pytest.raises(lookalike.BadInput, match=r"b\.png changed since it was indexed"):
            library.move([a, b], "dupes")
        (root / "c.png").unlink()
        with pytest.raises(lookalike.BadInput, match=r"c\.png is gone"):
            library.move([a, c], "dupes")
        with pytest.raises(lookalike.NotFound, match="no indexed document 'nope'"):
            library.move([a, "nope"], "dupes")
        assert (root / "a.png").exists() and library.moves() == [] and not (tmp_path / "ws" / "trash").exists()


@pytest.mark.slow
def test_dupes_move_to_and_undo_through_the_cli(model_dir, photos, tmp_path):
    root = tmp_path / "photos"
    (root / "backup").mkdir(parents=True)
    photos["coffee"].save(root / "coffee.jpg", quality=92)
    photos["coffee"].resize((300, 200), Image.Resampling.LANCZOS).save(root / "coffee-small.jpg", quality=80)
    photos["chelsea"].save(root / "chelsea.jpg", quality=92)
    shutil.copy2(root / "chelsea.jpg", root / "backup" / "chelsea.jpg")
    ws = tmp_path / "ws"
    done = subprocess.run([*lookalike_cmd(), "index", str(root), "-w", str(ws)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    originals = {p: p.read_bytes() for p in (root / "coffee-small.jpg", root / "chelsea.jpg")}

    moved = _dupes("-w", str(ws), "--move-to", str(root / "_dupes"))
    assert moved.returncode == 0, moved.stderr
    batch = re.search(r"^undo with: lookalike dupes --undo (\S+)$", moved.stdout, re.MULTILINE).group(1)
    assert f"moved 2 files out of the index (batch {batch}):" in moved.stdout
    assert f"  {root / 'coffee-small.jpg'} -> {root / '_dupes' / 'coffee-small.jpg'}" in moved.stdout
    assert sorted(os.listdir(root / "_dupes")) == ["chelsea.jpg", "coffee-small.jpg"]  # backup/ sorts first: kept
    again = subprocess.run([*lookalike_cmd(), "index", str(root), "-w", str(ws)], capture_output=True, text=True)
    assert "2 files left out: moved as duplicates" in again.stdout and again.stdout.startswith("0 indexed")
    assert json.loads(_dupes("-w", str(ws), "--json").stdout)["docs"] == 2

    listed = json.loads(_dupes("-w", str(ws), "--moves", "--json").stdout)["batches"]
    assert [b["batch"] for b in listed] == [batch] and listed[0]["undone"] == 0
    undone = _dupes("-w", str(ws), "--undo", "--json")
    assert undone.returncode == 0, undone.stderr
    assert json.loads(undone.stdout)["index"]["indexed"] == 2
    assert {p: p.read_bytes() for p in originals} == originals
    assert json.loads(_dupes("-w", str(ws), "--json").stdout)["docs"] == 4
    nothing = _dupes("-w", str(ws), "--undo", batch)
    assert nothing.returncode == 5 and nothing.stderr.strip() == f"error: batch {batch} was already undone"
    both = _dupes("-w", str(ws), "--undo", "--move-to", "x")
    assert both.returncode == 2 and "give one of --move-to, --undo and --moves" in both.stderr
    outside = _dupes("-w", str(ws), "--move-to", str(tmp_path / "elsewhere"))
    assert outside.returncode == 5 and "is outside the indexed folders" in outside.stderr
