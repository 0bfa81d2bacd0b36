"""Reading the doc store's documents (with their tags) and their chunks."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from lookalike.store.database import Database, decode_vector, in_batches, path_str

# The docs table's columns, in the order rows are read and written.
DOC_COLUMNS = "id, uri, size, mtime_ns, content_hash, width, height, tags, indexed_at"

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

    @classmethod
    def from_row(cls, row: tuple) -> StoredDoc:
        """A row of ``SELECT {DOC_COLUMNS}``."""
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
        )


class Documents:
    """Documents by id, all of them, and by tag; part of :class:`DocStore`."""

    _db: Database

    def count_docs(self) -> int:
        return int(self._db.reader.execute("SELECT count(*) FROM docs").fetchone()[0])

    def get_docs(self, ids: Iterable[str]) -> dict[str, StoredDoc]:
        out: dict[str, StoredDoc] = {}
        for marks, part in in_batches(list(dict.fromkeys(ids))):
            for row in self._db.reader.execute(f"SELECT {DOC_COLUMNS} FROM docs WHERE id IN ({marks})", part):
                out[row[0]] = StoredDoc.from_row(row)
        return out

    def iter_docs(self) -> Iterator[StoredDoc]:
        for row in self._db.reader.execute(f"SELECT {DOC_COLUMNS} FROM docs ORDER BY uri"):
            yield StoredDoc.from_row(row)

    def docs_by_uri(self) -> dict[str, StoredDoc]:
        """Every document by path: for checks and small tools (planning never reads them all)."""
        return {d.uri: d for d in self.iter_docs() if d.uri is not None}

    def search_labels(self, labels: list[str], limit: int = 50) -> list[tuple[str, str, float]]:
        """(doc id, its most probable of ``labels``, the summed probability of all of them) of docs
        tagged with any of ``labels``, the highest sum first."""
        if not labels:
            return []
        marks = ",".join("?" * len(labels))  # at most the 1000 ImageNet labels
        sql = (
            "SELECT doc_id, label, max(probability), sum(probability) AS p FROM doc_tags "
            f"WHERE label IN ({marks}) GROUP BY doc_id ORDER BY p DESC, doc_id LIMIT ?"
        )
        rows = self._db.reader.execute(sql, (*labels, limit))
        return [(d, lab, float(p)) for d, lab, _best, p in rows]

    def search_tags(self, text: str, limit: int = 50) -> list[tuple[str, str, float]]:
        """(doc id, label, probability) of docs whose tags contain ``text``, most probable first."""
        sql = (
            "SELECT doc_id, label, max(probability) AS p FROM doc_tags WHERE label LIKE ? ESCAPE '!' "
            "GROUP BY doc_id ORDER BY p DESC, doc_id LIMIT ?"
        )
        pattern = "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        return [(d, lab, float(p)) for d, lab, p in self._db.reader.execute(sql, (pattern, limit))]


class Chunks:
    """The chunks of documents (without their vectors, but for one document's); part of :class:`DocStore`."""

    _db: Database

    def count_chunks(self) -> int:
        return int(self._db.reader.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def chunk_ids(self) -> np.ndarray:
        """Every stored chunk's id (without reading a vector)."""
        rows = self._db.reader.execute("SELECT id FROM chunks ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def chunk_info(self, ids: Iterable[int]) -> dict[int, tuple[str, str, BBox | None]]:
        """chunk id -> (doc id, kind, bbox)."""
        out = {}
        for marks, part in in_batches(list(ids)):
            sql = f"SELECT id, doc_id, kind, bbox FROM chunks WHERE id IN ({marks})"
            for cid, doc_id, kind, bbox in self._db.reader.execute(sql, part):
                out[int(cid)] = (doc_id, kind, tuple(json.loads(bbox)) if bbox else None)
        return out

    def chunks_of(self, doc_id: str) -> list[tuple[int, str, BBox | None, np.ndarray]]:
        """A document's chunks: (chunk id, kind, bbox, embedding), in insertion order."""
        sql = "SELECT id, kind, bbox, embedding FROM chunks WHERE doc_id=? ORDER BY id"
        return [
            (int(cid), kind, tuple(json.loads(bbox)) if bbox else None, decode_vector(blob).astype(np.float32))
            for cid, kind, bbox, blob in self._db.reader.execute(sql, (doc_id,))
        ]

    def max_chunks_per_doc(self) -> int:
        sql = "SELECT max(n) FROM (SELECT count(*) AS n FROM chunks GROUP BY doc_id)"
        row = self._db.reader.execute(sql).fetchone()
        return int(row[0] or 1)

    def max_chunks_of_docs_with(self, chunk_ids: list[int]) -> int:
        """The most chunks any document owning one of ``chunk_ids`` has (0 if none is left)."""
        best = 0
        for marks, part in in_batches(chunk_ids):
            sql = (
                "SELECT max(n) FROM (SELECT count(*) AS n FROM chunks WHERE doc_id IN "
                f"(SELECT doc_id FROM chunks WHERE id IN ({marks})) GROUP BY doc_id)"
            )
            best = max(best, int(self._db.reader.execute(sql, part).fetchone()[0] or 0))
        return best
