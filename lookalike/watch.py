"""Watching folders: file events (or polls) turned into the same incremental index runs, in settled batches.

A :class:`Watcher` keeps a workspace's index equal to some folders until it is told to stop. File
events (watchfiles, through Rust's notify: inotify on Linux) only say *where* to look; what to do is decided by the same
incremental plan `lookalike index` runs (:mod:`lookalike.library.planning`), over the files that
changed and the folders that lost files. So an event that is missed, doubled or out of order costs
at most a look, and the periodic reconcile scan (one also runs at start, which is how a restart
after ``kill -9`` catches up) repairs whatever events never said.

- **Never half a file.** A changed path is indexed only once its size and mtime have stayed the
  same for the settle time; a batch goes only when every change it knows of has settled (bursts are
  debounced into one batch), so a file renamed from one folder into another reaches one index run
  with both its old and new places, and the run can pair them.
- **Polling where events fail.** Folders on network or FUSE filesystems are polled; so is
  everything when ``--poll`` is given, or when the folders outnumber the watches allowed
  (``--max-watches``) or the system's inotify watches run out (said once, with the sysctl).
- **One watcher a workspace.** A lock file in the workspace, held while the watcher runs.

Library code: it reports through :class:`WatchProgress`, and never prints.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import stat
import threading
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from watchfiles import Change

from lookalike.errors import BadInput, LookalikeError, NotFound, StoreError
from lookalike.images import IMAGE_EXTENSIONS
from lookalike.library.planning import IGNORED_FOLDERS, glob_matches
from lookalike.library.types import IndexReport, IndexRequest
from lookalike.store.locks import try_exclusive
from lookalike.store.workspace import within

if TYPE_CHECKING:
    from lookalike.library import Library

# Where events cannot be trusted or ran out, and --poll was not given: a poll every 10 s is one
# stat per file per 10 s (cheap at 100k files), and a photo still appears within seconds.
FALLBACK_POLL_S = 10.0
# How often pending changes are looked at (one stat each): well under a settle time. With none
# pending, the watcher sleeps until a change comes, or IDLE_TICK_S (a stop is seen within it).
TICK_S = 0.2
IDLE_TICK_S = 1.0
# A batch waits for every change it knows of to settle, but not for ever: after this long, the
# settled ones go without the slow ones (a download that takes an hour must not hold up the rest).
MAX_HOLD_S = 20.0
RETRY_S = 30.0  # after an index run failed, the reconcile scan that tries again waits this long (or less)
WATCH_LOCK = "watch.lock"
# Filesystems whose file events miss other machines' writes, or that have none (FUSE may).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "davfs", "afs", "ceph", "glusterfs", "lustre", "fuse", "sshfs"}
)
# Names a file has while it is still being written (browsers, rsync, editors).
TEMPORARY_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", "~")
SYSCTL_HINT = "raise the system's limit with: sudo sysctl fs.inotify.max_user_watches=524288"
OUT_OF_WATCHES = "the system's inotify watches ran out"
RESTART_S = 60.0  # file events that failed for another reason are started again, at most this often
# File events are gathered for this long once one comes (watchfiles' debounce and step): the
# settle time that follows is what keeps half-written files out, this only groups the events. The
# events thread also wakes each step to see whether to stop: twice a second keeps idle CPU down.
EVENTS_DEBOUNCE_MS, EVENTS_STEP_MS = 500, 500


@dataclass(frozen=True)
class WatchRequest:
    """Watch these folders (none: the workspace's indexed folders); ``glob`` and ``batch_size`` as
    for :class:`IndexRequest`. The settle time, polling, reconcile interval and watch limit are
    the options' ``watch_*`` settings."""

    paths: tuple[str, ...] = ()
    glob: str | None = None
    batch_size: int = 16
    background: bool = False  # a server's: searches go on from the old vector index while a new one builds

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(os.path.abspath(os.fspath(p)) for p in self.paths))
        if self.batch_size < 1:
            raise BadInput(f"--batch-size must be at least 1, got {self.batch_size}")


