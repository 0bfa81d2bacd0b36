from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from lookalike.errors import ModelError
from lookalike.models.efficientnet_lite import get_variant, weights_path
from lookalike.models.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict


def test_reads_the_real_lite0_checkpoint():
    state = load_state_dict(weights_path(get_variant("lite0")))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.bias"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    assert blocks == set(range(16))
    # Trained weights, not zeros or garbage from a wrong offset.
    var = state["_bn0.running_var"]
    assert np.all(var >= 0) and np.all(np.isfinite(var)) and float(var.mean()) > 0.1
    assert 0.01 < float(np.abs(state["_fc.weight"]).mean()) < 1.0


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lookalike-pwned",))


def _legacy_file(path: Path, payload: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(LEGACY_PROTOCOL, f, protocol=2)
        pickle.dump({"protocol_version": LEGACY_PROTOCOL, "little_endian": True}, f, protocol=2)
        pickle.dump(payload, f, protocol=2)
        pickle.dump([], f, protocol=2)
    return path


def test_refuses_code_in_the_pickle(tmp_path):
    marker = Path("/tmp/lookalike-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelError, match="refusing to load global"):
        load_state_dict(_legacy_file(tmp_path / "evil.pth", {"w": _Evil()}))
    assert not marker.exists()


def test_truncated_checkpoint_is_a_model_error(tmp_path):
    data = weights_path(get_variant("lite0")).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_state_dict(cut)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", pickle.dumps(1234)])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_state_dict(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")
