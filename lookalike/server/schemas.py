"""The API's request and response bodies, so /openapi.json describes them (errors included)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lookalike.errors import BadInput
from lookalike.filters import KEYS, MAX_FOLDERS, MAX_PEOPLE, ORIENTATIONS, Filters, Orientation
from lookalike.library.types import MAX_TOP_K
from lookalike.metadata import FORMAT_NAMES
from lookalike.relevance import LEVELS, MatchLevel
from lookalike.settings import default

FormatName = Literal["jpeg", "png", "gif", "bmp", "webp", "tiff", "heic", "avif", "raw"]

TOP_K_HELP = f"results per query (default: the server's LOOKALIKE_TOP_K, {default('LOOKALIKE_TOP_K')} unless set)"

MIN_MATCH_HELP = (
    "keep only results at this match level or better: same > near_duplicate > similar > weak "
    "(levels are calibrated on the collection's own scores)"
)

# --- request bodies --------------------------------------------------------------------------------


# Images in one search request: one encoder batch, and a bound on the work one request asks for.
MAX_QUERY_IMAGES = 64

# Text a filter takes: not blank.
NOT_BLANK = r"\S"
Path = Annotated[str, Field(min_length=1, max_length=4096, pattern=NOT_BLANK)]
PersonRef = Annotated[str, Field(min_length=1, max_length=200, pattern=NOT_BLANK)]
# A day as YYYY-MM-DD, nothing else (pydantic would take "0" as 1970-01-01); Filters checks the calendar.
Day = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", json_schema_extra={"format": "date"})]
# "LAT,LON,KM" in a query parameter or a multipart field: the ranges in the pattern, so the schema
# says what the server accepts.
NEAR_PATTERN = (
    r"^\s*-?(90(\.0+)?|[1-8]?[0-9](\.[0-9]+)?)\s*,\s*-?(180(\.0+)?|(1[0-7][0-9]|[1-9]?[0-9])(\.[0-9]+)?)\s*,"
    r"\s*[0-9]+(\.[0-9]+)?\s*$"
)
FILTER_HELP = {
    "taken_after": "photos taken on or after this day (their local date; without an EXIF date, their file's)",
    "taken_before": "photos taken on or before this day",
    "camera": "text in the camera's make or model, any case (iphone, canon eos)",
    "near": "within km of a place",
    "folder": "photos in this folder or below it (a list: any of them)",
    "orientation": "landscape (wider than high), portrait (higher than wide) or square",
    "format": "the file's format",
    "person": "photos with this person in them, by id or name (a list: with every one of them)",
}


def _checked(filters: dict[str, Any]) -> Filters:
    """The filters of a validated body; a day no calendar has (2024-02-30) is a 422 like any bad value."""
    try:
        return Filters.from_dict(filters)
    except BadInput as e:
        raise RequestValidationError([{"loc": ("filters",), "msg": str(e), "type": "value_error"}]) from None


# What a field whose pattern a value misses takes, in words (a 422 says this instead of the regex).
PATTERN_HINTS = {
    "near": "LAT,LON,KM: a latitude from -90 to 90, a longitude from -180 to 180, kilometres from 0",
    "taken_after": "a date, YYYY-MM-DD",
    "taken_before": "a date, YYYY-MM-DD",
    "camera": "text in a camera's make or model, not blank",
    "folder": "a folder's path, not blank",
    "person": "a person's id or name, not blank",
    "name": "a name with at least one visible character",
    "into": "a person's id or name, with at least one visible character",
}


class NearBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90, allow_inf_nan=False)
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False)
    km: float = Field(ge=0, allow_inf_nan=False, description="the radius (great-circle distance)")


class FilterBody(BaseModel):
    """``filters`` of a search or listing: every result must meet each condition given."""

    model_config = ConfigDict(extra="forbid")
    taken_after: Day | None = Field(default=None, description=FILTER_HELP["taken_after"])
    taken_before: Day | None = Field(default=None, description=FILTER_HELP["taken_before"])
    camera: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=NOT_BLANK, description=FILTER_HELP["camera"]
    )
    near: NearBody | None = Field(default=None, description=FILTER_HELP["near"])
    folder: Path | Annotated[list[Path], Field(max_length=MAX_FOLDERS)] | None = Field(
        default=None, description=FILTER_HELP["folder"]
    )
    orientation: Orientation | None = Field(default=None, description=FILTER_HELP["orientation"])
    format: FormatName | None = Field(default=None, description=FILTER_HELP["format"])
    person: PersonRef | Annotated[list[PersonRef], Field(max_length=MAX_PEOPLE)] | None = Field(
        default=None, description=FILTER_HELP["person"]
    )

    def filters(self) -> Filters:
        return _checked(self.model_dump(exclude_none=True, mode="json"))


BOX_HELP = (
    "search by this part of the query photo: x0, y0, x1, y1 as fractions of its width and height, "
    "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (a workspace indexed with regions); each match then "
    "says which part of it matched (region)"
)
_FRACTION = r"(0(\.\d+)?|1(\.0+)?|\.\d+)"
BOX_PATTERN = rf"^{_FRACTION},{_FRACTION},{_FRACTION},{_FRACTION}$"
# Each fraction in [0, 1] by the schema; x0 < x1 and y0 < y1 the library checks (400 naming the box).
Box01 = Annotated[list[Annotated[float, Field(ge=0, le=1)]], Field(min_length=4, max_length=4)]


class SearchBody(BaseModel):
    """JSON body of POST /api/search: jinabox-style data URIs, or an indexed document's id."""

    # jinabox sends more keys than we use. One of data and doc_id is required, as the schema says.
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["data"], "properties": {"data": {"type": "array"}}},
                {"required": ["doc_id"], "properties": {"doc_id": {"type": "string"}}},
            ]
        },
    )
    data: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1, max_length=MAX_QUERY_IMAGES, description="images as data URIs (or bare base64)"
    )
    doc_id: str | None = Field(default=None, description="more like this indexed image")
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K, description=TOP_K_HELP)
    face: int | None = Field(
        default=None,
        ge=0,
        description="search by this face of the query (0 is the largest) among the faces, not by the whole photo "
        "(a workspace indexed with faces)",
    )
    box: Box01 | None = Field(default=None, description=BOX_HELP)
    min_match: MatchLevel | None = Field(default=None, description=MIN_MATCH_HELP)
    filters: FilterBody | None = Field(default=None, description="only photos that meet these conditions")

    @model_validator(mode="after")
    def _data_or_doc_id(self) -> SearchBody:
        if self.data is None and self.doc_id is None:
            raise ValueError("give 'data' (a list of data URIs) or 'doc_id'")
        return self


