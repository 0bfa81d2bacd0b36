"""Searching: the one path every search takes, from every front end.

A :class:`SearchRequest` starts from an image (a path or bytes), a stored photo ("more like
this"), or a tag. Image and stored-photo searches run through the query flow; concurrent ones are
micro-batched into it (:mod:`lookalike.library.batching`), and each batch is then, once and here:

1. searched for enough results to expand with and to leave the query's own document out;
2. expanded (alpha query expansion, :mod:`lookalike.descriptors`): each query whose best match is
   not a copy searches again with its vector plus its nearest results'. That second search ranks
   them, and its score is the one shown (so it never rises down the list); each keeps its cosine to
   the query itself as ``similarity``, which its match level is judged on;
3. cut: the query's own document left out, ``top_k`` kept, each result labelled with its match
   level (:mod:`lookalike.library.levels`) and the list cut at ``min_match``.

A tag search is a query of the doc store (no flow, no model).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lookalike.descriptors import QE_ALPHA, expand
from lookalike.document import Chunk, Document, Request, Result, display_path, doc_id_for
from lookalike.errors import POD_FAILURE, BadInput, LookalikeError, NotFound, fatal_error
from lookalike.library.batching import MicroBatcher
from lookalike.library.flows import Flows
from lookalike.library.fusing import REGION_WEIGHT, regions_query, whole_cosines, with_regions, within_levels
from lookalike.library.levels import MatchLevels, cut
from lookalike.library.planning import entry_problem
from lookalike.library.types import MAX_TOP_K, Concept, Hit, SearchReport, SearchRequest
from lookalike.relevance import TAG_FLOOR, Calibration
from lookalike.settings import Options
from lookalike.store.spaces import FACES, REGIONS
from lookalike.store.workspace import Workspace

_query_ids = itertools.count(1)
# A search cut at min_match labels this many results (at least top_k) to say how many passed.
COUNT_LIMIT = 200


@dataclass
class _Query:
    """One vector search in flight: the request, the query document, and what it needs back."""

    request: SearchRequest
    doc: Document
    top_k: int
    exclude: str | None  # a document id to leave out of the results (the stored photo itself)

    @property
    def window(self) -> int:
        """Results labelled: ``top_k``, or with ``min_match`` enough to count how many pass the cut."""
        return self.top_k if self.request.min_match is None else min(MAX_TOP_K, max(self.top_k, COUNT_LIMIT))

    @property
    def fetch(self) -> int:
        return self.window + (1 if self.exclude else 0)


class Searcher:
    """Answers :class:`SearchRequest`\\ s over one workspace and its query flow.

    ``max_batch`` (the options' by default) bounds the searches that share one pass through the
    flow, ``workers`` (default: the query flow's parallelism) how many passes run at once;
    ``start=False`` makes searches queue until :meth:`start_batching` (a test's way to batch them).
    """

    def __init__(
        self,
        workspace: Workspace,
        flows: Flows,
        options: Options,
        *,
        max_batch: int | None = None,
        workers: int | None = None,
        start: bool = True,
    ):
        self.workspace, self.flows, self.options = workspace, flows, options
        self.levels = MatchLevels(workspace)
        self._batching = (options.max_batch if max_batch is None else max_batch, workers, start)
        self._batcher: MicroBatcher[_Query, SearchReport] | None = None

    # --- the entry points ---------------------------------------------------------------------

    def search(self, request: SearchRequest) -> SearchReport:
        """One search. Image and stored-photo searches share the flow with concurrent ones."""
        if request.tag is not None:
            return self._search_tag(request)
        query = self._query(request)
        if request.face is not None or request.box is not None or request.filters.active:  # parameters: it runs alone
            return _raised(self._run([query]))[0]
        return self.batcher.call(query)

    def search_many(self, requests: Iterable[SearchRequest]) -> list[SearchReport]:
        """Several searches, those that run through the flow as one batch; the first unusable
        query raises its error."""
        requests = list(requests)
        reports: dict[int, SearchReport] = {}
        queries = [(i, self._query(r)) for i, r in enumerate(requests) if r.tag is None]
        for params in {(q.request.face, q.request.box, q.request.filters) for _, q in queries}:  # request parameters
            group = [(i, q) for i, q in queries if (q.request.face, q.request.box, q.request.filters) == params]
            reports.update(zip((i for i, _ in group), _raised(self._run([q for _, q in group])), strict=True))
        for i, r in enumerate(requests):
            if r.tag is not None:
                reports[i] = self._search_tag(r)
        return [reports[i] for i in range(len(requests))]

    @property
    def batcher(self) -> MicroBatcher[_Query, SearchReport]:
        if self._batcher is None:
            max_batch, workers, start = self._batching
            workers = workers or self.flows.query_parallelism
            self._batcher = MicroBatcher(self._run, max_batch=max_batch, workers=workers, start=start)
        return self._batcher

    def start_batching(self) -> None:
        self.batcher.start()

    def warm_up(self) -> None:
        """Start the query flow and run one query on each of its replicas, so the first real search
        pays no start-up (the models load on first use)."""
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (127, 127, 127)).save(buf, "PNG")
        n = self.flows.query_parallelism
        query = SearchRequest(image=buf.getvalue(), top_k=1)
        # A grey square may have nothing to find (no face): only an error of the flow stops the warm-up.
        with ThreadPoolExecutor(n, thread_name_prefix="warm-up") as pool:
            list(pool.map(lambda _: self._run([self._query(query)]), range(n)))

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    # --- making the query ---------------------------------------------------------------------

    def _query(self, request: SearchRequest) -> _Query:
        top_k = request.top_k or self.options.top_k
        qid = f"query-{next(_query_ids)}"
        if request.like is not None:
            doc_id = self.stored_id(request.like)
            if request.box is not None:  # a part of the stored photo: read from its file
                self.flows.query_kind(request.space)  # a workspace without regions says so first
                return _Query(
                    request,
                    Document(id=qid, uri=self.stored_file(doc_id)),
                    top_k,
                    doc_id if request.exclude_self else None,
                )
            query = self._stored_query(qid, doc_id, request.face)
            return _Query(request, query, top_k, doc_id if request.exclude_self else None)
        image = request.image
        if isinstance(image, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(image))
            if not os.path.lexists(path):
                raise NotFound(f"no such image: {display_path(os.fspath(image))}")
            problem = entry_problem(path)
            if problem is not None:
                raise BadInput(f"cannot use {display_path(path)} as a query: {problem.message}", problem.reason)
            return _Query(request, Document(id=qid, uri=path), top_k, None)
        if isinstance(image, (bytes, bytearray)):
            return _Query(request, Document(id=qid, blob=bytes(image)), top_k, None)
        raise BadInput(f"a query image must be a path or bytes, not {type(image).__name__}", "wrong type")

    def stored_id(self, like: str) -> str:
        """The id of the stored photo ``like`` names: a document id, or the path it was indexed at."""
        store = self.workspace.store
        for doc_id in (like, doc_id_for(os.path.abspath(like))):
            if store.get_docs([doc_id]):
                return doc_id
        if os.sep in like or os.path.lexists(like) or os.path.splitext(like)[1]:  # meant as a path (ids have no dot)
            raise NotFound(f"no indexed photo at {display_path(os.path.abspath(like))}")
        raise NotFound(f"no indexed document {display_path(like)!r}")

    def stored_file(self, doc_id: str, purpose: str = "no part of it can be searched") -> str:
        """The file a stored photo was indexed from, which must still be there (NotFound saying
        so, and that for ``purpose`` its pixels are needed)."""
        stored = self.workspace.store.get_docs([doc_id]).get(doc_id)
        if stored is None or not stored.uri or not os.path.isfile(stored.uri):
            where = display_path(stored.uri) if stored is not None and stored.uri else repr(doc_id)
            raise NotFound(f"the file of the stored photo {where} is gone, so {purpose}")
        return stored.uri

    def _stored_query(self, qid: str, doc_id: str, face: int | None) -> Document:
        """A query carrying a stored photo's vectors (no file is read): in the first space its
        whole-image chunk (else its first chunk); by ``face``, that face (0 is the largest)."""
        self.flows.query_kind(FACES if face is not None else None)  # a workspace without faces says so
        rows = self.workspace.store.chunks_of(doc_id, self.workspace.slots(FACES if face is not None else None))
        if face is not None:
            if not 0 <= face < len(rows):
                found = f"{len(rows)} face" + ("" if len(rows) == 1 else "s")
                raise BadInput(f"face {face} asked for, but the photo has {found}", "no such face")
            chosen = rows[face : face + 1]
        else:
            if not rows:
                raise BadInput(f"document {doc_id!r} has no vectors to search with", "no vectors")
            chosen = [r for r in rows if r[1] == "whole"] or rows[:1]
        space = FACES if face is not None else next(iter(self.workspace.spaces))
        chunks = [Chunk(kind=kind, bbox=bbox, space=space, embedding=emb) for _, kind, bbox, emb in chosen]
        return Document(id=qid, chunks=chunks)

    # --- running a batch ----------------------------------------------------------------------

    def _run(self, queries: list[_Query]) -> list[SearchReport | BaseException]:
        """One pass of ``queries`` (all with the same ``face``) through the query flow, expanded
        and cut: a report, or the error that made its query unusable, per query."""
        face, filters, space = queries[0].request.face, queries[0].request.filters, queries[0].request.space
        kind = self.flows.query_kind(space)
        cal = self.levels.calibration() if space is None else None  # measured for the first space's encoder
        k = self.options.query_expansion if cal is not None else 0
        parameters: dict = {"top_k": min(MAX_TOP_K + 1, max(q.fetch for q in queries))}
        if face is not None:
            parameters["face"] = face  # which face of the query image (face flows)
        if queries[0].request.box is not None:
            parameters["box"] = list(queries[0].request.box)  # the part of each query image searched
        if filters.active:
            parameters["filters"] = filters.to_dict()  # each shard searches only what they keep
        # Enough results to expand with, whatever top_k asks.
        first = dict(parameters, top_k=max(parameters["top_k"], k + 1))
        by_id = self._submit(kind, Request("search", [q.doc for q in queries], parameters=first))
        if k and cal is not None:
            self._expand(queries, by_id, k, cal, parameters)
        top = 1.0  # the highest score there is: a cosine's
        if space is None and REGIONS in self.workspace.spaces:  # a plain search: the photos' parts too
            pairs = [
                (by_id[q.doc.id], r) for q in queries if by_id[q.doc.id].error is None and (r := self._regions_query(q))
            ]
            with_regions(self._submit, self.flows.query_kind(REGIONS), pairs, parameters, whole_cosines(self.workspace))
            top += REGION_WEIGHT
        return [self._report(q, by_id[q.doc.id], cal, top) for q in queries]

    def _submit(self, kind: str, request: Request) -> dict[str, Document]:
        """The query flow ``kind``'s answer to ``request``, by document id; an error of the flow
        raised (a pod that failed on the cluster is started afresh by the next search)."""
        runtime = self.flows.runtime(kind)
        done = runtime.submit(request).result()
        fatal = next((d for d in done.docs if d.fatal), None)
        if fatal is not None:
            if fatal.error_reason == POD_FAILURE:
                self.flows.drop(kind, runtime)
            raise fatal_error(fatal.error_reason, f"search failed: {fatal.error}")
        return {d.id: d for d in done.docs}

    def _regions_query(self, q: _Query) -> Document | None:
        like = q.request.like
        stored = self.workspace.store.get_docs([q.exclude or self.stored_id(like)]) if like is not None else {}
        like_file = next((d.uri for d in stored.values() if d.uri), "") if like is not None else None
        return regions_query(q.doc.id, q.request.image, like_file)

    def _report(
        self, q: _Query, d: Document, cal: Calibration | None, top: float = 1.0
    ) -> SearchReport | LookalikeError:
        if d.error is not None:
            return BadInput(f"query {display_path(d.uri) if d.uri else 'image'}: {d.error}", d.error_reason)
        results = [r for r in d.results if r.doc_id != q.exclude][: q.window]
        metric = self.workspace.space(q.request.space).metric
        if metric == "cosine":  # float16 vectors: a copy's cosine may read 1.00009
            for r in results:
                r.score = min(r.score, top)
                r.similarity = min(r.similarity if r.similarity is not None else r.score, 1.0)
        if top > 1.0 and cal is not None:  # fused with the regions: levels first, regions within them
            results = within_levels(results, cal.levels([r.similarity or 0.0 for r in results]))
        self.levels.label(results, cal, q.request.space)
        kept = cut(results, q.request.min_match)
        # Levels never rise down the list, so what passed is a prefix: every photo past the window
        # fails too, unless the whole window passed.
        counted = q.request.min_match is not None
        exact = len(kept) < len(results) or len(results) < q.window
        faces = d.query_info.get("faces")
        return SearchReport(
            request=q.request,
            hits=[_hit(r, metric) for r in kept[: q.top_k]],
            metric=metric,  # type: ignore[arg-type]
            faces=[(b[0], b[1], b[2], b[3]) for b in faces] if faces is not None else None,
            vector=_query_vector(d),
            total=len(kept) if counted else None,
            total_exact=exact or not counted,
        )

    def _expand(
        self, queries: list[_Query], by_id: dict[str, Document], k: int, cal: Calibration, parameters: dict
    ) -> None:
        """Alpha query expansion of the queries whose best match is not a copy (see the module)."""
        todo: list[tuple[Document, np.ndarray, np.ndarray]] = []  # (query, its vector, expanded)
        for q in queries:
            d = by_id[q.doc.id]
            whole = next((c for c in d.chunks if c.kind == "whole" and c.embedding is not None), None)
            if d.error is not None or whole is None or whole.embedding is None:
                continue
            top = [r for r in d.results if r.doc_id != q.exclude][:k]  # the photo itself is no neighbour
            if not top or top[0].score >= cal.near_floor:
                continue  # nothing to expand with, or a copy: found as it is
            vecs = self._vectors([r.chunk_id for r in top])
            pairs = [(vecs[r.chunk_id], r.score) for r in top if r.chunk_id in vecs]
            if pairs:
                query = whole.embedding.astype(np.float32)
                neighbours = np.stack([v for v, _ in pairs])[None]
                sims = np.array([[sc for _, sc in pairs]], dtype=np.float32)
                todo.append((d, query, expand(query[None, :], neighbours, sims, QE_ALPHA)[0]))
        if not todo:
            return
        again = [Document(id=d.id, uri=d.uri, chunks=[Chunk(kind="whole", embedding=v)]) for d, _, v in todo]
        second = {
            q.id: q for q in self.flows.runtime("query").submit(Request("search", again, parameters)).result().docs
        }
        for d, query, _ in todo:
            found = second.get(d.id)
            if found is None or found.error is not None:
                continue  # the first search's results stand
            vecs = self._vectors([r.chunk_id for r in found.results])
            for r in found.results:  # ranked (and scored) by the expanded query; similar to the query by this
                r.similarity = float(np.dot(vecs[r.chunk_id], query)) if r.chunk_id in vecs else None
            d.results = found.results

    def _vectors(self, chunk_ids: list[int]) -> dict[int, np.ndarray]:
        """The stored vectors of those of these chunks that still exist, by chunk id."""
        ids, vecs = self.workspace.exact(np.array(chunk_ids, dtype=np.int64))
        return dict(zip(ids.tolist(), vecs, strict=True))

    # --- tags ---------------------------------------------------------------------------------

    def _search_tag(self, request: SearchRequest) -> SearchReport:
        """Documents tagged with what the text names, ranked by summed probability.

        A word WordNet places above ImageNet classes ("dog", "birds", "fruit") finds every class
        beneath it, each document scored by the summed probability of its tags among them. Any
        other text matches inside the class labels ("retriev"), scored by the best such tag. Only
        documents scoring :data:`~lookalike.relevance.TAG_FLOOR` or more are tagged so: the list
        ends where the tag's photos end, and ``total`` says how many there are.
        """
        from lookalike.models.wordnet import concept

        assert request.tag is not None
        text, top_k, store = request.tag.strip(), request.top_k or self.options.top_k, self.workspace.store
        found, filters = concept(text), request.filters
        if found is not None:
            hits, total = store.search_labels(found.labels, top_k, filters, TAG_FLOOR)
        else:
            hits, total = store.search_tags(text, top_k, filters, TAG_FLOOR)
        stored = store.get_docs(d for d, _, _ in hits)
        results = [
            Result(doc_id, p, -1, s.uri, s.width, s.height, s.tags, photo=s.shown())
            for doc_id, _label, p in hits
            if (s := stored.get(doc_id)) is not None
        ]
        named = None if found is None else Concept(found.word, tuple(found.names), len(found.classes))
        return SearchReport(request, [_hit(r, None) for r in results], None, concept=named, total=total)


def _hit(r: Result, metric: str | None) -> Hit:
    return Hit(
        doc_id=r.doc_id,
        path=r.uri,
        score=r.score,
        metric=metric,  # type: ignore[arg-type]
        match=r.match,
        tags=tuple(r.tags),
        width=r.width,
        height=r.height,
        chunk=r.chunk_kind,
        bbox=r.bbox,
        photo=r.photo,
        raw_similarity=r.similarity,
    )


def _query_vector(d: Document) -> np.ndarray | None:
    """The vector the query searched with: its whole image's, else its first (a face's)."""
    chunks = [c for c in d.chunks if c.embedding is not None]
    whole = [c for c in chunks if c.kind == "whole"]
    return (whole or chunks)[0].embedding if chunks else None


def _raised(outcomes: list[SearchReport | BaseException]) -> list[SearchReport]:
    """The reports, or the first error among them raised."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes  # type: ignore[return-value]
