"""Reading the doc store's documents (with their tags) and their chunks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lookalike.document import display_path
from lookalike.filters import Filters
from lookalike.metadata import METADATA_VERSION, PhotoMeta
from lookalike.store.database import Database, decode_vector, in_batches, path_str

# The docs table's columns, in the order rows are read and written.
DOC_COLUMNS = "id, uri, size, mtime_ns, content_hash, width, height, tags, indexed_at"
# What the camera recorded (lookalike.metadata), as stored beside them.
META_COLUMNS = (
    "taken_at, taken_offset, taken_from, lens, focal_mm, exposure_s, f_number, iso, lat, lon, orientation, format, "
    "folder, meta_notes, meta_version"
)
# A document as read (``FROM DOCS_JOINED``): its columns, its metadata and its camera (make, model).
DOC_FIELDS = (
    ", ".join(f"d.{c.strip()}" for c in f"{DOC_COLUMNS}, {META_COLUMNS}".split(",")) + ", cameras.make, cameras.model"
)
DOCS_JOINED = "docs d LEFT JOIN cameras ON cameras.id = d.camera_id"

BBox = tuple[int, int, int, int]


@dataclass
class StoredDoc:
    id: str
    uri: str | None
    size: int | None
    mtime_ns: int | None
    content_hash: str | None
    width: int | None
    height: int | None
    tags: list[tuple[str, float]]
    indexed_at: float
    meta: PhotoMeta = field(default_factory=PhotoMeta)
    folder: str | None = None

    def shown(self) -> dict[str, Any]:
        """The photo's header fields as every front end shows them."""
        return self.meta.shown(display_path(self.folder) if self.folder is not None else None)

    @classmethod
    def from_row(cls, row: tuple) -> StoredDoc:
        """A row of ``SELECT DOC_FIELDS``: the document's columns, its metadata's and its camera's."""
        (taken_at, offset, taken_from, lens, focal, exposure, f_number, iso, lat, lon, orientation, fmt) = row[9:21]
        folder, notes, _version, make, model = row[21:26]
        meta = PhotoMeta(
            taken_at, offset, taken_from, make, model, lens, focal, exposure, f_number, iso, lat, lon, orientation,
            fmt, json.loads(notes) if notes else [],
        )  # fmt: skip
        return cls(
            id=row[0],
            uri=path_str(row[1]),
            size=row[2],
            mtime_ns=row[3],
            content_hash=row[4],
            width=row[5],
            height=row[6],
            tags=[(str(label), float(p)) for label, p in json.loads(row[7])],
            indexed_at=row[8],
            meta=meta,
            folder=path_str(folder),
        )


class Documents:
    """Documents by id, all of them, and by tag; part of :class:`DocStore`."""

    _db: Database

    def count_docs(self) -> int:
        return int(self._db.reader.execute("SELECT count(*) FROM docs").fetchone()[0])

    def get_docs(self, ids: Iterable[str]) -> dict[str, StoredDoc]:
        out: dict[str, StoredDoc] = {}
        for marks, part in in_batches(list(dict.fromkeys(ids))):
            for row in self._db.reader.execute(f"SELECT {DOC_FIELDS} FROM {DOCS_JOINED} WHERE d.id IN ({marks})", part):
                out[row[0]] = StoredDoc.from_row(row)
        return out

    def iter_docs(self) -> Iterator[StoredDoc]:
        for row in self._db.reader.execute(f"SELECT {DOC_FIELDS} FROM {DOCS_JOINED} ORDER BY d.uri"):
            yield StoredDoc.from_row(row)

    def docs_by_uri(self) -> dict[str, StoredDoc]:
        """Every document by path: for checks and small tools (planning never reads them all)."""
        return {d.uri: d for d in self.iter_docs() if d.uri is not None}

    def stale_metadata(self, after: str, limit: int) -> list[tuple[str, str]]:
        """(doc id, path) of up to ``limit`` documents, by id from past ``after``, whose header
        fields are from an older lookalike (:data:`lookalike.metadata.METADATA_VERSION`)."""
        sql = "SELECT id, uri FROM docs WHERE meta_version < ? AND uri IS NOT NULL AND id > ? ORDER BY id LIMIT ?"
        rows = self._db.reader.execute(sql, (METADATA_VERSION, after, limit))
        return [(d, path_str(u) or "") for d, u in rows]

    def search_labels(
        self, labels: list[str], limit: int = 50, filters: Filters | None = None, floor: float = 0.0
    ) -> tuple[list[tuple[str, str, float]], int]:
        """(doc id, its most probable of ``labels``, the summed probability of all of them) of the
        docs whose summed probability is at least ``floor``, the highest first, and how many there
        are in all; only docs ``filters`` keep."""
        if not labels:
            return [], 0
        marks = ",".join("?" * len(labels))  # at most the 1000 ImageNet labels
        return self._tagged(f"t.label IN ({marks})", list(labels), "sum", limit, filters, floor)

    def search_tags(
        self, text: str, limit: int = 50, filters: Filters | None = None, floor: float = 0.0
    ) -> tuple[list[tuple[str, str, float]], int]:
        """(doc id, label, probability) of docs with a tag containing ``text`` at ``floor`` or more,
        most probable first, and how many there are in all; only docs ``filters`` keep."""
        pattern = "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        return self._tagged("t.label LIKE ? ESCAPE '!'", [pattern], "max", limit, filters, floor)

    def _tagged(
        self, match: str, args: list, combine: str, limit: int, filters: Filters | None, floor: float
    ) -> tuple[list[tuple[str, str, float]], int]:
        where, filter_args = (filters or Filters()).sql()
        joined = "" if where == "1" else " JOIN docs d ON d.id = t.doc_id"
        grouped = (
            f"SELECT t.doc_id, t.label, max(t.probability), {combine}(t.probability) AS p FROM doc_tags t{joined} "
            f"WHERE {match} AND {where} GROUP BY t.doc_id HAVING p >= ?"
        )
        params = [*args, *filter_args, floor]
        if limit <= 0:  # only the count (tag suggestions)
            return [], int(self._db.reader.execute(f"SELECT count(*) FROM ({grouped})", params).fetchone()[0])
        # One grouping for the page and the total: the count rides along as a window over every group.
        sql = f"SELECT *, count(*) OVER () FROM ({grouped}) ORDER BY 4 DESC, 1 LIMIT ?"
        rows = self._db.reader.execute(sql, [*params, limit]).fetchall()
        return [(d, lab, float(p)) for d, lab, _best, p, _ in rows], int(rows[0][-1]) if rows else 0

    def count_tagged(self, labels: list[str], floor: float) -> int:
        """How many docs the summed probability of ``labels`` reaches ``floor`` in (tag suggestions)."""
        return self.search_labels(labels, 0, None, floor)[1]


