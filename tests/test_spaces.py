"""Named vector spaces in one workspace: a flow's vector indexers each hold their own space, the
manifest records them in order, a workspace from before spaces opens as one ``image`` space without
rebuilding anything, and what cannot be mixed is refused with how to fix it. On the tiny encoder:
the model is beside the point here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lookalike
from lookalike import Options, SearchRequest
from lookalike.errors import ConfigError, StoreError
from lookalike.flow.config import load_flow_text
from lookalike.flow.graph import Flow
from lookalike.store.spaces import VectorSpace

from conftest import TINY_FLOWS, quadrants

TINY = Path(__file__).parent / "fixtures" / "tiny"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        quadrants(i).save(folder / f"p{i}.png")
    return folder


def _two_spaces(tmp_path: Path) -> Path:
    """The tiny index flow with a second branch: the same encoder into a space of its own."""
    text = (TINY / "index.yml").read_text().replace("tiny_encoder.py", str(TINY / "tiny_encoder.py"))
    text = text.replace(
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer]}",
        "  normalizer2:   {uses: ImageNormalizer, needs: loader}\n"
        f"  encoder2:      {{uses: TinyEncoder, py_modules: {TINY / 'tiny_encoder.py'}}}\n"
        "  other_indexer: {uses: VectorIndexer, space: other, shards: 3}\n"
        "  doc_indexer:   {uses: DocIndexer, needs: loader}\n"
        "  join_all:      {uses: _merge, needs: [doc_indexer, chunk_indexer, other_indexer]}",
    )
    path = tmp_path / "two.yml"
    path.write_text(text)
    return path


def _set_image_shards(flow: Path, shards: int) -> None:
    old = "chunk_indexer: {uses: VectorIndexer, shards: 2}"
    flow.write_text(flow.read_text().replace(old, f"chunk_indexer: {{uses: VectorIndexer, shards: {shards}}}"))


def test_each_vector_indexer_fills_its_own_space_and_shards(photos, tmp_path):
    flow = _two_spaces(tmp_path)
    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws, index_flow=flow, query_flow=TINY_FLOWS["query_flow"])) as library:
        library.index([photos])
        spaces = library.workspace.spaces
        assert list(spaces) == ["image", "other"] and (spaces["image"].shards, spaces["other"].shards) == (2, 3)
        info = library.info()
        assert info.problems == []
        assert info.info.chunks == 12 and sum(info.info.shards.values()) == 12
        assert set(info.info.shards) == {"0", "1", "other/0", "other/1", "other/2"}
        hits = library.search(SearchRequest(image=str(photos / "p3.png"), top_k=2)).hits
        assert hits[0].path.endswith("p3.png")
    manifest = json.loads((ws / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and [s["name"] for s in manifest["spaces"]] == ["image", "other"]
    assert sorted(p.name for p in ws.glob("*shard-*")) == [
        "other-shard-0",
        "other-shard-1",
        "other-shard-2",
        "shard-0",
        "shard-1",
    ]


def test_two_pods_cannot_store_one_space(tmp_path):
    text = (
        (TINY / "index.yml")
        .read_text()
        .replace("  doc_indexer:", "  again:         {uses: VectorIndexer, needs: encoder}\n  doc_indexer:")
        .replace("needs: [doc_indexer, chunk_indexer]", "needs: [doc_indexer, chunk_indexer, again]")
    )
    loaded = load_flow_text(text, "two.yml", TINY)
    with pytest.raises(ConfigError, match=r"two.yml:\d+: pods.again.space: another pod already stores the 'image'"):
        Flow(loaded).spaces()


def test_a_workspace_from_before_spaces_opens_as_its_image_space_without_a_rebuild(photos, tmp_path):
    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws, **TINY_FLOWS)) as library:
        library.index([photos])
        identity = library.workspace.store.identity
    # The manifest as format 1 wrote it: one space, described at the top level.
    data = json.loads((ws / "manifest.json").read_text())
    (space,) = data.pop("spaces")
    data |= {k: space[k] for k in ("encoder", "dim", "metric", "shards")} | {"format_version": 1}
    (ws / "manifest.json").write_text(json.dumps(data))
    with lookalike.open(Options(workspace=ws), write=False) as library:
        assert library.search(SearchRequest(image=str(photos / "p1.png"), top_k=1)).hits[0].path.endswith("p1.png")
    with lookalike.open(Options(workspace=ws)) as library:
        assert library.index([photos]).unchanged == 6
        assert library.workspace.store.identity == identity  # the same vectors: no shard rebuilt
    assert json.loads((ws / "manifest.json").read_text())["format_version"] == 2


def test_a_faces_only_workspace_from_before_says_how_to_index_it_again(photos, tmp_path):
    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws, **TINY_FLOWS)) as library:
        library.index([photos])
    data = json.loads((ws / "manifest.json").read_text())
    (space,) = data.pop("spaces")
    data |= {k: space[k] for k in ("encoder", "dim", "metric", "shards")}
    data |= {"format_version": 1, "preset": "faces"}
    (ws / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(StoreError, match=r"holds faces only.*lookalike index --reset --faces"):
        lookalike.open(Options(workspace=ws), write=False)
    with lookalike.open(Options(workspace=ws, **TINY_FLOWS), reset=True) as library:  # as --reset does
        assert library.index([photos]).indexed == 6


def test_adding_a_space_to_indexed_photos_asks_for_a_reset(photos, tmp_path):
    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws, **TINY_FLOWS)) as library:
        library.index([photos])
    two = Options(workspace=ws, index_flow=_two_spaces(tmp_path), query_flow=TINY_FLOWS["query_flow"])
    with pytest.raises(StoreError, match=r"holds 6 photos indexed without 'other' vectors.*--reset"):
        lookalike.open(two)
    with lookalike.open(two, reset=True) as library:
        library.index([photos])
        assert list(library.workspace.spaces) == ["image", "other"] and library.info().problems == []


def test_resharding_one_space_moves_only_its_vectors(photos, tmp_path):
    flow = _two_spaces(tmp_path)
    ws = tmp_path / "ws"
    opts = Options(workspace=ws, index_flow=flow, query_flow=TINY_FLOWS["query_flow"])
    with lookalike.open(opts) as library:
        library.index([photos])
    _set_image_shards(flow, 4)
    with lookalike.open(opts) as library:
        spaces = library.workspace.spaces
        assert (spaces["image"].shards, spaces["other"].shards) == (4, 3)
        info = library.info()
        assert info.problems == [] and info.info.chunks == 12
        assert sum(v for k, v in info.info.shards.items() if k.startswith("other/")) == 6
        hits = library.search(SearchRequest(image=str(photos / "p4.png"), top_k=1)).hits
        assert hits[0].path.endswith("p4.png")


def test_a_reshard_whose_manifest_write_failed_is_not_made_twice(photos, tmp_path, monkeypatch):
    from lookalike.store.manifest import Manifest

    flow = _two_spaces(tmp_path)
    ws = tmp_path / "ws"
    opts = Options(workspace=ws, index_flow=flow, query_flow=TINY_FLOWS["query_flow"])
    with lookalike.open(opts) as library:
        library.index([photos])
    flow.write_text(
        flow.read_text().replace(
            "chunk_indexer: {uses: VectorIndexer, shards: 2}", "chunk_indexer: {uses: VectorIndexer, shards: 3}"
        )
    )
    real_write, calls = Manifest.write, []

    def fail_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("disk full (the test's)")
        real_write(self)

    monkeypatch.setattr(Manifest, "write", fail_once)
    with pytest.raises(StoreError, match="disk full"):
        lookalike.open(opts)  # the chunks moved (committed), the manifest still says 2 shards
    with lookalike.open(opts) as library:
        info = library.info()
        assert info.problems == [] and library.workspace.spaces["image"].shards == 3
        assert sum(v for k, v in info.info.shards.items() if not k.startswith("other/")) == 6


def test_a_flow_that_names_no_encoder_keeps_the_recorded_one(photos, tmp_path):
    from lookalike.store.workspace import Workspace, WorkspaceLayout

    ws = tmp_path / "ws"
    with lookalike.open(Options(workspace=ws, **TINY_FLOWS)) as library:
        library.index([photos])
        recorded = library.workspace.encoder
    space = library.workspace.spaces["image"]
    with Workspace.open(ws, WorkspaceLayout({"image": VectorSpace(None, space.dim, space.metric, 0)})) as opened:
        assert opened.encoder == recorded
    with pytest.raises(StoreError, match="was built with encoder"):
        Workspace.open(ws, WorkspaceLayout({"image": VectorSpace("another", space.dim, space.metric, 0)}))
