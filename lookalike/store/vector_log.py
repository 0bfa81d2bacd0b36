"""The doc store's generations and vector log: how every process's shard indexes follow its commits.

Every commit bumps the generation and logs which chunk ids it added to or removed from which
shard; a shard index at an older generation replays the log instead of rebuilding. The identity
(what the vectors are) changes with a reset or a re-sharding, in the same transaction as the data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import StoreError
from lookalike.store.database import Database, store_error

# Keep this many generations of the vector log. A reader further behind than that rebuilds its
# shards from the chunks table instead (slower, same result). One generation is one committed
# request (16 images by default), so this is ~160,000 images of history.
LOG_GENERATIONS = 10_000
# Pruning deletes from the log's index: now and then, not on every commit.
PRUNE_EVERY = 100


@dataclass
class StoreState:
    generation: int
    log_floor: int
    identity: str | None


@dataclass
class LoggedChange:
    """The vector log between two generations, in commit order."""

    steps: list[tuple[int, bool, list[int]]]  # (shard, added?, chunk ids), consecutive runs grouped


class VectorLog:
    """The generation, the log since any generation, and the identity; part of :class:`DocStore`."""

    _db: Database

    @property
    def generation(self) -> int:
        return int(self._db.reader.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    @property
    def log_floor(self) -> int:
        return int(self._db.reader.execute("SELECT value FROM meta WHERE key='log_floor'").fetchone()[0])

    @contextmanager
    def snapshot_read(self) -> Iterator[StoreState]:
        """One consistent read of this thread's connection: the state yielded, and everything read
        inside the block, are of the same commit (WAL readers see a fixed snapshot in a transaction).
        SQLite errors inside come out as StoreError."""
        conn = self._db.reader
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
            raise store_error(self._db.path, "read", e) from e

    def logged_changes(self, since: int, until: int) -> LoggedChange:
        """The vector log of the commits after generation ``since`` up to ``until``, in order."""
        steps: list[tuple[int, bool, list[int]]] = []
        sql = (
            "SELECT shard, added, chunk_id FROM vector_log WHERE generation > ? AND generation <= ? "
            "ORDER BY generation, rowid"
        )
        for shard, added, chunk_id in self._db.reader.execute(sql, (since, until)):
            if steps and steps[-1][0] == shard and steps[-1][1] == bool(added):
                steps[-1][2].append(int(chunk_id))
            else:
                steps.append((int(shard), bool(added), [int(chunk_id)]))
        return LoggedChange(steps)

    @property
    def identity(self) -> str | None:
        """What the vectors are (encoder, size, metric, shards), as the last writer to set it said."""
        row = self._db.reader.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
        return row[0] if row else None

    def set_identity(self, identity: str) -> None:
        """Record a new identity; no process's shards from before it may be brought forward."""
        with self._db.transaction() as conn:
            write_identity(conn, identity)


# --- inside a write transaction ------------------------------------------------------------------


def bump_generation(conn: sqlite3.Connection) -> tuple[int, int]:
    """Bump the generation inside a write transaction; (before, after)."""
    before = int(conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
    conn.execute("UPDATE meta SET value = ? WHERE key='generation'", (str(before + 1),))
    return before, before + 1


def raise_log_floor(conn: sqlite3.Connection, generation: int) -> None:
    """The log cannot bring a reader from before ``generation`` forward: it must rebuild."""
    conn.execute("DELETE FROM vector_log WHERE generation <= ?", (generation,))
    conn.execute("UPDATE meta SET value = ? WHERE key='log_floor'", (str(generation),))


def log_vectors(
    conn: sqlite3.Connection, generation: int, removed: dict[int, list[int]], added: dict[int, list[int]]
) -> None:
    """Log what the commit of ``generation`` removed and added (shard -> chunk ids), removals first."""
    log = [(generation, shard, cid, 0) for shard, cids in removed.items() for cid in cids]
    log += [(generation, shard, cid, 1) for shard, cids in added.items() for cid in cids]
    conn.executemany("INSERT INTO vector_log VALUES (?,?,?,?)", log)
    if generation % PRUNE_EVERY == 0 and generation > LOG_GENERATIONS:
        raise_log_floor(conn, generation - LOG_GENERATIONS)


def write_identity(conn: sqlite3.Connection, identity: str) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('identity', ?)", (identity,))
    _, after = bump_generation(conn)
    raise_log_floor(conn, after)


def check_identity(conn: sqlite3.Connection, expected: str | None, workspace: Path) -> None:
    """Refuse a writer of other vectors than the store's (another process re-built it meanwhile)."""
    row = conn.execute("SELECT value FROM meta WHERE key='identity'").fetchone()
    if expected is not None and row is not None and row[0] != expected:
        raise StoreError(
            f"workspace {workspace} was re-indexed by another process (its vectors are now {row[0]}); restart to use it"
        )
