"""Documents (one image each) and their chunks (the whole image, a variant, or a region)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lookalike.errors import FATAL_REASONS
from lookalike.relevance import MatchLevel

RequestKind = Literal["index", "search", "delete"]
REQUEST_KINDS: tuple[RequestKind, ...] = ("index", "search", "delete")


def doc_id_for(uri: str) -> str:
    """A stable id for a file: the same path is the same document, across runs and machines."""
    return hashlib.sha256(uri.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def display_path(path: str) -> str:
    """``path`` as text that can always be printed or sent as JSON.

    File names are bytes on POSIX; Python keeps the bytes of a name that is not valid UTF-8 as
    lone surrogates, which neither a UTF-8 terminal, SQLite nor JSON accepts. Those bytes are shown
    as ``\\xNN`` escapes (as ``ls -b`` does); valid names come back unchanged.
    """
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shard_for(doc_id: str, shards: int) -> int:
    """The shard that holds a document's vectors: a stable hash, the same in every process."""
    return zlib.crc32(doc_id.encode("utf-8")) % shards


@dataclass
class Match:
    """One chunk found by a vector search. ``score`` is higher for closer: the cosine similarity,
    or on L2 (face) spaces minus the Euclidean distance (lookalike.library.types names it for people)."""

    chunk_id: int
    doc_id: str
    score: float


_chunk_uids = itertools.count(1)


@dataclass
class Chunk:
    """Part of a document that gets its own vector.

    ``kind`` is "whole" (the image), a variant such as "mirror", or a region such as "face" or
    "region" (a window of the photo, in the ``regions`` space);
    ``bbox`` is ``(x, y, w, h)`` in the original image's pixels, or ``None`` for the whole frame.
    """

    kind: str = "whole"
    bbox: tuple[int, int, int, int] | None = None
    space: str = "image"  # the vector space its embedding belongs to (lookalike.store.spaces)
    tensor: np.ndarray | None = None  # model input; dropped once encoded
    embedding: np.ndarray | None = None
    matches: list[Match] = field(default_factory=list)
    id: int | None = None  # assigned by the store when committed
    uid: int = field(default_factory=lambda: next(_chunk_uids))  # same across forks, for joins


@dataclass
class Result:
    """One ranked document for a query."""

    doc_id: str
    score: float
    chunk_id: int
    uri: str | None = None
    width: int | None = None
    height: int | None = None
    tags: list[tuple[str, float]] = field(default_factory=list)
    chunk_kind: str | None = None
    bbox: tuple[int, int, int, int] | None = None
    match: MatchLevel | None = None  # same, near_duplicate, similar or weak (lookalike.relevance), on searches
    similarity: float | None = None  # cosine to the query itself, where the ranking score is another (expansion)
    photo: dict[str, Any] = field(default_factory=dict)  # what the camera recorded (PhotoMeta.shown)


@dataclass
class Document:
    """One image: where it lives, what it is, and its chunks."""

    id: str
    uri: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    tags: list[tuple[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # what the camera recorded (lookalike.metadata)
    chunks: list[Chunk] = field(default_factory=list)
    blob: bytes | None = None  # the file's bytes while in flight
    error: str | None = None  # why this document was skipped
    error_reason: str | None = None  # short category of the error, for summaries
    # The error is the file's own fault (its bytes cannot be decoded), so an unchanged file would
    # fail again: the workspace remembers it. Errors of the flow, the model or the store are not.
    input_fault: bool = False
    results: list[Result] = field(default_factory=list)  # for a query document
    query_info: dict[str, Any] = field(default_factory=dict)  # what executors learnt about a query

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> Document:
        uri = os.path.abspath(os.fspath(path))
        return cls(id=doc_id_for(uri), uri=uri)

    def fail(self, message: str, reason: str | None = None, *, input_fault: bool = False) -> None:
        """Mark this document as not usable. ``input_fault``: the file's bytes are at fault (see
        :attr:`input_fault`); leave it False for anything the file itself cannot fix."""
        if self.error is None:  # the first failure is the cause; later ones are consequences
            self.error, self.error_reason, self.input_fault = message, reason or message, input_fault

    @property
    def fatal(self) -> bool:
        """Failed for a reason that is not this document's (the store, a dead pod, the model): the
        same for every further request, so the work stops (:data:`lookalike.errors.FATAL_REASONS`)."""
        return self.error is not None and self.error_reason in FATAL_REASONS

    def fork(self) -> Document:
        """A copy for another branch of a flow: new lists, new chunk records, shared arrays."""
        return dataclasses.replace(
            self,
            tags=list(self.tags),
            meta=dict(self.meta),
            chunks=[dataclasses.replace(c, matches=list(c.matches)) for c in self.chunks],
            results=list(self.results),
            query_info=dict(self.query_info),
        )


_request_ids = itertools.count(1)


@dataclass
class StagedWrites:
    """What the indexers of one request accepted, committed atomically when the request ends.

    The doc indexer accepts documents; each shard of each vector indexer (one per vector space)
    accepts its documents' chunks. The workspace commits both in one SQLite transaction, so no vector is ever searchable
    without its document and no document is ever stored without its vectors.
    """

    doc_ids: list[str] = field(default_factory=list)
    # (doc id, slot) -> chunks: a document's vectors in each space that holds some (each space's
    # shard is one slot of the doc store, lookalike.store.spaces)
    vectors: dict[tuple[str, int], list[Chunk]] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    def absorb(self, other: StagedWrites) -> None:
        """Take in what another branch (or shard) of the same request staged. In one process the
        branches share one StagedWrites; across processes each comes back with its own."""
        if other is self:
            return
        self.doc_ids.extend(i for i in other.doc_ids if i not in set(self.doc_ids))
        self.vectors.update(other.vectors)
        self.deletes.extend(i for i in other.deletes if i not in set(self.deletes))


@dataclass
class Request:
    """A batch of documents travelling through a flow."""

    kind: RequestKind
    docs: list[Document]
    parameters: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_request_ids))
    staged: StagedWrites = field(default_factory=StagedWrites)

    def fork(self) -> Request:
        """A copy for a parallel branch; staged writes are shared, since they go to one commit."""
        return dataclasses.replace(self, docs=[d.fork() for d in self.docs])

    @property
    def live_docs(self) -> list[Document]:
        return [d for d in self.docs if d.error is None]
