"""The doc store's schema: ordered migrations from one version to the next (``PRAGMA user_version``)."""

from __future__ import annotations

import os
import sqlite3

import numpy as np

from lookalike.errors import StoreError
from lookalike.metadata import local_time
from lookalike.store.database import Database, encode_vector

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
    # 4: what the camera recorded (lookalike.metadata), as indexed columns, so a filter is SQL.
    # taken_at: local wall-clock time, ISO 8601; taken_from: "exif", or "file" (its mtime).
    # folder: the file's parent folder, as bytes like uri. cameras: each (make, model) once.
    # Existing rows are dated by their mtime here; meta_version 0 has the next index run read their
    # headers (no re-encoding) for the rest.
    """
    CREATE TABLE cameras (id INTEGER PRIMARY KEY, make TEXT NOT NULL, model TEXT NOT NULL, UNIQUE (make, model));
    ALTER TABLE docs ADD COLUMN taken_at TEXT;
    ALTER TABLE docs ADD COLUMN taken_offset INTEGER;
    ALTER TABLE docs ADD COLUMN taken_from TEXT;
    ALTER TABLE docs ADD COLUMN camera_id INTEGER REFERENCES cameras(id);
    ALTER TABLE docs ADD COLUMN lens TEXT;
    ALTER TABLE docs ADD COLUMN focal_mm REAL;
    ALTER TABLE docs ADD COLUMN exposure_s REAL;
    ALTER TABLE docs ADD COLUMN f_number REAL;
    ALTER TABLE docs ADD COLUMN iso INTEGER;
    ALTER TABLE docs ADD COLUMN lat REAL;
    ALTER TABLE docs ADD COLUMN lon REAL;
    ALTER TABLE docs ADD COLUMN orientation INTEGER;
    ALTER TABLE docs ADD COLUMN format TEXT;
    ALTER TABLE docs ADD COLUMN folder BLOB;
    ALTER TABLE docs ADD COLUMN meta_notes TEXT;
    ALTER TABLE docs ADD COLUMN meta_version INTEGER NOT NULL DEFAULT 0;
    UPDATE docs SET folder = lookalike_dirname(uri),
        taken_at = lookalike_localtime(coalesce(mtime_ns, CAST(indexed_at * 1e9 AS INTEGER))), taken_from = 'file';
    CREATE INDEX docs_taken ON docs(taken_at);
    CREATE INDEX docs_indexed ON docs(indexed_at);
    CREATE INDEX docs_size ON docs(size);
    CREATE INDEX docs_camera ON docs(camera_id);
    CREATE INDEX docs_folder ON docs(folder);
    CREATE INDEX docs_lat ON docs(lat);
    CREATE INDEX docs_format ON docs(format);
    CREATE INDEX docs_meta_version ON docs(meta_version)
    """,
    # 5: a filter's chunks read from indexes alone (bench.filtered): each filter column's index
    # carries the document id, and chunks(doc_id, shard) gives a document's chunk ids (its rowids)
    # and shards without touching the rows, whose vectors would drag in a page each. A listing's
    # pages follow (sort key, id), which the same indexes hold in order.
    """
    DROP INDEX docs_taken;
    DROP INDEX docs_camera;
    DROP INDEX docs_folder;
    DROP INDEX docs_lat;
    DROP INDEX docs_format;
    DROP INDEX chunks_doc;
    DROP INDEX docs_indexed;
    DROP INDEX docs_size;
    CREATE INDEX docs_indexed ON docs(indexed_at, id);
    CREATE INDEX docs_size ON docs(size, id);
    CREATE INDEX docs_taken ON docs(taken_at, id);
    CREATE INDEX docs_camera ON docs(camera_id, id);
    CREATE INDEX docs_folder ON docs(folder, id);
    CREATE INDEX docs_lat ON docs(lat, lon, id);
    CREATE INDEX docs_format ON docs(format, id);
    CREATE INDEX chunks_doc ON chunks(doc_id, shard)
    """,
    # 6: people (lookalike.people, lookalike.library.people). Faces are the chunks of kind "face";
    # face_people holds each grouped face's person (NULL: unassigned), its neighbour count and the
    # user's corrections (pinned: put there by the user; nobody: "not anyone"). face_refusals: a
    # face the user took from a person is never linked to it again. A merged person keeps its row
    # (merged_into), so an id is never given twice. When a grouped face's chunk is deleted, the
    # trigger keeps its vector in faces_gone, for the next grouping to take it out of its
    # neighbours' counts, with its photo, box, person and corrections: a photo indexed again (new
    # chunks) gives them to its face in the same place.
    """
    CREATE TABLE people (
        id INTEGER PRIMARY KEY,
        name TEXT,
        hidden INTEGER NOT NULL DEFAULT 0,
        merged_into INTEGER,
        created_at REAL NOT NULL
    );
    CREATE INDEX people_name ON people(name COLLATE NOCASE);
    CREATE TABLE face_people (
        chunk_id INTEGER PRIMARY KEY,
        person_id INTEGER,
        degree INTEGER NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        nobody INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX face_people_person ON face_people(person_id);
    CREATE TABLE face_refusals (
        chunk_id INTEGER NOT NULL,
        person_id INTEGER NOT NULL,
        PRIMARY KEY (chunk_id, person_id)
    );
    CREATE TABLE faces_gone (
        chunk_id INTEGER PRIMARY KEY,
        embedding BLOB NOT NULL,
        doc_id TEXT,
        bbox TEXT,
        person_id INTEGER,
        pinned INTEGER NOT NULL DEFAULT 0,
        nobody INTEGER NOT NULL DEFAULT 0,
        refused TEXT
    );
    CREATE TRIGGER face_gone AFTER DELETE ON chunks WHEN old.kind = 'face' BEGIN
        INSERT OR REPLACE INTO faces_gone (chunk_id, embedding, doc_id, bbox, person_id, pinned, nobody, refused)
            SELECT old.id, old.embedding, old.doc_id, old.bbox, f.person_id, f.pinned, f.nobody,
                (SELECT json_group_array(r.person_id) FROM face_refusals r WHERE r.chunk_id = old.id)
            FROM face_people f WHERE f.chunk_id = old.id;
        DELETE FROM face_people WHERE chunk_id = old.id;
        DELETE FROM face_refusals WHERE chunk_id = old.id;
    END
    """,
]