class SearchForm(BaseModel):
    """The fields of a multipart POST /api/search besides its ``file``: the filters are fields of
    their own, as in a GET's query (``near`` as ``LAT,LON,KM``, ``folder`` repeatable)."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=1, le=MAX_TOP_K)
    face: int | None = Field(default=None, ge=0)
    box: str | None = Field(default=None, pattern=BOX_PATTERN)
    min_match: MatchLevel | None = None
    taken_after: Day | None = None
    taken_before: Day | None = None
    camera: str | None = Field(default=None, min_length=1, max_length=200, pattern=NOT_BLANK)
    near: str | None = Field(default=None, pattern=NEAR_PATTERN)
    folder: list[Path] | None = Field(default=None, max_length=MAX_FOLDERS)
    orientation: Orientation | None = None
    format: FormatName | None = None
    person: list[PersonRef] | None = Field(default=None, max_length=MAX_PEOPLE)

    def filters(self) -> Filters:
        return _checked(self.model_dump(exclude_none=True, mode="json", include=set(KEYS)))


# A multipart search as OpenAPI says it (the file is read by Starlette, the rest by SearchForm).
SEARCH_FORM_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
        "face": {"type": "integer", "minimum": 0},
        "box": {"type": "string", "pattern": BOX_PATTERN, "description": "x0,y0,x1,y1: " + BOX_HELP},
        "min_match": {"type": "string", "enum": list(LEVELS)},
        "taken_after": {"type": "string", "format": "date", "description": FILTER_HELP["taken_after"]},
        "taken_before": {"type": "string", "format": "date", "description": FILTER_HELP["taken_before"]},
        "camera": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
        "near": {"type": "string", "pattern": NEAR_PATTERN, "description": "LAT,LON,KM: " + FILTER_HELP["near"]},
        # One folder (repeat the field for several; an array here would read as one JSON-array field).
        "folder": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": NOT_BLANK},
        "orientation": {"type": "string", "enum": list(ORIENTATIONS)},
        "format": {"type": "string", "enum": list(FORMAT_NAMES)},
        "person": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
    },
    "required": ["file"],
}


# --- responses ---------------------------------------------------------------------------------------
# The JSON the endpoints return, so /openapi.json describes it (and schemathesis can hold us to it).
# Keys that only some answers carry (``distance`` on L2 workspaces, ``faces`` on face queries) are
# optional here and left out when unset.


class ErrorDetail(BaseModel):
    type: str = Field(description="the error's kind, e.g. NotFound, BadInput, ValidationError")
    message: str = Field(description="what went wrong, for people")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


class Tag(BaseModel):
    label: str = Field(description="an ImageNet label")
    probability: float


class Gps(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class PhotoFields(BaseModel):
    """What the camera recorded (EXIF), each null when the file does not say."""

    taken_at: str | None = Field(
        description="ISO 8601, local time, with the UTC offset where EXIF records one; else the file's mtime"
    )
    taken_from: str | None = Field(
        description="exif, or file (dated by its modification time), or indexed (no date at all: when it was indexed)"
    )
    camera: str | None = Field(description="make and model, as people say them")
    make: str | None
    model: str | None
    lens: str | None
    focal_mm: float | None
    exposure_s: float | None
    f_number: float | None
    iso: int | None
    gps: Gps | None
    orientation: int | None = Field(description="the EXIF orientation, 1-8")
    format: str | None = Field(description="jpeg, png, gif, bmp, webp, tiff, heic, avif or raw")
    folder: str | None = Field(description="the folder the file lies in")
    metadata_notes: list[str] = Field(description="header fields present in the file but unreadable, and why")


class DocSummary(PhotoFields):
    doc_id: str
    uri: str | None = Field(description="the file's path (bytes that are not UTF-8 shown as \\xNN)")
    name: str = Field(description="the file's name")
    tags: list[Tag] = Field(description="the most probable ImageNet labels")
    width: int | None
    height: int | None
    thumbnail_url: str
    image_url: str


class Match(DocSummary):
    score: float = Field(
        description="what ranked the results, higher is closer, never rising down the list: on image workspaces "
        "the similarity, or the expanded query's where query expansion ranked the list (a workspace with regions "
        "adds half the best region's similarity: up to 1.5); on face (L2) workspaces minus the distance"
    )
    similarity: float | None = Field(
        default=None, ge=-1, le=1, description="cosine similarity to the query itself (image workspaces)"
    )
    distance: float | None = Field(default=None, description="Euclidean distance, lower is closer (face workspaces)")
    chunk: str | None = Field(default=None, description="what matched: whole, mirror, face, region, ...")
    bbox: list[int] | None = Field(description="x, y, w, h of the matched region (a face), or null")
    region: list[float] | None = Field(
        default=None,
        description="the part of this photo that matched, x0, y0, x1, y1 as fractions: in a search by a box, and "
        "in a plain search where a region of it is closer to the query than the whole photo (a workspace with regions)",
    )
    match: MatchLevel | None = Field(
        default=None, description="same, near_duplicate, similar or weak, calibrated on this collection (searches)"
    )


class Box(BaseModel):
    bbox: list[int] = Field(description="x, y, w, h of a face found in the query")


class QueryResult(BaseModel):
    matches: list[Match]
    faces: list[Box] | None = Field(default=None, description="the query's faces (face workspaces only)")
    weak: bool = Field(description="nothing indexed is really like the query: its best match is weak, or none")
    total: int | None = Field(
        description="how many photos the search found in all: those with the tag, or those at min_match or "
        "better; null for a plain similarity search (every photo is ranked)"
    )
    total_exact: bool = Field(description="false: total is a lower bound (only the first 200 were counted)")


class SearchResponse(BaseModel):
    results: list[QueryResult] = Field(description="one per query image, in order")
    top_k: int
    took_ms: float


class ExplainBody(BaseModel):
    """JSON body of POST /api/explain: the query (an indexed document's id, or one image as a data
    URI) and the result to explain."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [  # exactly one query
                {
                    "required": ["result", "doc_id"],
                    "properties": {"doc_id": {"type": "string"}},
                    "not": {"required": ["data"]},
                },
                {
                    "required": ["result", "data"],
                    "properties": {"data": {"type": "string"}},
                    "not": {"required": ["doc_id"]},
                },
            ]
        },
    )
    result: str = Field(min_length=1, description="the result to explain: an indexed document's id")
    doc_id: str | None = Field(default=None, min_length=1, description="the query: an indexed document's id")
    data: str | None = Field(
        default=None, min_length=1, description="the query: an image as a data URI (or bare base64)"
    )
    box: Box01 | None = Field(default=None, description=BOX_HELP)

    @model_validator(mode="after")
    def _one_query(self) -> ExplainBody:
        given = {"data", "doc_id"} & self.model_fields_set  # a key given as null counts
        if len(given) != 1 or (self.data is None and self.doc_id is None):
            raise ValueError("give the query as 'doc_id' or as 'data', not both")
        return self


