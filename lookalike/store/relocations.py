"""Documents followed to their files' new paths: a renamed or moved file keeps its vectors.

A document's id derives from its path, so a file that moved needs a new id. Its chunks (their ids,
shards and vectors), its tags and its header fields stay as they are: the shard indexes, which know
chunk ids only, need no change at all. One transaction moves a batch, so a crash leaves each
document either at its old path or at its new one, never both or neither.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from lookalike.document import doc_id_for
from lookalike.metadata import local_time
from lookalike.store.database import Database, in_batches, path_bytes, store_error
from lookalike.store.schema import folder_of
from lookalike.store.vector_log import bump_generation


@dataclass(frozen=True)
class Relocation:
    """A stored document whose file is now at ``path`` (same bytes), with its size and mtime there."""

    doc_id: str
    path: str
    size: int
    mtime_ns: int

    @property
    def new_id(self) -> str:
        return doc_id_for(self.path)


class Relocations:
    """Which gone documents a new file may be, and moving them; part of :class:`DocStore`."""

    _db: Database

    def content_keys(self, doc_ids: list[str]) -> dict[str, tuple[int, str]]:
        """doc id -> (size, content hash) of these documents, where both are known."""
        out: dict[str, tuple[int, str]] = {}
        sql = "SELECT id, size, content_hash FROM docs WHERE id IN ({}) AND size NOTNULL AND content_hash NOTNULL"
        try:
            for marks, part in in_batches(doc_ids):
                for doc_id, size, digest in self._db.reader.execute(sql.format(marks), part):
                    out[doc_id] = (int(size), digest)
        except sqlite3.Error as e:
            raise store_error(self._db.path, "plan", e) from e
        return out

    def relocate(self, moves: list[Relocation]) -> list[Relocation]:
        """Give each document its new id, path, folder, size and mtime, keeping its chunks, tags and
        header fields: one transaction, which moves the generation on (listings, timelines and
        filters are read afresh). Returns the moves done; one is not done if another process
        removed its document, or stored the new path, meanwhile."""
        done: list[Relocation] = []
        if not moves:
            return done
        with self._db.transaction() as conn:
            # docs.id is the parent key of chunks and doc_tags: checked at COMMIT, once all point at the new id.
            conn.execute("PRAGMA defer_foreign_keys=ON")
            for move in moves:
                old = conn.execute("SELECT taken_from FROM docs WHERE id=?", (move.doc_id,)).fetchone()
                new_id, uri = move.new_id, path_bytes(move.path)
                taken = conn.execute("SELECT 1 FROM docs WHERE id=? OR uri=?", (new_id, uri)).fetchone()
                if old is None or taken is not None:
                    continue
                conn.execute(
                    "UPDATE docs SET id=?, uri=?, folder=?, size=?, mtime_ns=? WHERE id=?",
                    (new_id, uri, folder_of(move.path), move.size, move.mtime_ns, move.doc_id),
                )
                if old[0] == "file":  # dated by its mtime: a move may have changed it
                    conn.execute("UPDATE docs SET taken_at=? WHERE id=?", (local_time(move.mtime_ns), new_id))
                conn.execute("UPDATE chunks SET doc_id=? WHERE doc_id=?", (new_id, move.doc_id))
                conn.execute("UPDATE doc_tags SET doc_id=? WHERE doc_id=?", (new_id, move.doc_id))
                conn.execute("DELETE FROM skips WHERE uri=?", (uri,))
                done.append(move)
            if done:
                bump_generation(conn)
        return done
