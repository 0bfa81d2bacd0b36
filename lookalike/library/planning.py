"""What indexing has to do: the image files under some folders, met with the doc store.

Planning only reads. Files whose size and mtime are unchanged are not looked at; files whose bytes
are unchanged (their digest says so) are only to be re-stamped; a new file with the bytes of a
document whose file is gone is that document, renamed or moved, and is to be followed there; other
new and changed files are to be encoded; documents whose files are gone are to be removed. The
plan says so as data, and the indexer (:mod:`lookalike.library.indexing`) does it.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lookalike.digest import file_sha256
from lookalike.document import display_path
from lookalike.errors import NotFound
from lookalike.executors.loader import file_type
from lookalike.images import IMAGE_EXTENSIONS
from lookalike.store.docstore import DocStore, Relocation
from lookalike.store.workspace import within

FileStatus = Literal["new", "updated"]
# NAS and OS metadata folders: thumbnails and trash that are not the user's photos (never scanned,
# like hidden folders; `lookalike watch` ignores their events too).
IGNORED_FOLDERS = frozenset(
    {"@eaDir", "#recycle", "#snapshot", "@Recycle", "$RECYCLE.BIN", "System Volume Information", "lost+found"}
)


# Why an entry that is there could not be read: its documents stay (see :func:`plan_index`).
UNREADABLE = frozenset({"unreadable folder", "unreadable file"})


@dataclass
class Unusable:
    """A directory entry that is never opened as an image, and why (reported as a skip)."""

    path: str
    reason: str  # short category, for the summary
    message: str


@dataclass
class Scan:
    files: list[str]  # regular files to consider, sorted
    roots: list[str]  # the paths asked for, absolute
    unusable: list[Unusable]
    set_aside: int = 0  # files left out: moved there by `lookalike dupes --move-to`


@dataclass
class PlannedFile:
    path: str
    status: FileStatus
    size: int
    mtime_ns: int


@dataclass
class Plan:
    """What indexing has to do. Nothing is written while it is made."""

    roots: list[str]  # the folders and files asked for, absolute (the workspace remembers them)
    todo: list[PlannedFile] = field(default_factory=list)  # to encode
    removed: list[str] = field(default_factory=list)  # doc ids whose files are gone
    relocate: list[Relocation] = field(default_factory=list)  # gone documents found at a new path
    unchanged: int = 0
    restamp: list[tuple[str, int, int]] = field(default_factory=list)  # (doc id, mtime_ns, size): same bytes
    still_bad: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, message)
    forget: list[str] = field(default_factory=list)  # remembered bad files that are gone
    unusable: list[Unusable] = field(default_factory=list)  # never opened: not regular files, ...
    set_aside: int = 0  # files the scan left out: moved as duplicates (the workspace's move log)

    @property
    def scanned(self) -> int:
        return len(self.todo) + len(self.relocate) + self.unchanged + len(self.still_bad) + len(self.unusable)


def entry_problem(path: str) -> Unusable | None:
    """Why ``path`` cannot be read as an image without opening it, or None for a regular file.

    FIFOs, sockets, devices and symlinks to them are never opened (a FIFO would block, /dev/zero
    would fill memory); dangling symlinks and loops are named as such.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            target = display_path(os.readlink(path))
            return Unusable(path, "dangling symlink", f"dangling symlink to {target} (its target does not exist)")
        return Unusable(path, "missing file", "file disappeared before it was read")
    except OSError as e:
        if e.errno == errno.ELOOP:
            return Unusable(path, "symlink loop", "symlink loop: the link leads back to itself")
        return Unusable(path, "unreadable file", f"cannot read: {e.strerror or e}")
    if stat.S_ISREG(st.st_mode):
        if not os.access(path, os.R_OK):
            return Unusable(path, "unreadable file", "cannot read: permission denied")
        return None
    what = file_type(st.st_mode)
    if os.path.islink(path):
        target = display_path(os.path.realpath(path))
        if stat.S_ISDIR(st.st_mode):
            return Unusable(path, "symlink to a folder", f"symlink to the folder {target}, not followed")
        return Unusable(path, "not a regular file", f"symlink to {what} ({target}), never opened")
    return Unusable(path, "not a regular file", f"is {what}, never opened")


