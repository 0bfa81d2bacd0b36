"""Browsing a collection: what it holds by month, folder, camera and format, with photo counts.

A page builds its timeline, folder tree and filter choices from these; each answer is counted once
a commit (the store's generation) and kept until the next.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from lookalike.document import display_path
from lookalike.errors import NotFound
from lookalike.filters import Filters
from lookalike.store.workspace import Workspace

TIMELINES_KEPT = 64  # timelines of different filters kept until the next commit (the oldest goes first)


@dataclass(frozen=True)
class MonthCount:
    month: str  # "YYYY-MM", of the local date taken
    photos: int


@dataclass(frozen=True)
class FolderCount:
    path: str
    photos: int  # in it and every folder below it
    folders: int  # folders directly below it that hold photos


@dataclass
class Facets:
    """The values a filter can take in this collection, each with how many photos it keeps."""

    photos: int
    cameras: list[tuple[str, int]] = field(default_factory=list)
    formats: list[tuple[str, int]] = field(default_factory=list)
    roots: list[FolderCount] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "photos": self.photos,
            "cameras": [{"name": name, "photos": n} for name, n in self.cameras],
            "formats": [{"format": f, "photos": n} for f, n in self.formats],
            "folders": [folder_dict(f) for f in self.roots],
        }


def folder_dict(folder: FolderCount) -> dict[str, Any]:
    return {
        "path": folder.path,
        "name": display_path(folder.path),
        "photos": folder.photos,
        "folders": folder.folders,
    }


class Browser:
    """Counts to browse by, kept per commit. Safe to call from a server's threads at once."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._generation = -1
        self._timelines: dict[Filters, list[MonthCount]] = {}
        self._folders: dict[str, int] | None = None
        self._facets: Facets | None = None

    def _fresh(self) -> None:
        """Forget what an earlier commit counted (under the lock)."""
        generation = self.workspace.store.generation
        if generation != self._generation:
            self._generation, self._timelines, self._folders, self._facets = generation, {}, None, None

    def timeline(self, filters: Filters) -> list[MonthCount]:
        """Months the filters keep photos in, the latest first."""
        with self._lock:
            self._fresh()
            months = self._timelines.get(filters)
        if months is None:
            months = [MonthCount(m, n) for m, n in self.workspace.store.month_counts(filters)]
            with self._lock:
                if len(self._timelines) >= TIMELINES_KEPT:
                    self._timelines.pop(next(iter(self._timelines)), None)
                self._timelines[filters] = months
        return months

    def folders(self, parent: str | None = None) -> list[FolderCount]:
        """The folders directly below ``parent`` that hold photos (in them or below), or without a
        parent the indexed folders themselves; each with its photos counted down the whole tree."""
        direct = self._folder_counts()
        if parent is None:
            return [_count(top, direct) for top in _outermost(direct, self.workspace.roots)]
        parent = os.path.abspath(os.path.expanduser(parent)).rstrip(os.sep) or os.sep
        below = _prefix(parent)
        photos: dict[str, int] = {}
        grandchildren: dict[str, set[str]] = {}
        for folder, n in direct.items():  # one pass, however many folders lie below
            if folder.startswith(below):
                child, _, rest = folder[len(below) :].partition(os.sep)
                photos[child] = photos.get(child, 0) + n
                if rest:
                    grandchildren.setdefault(child, set()).add(rest.split(os.sep, 1)[0])
        if not photos and parent not in direct:
            raise NotFound(f"no indexed photo lies in the folder {display_path(parent)!r}")
        return [FolderCount(below + child, n, len(grandchildren.get(child, ()))) for child, n in sorted(photos.items())]

    def facets(self) -> Facets:
        """Cameras, formats and top folders, each with its photos."""
        with self._lock:
            self._fresh()
            facets = self._facets
        if facets is None:
            store = self.workspace.store
            facets = Facets(
                photos=store.count_matching(Filters()),
                cameras=store.camera_counts(),
                formats=store.format_counts(),
                roots=self.folders(),
            )
            with self._lock:
                self._facets = facets
        return facets

    def _folder_counts(self) -> dict[str, int]:
        with self._lock:
            self._fresh()
            direct = self._folders
        if direct is None:
            direct = self.workspace.store.folder_counts()
            with self._lock:
                self._folders = direct
        return direct


def _prefix(folder: str) -> str:
    return folder if folder.endswith(os.sep) else folder + os.sep


def _outermost(direct: dict[str, int], roots: list[str]) -> list[str]:
    """The indexed folders that hold photos, none inside another; a photo outside every root (a
    file indexed on its own) shows its own folder."""
    tops: set[str] = set()
    for folder in direct:
        inside = [
            r.rstrip(os.sep) or os.sep for r in roots if folder == r.rstrip(os.sep) or folder.startswith(_prefix(r))
        ]
        tops.add(min(inside, key=len) if inside else folder)
    return sorted(t for t in tops if not any(o != t and t.startswith(_prefix(o)) for o in tops))


def _count(folder: str, direct: dict[str, int]) -> FolderCount:
    below = _prefix(folder)
    photos, children = 0, set()
    for f, n in direct.items():
        if f == folder:
            photos += n
        elif f.startswith(below):
            photos += n
            children.add(f[len(below) :].split(os.sep, 1)[0])
    return FolderCount(folder, photos, len(children))
