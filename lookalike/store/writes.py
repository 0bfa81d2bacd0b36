"""Writing the doc store: a request's documents and vectors in one transaction, re-sharding, resets.

One SQLite transaction per request is the whole of crash consistency: a document and its vectors
land together or not at all, with the generation bump and the vector log entry that let every
process's shard indexes follow.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from lookalike.document import Chunk, Document, shard_for
from lookalike.metadata import METADATA_VERSION, PhotoMeta, local_time
from lookalike.store.database import STORED_DTYPE, Database, in_batches, path_bytes, path_str
from lookalike.store.documents import DOC_COLUMNS, META_COLUMNS
from lookalike.store.schema import folder_of
from lookalike.store.spaces import VectorSpace, first_slots
from lookalike.store.vector_log import bump_generation, check_identity, log_vectors, write_identity


@dataclass
class VectorChange:
    """What a commit did to the vectors, for the in-memory shards to follow.

    ``before`` and ``after`` are the generations around the commit: a process whose shards were at
    ``before`` applies the change and is at ``after``; any other must replay the log.
    """

    removed: dict[int, list[int]]  # shard -> chunk ids
    added: dict[int, tuple[np.ndarray, np.ndarray]]  # shard -> (chunk ids, embeddings)
    before: int = 0
    after: int = 0


class Writes:
    """Commits, re-sharding and resets; part of :class:`DocStore`."""

    _db: Database

    def commit(
        self,
        docs: list[Document],
        vectors: dict[tuple[str, int], list[Chunk]],
        deletes: Iterable[str],
        identity: str | None = None,
    ) -> VectorChange:
        """Insert or replace ``docs`` with their chunks, delete ``deletes``: one transaction.

        ``vectors``: each document's chunks by (doc id, slot): one entry per vector space that
        holds some of them (:mod:`lookalike.store.spaces`). ``identity``: what the writer's vectors
        are; if another process re-built the store for other vectors meanwhile, nothing is written
        (StoreError). Assigns chunk ids (``chunk.id``) and returns what changed per slot.
        """
        added_ids: dict[int, list[int]] = {}
        added_vecs: dict[int, list[np.ndarray]] = {}
        now = time.time()
        with self._db.transaction() as conn:
            check_identity(conn, identity, self._db.path.parent)
            removed = _delete_docs(conn, [*deletes, *(d.id for d in docs)])
            conn.executemany("DELETE FROM skips WHERE uri=?", [(path_bytes(d.uri),) for d in docs if d.uri])
            for doc in docs:
                _insert_doc(conn, doc, now)
            for (doc_id, shard), chunks in vectors.items():
                for chunk in chunks:
                    chunk_id, stored = _insert_chunk(conn, doc_id, shard, chunk)
                    added_ids.setdefault(shard, []).append(chunk_id)
                    added_vecs.setdefault(shard, []).append(stored)
            before, after = bump_generation(conn)
            log_vectors(conn, after, removed, added_ids)
        added = {s: (np.array(added_ids[s], dtype=np.int64), np.stack(added_vecs[s])) for s in added_ids}
        return VectorChange(removed, added, before, after)

    def touch(self, doc_id: str, mtime_ns: int, size: int) -> None:
        """Record a new mtime for a file whose content did not change (no re-encoding needed)."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE docs SET mtime_ns=?, size=? WHERE id=?", (mtime_ns, size, doc_id))

    def update_metadata(self, found: list[tuple[str, PhotoMeta]]) -> None:
        """Store the header fields read again for documents indexed before they were kept (or
        before a newer :data:`METADATA_VERSION`). No vector changes, but the generation moves on, so
        whatever remembers what a filter keeps (the shards, listing totals) reads it afresh."""
        if not found:
            return
        with self._db.transaction() as conn:
            bump_generation(conn)
            for doc_id, meta in found:
                uri = conn.execute("SELECT uri FROM docs WHERE id=?", (doc_id,)).fetchone()
                if uri is None:
                    continue  # removed meanwhile
                sets = ", ".join(f"{c.strip()}=?" for c in META_COLUMNS.split(","))
                values = (*_meta_values(meta, path_str(uri[0])), _camera_id(conn, meta), doc_id)
                conn.execute(f"UPDATE docs SET {sets}, camera_id=? WHERE id=?", values)

    def reassign_shards(self, old: dict[str, VectorSpace], new: dict[str, VectorSpace], identity: str) -> None:
        """Move chunks to the slots new shard counts (or a new order of the spaces) give their
        documents (in SQL, without reading the documents out), and take the new identity in the
        same transaction. A space that ``new`` lacks must hold no chunks."""
        before, after = first_slots(old), first_slots(new)
        cases, args = [], []
        for name in old.keys() & new.keys():
            cases.append("WHEN shard BETWEEN ? AND ? THEN ? + lookalike_shard(doc_id, ?)")
            args += [before[name], before[name] + old[name].shards - 1, after[name], new[name].shards]
        with self._db.transaction() as conn:
            conn.create_function("lookalike_shard", 2, shard_for, deterministic=True)
            if cases:
                conn.execute(f"UPDATE chunks SET shard = CASE {' '.join(cases)} ELSE shard END", args)
            write_identity(conn, identity)

    def clear(self, identity: str) -> None:
        """Empty the store (documents, vectors, remembered bad files) for vectors of ``identity``,
        in one transaction: no writer of the old vectors can commit into the emptied store."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM docs")
            conn.execute("DELETE FROM skips")
            for table in ("people", "face_people", "face_refusals", "faces_gone"):  # people are of those faces
                conn.execute(f"DELETE FROM {table}")
            write_identity(conn, identity)


def _delete_docs(conn: sqlite3.Connection, doc_ids: list[str]) -> dict[int, list[int]]:
    """Delete these documents (their chunks and tags cascade); the chunk ids removed, per shard."""
    removed: dict[int, list[int]] = {}
    for marks, part in in_batches(doc_ids):
        for cid, shard in conn.execute(f"SELECT id, shard FROM chunks WHERE doc_id IN ({marks})", part):
            removed.setdefault(int(shard), []).append(int(cid))
        conn.execute(f"DELETE FROM docs WHERE id IN ({marks})", part)
    return removed


def _insert_doc(conn: sqlite3.Connection, doc: Document, now: float) -> None:
    # A document from a flow without a loader (bytes handed in) is dated by its file, if any.
    meta = PhotoMeta.from_dict(doc.meta) if doc.meta else PhotoMeta(local_time(doc.mtime_ns), taken_from="file")
    if meta.taken_at is None:  # no date and no usable mtime: dated by its indexing, so it sorts somewhere
        meta.taken_at, meta.taken_from = local_time(int(now * 1e9)), "indexed"
    conn.execute(
        f"INSERT INTO docs ({DOC_COLUMNS}, {META_COLUMNS}, camera_id) VALUES ({','.join('?' * 25)})",
        (
            doc.id,
            path_bytes(doc.uri) if doc.uri is not None else None,
            doc.size,
            doc.mtime_ns,
            doc.content_hash,
            doc.width,
            doc.height,
            json.dumps([[lab, round(p, 6)] for lab, p in doc.tags]),
            now,
            *_meta_values(meta, doc.uri),
            _camera_id(conn, meta),
        ),
    )
    conn.executemany(
        "INSERT INTO doc_tags (doc_id, label, probability) VALUES (?,?,?)", [(doc.id, lab, p) for lab, p in doc.tags]
    )


def _meta_values(meta: PhotoMeta, uri: str | None) -> tuple:
    """The values of META_COLUMNS for ``meta`` (a file at ``uri``)."""
    return (
        meta.taken_at,
        meta.taken_offset,
        meta.taken_from,
        meta.lens,
        meta.focal_mm,
        meta.exposure_s,
        meta.f_number,
        meta.iso,
        meta.lat,
        meta.lon,
        meta.orientation,
        meta.format,
        folder_of(uri),
        json.dumps(meta.notes) if meta.notes else None,
        METADATA_VERSION,
    )


def _camera_id(conn: sqlite3.Connection, meta: PhotoMeta) -> int | None:
    """The cameras row of ``meta``'s make and model, made on first sight; None without either."""
    if meta.make is None and meta.model is None:
        return None
    make, model = meta.make or "", meta.model or ""
    conn.execute("INSERT OR IGNORE INTO cameras (make, model) VALUES (?, ?)", (make, model))
    return int(conn.execute("SELECT id FROM cameras WHERE make=? AND model=?", (make, model)).fetchone()[0])


def _insert_chunk(conn: sqlite3.Connection, doc_id: str, shard: int, chunk: Chunk) -> tuple[int, np.ndarray]:
    """Store ``chunk`` (as float16) and give it its id; (that id, the float32 vector a rebuild would read)."""
    assert chunk.embedding is not None
    half = np.ascontiguousarray(chunk.embedding, dtype=STORED_DTYPE)
    cur = conn.execute(
        "INSERT INTO chunks (doc_id, kind, bbox, shard, embedding) VALUES (?,?,?,?,?)",
        (doc_id, chunk.kind, json.dumps(chunk.bbox) if chunk.bbox else None, shard, half.tobytes()),
    )
    chunk.id = int(cur.lastrowid or 0)
    return chunk.id, half.astype(np.float32)
