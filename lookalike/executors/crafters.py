"""ImageNormalizer: the one preprocessing (lookalike.images) turning a file into a model input."""

from __future__ import annotations

from pydantic import Field

from lookalike.document import Chunk, Document
from lookalike.errors import BadInput
from lookalike.executors.base import Executor, requests
from lookalike.images import decode, to_tensor


class ImageNormalizer(Executor):
    """Decodes each document and adds its whole-image chunk, ready for the encoder."""

    class Params(Executor.Params):
        size: int = Field(default=224, ge=32, le=1024, description="model input size (224 for Lite0)")
        draft: bool = Field(default=True, description="let JPEG decode at 1/2, 1/4 or 1/8 scale when large")
        keep_bytes: bool = Field(default=False, description="keep the file bytes on the document afterwards")

    params: Params

    @requests(on=["index", "search"])
    def normalize(self, docs: list[Document]) -> None:
        size = self.params.size
        draft_size = round(size * 256 / 224) if self.params.draft else None
        for doc in docs:
            if doc.chunks and all(c.embedding is not None for c in doc.chunks):
                continue  # arrived encoded: nothing to decode
            if doc.blob is None:
                doc.fail("no image bytes to decode (is ImageReader before ImageNormalizer?)", "no content")
                continue
            try:
                decoded = decode(doc.blob, draft_size=draft_size)
                tensor = to_tensor(decoded.image, size)
            except BadInput as e:  # the bytes cannot be decoded: the file's own fault
                doc.fail(str(e), e.reason, input_fault=True)
                continue
            doc.width, doc.height = decoded.width, decoded.height
            doc.chunks.append(Chunk(kind="whole", tensor=tensor))
            if not self.params.keep_bytes:
                doc.blob = None  # the bytes are no longer needed; memory stays flat on big folders
