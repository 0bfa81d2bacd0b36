"""Reading the doc store's vectors: by chunk id (re-ranking), by shard (builds), by document, at random."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lookalike.store.database import Database, in_batches, stack_vectors


class Embeddings:
    """The stored vectors, as float32; part of :class:`DocStore`."""

    _db: Database

    def embeddings(self, ids: list[int] | np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, float32 embeddings) of those of ``ids`` that still exist, in id order.

        On the search path (exact re-ranking of ANN candidates): the ids are looked up sorted, so
        SQLite walks the table's B-tree forward once."""
        found_ids: list[int] = []
        blobs: list[bytes] = []
        for marks, part in in_batches(np.unique(np.asarray(ids, dtype=np.int64)).tolist()):
            sql = f"SELECT id, embedding FROM chunks WHERE id IN ({marks}) ORDER BY id"
            for cid, blob in self._db.reader.execute(sql, part):
                found_ids.append(cid)
                blobs.append(blob)
        return np.array(found_ids, dtype=np.int64), stack_vectors(blobs, dim)

    def count_shard(self, shard: int) -> int:
        return int(self._db.reader.execute("SELECT count(*) FROM chunks WHERE shard=?", (shard,)).fetchone()[0])

    def shard_vector_blocks(self, shard: int, dim: int, block: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every committed (chunk ids, float32 embeddings) of one shard, ``block`` at a time, in id
        order. Call inside :meth:`snapshot_read` for one consistent pass."""
        last = -1
        sql = "SELECT id, embedding FROM chunks WHERE shard=? AND id>? ORDER BY id LIMIT ?"
        while True:
            rows = self._db.reader.execute(sql, (shard, last, block)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield np.fromiter((r[0] for r in rows), np.int64, len(rows)), stack_vectors([r[1] for r in rows], dim)

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(chunk ids, embeddings, doc ids) of every chunk: for brute-force checks and re-sharding."""
        rows = self._db.reader.execute("SELECT id, embedding, doc_id FROM chunks ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, stack_vectors([r[1] for r in rows], dim), [r[2] for r in rows]

    def vectors_by_doc(self, dim: int, kind: str = "whole") -> tuple[list[str], np.ndarray]:
        """(doc ids, embeddings): one embedding per document, that of its chunk of ``kind``.

        A document with several chunks of that kind contributes its first (lowest chunk id); one
        with none is left out. Ordered by document uri, so results are stable across runs.
        """
        sql = (
            "SELECT c.doc_id, c.embedding FROM chunks c JOIN docs d ON d.id = c.doc_id "
            "WHERE c.id IN (SELECT min(id) FROM chunks WHERE kind=? GROUP BY doc_id) ORDER BY d.uri, d.id"
        )
        rows = self._db.reader.execute(sql, (kind,)).fetchall()
        return [r[0] for r in rows], stack_vectors([r[1] for r in rows], dim)

    def sample_embeddings(self, n: int, dim: int, kind: str = "whole", seed: int = 0) -> np.ndarray:
        """Up to ``n`` embeddings of ``kind`` chunks, drawn at random (seeded) by probing chunk ids:
        primary-key lookups only, however large the table. Ids left sparse by re-encoded or deleted
        files, and chunks of other kinds (a flipper's mirrors), only cost more probing rounds."""
        lo, hi = self._db.reader.execute("SELECT min(id), max(id) FROM chunks").fetchone()
        if lo is None:
            return np.zeros((0, dim), np.float32)
        if hi - lo + 1 <= 4 * n:  # small: take them all, then draw
            rows = self._db.reader.execute("SELECT id, embedding FROM chunks WHERE kind=?", (kind,)).fetchall()
            found = dict(rows)
        else:
            rng, found = np.random.default_rng(seed), {}
            for _ in range(8):
                need = n - len(found)
                if need <= 0:
                    break
                probe = np.unique(rng.integers(lo, hi + 1, size=3 * need)).tolist()
                for marks, part in in_batches(probe):
                    sql = f"SELECT id, embedding FROM chunks WHERE id IN ({marks}) AND kind=?"
                    found.update(self._db.reader.execute(sql, (*part, kind)))
        ids = sorted(found)
        if len(ids) > n:
            ids = sorted(np.random.default_rng(seed).choice(ids, size=n, replace=False).tolist())
        return stack_vectors([found[i] for i in ids], dim)
