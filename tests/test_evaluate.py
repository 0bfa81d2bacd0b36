"""`lookalike eval`: the metrics against hand-computed rankings, then the real command on tuxpaint photos."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike
from lookalike import IndexRequest, Options
from lookalike.document import doc_id_for
from lookalike.errors import BadInput, ConfigError
from lookalike.evaluate import (
    SINGLE_EDITS,
    TRANSFORMS,
    average_precision,
    copy_detection,
    eval_flows,
    evaluate,
    leave_one_out,
    precision_at_k,
    ranking_metrics,
    select,
    variants,
)
from lookalike.executors.histogram import histograms
from lookalike.images import load_tensor

from conftest import REPO, copy_photos, lookalike_cmd, solid

TINY = REPO / "tests" / "fixtures" / "tiny"

# --- metrics on rankings worked out by hand -------------------------------------------------------


def test_precision_and_average_precision_of_one_ranking():
    ranking = [True, False, True, False, False, True]  # relevant at ranks 1, 3 and 6
    assert precision_at_k(ranking, 1) == 1.0
    assert precision_at_k(ranking, 2) == 0.5
    assert precision_at_k(ranking, 5) == pytest.approx(2 / 5)
    assert precision_at_k(ranking, 10) == pytest.approx(3 / 10)  # a short ranking still divides by k
    assert average_precision(ranking) == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    assert average_precision([False, False, True]) == pytest.approx(1 / 3)
    assert average_precision([False, False]) == 0.0
    assert average_precision([True, True, False]) == 1.0


def test_average_precision_over_a_ranking_cut_short_counts_the_missed_relevant_as_zero():
    ap, _ = ranking_metrics(np.array([[True, False, True]]), total=np.array([4]))
    assert ap == pytest.approx([(1 / 1 + 2 / 3) / 4])


def test_ranking_metrics_is_row_wise():
    ap, p = ranking_metrics(
        np.array([[True, False, True, False, False, True], [False, True, False, False, False, False]])
    )
    assert ap == pytest.approx([(1 + 2 / 3 + 3 / 6) / 3, 0.5])
    assert p[1] == pytest.approx([1.0, 0.0]) and p[5] == pytest.approx([0.4, 0.2])


def test_leave_one_out_on_known_vectors():
    # Four unit vectors on a quarter circle; classes a, a, b, b.
    vectors = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
    loo = leave_one_out(vectors, ["a", "a", "b", "b"])
    # Query 0 ranks [1, 2, 3]: its one relevant image first. Query 1 ranks [2, 0, 3]: relevant second.
    assert loo.ap == pytest.approx([1.0, 0.5, 0.5, 1.0])
    assert loo.precision[1] == pytest.approx([1, 0, 0, 1])
    assert loo.precision[5] == pytest.approx([0.2] * 4)
    assert loo.top.tolist() == [[1, 2, 3], [2, 0, 3], [1, 3, 0], [2, 1, 0]]
    assert loo.top_scores[1] == pytest.approx([0.96, 0.8, 0.6])
    with pytest.raises(BadInput):
        leave_one_out(vectors[:1], ["a"])


def test_select_leaves_out_small_classes_and_samples_with_a_seed():
    labels = {f"/d/{c}/{i}.png": c for c, n in (("big", 30), ("mid", 9), ("small", 3)) for i in range(n)}
    kept, classes, images = select(labels, 9)
    assert len(kept) == 39 and (classes, images) == (1, 3)
    capped, _, _ = select(labels, 9, max_per_class=10, seed=1)
    assert len(capped) == 19 and capped == select(labels, 9, max_per_class=10, seed=1)[0]
    assert capped != select(labels, 9, max_per_class=10, seed=2)[0]
    assert all(p in labels for p in capped)


def test_histogram_baseline_sees_colours():
    red, red2, blue = (load_tensor(solid(c)) for c in ((250, 10, 10), (240, 20, 20), (10, 10, 250)))
    v = histograms(np.stack([red, red2, blue]))
    assert v.shape == (3, 512) and np.allclose(np.linalg.norm(v, axis=1), 1.0)
    assert v[0] @ v[1] == pytest.approx(1.0) and v[0] @ v[2] == pytest.approx(0.0)


def test_every_transform_makes_a_model_input():
    img = Image.new("RGBA", (300, 200), (0, 0, 0, 0))
    img.paste((200, 30, 30, 255), (50, 50, 250, 150))
    tensors = np.stack([load_tensor(copy) for copy in variants(img)])  # each copy is an image file
    assert tensors.shape == (len(TRANSFORMS), 3, 224, 224) and np.isfinite(tensors).all()
    assert len({t.tobytes() for t in tensors}) == len(TRANSFORMS)  # every transform changes the pixels


def test_copy_detection_with_the_histogram_through_the_search_path(tmp_path):
    colours = [((255, 0, 0), (0, 0, 255)), ((0, 160, 0), (250, 220, 0)), ((255, 255, 255), (20, 20, 20))]
    paths = []
    for n, (left, right) in enumerate(colours + [((9, 9, 9), (99, 99, 99))]):
        img = Image.new("RGB", (200, 100), left)
        img.paste(right, (100, 0, 200, 100))
        paths.append(str(tmp_path / f"{n}.png"))
        img.save(paths[-1])
    index_flow, query_flow = eval_flows(None, "histogram", tmp_path)
    options = Options(workspace=tmp_path / "ws", index_flow=index_flow, query_flow=query_flow)
    with lookalike.open(options) as library:
        library.index(IndexRequest(tuple(paths)))
        Path(paths[-1]).unlink()  # indexed once, deleted since: left out, not a failure
        result = copy_detection(library, paths, [doc_id_for(p) for p in paths])
    assert result.images == 3 and set(result.top1) == set(TRANSFORMS)
    # The same histogram: 1 to within the stored vectors' float16.
    assert result.top1["flip"] == 1.0 and result.similarity["flip"] == pytest.approx(1.0, abs=1e-4)
    assert all(0.0 <= v <= 1.0 for v in result.top1.values())


def test_eval_through_the_search_path_equals_the_exact_reference_without_expansion(tmp_path):
    """With query expansion off, what eval measures through the product is exact cosine ranking."""
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for label in ("reds", "blues", "greens"):
        base = {"reds": (200, 40, 40), "blues": (40, 40, 200), "greens": (40, 200, 40)}[label]
        (root / label).mkdir(parents=True)
        for i in range(4):
            arr = np.clip(np.array(base) + rng.integers(-60, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / label / f"{i}.png")
    flow = TINY / "index.yml"
    result = evaluate(root, flow=flow, min_class_size=3, options=Options(query_expansion=0), workspace=tmp_path / "ws")
    with lookalike.open(Options(workspace=tmp_path / "ws"), write=False) as library:
        ids, vectors = library.workspace.store.vectors_by_doc(library.workspace.dim)
    by_id = dict(zip(ids, vectors, strict=True))
    reference = leave_one_out(np.stack([by_id[doc_id_for(p)] for p in result.paths]), result.labels)
    assert result.loo.ap == pytest.approx(reference.ap) and result.loo.top.tolist() == reference.top.tolist()
    assert result.metrics()["p_at_1"] == pytest.approx(float(reference.precision[1].mean()))


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        evaluate(tmp_path, min_class_size=1)
    with pytest.raises(ConfigError):
        evaluate(tmp_path, encoder="clip")
    with pytest.raises(ConfigError, match="drop --flow"):
        evaluate(tmp_path, encoder="histogram", flow=tmp_path / "index.yml")
    (tmp_path / "a").mkdir()
    solid((1, 2, 3)).save(tmp_path / "a" / "one.png")
    with pytest.raises(BadInput, match="no class"):
        evaluate(tmp_path, encoder="histogram")


# --- the real command on real photos --------------------------------------------------------------

CLASSES = ["animals/birds", "food/fruit", "plants/flowers", "town/roadsigns", "seasonal/christmas"]


def _eval(*args: str) -> dict:
    done = subprocess.run(
        [*lookalike_cmd(), "eval", *args, "--json"], capture_output=True, text=True, timeout=600, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_eval_end_to_end_beats_the_histogram(tuxpaint, tmp_path):
    root = tmp_path / "photos"
    photos = copy_photos(tuxpaint, root, per_class=9, classes=CLASSES)
    copy_photos(tuxpaint, root, per_class=3, classes=["space/planets"])  # too small a class: left out
    broken = root / "animals/birds/broken.png"  # a truncated file: reported, not counted
    broken.write_bytes(photos[-1].read_bytes()[:300])
    plot, report = tmp_path / "p.png", tmp_path / "r.html"
    data = _eval(str(root), "--plot", str(plot), "--robustness", "--report", str(report))

    assert data["encoder"] == "efficientnet-lite0 (rmac pooling)" and data["images"] == 45 and data["classes"] == 5
    assert data["left_out"] == {"classes": 1, "images": 3}
    assert [s["path"] for s in data["skipped"]] == [str(broken)] and "truncated" in data["skipped"][0]["reason"]
    m = data["metrics"]
    assert set(m) == {"p_at_1", "p_at_5", "p_at_10", "map"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert m["p_at_10"] <= 0.8 + 1e-9  # 8 relevant images per query: P@10 cannot pass 0.8
    assert m["p_at_1"] > 0.6 and m["map"] > 0.5  # far above chance (0.2) on these classes
    assert [c["label"] for c in data["per_class"]] == sorted(CLASSES)
    assert all(c["images"] == 9 for c in data["per_class"])
    rob = data["robustness"]
    assert set(rob["top1"]) == set(TRANSFORMS) and rob["images"] == 45
    assert all(0.8 <= rob["top1"][e] <= 1.0 for e in SINGLE_EDITS), rob
    assert 0.3 <= rob["top1"]["combined"] <= rob["mean_single_edits"], rob  # the stacked edits are harder
    levels = data["match_levels"]
    assert levels["similar_cut_precision"] > levels["top10_precision"], levels  # the cut keeps the right ones
    assert levels["copies_same_or_near_duplicate"]["flip"] > 0.8, levels
    assert len(data["worst"]) == 10 and len(data["worst"][0]["top"]) == 5

    with Image.open(plot) as png:
        assert png.format == "PNG" and 600 <= png.width <= 3000 and 250 <= png.height <= 3000
        assert len(np.unique(np.asarray(png.convert("L")))) > 20  # a drawing, not a blank canvas
    page = report.read_text()
    assert page.count('<div class="row">') == 24 and page.count("data:image/jpeg;base64,") >= 24 * 6
    assert 'src="http' not in page  # self-contained

    baseline = _eval(str(root), "--encoder", "histogram")
    assert baseline["encoder"] == "histogram" and baseline["images"] == 45 and len(baseline["skipped"]) == 1
    assert m["map"] > baseline["metrics"]["map"] + 0.1, (m, baseline["metrics"])


@pytest.mark.slow
def test_eval_with_another_index_flow(tuxpaint, tmp_path):
    """--flow: any index flow (here average pooling and two encoder replicas) is evaluated, and its
    copies are encoded by its own encoder; a flow without a VectorIndexer is refused."""
    root = tmp_path / "photos"
    copy_photos(tuxpaint, root, per_class=9, classes=CLASSES[:2])
    flow = tmp_path / "avg.yml"
    text = (REPO / "lookalike" / "flows" / "index.yml").read_text()
    text = text.replace(
        "encoder:       {uses: ImageEncoder, parallel: 2}",
        "encoder:       {uses: ImageEncoder, parallel: 2, with: {pooling: avg}}",
    )
    assert "pooling: avg" in text
    flow.write_text(text)
    avg = evaluate(root, flow=flow, robustness=True)
    default = evaluate(root, robustness=True)
    assert avg.encoder == "efficientnet-lite0 (avg pooling)" and default.encoder == "efficientnet-lite0 (rmac pooling)"
    assert avg.robustness is not None and avg.robustness.images == 18
    assert avg.metrics() != default.metrics() or avg.robustness.similarity != default.robustness.similarity
    bad = tmp_path / "bad.yml"
    bad.write_text("pods:\n  loader: {uses: ImageReader}\n")
    with pytest.raises(ConfigError, match="not an index flow|VectorIndexer"):
        evaluate(root, flow=bad)
