"""What the library is asked, and what it answers: one typed request and one typed report per use case.

The CLI maps its flags to a request and renders the report; the server maps JSON to the same
request and answers with the report's own :meth:`to_dict` (adding only its URLs). Neither derives
anything itself.

A score has one meaning per metric, named here where it becomes data: on cosine workspaces
``similarity`` (higher is closer), on L2 (face) workspaces ``distance`` (lower is closer), and on
a tag search the tag's ``probability``. ``score`` is what ranked the results, always "higher is
closer" (minus the distance on L2), so it never rises down a list; on cosine workspaces it is the
similarity, or where query expansion ranked the list the expanded query's, with ``similarity``
still the cosine to the query itself.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lookalike.document import display_path
from lookalike.errors import BadInput
from lookalike.filters import Filters
from lookalike.library.people import GroupingReport
from lookalike.relevance import LEVELS, MatchLevel
from lookalike.store.documents import StoredDoc
from lookalike.store.spaces import FACES, REGIONS

Box = tuple[int, int, int, int]  # x, y, w, h in the image's pixels
Metric = Literal["cosine", "l2"]
# top_k's bounds: a search answers at most this many documents (a bound on the work one request asks for).
MAX_TOP_K = 1000


# --- searching ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchRequest:
    """One search, however it starts: give exactly one of ``image``, ``like`` and ``tag``.

    - ``image``: a photo, as a path or its bytes (it need not be indexed);
    - ``like``: more like a stored photo, by its document id or its indexed path; its stored vectors
      are the query (nothing is read), and it is left out of its own results unless
      ``exclude_self`` is False;
    - ``tag``: photos tagged with a word ("bird", "dog", "fruit") or part of an ImageNet label.

    ``top_k`` (None: the options' ``top_k``) results come back, cut to ``min_match`` or better
    (image and stored-photo searches). ``face`` searches the ``faces`` space (a workspace indexed
    with faces) by one face of the query photo or stored photo (0 is the largest); without it a
    search compares whole photos. ``box`` (x0, y0, x1, y1, fractions of the query photo's width and
    height) searches the ``regions`` space (a workspace indexed with regions) by that part of the
    query photo or stored photo: each hit says which part of it matched (``region``).
    ``filters``: only photos they keep, the true top ``top_k`` among them
    (:mod:`lookalike.filters`).
    """

    image: str | os.PathLike | bytes | None = None
    like: str | None = None
    tag: str | None = None
    top_k: int | None = None
    min_match: MatchLevel | None = None
    face: int | None = None
    box: tuple[float, float, float, float] | None = None
    exclude_self: bool = True
    filters: Filters = field(default_factory=Filters)

    def __post_init__(self) -> None:
        given = [name for name in ("image", "like", "tag") if getattr(self, name) is not None]
        if len(given) != 1:
            raise BadInput(
                "a search needs exactly one of image, like and tag" + (f", not {' and '.join(given)}" if given else ""),
                "bad request",
            )
        if self.top_k is not None and not 1 <= self.top_k <= MAX_TOP_K:
            raise BadInput(f"top_k must be between 1 and {MAX_TOP_K}, got {self.top_k}", "bad top_k")
        if self.min_match is not None and self.min_match not in LEVELS:
            raise BadInput(f"min_match must be one of {', '.join(LEVELS)}, not {self.min_match!r}", "bad request")
        if self.tag is not None and self.min_match is not None:
            raise BadInput("min_match cannot be used with a tag search: a tag has no similarity", "bad request")
        if self.face is not None and (self.tag is not None or self.face < 0):
            raise BadInput("face picks a face of the query photo: a number from 0, with image or like", "bad request")
        if self.tag is not None and not self.tag.strip():
            raise BadInput("the tag query is empty", "bad query")
        if self.box is not None:
            object.__setattr__(self, "box", check_box(self.box))
            if self.tag is not None or self.face is not None:
                raise BadInput(
                    "box searches by a part of a photo: give it with image or like, not with tag or face", "bad box"
                )
            if self.min_match is not None:
                raise BadInput(
                    "min_match cannot be used with a box: match levels are measured for whole photos, not their parts",
                    "bad box",
                )

    @property
    def space(self) -> str | None:
        """The vector space searched: ``faces`` for a search by face, ``regions`` for one by a box,
        else None (the first space)."""
        return FACES if self.face is not None else REGIONS if self.box is not None else None

    @property
    def kind(self) -> Literal["image", "like", "tag"]:
        return "image" if self.image is not None else "like" if self.like is not None else "tag"


def check_box(box: Any) -> tuple[float, float, float, float]:
    """A query box as four fractions x0, y0, x1, y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1,
    from a sequence or the text "x0,y0,x1,y1"; BadInput says what is wrong with any other."""
    parts = box.split(",") if isinstance(box, str) else box
    try:
        values = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise BadInput(
            f"box must be four numbers x0,y0,x1,y1 (fractions of the width and height), not {box!r}", "bad box"
        ) from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise BadInput(
            f"box must be four numbers x0,y0,x1,y1 (fractions of the width and height), not {box!r}", "bad box"
        )
    x0, y0, x1, y1 = values
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise BadInput(
            f"box {','.join(f'{v:g}' for v in values)} is not inside the photo: give x0,y0,x1,y1 "
            "as fractions with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
            "bad box",
        )
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Hit:
    """One photo found: the document, how close it is (named by ``metric``), its match level and
    what matched (a chunk: the whole image, a mirror, a face with its box)."""

    doc_id: str
    path: str | None  # the file as indexed (bytes that are not UTF-8 kept as surrogate escapes)
    score: float  # higher is closer
    metric: Metric | None  # None: a tag's probability, no distance
    match: MatchLevel | None = None
    tags: tuple[tuple[str, float], ...] = ()
    width: int | None = None
    height: int | None = None
    chunk: str | None = None
    bbox: Box | None = None
    photo: dict[str, Any] = field(default_factory=dict)  # what the camera recorded (PhotoMeta.shown)
    raw_similarity: float | None = None  # the cosine to the query, where the ranking score is another

    @property
    def region(self) -> tuple[float, float, float, float] | None:
        """A region hit's box as fractions (x0, y0, x1, y1) of the photo's width and height."""
        if self.chunk != "region" or self.bbox is None or not self.width or not self.height:
            return None
        x, y, w, h = self.bbox
        fit = (x / self.width, y / self.height, (x + w) / self.width, (y + h) / self.height)
        return tuple(round(min(max(v, 0.0), 1.0), 4) for v in fit)  # type: ignore[return-value]

    @property
    def similarity(self) -> float | None:
        """The cosine similarity to the query itself (cosine workspaces): the score, unless query
        expansion ranked the results, whose score then is the expanded query's."""
        if self.metric != "cosine":
            return None
        return self.raw_similarity if self.raw_similarity is not None else self.score

    @property
    def distance(self) -> float | None:
        return -self.score if self.metric == "l2" else None

    def to_dict(self, max_tags: int | None = None) -> dict[str, Any]:
        return (
            doc_fields(self.doc_id, self.path, self.width, self.height, list(self.tags), max_tags)
            | score_fields(self.score, self.metric, self.similarity)
            | {"chunk": self.chunk, "bbox": list(self.bbox) if self.bbox else None}
            | ({"region": list(r)} if (r := self.region) is not None else {})
            | self.photo
            | ({"match": self.match} if self.match is not None else {})
        )


@dataclass(frozen=True)
class Concept:
    """What a tag word names: WordNet's names for it and the ImageNet classes beneath it."""

    word: str
    names: tuple[str, ...]
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "names": list(self.names), "classes": self.classes}