@dataclass
class WatchBatch:
    """One index run the watcher made: a batch of settled changes, or a reconcile scan."""

    kind: Literal["batch", "reconcile"]
    paths: int  # files and folders the run was given
    report: IndexReport
    seconds: float

    @property
    def moved(self) -> int:
        return self.report.moved  # files followed to new paths by content hash, not encoded again

    def summary(self) -> str:
        """One line for a log: "batch of 3 paths: 2 added, 0 updated, 1 moved, ... (0.4s; workspace holds N images)"."""
        r, n = self.report, self.paths
        return (
            f"{self.kind} of {n} path{'s' if n != 1 else ''}: {r.indexed} added, {r.updated} updated, "
            f"{self.moved} moved, {r.removed} removed, {r.skipped_total} skipped "
            f"({self.seconds:.1f}s; workspace holds {r.docs} images)"
        )


class _Observer(Protocol):
    """A thread that turns changes into the watcher's events: :class:`FileEvents` or :class:`FolderPoller`."""

    @property
    def timeout(self) -> float: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class WatchProgress(Protocol):
    """What a caller of :meth:`Watcher.run` implements to tell people what happens."""

    def batch(self, batch: WatchBatch) -> None:
        """An index run finished."""

    def started(self, roots: list[str]) -> None:
        """The watcher holds the workspace's watch lock and watches ``roots``."""

    def note(self, message: str) -> None:
        """Something worth telling once (polling instead of events, and why)."""


def ignored(path: str, root: str) -> bool:
    """Is ``path`` (under ``root``) never to be indexed: hidden, a NAS metadata folder's, or a
    temporary name?"""
    rel = os.path.relpath(path, root)
    parts = [] if rel == "." else rel.split(os.sep)
    if any(p.startswith(".") or p in IGNORED_FOLDERS for p in parts):
        return True
    return bool(parts) and parts[-1].endswith(TEMPORARY_SUFFIXES)