class ExplainForm(BaseModel):
    """The fields of a multipart POST /api/explain besides its ``file`` (the query image)."""

    model_config = ConfigDict(extra="forbid")
    result: str = Field(min_length=1)
    box: str | None = Field(default=None, pattern=BOX_PATTERN)


EXPLAIN_FORM_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "result": {"type": "string", "minLength": 1, "description": "the result to explain: an indexed document's id"},
        "box": {"type": "string", "pattern": BOX_PATTERN, "description": "x0,y0,x1,y1: " + BOX_HELP},
    },
    "required": ["file", "result"],
}

Grid = list[list[float]]


class ExplainResponse(BaseModel):
    result: str = Field(description="the result's document id")
    path: str | None = Field(description="the result's file")
    score: float = Field(
        description="the similarity explained: the cosine of the whole photos, or of the box and the result's "
        "best region"
    )
    space: str = Field(description="image (whole photos) or regions (a box)")
    grid: list[int] = Field(description="rows and columns of the heat maps: the cells of the model's feature map")
    heat: Grid = Field(
        description="the result's heat, row by row from the top, 0..1: how much the similarity falls with that "
        "cell greyed out, 1 for the cell that matters most"
    )
    heat_box: list[float] = Field(description="the part of the result the grid covers, x0, y0, x1, y1 as fractions")
    query_heat: Grid = Field(description="the same for the query (its box, for a search by a box)")
    query_box: list[float] = Field(description="the part of the query picture query_heat covers, as fractions")
    region: list[float] | None = Field(description="a box: the result's best-matching region, as fractions")


