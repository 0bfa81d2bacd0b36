"""ImageNormalizer: the one preprocessing (lookalike.images) turning a file into a model input."""

from __future__ import annotations

import math

from PIL import Image
from pydantic import BaseModel, Field

from lookalike.document import Chunk, Document, Request
from lookalike.errors import BadInput, ConfigError
from lookalike.executors.base import Executor, Preprocessing, requests
from lookalike.images import PREPROCESS_VERSION, RESIZE_RATIO, decode, to_tensor

DEFAULT_SIZE = 224  # with no encoder downstream to follow: EfficientNet-Lite0's input


def crop(image: Image.Image, box: list[float]) -> Image.Image:
    """The part of ``image`` inside ``box`` (x0, y0, x1, y1 as fractions of its width and height),
    at least one pixel each way, centred on a mid-grey square just large enough that the model's
    view (the centred 7/8 of it, :func:`lookalike.images.model_view`) holds all of it: the whole
    box is searched, whatever its shape. (Cut to the model's view instead, a 3:1 box lost over 70%
    of itself, and a square one its edges: padded, a box finds 0.04 more of the pasted objects,
    docs/benchmarks.md, "Regions".)"""
    w, h = image.size
    x0, y0 = min(int(box[0] * w), w - 1), min(int(box[1] * h), h - 1)
    part = image.crop((x0, y0, max(x0 + 1, round(box[2] * w)), max(y0 + 1, round(box[3] * h))))
    side = math.ceil(max(part.size) * RESIZE_RATIO)
    square = Image.new("RGB", (side, side), (127, 127, 127))  # 127: zero once scaled, as the model's padding
    square.paste(part, ((side - part.width) // 2, (side - part.height) // 2))
    return square


def box_draft(draft_size: int | None, box: list[float] | None) -> int | None:
    """The JPEG draft size that leaves a box's part of the photo as many pixels as a whole photo
    gets (a small box: a finer draft, or none)."""
    if draft_size is None or box is None:
        return draft_size
    return round(draft_size / max(min(box[2] - box[0], box[3] - box[1]), 1e-3))


class ImageNormalizer(Executor):
    """Decodes each document and adds its whole-image chunk, ready for the encoder. A search with a
    ``box`` parameter (a search by a part of the photo) takes that part of each query image."""

    class Params(Executor.Params):
        size: int | None = Field(
            default=None, ge=32, le=1024, description="model input size (default: the encoder's, 224 for Lite0)"
        )
        draft: bool = Field(default=True, description="let JPEG decode at 1/2, 1/4 or 1/8 scale when large")
        keep_bytes: bool = Field(default=False, description="keep the file bytes on the document afterwards")

    params: Params

    @classmethod
    def follow_preprocessing(cls, params: BaseModel, wanted: Preprocessing, pod: str, encoder: str) -> BaseModel:
        assert isinstance(params, cls.Params)
        if params.size is None:
            return params.model_copy(update={"size": wanted.size})
        if params.size != wanted.size:
            raise ConfigError(
                f"pod {pod} makes {params.size}x{params.size} inputs, but pod {encoder} needs "
                f"{wanted.size}x{wanted.size}; drop size from {pod} to follow the encoder"
            )
        return params

    @classmethod
    def preprocessing_fingerprint(cls, params: BaseModel) -> str | None:
        assert isinstance(params, cls.Params)
        return f"pre{PREPROCESS_VERSION}-{params.size or DEFAULT_SIZE}{'' if params.draft else '-nodraft'}"

    @requests(on=["index", "search"])
    def normalize(self, docs: list[Document], request: Request) -> None:
        size = self.params.size or DEFAULT_SIZE
        box = request.parameters.get("box") if request.kind == "search" else None
        draft_size = round(size * 256 / 224) if self.params.draft else None
        for doc in docs:
            if doc.chunks and all(c.embedding is not None for c in doc.chunks):
                continue  # arrived encoded: nothing to decode
            if doc.blob is None:
                doc.fail("no image bytes to decode (is ImageReader before ImageNormalizer?)", "no content")
                continue
            try:
                decoded = decode(doc.blob, draft_size=box_draft(draft_size, box), name=doc.uri)
                tensor = to_tensor(decoded.image if box is None else crop(decoded.image, box), size)
            except BadInput as e:  # the bytes cannot be decoded: the file's own fault
                doc.fail(str(e), e.reason, input_fault=True)
                continue
            doc.width, doc.height = decoded.width, decoded.height
            doc.chunks.append(Chunk(kind="whole", tensor=tensor))
            if not self.params.keep_bytes:
                doc.blob = None  # the bytes are no longer needed; memory stays flat on big folders
