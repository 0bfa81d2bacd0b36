"""The indexers: VectorIndexer (one shard of vectors) and DocIndexer (the SQLite doc store).

Each owns its state. A VectorIndexer pod holds its shard's part of the vector index
(:class:`ShardIndex`): it opens it in :meth:`open`, searches it, and persists it. The DocIndexer
owns the doc store: at the end of the flow the runtime hands it the joined request, and it
commits the documents with the vectors the shard pods accepted, in one transaction. The shard
pods' indexes take in what was committed from the store's vector log (on their next request, and
when they close), so no vector is ever searchable before its document is committed, in any
process on any node.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from lookalike.document import Chunk, Document, Match, Request
from lookalike.errors import STORE_FAILURE, LookalikeError, StoreError
from lookalike.executors.base import Executor, requests
from lookalike.filters import Filters
from lookalike.settings import default
from lookalike.store.filtering import KeptByFilter, KeptCache
from lookalike.store.shard_index import ShardIndex
from lookalike.store.spaces import DEFAULT_SPACE, FACES, REGIONS
from lookalike.store.workspace import Workspace


def _workspace(executor: Executor) -> Workspace:
    ws = executor.context.workspace
    if ws is None:
        raise StoreError(f"{type(executor).__name__} needs a workspace; run it inside a flow with --workspace")
    return ws


def _of_space(chunk: Chunk, space: str | None) -> bool:
    """Whether a pod storing ``space`` takes ``chunk``: a chunk of that space, or one of the
    default space (every encoder's main vectors, whatever the pod names its space), except in the
    faces and regions spaces, which take only chunks made for them (faces: or of kind "face")."""
    if chunk.space == space:
        return True
    # A detector that names no space (its own, or one of before spaces) still fills the faces space.
    return chunk.space == DEFAULT_SPACE and (space not in (FACES, REGIONS) or (space == FACES and chunk.kind == "face"))


def _fits(embedding: np.ndarray, dim: int) -> bool:
    return embedding.shape == (dim,) and bool(np.all(np.isfinite(embedding)))


class VectorIndexer(Executor):
    """One shard of one vector space's chunk vectors (the pod's ``space``): its part of the index,
    searched exactly or by an ANN index with exact re-ranking, as the collection size and the
    workspace's budget choose."""

    stores_vectors = True

    class Params(Executor.Params):
        chunks_per_query: int | None = Field(
            default=None, ge=1, description="chunk matches per query chunk (default: enough for exact top_k docs)"
        )

    params: Params
    index: ShardIndex

    def open(self) -> None:
        self.workspace = _workspace(self)
        self.index = self.workspace.open_shard(self.context.shard, space=self.context.space)
        self._kept = KeptCache(self.workspace.store)  # what recent filters keep of this shard
        self._indexed = False  # took part in indexing: at close, the index is brought up to date

    @requests(on="index")
    def stage(self, docs: list[Document], request: Request) -> None:
        self._indexed = True
        dim, slot, space = self.index.spec.dim, self.index.shard, self.context.space
        for doc in docs:
            chunks = [c for c in doc.chunks if c.embedding is not None and _of_space(c, space)]
            bad = [c.embedding for c in chunks if c.embedding is not None and not _fits(c.embedding, dim)]
            if bad:
                doc.fail(f"embedding of shape {bad[0].shape} or non-finite; workspace holds {dim}-d", "bad vector")
                continue
            request.staged.vectors[(doc.id, slot)] = chunks

    @requests(on="delete")
    def forget(self, docs: list[Document]) -> None:
        # The doc indexer commits the removal; this shard's index drops the vectors from the log.
        self._indexed = True

    @requests(on="search")
    def search(self, docs: list[Document], request: Request) -> None:
        top_k = int(request.parameters.get("top_k", default("LOOKALIKE_TOP_K")))
        # A document can own several chunks; fetching top_k x (most chunks any document has) chunk
        # matches guarantees that ranking chunks into documents still yields the exact top_k.
        k = self.params.chunks_per_query or top_k * self.workspace.max_chunks_per_doc(self.context.space)
        request.parameters["chunks_per_query"] = k  # so the merge of the shards keeps exactly k
        space = self.context.space
        queries = [(c, c.embedding) for d in docs for c in d.chunks if c.embedding is not None and _of_space(c, space)]
        if not queries:
            return
        filters = request.parameters.get("filters")
        kept = None
        if filters:
            kept = KeptByFilter(self.workspace.store, Filters.from_dict(filters), self.index.shard, self._kept)
        scores, ids = self.index.search(np.stack([e for _, e in queries]), k, kept)
        found = {int(i) for i in ids.ravel() if i >= 0}
        info = self.workspace.store.chunk_info(found)
        for (chunk, _), row_scores, row_ids in zip(queries, scores, ids, strict=True):
            chunk.matches = [
                Match(int(i), info[int(i)][0], float(s))
                for s, i in zip(row_scores, row_ids, strict=True)
                if i >= 0 and int(i) in info
            ]

    def describe(self) -> dict[str, Any]:
        """This shard's index: type, size, memory, recall (for /api/stats)."""
        return self.index.describe()

    def close(self) -> None:
        # After indexing: caught up with what was committed, the right index type, a snapshot. A run
        # being abandoned leaves that to the next open (the log brings the old snapshot forward).
        try:
            if self._indexed and not self.context.aborting:
                self.index.finish()
        finally:
            self.index.close(flush=not self.context.aborting)


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

    def commit(self, request: Request) -> None:
        """Commit a finished index or delete request (the runtime calls this at the flow's end):
        the documents this pod accepted, with the vectors the shard pods accepted, in one
        transaction. A store failure (a full disk) fails the documents as "store error"."""
        try:
            self.workspace.commit(request)
        except LookalikeError as e:
            for d in request.live_docs:
                d.fail(f"not stored: {e}", STORE_FAILURE)

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
                r.photo = s.shown()
                if r.chunk_id in chunks:
                    r.chunk_kind, r.bbox = chunks[r.chunk_id][1], chunks[r.chunk_id][2]
                kept.append(r)
            doc.results = kept
