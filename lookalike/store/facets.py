"""What the collection holds, counted: photos a month, a folder, a camera, a format.

These are the choices a browsing page offers (a timeline, a folder tree, a camera and a format
list), each with how many photos it would show. Every count is one ``GROUP BY`` down an index
the filters already use; the library keeps the answers until the next commit.
"""

from __future__ import annotations

import os

from lookalike.filters import Filters
from lookalike.store.database import Database


class Facets:
    """Counts by month, folder, camera and format; part of :class:`~lookalike.store.docstore.DocStore`."""

    _db: Database

    def month_counts(self, filters: Filters) -> list[tuple[str, int]]:
        """("YYYY-MM", photos) for every month the filters keep a photo in, the latest first, by the
        photo's local date taken (the date the ``taken_after``/``taken_before`` filters compare)."""
        where, args = filters.sql()
        sql = (
            f"SELECT substr(d.taken_at, 1, 7) AS month, count(*) FROM docs d WHERE {where} "
            "AND d.taken_at IS NOT NULL GROUP BY month ORDER BY month DESC"
        )
        return [(m, n) for m, n in self._db.reader.execute(sql, args)]

    def folder_counts(self) -> dict[str, int]:
        """Photos directly in each folder that holds any."""
        rows = self._db.reader.execute("SELECT folder, count(*) FROM docs WHERE folder IS NOT NULL GROUP BY folder")
        return {os.fsdecode(folder): n for folder, n in rows}

    def camera_counts(self) -> list[tuple[str, int]]:
        """("Make Model", photos) for every camera, the most used first."""
        sql = (
            "SELECT trim(c.make || ' ' || c.model), count(*) AS n FROM docs d JOIN cameras c ON c.id = d.camera_id "
            "GROUP BY d.camera_id ORDER BY n DESC, 1"
        )
        return [(name, n) for name, n in self._db.reader.execute(sql) if name]

    def format_counts(self) -> list[tuple[str, int]]:
        """(format, photos) for every format held, the most first."""
        sql = "SELECT format, count(*) AS n FROM docs WHERE format IS NOT NULL GROUP BY format ORDER BY n DESC, format"
        return [(f, n) for f, n in self._db.reader.execute(sql)]