class Chunks:
    """The chunks of documents (without their vectors, but for one document's); part of :class:`DocStore`."""

    _db: Database

    def count_chunks(self) -> int:
        return int(self._db.reader.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def chunk_ids(self, slots: Iterable[int] | None = None) -> np.ndarray:
        """Every stored chunk's id (of the shards in ``slots``, if given), without reading a vector."""
        if slots is None:
            rows = self._db.reader.execute("SELECT id FROM chunks ORDER BY id")
        else:
            wanted = sorted(set(slots))
            sql = f"SELECT id FROM chunks WHERE shard IN ({','.join('?' * len(wanted))}) ORDER BY id"
            rows = self._db.reader.execute(sql, wanted)
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def chunk_info(self, ids: Iterable[int]) -> dict[int, tuple[str, str, BBox | None]]:
        """chunk id -> (doc id, kind, bbox)."""
        out = {}
        for marks, part in in_batches(list(ids)):
            sql = f"SELECT id, doc_id, kind, bbox FROM chunks WHERE id IN ({marks})"
            for cid, doc_id, kind, bbox in self._db.reader.execute(sql, part):
                out[int(cid)] = (doc_id, kind, tuple(json.loads(bbox)) if bbox else None)
        return out

    def chunks_of(self, doc_id: str, slots: range | None = None) -> list[tuple[int, str, BBox | None, np.ndarray]]:
        """A document's chunks (those in the shards ``slots``, if given: one space's): (chunk id,
        kind, bbox, embedding), in insertion order."""
        sql = "SELECT id, kind, bbox, embedding, shard FROM chunks WHERE doc_id=? ORDER BY id"
        return [
            (int(cid), kind, tuple(json.loads(bbox)) if bbox else None, decode_vector(blob).astype(np.float32))
            for cid, kind, bbox, blob, shard in self._db.reader.execute(sql, (doc_id,))
            if slots is None or shard in slots
        ]

    def max_chunks_per_doc(self, slots: range) -> int:
        """The most chunks any document has in the shards ``slots`` (one vector space's), 1 if none."""
        sql = "SELECT max(n) FROM (SELECT count(*) AS n FROM chunks WHERE shard BETWEEN ? AND ? GROUP BY doc_id)"
        row = self._db.reader.execute(sql, (slots.start, slots.stop - 1)).fetchone()
        return int(row[0] or 1)

    def max_chunks_of_docs_with(self, chunk_ids: list[int], slots: range) -> int:
        """The most chunks in ``slots`` any document owning one of ``chunk_ids`` has (0 if none is left)."""
        best = 0
        for marks, part in in_batches(chunk_ids):
            sql = (
                "SELECT max(n) FROM (SELECT count(*) AS n FROM chunks WHERE shard BETWEEN ? AND ? AND doc_id IN "
                f"(SELECT doc_id FROM chunks WHERE id IN ({marks})) GROUP BY doc_id)"
            )
            row = self._db.reader.execute(sql, [slots.start, slots.stop - 1, *part]).fetchone()
            best = max(best, int(row[0] or 0))
        return best
