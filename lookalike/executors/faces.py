"""Face search: FaceDetector finds faces and makes each one a chunk; FaceEncoder describes them.

    detector: {uses: FaceDetector, with: {upsample: 1}}   # one "face" chunk per face, bbox in pixels
    encoder:  {uses: FaceEncoder}                         # 128-d dlib descriptors, Euclidean ("l2")

An image without a face gets no chunk; that is not an error. A query keeps one face: the one the
request's ``face`` parameter names (0-based, largest first), or else the largest, and records every
face it saw in ``doc.query_info["faces"]``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from lookalike.document import Chunk, Document, Request
from lookalike.errors import BadInput
from lookalike.executors.base import Executor, requests
from lookalike.images import decode
from lookalike.models.faces import (
    CHIP_FACE_WIDTH,
    CHIP_SIZE,
    DESCRIPTOR_DIM,
    Box,
    FaceModel,
    descriptor_fingerprint,
)
from lookalike.store.spaces import FACES


class FaceDetector(Executor):
    """Decodes each document and adds one aligned ``face`` chunk per face it finds."""

    class Params(Executor.Params):
        upsample: int = Field(
            default=1,
            ge=0,
            le=3,
            description="times the image is doubled first: each finds faces half as small, ~4x slower",
        )
        max_side: int = Field(
            default=1600, ge=100, description="detect on a copy whose longer side is at most this many pixels"
        )
        min_face: int = Field(default=0, ge=0, description="ignore faces narrower than this, in original pixels")
        # dlib's trained operating point is 0. Weak detections (0 to ~0.3) include face-like things:
        # scikit-image's astronaut has her mission patch at 0.12 beside her face at 1.16, while real
        # faces in the test photos, half-visible ones too, score 0.7 and more.
        min_score: float = Field(
            default=0.0, ge=-1.0, le=3.0, description="detection score threshold; raise it to drop weak detections"
        )

    params: Params

    def open(self) -> None:
        self.model = FaceModel()  # its parts load on first use (the detector takes ~0.6 s)

    @requests(on="index")
    def detect_all(self, docs: list[Document]) -> None:
        for doc in docs:
            found = self._detect(doc)
            if found is not None and found.faces:
                chips = self._chips(doc, found, found.faces)
                doc.chunks.extend(
                    Chunk(kind="face", bbox=box, space=FACES, tensor=chip)
                    for (box, _), chip in zip(found.faces, chips, strict=True)
                )
            doc.blob = None  # the bytes are no longer needed; memory stays flat on big folders

    @requests(on="search")
    def detect_one(self, docs: list[Document], request: Request) -> None:
        asked = request.parameters.get("face")
        for doc in docs:
            found = self._detect(doc)
            if found is not None:
                self._keep_one(doc, found, asked)
            doc.blob = None

    def _keep_one(self, doc: Document, found: _Found, asked: Any) -> None:
        """A query's one face chunk: the ``asked`` one (0 is the largest) or the largest."""
        faces = found.faces
        doc.query_info["faces"] = [list(box) for box, _ in faces]
        if not faces:
            doc.fail("no face found in the query image", "no face")
            return
        n = _face_number(asked)
        if n is None:
            doc.fail(f"face must be a face number (0 is the largest), got {asked!r}", "no such face")
        elif not 0 <= n < len(faces):
            has = f"{len(faces)} face" + ("" if len(faces) == 1 else "s")
            doc.fail(f"face {n} asked for, but the image has {has}", "no such face")
        else:
            (chip,) = self._chips(doc, found, [faces[n]])
            doc.chunks.append(Chunk(kind="face", bbox=faces[n][0], space=FACES, tensor=chip))

    def _detect(self, doc: Document) -> _Found | None:
        """Decode ``doc`` and find its faces; ``None`` when it arrived encoded or cannot be used."""
        if doc.chunks and all(c.embedding is not None for c in doc.chunks):
            return None  # arrived encoded: nothing to decode
        if doc.blob is None:
            doc.fail("no image bytes to decode (is ImageReader before FaceDetector?)", "no content")
            return None
        try:
            decoded = decode(doc.blob, draft_size=_draft_size(doc.blob, self.params.max_side), name=doc.uri)
        except BadInput as e:  # the bytes cannot be decoded: the file's own fault
            doc.fail(str(e), e.reason, input_fault=True)
            return None
        doc.width, doc.height = decoded.width, decoded.height
        rgb = np.asarray(decoded.image)
        sx, sy = decoded.width / rgb.shape[1], decoded.height / rgb.shape[0]
        faces = []
        for face in self.model.locate(rgb, self.params.upsample, self.params.max_side, self.params.min_score):
            rect = _scaled(face.rect, sx, sy)
            if rect[2] >= self.params.min_face:
                faces.append((_clipped(rect, decoded.width, decoded.height), rect))
        return _Found(rgb, sx, sy, faces)

    def _chips(self, doc: Document, found: _Found, faces: list[tuple[Box, Box]]) -> list[np.ndarray]:
        """Aligned chips of ``faces``, cut from the largest decode that is worth having.

        JPEGs are decoded at a reduced size that still covers ``max_side`` (2-4x cheaper on big
        photos). A face narrower there than it will be in its chip (CHIP_FACE_WIDTH) would be
        upscaled from fewer pixels than the file holds, so its chips come from a full decode. It
        matters: the astronaut's 92 px face pasted into a 4000 x 3000 JPEG describes 0.20 away from
        the face alone when cut from the half-size decode, 0.065 when cut from the full one.
        """
        rgb, sx, sy = found.rgb, found.sx, found.sy
        drafted = sx > 1 or sy > 1
        if drafted and doc.blob is not None and min(rect[2] for _, rect in faces) / sx < CHIP_FACE_WIDTH:
            try:
                rgb, sx, sy = np.asarray(decode(doc.blob, draft_size=None, name=doc.uri).image), 1.0, 1.0
            except BadInput:
                pass  # the reduced decode worked: a softer chip beats losing the face
        return self.model.chips(rgb, [_scaled(rect, 1 / sx, 1 / sy) for _, rect in faces])


