"""The INT8 encoder against fp32 on real photos, and its cache and fingerprint.

The photos are tuxpaint's (those left out of the calibration set) and scikit-image's. The bars are
the ones measured and documented in docs/benchmarks.md ("INT8 encoder"); see that section for why
the issue's per-image 0.98 is held for 90% of photos rather than every one.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from lookalike.models.efficientnet_lite import ensure_onnx, get_variant
from lookalike.models.encoder import EfficientNetEncoder
from lookalike.models.quantize import (
    CALIBRATION_IMAGES,
    QUANTIZER_VERSION,
    RECIPE,
    calibration_key,
    calibration_photos,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(model_dir):
    return (
        EfficientNetEncoder("efficientnet-lite0", cache_dir=model_dir),
        EfficientNetEncoder("efficientnet-lite0-int8", cache_dir=model_dir),
    )


@pytest.fixture(scope="module")
def test_photos(tuxpaint):
    from lookalike.datasets import fetch

    calibration = set(calibration_photos()[0])
    held_out = [p for p in tuxpaint.images if p not in calibration]
    assert len(held_out) == len(tuxpaint.images) - CALIBRATION_IMAGES
    return held_out[::3] + fetch("skimage").images


def test_int8_agrees_with_fp32_on_real_photos(pair, test_photos):
    fp32, int8 = pair
    x = np.stack([fp32.preprocess(p) for p in test_photos])
    e32, l32 = fp32.encode_tensors(x)
    e8, l8 = int8.encode_tensors(x)
    cosine = (e32 * e8).sum(axis=1)  # both are L2-normalised
    assert np.median(cosine) >= 0.985
    assert (cosine >= 0.98).mean() >= 0.90
    assert cosine.min() >= 0.90
    p = np.exp(l32 - l32.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    same = l32.argmax(axis=1) == l8.argmax(axis=1)
    # Where fp32 is sure of the class (top-1 probability 0.5 or more), INT8 names the same one. On the
    # rest, a flat top of near-equal classes, fp32 itself changes its mind under sub-level noise.
    confident = p.max(axis=1) >= 0.5
    assert confident.sum() >= 20
    assert same[confident].mean() >= 0.95
    assert same.mean() >= 0.80


def test_int8_graph_quantizes_all_but_the_sensitive_start(pair):
    _, int8 = pair
    model = onnx.load(str(int8.compiled.onnx_path))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized = {n.name for n in convs if all(i.endswith("DequantizeLinear_Output") for i in n.input[:2])}
    kept = {n.name for n in convs} - quantized
    assert kept == {"_conv_stem"} | {n.name for n in convs if n.name.startswith(("_blocks.0.", "_blocks.1."))}
    assert len(quantized) == len(convs) - 1 - 2 - 3  # stem, block 0 (no expand), block 1
    assert Counter(n.op_type for n in model.graph.node)["QuantizeLinear"] > 40


def test_int8_is_cached_by_its_calibration_and_fingerprinted_by_its_recipe(pair, model_dir, tmp_path):
    fp32, int8 = pair
    path = int8.compiled.onnx_path
    assert path.parent == fp32.compiled.onnx_path.parent
    key = calibration_key(*calibration_photos())
    assert path.name == f"{fp32.compiled.onnx_path.stem}-q{QUANTIZER_VERSION}-{key}.onnx"
    mtime = path.stat().st_mtime_ns
    again = ensure_onnx("lite0-int8", model_dir)  # short name; found in the cache, not rebuilt
    assert again.onnx_path == path and path.stat().st_mtime_ns == mtime
    assert int8.fingerprint.startswith("efficientnet-lite0-int8:")
    assert f":q{QUANTIZER_VERSION}-" in int8.fingerprint
    assert int8.fingerprint != fp32.fingerprint  # another vector space: a workspace refuses to mix them
    # The fingerprint is the recipe, not the photos' digest: known before any graph is built or photo fetched.
    assert RECIPE == f"q{QUANTIZER_VERSION}-tuxpaint{CALIBRATION_IMAGES}"
    assert RECIPE in int8.fingerprint.split(":") and key not in int8.fingerprint
    unbuilt = EfficientNetEncoder("efficientnet-lite0-int8", cache_dir=tmp_path / "empty-cache")
    assert unbuilt.fingerprint == int8.fingerprint
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").iterdir())
    assert get_variant("efficientnet-lite2-int8").resolution == 260
