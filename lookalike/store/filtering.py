"""Filtered reads of the doc store: which chunks a filter keeps, and the collection listed by pages.

A filter is SQL over the indexed metadata columns (:meth:`lookalike.filters.Filters.sql`). Listing
pages by cursor ("keyset" paging on the sort key and the document id): a page costs the same at
any depth, and documents indexed meanwhile never shift a page or show twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from lookalike.errors import BadInput
from lookalike.filters import Filters
from lookalike.store.database import Database, in_batches
from lookalike.store.documents import DOC_FIELDS, DOCS_JOINED, StoredDoc
from lookalike.store.tuning import ExactVectors

Sort = Literal["taken", "indexed", "name", "size"]
SORT_COLUMNS: dict[str, str] = {"taken": "d.taken_at", "indexed": "d.indexed_at", "name": "d.uri", "size": "d.size"}


@dataclass
class KeptByFilter:
    """What ``filters`` keep of shard ``shard`` (:class:`lookalike.store.filtered.Kept`), asked of
    the store, or of ``cache`` once a search has read them all."""

    store: Filtering
    filters: Filters
    shard: int
    cache: KeptCache | None = None

    def among(self, chunk_ids: np.ndarray) -> np.ndarray:
        known = self.cache.lookup(self.filters) if self.cache is not None else None
        if known is not None:  # sorted: a binary search each
            at = np.searchsorted(known, chunk_ids)
            return chunk_ids[(at < len(known)) & (known[np.minimum(at, len(known) - 1)] == chunk_ids)]
        return self.store.chunks_matching(chunk_ids, self.filters)

    def known(self) -> int | None:
        ids = self.cache.lookup(self.filters) if self.cache is not None else None
        return None if ids is None else len(ids)

    def all(self) -> np.ndarray:
        known = self.cache.lookup(self.filters) if self.cache is not None else None
        if known is None:
            generation = self.cache.store.generation if self.cache is not None else -1  # before the read
            known = np.sort(self.store.chunks_kept(self.filters, self.shard))
            if self.cache is not None:
                self.cache.remember(self.filters, known, generation)
        return known

    def vectors(self, exact: ExactVectors) -> tuple[np.ndarray, np.ndarray]:
        remembered = self.cache.vectors(self.filters) if self.cache is not None else None
        if remembered is not None:
            return remembered
        ids, vectors = exact(self.all())
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.cache is not None:
            self.cache.remember_vectors(self.filters, ids, vectors)
        return ids, vectors


class KeptCache:
    """The chunks filters keep in one shard, remembered while the store's generation stands: a
    selective filter's chunks are read from SQL once, then each further search within it (paging,
    "more like this" in the same filtered view) looks them up in memory. ``size`` filters are kept,
    the least recently used dropped first; a few thousand kept chunks' vectors are kept too, within
    ``vector_bytes``."""

    def __init__(self, store: VectorLogLike, size: int = 8, vector_bytes: int = 192 << 20):
        self.store, self.size, self.vector_bytes = store, size, vector_bytes
        # filters -> (generation, kept chunk ids, (ids, vectors) once read)
        self._entries: OrderedDict[Filters, tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray] | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def _entry(self, filters: Filters) -> tuple[int, np.ndarray, tuple[np.ndarray, np.ndarray] | None] | None:
        generation = self.store.generation
        with self._lock:
            entry = self._entries.get(filters)
            if entry is None or entry[0] != generation:
                return None
            self._entries.move_to_end(filters)
            return entry

    def lookup(self, filters: Filters) -> np.ndarray | None:
        entry = self._entry(filters)
        return entry[1] if entry is not None else None

    def vectors(self, filters: Filters) -> tuple[np.ndarray, np.ndarray] | None:
        entry = self._entry(filters)
        return entry[2] if entry is not None else None

    def remember(self, filters: Filters, ids: np.ndarray, generation: int) -> None:
        """Remember ``ids`` as read at ``generation`` (taken before the read: a commit in between
        leaves them under the older generation, so the next lookup reads again)."""
        with self._lock:
            self._entries[filters] = (generation, ids, None)
            self._entries.move_to_end(filters)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def remember_vectors(self, filters: Filters, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Keep a filter's vectors too, within ``vector_bytes`` in all (the least recent let go first)."""
        with self._lock:
            entry = self._entries.get(filters)
            if entry is None or vectors.nbytes > self.vector_bytes:
                return
            self._entries[filters] = (entry[0], entry[1], (ids, vectors))
            held = sum(e[2][1].nbytes for e in self._entries.values() if e[2] is not None)
            for key, (generation, kept, pair) in list(self._entries.items()):
                if held <= self.vector_bytes:
                    break
                if pair is not None and key != filters:
                    self._entries[key] = (generation, kept, None)
                    held -= pair[1].nbytes


class VectorLogLike(Protocol):
    @property
    def generation(self) -> int: ...


