"""ImageEncoder: EfficientNet-Lite on onnxruntime; embeds every chunk and tags each document.

With ``regions`` it also gives each photo its region chunks (the ``regions`` space), pooled from the
same model pass: on an index request one chunk per window of
:func:`lookalike.descriptors.region_windows`, with its box; on a search, the query's crop (the box
the normalizer cut) as a region-space query (:meth:`EfficientNetEncoder.encode_boxes`).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from lookalike.descriptors import DEFAULT_POOLING, REGION_DIM, Pooling
from lookalike.document import Chunk, Document, Request
from lookalike.executors.base import Executor, Preprocessing, requests
from lookalike.images import model_view
from lookalike.models.efficientnet_lite import DEFAULT_MODEL, EMBEDDING_DIM, get_variant, model_identity
from lookalike.models.encoder import MODEL_BATCH, EfficientNetEncoder, pooled_fingerprint
from lookalike.models.imagenet import tags
from lookalike.store.spaces import REGIONS

# Bumped whenever the region chunks' vectors change (windows, pooling, projection): another version
# is another regions space, which a workspace then re-indexes.
REGION_VERSION = 1


class ImageEncoder(Executor):
    class Params(Executor.Params):
        model: str = Field(default=DEFAULT_MODEL, description="efficientnet-lite0, -lite1 or -lite2; each also -int8")
        threads: int | None = Field(default=None, ge=1, description="onnxruntime threads (default: cores/replicas)")
        batch_size: int = Field(default=MODEL_BATCH, ge=1, le=1024, description="images per model call")
        tags: int = Field(default=5, ge=0, le=50, description="ImageNet tags kept per document")
        pooling: Pooling = Field(
            default=DEFAULT_POOLING, description="feature map to embedding: rmac (regional max), gem or avg"
        )
        regions: bool = Field(
            default=False,
            description="also embed 4 regions of each photo (2 x 2 overlapping windows) into the regions space, "
            "for searches by a part of a photo (`search --box`)",
        )
        spin: bool = Field(
            default=True,
            description="idle onnxruntime threads spin-wait for work: fastest when the encoder has the cores "
            "to itself; off where other threads need them between model calls (the query flow)",
        )

    params: Params

    def open(self) -> None:
        # Cheap: the model is built or loaded on its first batch (a bad name fails here, at once).
        options = self.context.options
        self.model = EfficientNetEncoder(
            self.params.model,
            threads=self.params.threads or self.context.threads,
            batch_size=self.params.batch_size,
            pooling=self.params.pooling,
            spin=self.params.spin,
            cache_dir=options.model_cache,
            data_dir=options.dataset_cache,
        )

    @classmethod
    def vector_space_of(cls, params: BaseModel) -> tuple[int, str] | None:
        return EMBEDDING_DIM, "cosine"

    @classmethod
    def other_spaces_of(cls, params: BaseModel) -> dict[str, tuple[str, int, str]]:
        assert isinstance(params, cls.Params)
        if not params.regions:
            return {}
        return {REGIONS: (f"{model_identity(params.model)}:regions{REGION_VERSION}", REGION_DIM, "cosine")}

    @classmethod
    def preprocessing_of(cls, params: BaseModel) -> Preprocessing | None:
        assert isinstance(params, cls.Params)
        return Preprocessing(size=get_variant(params.model).resolution)

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        assert isinstance(params, cls.Params)
        return pooled_fingerprint(model_identity(params.model), params.pooling)

    @requests(on=["index", "search"])
    def encode(self, docs: list[Document], request: Request) -> None:
        todo = [(d, c, c.tensor) for d in docs for c in d.chunks if c.tensor is not None and c.embedding is None]
        if not todo:
            return
        batch = np.stack([t for _, _, t in todo])
        if self.params.regions and request.kind == "search":
            for (_, chunk, _), vector in zip(todo, self.model.encode_boxes(batch), strict=True):
                chunk.embedding, chunk.space, chunk.tensor = vector, REGIONS, None
            return
        regions = None
        if self.params.regions:
            embeddings, logits, regions = self.model.encode_with_regions(batch)
        else:
            embeddings, logits = self.model.encode_tensors(batch)
        top = tags(logits, self.params.tags) if self.params.tags else [[] for _ in todo]
        for n, ((doc, chunk, _), emb, doc_tags) in enumerate(zip(todo, embeddings, top, strict=True)):
            chunk.embedding = emb
            chunk.tensor = None  # free the input; the embedding is all that travels on
            if chunk.kind == "whole" and not doc.tags:
                doc.tags = [(t.label, t.probability) for t in doc_tags]
            if regions is not None and chunk.kind == "whole":
                doc.chunks += self._region_chunks(doc, regions[n])

    def _region_chunks(self, doc: Document, vectors: np.ndarray) -> list[Chunk]:
        """A photo's region chunks, each with its window's box in the photo's pixels."""
        left, top, side = model_view(doc.width or 1, doc.height or 1)
        cells = self.model.map_size
        out = []
        for (t, b, lft, r), vector in zip(self.model.windows, vectors, strict=True):
            x0, y0 = left + lft / cells * side, top + t / cells * side
            box = (round(x0), round(y0), round((r - lft) / cells * side), round((b - t) / cells * side))
            out.append(Chunk(kind="region", bbox=box, space=REGIONS, embedding=vector))
        return out