def _unreadable(unusable: dict[str, Unusable], top: str, e: OSError) -> None:
    where = e.filename if isinstance(e.filename, str) else top
    unusable[where] = Unusable(where, "unreadable folder", f"cannot list folder: {e.strerror or e}")


class _Walk:
    """The files and unusable entries found under the paths asked for."""

    def __init__(self, glob: str | None, excluded: set[str], set_aside: set[str]):
        self.glob, self.excluded, self.set_aside = glob, excluded, set_aside
        self.left_out = 0
        self.files: set[str] = set()
        self.unusable: dict[str, Unusable] = {}

    def consider(self, full: str) -> None:
        problem = entry_problem(full)
        if problem is None:
            self.files.add(full)
        else:
            self.unusable[full] = problem

    def folder(self, root: str) -> None:
        """Walk ``root`` without following symlinked folders (no loops), skipping hidden ones, NAS
        metadata ones (@eaDir, #recycle, ...) and the excluded (the workspace)."""
        aside = self.set_aside
        real = os.path.realpath(root)
        if aside and real != root:  # a root reached through a link: the log holds real paths
            prefix = real.rstrip(os.sep) + os.sep
            aside = aside | {os.path.join(root, p[len(prefix) :]) for p in aside if p.startswith(prefix)}
        for dirpath, dirnames, filenames in os.walk(root, onerror=functools.partial(_unreadable, self.unusable, root)):
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if d.startswith(".") or d in IGNORED_FOLDERS or full in self.excluded:
                    continue
                if os.path.islink(full):  # os.walk does not descend into it; say so
                    self.consider(full)
                else:
                    keep.append(d)
            dirnames[:] = keep
            for name in filenames:
                full = os.path.join(dirpath, name)
                if full in aside:
                    self.left_out += 1
                elif not name.startswith(".") and self.wanted(full, root, name):
                    self.consider(full)

    def wanted(self, full: str, root: str, name: str) -> bool:
        if self.glob is not None:
            return glob_matches(full, root, self.glob)
        return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan(
    paths: Iterable[str | os.PathLike],
    glob: str | None = None,
    exclude: Iterable[Path] = (),
    set_aside: Iterable[str] = (),
) -> Scan:
    """The image files under ``paths``, and the entries that cannot be used, with why.

    Directories are walked recursively without following symlinked folders (no loops), skipping
    hidden ones, ``exclude`` (the workspace) and the files ``set_aside`` (moved out of the collection
    as duplicates: an undo, not the next index run, brings them back). Without ``glob``, files are
    chosen by extension; with it, by matching their name or path. A path named directly is always
    considered.
    """
    walk = _Walk(glob, {os.path.abspath(e) for e in exclude}, set(set_aside))
    roots: list[str] = []
    for p in paths:
        path = os.path.abspath(os.fspath(p))
        if not os.path.lexists(path):
            raise NotFound(f"no such file or directory: {display_path(os.fspath(p))}")
        roots.append(path)
        if os.path.isdir(path):
            walk.folder(path)
        else:
            walk.consider(path)
    return Scan(sorted(walk.files), roots, sorted(walk.unusable.values(), key=lambda u: u.path), walk.left_out)


