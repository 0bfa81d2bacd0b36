"""ImageReader: reads each document's file (bytes, size, mtime, content hash).

Only regular files are ever read. A FIFO, socket or device (or a symlink to one) is refused from
its ``fstat`` before a byte is read, so ``/dev/zero`` cannot fill memory and a FIFO cannot hang
the flow; the open itself is non-blocking for the same reason. No read is ever larger than the
size limit.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat

from pydantic import Field

from lookalike.document import Document, Request
from lookalike.executors.base import Executor, requests
from lookalike.metadata import read_metadata

# What each non-regular file type is called in a skip message.
FILE_TYPES = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def file_type(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO (named pipe)", ...)."""
    return FILE_TYPES.get(stat.S_IFMT(mode), "not a regular file")


def size_limit_message(size: int, limit_mb: float) -> str:
    """Both sides in the unit the limit is applied in (MiB, shown as MB), precise enough that a
    file just over the limit never reads as equal to it."""
    mb = size / 1024 / 1024
    shown = f"{mb:.1f}" if mb >= 10 * limit_mb or mb - limit_mb >= 0.05 else f"{mb:.4f}"
    return f"{shown} MB is over the {limit_mb:g} MB limit ({size:,} bytes; the loader's max_file_mb)"


class ImageReader(Executor):
    class Params(Executor.Params):
        max_file_mb: float = Field(default=200.0, gt=0, description="files larger than this are skipped")

    params: Params

    @requests(on=["index", "search"])
    def read(self, docs: list[Document], request: Request | None = None) -> None:
        """Read each document's bytes; on indexing, also what the camera recorded in its header."""
        limit = int(self.params.max_file_mb * 1024 * 1024)
        for doc in docs:
            if doc.chunks and all(c.embedding is not None for c in doc.chunks):
                continue  # arrived encoded (e.g. "more like this" an indexed image): nothing to read
            if doc.blob is None and doc.uri is not None:
                self._read_file(doc, limit)
            elif doc.blob is not None:
                if len(doc.blob) > limit:
                    doc.fail(size_limit_message(len(doc.blob), self.params.max_file_mb), "too large")
                    continue
                doc.size = len(doc.blob)
                doc.content_hash = doc.content_hash or hashlib.sha256(doc.blob).hexdigest()
            else:
                doc.fail("document has neither a file nor bytes", "no content")
            if request is not None and request.kind == "index" and doc.blob is not None and doc.error is None:
                doc.meta = read_metadata(doc.blob, doc.uri, doc.mtime_ns).to_dict()

    def _read_file(self, doc: Document, limit: int) -> None:
        assert doc.uri is not None
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; it changes nothing for files.
            fd = os.open(doc.uri, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            what = "dangling symlink" if os.path.islink(doc.uri) else "missing file"
            doc.fail("file disappeared before it was read" if what == "missing file" else what, what)
            return
        except OSError as e:
            reason = "symlink loop" if e.errno == errno.ELOOP else "unreadable file"
            doc.fail(f"cannot open: {e.strerror or e}", reason)
            return
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                st = os.fstat(f.fileno())  # size and mtime of exactly what we read
                if not stat.S_ISREG(st.st_mode):
                    doc.fail(f"is {file_type(st.st_mode)}, not a regular file", "not a regular file")
                    return
                if st.st_size > limit:
                    doc.fail(size_limit_message(st.st_size, self.params.max_file_mb), "too large")
                    return
                blob = _read_at_most(f, limit + 1)
                after = os.fstat(f.fileno())
        except OSError as e:
            doc.fail(f"cannot read: {e.strerror or e}", "unreadable file")
            return
        if len(blob) > limit:
            doc.fail(size_limit_message(len(blob), self.params.max_file_mb), "too large")
            return
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or len(blob) != st.st_size:
            # Written to while we read: what we hold may be half old, half new. The next run reads it.
            doc.fail("the file changed while it was being read", "changed while reading")
            return
        doc.blob = blob
        doc.size = st.st_size
        doc.mtime_ns = st.st_mtime_ns
        doc.content_hash = hashlib.sha256(blob).hexdigest()


def _read_at_most(f, n: int) -> bytes:
    """Up to ``n`` bytes: raw reads may return short, so loop until EOF or ``n``."""
    parts, got = [], 0
    while got < n:
        chunk = f.read(min(n - got, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
