"""What the doc store knows of files on disk: planning at scale, files remembered as bad, indexed roots.

Planning meets a scan with the tables in SQL, never the reverse: the scanned files become a
temporary table, and a root is one range of the uri index (rclip's escaped ``LIKE`` prefix, as
byte ranges), so a no-op re-index never loads the docs table.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lookalike.store.database import Database, path_bytes, store_error

# Roots a statement: three bound values each (600 stay under SQLite's old limit of 999), and the
# chain of ORs stays well under its expression depth limit (1000).
ROOTS_PER_QUERY = 200


@dataclass
class ChangedFile:
    """A scanned file that is new or differs from its stored document (by size or mtime)."""

    path: str
    size: int
    mtime_ns: int
    doc_id: str | None  # None: not stored
    content_hash: str | None
    skip: tuple[int, int, str, str] | None  # remembered as bad: (size, mtime_ns, reason, message)


class ScanQueries:
    """A scan of the disk against the stored documents; part of :class:`DocStore`."""

    _db: Database

    @contextmanager
    def scanned(self, files: Iterable[tuple[str, int, int]]) -> Iterator[None]:
        """Inside this block, ``files`` ((path, size, mtime_ns) from a scan) are a temporary table
        of this thread's connection, for :meth:`changed_files` and the ``unscanned_*`` queries."""
        conn = self._db.reader
        try:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS scan (uri BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER)")
            conn.execute("BEGIN")  # one transaction for all the rows, not one each
            try:
                conn.execute("DELETE FROM temp.scan")
                conn.executemany(
                    "INSERT OR REPLACE INTO temp.scan VALUES (?,?,?)", ((path_bytes(u), s, m) for u, s, m in files)
                )
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise store_error(self._db.path, "plan", e) from e
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
            rows = self._db.reader.execute(sql).fetchall()
        except sqlite3.Error as e:
            raise store_error(self._db.path, "plan", e) from e
        for uri, size, mtime, doc_id, content_hash, k_size, k_mtime, reason, message in rows:
            skip = (int(k_size), int(k_mtime), reason, message) if reason is not None else None
            out.append(ChangedFile(os.fsdecode(uri), int(size), int(mtime), doc_id, content_hash, skip))
        return out

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

    def _query_under(self, sql: str, roots: Iterable[str]) -> list[tuple]:
        """Rows of ``sql`` (with ``{where}`` for the roots' ranges), over every group of roots."""
        rows: list[tuple] = []
        try:
            for where, args in _under(roots):
                rows += self._db.reader.execute(sql.format(where=where), args).fetchall()
        except sqlite3.Error as e:
            raise store_error(self._db.path, "read", e) from e
        return list(dict.fromkeys(rows))  # a root's range may overlap another's


class Skips:
    """Files that failed before, so an unchanged bad file is reported without being processed
    again; part of :class:`DocStore`."""

    _db: Database

    def skips(self) -> dict[str, tuple[int, int, str, str]]:
        """Files that failed before: uri -> (size, mtime_ns, reason, message)."""
        rows = self._db.reader.execute("SELECT uri, size, mtime_ns, reason, message FROM skips")
        return {os.fsdecode(u): (int(s), int(m), r, msg) for u, s, m, r, msg in rows}

    def record_skips(self, rows: list[tuple[str, int, int, str, str]]) -> None:
        """Remember files that failed (uri, size, mtime_ns, reason, message)."""
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO skips VALUES (?,?,?,?,?)", [(path_bytes(u), *rest) for u, *rest in rows]
            )

    def forget_skips(self, uris: Iterable[str]) -> None:
        with self._db.transaction() as conn:
            conn.executemany("DELETE FROM skips WHERE uri=?", [(path_bytes(u),) for u in uris])


class Roots:
    """The folders and files ever indexed (by any process); part of :class:`DocStore`."""

    _db: Database

    def roots(self) -> list[str]:
        return sorted(os.fsdecode(r) for (r,) in self._db.reader.execute("SELECT path FROM roots"))

    def add_roots(self, roots: Iterable[str]) -> None:
        with self._db.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO roots VALUES (?)", [(path_bytes(r),) for r in roots])


def _under(roots: Iterable[str]) -> Iterator[tuple[str, list[bytes]]]:
    """WHERE clauses (with their arguments) for "uri is one of ``roots`` or inside one of them",
    a few hundred roots each (SQLite limits an expression's depth): one range of the uri index a
    root. Roots inside other roots are dropped."""
    roots = sorted({r.rstrip(os.sep) or os.sep for r in roots})
    kept: list[str] = []
    for root in roots:
        if not any(root == k or root.startswith(k if k == os.sep else k + os.sep) for k in kept[-1:]):
            kept.append(root)
    for start in range(0, len(kept), ROOTS_PER_QUERY):
        clauses, args = [], []
        for root in kept[start : start + ROOTS_PER_QUERY]:
            exact = os.fsencode(root)
            prefix = exact if root == os.sep else exact + b"/"
            clauses.append("(uri = ? OR (uri >= ? AND uri < ?))")
            args += [exact, prefix, prefix[:-1] + b"0"]  # "0" is the byte after "/"
        yield " OR ".join(clauses), args