class TagSuggestion(BaseModel):
    word: str = Field(description="a WordNet noun above (or naming) ImageNet classes")
    photos: int = Field(description="how many photos of this collection a tag search for it finds")
    classes: int = Field(description="how many ImageNet classes it covers")


class TagSuggestions(BaseModel):
    prefix: str
    suggestions: list[TagSuggestion]


class DocDetail(DocSummary):
    size: int | None
    content_hash: str | None
    indexed_at: float | None


class DocPage(BaseModel):
    """A page of GET /api/docs."""

    total: int = Field(description="how many photos the filters keep, in all")
    items: list[DocDetail]
    next_cursor: str | None = Field(description="pass as cursor for the next page; null on the last")


class MonthPhotos(BaseModel):
    month: str = Field(description="YYYY-MM, of the local date taken")
    photos: int


class Timeline(BaseModel):
    """GET /api/timeline."""

    total: int = Field(description="how many photos the filters keep, in all")
    months: list[MonthPhotos] = Field(description="the latest first; months without photos are left out")


class FolderPhotos(BaseModel):
    path: str = Field(description="the folder, as the folder filter takes it")
    name: str = Field(description="the folder, as shown")
    photos: int = Field(description="photos in it and every folder below it")
    folders: int = Field(description="folders directly below it that hold photos")


class Folders(BaseModel):
    """GET /api/folders."""

    parent: str | None
    folders: list[FolderPhotos]


class CameraPhotos(BaseModel):
    name: str = Field(description="make and model")
    photos: int


class FormatPhotos(BaseModel):
    format: str
    photos: int


class Facets(BaseModel):
    """GET /api/facets: what the filters can choose from."""

    photos: int = Field(description="photos in the collection")
    cameras: list[CameraPhotos]
    formats: list[FormatPhotos]
    folders: list[FolderPhotos] = Field(description="the indexed folders")


class ShardIndex(BaseModel):
    shard: int = Field(description="which shard of its vector space")
    space: str | None = Field(default=None, description="its vector space: image, faces")
    label: str | None = Field(default=None, description="how it is named: its number, with its space past the first")
    type: str = Field(description="flat (exact), ivf-sq8 or ivf-pq")
    factory: str = Field(description="the FAISS index factory string")
    vectors: int
    memory_bytes: int
    nprobe: int | None = Field(description="IVF cells searched per query (tuned at build)")
    recall_at_10: float | None = Field(description="recall@10 against exact search, measured on a held-out sample")
    recall_queries: int
    built_from: int = Field(description="vectors the index was built (and tuned) on")
    mapped: bool = Field(description="memory-mapped from its snapshot")
    building: bool = Field(description="a new index is being built in the background")
    build_error: str | None = Field(default=None, description="why the last build failed (the old index serves)")


