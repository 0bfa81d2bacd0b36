"""What the loader and the folder scan will open: regular files only, never whole past the limit."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from lookalike.document import Document
from lookalike.errors import BadInput
from lookalike.executors.loader import ImageReader
from lookalike.library.planning import entry_problem, scan


def _read(path: Path, **params) -> Document:
    doc = Document.from_path(path)
    done = threading.Event()

    def go() -> None:
        ImageReader(params).read([doc])
        done.set()

    threading.Thread(target=go, daemon=True).start()
    assert done.wait(10), f"reading {path} did not return"  # a FIFO must never block the loader
    return doc


def test_the_loader_reads_a_regular_file_with_its_digest(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(b"x" * 1000)
    doc = _read(path)
    assert doc.error is None and doc.blob == b"x" * 1000 and doc.size == 1000
    assert doc.content_hash == hashlib.sha256(b"x" * 1000).hexdigest()


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda p: os.mkfifo(p), "not a regular file", "FIFO"),
        (lambda p: os.symlink("/dev/zero", p), "not a regular file", "character device"),
        (lambda p: os.symlink(p.parent / "nowhere", p), "dangling symlink", "dangling symlink"),
        (lambda p: os.symlink(p, p), "symlink loop", "symbolic links"),
        (lambda p: p.write_bytes(b"x" * 3000), "too large", "over the 0.001 MB limit"),
    ],
    ids=["fifo", "dev-zero", "dangling", "loop", "too-large"],
)
def test_the_loader_refuses_what_is_not_a_small_regular_file(tmp_path, make, reason, words):
    path = tmp_path / "bad.jpg"
    make(path)
    doc = _read(path, max_file_mb=0.001)
    assert doc.error_reason == reason and words in (doc.error or "")
    assert doc.blob is None and not doc.input_fault  # nothing read, and nothing to remember


def test_the_scan_lists_what_it_will_not_open_and_why(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.jpg").write_bytes(b"jpeg")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "no.jpg").write_bytes(b"jpeg")
    (root / "notes.txt").write_text("not an image by name")
    os.mkfifo(root / "pipe.png")
    os.symlink(root / "sub", root / "linked")
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    name = os.fsdecode(bytes(root) + b"/\xff\xfe.jpg")
    Path(name).write_bytes(b"jpeg")
    found = scan([root])
    assert found.files == sorted([str(root / "sub" / "ok.jpg"), name])
    reasons = {os.path.basename(u.path): u.reason for u in found.unusable}
    assert reasons == {
        "pipe.png": "not a regular file",
        "linked": "symlink to a folder",
        "dangling.jpg": "dangling symlink",
    }
    assert entry_problem(str(root / "sub" / "ok.jpg")) is None


def test_a_query_that_is_a_fifo_is_a_clear_error(tmp_path):
    import lookalike
    from lookalike import Options, SearchRequest

    os.mkfifo(tmp_path / "q.jpg")
    with lookalike.open(Options(workspace=tmp_path / "ws")) as library:
        with pytest.raises(BadInput, match="FIFO"):
            library.search(SearchRequest(image=str(tmp_path / "q.jpg")))
