"""INT8 EfficientNet-Lite: onnxruntime's static quantization of the fp32 graph, built at first use.

The recipe, measured on this project's photos (docs/benchmarks.md, "INT8 encoder"):

- QDQ format, weights per output channel (symmetric int8), activations per tensor (asymmetric
  uint8), ranges from MinMax calibration on :data:`CALIBRATION_IMAGES` tuxpaint photos.
- Weights at 7 bits (``reduce_range``). On x86 CPUs without VNNI, onnxruntime multiplies uint8 by
  int8 with an instruction that saturates at 16 bits; full-range weights overflow there and cost
  0.1 of cosine, 7-bit weights cannot.
- The stem and the first two blocks stay fp32 (:data:`KEEP_FP32`). Quantizing them costs the most
  (the activations at 112 x 112 that feed block 1 above all): keeping them lifts the median cosine
  to fp32 from 0.95 to 0.99, and cuts the speed-up from 1.9x to 1.4-1.6x.
- The R-MAC and GeM heads stay fp32: they are maxima and norms over the head's features, cheap, and
  the descriptor itself.

The result is cached beside the fp32 graph, under a key made of the fp32 graph's, the recipe's
version and a digest of the calibration photos (names and bytes). Once built it is found by that
name without the photos, so a workspace's model never changes under it. What identifies its
vectors (:data:`RECIPE`) is the recipe itself (version, dataset, number of photos), known without
building the graph or fetching the photos.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.atomic import atomic_write
from lookalike.errors import BadInput, LookalikeError, ModelError

QUANTIZER_VERSION = 1
CALIBRATION_DATASET = "tuxpaint"
CALIBRATION_IMAGES = 64
# Node-name prefixes left in fp32 (see the module docstring).
KEEP_FP32 = ("_conv_stem", "_blocks.0.", "_blocks.1.", "rmac", "gem", "features", "regions", "box")
# Part of the model's identity (lookalike.models.efficientnet_lite.model_identity).
RECIPE = f"q{QUANTIZER_VERSION}-{CALIBRATION_DATASET}{CALIBRATION_IMAGES}"


def _say(message: str) -> None:
    print(f"lookalike: {message}", file=sys.stderr, flush=True)  # where the CLI's progress goes


def calibration_photos(
    say: Callable[[str], None] | None = None, data_dir: Path | None = None
) -> tuple[list[Path], Path]:
    """The calibration photos (every k-th tuxpaint photo, by sorted path) and their dataset root;
    the dataset is fetched into ``data_dir`` first if it is not there (``say`` hears how that goes)."""
    from lookalike.datasets import fetch

    try:
        dataset = fetch(CALIBRATION_DATASET, progress=say, cache_dir=data_dir)
    except LookalikeError as e:
        raise ModelError(
            f"the INT8 encoder is calibrated on the {CALIBRATION_DATASET} photos, which are not in the cache "
            f"and could not be fetched: {e}. Fetch them once with `lookalike datasets fetch "
            f"{CALIBRATION_DATASET}`, or use the fp32 model"
        ) from e
    images = dataset.images
    step = max(1, len(images) // CALIBRATION_IMAGES)
    return images[::step][:CALIBRATION_IMAGES], dataset.root


def calibration_key(photos: list[Path], root: Path) -> str:
    """A digest of the calibration set: each photo's path in its dataset and its bytes."""
    h = hashlib.sha256(f"q{QUANTIZER_VERSION}".encode())
    for path in photos:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:12]


def cached_int8(fp32_path: Path) -> Path | None:
    """The INT8 graph already built from ``fp32_path``, if any (newest first)."""
    found = []
    for path in fp32_path.parent.glob(f"{fp32_path.stem}-q{QUANTIZER_VERSION}-*.onnx"):
        try:
            found.append((path.stat().st_mtime, path))
        except OSError:  # removed meanwhile
            continue
    return max(found)[1] if found else None


def int8_path(fp32_path: Path, key: str) -> Path:
    return fp32_path.with_name(f"{fp32_path.stem}-q{QUANTIZER_VERSION}-{key}.onnx")


def quantize(
    fp32_path: Path,
    resolution: int,
    *,
    say: Callable[[str], None] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Path:
    """Build (or find) the INT8 graph for the fp32 graph at ``fp32_path`` and return its path."""
    found = cached_int8(fp32_path)
    if found is not None:
        return found
    say = say or _say
    say(f"building the INT8 encoder once: it is calibrated on {CALIBRATION_IMAGES} {CALIBRATION_DATASET} photos")
    photos, root = calibration_photos(say, Path(data_dir) if data_dir is not None else None)
    try:
        target = int8_path(fp32_path, calibration_key(photos, root))
    except OSError as e:
        raise ModelError(f"cannot read the calibration photos in {root}: {e}") from e
    data = _quantized(fp32_path, resolution, photos)
    try:
        atomic_write(target, data)
    except OSError as e:
        raise ModelError(f"cannot write the INT8 model in {target.parent}: {e}; set LOOKALIKE_MODEL_DIR") from e
    return target


def _quantized(fp32_path: Path, resolution: int, photos: list[Path]) -> bytes:
    """The INT8 graph's bytes: the recipe of the module docstring, calibrated on ``photos``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lookalike.images import load_tensor

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = iter(photos)

        def get_next(self) -> dict[str, np.ndarray] | None:
            path = next(self._left, None)
            return None if path is None else {"input": load_tensor(path, resolution)[None]}

    try:
        with tempfile.TemporaryDirectory(prefix="lookalike-int8-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            # Shape inference and the fusions quantization expects; the graph's shapes are static.
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            nodes = onnx.load(str(prepared), load_external_data=False).graph.node
            keep = [n.name for n in nodes if n.name.startswith(KEEP_FP32)]
            out = Path(tmp) / "int8.onnx"
            quantize_static(
                str(prepared),
                str(out),
                Photos(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
                calibrate_method=CalibrationMethod.MinMax,
            )
            return out.read_bytes()
    except (OSError, BadInput) as e:
        raise ModelError(f"cannot quantize {fp32_path.name}: {e}") from e
    except Exception as e:  # noqa: BLE001 - onnx and onnxruntime raise their own untyped errors
        raise ModelError(f"cannot quantize {fp32_path.name}: {type(e).__name__}: {e}") from e