def migrate(db: Database) -> None:
    """Bring the store to the newest schema, one step per transaction (another process may be at it too)."""
    db.writer.create_function("lookalike_f16", 1, _f32_to_f16, deterministic=True)
    db.writer.create_function("lookalike_dirname", 1, folder_of, deterministic=True)
    db.writer.create_function("lookalike_localtime", 1, local_time, deterministic=True)
    while True:
        if db.writer.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS):
            return
        with db.transaction() as conn:
            # Read again under the write lock: another process may have just migrated.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{db.path} has schema version {version}, newer than this lookalike knows "
                    f"({len(MIGRATIONS)}); upgrade lookalike"
                )
            if version == len(MIGRATIONS):
                return
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={version + 1}")


def _statements(script: str) -> list[str]:
    """A migration's statements, one by one (a trigger's body holds semicolons of its own)."""
    out, buf = [], ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n;"):
                out.append(buf)
            buf = ""
    if buf.strip(" \n;"):
        out.append(buf)
    return out


def folder_of(uri: bytes | str | None) -> bytes | None:
    """The folder a stored path lies in, as stored (bytes)."""
    return None if uri is None else os.path.dirname(os.fsencode(uri))


def _f32_to_f16(blob: bytes | None) -> bytes | None:
    return None if blob is None else encode_vector(np.frombuffer(blob, dtype=np.float32))