def network_filesystem(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the network or FUSE filesystem ``path`` lies on, or None (a local one, or unknown)."""
    try:
        lines = Path(mountinfo).read_text(errors="replace").splitlines()
    except OSError:
        return None
    real, best, kind = os.path.realpath(path), "", None
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        fstype = line.split(" - ", 1)[1].split()[0]
        if within(real, point) and len(point) >= len(best):
            best, kind = point, fstype
    if kind is None:
        return None
    return kind if kind in NETWORK_FILESYSTEMS or kind.split(".")[0] in NETWORK_FILESYSTEMS else None


def count_folders(roots: Iterable[str], limit: int) -> int:
    """Folders under ``roots`` (each root one), counted up to ``limit + 1``: the watches events need."""
    n = 0
    for root in roots:
        for _, dirnames, _ in os.walk(root):
            n += 1
            if n > limit:
                return n
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in IGNORED_FOLDERS]
    return n


@dataclass
class _Pending:
    signature: tuple[int, int] | None  # (size, mtime_ns) when last looked at
    since: float  # when it last changed
    folder: bool = False


@dataclass
class Changes:
    """The paths that changed and have not been indexed yet, shared by the event threads and the
    watcher's loop. A path is *settled* once its size and mtime have stayed the same for ``settle``
    seconds (a path that is gone, once no event has named it for as long)."""

    settle: float
    touched: dict[str, _Pending] = field(default_factory=dict)
    gone: dict[str, float] = field(default_factory=dict)  # path -> when last named
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Event = field(default_factory=threading.Event)  # set by each change

    def add(self, path: str, now: float, folder: bool = False) -> None:
        with self.lock:
            self.gone.pop(path, None)
            old = self.touched.get(path)
            self.touched[path] = _Pending(old.signature if old else None, now, folder)
        self.arrived.set()

    def remove(self, path: str, now: float) -> None:
        with self.lock:
            self.touched.pop(path, None)
            self.gone[path] = now
        self.arrived.set()

    def __len__(self) -> int:
        return len(self.touched) + len(self.gone)

    def _look(self, now: float) -> list[str]:
        """Stat every touched path; those that have settled. (Under the lock.)"""
        settled = []
        for path, p in list(self.touched.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self.touched[path]
                self.gone[path] = now
                continue
            sig = (st.st_size, st.st_mtime_ns)
            if sig != p.signature:
                p.signature, p.since = sig, now
            elif now - p.since >= self.settle:
                settled.append(path)
        return settled

    def quiet(self, now: float) -> bool:
        """Has every change known settled?"""
        with self.lock:
            settled = self._look(now)
            return len(settled) == len(self.touched) and all(now - t >= self.settle for t in self.gone.values())

    def take(self, now: float) -> tuple[list[str], list[str]]:
        """The settled changes to index now, taken out: (touched paths, paths gone). Nothing until
        every change known has settled, unless one has waited MAX_HOLD_S: then the settled ones
        whose folders hold nothing unsettled."""
        with self.lock:
            settled = set(self._look(now))
            gone = {p for p, t in self.gone.items() if now - t >= self.settle}
            if not settled and not gone:
                return [], []
            if len(settled) < len(self.touched) or len(gone) < len(self.gone):
                held = [now - p.since for p in self.touched.values()] + [now - t for t in self.gone.values()]
                if max(held) < MAX_HOLD_S:
                    return [], []
                busy = [p for p in self.touched if p not in settled]
                gone = {g for g in gone if not any(within(b, os.path.dirname(g)) for b in busy)}
                settled = {s for s in settled if not (self.touched[s].folder and any(within(b, s) for b in busy))}
            for p in settled:
                del self.touched[p]
            for p in gone:
                del self.gone[p]
            return sorted(settled), sorted(gone)


def batch_paths(touched: list[str], gone: list[str], roots: list[str]) -> list[str]:
    """What an index run is given for these changes: the files and folders touched, and for each
    path gone the nearest folder above it that still exists (a scan of it removes what is gone,
    and finds where it went), never above its watched folder (one of ``roots``)."""
    paths = set(touched)
    for path in gone:
        root = next((r for r in roots if within(path, r)), None)
        folder = os.path.dirname(path)
        while root is not None and within(folder, root) and not os.path.isdir(folder):
            folder = os.path.dirname(folder)
        if root is not None and within(folder, root):
            paths.add(folder)
    kept: list[str] = []
    for p in sorted(paths, key=lambda p: (p.count(os.sep), p)):
        if not any(within(p, k) for k in kept):
            kept.append(p)
    return sorted(kept)


class Watcher:
    """Keeps one workspace's index equal to some folders, from :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        library: Library,
        request: WatchRequest,
        progress: WatchProgress,
        lock: AbstractContextManager[object] | None = None,
    ):
        """``lock``: held around each index run (a server's, so that uploads and deletes take turns with it)."""
        self.library, self.request, self.progress = library, request, progress
        self.lock = lock if lock is not None else nullcontext()
        opts = library.options
        self.settle, self.reconcile_s = opts.watch_settle, opts.watch_reconcile
        self.changes = Changes(self.settle)
        self.roots = self._roots()
        # Each root's device: an unmounted drive leaves its mount point behind, an empty folder
        # that must not be taken for a drive whose photos were all deleted.
        self._devices = {r: os.stat(r).st_dev for r in self.roots}
        self._restarted = -float("inf")  # when file events were last started again after failing
        self.busy = False  # an index run is in flight
        self.failed = False  # an index run just failed: a reconcile scan comes a while later
        self.failing = False  # the last index run failed (said once, until one works again)
        self._observers: list[_Observer] = []
        self._events: FileEvents | None = None  # the one using file events, while it works
        self._told: set[str] = set()
        self._stop = threading.Event()

    def _roots(self) -> list[str]:
        ws = os.path.abspath(self.library.workspace.path)
        if self.request.paths:
            for p in self.request.paths:
                if not os.path.isdir(p):
                    raise NotFound(f"no such folder to watch: {p}")
            return list(self.request.paths)
        roots = [r for r in self.library.workspace.roots if os.path.isdir(r) and not within(r, ws)]
        if not roots:
            raise BadInput("nothing to watch: name folders, or index some into this workspace first")
        return roots

    # --- running ----------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Make :meth:`run` return soon (safe from a signal handler or another thread): after the
        index run in flight, if any."""
        self._stop.set()
        self.changes.arrived.set()

    def run(self) -> None:
        """Watch until :meth:`stop`: a reconcile scan first (once the first events had time to
        come), then a batch each time changes settle, and a reconcile scan every interval."""
        ws = Path(self.library.workspace.path)
        with try_exclusive(ws, WATCH_LOCK) as ours:
            if not ours:
                raise StoreError(f"workspace {ws} is already watched by another `lookalike watch` or `serve --watch`")
            self._observe()
            self.progress.started(self.roots)
            try:
                self._loop(self._stop)
            finally:
                for obs in self._observers:
                    obs.stop()
                for obs in self._observers:
                    obs.join(timeout=5)

    def _loop(self, stop: threading.Event) -> None:
        # The first reconcile waits until a file being written has had time to say so.
        polls = [o.timeout for o in self._observers if o is not self._events]
        next_reconcile: float | None = time.monotonic() + max([self.settle, *(p + TICK_S for p in polls)])
        while not stop.is_set():
            now = time.monotonic()
            if self.failed:  # what failed is tried again soon, not at once
                self.failed = False
                wait = min(RETRY_S, self.reconcile_s) if self.reconcile_s > 0 else RETRY_S
                next_reconcile = now + max(self.settle, wait)
            if next_reconcile is not None and now >= next_reconcile and self.changes.quiet(now):
                roots = [r for r in self.roots if self._present(r)]  # an unmounted drive keeps its photos
                if roots:
                    self._index(roots, "reconcile")
                next_reconcile = time.monotonic() + self.reconcile_s if self.reconcile_s > 0 else None
                continue
            touched, gone = self.changes.take(now)
            if touched or gone:
                self._index(batch_paths(touched, gone, self.roots), "batch")
            self._check_events()
            if len(self.changes):
                stop.wait(TICK_S)
            else:
                self.changes.arrived.wait(IDLE_TICK_S)
            self.changes.arrived.clear()

    def _present(self, root: str | None) -> bool:
        """Is this watched folder there, on the device it was on when watching began?"""
        try:
            return root is not None and os.stat(root).st_dev == self._devices[root] and os.path.isdir(root)
        except OSError:
            return False

    def _index(self, paths: list[str], kind: Literal["batch", "reconcile"]) -> None:
        paths = [p for p in paths if self._present(self._root_of(p))]  # never scan an unmounted drive
        if not paths:
            return
        if kind == "reconcile":
            self._check_coverage()
        start = time.monotonic()
        self.busy = True
        request = IndexRequest(
            tuple(paths),
            self.request.glob,
            batch_size=self.request.batch_size,
            background=self.request.background,
            quiet_noop=True,
        )
        try:
            with self.lock:
                report = self.library.index(request)
        except NotFound:
            # Something went between the look and the scan: look again at what is left.
            now = time.monotonic()
            for p in paths:
                (self.changes.add if os.path.exists(p) else self.changes.remove)(p, now)
            return
        except LookalikeError as e:
            # The store or the flow failed (a full disk, a model that would not load): nothing
            # committed is lost; the watcher goes on, and a reconcile scan soon tries again. Said
            # when it starts failing, not at every retry.
            if not self.failing:
                self.progress.note(f"an index run failed: {e}; a reconcile scan tries again shortly")
            self.failed = self.failing = True
            return
        finally:
            self.busy = False
            self._release_memory()
        if self.failing:
            self.failing = False
            self.progress.note("index runs work again")
        self.progress.batch(WatchBatch(kind, len(paths), report, time.monotonic() - start))

    # --- events -------------------------------------------------------------------------------------

    def _root_of(self, path: str) -> str | None:
        return next((r for r in self.roots if within(path, r)), None)

    def _wanted(self, path: str, folder: bool) -> bool:
        root = self._root_of(path)
        if root is None or ignored(path, root) or within(path, os.path.abspath(self.library.workspace.path)):
            return False
        if folder:
            return True
        if self.request.glob is not None:
            return glob_matches(path, root, self.request.glob)
        return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS

    def event(self, kind: Literal["created", "modified", "deleted"], path: str, folder: bool | None) -> None:
        """Take in one change (called from the observers' threads). A rename is its old path
        deleted and its new one created: the batch that scans both pairs them by content hash.
        ``folder`` None: a path gone, of a kind no longer known (a folder if photos were indexed
        under it; a deleted sidecar or document is nothing to scan for)."""
        now = time.monotonic()
        if folder is None:
            if self._wanted(path, False):
                folder = False
            elif self.library.workspace.doc_ids_under([path]):
                folder = True
            else:
                return
        if not self._wanted(path, folder):
            return
        if kind == "deleted":  # a file or a folder (what it was is not known once it is gone)
            self.changes.remove(path, now)
        elif kind == "created" or not folder:  # a folder's own change: its entries' events say what
            self.changes.add(path, now, folder)

    def _observe(self) -> None:
        """Start the observers: events where they can be trusted and suffice, polling elsewhere."""
        poll = self.library.options.watch_poll
        polled = list(self.roots) if poll is not None else []
        evented = [] if poll is not None else list(self.roots)
        for root in list(evented):
            fs = network_filesystem(root)
            if fs is not None:
                self._note(f"{root} is on a network filesystem ({fs}): its file events cannot be trusted; polling it")
                evented.remove(root)
                polled.append(root)
        limit = self.library.options.watch_max_dirs
        if evented and limit is not None and (n := count_folders(evented, limit)) > limit:
            self._out_of_watches(f"more than the {limit} folders --max-watches allows ({n} or more)")
            polled, evented = polled + evented, []
        if evented:
            try:
                events = FileEvents(self, evented)
            except (OSError, RuntimeError) as e:  # no inotify instance or watches left, or another refusal
                self._out_of_watches(_events_failure(e))
                polled += evented
            else:
                events.start()
                self._events = events
                self._observers.append(events)
                self._check_coverage()
        if polled:
            self._poll(polled, poll)

    def _poll(self, roots: list[str], interval: float | None) -> None:
        poller = FolderPoller(self, roots, interval or FALLBACK_POLL_S)
        poller.start()
        self._observers.append(poller)

    def _out_of_watches(self, why: str) -> None:
        self._note(
            f"file events cannot watch every folder: {why}; polling every {FALLBACK_POLL_S:g}s instead "
            f"({SYSCTL_HINT}, or set LOOKALIKE_WATCH_MAX_DIRS / --max-watches)"
        )

    def _check_events(self) -> None:
        """File events that stopped (watches ran out for a new folder) or lost their folder (an
        unmounted drive: its events end with it): poll instead, which sees it come back; say so once."""
        events = self._events
        if events is None:
            return
        gone = [r for r in events.roots if not self._present(r)]
        if not gone and events.is_alive():
            return
        self._events = None
        events.stop()
        now = time.monotonic()
        if not gone and _events_failure(events.error) != OUT_OF_WATCHES and now - self._restarted > RESTART_S:
            # An error that is not about watches (a file name events cannot decode): start again.
            self._restarted = now
            self._start_events(events.roots)
            return
        if gone:
            self._note(
                f"{', '.join(gone)} went away (unmounted?): its photos stay indexed, and the folders "
                f"are polled every {FALLBACK_POLL_S:g}s until it is back"
            )
        else:
            self._out_of_watches(_events_failure(events.error))
        self._poll(self.roots, self.library.options.watch_poll)
        for root in events.roots:  # what was missed meanwhile
            if os.path.isdir(root):
                self.changes.add(root, time.monotonic(), folder=True)

    def _start_events(self, roots: list[str]) -> None:
        """File events on ``roots`` again (polling if they cannot start), and a look at each root
        for what was missed meanwhile."""
        try:
            events = FileEvents(self, roots)
        except (OSError, RuntimeError) as e:
            self._out_of_watches(_events_failure(e))
            self._poll(roots, self.library.options.watch_poll)
        else:
            events.start()
            self._events = events
            self._observers.append(events)
        for root in roots:
            if self._present(root):
                self.changes.add(root, time.monotonic(), folder=True)

    def _check_coverage(self) -> None:
        """File events must watch every folder: one they could not (a folder that cannot be read,
        the watches run out; notify says neither) means polling instead, said once."""
        events = self._events
        watches = _inotify_watches()
        if events is None or watches is None:
            return
        folders = count_folders(events.roots, watches)
        if folders > watches:
            self._events = None
            events.stop()
            self._out_of_watches(
                f"they watch {watches} of the {folders} folders (one cannot be read, or {OUT_OF_WATCHES})"
            )
            self._poll(events.roots, self.library.options.watch_poll)

    def _note(self, message: str) -> None:
        if message not in self._told:
            self._told.add(message)
            self.progress.note(message)

    def _release_memory(self) -> None:
        """Hand what an index run used back to the system before the watcher idles: its flow's
        objects hold cycles (collected), SQLite keeps its page caches, and glibc keeps freed heap
        unless asked (a reconcile of 100,000 files otherwise leaves the process hundreds of MB
        larger for as long as it runs)."""
        try:
            self.library.workspace.store.release_memory()
        except StoreError:
            pass  # the next index run says what is wrong with the store
        _release_heap()


def _release_heap() -> None:
    """Collect cycles, and ask glibc to return the heap it keeps free."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to ask


class FolderPoller(threading.Thread):
    """Polling that keeps one number a folder (its mtime), not a stat of every file (the pollers of
    watchdog and of notify keep each file's: hundreds of bytes a file, too much for 100,000).

    A folder whose mtime moved (a file or folder was created, deleted or renamed in it) goes to the
    watcher as changed, so that the next batch scans it (finding what is new, what is gone and what
    moved), and its files written since the last look go too, to be followed until they settle.
    A file rewritten in place moves no folder's mtime: the reconcile scan finds it."""

    SLACK_NS = 2_000_000_000  # clocks and filesystems round mtimes: look this far back

    def __init__(self, watcher: Watcher, roots: list[str], interval: float):
        super().__init__(name="watch-poll", daemon=True)
        self.watcher, self.roots, self.timeout = watcher, roots, interval
        self.folders: dict[str, int] = {}  # folder -> mtime_ns when last looked at
        self._stop_event = threading.Event()
        self._looked_ns = time.time_ns()

    def run(self) -> None:
        for root in self.roots:
            self._add_tree(root)
        while not self._stop_event.wait(self.timeout):
            self.poll()

    def stop(self) -> None:
        self._stop_event.set()

    def poll(self) -> None:
        """Look at every known folder's mtime once, and for watched folders that went away (an
        unmounted drive) coming back: then the whole of it goes to the next batch."""
        since, self._looked_ns = self._looked_ns - self.SLACK_NS, time.time_ns()
        for root in self.roots:
            if root not in self.folders and os.path.isdir(root) and self._add_tree(root):
                self.watcher.event("created", root, True)
        for folder, mtime in list(self.folders.items()):
            try:
                now = os.stat(folder).st_mtime_ns
            except OSError:  # gone (or unmounted): what it held goes with it
                for f in [f for f in self.folders if within(f, folder)]:
                    del self.folders[f]
                self.watcher.event("deleted", folder, True)
                continue
            if now != mtime:
                self.folders[folder] = now
                self._changed(folder, since)

    def _changed(self, folder: str, since_ns: int) -> None:
        self.watcher.event("created", folder, True)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.path not in self.folders and self._add_tree(entry.path):
                        self.watcher.event("created", entry.path, True)
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime_ns >= since_ns:
                    self.watcher.event("modified", entry.path, False)
            except OSError:
                continue  # gone meanwhile: the folder's scan sees to it

    def _add_tree(self, top: str) -> bool:
        """Remember ``top`` and the folders below it (not hidden, not NAS metadata); False if ignored."""
        root = self.watcher._root_of(top)
        if root is None or (top != root and ignored(top, root)):
            return False
        for dirpath, dirnames, _ in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in IGNORED_FOLDERS]
            try:
                self.folders[dirpath] = os.stat(dirpath).st_mtime_ns
            except OSError:
                continue
        return True


