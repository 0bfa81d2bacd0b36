"""The SQLite doc store: documents, their chunks and embeddings. The workspace's source of truth.

Vector indexes are derived from what this store has committed, so one SQLite transaction per
request is the whole of crash consistency: a document and its vectors land together or not at all.

:class:`DocStore` is one object over one :class:`~lookalike.store.database.Database`; its parts
live with their concern:

- ``documents``: documents (with tags) and chunks; ``embeddings``: the stored vectors;
- ``vector_log``: generations, the log shard indexes replay, the identity of the vectors;
- ``scan``: planning against a scan, files remembered as bad, indexed roots;
- ``filtering``: what a filter keeps, and listings by page; ``facets``: counts to browse by;
- ``writes``: commits, re-sharding, resets; ``relocations``: documents followed to moved files;
- ``people``: each face's person, names and the user's corrections;
- ``schema``: the migrations.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lookalike.errors import StoreError
from lookalike.store.database import Database, store_error
from lookalike.store.documents import Chunks, Documents, StoredDoc
from lookalike.store.embeddings import Embeddings
from lookalike.store.facets import Facets
from lookalike.store.filtering import Filtering
from lookalike.store.people import PeopleStore
from lookalike.store.relocations import Relocation, Relocations
from lookalike.store.scan import ChangedFile, Roots, ScanQueries, Skips
from lookalike.store.schema import migrate
from lookalike.store.vector_log import LoggedChange, StoreState, VectorLog
from lookalike.store.writes import VectorChange, Writes

# Where callers found them before the doc store was split by concern.
__all__ = ["ChangedFile", "DocStore", "LoggedChange", "Relocation", "StoreState", "StoredDoc", "VectorChange"]


class DocStore(
    Documents,
    Chunks,
    Embeddings,
    Filtering,
    Facets,
    VectorLog,
    ScanQueries,
    Skips,
    Roots,
    Writes,
    Relocations,
    PeopleStore,
):
    """SQLite in WAL mode: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._db = Database(path)
            migrate(self._db)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the doc store {path}: {e}") from e

    def release_memory(self) -> None:
        """Give back what this thread's reads and the writer cache (see :meth:`Database.shrink`)."""
        try:
            self._db.shrink()
        except sqlite3.Error as e:
            raise store_error(self.path, "read", e) from e

    def close(self) -> None:
        self._db.close()
