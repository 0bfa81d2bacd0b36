"""BestChunkRanker: chunk matches -> documents, each scored by its best-matching chunk.

(The highest score: the highest similarity, or on L2 spaces the smallest distance. It was called
MinRanker after Jina's, which ranked by the minimum distance; that name still loads.)
"""

from __future__ import annotations

from pydantic import Field

from lookalike.document import Document, Request, Result
from lookalike.executors.base import Executor, requests
from lookalike.settings import default


class BestChunkRanker(Executor):
    class Params(Executor.Params):
        min_score: float | None = Field(default=None, description="drop documents scoring below this (cosine)")
        max_distance: float | None = Field(
            default=None, gt=0, description="drop documents farther than this (l2 spaces, e.g. 0.6 for faces)"
        )

    params: Params

    @requests(on="search")
    def rank(self, docs: list[Document], request: Request) -> None:
        top_k = int(request.parameters.get("top_k", default("LOOKALIKE_TOP_K")))
        for doc in docs:
            best: dict[str, Result] = {}
            for chunk in doc.chunks:
                for m in chunk.matches:
                    current = best.get(m.doc_id)
                    if current is None or m.score > current.score:
                        best[m.doc_id] = Result(doc_id=m.doc_id, score=m.score, chunk_id=m.chunk_id)
            ranked = sorted(best.values(), key=lambda r: (-r.score, r.doc_id))  # ties: stable by id
            if self.params.min_score is not None:
                ranked = [r for r in ranked if r.score >= self.params.min_score]
            if self.params.max_distance is not None:  # l2 scores are minus the distance
                ranked = [r for r in ranked if -r.score <= self.params.max_distance]
            doc.results = ranked[:top_k]


MinRanker = BestChunkRanker  # its old name, for py_modules that subclass it