class FileEvents(threading.Thread):
    """File events (watchfiles' Rust notify: inotify on Linux, one watch a folder, added as folders
    are made), handed to the watcher. Each changed path is classified by what is on disk when its
    events arrive, not by their order (a file deleted and made again in one group is there)."""

    timeout = 0.0  # not a poll

    def __init__(self, watcher: Watcher, roots: list[str]):
        """Watch ``roots`` (every folder below them): raises OSError if the system refuses."""
        from watchfiles._rust_notify import RustNotify

        super().__init__(name="watch-events", daemon=True)
        self.watcher, self.roots = watcher, roots
        self.error: BaseException | None = None  # why the events ended, if they did
        self._stop_event = threading.Event()
        # Folders that cannot be read are the scan's to report; their events are not needed.
        self._notify = RustNotify(roots, False, False, 0, True, True)

    def run(self) -> None:
        try:
            while True:
                got = self._notify.watch(EVENTS_DEBOUNCE_MS, EVENTS_STEP_MS, 0, self._stop_event)
                if got == "stop":
                    return
                if isinstance(got, set):
                    for change, path in sorted(got, key=lambda c: c[1]):
                        self._hand_over(change, path)
        except Exception as e:  # noqa: BLE001 - whatever ended the events, the watcher polls instead
            self.error = e
        finally:
            self._notify.close()

    def _hand_over(self, change: int, path: str) -> None:
        try:
            folder = stat.S_ISDIR(os.stat(path, follow_symlinks=False).st_mode)
        except OSError:
            self.watcher.event("deleted", path, None)
            return
        self.watcher.event("modified" if change == Change.modified else "created", path, folder)

    def stop(self) -> None:
        self._stop_event.set()


def _events_failure(e: BaseException | None) -> str:
    """Why file events could not watch every folder, in words."""
    text = str(e or "")
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "MaxFilesWatch" in text:
        return OUT_OF_WATCHES
    if (isinstance(e, OSError) and e.errno == errno.EMFILE) or "Too many open files" in text:
        return "no inotify instance or file descriptor left (raise fs.inotify.max_user_instances, or ulimit -n)"
    return f"file events failed ({text or type(e).__name__})"


def _inotify_watches() -> int | None:
    """How many inotify watches this process holds (None where /proc cannot say)."""
    try:
        fds = os.listdir("/proc/self/fdinfo")
    except OSError:
        return None
    n = 0
    for fd in fds:
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                n += sum(1 for line in f if line.startswith("inotify wd:"))
        except OSError:
            continue
    return n
