"""A custom executor, loaded by the flows beside this file through `py_modules`.

ImageFlipper adds a mirrored chunk to every document at index time, so a mirrored photo finds its
original. The ranker scores a document by its best chunk, so the document is still returned once.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from lookalike.document import Chunk, Document
from lookalike.executors.base import Executor, requests


class ImageFlipper(Executor):
    class Params(Executor.Params):
        horizontal: bool = Field(default=True, description="mirror left-right (else top-bottom)")

    params: Params

    @requests(on="index")
    def flip(self, docs: list[Document]) -> None:
        axis = 2 if self.params.horizontal else 1  # tensors are channels x height x width
        for doc in docs:
            whole = next((c.tensor for c in doc.chunks if c.kind == "whole" and c.tensor is not None), None)
            if whole is not None:
                mirrored = np.ascontiguousarray(np.flip(whole, axis=axis))
                doc.chunks.append(Chunk(kind="mirror", tensor=mirrored))