@dataclass
class Page:
    """One page of a listing: the documents, how many match in all, and the cursor of the next page."""

    total: int
    docs: list[StoredDoc]
    next_cursor: str | None


class Filtering:
    """Filters over the doc store; part of :class:`DocStore`."""

    _db: Database

    def count_matching(self, filters: Filters) -> int:
        where, args = filters.sql()
        return int(self._db.reader.execute(f"SELECT count(*) FROM docs d WHERE {where}", args).fetchone()[0])

    def chunks_matching(self, chunk_ids: np.ndarray, filters: Filters) -> np.ndarray:
        """Those of ``chunk_ids`` whose documents ``filters`` keep."""
        where, args = filters.sql()
        kept: list[int] = []
        for marks, part in in_batches([int(i) for i in chunk_ids]):
            # The candidates first, by their ids (CROSS JOIN keeps that order), however many the filter keeps.
            sql = f"SELECT c.id FROM chunks c CROSS JOIN docs d ON d.id = c.doc_id WHERE c.id IN ({marks}) AND {where}"
            kept.extend(r[0] for r in self._db.reader.execute(sql, [*part, *args]))
        return np.asarray(kept, dtype=np.int64)

    def chunks_kept(self, filters: Filters, shard: int) -> np.ndarray:
        """Every chunk of shard ``shard`` whose document ``filters`` keep."""
        where, args = filters.sql()
        # Documents first, through the filter's index, then their chunks (CROSS JOIN keeps that order;
        # "+" keeps SQLite from driving the join from every chunk of the shard instead).
        sql = f"SELECT c.id FROM docs d CROSS JOIN chunks c ON c.doc_id = d.id WHERE {where} AND +c.shard = ?"
        rows = self._db.reader.execute(sql, [*args, shard])
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def list_docs(
        self,
        filters: Filters,
        sort: Sort = "taken",
        desc: bool = False,
        limit: int = 100,
        cursor: str | None = None,
        total: int | None = None,
        by_sort_index: bool = True,
    ) -> Page:
        """The documents ``filters`` keep, ``limit`` at a time in ``sort`` order (the document id
        breaks ties), from ``cursor`` (a page's ``next_cursor``) on; ``total``: how many they keep,
        if the caller knows. ``by_sort_index``: walk the sort key's index and test each document
        (a broad filter fills a page after a few rows), else find the kept documents by the
        filter's own index and sort them (a selective one keeps few)."""
        column = SORT_COLUMNS[sort]
        where, args = filters.sql()
        if total is None:
            total = self.count_matching(filters)
        if by_sort_index and where != "1":
            where = where.replace("d.", "+d.")  # "+": SQLite leaves the filter's indexes aside
        after: list[Any] = []
        if cursor is not None:
            key, doc_id = _decode_cursor(cursor, sort, desc)
            where += f" AND ({_after(column, key, desc)})"
            after = [doc_id] if key is None else [key, doc_id]
        order = "DESC" if desc else "ASC"
        sql = (
            f"SELECT {DOC_FIELDS}, {column} FROM {DOCS_JOINED} "
            f"WHERE {where} ORDER BY {column} {order}, d.id {order} LIMIT ?"
        )
        rows = self._db.reader.execute(sql, [*args, *after, limit + 1]).fetchall()
        docs = [StoredDoc.from_row(r[:-1]) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        next_cursor = _encode_cursor(sort, desc, last[-1], last[0]) if last is not None else None
        return Page(total, docs, next_cursor)


def _after(column: str, key: Any, desc: bool) -> str:
    """The rows past (``key``, id) in ``column`` order, where SQLite puts NULL keys first ascending
    and last descending (a file without a date or size is still listed, once)."""
    if key is None:
        return f"{column} IS NULL AND d.id < ?" if desc else f"({column} IS NULL AND d.id > ?) OR {column} IS NOT NULL"
    if desc:
        return f"({column}, d.id) < (?, ?) OR {column} IS NULL"
    return f"({column}, d.id) > (?, ?)"


def _encode_cursor(sort: str, desc: bool, key: Any, doc_id: str) -> str:
    value = {"b": key.hex()} if isinstance(key, bytes) else key
    data = json.dumps([sort, desc, value, doc_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, desc: bool) -> tuple[Any, str]:
    bad = BadInput("cursor: not a cursor this listing gave (pass next_cursor as it came)", "bad cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        c_sort, c_desc, value, doc_id = data
        if isinstance(value, dict):
            value = bytes.fromhex(value["b"])
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not isinstance(doc_id, str) or not (value is None or isinstance(value, (str, int, float, bytes))):
        raise bad
    if (c_sort, c_desc) != (sort, desc):
        raise BadInput(
            f"cursor: it pages a listing sorted by {c_sort}{' desc' if c_desc else ''}, not this one", "bad cursor"
        )
    return value, doc_id
