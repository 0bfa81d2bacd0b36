"""The workspace's log of files moved out of the collection (`lookalike dupes --move-to`), and back.

``moves.jsonl`` in the workspace: one JSON line a file moved or put back, appended, never
rewritten. A line is one ``write`` on a file opened for appending, flushed to disk before the next
file moves, so a crash loses at most the line of the file in flight, and never garbles another: the
next line starts on a line of its own, and a line cut short is skipped when the log is read.
Every move of one request shares a batch id; an undo names the batch it puts back.

    {"op": "move", "batch": "20261207-153012-3f9a", "at": 1765..., "doc_id": "...",
     "from": "/photos/a.jpg", "to": "/photos/_dupes/a.jpg", "size": 1234, "mtime_ns": ...}
    {"op": "undo", "batch": "20261207-153012-3f9a", "at": 1765..., "doc_id": "...",
     "from": "/photos/_dupes/a.jpg", "to": "/photos/a.jpg"}

Paths that are not valid UTF-8 travel as Python keeps them (lone surrogates, JSON-escaped), so they
come back byte for byte. The files a batch moved and no undo put back are *set aside*: a scan of
the indexed folders leaves them out, so the next `lookalike index` does not bring them back.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.errors import StoreError

LOG = "moves.jsonl"


@dataclass(frozen=True)
class Move:
    """One file moved (or put back): its document, where it was and where it went."""

    doc_id: str
    source: str
    target: str
    size: int | None = None
    mtime_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "from": self.source, "to": self.target}


@dataclass
class MoveBatch:
    """The moves of one request, and whether an undo has put them back."""

    batch: str
    at: float
    moves: list[Move] = field(default_factory=list)
    undone: list[Move] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """Some file of it is still away (not yet put back)."""
        back = {m.doc_id for m in self.undone}
        return any(m.doc_id not in back for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "at": self.at,
            "moves": [m.to_dict() for m in self.moves],
            "undone": len(self.undone),
        }


def new_batch_id() -> str:
    """A batch id people can read and type: when, and a random tail (two batches in one second)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class MoveLog:
    """``moves.jsonl`` of one workspace."""

    def __init__(self, workspace: Path):
        self.path = workspace / LOG

    def append(self, op: str, batch: str, move: Move) -> None:
        """Log one file moved (``op`` "move") or put back ("undo"), on disk before it returns."""
        line = {"op": op, "batch": batch, "at": round(time.time(), 3), "doc_id": move.doc_id}
        line |= {"from": move.source, "to": move.target, "size": move.size, "mtime_ns": move.mtime_ns}
        data = (json.dumps(line, ensure_ascii=True) + "\n").encode("ascii")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    data = b"\n" + data  # a line cut short by a crash stays a line of its own
                os.write(fd, data)  # O_APPEND: one write lands whole at the end, whoever else appends
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot write the move log {self.path}: {e.strerror or e}") from e

    def batches(self) -> list[MoveBatch]:
        """Every batch, oldest first."""
        found: dict[str, MoveBatch] = {}
        for line in self._lines():
            batch = found.setdefault(line["batch"], MoveBatch(line["batch"], line["at"]))
            move = Move(line["doc_id"], line["from"], line["to"], line.get("size"), line.get("mtime_ns"))
            (batch.moves if line["op"] == "move" else batch.undone).append(move)
        return list(found.values())

    def set_aside(self) -> set[str]:
        """The paths of files moved away and not put back: scans leave them out."""
        away: dict[str, str] = {}  # doc id -> where it went, batch by batch
        for line in self._lines():
            if line["op"] == "move":
                away[line["doc_id"]] = line["to"]
            elif away.get(line["doc_id"]) == line["from"]:
                del away[line["doc_id"]]
        return set(away.values())

    def _lines(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text("ascii")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as e:
            raise StoreError(f"cannot read the move log {self.path}: {e}") from e
        out = []
        for line in text.splitlines():
            # A line cut short by a crash mid-write (only ever the one in flight) is left out: the
            # file it speaks of is where the move left it, only not in the log.
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and {"op", "batch", "at", "doc_id", "from", "to"} <= entry.keys():
                out.append(entry)
        return out
