"""Distinct shots among look-alikes: the frames of a burst are not duplicates; edited copies are.

Two frames of a burst (the same camera, a fraction of a second apart, the subject moved) score as
high as an edited copy on the encoder (cosine 0.91 to 0.98 for a subject moved 2 % of the width or
the camera panned 3 %, measured on scikit-image's photos by ``python -m bench.bursts``), so the
vectors cannot tell them apart. What can:

1. **When the camera says.** An edit (a resize, a recompression, a recolouring, a crop, a mirror)
   keeps the original's EXIF date taken; the frames of a burst each carry their own. Two files that
   both carry a camera date taken (``taken_from == "exif"``) from the same camera (make and model),
   whose taken times differ, are distinct shots. Times are stored to the second; within one second
   the files' SubsecTimeOriginal decides where both record it.
2. **When it says only "the same second".** Same camera, same second, and no sub-second time on one
   of them: a copy of another pixel size is an edit (a crop or a resize: burst frames share the
   sensor's size). At the same size, the pixels decide: a recompressed, recoloured or mirrored copy
   is the same picture cell for cell, a frame where something moved is not (see :data:`MOVED`).

Without a camera date on both (most edited copies lose their EXIF; screenshots and scans never had
one), look-alikes stay near duplicates: pixels alone cannot tell a crop from a camera that panned
(a 5 % crop differs from its original more than a panned burst frame does).
"""

from __future__ import annotations

import io
import os
import stat

import numpy as np
from PIL import Image

from lookalike.images import decode
from lookalike.settings import default
from lookalike.store.docstore import StoredDoc

SUBSEC_TIME_ORIGINAL = 37521  # EXIF: the fraction of DateTimeOriginal's second, as digits
_EXIF_IFD = 0x8769
# The side both pictures are compared at: large enough that a subject moving 2 % of the width
# shifts whole cells, small enough that JPEG noise and resampling average out.
SIDE = 64
# The 99th percentile of the per-cell difference of the two pictures in grayscale, each scaled to
# zero mean and unit variance (so brightness, contrast and colour edits cancel), the better of as
# it is and mirrored. Recompressed (JPEG 40), recoloured, greyscaled and mirrored copies of seven
# scikit-image photos reached at most 0.55; the same photos with their middle third moved 2 to 8 %
# of the width, or the camera panned 3 %, at least 0.81 (docs/benchmarks.md, `python -m
# bench.bursts`). Between the two, nearer the copies' side.
MOVED = 0.7


def _camera_dated(doc: StoredDoc) -> bool:
    return doc.meta.taken_from == "exif" and doc.meta.taken_at is not None


class ShotJudge:
    """Tells distinct shots from copies (see the module), reading each file at most once."""

    def __init__(self) -> None:
        # What the index flow reads at most by default: a larger file was never indexed from its bytes.
        self.max_file_bytes = int(float(default("LOOKALIKE_MAX_FILE_MB")) * 1024 * 1024)
        self._read: dict[str, tuple[str | None, np.ndarray | None]] = {}  # doc id -> (subsec, cells)

    def distinct(self, a: StoredDoc, b: StoredDoc) -> bool:
        """Are ``a`` and ``b`` two shots (a burst's frames), not one picture and its copy?"""
        if not (_camera_dated(a) and _camera_dated(b)):
            return False
        if (a.meta.make, a.meta.model) != (b.meta.make, b.meta.model):
            return False  # two cameras at one scene: no burst, and no clock to compare
        if a.meta.taken_at != b.meta.taken_at:
            return True
        (sub_a, cells_a), (sub_b, cells_b) = self._file(a), self._file(b)
        if sub_a is not None and sub_b is not None:
            return sub_a != sub_b
        if (a.width, a.height) != (b.width, b.height) or cells_a is None or cells_b is None:
            return False
        return moved(cells_a, cells_b) >= MOVED

    def _file(self, doc: StoredDoc) -> tuple[str | None, np.ndarray | None]:
        if doc.id not in self._read:
            blob = _read_regular(doc.uri, self.max_file_bytes) if doc.uri else None
            self._read[doc.id] = (_subsec(blob), _cells(blob)) if blob is not None else (None, None)
        return self._read[doc.id]


def moved(a: np.ndarray, b: np.ndarray) -> float:
    """How much of ``b`` differs from ``a`` beyond a global change of tone (see :data:`MOVED`)."""
    return min(float(np.percentile(np.abs(a - b), 99)), float(np.percentile(np.abs(a - b[:, ::-1]), 99)))


def _read_regular(path: str, limit: int) -> bytes | None:
    """A regular file's bytes (up to ``limit``), or None: never a FIFO or a device (O_NONBLOCK: a
    FIFO opened to be checked does not wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        try:
            return f.read(limit)
        except OSError:
            return None


def _subsec(blob: bytes) -> str | None:
    """SubsecTimeOriginal as a normalised fraction ("5" and "500" are both half a second)."""
    try:
        with Image.open(io.BytesIO(blob)) as img:
            value = img.getexif().get_ifd(_EXIF_IFD).get(SUBSEC_TIME_ORIGINAL)
    except Exception:  # noqa: BLE001 - any header Pillow trips on: no sub-second time, then
        return None
    text = (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")).strip("\x00 ")
    return (text.rstrip("0") or "0") if text.isdigit() else None


def _cells(blob: bytes) -> np.ndarray | None:
    """A file's :func:`cells`, or None if it no longer decodes."""
    try:
        image = decode(blob, draft_size=SIDE).image
    except Exception:  # noqa: BLE001 - a file that no longer decodes: the pixels cannot say
        return None
    return cells(image)


def cells(image: Image.Image) -> np.ndarray:
    """The picture in grayscale at SIDE x SIDE, scaled to zero mean and unit variance: what
    :func:`moved` compares."""
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.Resampling.BOX), np.float32)
    return (grey - grey.mean()) / (grey.std() + 1e-6)