class RuntimeInfo(BaseModel):
    kind: str = Field(description="local (threads in the server) or ray (actors on a Ray cluster)")
    pods: dict[str, str] = Field(description="each query pod replica (pod/sS/rR) and where it runs (a Ray node id)")


class VectorSpaceInfo(BaseModel):
    encoder: str | None
    dim: int
    metric: str = Field(description="cosine (higher is closer) or l2 (a distance)")
    shards: int


class Stats(BaseModel):
    ready: bool
    workspace: str
    writable: bool
    error: ErrorDetail | None = Field(default=None, description="why loading failed (while not ready)")
    docs: int | None = None
    chunks: int | None = None
    shards: dict[str, int] | None = Field(default=None, description="vectors per shard")
    encoder: str | None = None
    preset: str | None = None
    faces: bool | None = Field(default=None, description="the workspace holds faces (indexed with --faces)")
    regions: bool | None = Field(
        default=None, description="the workspace holds regions (indexed with --regions): it can be searched by a box"
    )
    spaces: dict[str, VectorSpaceInfo] | None = Field(default=None, description="its vector spaces, in order")
    size_bytes: int | None = None
    index: list[ShardIndex] | None = Field(default=None, description="each shard's vector index")
    index_budget: dict[str, float] | None = Field(default=None, description="memory_bytes and latency_ms")
    batching: bool | None = None
    runtime: RuntimeInfo | None = Field(default=None, description="where the query flow's pods run")


class IndexedFile(BaseModel):
    name: str | None = Field(description="the uploaded file's name")
    doc_id: str
    error: str | None = Field(description="why it was not indexed, or null")


class SkippedFile(BaseModel):
    path: str
    reason: str


class GroupingInfo(BaseModel):
    new_faces: int
    gone_faces: int
    assigned: int = Field(description="faces given a person")
    new_people: int
    people: int = Field(description="people shown now")
    seconds: float


class IndexResponse(BaseModel):
    """The index run's report, as `lookalike index --json` prints it, and each uploaded file's fate."""

    scanned: int
    indexed: int
    updated: int
    unchanged: int
    removed: int
    moved: int = Field(0, description="renamed or moved files followed to their new paths, not encoded again")
    skipped: dict[str, int] = Field(description="files not indexed, by reason")
    skipped_files: list[SkippedFile]
    skipped_total: int
    encoded: int = Field(description="images run through the model")
    without_vectors: int = Field(description="indexed, but nothing to embed in them (a face workspace: no face)")
    seconds: float
    files_per_second: float
    docs: int = Field(description="documents in the workspace after the run")
    workspace: str
    people: GroupingInfo | None = Field(default=None, description="the new faces grouped into people after it")
    people_error: str | None = Field(default=None, description="why grouping them failed (the next run tries again)")
    files: list[IndexedFile]


class Deleted(BaseModel):
    removed: int
    doc_id: str


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    ready: bool


ERROR_DESCRIPTIONS = {
    400: "a malformed request or image, or a Host header this server does not answer to",
    401: "a token is set and the request does not carry it",
    403: "writes are disabled here, or the request comes from another web site",
    404: "no such document or file",
    409: "the workspace cannot be written, or the request clashes with what it holds (a name another person has)",
    408: "the request body arrived too slowly",
    413: "the request body is over the upload limit",
    422: "a parameter is missing or out of range",
    503: "the model and workspace are still loading, or failed to load",
}


def errors_for(*statuses: int, ok: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can answer; 400 (a bad Host) with every one.

    ``ok`` is the 200's ``content``, for the routes that answer other than JSON."""
    out: dict[int | str, dict[str, Any]] = {200: {"content": ok}} if ok else {}
    for status in sorted({400, *statuses}):
        out[status] = {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]}
    return out


# --- duplicates to review ------------------------------------------------------------------------------

# Documents one request may move or remove: a page's selection, and a bound on one request's work.
MAX_DOC_IDS = 1000
DocIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=MAX_DOC_IDS)
]


class MoveBody(BaseModel):
    """JSON body of POST /api/dupes/move."""

    model_config = ConfigDict(extra="forbid")
    doc_ids: DocIds = Field(description="the documents whose files to move")
    folder: Path = Field(
        description="a folder inside the indexed folders, or a name inside the server's trash folder "
        "(lookalike serve --trash); links are resolved, and must stay inside them"
    )


