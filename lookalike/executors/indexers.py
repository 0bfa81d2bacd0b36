"""The indexers: VectorIndexer (one shard of vectors) and DocIndexer (the SQLite doc store).

At index time both only *stage* what they accept; the flow's end commits a request's staged writes
to the workspace in one transaction. At search time they do the searching and the lookups.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from lookalike.document import Document, Match, Request
from lookalike.errors import StoreError
from lookalike.executors.base import Executor, requests
from lookalike.settings import default
from lookalike.store.workspace import Workspace


def _workspace(executor: Executor) -> Workspace:
    ws = executor.context.workspace
    if ws is None:
        raise StoreError(f"{type(executor).__name__} needs a workspace; run it inside a flow with --workspace")
    return ws


def _fits(embedding: np.ndarray, dim: int) -> bool:
    return embedding.shape == (dim,) and bool(np.all(np.isfinite(embedding)))


class VectorIndexer(Executor):
    """One shard of the chunk vectors (exact inner product, i.e. cosine on normalised vectors)."""

    stores_vectors = True

    class Params(Executor.Params):
        chunks_per_query: int | None = Field(
            default=None, ge=1, description="chunk matches per query chunk (default: enough for exact top_k docs)"
        )

    params: Params

    def open(self) -> None:
        self.workspace = _workspace(self)

    @requests(on="index")
    def stage(self, docs: list[Document], request: Request) -> None:
        dim = self.workspace.dim
        for doc in docs:
            chunks = [c for c in doc.chunks if c.embedding is not None]
            bad = [c.embedding for c in chunks if c.embedding is not None and not _fits(c.embedding, dim)]
            if bad:
                doc.fail(f"embedding of shape {bad[0].shape} or non-finite; workspace holds {dim}-d", "bad vector")
                continue
            request.staged.vectors[doc.id] = (self.context.shard, chunks)

    @requests(on="search")
    def search(self, docs: list[Document], request: Request) -> None:
        top_k = int(request.parameters.get("top_k", default("LOOKALIKE_TOP_K")))
        # A document can own several chunks; fetching top_k x (most chunks any document has) chunk
        # matches guarantees that ranking chunks into documents still yields the exact top_k.
        k = self.params.chunks_per_query or top_k * self.workspace.max_chunks_per_doc()
        request.parameters["chunks_per_query"] = k  # so the merge of the shards keeps exactly k
        queries = [(c, c.embedding) for d in docs for c in d.chunks if c.embedding is not None]
        if not queries:
            return
        scores, ids = self.workspace.search(self.context.shard, np.stack([e for _, e in queries]), k)
        found = {int(i) for i in ids.ravel() if i >= 0}
        info = self.workspace.store.chunk_info(found)
        for (chunk, _), row_scores, row_ids in zip(queries, scores, ids, strict=True):
            chunk.matches = [
                Match(int(i), info[int(i)][0], float(s))
                for s, i in zip(row_scores, row_ids, strict=True)
                if i >= 0 and int(i) in info
            ]


class DocIndexer(Executor):
    """The doc store: accepts documents for the commit, and fills in search results' metadata."""

    stores_documents = True

    def open(self) -> None:
        self.workspace = _workspace(self)

    @requests(on="index")
    def stage(self, docs: list[Document], request: Request) -> None:
        for doc in docs:
            if doc.uri is None and doc.content_hash is None:
                doc.fail("a document needs a uri or content to be stored", "no content")
                continue
            if doc.id not in request.staged.doc_ids:
                request.staged.doc_ids.append(doc.id)

    @requests(on="delete")
    def delete(self, docs: list[Document], request: Request) -> None:
        request.staged.deletes.extend(d.id for d in docs if d.id not in request.staged.deletes)

    @requests(on="search")
    def lookup(self, docs: list[Document]) -> None:
        wanted = {r.doc_id for d in docs for r in d.results}
        stored = self.workspace.store.get_docs(wanted)
        chunks = self.workspace.store.chunk_info({r.chunk_id for d in docs for r in d.results})
        for doc in docs:
            kept = []
            for r in doc.results:
                s = stored.get(r.doc_id)
                if s is None:  # removed since the vector search: never return a dangling result
                    continue
                r.uri, r.width, r.height, r.tags = s.uri, s.width, s.height, s.tags
                if r.chunk_id in chunks:
                    r.chunk_kind, r.bbox = chunks[r.chunk_id][1], chunks[r.chunk_id][2]
                kept.append(r)
            doc.results = kept
