"""The doc store's SQLite connections, and how its rows encode paths and vectors.

Every part of the doc store (documents, embeddings, the vector log, planning, writes) works over
one :class:`Database`: one writer connection behind a lock, one reader connection per thread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np

from lookalike.errors import StoreError
from lookalike.filters import km_between

PAGE_SIZE = 16384
# How vectors are stored: float16, 2 bytes a dimension (2,560 bytes for 1280-d).
STORED_DTYPE = np.float16
# SQLite's bound-parameter limit was 999 before 3.32; a part of 500 ids stays well inside it.
IN_BATCH = 500

T = TypeVar("T")


class Database:
    """SQLite in WAL mode: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: Path):
        self.path = path
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # every thread's, so close() closes them all
        self._closed = False
        self.writer = self._connect()

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
        # ... whose pages go back when its rows are deleted: an in-memory database otherwise keeps
        # every page it ever had (about 180 bytes a scanned file, for as long as the process runs).
        conn.execute("PRAGMA temp.auto_vacuum=FULL")
        conn.create_function("lookalike_km", 4, km_between, deterministic=True)  # the "near" filter
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside BEGIN IMMEDIATE ... COMMIT, rolled back on any error.

        BEGIN IMMEDIATE takes SQLite's write lock, so writers in other processes wait their turn
        (up to the connection's timeout) for each commit, never for another's whole run.
        """
        with self._write_lock:
            conn = self.writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise store_error(self.path, "start a write", e) from e
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
                    raise store_error(self.path, "commit", e) from e
                raise

    @property
    def reader(self) -> sqlite3.Connection:
        """This thread's reader connection (opened on first use)."""
        if self._closed:
            raise StoreError(f"the doc store {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._local.conn = self._connect()
            except sqlite3.Error as e:
                raise store_error(self.path, "read", e) from e
            with self._write_lock:
                self._readers.append(conn)
        return conn

    def shrink(self) -> None:
        """Give back the page caches of the writer and this thread's reader (a long-lived process
        after a big scan). Nothing is lost: pages are read again when needed."""
        with self._write_lock:
            self.writer.execute("PRAGMA shrink_memory")
        self.reader.execute("PRAGMA shrink_memory")

    def close(self) -> None:
        self._closed = True
        self.writer.close()
        with self._write_lock:
            readers, self._readers = self._readers, []
        for conn in readers:  # sqlite3 may close another thread's connection (check_same_thread=False)
            conn.close()
        self._local = threading.local()


def in_batches(items: Sequence[T], size: int = IN_BATCH) -> Iterator[tuple[str, list[T]]]:
    """``items`` in parts that fit one statement, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(items), size):
        part = list(items[start : start + size])
        yield ",".join("?" * len(part)), part


def path_bytes(path: str) -> bytes:
    """A file path as stored: its bytes (names that are not valid UTF-8 included)."""
    return os.fsencode(path)


def path_str(value: bytes | str | None) -> str | None:
    """A stored path (bytes; text in stores from before migration 2) as a str."""
    if value is None:
        return None
    return os.fsdecode(value) if isinstance(value, bytes) else value


def encode_vector(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=STORED_DTYPE).tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=STORED_DTYPE)


def stack_vectors(blobs: list[bytes], dim: int) -> np.ndarray:
    """Stored embeddings as one float32 array."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    if any(len(b) != 2 * dim for b in blobs):
        raise StoreError(
            f"the doc store holds a vector that is not {dim}-d float16 (written by another lookalike version?); "
            "re-index with `lookalike index --reset PATH...`"
        )
    return np.frombuffer(b"".join(blobs), dtype=STORED_DTYPE).reshape(len(blobs), dim).astype(np.float32)


def store_error(path: Path, what: str, e: sqlite3.Error) -> StoreError:
    text = str(e)
    if "full" in text.lower():  # SQLITE_FULL: "database or disk is full"
        return StoreError(f"cannot {what} in {path}: the disk is full (No space left on device)")
    if "locked" in text.lower() or "busy" in text.lower():
        return StoreError(f"cannot {what} in {path}: another process held the workspace too long ({text})")
    return StoreError(f"cannot {what} in {path}: {text}")
