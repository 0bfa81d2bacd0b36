"""ImageReader: reads each document's file (bytes, size, mtime, content hash)."""

from __future__ import annotations

import hashlib
import os

from pydantic import Field

from lookalike.document import Document
from lookalike.executors.base import Executor, requests


class ImageReader(Executor):
    class Params(Executor.Params):
        max_file_mb: float = Field(default=200.0, gt=0, description="files larger than this are skipped")

    params: Params

    @requests(on=["index", "search"])
    def read(self, docs: list[Document]) -> None:
        limit = int(self.params.max_file_mb * 1024 * 1024)
        for doc in docs:
            if doc.chunks and all(c.embedding is not None for c in doc.chunks):
                continue  # arrived encoded (e.g. "more like this" an indexed image): nothing to read
            if doc.blob is None and doc.uri is not None:
                self._read_file(doc, limit)
            elif doc.blob is not None:
                if len(doc.blob) > limit:
                    doc.fail(
                        f"{len(doc.blob) / 1e6:.1f} MB is over the {self.params.max_file_mb:g} MB limit", "too big"
                    )
                    continue
                doc.size = len(doc.blob)
                doc.content_hash = doc.content_hash or hashlib.sha256(doc.blob).hexdigest()
            else:
                doc.fail("document has neither a file nor bytes", "no content")

    @staticmethod
    def _read_file(doc: Document, limit: int) -> None:
        assert doc.uri is not None
        try:
            with open(doc.uri, "rb") as f:
                st = os.fstat(f.fileno())  # size and mtime of exactly what we read
                if st.st_size > limit:
                    doc.fail(f"{st.st_size / 1e6:.1f} MB is over the {limit / 1024 / 1024:g} MB limit", "too big")
                    return
                blob = f.read()
        except FileNotFoundError:
            doc.fail("file disappeared before it was read", "missing file")
            return
        except IsADirectoryError:
            doc.fail("is a directory", "not a file")
            return
        except OSError as e:
            doc.fail(f"cannot read: {e.strerror or e}", "unreadable file")
            return
        doc.blob = blob
        doc.size = st.st_size
        doc.mtime_ns = st.st_mtime_ns
        doc.content_hash = hashlib.sha256(blob).hexdigest()
