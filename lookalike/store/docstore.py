"""The SQLite doc store: documents, their chunks and embeddings. The workspace's source of truth.

Vector indexes are derived from what this store has committed, so one SQLite transaction per
request is the whole of crash consistency: a document and its vectors land together or not at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.document import Chunk, Document, shard_for
from lookalike.errors import StoreError

# Schema changes are ordered steps from one version to the next, never edits of old steps.
MIGRATIONS: list[str] = [
    # 1: documents, chunks (with embeddings), tags, and a generation counter bumped by every commit.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE docs (
        id TEXT PRIMARY KEY,
        uri TEXT UNIQUE,
        size INTEGER,
        mtime_ns INTEGER,
        content_hash TEXT,
        width INTEGER,
        height INTEGER,
        tags TEXT NOT NULL DEFAULT '[]',
        indexed_at REAL NOT NULL
    );
    CREATE INDEX docs_content_hash ON docs(content_hash);
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        doc_id TEXT NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        bbox TEXT,
        shard INTEGER NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX chunks_doc ON chunks(doc_id);
    CREATE INDEX chunks_shard ON chunks(shard);
    CREATE TABLE doc_tags (
        doc_id TEXT NOT NULL REFERENCES docs(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        probability REAL NOT NULL
    );
    CREATE INDEX doc_tags_label ON doc_tags(label);
    CREATE INDEX doc_tags_doc ON doc_tags(doc_id);
    CREATE TABLE skips (
        uri TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL
    );
    INSERT INTO meta VALUES ('generation', '0');
    """,
    # 2: many processes share a workspace.
    # - File paths are stored as bytes: a POSIX name need not be valid UTF-8, and SQLite's text is.
    # - roots: the folders ever indexed (was in manifest.json, which every writer would rewrite).
    # - vector_log: what each commit did to the vectors, so another process's in-memory shards
    #   catch up by replaying it instead of rebuilding. log_floor: the oldest generation the log
    #   can bring a reader forward from (raised by pruning, re-sharding and clearing).
    """
    UPDATE docs SET uri = CAST(uri AS BLOB) WHERE typeof(uri) = 'text';
    UPDATE skips SET uri = CAST(uri AS BLOB) WHERE typeof(uri) = 'text';
    CREATE TABLE roots (path BLOB PRIMARY KEY);
    CREATE TABLE vector_log (
        generation INTEGER NOT NULL,
        shard INTEGER NOT NULL,
        chunk_id INTEGER NOT NULL,
        added INTEGER NOT NULL
    );
    CREATE INDEX vector_log_generation ON vector_log(generation);
    INSERT INTO meta SELECT 'log_floor', value FROM meta WHERE key = 'generation';
    """,
    # 3: vectors are stored as float16 (half the bytes; exact search runs on them as stored). The
    # generation moves on and the log starts afresh, so every snapshot (of the float32 vectors)
    # is rebuilt from the converted ones.
    """
    UPDATE chunks SET embedding = lookalike_f16(embedding);
    DELETE FROM vector_log;
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation';
    UPDATE meta SET value = (SELECT value FROM meta WHERE key = 'generation') WHERE key = 'log_floor';
    """,
]

PAGE_SIZE = 16384
# How vectors are stored: float16, 2 bytes a dimension (2,560 bytes for 1280-d).
STORED_DTYPE = np.float16

# Keep this many generations of the vector log. A reader further behind than that rebuilds its
# shards from the chunks table instead (slower, same result). One generation is one committed
# request (16 images by default), so this is ~160,000 images of history.
LOG_GENERATIONS = 10_000


def _encode(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=STORED_DTYPE).tobytes()


def _decode(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=STORED_DTYPE)


def _f32_to_f16(blob: bytes | None) -> bytes | None:
    return None if blob is None else _encode(np.frombuffer(blob, dtype=np.float32))


def _path_in(path: str) -> bytes:
    """A file path as stored: its bytes (names that are not valid UTF-8 included)."""
    return os.fsencode(path)


