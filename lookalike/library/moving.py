"""Moving files out of the collection (duplicates, into a folder the user names), and back.

lookalike never deletes a user's file. Resolving duplicates by their files moves them: into a
folder inside the indexed folders, or into the workspace's trash folder (``<workspace>/trash``
unless the caller names another, as ``lookalike serve --trash`` does). Each file's move is logged
as soon as it is made (:mod:`lookalike.store.moves`; a crash in between leaves the file in the
folder it was moved to, only not in the log), the moved documents leave the index, and an undo puts
a batch back at the paths it came from and indexes it there again.

The rules, each refused with a :class:`BadInput` that says why, before anything moves:

- the destination is resolved with every link followed (``os.path.realpath``) and must then lie in
  an indexed folder or in the trash folder: ``..``, a path elsewhere, a link that leads out, a file,
  the workspace's own folder are refused; a relative destination is taken inside the trash folder;
- every file must still be what was indexed (the same size and mtime), a regular file, in place;
- nothing is ever overwritten: a name already taken gets a suffix (``name-1.jpg``), and the file is
  linked to its new name (which fails rather than replaces) before its old name goes;
- across filesystems a file is copied (to a new name that no other file holds), flushed to disk,
  checked against the indexed content hash, and only then its original removed.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookalike.digest import file_sha256
from lookalike.document import display_path
from lookalike.errors import BadInput, NotFound, StoreError
from lookalike.library.indexing import Indexer
from lookalike.library.types import IndexReport, IndexRequest
from lookalike.store.docstore import StoredDoc
from lookalike.store.locks import exclusive
from lookalike.store.moves import Move, MoveBatch, MoveLog, new_batch_id
from lookalike.store.workspace import Workspace, within

TRASH = "trash"  # the trash folder's name inside the workspace, unless the caller names another
MAX_SUFFIX = 10_000  # name-1.jpg ... : far more look-alikes of one name than any folder holds


@dataclass
class MoveReport:
    """What a move (or an undo) did: its batch, and each file's old and new path."""

    batch: str
    moves: list[Move] = field(default_factory=list)
    undo: bool = False  # these moves put a batch back
    index: IndexReport | None = None  # an undo's re-indexing of the files put back

    def to_dict(self) -> dict[str, Any]:
        shown = [{"doc_id": m.doc_id, "from": display_path(m.source), "to": display_path(m.target)} for m in self.moves]
        return {"batch": self.batch, "undo": self.undo, "moved": len(self.moves), "moves": shown}


