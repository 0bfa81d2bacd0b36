"""Search quality: WordNet tags, match levels and the relevance cutoff, on real tuxpaint photos."""

from __future__ import annotations

import io
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

import lookalike
from lookalike import Options, SearchRequest
from lookalike.descriptors import alpha_qe_search, database_augment
from lookalike.models.wordnet import concept, suggest, table
from lookalike.relevance import LEVELS, Calibration, at_least

from conftest import copy_photos, lookalike_cmd

# --- WordNet tags (no model needed) -------------------------------------------------------------


def test_a_word_names_every_imagenet_class_beneath_it_in_wordnet():
    dog, bird = concept("dog"), concept("Birds ")  # a plural, in any case, with spaces
    assert dog is not None and bird is not None
    assert bird.word == "bird"
    assert len(dog.classes) == 118 and "golden retriever" in dog.labels  # ImageNet's 118 dog breeds
    assert {"goldfinch", "bald eagle", "ostrich"} <= set(bird.labels) and len(bird.classes) == 59
    assert not set(dog.labels) & set(bird.labels)
    assert "ambulance" in concept("vehicles").labels
    assert {"banana", "Granny Smith"} <= set(concept("fruit").labels)
    assert "daisy" in concept("flowers").labels
    assert concept("geese").word == "goose"  # WordNet's irregular plural
    assert concept("no such word") is None
    assert "Derived by scripts/make_wordnet_tags.py from WordNet 3.0" in table()["source"]


def test_prefix_suggestions_put_the_broadest_words_first():
    words = [w for w, _ in suggest("bi")]
    assert words[0] == "bird" and all(w.startswith("bi") or " bi" in f" {w}" for w in words)
    assert dict(suggest("retriev"))["golden retriever"] == 1
    assert suggest("   ") == [] and suggest("zzzz") == []


# --- neighbourhood methods and the calibration (no model needed) --------------------------------


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_query_expansion_pulls_in_the_neighbours_of_the_neighbours():
    # A chain: q ~ a ~ b, with b far from q. Expanding q by its nearest neighbour (a) moves it
    # towards b, so b overtakes c (which plain search ranks above b).
    q = np.array([[1.0, 0.0, 0.0]])
    a, b, c = [0.9, 0.43, 0.0], [0.45, 0.89, 0.0], [0.55, 0.0, 0.83]
    gallery = _unit(np.array([a, b, c]))
    plain = (_unit(q) @ gallery.T)[0]
    expanded = alpha_qe_search(_unit(q), gallery, k=1, alpha=1.0)[0]
    assert plain[2] > plain[1] and expanded[1] > expanded[2]
    augmented = database_augment(gallery, k=1, alpha=1.0)
    assert np.allclose(np.linalg.norm(augmented, axis=1), 1.0, atol=1e-5)


def test_calibration_levels_follow_the_collection_and_the_query(tmp_path):
    rng = np.random.default_rng(0)
    background = _unit(rng.normal(size=(500, 64)))
    cal = Calibration.fit(background, "enc:1", docs=500)
    assert -0.2 < cal.median < 0.2 and cal.median < cal.q99 < cal.q999 < 0.6
    # a copy, an edited copy, a neighbour near the query's best, one far below it, noise
    levels = cal.levels([0.99, 0.9, 0.6, 0.55, 0.3, 0.05])
    assert levels == ["same", "near_duplicate", "similar", "similar", "weak", "weak"]
    # the same score is "similar" for a query whose neighbours are all distant, and not for one
    # with a close neighbour: the query's own curve decides
    assert cal.levels([0.4])[0] == "similar" and cal.levels([0.75, 0.4])[1] == "weak"
    cal.save(tmp_path)
    assert Calibration.load(tmp_path) == cal
    assert not cal.stale("enc:1", 550) and cal.stale("enc:1", 700) and cal.stale("enc:2", 500)
    (tmp_path / "calibration.json").write_text("{not json")
    assert Calibration.load(tmp_path) is None
    assert [lv for lv in LEVELS if at_least(lv, "similar")] == ["same", "near_duplicate", "similar"]


