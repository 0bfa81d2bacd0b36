"""`lookalike dupes`: range search on the shards, exact copies, and an injected near copy of a real photo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from lookalike.images import decode
from lookalike.relevance import NEAR_DUPLICATE_FLOOR
from lookalike.store.vectors import VectorShard

from conftest import lookalike_cmd


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
    with Workspace.open(tmp_path / "ws", WorkspaceLayout(encoder="e", dim=4, shards=1)) as ws:
        req = Request("index", [])
        for name, vector, pixels in (("a", a, 300), ("b", b, 200), ("c", c, 100)):
            doc = Document(id=name, uri=f"/photos/{name}.jpg", width=pixels, height=pixels, size=1, mtime_ns=1)
            doc.chunks = [Chunk(kind="whole", embedding=vector)]
            req.docs.append(doc)
            req.staged.doc_ids.append(name)
            req.staged.vectors[name] = (0, doc.chunks)
        ws.commit(req)
        assert float(b @ c) >= 0.95 and float(a @ c) < 0.9
        found = find_duplicates(ws, 0.9)
    assert [g.paths for g in found.near] == [["/photos/a.jpg", "/photos/b.jpg"]]
    assert all(f.similarity >= 0.9 for g in found.near for f in g.files)
