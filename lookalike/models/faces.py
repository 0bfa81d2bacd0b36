"""Faces with dlib: HOG frontal detector, 5-point alignment, 128-d ResNet descriptor.

    model = FaceModel()
    faces = model.locate(rgb, upsample=1, max_side=1600)   # largest first
    chips = model.chips(rgb, [f.rect for f in faces])       # aligned 150 x 150 x 3 uint8
    vectors = model.describe(chips)                         # N x 128 float32

The descriptors follow dlib's convention: not normalised, compared by Euclidean distance, and two
faces under :data:`SAME_PERSON` apart are the same person (99.38% on LFW, per dlib).

The models come from PyPI: ``dlib-bin`` and ``face-recognition-models`` (the ``faces`` extra).
``import face_recognition_models`` fails on current setuptools (it imports ``pkg_resources``), so
its files are found with :func:`importlib.util.find_spec`, without importing it.

dlib releases the GIL while the HOG detector runs, so detector replicas in threads overlap; it
holds the GIL while the ResNet describes faces, so keep descriptor batches short (see
:class:`lookalike.executors.faces.FaceEncoder`).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from lookalike.digest import file_sha256
from lookalike.errors import ModelError

INSTALL_HINT = "face search needs the faces extra: pip install 'lookalike[faces]'"

PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"  # 9 MB; the 68-point one is 100 MB for no gain here
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"

DESCRIPTOR_DIM = 128
# dlib's threshold: descriptors closer than this are the same person.
SAME_PERSON = 0.6
# What the ResNet was trained on: 150 x 150 chips aligned by get_face_chip with 25% padding. Any
# other size or padding gives descriptors that are not comparable with dlib's.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
# The face's own width inside a chip (the padding takes the rest): a face narrower than this in
# the image it is cut from gets upscaled into the chip.
CHIP_FACE_WIDTH = round(CHIP_SIZE / (1 + 2 * CHIP_PADDING))

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels


def _dlib() -> ModuleType:
    try:
        import dlib
    except ImportError as e:
        raise ModelError(INSTALL_HINT) from e
    return dlib


def face_model_paths() -> tuple[Path, Path]:
    """(5-point landmark predictor, ResNet descriptor): the files of ``face-recognition-models``."""
    _dlib()
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError) as e:  # ValueError: sys.modules holds None for it
        raise ModelError(INSTALL_HINT) from e
    if spec is None or spec.origin is None:
        raise ModelError(INSTALL_HINT)
    models = Path(spec.origin).parent / "models"
    paths = models / PREDICTOR_FILE, models / DESCRIPTOR_FILE
    for path in paths:
        if not path.is_file():
            raise ModelError(f"face-recognition-models is installed but {path} is missing; reinstall it")
    return paths


@functools.lru_cache(maxsize=4)
def _file_fingerprint(path: Path, size: int, mtime_ns: int) -> str:
    return file_sha256(path)[:12]


def descriptor_fingerprint() -> str:
    """What identifies the descriptors: ``dlib-resnet-v1:<sha256 of the model file, 12 hex>``.

    Computed without loading the model (hashing 22 MB takes ~40 ms, once per process and file).
    """
    _, path = face_model_paths()
    st = path.stat()
    return f"dlib-resnet-v1:{_file_fingerprint(path, st.st_size, st.st_mtime_ns)}"


@dataclass(frozen=True)
class Face:
    """A detected face: ``box`` clipped to the image (what a person sees), ``rect`` as the detector
    found it, which may reach past the edges (what the landmark predictor was trained to start from:
    clipping it moves the landmarks, and the descriptor by ~0.1 on a half-visible face)."""

    box: Box
    rect: Box
    score: float

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]


class FaceModel:
    """dlib's HOG frontal face detector, 5-point shape predictor and ResNet descriptor.

    Each replica builds its own: dlib's detector keeps per-call state and is not safe to share
    between threads. Parts load when first used, or up front when asked for (so ``open()`` fails
    early): the detector takes ~0.6 s (dlib deserialises it from text), the predictor and the
    descriptor ~0.1 s each. An encoder replica never loads the detector.
    """

    def __init__(self, *, detection: bool = False, description: bool = False) -> None:
        self._dlib: Any = _dlib()
        self.predictor_path, self.descriptor_path = face_model_paths()
        self._detector: Any = None
        self._predictor: Any = None
        self._descriptor: Any = None
        if detection:
            self._detection_parts()
        if description:
            self._description_part()

    def _detection_parts(self) -> tuple[Any, Any]:
        if self._detector is None:
            self._detector = self._dlib.get_frontal_face_detector()
        if self._predictor is None:
            self._predictor = self._load(self._dlib.shape_predictor, self.predictor_path)
        return self._detector, self._predictor

    def _description_part(self) -> Any:
        if self._descriptor is None:
            self._descriptor = self._load(self._dlib.face_recognition_model_v1, self.descriptor_path)
        return self._descriptor

    @staticmethod
    def _load(factory: Any, path: Path) -> Any:
        try:
            return factory(str(path))
        except RuntimeError as e:  # dlib's deserialisation errors
            raise ModelError(f"cannot load {path}: {e}; reinstall face-recognition-models") from e

    def fingerprint(self) -> str:
        return descriptor_fingerprint()

    # --- detection -----------------------------------------------------------------------------

    def locate(
        self, rgb: np.ndarray, upsample: int = 1, max_side: int | None = None, min_score: float = 0.0
    ) -> list[Face]:
        """The faces in an ``H x W x 3`` uint8 image, largest first, in its pixels.

        ``upsample``: how many times the detector doubles the image first; each doubling finds
        faces half as small (80 px at 0, 40 at 1, ...) and costs about four times as much.
        ``max_side``: detect on a copy downscaled so its longer side is at most this, since HOG's
        cost grows with the pixels; boxes are scaled back to ``rgb``'s pixels.
        ``min_score``: the detector's score threshold; 0 is the one dlib trained it for.
        """
        rgb = _rgb_array(rgb)
        detector, _ = self._detection_parts()
        height, width = rgb.shape[:2]
        small, scale = rgb, 1.0
        if max_side is not None and max(width, height) > max_side:
            scale = max_side / max(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            # reducing_gap=1: a box reduction first, then bilinear; ~2x faster than plain bilinear
            # on big photos, and no aliasing for HOG's gradients to pick up.
            copy = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)
            small = np.asarray(copy)
        rects, scores, _ = detector.run(small, upsample, min_score)
        faces = []
        for r, score in zip(rects, scores, strict=True):
            # dlib rectangles are inclusive: right = left + width - 1.
            left, top = r.left() / scale, r.top() / scale
            right, bottom = (r.right() + 1) / scale, (r.bottom() + 1) / scale
            rect = (round(left), round(top), round(right - left), round(bottom - top))
            x0, y0 = max(0, round(left)), max(0, round(top))
            x1, y1 = min(width, round(right)), min(height, round(bottom))
            if x1 <= x0 or y1 <= y0:
                continue  # entirely outside after rounding: nothing to show or describe
            faces.append(Face(box=(x0, y0, x1 - x0, y1 - y0), rect=rect, score=float(score)))
        faces.sort(key=lambda f: f.area, reverse=True)  # stable: equal areas keep the detector's order
        return faces

    def detect(
        self, rgb: np.ndarray, upsample: int = 1, max_side: int | None = None, min_score: float = 0.0
    ) -> list[Box]:
        """Face boxes ``(x, y, w, h)``, clipped to the image, largest first."""
        return [f.box for f in self.locate(rgb, upsample, max_side, min_score)]

    def chips(self, rgb: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        """Aligned ``150 x 150 x 3`` uint8 chips, one per box, as dlib's ResNet expects them.

        Pass the detector's boxes (:attr:`Face.rect`, which may reach past the edges) in ``rgb``'s
        pixels. The 5-point landmarks are found in ``rgb`` and the chip is cut from it; dlib
        resamples through an image pyramid, so cutting from a large image does not alias. Give it
        the largest image you have decoded: a face is then never upscaled needlessly.
        """
        if not boxes:
            return []
        rgb = _rgb_array(rgb)
        _, predictor = self._detection_parts()
        dlib = self._dlib
        shapes = dlib.full_object_detections()
        for x, y, w, h in boxes:
            shapes.append(predictor(rgb, dlib.rectangle(x, y, x + w - 1, y + h - 1)))
        chips = dlib.get_face_chips(rgb, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
        return [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]

    # --- description ---------------------------------------------------------------------------

    def describe(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """``N x 128`` float32 descriptors of aligned chips, in one call to the network.

        Not normalised: dlib's descriptors are compared by Euclidean distance (see SAME_PERSON).
        """
        if len(chips) == 0:
            return np.zeros((0, DESCRIPTOR_DIM), np.float32)
        batch = []
        for chip in chips:
            chip = np.asarray(chip)
            if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3) or chip.dtype != np.uint8:
                raise ValueError(f"a face chip is {CHIP_SIZE}x{CHIP_SIZE}x3 uint8, got {chip.shape} {chip.dtype}")
            batch.append(np.ascontiguousarray(chip))
        vectors = self._description_part().compute_face_descriptor(batch)
        return np.asarray([np.asarray(v) for v in vectors], dtype=np.float32).reshape(len(batch), DESCRIPTOR_DIM)


def _rgb_array(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    # dlib reads the buffer directly and needs C order (a mirrored view, say, is not).
    return np.ascontiguousarray(rgb)