@dataclass
class _Found:
    """One decoded image and its faces: ``(bbox, rect)`` each, largest first, in original pixels
    (``bbox`` clipped to the image, ``rect`` as the detector found it, maybe past the edges).
    ``rgb`` is the decoded image, ``sx``/``sy`` the original's pixels per pixel of it."""

    rgb: np.ndarray
    sx: float
    sy: float
    faces: list[tuple[Box, Box]]


class FaceEncoder(Executor):
    """Describes every face chunk with dlib's ResNet: 128-d, not normalised, compared by Euclidean
    distance (under 0.6 is the same person)."""

    class Params(Executor.Params):
        # dlib holds the GIL while it describes (~0.1 s a face on one core) and batching gains
        # nothing on CPU (measured), so a short batch keeps the rest of the flow moving.
        batch_size: int = Field(default=8, ge=1, le=1024, description="faces per call to the network")

    params: Params

    def open(self) -> None:
        self.model = FaceModel()  # the descriptor loads on first use

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        return descriptor_fingerprint()

    @classmethod
    def vector_space_of(cls, params: BaseModel) -> tuple[int, str] | None:
        return DESCRIPTOR_DIM, "l2"

    @requests(on=["index", "search"])
    def encode(self, docs: list[Document]) -> None:
        todo: list[Chunk] = []
        for doc in docs:
            chunks = [c for c in doc.chunks if c.tensor is not None and c.embedding is None]
            if any(not _is_chip(c.tensor) for c in chunks):
                doc.fail(
                    f"FaceEncoder needs {CHIP_SIZE}x{CHIP_SIZE}x3 uint8 face chips (is FaceDetector before it?)",
                    "not a face chip",
                )
                continue
            todo.extend(chunks)
        size = self.params.batch_size
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            vectors = self.model.describe([c.tensor for c in batch if c.tensor is not None])
            for chunk, vector in zip(batch, vectors, strict=True):
                chunk.embedding = vector
                chunk.tensor = None  # free the input; the embedding is all that travels on


def _face_number(value: Any) -> int | None:
    if value is None:
        return 0  # the largest
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_chip(tensor: Any) -> bool:
    return isinstance(tensor, np.ndarray) and tensor.shape == (CHIP_SIZE, CHIP_SIZE, 3) and tensor.dtype == np.uint8


def _draft_size(blob: bytes, max_side: int) -> int | None:
    """The JPEG draft size that keeps the longer side at least ``max_side``: the detector's copy is
    then a downscale, never an upscale. ``None`` (decode in full) when the header cannot be read;
    decode() then says what is wrong with the file."""
    try:
        with Image.open(io.BytesIO(blob)) as probe:
            width, height = probe.size
    except Exception:  # noqa: BLE001 - only a probe: decode() below raises the BadInput that explains
        return None
    if width <= 0 or height <= 0:
        return None
    # decode() keeps both sides at least draft_size, so ask for the shorter side's share.
    return max(1, math.ceil(max_side * min(width, height) / max(width, height)))


def _scaled(box: Box, sx: float, sy: float) -> Box:
    x, y, w, h = box
    x0, y0, x1, y1 = round(x * sx), round(y * sy), round((x + w) * sx), round((y + h) * sy)
    return x0, y0, x1 - x0, y1 - y0


def _clipped(box: Box, width: int, height: int) -> Box:
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)
