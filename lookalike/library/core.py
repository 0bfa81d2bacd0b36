"""The library: one open workspace, and the use cases every front end calls.

    with lookalike.open(Options.from_env(workspace="photos.lookalike")) as library:
        library.index(IndexRequest(("photos",)))
        report = library.search(SearchRequest(image="photos/cat.jpg"))

Opening for writing builds the index and query flows (to create the workspace, or check it holds
their vectors); opening for reading opens only the workspace, and the query flow is built (and
checked) by the first search that needs it. No model is loaded until a pod first encodes.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
from collections.abc import Iterable

from lookalike.dupes import DupeReport
from lookalike.errors import LookalikeError
from lookalike.filters import Filters
from lookalike.library.browsing import Browser, Facets, FolderCount, MonthCount
from lookalike.library.explaining import Explainer, ExplainRequest, Explanation
from lookalike.library.flows import Flows
from lookalike.library.indexing import Indexer, IndexProgress
from lookalike.library.inspecting import InfoReport, Inspector, TagWord
from lookalike.library.moving import Mover, MoveReport
from lookalike.library.people import GroupingReport, People
from lookalike.library.searching import Searcher
from lookalike.library.types import IndexReport, IndexRequest, ListReport, ListRequest, SearchReport, SearchRequest
from lookalike.settings import Options
from lookalike.store.docstore import StoredDoc
from lookalike.store.moves import MoveBatch
from lookalike.store.workspace import Workspace, WorkspaceLayout


class Library:
    """A workspace with its flows. Open with :func:`open`; close (or use ``with``) when done.

    Its use cases are :attr:`indexer`, :attr:`searcher`, :attr:`inspector` and :attr:`browser`; the methods here
    are their entry points.
    """

    def __init__(self, options: Options, workspace: Workspace, flows: Flows):
        self.options, self.workspace, self.flows = options, workspace, flows
        self.indexer = Indexer(workspace, flows)
        self.searcher = Searcher(workspace, flows, options)
        self.explainer = Explainer(workspace, flows, self.searcher)
        self.inspector = Inspector(workspace, flows, self.searcher.levels)
        self.mover = Mover(workspace, self.indexer)
        self.browser = Browser(workspace)
        self.people = People(workspace)

    # --- use cases ----------------------------------------------------------------------------

    def index(
        self, request: IndexRequest | Iterable[str | os.PathLike], progress: IndexProgress | None = None
    ) -> IndexReport:
        """Index files and folders incrementally (an :class:`IndexRequest`, or just the paths)."""
        if not isinstance(request, IndexRequest):
            request = IndexRequest(tuple(os.fspath(p) for p in request))
        report = self.indexer.index(request, progress)
        if report.indexed or report.updated or report.removed:
            report.people, report.people_error = self._group_people(progress)
        return report

    def _group_people(self, progress: IndexProgress | None = None) -> tuple[GroupingReport | None, str | None]:
        """Group the faces committed since the last grouping (a workspace with faces). A failure
        loses nothing (the photos are committed, and the next run groups what this one did not):
        it is said, not raised."""
        if not self.people.available:
            return None, None
        if progress is not None:
            progress.note("grouping the new faces into people")
        try:
            return self.people.update(), None
        except LookalikeError as e:
            if progress is not None:
                progress.note(f"grouping faces into people failed: {e}; the next index run tries again")
            return None, str(e)

    def remove(self, paths: Iterable[str | os.PathLike]) -> int:
        """Take files (or every file under folders) out of the index; the files stay. How many."""
        removed = self.indexer.remove(paths)
        if removed:
            self._group_people()
        return removed

    def search(self, request: SearchRequest) -> SearchReport:
        return self.searcher.search(self._checked(request))

    def search_many(self, requests: Iterable[SearchRequest]) -> list[SearchReport]:
        return self.searcher.search_many(self._checked(r) for r in requests)

    def explain(self, request: ExplainRequest) -> Explanation:
        """Why a result matched a query: heat maps over both pictures (:mod:`lookalike.library.explaining`)."""
        return self.explainer.explain(request)

    def _checked(self, request: SearchRequest) -> SearchRequest:
        """The request with its people named by id (NotFound for a person there is none of)."""
        filters = self.people.check(request.filters)
        return request if filters is request.filters else dataclasses.replace(request, filters=filters)

    def info(self, *, verify: bool = True, recall: bool = False) -> InfoReport:
        return self.inspector.info(verify=verify, recall=recall)

    def list(self, request: ListRequest | None = None) -> ListReport:
        """Browse: a page of the collection (every photo by date taken, without a request)."""
        request = request or ListRequest()
        filters = self.people.check(request.filters)
        if filters is not request.filters:
            request = dataclasses.replace(request, filters=filters)
        return self.inspector.list(request)

    def doc(self, doc_id: str) -> StoredDoc:
        return self.inspector.doc(doc_id)

    def timeline(self, filters: Filters | None = None) -> builtins.list[MonthCount]:
        """Months holding photos the filters keep (by local date taken), the latest first, with counts."""
        return self.browser.timeline(self.people.check(filters or Filters()))

    def folders(self, parent: str | None = None) -> builtins.list[FolderCount]:
        """The folders below ``parent`` (without one: the indexed folders) that hold photos, counted."""
        return self.browser.folders(parent)

    def facets(self) -> Facets:
        """The cameras, formats and folders the collection holds, each with its photos."""
        return self.browser.facets()

    def tag_words(self, prefix: str, limit: int = 10) -> builtins.list[TagWord]:
        """Tag words starting with ``prefix`` that the collection holds, with their photo counts."""
        return self.inspector.tag_words(prefix, limit)

    def dupes(self, threshold: float | None = None) -> DupeReport:
        return self.inspector.dupes(threshold)

    def move(
        self, doc_ids: Iterable[str], folder: str, trash: str | os.PathLike | None = None, *, background: bool = False
    ) -> MoveReport:
        """Move documents' files into ``folder`` (inside the indexed folders, or relative to the trash
        folder, ``<workspace>/trash`` unless ``trash`` names another) and take them out of the index;
        logged, never overwriting, undone by :meth:`undo_move` (see :mod:`lookalike.library.moving`)."""
        report = self.mover.move(doc_ids, folder, trash, background=background)
        self._group_people()
        return report

    def undo_move(self, batch: str | None = None, *, background: bool = False) -> MoveReport:
        """Put a batch of moved files back (by default the latest not yet undone) and index them again."""
        report = self.mover.undo(batch, background=background)
        self._group_people()
        return report

    def moves(self) -> builtins.list[MoveBatch]:
        """The move log's batches, oldest first."""
        return self.mover.moves()

    # --- closing ------------------------------------------------------------------------------

    def close(self, flush: bool = True) -> None:
        """Stop the flows and close the workspace. Their shard pods snapshot their indexes unless
        ``flush`` is False (after an error: the next open brings the old snapshots forward)."""
        self.searcher.close()
        try:
            self.flows.close(flush)
        finally:
            self.workspace.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # After an error, no snapshot: it could only hide the error (a full disk fails both), and
        # the next open brings the shards forward from what was committed.
        self.close(flush=exc_type is None)


def open(  # noqa: A001 - lookalike.open, as io.open or sqlite3.connect read
    options: Options | str | os.PathLike | None = None, *, write: bool = True, reset: bool = False
) -> Library:
    """Open the workspace ``options.workspace`` (a path alone: that workspace, with the settings in
    effect, as the CLI reads them).

    ``write``: to index and remove (the workspace is created if need be); a reader only searches
    and inspects, and leaves the workspace to writers meanwhile. ``reset``: empty it first
    (forgetting remembered bad files), e.g. to index with another encoder.
    """
    if options is None or isinstance(options, (str, os.PathLike)):
        options = Options.from_env(workspace=options)
    flows = Flows(options, remembered=not reset)
    try:
        if write:
            layout = flows.layout()
            workspace = Workspace.open(options.workspace, layout, writer=True, reset=reset)
        else:
            budget = WorkspaceLayout(index_memory=options.index_memory, index_latency_ms=options.index_latency_ms)
            workspace = Workspace.open(options.workspace, budget, writer=False, create=False)
    except BaseException:
        flows.close(flush=False)  # the containers its flows started
        raise
    flows.attach(workspace)
    return Library(options, workspace, flows)