class Mover:
    """Moves documents' files out of one workspace's collection, logged and undoable."""

    def __init__(self, workspace: Workspace, indexer: Indexer):
        self.workspace, self.indexer = workspace, indexer
        self.log = MoveLog(workspace.path)

    def move(
        self, doc_ids: Iterable[str], folder: str, trash: str | os.PathLike | None = None, *, background: bool = False
    ) -> MoveReport:
        """Move these documents' files into ``folder`` (see the module for the rules) and take them
        out of the index. ``background``: leave the index flow running (a server)."""
        self._check_writer()
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            raise BadInput("name at least one document to move")
        found = self.workspace.store.get_docs(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"no indexed document {missing[0]!r}")
        target = self.destination(folder, trash)
        docs = [found[i] for i in ids]
        for doc in docs:
            _check_source(doc, target)
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(f"cannot create the folder {display_path(str(target))}: {e.strerror or e}") from e
        report = MoveReport(new_batch_id())
        try:
            with exclusive(self.workspace.path):  # one mover at a time: a name chosen is a name kept
                for doc in docs:
                    report.moves.append(self._move_one(report.batch, doc, target))
        except BadInput as e:
            if not report.moves:
                raise
            raise BadInput(
                f"{e}; the {len(report.moves)} files moved before it are batch {report.batch} "
                f"(`lookalike dupes --undo {report.batch}` puts them back)"
            ) from e
        finally:
            # Outside the lock: the commit's shard snapshots take it themselves.
            if report.moves:
                self.indexer.delete_ids([m.doc_id for m in report.moves], background=background)
        return report

    def _move_one(self, batch: str, doc: StoredDoc, folder: Path) -> Move:
        assert doc.uri is not None  # _check_source saw its file
        target = _transfer(doc.uri, folder, doc.content_hash)
        move = Move(doc.id, doc.uri, str(target), doc.size, doc.mtime_ns)
        self.log.append("move", batch, move)
        return move

    def undo(self, batch: str | None = None, *, background: bool = False) -> MoveReport:
        """Put a batch's files back where they were (by default the latest batch not yet undone) and
        index them there again. A path taken meanwhile is not overwritten: the file comes back beside
        it with a suffix. A file no longer where the move put it is refused, and nothing moves."""
        self._check_writer()
        chosen = self._batch(batch)
        back = {m.doc_id for m in chosen.undone}
        todo = [m for m in chosen.moves if m.doc_id not in back]
        for m in todo:
            try:
                st = os.lstat(m.target)
            except OSError:
                raise BadInput(f"{display_path(m.target)} is gone: batch {chosen.batch} cannot be undone") from None
            if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (m.size, m.mtime_ns):
                raise BadInput(f"{display_path(m.target)} changed since it was moved: put it back by hand")
        report = MoveReport(chosen.batch, undo=True)
        with exclusive(self.workspace.path):
            for m in todo:
                original = Path(m.source)
                original.parent.mkdir(parents=True, exist_ok=True)
                restored = _transfer(m.target, original.parent, None, name=original.name)
                report.moves.append(Move(m.doc_id, m.target, str(restored), m.size, m.mtime_ns))
                self.log.append("undo", chosen.batch, report.moves[-1])
        if report.moves:
            request = IndexRequest(tuple(m.target for m in report.moves), background=background)
            report.index = self.indexer.index(request)
        return report

    def _check_writer(self) -> None:
        # Before any file moves: a reader could move files but not take them out of the index.
        if not self.workspace.writer:
            raise StoreError("this workspace was opened read-only: open it for writing to move files")

    def _batch(self, batch: str | None) -> MoveBatch:
        batches = self.log.batches()
        if batch is None:
            still = [b for b in batches if b.open]
            if not still:
                raise NotFound("nothing to undo: no files were moved, or every move was undone")
            return still[-1]
        chosen = next((b for b in batches if b.batch == batch), None)
        if chosen is None:
            raise NotFound(f"no move batch {batch!r} (`lookalike dupes --moves` lists them)")
        if not chosen.open:
            raise BadInput(f"batch {batch} was already undone")
        return chosen

    def destination(self, folder: str, trash: str | os.PathLike | None = None) -> Path:
        """The folder ``folder`` names, checked (see the module); it may not exist yet."""
        trash_dir = Path(os.path.abspath(trash if trash is not None else self.workspace.path / TRASH))
        if not folder.strip() or "\x00" in folder:
            raise BadInput("name the folder to move the files into")
        if ".." in Path(folder).parts:
            raise BadInput(f"{display_path(folder)}: a destination may not climb out with '..'")
        named = Path(os.path.abspath(os.path.join(trash_dir, folder)))  # an absolute folder stays as it is
        real = Path(os.path.realpath(named))
        allowed = [os.path.realpath(trash_dir), *(os.path.realpath(r) for r in self.workspace.roots)]
        inside = any(within(str(real), a) for a in allowed)
        workspace = os.path.realpath(self.workspace.path)
        if within(str(real), workspace) and not within(str(real), allowed[0]):
            raise BadInput(
                f"{display_path(folder)} is inside the workspace {display_path(workspace)}, not a folder of photos"
            )
        if not inside and any(within(str(named), a) for a in allowed):
            raise BadInput(f"{display_path(folder)} leads out of the indexed folders through a symbolic link")
        if not inside:
            raise BadInput(
                f"{display_path(folder)} is outside the indexed folders and the trash folder "
                f"{display_path(str(trash_dir))}: move files only within them"
            )
        if real.exists() and not real.is_dir():
            raise BadInput(f"{display_path(folder)} is a file, not a folder")
        return real

    def moves(self) -> list[MoveBatch]:
        """Every batch of the log, oldest first, with what an undo has put back."""
        return self.log.batches()

    def set_aside(self) -> set[str]:
        return self.log.set_aside()


def _check_source(doc: StoredDoc, folder: Path) -> None:
    """Refuse a document whose file is gone, changed since it was indexed, or is no regular file."""
    where = display_path(doc.uri or doc.id)
    try:
        st = os.lstat(doc.uri) if doc.uri else None
    except OSError:
        st = None
    if st is None:
        raise BadInput(f"{where} is gone: run `lookalike index` to bring the index up to date; nothing was moved")
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"{where} is not a regular file (a link?); nothing was moved")
    if (st.st_size, st.st_mtime_ns) != (doc.size, doc.mtime_ns):
        raise BadInput(f"{where} changed since it was indexed: run `lookalike index` first; nothing was moved")
    if Path(doc.uri or "").parent.resolve() == folder:
        raise BadInput(f"{where} is already in {display_path(str(folder))}; nothing was moved")


def _transfer(source: str, folder: Path, content_hash: str | None, name: str | None = None) -> Path:
    """Move ``source`` into ``folder`` under its name (or ``name``), never over another file: the
    new path. Within a filesystem a hard link then an unlink (a link fails where a name is taken,
    a rename would replace it); across filesystems a verified copy (see :func:`_copy`)."""
    stem, suffix = os.path.splitext(name or os.path.basename(source))
    for n in range(MAX_SUFFIX):
        target = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.link(source, target, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise BadInput(f"cannot move {display_path(source)}: {e.strerror or e}") from e
            if not _copy(source, target, content_hash):
                continue  # the name was taken meanwhile
        try:
            os.unlink(source)
        except OSError as e:
            target.unlink(missing_ok=True)  # the source stays: one file, where it was
            raise BadInput(f"cannot move {display_path(source)}: {e.strerror or e}") from e
        return target
    raise BadInput(f"no free name for {display_path(source)} in {display_path(str(folder))}")


def _copy(source: str, target: Path, content_hash: str | None) -> bool:
    """Copy ``source`` to the new file ``target`` (False if that name is taken), flushed to disk, with
    its times; raise if the copy does not hold the source's bytes (the copy is removed, the source kept)."""
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileExistsError:
        return False
    try:
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, target)
        if file_sha256(target) != (content_hash or file_sha256(source)):
            raise OSError(errno.EIO, "the copy does not match the original")
    except OSError as e:
        target.unlink(missing_ok=True)
        raise BadInput(f"cannot copy {display_path(source)} to {display_path(str(target))}: {e.strerror or e}") from e
    return True
