"""ImageEncoder: EfficientNet-Lite on onnxruntime; embeds every chunk and tags each document."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from lookalike.descriptors import DEFAULT_POOLING, Pooling
from lookalike.document import Document
from lookalike.executors.base import Executor, Preprocessing, requests
from lookalike.models.efficientnet_lite import DEFAULT_MODEL, EMBEDDING_DIM, get_variant, model_identity
from lookalike.models.encoder import MODEL_BATCH, EfficientNetEncoder, pooled_fingerprint
from lookalike.models.imagenet import tags


class ImageEncoder(Executor):
    class Params(Executor.Params):
        model: str = Field(default=DEFAULT_MODEL, description="efficientnet-lite0, -lite1 or -lite2; each also -int8")
        threads: int | None = Field(default=None, ge=1, description="onnxruntime threads (default: cores/replicas)")
        batch_size: int = Field(default=MODEL_BATCH, ge=1, le=1024, description="images per model call")
        tags: int = Field(default=5, ge=0, le=50, description="ImageNet tags kept per document")
        pooling: Pooling = Field(
            default=DEFAULT_POOLING, description="feature map to embedding: rmac (regional max), gem or avg"
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
    def preprocessing_of(cls, params: BaseModel) -> Preprocessing | None:
        assert isinstance(params, cls.Params)
        return Preprocessing(size=get_variant(params.model).resolution)

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        assert isinstance(params, cls.Params)
        return pooled_fingerprint(model_identity(params.model), params.pooling)

    @requests(on=["index", "search"])
    def encode(self, docs: list[Document]) -> None:
        todo = [(d, c, c.tensor) for d in docs for c in d.chunks if c.tensor is not None and c.embedding is None]
        if not todo:
            return
        embeddings, logits = self.model.encode_tensors(np.stack([t for _, _, t in todo]))
        top = tags(logits, self.params.tags) if self.params.tags else [[] for _ in todo]
        for (doc, chunk, _), emb, doc_tags in zip(todo, embeddings, top, strict=True):
            chunk.embedding = emb
            chunk.tensor = None  # free the input; the embedding is all that travels on
            if chunk.kind == "whole" and not doc.tags:
                doc.tags = [(t.label, t.probability) for t in doc_tags]