@dataclass
class SearchReport:
    """The answer to one :class:`SearchRequest`: its hits, best first, and what the search learnt."""

    request: SearchRequest
    hits: list[Hit]
    metric: Metric | None  # None for a tag search
    faces: list[Box] | None = None  # face workspaces: every face found in the query image
    concept: Concept | None = None  # a tag search by a WordNet word
    vector: np.ndarray | None = field(default=None, repr=False)  # the query's own vector (not in JSON)
    # How many photos the search found in all: those with the tag, or those that passed min_match
    # (counted among the first COUNT_LIMIT; ``total_exact`` False: at least that many). None: a
    # ranking of every photo, with no cut.
    total: int | None = None
    total_exact: bool = True

    @property
    def weak(self) -> bool:
        """Nothing here is really like the query: its best result is ``weak`` (or there is none)."""
        if self.request.tag is not None:
            return False
        return not self.hits or self.hits[0].match == "weak"

    @property
    def query(self) -> str:
        """What was searched for, in words: the image's path, the stored photo, or the tag."""
        r = self.request
        if r.tag is not None:
            return r.tag
        if r.like is not None:
            return r.like
        return display_path(os.fspath(r.image)) if isinstance(r.image, (str, os.PathLike)) else "image"


# --- listing -------------------------------------------------------------------------------------------

Sort = Literal["taken", "indexed", "name", "size"]
SORTS: tuple[Sort, ...] = ("taken", "indexed", "name", "size")
MAX_LIMIT = 1000  # documents a listing page holds at most