def _path_out(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return os.fsdecode(value) if isinstance(value, bytes) else value


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


@dataclass
class ChangedFile:
    """A scanned file that is new or differs from its stored document (by size or mtime)."""

    path: str
    size: int
    mtime_ns: int
    doc_id: str | None  # None: not stored
    content_hash: str | None
    skip: tuple[int, int, str, str] | None  # remembered as bad: (size, mtime_ns, reason, message)


@dataclass
class StoreState:
    generation: int
    log_floor: int
    identity: str | None


@dataclass
class LoggedChange:
    """The vector log between two generations, in commit order."""

    steps: list[tuple[int, bool, list[int]]]  # (shard, added?, chunk ids), consecutive runs grouped


class DocStore:
    """SQLite in WAL mode: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: Path):
        self.path = path
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every thread's, so close() closes them all
        self._closed = False
        try:
            self._writer = self._connect()
            self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the doc store {path}: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        # A new store's pages are 16 KB: six 2.6 KB vectors a page, where 4 KB pages hold one (a
        # vector row takes 2.7 KB on disk instead of 4 KB). An existing store keeps its page size.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut can lose the last commits).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA temp_store=MEMORY")  # planning's table of scanned files
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

        BEGIN IMMEDIATE takes SQLite's write lock, so writers in other processes wait their turn
        (up to the connection's timeout) for each commit, never for another's whole run.
        """
        with self._write_lock:
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _store_error(self.path, "start a write", e) from e
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # SQLite already rolled back (it does on a full disk)
                if isinstance(e, sqlite3.Error):
                    raise _store_error(self.path, "commit", e) from e
                raise

    @staticmethod
    def _bump_generation(conn: sqlite3.Connection) -> tuple[int, int]:
        """Bump the generation inside a write transaction; (before, after)."""
        before = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
        conn.execute("UPDATE meta SET value = ? WHERE key='generation'", (str(before + 1),))
        return before, before + 1

    @staticmethod
    def _raise_log_floor(conn: sqlite3.Connection, generation: int) -> None:
        """The log cannot bring a reader from before ``generation`` forward: it must rebuild."""
        conn.execute("DELETE FROM vector_log WHERE generation <= ?", (generation,))
        conn.execute("UPDATE meta SET value = ? WHERE key='log_floor'", (str(generation),))

    @property
    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError(f"the doc store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._local.conn = self._connect()
            except sqlite3.Error as e:
                raise _store_error(self.path, "read", e) from e
            with self._write_lock:
                self._readers.append(conn)
        return conn

    def _migrate(self) -> None:
        self._writer.create_function("lookalike_f16", 1, _f32_to_f16, deterministic=True)
        while True:
            if self._writer.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
                return
            with self._transaction() as conn:
                # Read again under the write lock: another process may have just migrated.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"{self.path} has schema version {version}, newer than this lookalike knows "
                        f"({len(MIGRATIONS)}); upgrade lookalike"
                    )
                if version == len(MIGRATIONS):
                    return
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version + 1}")

    def close(self) -> None:
        self._closed = True
        self._writer.close()
        with self._write_lock:
            readers, self._readers = self._readers, []
        for conn in readers:  # sqlite3 may close another thread's connection (check_same_thread=False)
            conn.close()
        self._local = threading.local()

    # --- reads --------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return int(self._reader.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    @property
    def log_floor(self) -> int:
        return int(self._reader.execute("SELECT value FROM meta WHERE key='log_floor'").fetchone()[0])

    def logged_changes(self, since: int, until: int) -> LoggedChange:
        """The vector log of the commits after generation ``since`` up to ``until``, in order."""
        steps: list[tuple[int, bool, list[int]]] = []
        sql = (
            "SELECT shard, added, chunk_id FROM vector_log WHERE generation > ? AND generation <= ? "
            "ORDER BY generation, rowid"
        )
        for shard, added, chunk_id in self._reader.execute(sql, (since, until)):
            if steps and steps[-1][0] == shard and steps[-1][1] == bool(added):
                steps[-1][2].append(int(chunk_id))
            else:
                steps.append((int(shard), bool(added), [int(chunk_id)]))
        return LoggedChange(steps)

    def embeddings(self, ids: list[int] | np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, float32 embeddings) of those of ``ids`` that still exist, in id order.

        On the search path (exact re-ranking of ANN candidates): the ids are looked up sorted, so
        SQLite walks the table's B-tree forward once."""
        wanted = np.unique(np.asarray(ids, dtype=np.int64)).tolist()
        found_ids: list[int] = []
        blobs: list[bytes] = []
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT id, embedding FROM chunks WHERE id IN ({marks}) ORDER BY id"
            for cid, blob in self._reader.execute(sql, part):
                found_ids.append(cid)
                blobs.append(blob)
        return np.array(found_ids, dtype=np.int64), _stack(blobs, dim)

    def shard_vector_blocks(self, shard: int, dim: int, block: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every committed (chunk ids, float32 embeddings) of one shard, ``block`` at a time, in id
        order. Call inside :meth:`snapshot_read` for one consistent pass."""
        last = -1
        sql = "SELECT id, embedding FROM chunks WHERE shard=? AND id>? ORDER BY id LIMIT ?"
        while True:
            rows = self._reader.execute(sql, (shard, last, block)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), _stack([r[1] for r in rows], dim)

    def sample_embeddings(self, n: int, dim: int, kind: str = "whole", seed: int = 0) -> np.ndarray:
        """Up to ``n`` embeddings of ``kind`` chunks, drawn at random (seeded) by probing chunk ids:
        primary-key lookups only, however large the table. Ids left sparse by re-encoded or deleted
        files, and chunks of other kinds (a flipper's mirrors), only cost more probing rounds."""
        lo, hi = self._reader.execute("SELECT min(id), max(id) FROM chunks").fetchone()
        if lo is None:
            return np.zeros((0, dim), np.float32)
        if hi - lo + 1 <= 4 * n:  # small: take them all, then draw
            rows = self._reader.execute("SELECT id, embedding FROM chunks WHERE kind=?", (kind,)).fetchall()
            found = dict(rows)
        else:
            rng, found = np.random.default_rng(seed), {}
            for _ in range(8):
                need = n - len(found)
                if need <= 0:
                    break
                probe = np.unique(rng.integers(lo, hi + 1, size=3 * need)).tolist()
                for start in range(0, len(probe), 500):
                    part = probe[start : start + 500]
                    sql = f"SELECT id, embedding FROM chunks WHERE id IN ({','.join('?' * len(part))}) AND kind=?"
                    found.update(self._reader.execute(sql, (*part, kind)))
        ids = sorted(found)
        if len(ids) > n:
            ids = sorted(np.random.default_rng(seed).choice(ids, size=n, replace=False).tolist())
        return _stack([found[i] for i in ids], dim)

    def count_shard(self, shard: int) -> int:
        return int(self._reader.execute("SELECT count(*) FROM chunks WHERE shard=?", (shard,)).fetchone()[0])

    @contextmanager
    def snapshot_read(self) -> Iterator[StoreState]:
        """One consistent read of this thread's connection: the state yielded, and everything read
        inside the block, are of the same commit (WAL readers see a fixed snapshot in a transaction).
        SQLite errors inside come out as StoreError."""
        conn = self._reader
        try:
            conn.execute("BEGIN")
            try:
                rows = dict(
                    conn.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'log_floor', 'identity')")
                )
                yield StoreState(int(rows["generation"]), int(rows["log_floor"]), rows.get("identity"))
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise _store_error(self.path, "read", e) from e

    @property
    def identity(self) -> str | None:
        """What the vectors are (encoder, size, metric, shards), as the last writer to set it said."""
        row = self._reader.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        return row[0] if row else None

    def set_identity(self, identity: str) -> None:
        """Record a new identity; no process's shards from before it may be brought forward."""
        with self._transaction() as conn:
            self._set_identity(conn, identity)

    def _set_identity(self, conn: sqlite3.Connection, identity: str) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity,))
        _, after = self._bump_generation(conn)
        self._raise_log_floor(conn, after)

    def _check_identity(self, conn: sqlite3.Connection, expected: str | None) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        if expected is not None and row is not None and row[0] != expected:
            raise StoreError(
                f"workspace {self.path.parent} was re-indexed by another process (its vectors are now "
                f"{row[0]}); restart to use it"
            )

    def max_chunks_of_docs_with(self, chunk_ids: list[int]) -> int:
        """The most chunks any document owning one of ``chunk_ids`` has (0 if none is left)."""
        best = 0
        for start in range(0, len(chunk_ids), 500):
            part = chunk_ids[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = (
                "SELECT max(n) FROM (SELECT count(*) AS n FROM chunks WHERE doc_id IN "
                f"(SELECT doc_id FROM chunks WHERE id IN ({marks})) GROUP BY doc_id)"
            )
            best = max(best, int(self._reader.execute(sql, part).fetchone()[0] or 0))
        return best

    def roots(self) -> list[str]:
        return sorted(os.fsdecode(r) for (r,) in self._reader.execute("SELECT path FROM roots"))

    def add_roots(self, roots: Iterable[str]) -> None:
        with self._transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO roots VALUES (?)", [(_path_in(r),) for r in roots])

    def count_docs(self) -> int:
        return int(self._reader.execute("SELECT count(*) FROM docs").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self._reader.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def max_chunks_per_doc(self) -> int:
        row = self._reader.execute("SELECT max(n) FROM (SELECT count(*) AS n FROM chunks GROUP BY doc_id)").fetchone()
        return int(row[0] or 1)

    def _doc(self, row: tuple) -> StoredDoc:
        return StoredDoc(
            id=row[0],
            uri=_path_out(row[1]),
            size=row[2],
            mtime_ns=row[3],
            content_hash=row[4],
            width=row[5],
            height=row[6],
            tags=[(str(label), float(p)) for label, p in json.loads(row[7])],
            indexed_at=row[8],
        )

    _DOC_COLUMNS = "id, uri, size, mtime_ns, content_hash, width, height, tags, indexed_at"

    def get_docs(self, ids: Iterable[str]) -> dict[str, StoredDoc]:
        ids = list(dict.fromkeys(ids))
        out: dict[str, StoredDoc] = {}
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self._reader.execute(f"SELECT {self._DOC_COLUMNS} FROM docs WHERE id IN ({marks})", part):
                out[row[0]] = self._doc(row)
        return out

    def iter_docs(self) -> Iterator[StoredDoc]:
        for row in self._reader.execute(f"SELECT {self._DOC_COLUMNS} FROM docs ORDER BY uri"):
            yield self._doc(row)

    def docs_by_uri(self) -> dict[str, StoredDoc]:
        """Every document by path: for checks and small tools (planning never reads them all)."""
        return {d.uri: d for d in self.iter_docs() if d.uri is not None}

    # --- planning at scale: the scanned files meet the tables in SQL, never the reverse ------------

    @contextmanager
    def scanned(self, files: Iterable[tuple[str, int, int]]) -> Iterator[None]:
        """Inside this block, ``files`` ((path, size, mtime_ns) from a scan) are a temporary table
        of this thread's connection, for :meth:`changed_files` and the ``unscanned_*`` queries."""
        conn = self._reader
        try:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS scan (uri BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER)")
            conn.execute("BEGIN")  # one transaction for all the rows, not one each
            try:
                conn.execute("DELETE FROM temp.scan")
                conn.executemany(
                    "INSERT OR REPLACE INTO temp.scan VALUES (?,?,?)", ((_path_in(u), s, m) for u, s, m in files)
                )
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise _store_error(self.path, "plan", e) from e
        try:
            yield
        finally:
            conn.execute("DELETE FROM temp.scan")

    def changed_files(self) -> list[ChangedFile]:
        """The scanned files that are not stored with the same size and mtime, in scan order."""
        sql = (
            "SELECT s.uri, s.size, s.mtime_ns, d.id, d.content_hash, k.size, k.mtime_ns, k.reason, k.message "
            "FROM temp.scan s LEFT JOIN docs d ON d.uri = s.uri LEFT JOIN skips k ON k.uri = s.uri "
            "WHERE d.id IS NULL OR d.size IS NOT s.size OR d.mtime_ns IS NOT s.mtime_ns ORDER BY s.rowid"
        )
        out = []
        try:
            rows = self._reader.execute(sql).fetchall()
        except sqlite3.Error as e:
            raise _store_error(self.path, "plan", e) from e
        for uri, size, mtime, doc_id, content_hash, k_size, k_mtime, reason, message in rows:
            skip = (int(k_size), int(k_mtime), reason, message) if reason is not None else None
            out.append(ChangedFile(os.fsdecode(uri), int(size), int(mtime), doc_id, content_hash, skip))
        return out

    def _query_under(self, sql: str, roots: Iterable[str]) -> list[tuple]:
        """Rows of ``sql`` (with ``{where}`` for the roots' ranges), over every group of roots."""
        rows: list[tuple] = []
        try:
            for where, args in _under(roots):
                rows += self._reader.execute(sql.format(where=where), args).fetchall()
        except sqlite3.Error as e:
            raise _store_error(self.path, "read", e) from e
        return list(dict.fromkeys(rows))  # a root's range may overlap another's

    def unscanned_docs(self, roots: Iterable[str]) -> list[tuple[str, str]]:
        """(doc id, path) of stored documents under ``roots`` that the scan did not find."""
        sql = "SELECT id, uri FROM docs WHERE ({where}) AND uri NOT IN (SELECT uri FROM temp.scan)"
        return [(doc_id, os.fsdecode(uri)) for doc_id, uri in self._query_under(sql, roots)]

    def unscanned_skips(self, roots: Iterable[str]) -> list[str]:
        """Paths under ``roots`` remembered as bad that the scan did not find."""
        sql = "SELECT uri FROM skips WHERE ({where}) AND uri NOT IN (SELECT uri FROM temp.scan)"
        return [os.fsdecode(u) for (u,) in self._query_under(sql, roots)]

    def docs_under(self, roots: Iterable[str]) -> list[tuple[str, str]]:
        """(doc id, path) of stored documents whose file is one of ``roots`` or inside one of them:
        one range of the uri index per root (a path's bytes sort right after its folder's + "/")."""
        sql = "SELECT id, uri FROM docs WHERE {where}"
        return [(doc_id, os.fsdecode(uri)) for doc_id, uri in self._query_under(sql, roots)]

    def chunk_info(self, ids: Iterable[int]) -> dict[int, tuple[str, str, tuple[int, int, int, int] | None]]:
        """chunk id -> (doc id, kind, bbox)."""
        ids = list(ids)
        out = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT id, doc_id, kind, bbox FROM chunks WHERE id IN ({marks})"
            for cid, doc_id, kind, bbox in self._reader.execute(sql, part):
                out[int(cid)] = (doc_id, kind, tuple(json.loads(bbox)) if bbox else None)
        return out

    def chunks_of(self, doc_id: str) -> list[tuple[int, str, tuple[int, int, int, int] | None, np.ndarray]]:
        """A document's chunks: (chunk id, kind, bbox, embedding), in insertion order."""
        sql = "SELECT id, kind, bbox, embedding FROM chunks WHERE doc_id=? ORDER BY id"
        return [
            (int(cid), kind, tuple(json.loads(bbox)) if bbox else None, _decode(blob).astype(np.float32))
            for cid, kind, bbox, blob in self._reader.execute(sql, (doc_id,))
        ]

    def chunk_ids(self) -> np.ndarray:
        """Every stored chunk's id (without reading a vector)."""
        rows = self._reader.execute("SELECT id FROM chunks ORDER BY id")
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(chunk ids, embeddings, doc ids) of every chunk: for brute-force checks and re-sharding."""
        rows = self._reader.execute("SELECT id, embedding, doc_id FROM chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, _stack([r[1] for r in rows], dim), [r[2] for r in rows]

    def vectors_by_doc(self, dim: int, kind: str = "whole") -> tuple[list[str], np.ndarray]:
        """(doc ids, embeddings): one embedding per document, that of its chunk of ``kind``.

        A document with several chunks of that kind contributes its first (lowest chunk id); one
        with none is left out. Ordered by document uri, so results are stable across runs.
        """
        sql = (
            "SELECT c.doc_id, c.embedding FROM chunks c JOIN docs d ON d.id = c.doc_id "
            "WHERE c.id IN (SELECT min(id) FROM chunks WHERE kind=? GROUP BY doc_id) ORDER BY d.uri, d.id"
        )
        rows = self._reader.execute(sql, (kind,)).fetchall()
        return [r[0] for r in rows], _stack([r[1] for r in rows], dim)

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
        rows = self._reader.execute(sql, (*labels, limit))
        return [(d, lab, float(p)) for d, lab, _best, p in rows]

    def search_tags(self, text: str, limit: int = 50) -> list[tuple[str, str, float]]:
        """(doc id, label, probability) of docs whose tags contain ``text``, most probable first."""
        sql = (
            "SELECT doc_id, label, max(probability) AS p FROM doc_tags WHERE label LIKE ? ESCAPE '!' "
            "GROUP BY doc_id ORDER BY p DESC, doc_id LIMIT ?"
        )
        pattern = "%" + text.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        return [(d, lab, float(p)) for d, lab, p in self._reader.execute(sql, (pattern, limit))]

    # --- writes -------------------------------------------------------------------------------

    def commit(
        self,
        docs: list[Document],
        vectors: dict[str, tuple[int, list[Chunk]]],
        deletes: Iterable[str],
        identity: str | None = None,
    ) -> VectorChange:
        """Insert or replace ``docs`` with their chunks, delete ``deletes``: one transaction.

        ``identity``: what the writer's vectors are; if another process re-built the store for other
        vectors meanwhile, nothing is written (StoreError). Assigns chunk ids (``chunk.id``) and
        returns what changed per shard.
        """
        removed: dict[int, list[int]] = {}
        added_ids: dict[int, list[int]] = {}
        added_vecs: dict[int, list[np.ndarray]] = {}
        now = time.time()
        with self._transaction() as conn:
            self._check_identity(conn, identity)
            gone = [*deletes, *(d.id for d in docs)]
            for start in range(0, len(gone), 500):
                part = gone[start : start + 500]
                marks = ",".join("?" * len(part))
                for cid, shard in conn.execute(f"SELECT id, shard FROM chunks WHERE doc_id IN ({marks})", part):
                    removed.setdefault(int(shard), []).append(int(cid))
                conn.execute(f"DELETE FROM docs WHERE id IN ({marks})", part)  # cascades to chunks, tags
            conn.executemany("DELETE FROM skips WHERE uri=?", [(_path_in(d.uri),) for d in docs if d.uri])
            for doc in docs:
                conn.execute(
                    f"INSERT INTO docs ({self._DOC_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        doc.id,
                        _path_in(doc.uri) if doc.uri is not None else None,
                        doc.size,
                        doc.mtime_ns,
                        doc.content_hash,
                        doc.width,
                        doc.height,
                        json.dumps([[lab, round(p, 6)] for lab, p in doc.tags]),
                        now,
                    ),
                )
                conn.executemany(
                    "INSERT INTO doc_tags (doc_id, label, probability) VALUES (?,?,?)",
                    [(doc.id, lab, p) for lab, p in doc.tags],
                )
                shard, chunks = vectors.get(doc.id, (0, []))
                for chunk in chunks:
                    assert chunk.embedding is not None
                    half = np.ascontiguousarray(chunk.embedding, dtype=STORED_DTYPE)
                    emb = half.astype(np.float32)  # the shards hold exactly what a rebuild would read
                    cur = conn.execute(
                        "INSERT INTO chunks (doc_id, kind, bbox, shard, embedding) VALUES (?,?,?,?,?)",
                        (doc.id, chunk.kind, json.dumps(chunk.bbox) if chunk.bbox else None, shard, half.tobytes()),
                    )
                    chunk.id = int(cur.lastrowid or 0)
                    added_ids.setdefault(shard, []).append(chunk.id)
                    added_vecs.setdefault(shard, []).append(emb)
            before, after = self._bump_generation(conn)
            log = [(after, shard, cid, 0) for shard, cids in removed.items() for cid in cids]
            log += [(after, shard, cid, 1) for shard, cids in added_ids.items() for cid in cids]
            conn.executemany("INSERT INTO vector_log VALUES (?,?,?,?)", log)
            if after % 100 == 0 and after > LOG_GENERATIONS:  # prune now and then, not every commit
                self._raise_log_floor(conn, after - LOG_GENERATIONS)
        added = {s: (np.array(added_ids[s], dtype=np.int64), np.stack(added_vecs[s])) for s in added_ids}
        return VectorChange(removed, added, before, after)

    def skips(self) -> dict[str, tuple[int, int, str, str]]:
        """Files that failed before: uri -> (size, mtime_ns, reason, message)."""
        rows = self._reader.execute("SELECT uri, size, mtime_ns, reason, message FROM skips")
        return {os.fsdecode(u): (int(s), int(m), r, msg) for u, s, m, r, msg in rows}

    def record_skips(self, rows: list[tuple[str, int, int, str, str]]) -> None:
        """Remember files that failed (uri, size, mtime_ns, reason, message) so that an unchanged
        bad file is reported again without being processed again."""
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO skips VALUES (?,?,?,?,?)", [(_path_in(u), *rest) for u, *rest in rows]
            )

    def forget_skips(self, uris: Iterable[str]) -> None:
        with self._transaction() as conn:
            conn.executemany("DELETE FROM skips WHERE uri=?", [(_path_in(u),) for u in uris])

    def touch(self, doc_id: str, mtime_ns: int, size: int) -> None:
        """Record a new mtime for a file whose content did not change (no re-encoding needed)."""
        with self._transaction() as conn:
            conn.execute("UPDATE docs SET mtime_ns=?, size=? WHERE id=?", (mtime_ns, size, doc_id))

    def reassign_shards(self, shards: int, identity: str) -> None:
        """Move chunks to the shards a new shard count gives their documents (in SQL, without
        reading the documents out), and take the new identity in the same transaction."""
        with self._transaction() as conn:
            conn.create_function("lookalike_shard", 2, shard_for, deterministic=True)
            conn.execute("UPDATE chunks SET shard = lookalike_shard(doc_id, ?)", (shards,))
            self._set_identity(conn, identity)

    def clear(self, identity: str) -> None:
        """Empty the store (documents, vectors, remembered bad files) for vectors of ``identity``,
        in one transaction: no writer of the old vectors can commit into the emptied store."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM docs")
            conn.execute("DELETE FROM skips")
            self._set_identity(conn, identity)


def _under(roots: Iterable[str]) -> Iterator[tuple[str, list[bytes]]]:
    """WHERE clauses (with their arguments) for "uri is one of ``roots`` or inside one of them",
    a few hundred roots each (SQLite limits an expression's depth): one range of the uri index a
    root. Roots inside other roots are dropped."""
    roots = sorted({r.rstrip(os.sep) or os.sep for r in roots})
    kept: list[str] = []
    for root in roots:
        if not any(root == k or root.startswith(k if k == os.sep else k + os.sep) for k in kept[-1:]):
            kept.append(root)
    for start in range(0, len(kept), 200):
        clauses, args = [], []
        for root in kept[start : start + 200]:
            exact = os.fsencode(root)
            prefix = exact if root == os.sep else exact + b"/"
            clauses.append("(uri = ? OR (uri >= ? AND uri < ?))")
            args += [exact, prefix, prefix[:-1] + b"0"]  # "0" is the byte after "/"
        yield " OR ".join(clauses), args


def _stack(blobs: list[bytes], dim: int) -> np.ndarray:
    """Stored embeddings as one float32 array."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    if any(len(b) != 2 * dim for b in blobs):
        raise StoreError(
            f"the doc store holds a vector that is not {dim}-d float16 (written by another lookalike version?); "
            "re-index with `lookalike index --reset PATH...`"
        )
    return np.frombuffer(b"".join(blobs), dtype=STORED_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def _store_error(path: Path, what: str, e: sqlite3.Error) -> StoreError:
    text = str(e)
    if "full" in text.lower():  # SQLITE_FULL: "database or disk is full"
        return StoreError(f"cannot {what} in {path}: the disk is full (No space left on device)")
    if "locked" in text.lower() or "busy" in text.lower():
        return StoreError(f"cannot {what} in {path}: another process held the workspace too long ({text})")
    return StoreError(f"cannot {what} in {path}: {text}")