def plan_index(
    store: DocStore,
    found: Scan,
    *,
    glob: str | None = None,
    limit: int | None = None,
    retry_skipped: bool = False,
) -> Plan:
    """What indexing ``found`` has to do, decided from the files' size, mtime and content.

    A file remembered as bad (its bytes could not be decoded) is not read again while its size and
    mtime stay the same, unless ``retry_skipped``. With ``limit``, files beyond it are not looked
    at, and nothing is removed.
    """
    files = found.files[:limit] if limit is not None else found.files
    plan = Plan(found.roots, unusable=list(found.unusable), set_aside=found.set_aside)
    stats = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            plan.unusable.append(Unusable(path, "missing file", "file disappeared before it was read"))
            continue
        stats.append((path, st.st_size, st.st_mtime_ns))
    # The scan meets the doc store in SQL (a temporary table joined on the uri index): only the
    # files that changed, and the documents that are gone, ever come back into Python.
    with store.scanned(stats):
        changed = store.changed_files()
        plan.unchanged = len(stats) - len(changed)
        for f in changed:
            if f.doc_id is None and f.skip is not None and not retry_skipped and f.skip[:2] == (f.size, f.mtime_ns):
                plan.still_bad.append((f.path, f.skip[2], f.skip[3]))
            elif f.doc_id is None:
                plan.todo.append(PlannedFile(f.path, "new", f.size, f.mtime_ns))
            elif f.content_hash is not None and _sha256(f.path) == f.content_hash:
                plan.restamp.append((f.doc_id, f.mtime_ns, f.size))  # same bytes: nothing to encode
                plan.unchanged += 1
            else:
                plan.todo.append(PlannedFile(f.path, "updated", f.size, f.mtime_ns))
        if limit is None:
            roots, held = found.roots, _unreadable_now(found.unusable)
            plan.removed = [
                d for d, uri in store.unscanned_docs(roots) if matches(uri, roots, glob) and not _under(uri, held)
            ]
            plan.forget = [u for u in store.unscanned_skips(roots) if matches(u, roots, glob)]
            _pair_moves(store, plan)
    return plan


def _unreadable_now(unusable: list[Unusable]) -> list[str]:
    """The folders and files the scan could not read that are still there (a permission taken
    away, a failing disk): their documents are kept, not removed as gone, until they can be read."""
    return [u.path for u in unusable if u.reason in UNREADABLE and os.path.lexists(u.path)]


def _under(path: str, tops: list[str]) -> bool:
    return any(within(path, t) for t in tops)


def _pair_moves(store: DocStore, plan: Plan) -> None:
    """Follow renamed and moved files: a new file with the size and digest of a document whose file
    is gone is that document at a new path (relocated, not encoded; not removed). One gone document
    pairs with one new file at most, so a copy beside a file that stayed is a new document.

    Only the gone documents' sizes are looked at; a new file is read (its digest) only when its size
    is one of theirs. A run with nothing removed pays nothing.
    """
    if not plan.removed or not any(f.status == "new" for f in plan.todo):
        return
    by_size: dict[int, list[tuple[str, str]]] = {}
    for doc_id, (size, content_hash) in store.content_keys(plan.removed).items():
        by_size.setdefault(size, []).append((doc_id, content_hash))
    paired: set[str] = set()
    todo = []
    for f in plan.todo:
        gone = by_size.get(f.size, []) if f.status == "new" else []
        digest = _sha256(f.path) if gone else None
        match = next((d for d, h in gone if h == digest and d not in paired), None) if digest else None
        if match is None:
            todo.append(f)
            continue
        paired.add(match)
        plan.relocate.append(Relocation(match, f.path, f.size, f.mtime_ns))
    plan.todo = todo
    plan.removed = [d for d in plan.removed if d not in paired]


def _sha256(path: str) -> str | None:
    """The file's digest, or None if it cannot be read (then it is re-indexed, and fails there)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def matches(uri: str, roots: list[str], glob: str | None) -> bool:
    """Is ``uri`` one of ``roots`` or under one, and (with ``glob``) matched by it?"""
    for root in roots:
        if uri == root:
            return True
        if within(uri, root) and (glob is None or glob_matches(uri, root, glob)):
            return True
    return False


def glob_matches(path: str, root: str, glob: str) -> bool:
    """--glob matches a file's name or its path relative to the scanned folder."""
    return fnmatch.fnmatch(os.path.basename(path), glob) or fnmatch.fnmatch(os.path.relpath(path, root), glob)