@dataclass(frozen=True)
class ListRequest:
    """Browse the collection: the photos ``filters`` keep, ``limit`` a page, sorted by date taken,
    date indexed, path (``name``) or file size, from a page's ``next_cursor`` on."""

    filters: Filters = field(default_factory=Filters)
    sort: Sort = "taken"
    desc: bool = False
    limit: int = 100
    cursor: str | None = None

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise BadInput(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}", "bad request")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadInput(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}", "bad request")


@dataclass
class ListReport:
    """One page of a listing: its documents, how many the filters keep in all, and the next page's cursor."""

    request: ListRequest
    total: int
    docs: list[StoredDoc]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "items": [stored_doc_fields(d) for d in self.docs],
            "next_cursor": self.next_cursor,
        }


# --- indexing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRequest:
    """Index these files and folders incrementally: new and changed files are encoded, unchanged
    ones skipped, deleted ones removed, renamed and moved ones followed (not encoded again).

    ``glob`` picks files by name or relative path; ``limit`` indexes at most that many files (and
    removes nothing); ``batch_size`` documents go through the flow together; ``retry_skipped``
    reads files remembered as undecodable again. ``background``: a new vector index, when one is
    due, is built behind the searches instead of waited for (a server's uploads). ``quiet_noop``:
    a run that finds nothing to encode or remove starts no index flow (no model loaded, no shard
    reading its vectors: a watcher's reconcile scans); otherwise the flow starts and closes, which
    brings the shards' vector indexes up to date (a new budget, a run abandoned while finishing).
    """

    paths: tuple[str, ...]
    glob: str | None = None
    limit: int | None = None
    batch_size: int = 16
    retry_skipped: bool = False
    background: bool = False
    quiet_noop: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(os.fspath(p) for p in self.paths))
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise BadInput(f"--limit must be at least 1, got {self.limit}")


@dataclass
class IndexReport:
    """What an indexing run did, with every file it could not use and why."""

    scanned: int = 0
    indexed: int = 0  # new files now searchable
    updated: int = 0  # changed files re-encoded
    unchanged: int = 0
    removed: int = 0
    moved: int = 0  # renamed or moved files followed to their new paths (same bytes: nothing encoded)
    set_aside: int = 0  # files left out because `lookalike dupes --move-to` moved them there
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    encoded: int = 0  # images run through the model
    without_vectors: int = 0  # indexed, but the flow found nothing to embed (e.g. no face)
    seconds: float = 0.0
    docs: int = 0  # documents in the workspace after the run
    workspace: str = ""
    people: GroupingReport | None = None  # the faces grouped into people after it (a workspace with faces)
    people_error: str | None = None  # why that grouping failed (the next run groups them)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def files_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["skipped_files"] = [{"path": display_path(p), "reason": r} for p, r in self.skipped_files]
        out["skipped_total"] = self.skipped_total
        out["files_per_second"] = round(self.files_per_second, 2)
        out["seconds"] = round(self.seconds, 3)
        out["workspace"] = display_path(self.workspace)
        return out


# --- shared fields ---------------------------------------------------------------------------------------


def score_fields(score: float, metric: str | None, similarity: float | None = None) -> dict[str, float]:
    """A score, named for its metric (None: a score that is no distance, such as a tag's probability);
    ``similarity``: the cosine to the query, when it is not the score itself."""
    score = round(float(score), 6)
    if metric is None:
        return {"score": score}
    if metric == "l2":
        return {"score": score, "distance": round(-score, 6) + 0.0}  # + 0.0: never "-0.0"
    return {"score": score, "similarity": round(float(similarity if similarity is not None else score), 6)}


def stored_doc_fields(doc: StoredDoc, max_tags: int | None = None) -> dict[str, Any]:
    """Everything said about an indexed document: its file, its pixels, its tags and its header."""
    return (
        doc_fields(doc.id, doc.uri, doc.width, doc.height, doc.tags, max_tags)
        | doc.shown()
        | {"size": doc.size, "content_hash": doc.content_hash, "indexed_at": doc.indexed_at}
    )


def doc_fields(
    doc_id: str,
    uri: str | None,
    width: int | None,
    height: int | None,
    tags: list[tuple[str, float]],
    max_tags: int | None = None,
) -> dict[str, Any]:
    """What is said about a document anywhere. File names are shown with display_path (they need
    not be valid UTF-8); the files themselves are always opened by their real path."""
    shown = display_path(uri) if uri is not None else None
    return {
        "doc_id": doc_id,
        "uri": shown,
        "name": os.path.basename(shown or "") or doc_id,
        "tags": [{"label": label, "probability": round(p, 4)} for label, p in tags[:max_tags]],
        "width": width,
        "height": height,
    }