# --- on real photos, with the real model --------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(tuxpaint, tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    classes = ["animals/birds", "food/fruit", "space/planets", "town/roadsigns"]
    photos = copy_photos(tuxpaint, root / "photos", per_class=8, classes=classes)
    with lookalike.open(Options(workspace=root / "ws")) as library:
        library.index([root / "photos"])
    return root, photos


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_tag_search_for_bird_finds_birds_of_every_species_and_stops_there(indexed):
    root, photos = indexed
    birds = {str(p) for p in photos if "/animals/birds/" in str(p)}
    with lookalike.open(Options(workspace=root / "ws"), write=False) as library:
        report = library.search(SearchRequest(tag="bird", top_k=50))
        by_label = library.search(SearchRequest(tag="goldfinch", top_k=50)).hits
    found = report.hits
    uris = [r.path for r in found]
    assert [r.score for r in found] == sorted((r.score for r in found), reverse=True)
    assert len(set(uris) & birds) >= 5, (uris, birds)  # most of the 8 species, each under its own leaf class
    # The list ends where the birds end: no fruit, planet or road sign padded in at a few percent.
    assert set(uris) <= birds and report.total == len(found) and min(r.score for r in found) >= 0.5
    assert {u for u in (r.path for r in by_label)} <= set(uris)  # a leaf is under its ancestor
    # Suggestions are the collection's words, with the photos a tag search for each finds.
    with lookalike.open(Options(workspace=root / "ws"), write=False) as library:
        words = library.tag_words("bi", 10)
        assert words and words[0].word == "bird" and words[0].photos == report.total
        assert all(w.photos > 0 and w.word.startswith("bi") or " bi" in f" {w.word}" for w in words)


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_every_result_carries_a_match_level_and_min_match_cuts_on_it(indexed):
    root, photos = indexed
    bird = next(p for p in photos if "/animals/birds/" in str(p))
    with Image.open(bird) as img:
        buf = io.BytesIO()
        img.convert("RGBA").save(buf, "PNG", optimize=True)  # the same picture in another file
    with Image.open(bird) as img:
        jpeg = io.BytesIO()
        flat = Image.new("RGB", img.size, (255, 255, 255))
        flat.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        flat.save(jpeg, "JPEG", quality=75)  # re-encoded, onto the white the preprocessing uses
    with lookalike.open(Options(workspace=root / "ws"), write=False) as library:
        queries = [str(bird), buf.getvalue(), jpeg.getvalue()]
        [same, copy, reencoded] = [
            r.hits for r in library.search_many(SearchRequest(image=q, top_k=32) for q in queries)
        ]
        cut = library.search(SearchRequest(image=str(bird), top_k=32, min_match="similar")).hits
        assert (root / "ws" / "calibration.json").is_file()  # fitted on this collection, kept in it
    assert same[0].path == str(bird) and same[0].match == "same"
    assert copy[0].path == str(bird) and copy[0].match == "same"
    assert reencoded[0].path == str(bird) and reencoded[0].match in ("same", "near_duplicate"), reencoded[0]
    levels = [r.match for r in same]
    assert set(levels) <= set(LEVELS) and "weak" in levels  # 32 of 32 photos: most are not alike
    assert [LEVELS.index(lv) for lv in levels] == sorted(LEVELS.index(lv) for lv in levels)  # by score
    assert cut == [r for r in same if r.match != "weak"]


