"""Our torch-free ONNX graph against the torch reference (goldens from scripts/make_goldens.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from lookalike.models.efficientnet_lite import VARIANTS

from conftest import REPO

_spec = importlib.util.spec_from_file_location("make_goldens", REPO / "scripts" / "make_goldens.py")
assert _spec and _spec.loader
make_goldens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_goldens)


@pytest.mark.parametrize("name", sorted(n for n, v in VARIANTS.items() if not v.int8))  # fp32 graphs
def test_onnx_matches_the_torch_reference(name, model_dir):
    from lookalike.models.encoder import EfficientNetEncoder

    variant = VARIANTS[name]
    if importlib.util.find_spec(variant.wheel_module) is None:
        if name == "efficientnet-lite0":
            pytest.fail("the default model's weights must always be installed")
        pytest.skip(f"{variant.pip_name} is not installed")
    golden = np.load(REPO / "tests" / "fixtures" / "goldens" / f"{name}.npz")
    names, inputs = make_goldens.golden_inputs(variant.resolution)
    assert list(golden["names"]) == names

    # Same inputs as when the goldens were made: otherwise a mismatch below is preprocessing, not model.
    np.testing.assert_allclose(inputs.astype(np.float64).sum(axis=(1, 2, 3)), golden["input_sums"], rtol=1e-4, atol=5.0)

    encoder = EfficientNetEncoder(name, cache_dir=model_dir, pooling="avg")  # the reference's own pooling
    embeddings, logits = encoder.encode_tensors(inputs)
    assert np.abs(embeddings - golden["embeddings"]).max() < 1e-4
    top5 = np.argsort(-logits, axis=1)[:, :5]
    for n, ours, ref in zip(names, top5, golden["top5"], strict=True):
        assert ours[0] == ref[0], f"{n}: top-1 {ours[0]} != reference {ref[0]}"
        assert set(ours) == set(ref), f"{n}: top-5 {sorted(ours)} != reference {sorted(ref)}"
