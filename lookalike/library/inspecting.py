"""Inspecting a workspace: what it holds, whether the store and the shards agree, one document,
and its duplicates. Nothing here runs a flow or loads a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookalike.document import display_path
from lookalike.dupes import DupeReport, find_duplicates
from lookalike.errors import NotFound
from lookalike.filters import Filters
from lookalike.library.flows import Flows
from lookalike.library.levels import MatchLevels
from lookalike.library.types import ListReport, ListRequest
from lookalike.relevance import NEAR_DUPLICATE_FLOOR, TAG_FLOOR
from lookalike.store.docstore import StoredDoc
from lookalike.store.spaces import FACES, REGIONS
from lookalike.store.workspace import Workspace, WorkspaceInfo

RECALL_QUERIES = 200  # held-out vectors per shard for `info --recall`
SUGGESTION_CANDIDATES = 40  # WordNet words a prefix is checked against the collection for
COUNTS_KEPT = 256  # listing totals kept until the next commit (the oldest goes first)


@dataclass(frozen=True)
class TagWord:
    """A tag word the collection holds: how many photos it tags, and how many ImageNet classes it covers."""

    word: str
    photos: int
    classes: int


@dataclass
class InfoReport:
    """What a workspace holds, and (when checked) whether its store and shards agree."""

    info: WorkspaceInfo
    problems: list[str] | None = None  # None: not checked
    runtime: dict[str, Any] | None = None  # a server's: where its query pods run

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        out: dict[str, Any] = {
            "workspace": display_path(str(i.path)),
            "docs": i.docs,
            "chunks": i.chunks,
            "shards": {str(k): v for k, v in i.shards.items()},
            "encoder": i.encoder,
            "preset": i.preset,
            "faces": FACES in i.spaces,
            "regions": REGIONS in i.spaces,
            "spaces": {name: space.to_dict() for name, space in i.spaces.items()},
            "size_bytes": i.size_bytes,
            "index": i.indexes,
            "index_budget": {"memory_bytes": i.budget.memory_bytes, "latency_ms": i.budget.latency_ms},
        }
        if self.problems is not None:
            out |= {"consistent": not self.problems, "problems": self.problems}
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return out


class Inspector:
    """Reads one workspace (and asks its running query pods, where a server has them)."""

    def __init__(self, workspace: Workspace, flows: Flows, levels: MatchLevels):
        self.workspace, self.flows, self.levels = workspace, flows, levels
        self._word_counts: tuple[int, dict[str, int]] = (-1, {})  # (store generation, word -> photos)
        self._counts: tuple[int, dict[Filters, int]] = (-1, {})  # (store generation, filters -> documents)
        self._shards_described: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # space -> (generation, shards)

    def info(self, *, verify: bool = True, recall: bool = False) -> InfoReport:
        """Documents, chunks, shards and their vector index (type, memory, recall@10 measured when
        built, or now with ``recall``), and with ``verify`` whether the store and the shards agree.
        Each shard's index is opened here, as its pod would open it."""
        ws = self.workspace
        shards = ws.shard_indexes()
        try:
            info = ws.info([shard.describe() for shard in shards])
            if recall:
                for entry, measured in zip(info.indexes, ws.measure_recall(RECALL_QUERIES, shards=shards), strict=True):
                    entry["recall_at_10"], entry["recall_queries"] = measured, min(RECALL_QUERIES, entry["vectors"])
            problems = ws.verify(shards) if verify else None
        finally:
            for shard in shards:
                shard.close(flush=False)
        return InfoReport(info, problems)

    def stats(self) -> InfoReport:
        """What a server says of its workspace: its running query pods describe the shard indexes
        they hold (on Ray, the shard actors answer), and where they run."""
        runtime = self.flows.running("query")
        described: list[dict[str, Any]] = []
        for space in self.workspace.spaces:  # each space's running query pods, else its shards opened here
            kind = self.flows.query_kind(space)
            running = self.flows.running(kind)
            pods = self.flows.flow(kind).pods_storing_vectors() if running is not None else []
            if running is not None and pods:
                described += running.ask(pods[0].name, "describe")
            else:
                described += self._described_here(space)
        choice = self.flows.choice("query")
        where = {"kind": choice.kind, "pods": runtime.placement() if runtime is not None else {}}
        return InfoReport(self.workspace.info(described), runtime=where)

    def _described_here(self, space: str) -> list[dict[str, Any]]:
        """A space's shards described by opening them here (no query pod holds them yet), once per
        commit: a page asks for the stats often, and opening a large shard is not free."""
        generation = self.workspace.store.generation
        cached = self._shards_described.get(space)
        if cached is None or cached[0] != generation:
            cached = self._shards_described[space] = (generation, self.workspace.all_shards(space).describe())
        return cached[1]

    def tag_words(self, prefix: str, limit: int = 10) -> list[TagWord]:
        """Tag words starting with ``prefix`` that the collection holds: each with how many photos a
        tag search for it finds (at :data:`~lookalike.relevance.TAG_FLOOR`), the most first. The
        counts are kept until the next commit."""
        from lookalike.models.wordnet import concept, suggest

        store, out = self.workspace.store, []
        generation = store.generation
        if self._word_counts[0] != generation:
            self._word_counts = (generation, {})
        counts = self._word_counts[1]
        for word, classes in suggest(prefix, SUGGESTION_CANDIDATES):
            if word not in counts:
                found = concept(word)
                counts[word] = store.count_tagged(found.labels, TAG_FLOOR) if found is not None else 0
            if counts[word]:
                out.append(TagWord(word, counts[word], classes))
        return sorted(out, key=lambda t: (-t.photos, t.word))[:limit]

    def list(self, request: ListRequest) -> ListReport:
        """A page of the photos the request's filters keep, in its order (see :class:`ListRequest`).

        How many a filter keeps is counted once a commit (the next pages reuse it), and decides how
        the page is found: down the sort key's index while the filter keeps enough that a page comes
        after a few rows, else through the filter's own index."""
        store, filters = self.workspace.store, request.filters
        total, everything = self._count(filters), self._count(Filters())
        by_sort_index = total * total >= everything * request.limit
        page = store.list_docs(filters, request.sort, request.desc, request.limit, request.cursor, total, by_sort_index)
        return ListReport(request, page.total, page.docs, page.next_cursor)

    def _count(self, filters: Filters) -> int:
        generation = self.workspace.store.generation
        if self._counts[0] != generation:
            self._counts = (generation, {})
        counts = self._counts[1]
        if filters not in counts:
            if len(counts) >= COUNTS_KEPT:  # a bound on what many different filters can make it hold
                counts.pop(next(iter(counts)))
            counts[filters] = self.workspace.store.count_matching(filters)
        return counts[filters]

    def doc(self, doc_id: str) -> StoredDoc:
        """An indexed document, or NotFound."""
        doc = self.workspace.store.get_docs([doc_id]).get(doc_id)
        if doc is None:
            raise NotFound(f"no indexed document {doc_id!r}")
        return doc

    def dupes(self, threshold: float | None = None) -> DupeReport:
        """Groups of exact copies (the same bytes) and of near duplicates (see :mod:`lookalike.dupes`),
        by default from the floor search results are badged ``near_duplicate`` from."""
        if threshold is None:
            cal = self.levels.calibration()
            threshold = cal.near_floor if cal is not None else NEAR_DUPLICATE_FLOOR
        return find_duplicates(self.workspace, threshold)