@pytest.mark.slow
def test_cli_min_match_and_tag(indexed):
    root, photos = indexed
    bird = next(p for p in photos if "/animals/birds/" in str(p))
    ws = str(root / "ws")
    done = subprocess.run(
        [*lookalike_cmd(), "search", str(bird), "-w", ws, "-k", "32", "--min-match", "similar", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert results and all(r["match"] in ("same", "near_duplicate", "similar") for r in results)
    done = subprocess.run(
        [*lookalike_cmd(), "search", "--tag", "birds", "-w", ws], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "59 ImageNet classes" in done.stdout and "animals/birds" in done.stdout
    done = subprocess.run([*lookalike_cmd(), "search", "-w", ws], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--tag" in done.stderr and "Traceback" not in done.stderr
    both = [*lookalike_cmd(), "search", "--tag", "bird", "--min-match", "similar", "-w", ws]
    done = subprocess.run(both, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--min-match cannot be used with --tag" in done.stderr


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_the_graphs_pooling_heads_equal_the_reference_poolings(encoder, tuxpaint):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from lookalike.descriptors import pool
    from lookalike.images import load_tensor
    from lookalike.models.encoder import EfficientNetEncoder

    graph = onnx.load(str(encoder.compiled.onnx_path))
    graph.graph.output.append(helper.make_tensor_value_info("_conv_head.relu6", TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = np.stack([load_tensor(p) for p in sorted(tuxpaint.images)[::40]])
    features = session.run(["_conv_head.relu6"], {"input": batch})[0]
    assert features.shape == (len(batch), 1280, 7, 7)
    for pooling in ("rmac", "gem", "avg"):
        model = EfficientNetEncoder(pooling=pooling, cache_dir=encoder.compiled.onnx_path.parent)
        np.testing.assert_allclose(model.encode_tensors(batch)[0], pool(features, pooling), atol=1e-5)
    assert EfficientNetEncoder(pooling="rmac").fingerprint.endswith(":rmac")


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_expansion_ranks_but_scores_stay_the_cosine_to_the_query(indexed, encoder):
    root, photos = indexed
    bird = next(p for p in photos if "/animals/birds/" in str(p))
    query = encoder.encode([str(bird)])[0][0]
    with lookalike.open(Options(workspace=root / "ws"), write=False) as library:
        ten = library.search(SearchRequest(image=str(bird), top_k=10)).hits
        one = library.search(SearchRequest(image=str(bird), top_k=1)).hits
        similar = library.search(SearchRequest(like=ten[1].doc_id, top_k=10, exclude_self=False)).hits
        others = library.search(SearchRequest(like=ten[1].doc_id, top_k=10)).hits
        ids, vecs = library.workspace.store.vectors_by_doc(library.workspace.dim)
    assert one[0].doc_id == ten[0].doc_id  # top_k does not change what the query is expanded with
    cosine = dict(zip(ids, (vecs @ query).tolist(), strict=True))
    assert all(abs(r.score - cosine[r.doc_id]) < 2e-3 for r in ten)  # float16 storage
    assert similar[0].doc_id == ten[1].doc_id  # itself, then the rest
    assert similar[0].match == "same" and len(similar) == 10
    assert ten[1].doc_id not in {r.doc_id for r in others} and len(others) == 10  # "more like this" leaves it out


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_calibration_samples_sparse_ids_and_is_dropped_by_a_reset(indexed, tmp_path):
    import shutil

    root, photos = indexed
    ws = tmp_path / "ws"
    shutil.copytree(root / "ws", ws)
    with lookalike.open(Options(workspace=ws), write=False) as library:
        store = library.workspace.store
        every = store.sample_embeddings(1000, 1280)
        assert len(every) == len(photos)
        assert len(store.sample_embeddings(5, 1280)) == 5
        library.searcher.levels.calibration()
    assert (ws / "calibration.json").is_file()
    with lookalike.open(Options(workspace=ws), reset=True):
        assert not (ws / "calibration.json").exists()


@pytest.mark.slow  # indexes real photos: the full suite, not the fast tier
def test_a_photo_from_outside_the_collection_is_said_to_be_weak(indexed, photos):
    """A coffee cup among birds, fruit, planets and road signs: every result is weak, and the report
    says so; a photo of the collection (its best match is itself) is not."""
    root, indexed_photos = indexed
    with lookalike.open(Options(workspace=root / "ws"), write=False) as library:
        buf = io.BytesIO()
        photos["coffee"].save(buf, "PNG")
        outside = library.search(SearchRequest(image=buf.getvalue(), top_k=8))
        bird = next(p for p in indexed_photos if "/animals/birds/" in str(p))
        inside = library.search(SearchRequest(image=str(bird), top_k=8))
    assert outside.weak and all(h.match == "weak" for h in outside.hits)
    assert not inside.weak
    for report in (outside, inside):
        scores = [h.score for h in report.hits]
        assert scores == sorted(scores, reverse=True) and all(h.similarity <= 1.0 for h in report.hits)
