"""The lock a workspace (or one shard's folder) is taken with, for moments, never for a run."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lookalike.errors import StoreError

# How long to wait for another process's moment with the workspace lock before giving up. The
# lock is held for milliseconds (a manifest write) up to a snapshot write, or a rebuild, of a
# large shard.
LOCK_TIMEOUT_S = 120.0


@contextmanager
def exclusive(path: Path, timeout: float = LOCK_TIMEOUT_S, name: str = "lock") -> Iterator[None]:
    """The workspace lock (or its lock ``name``), held for a moment (never for a process's
    lifetime); waits its turn."""
    try:
        fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot open the lock of workspace {path}: {e.strerror or e}") from e
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock workspace {path}: {e.strerror or e}") from e
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
                    raise StoreError(
                        f"workspace {path} stayed locked by pid {holder} for {timeout:.0f}s; is it stuck?"
                    ) from e
                time.sleep(0.02)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass  # the pid is only for the message above; a full disk must not stop us here
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def try_exclusive(path: Path, name: str) -> Iterator[bool]:
    """``path/name`` locked for the block if no other holder has it (True), else at once False.
    For work that one holder should do while others wait for its result (building an index)."""
    try:
        fd = os.open(path / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise StoreError(f"cannot open the lock {path / name}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise StoreError(f"cannot lock {path / name}: {e.strerror or e}") from e
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