class UndoBody(BaseModel):
    """JSON body of POST /api/dupes/undo."""

    model_config = ConfigDict(extra="forbid")
    batch: str | None = Field(
        default=None, min_length=1, max_length=64, description="the batch to put back (default: the latest)"
    )


class RemoveBody(BaseModel):
    """JSON body of POST /api/remove."""

    model_config = ConfigDict(extra="forbid")
    doc_ids: DocIds = Field(description="the documents to take out of the index")


class DupeFileInfo(BaseModel):
    doc_id: str
    path: str = Field(description="the file's path (bytes that are not UTF-8 shown as \\xNN)")
    name: str = Field(description="the file's name")
    width: int | None
    height: int | None
    bytes: int | None = Field(description="the file's size")
    similarity: float = Field(description="cosine similarity to the group's first file (1 for the first)")
    taken: str | None = Field(description="the date taken (ISO 8601), else the file's modification time")
    thumbnail_url: str
    image_url: str


class DupeGroupInfo(BaseModel):
    kind: Literal["exact", "near"] = Field(description="exact: the same bytes; near: the same picture edited")
    similarity: float = Field(description="the lowest similarity of any file to the first")
    keep: str = Field(description="the suggested keeper's doc_id: the most pixels, then metadata, then the oldest")
    files: list[DupeFileInfo] = Field(description="the keeper first")


class DupesResponse(BaseModel):
    """GET /api/dupes."""

    threshold: float = Field(description="the cosine similarity from which images are near duplicates")
    docs: int = Field(description="documents in the workspace")
    distinct_shots: int = Field(description="look-alike pairs left out as distinct shots (a burst's frames)")
    groups: list[DupeGroupInfo] = Field(description="exact copies first, then near duplicates, the largest first")


class MovedFile(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    doc_id: str
    source: str = Field(alias="from", description="where the file was")
    target: str = Field(alias="to", description="where it is now")


class MoveResponse(BaseModel):
    """A batch of moves: POST /api/dupes/move, or what POST /api/dupes/undo put back."""

    batch: str = Field(description="the batch id, for POST /api/dupes/undo or `lookalike dupes --undo`")
    undo: bool = Field(description="true: these moves put a batch back")
    moved: int
    moves: list[MovedFile]


class RemovedMany(BaseModel):
    removed: int
    doc_ids: list[str]


# --- people ------------------------------------------------------------------------------------------

# A name shows at least one visible character (control, format and space characters are dropped).
VISIBLE = "[^\\x00-\\x20\\x7f-\\xa0\\u00ad\\u200b-\\u200f\\u2028-\\u202f\\u205f-\\u206f\\u3000\\ufeff]"
PersonName = Annotated[str, Field(min_length=1, max_length=200, pattern=VISIBLE)]


class FaceCover(BaseModel):
    face: int | None = Field(description="the face that stands for the person (the most typical)")
    doc_id: str | None
    bbox: list[int] | None = Field(description="x, y, width, height in the photo's pixels")
    thumbnail_url: str | None = Field(default=None, description="that face, cut out as a square JPEG")


class PersonSummary(BaseModel):
    id: int = Field(description="stable across index runs and regroupings")
    name: str | None
    hidden: bool
    faces: int
    photos: int
    cover: FaceCover


class PersonInfo(PersonSummary):
    photo_ids: list[str] = Field(description="the documents they are in")


class PeopleResponse(BaseModel):
    """GET /api/people."""

    people: list[PersonSummary] = Field(description="with 3 faces or more, or a name; the most faces first")


class FaceInfo(BaseModel):
    face: int = Field(description="the face's id (its chunk's)")
    doc_id: str
    bbox: list[int] | None
    person: int | None = Field(description="whose face it is, or null")
    name: str | None = Field(description="that person's name")
    pinned: bool = Field(description="the user put it with that person")
    nobody: bool = Field(description="the user said it is nobody's")


class FacesResponse(BaseModel):
    faces: list[FaceInfo] = Field(description="largest first, as found")


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PersonName | None = Field(description="the name; null takes it away. No two people share a name")


class MergeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    into: PersonName = Field(description="the person (id or name) who takes every face; keeps its id and name")


class HideBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hidden: bool = True


class FacePersonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person: PersonName | None = Field(
        description="whose face it is (id or name), 'new' for someone new, or null for nobody; the grouping never "
        "gives it back to the person it was taken from"
    )
