"""Sample-photo datasets with labels, fetched once into a local cache (for `lookalike demo` and `eval`).

Each dataset lives in ``<data_dir>/<name>/`` with its images in label folders
(``tuxpaint/animals/birds/robin.png``), so the label of a cached image is always the folder it sits
in, relative to the dataset root. ``manifest.json`` marks a complete fetch.

Crash safety: a fetch builds the whole dataset in a private staging folder beside the cache
(``.<name>.partial-*``), writes the manifest there last, then renames the folder into place. A fetch
that is killed at any point therefore leaves either no dataset folder or a complete one, never a
half-filled folder with a manifest; the next fetch removes the leftovers and starts over, so
nothing is duplicated.

Datasets:

- ``tuxpaint``: the photo stamps of Tux Paint (Debian ``tuxpaint-stamps-default``, via apt).
- ``openclipart``: about 6,900 clip-art drawings (Debian ``openclipart-png``, via apt).
- ``flowers17``: Oxford's 17 Category Flower Dataset (needs the internet).
- ``skimage``: the natural photos bundled with scikit-image (needs scikit-image).
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.request
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from lookalike.atomic import atomic_write
from lookalike.errors import BadInput, ConfigError, FetchError, NotFound
from lookalike.settings import Options

Progress = Callable[[str], None]


# Bumped when the cache layout or the manifest changes meaning; an older manifest is then treated as
# "not cached" and the dataset is fetched again.
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"

# Dataset images above these limits are skipped. The largest tuxpaint photo is 1.6 MP and the
# largest openclipart drawing we keep 8.7 MP, while openclipart also holds 17 SVG renders of 21 to
# 623 MP: decoding one takes seconds and gigabytes, and lookalike.images refuses anything above
# Pillow's 89 MP anyway. 10 MB is 3x the largest file in either Debian package (3.2 MB) and guards
# against odd uncompressed files.
MAX_IMAGE_PIXELS = 20_000_000
MAX_IMAGE_BYTES = 10_000_000

# apt-get normally fetches the ~160 MB package in seconds; the limit only stops a stalled mirror
# from hanging the command forever.
APT_TIMEOUT_S = 900
# Per socket operation (connect, each read), not for the whole download.
DOWNLOAD_TIMEOUT_S = 30.0

FLOWERS17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/17flowers.tgz"
FLOWERS17_URL_ENV = "LOOKALIKE_FLOWERS17_URL"
DATA_DIR_ENV = "LOOKALIKE_DATA_DIR"
# The archive is ordered by class, 80 images each, in this order (from the dataset's web page).
FLOWERS17_CLASSES = (
    "Daffodil",
    "Snowdrop",
    "LilyValley",
    "Bluebell",
    "Crocus",
    "Iris",
    "Tigerlily",
    "Tulip",
    "Fritillary",
    "Sunflower",
    "Daisy",
    "ColtsFoot",
    "Dandelion",
    "Cowslip",
    "Buttercup",
    "Windflower",
    "Pansy",
)
FLOWERS17_PER_CLASS = 80
_FLOWERS17_MEMBER = re.compile(r"jpg/image_(\d{4})\.jpg")

# scikit-image's natural photos that ship inside its wheel (no pooch download), by file name in
# the cache -> (skimage.data function, index into a tuple result, label). Each photo is its own
# class except the stereo pair, which gives the set one true "same subject" pair. Left out: `cat`
# (the same picture as `chelsea`), and drawings or masks (logo, horse, colorwheel, ...).
_SKIMAGE_PHOTOS: dict[str, tuple[str, int | None, str]] = {
    "astronaut": ("astronaut", None, "astronaut"),
    "brick": ("brick", None, "brick"),
    "camera": ("camera", None, "camera"),
    "chelsea": ("chelsea", None, "chelsea"),
    "clock": ("clock", None, "clock"),
    "coffee": ("coffee", None, "coffee"),
    "coins": ("coins", None, "coins"),
    "grass": ("grass", None, "grass"),
    "gravel": ("gravel", None, "gravel"),
    "hubble_deep_field": ("hubble_deep_field", None, "hubble_deep_field"),
    "immunohistochemistry": ("immunohistochemistry", None, "immunohistochemistry"),
    "moon": ("moon", None, "moon"),
    "motorcycle_left": ("stereo_motorcycle", 0, "motorcycle"),
    "motorcycle_right": ("stereo_motorcycle", 1, "motorcycle"),
    "page": ("page", None, "page"),
    "retina": ("retina", None, "retina"),
    "rocket": ("rocket", None, "rocket"),
    "text": ("text", None, "text"),
}


@dataclass
class _Imported:
    """What an importer put into the staging folder: label per relative path, and what it skipped."""

    source: str
    labels: dict[str, str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_files: dict[str, str] = field(default_factory=dict)


# An importer fills `dest` (images in label folders) and may use `scratch` for downloads.
_Importer = Callable[[Path, Path, Progress], _Imported]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset lookalike knows how to fetch."""

    name: str
    description: str
    source: str
    online_only: bool
    importer: _Importer = field(repr=False, compare=False)


@dataclass
class FetchedDataset:
    """A complete dataset in the cache: its images (sorted) and the label of each one."""

    name: str
    root: Path
    images: list[Path]
    labels: dict[Path, str]
    source: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.values()))


@dataclass
class DatasetInfo:
    """One row of `lookalike datasets`: what a dataset is and whether it is in the cache."""

    name: str
    description: str
    source: str
    online_only: bool
    cached: bool
    path: Path
    n_images: int | None
    n_classes: int | None


def data_dir() -> Path:
    """Where datasets are cached: ``$LOOKALIKE_DATA_DIR``, else the user cache dir's ``datasets``."""
    return Options.from_env().dataset_cache


def is_online(host: str = "www.robots.ox.ac.uk", port: int = 443, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds. Never raises.

    The attempt runs in a daemon thread because a name lookup is not bound by the socket timeout and
    can hang for much longer on a machine with a broken resolver; here the caller waits at most
    ``timeout`` seconds whatever happens.
    """
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except (OSError, ValueError, OverflowError):  # refused, unreachable, bad name or port
            result.append(False)

    thread = threading.Thread(target=attempt, name="lookalike-is-online", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result) and result[0]


def labels_from_folders(root: Path, images: Iterable[Path], depth: int | None = None) -> dict[Path, str]:
    """Label each image by its folder relative to ``root``, as a POSIX path (``animals/birds``).

    ``depth`` keeps only the first parts of that folder (``depth=1`` gives ``animals``). Images
    directly in ``root`` get the label ``"."``: it cannot clash with a real sub-folder's name, and
    it is what ``Path.relative_to`` says. A relative image path that does not start with ``root``
    is taken as relative to ``root``. The result is keyed by the paths exactly as given; an image
    outside ``root`` raises BadInput.
    """
    if depth is not None and depth < 1:
        raise ConfigError(f"label depth must be 1 or more, not {depth}")
    labels: dict[Path, str] = {}
    for image in images:
        rel = _relative_to(Path(image), root)
        if rel is None or ".." in rel.parts:
            raise BadInput(f"{image} is not inside {root}, so it has no folder label")
        parts = rel.parent.parts
        if depth is not None:
            parts = parts[:depth]
        labels[image] = PurePosixPath(*parts).as_posix() if parts else "."
    return labels


def _relative_to(path: Path, root: Path) -> Path | None:
    with contextlib.suppress(ValueError):
        return path.relative_to(root)  # the usual case: paths from root.rglob(...)
    if not path.is_absolute():
        return path  # documented: a relative path that does not start with root is relative to it
    with contextlib.suppress(ValueError):
        # Other spellings of the same folder (symlinks, "..") still count as inside it.
        return path.resolve().relative_to(root.resolve())
    return None


# ---------------------------------------------------------------------------------------------
# The cache


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise NotFound(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


def cached(name: str, cache_dir: Path | None = None) -> FetchedDataset | None:
    """The dataset if a complete fetch is in the cache, else None (never fetched, or interrupted)."""
    _spec(name)
    root = (cache_dir if cache_dir is not None else data_dir()) / name
    manifest = _read_manifest(root / MANIFEST_NAME)
    if manifest is None or manifest.get("name") != name:
        return None
    images_by_rel = manifest.get("images")
    if not isinstance(images_by_rel, dict):
        return None
    labels: dict[Path, str] = {}
    for rel, label in images_by_rel.items():
        path = root / rel
        # A file deleted behind our back makes the copy incomplete: fetch it again rather than fail
        # later in the middle of an index or an evaluation. (About 0.1 s for openclipart's 6,883.)
        if not isinstance(label, str) or not path.is_file():
            return None
        labels[path] = label
    return FetchedDataset(
        name=name,
        root=root,
        images=sorted(labels),
        labels=labels,
        source=str(manifest.get("source", "")),
        skipped=skipped if isinstance(skipped := manifest.get("skipped"), dict) else {},
    )


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable or not JSON: not a complete fetch
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_VERSION:
        return None
    return manifest


@contextlib.contextmanager
def _fetch_lock(root: Path, name: str, progress: Progress) -> Iterator[None]:
    """Serialise fetches of one dataset, so one never deletes the staging folder of another."""
    try:
        import fcntl
    except ImportError:  # Windows: no apt there anyway; concurrent fetches are the user's problem
        yield
        return
    with open(root / f".{name}.lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{name}: waiting for another fetch of {name} to finish")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch(
    name: str,
    *,
    progress: Progress | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
) -> FetchedDataset:
    """Fetch a dataset into the cache (unless it is there already) and return it.

    A cached dataset is returned at once, without touching apt or the network; ``force`` fetches it
    again and replaces the cached copy only once the new one is complete.
    """
    spec = _spec(name)
    say: Progress = progress or (lambda _msg: None)
    root = cache_dir if cache_dir is not None else data_dir()
    if not force and (hit := cached(name, root)) is not None:
        return hit
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"cannot create the dataset cache {root}: {e.strerror or e}; set {DATA_DIR_ENV} to a writable folder"
        ) from e
    with _fetch_lock(root, name, say):
        # Another process may have finished the same fetch while we waited for the lock.
        if not force and (hit := cached(name, root)) is not None:
            return hit
        for stale in root.glob(f".{name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=root))
        try:
            _build(spec, root, staging, say)
        except OSError as e:
            raise FetchError(f"could not write {name} into {root}: {e.strerror or e}") from e
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    hit = cached(name, root)
    if hit is None:  # only if someone deleted files in the instant after the rename
        raise FetchError(f"{name} was fetched into {root / name} but is incomplete there; run the fetch again")
    return hit


def _build(spec: DatasetSpec, root: Path, staging: Path, say: Progress) -> None:
    """Import into ``staging/data``, write the manifest last, then swap it in as ``root/<name>``."""
    data, scratch = staging / "data", staging / "scratch"
    data.mkdir()
    scratch.mkdir()
    started = time.perf_counter()
    imported = spec.importer(data, scratch, say)
    shutil.rmtree(scratch)  # the .deb or .tgz: up to 160 MB we no longer need
    if not imported.labels:
        raise FetchError(f"{spec.name}: the source held no usable images ({_skips(imported.skipped)})")
    classes = sorted(set(imported.labels.values()))
    manifest = {
        "format": MANIFEST_VERSION,
        "name": spec.name,
        "source": imported.source,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "count": len(imported.labels),
        "classes": classes,
        "skipped": dict(sorted(imported.skipped.items())),
        "skipped_files": imported.skipped_files,
        "images": dict(sorted(imported.labels.items())),
    }
    atomic_write(data / MANIFEST_NAME, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    final = root / spec.name
    if final.exists() or final.is_symlink():
        # Moved into staging rather than deleted in place, so a crash here leaves no half-deleted
        # dataset behind: just no dataset folder, which reads as "not cached".
        final.rename(staging / "old")
    os.replace(data, final)
    say(
        f"{spec.name}: {len(imported.labels)} images in {len(classes)} classes, "
        f"{_skips(imported.skipped)}, in {time.perf_counter() - started:.1f}s -> {final}"
    )


def _skips(skipped: Counter[str]) -> str:
    if not sum(skipped.values()):
        return "none skipped"
    return "skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))


def list_datasets(cache_dir: Path | None = None) -> list[DatasetInfo]:
    """Every known dataset, and whether (and how big) it is in the cache."""
    root = cache_dir if cache_dir is not None else data_dir()
    infos = []
    for spec in DATASETS.values():
        hit = cached(spec.name, root)
        infos.append(
            DatasetInfo(
                name=spec.name,
                description=spec.description,
                source=spec.source,
                online_only=spec.online_only,
                cached=hit is not None,
                path=root / spec.name,
                n_images=len(hit.images) if hit else None,
                n_classes=len(hit.classes) if hit else None,
            )
        )
    return infos


# ---------------------------------------------------------------------------------------------
# Importing files: shared checks


def _image_problem(data: bytes) -> str | None:
    """Why these bytes are not a usable dataset image, or None. Reads headers and checksums only.

    ``Image.open`` parses just the header, and ``verify()`` walks the chunks and their CRCs without
    decompressing: about 0.7 s for all of openclipart, where a full decode takes 48 s (most of it
    in the giant images this check exists to skip).
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP up; we refuse far below that, so the warning is only noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    return "too_large"
                im.verify()
    except Image.DecompressionBombError:  # over 179 MP: Pillow refuses to even open it
        return "too_large"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return "unreadable"
    return None


def _safe_relpath(name: str) -> PurePosixPath | None:
    """A tar member name as a clean relative path, or None if it could point outside its folder."""
    parts = [p for p in PurePosixPath(name).parts if p != "."]
    if not parts or parts[0] == "/" or any(p in ("", "..") or "\\" in p for p in parts):
        return None
    return PurePosixPath(*parts)


# Maps a (clean) member path inside an archive to (path in the dataset, label), or None to ignore.
_Plan = Callable[[PurePosixPath], tuple[PurePosixPath, str] | None]


def _import_tar(stream: IO[bytes], plan: _Plan, dest: Path, imported: _Imported) -> None:
    """Copy the members ``plan`` wants from a tar stream into ``dest``, skipping unusable ones.

    Reads the archive once, front to back, so it works on a pipe; a member's destination comes only
    from ``plan`` and is checked to stay inside ``dest``, so no member name can write elsewhere.
    Symbolic and hard links are skipped (openclipart files the same drawing under two categories
    that way; keeping one copy would give it an arbitrary label).
    """
    with tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            rel = _safe_relpath(member.name)
            wanted = plan(rel) if rel is not None else None
            if rel is None or wanted is None:
                continue
            target, label = wanted
            if target.is_absolute() or any(p in ("", ".", "..") for p in target.parts):
                continue  # a plan bug, not a file problem: never write outside dest
            shown = rel.as_posix()
            if member.issym() or member.islnk():
                imported.skipped["symlink"] += 1
                continue
            if not member.isfile():
                continue
            if member.size > MAX_IMAGE_BYTES:
                imported.skipped["too_large"] += 1
                imported.skipped_files[shown] = f"too_large: {member.size / 1e6:.0f} MB"
                continue
            if target.as_posix() in imported.labels:
                imported.skipped["duplicate"] += 1
                imported.skipped_files[shown] = f"duplicate: {target.as_posix()}"
                continue
            handle = archive.extractfile(member)
            data = handle.read() if handle is not None else b""
            problem = _image_problem(data)
            if problem is not None:
                imported.skipped[problem] += 1
                imported.skipped_files[shown] = problem
                continue
            path = dest.joinpath(*target.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            imported.labels[target.as_posix()] = label


# ---------------------------------------------------------------------------------------------
# Debian packages (tuxpaint, openclipart)


def _need_tool(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise NotFound(
            f"{package} is a Debian package, but {tool} is not installed here; "
            "use --dataset skimage (or flowers17, online) instead"
        )
    return found


def _apt_download(package: str, scratch: Path, say: Progress) -> Path:
    """``apt-get download`` the package into ``scratch`` and return the .deb (no root needed)."""
    apt = _need_tool("apt-get", package)
    say(f"downloading Debian package {package} with apt-get")
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [apt, "download", package],
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=APT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise FetchError(f"apt-get download {package} gave no result in {APT_TIMEOUT_S}s; check the network") from e
    debs = sorted(scratch.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {package} failed: {_apt_reason(done.stderr, done.stdout)}")
    deb = debs[0]
    say(f"downloaded {deb.name} ({deb.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")
    return deb


def _apt_reason(stderr: str, stdout: str) -> str:
    """apt's own error line plus what to do about it, on one line."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    reason = (errors or lines or ["no output"])[-1]
    if re.search(r"Unable to locate package|has no installation candidate|no candidate", reason, re.I):
        hint = "run `apt-get update` (as root) so apt knows the package, or use --dataset skimage"
    else:
        hint = "check the network and apt's sources, or use --dataset skimage"
    return f"{reason}; {hint}"


def _import_deb(package: str, plan: _Plan, dest: Path, scratch: Path, say: Progress) -> _Imported:
    """Download ``package`` with apt and copy the files ``plan`` wants out of it."""
    _need_tool("apt-get", package)
    _need_tool("dpkg-deb", package)  # before a 160 MB download we could not open
    deb = _apt_download(package, scratch, say)
    say(f"unpacking images from {deb.name}")
    imported = _import_deb_file(deb, plan, dest)
    deb.unlink()
    return imported


def _import_deb_file(deb: Path, plan: _Plan, dest: Path) -> _Imported:
    """Copy the files ``plan`` wants out of a .deb into ``dest``.

    The package's file tree is streamed from ``dpkg-deb --fsys-tarfile`` rather than unpacked with
    ``dpkg-deb -x``: the time is the same (decompression dominates: 6.5 s for tuxpaint, 4.8 s for
    openclipart), but only the wanted images touch the disk instead of 160 to 220 MB.
    """
    dpkg_deb = _need_tool("dpkg-deb", deb.name)
    control = subprocess.run(
        [dpkg_deb, "--field", str(deb), "Package", "Version"], capture_output=True, text=True, check=False
    ).stdout
    fields = dict(line.split(": ", 1) for line in control.splitlines() if ": " in line)
    imported = _Imported(source=f"debian:{fields.get('Package', deb.name)}={fields.get('Version', 'unknown')}")
    # stderr goes to a file: a pipe nobody reads could fill up and stall dpkg-deb.
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([dpkg_deb, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None  # for mypy: stdout=PIPE always gives a stream
        tar_error: tarfile.TarError | None = None
        try:
            _import_tar(proc.stdout, plan, dest, imported)
            proc.stdout.read()  # drain, so dpkg-deb ends cleanly rather than on a broken pipe
        except tarfile.TarError as e:
            tar_error = e
            proc.kill()
        except BaseException:
            proc.kill()  # or dpkg-deb would block forever on a full pipe, and wait() with it
            raise
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip().splitlines()
    if tar_error is not None or returncode != 0:
        # dpkg-deb's own complaint ("not a Debian format archive") says more than tarfile's.
        reason = said[-1] if said and returncode > 0 else str(tar_error or f"exit status {returncode}")
        raise FetchError(f"dpkg-deb could not read {deb.name}: {reason}; fetch again with --force") from tar_error
    return imported


def _tuxpaint_plan(member: PurePosixPath) -> tuple[PurePosixPath, str] | None:
    # The photo stamps: PNGs under stamps/, minus cartoon drawings and the symbols/ clip-art.
    prefix = ("usr", "share", "tuxpaint", "stamps")
    parts = member.parts
    if parts[: len(prefix)] != prefix or member.suffix.lower() != ".png":
        return None
    rel = PurePosixPath(*parts[len(prefix) :])
    folders = rel.parent.parts
    if "cartoon" in folders or (folders and folders[0] == "symbols"):
        return None
    return rel, rel.parent.as_posix()


def _import_tuxpaint(dest: Path, scratch: Path, say: Progress) -> _Imported:
    return _import_deb("tuxpaint-stamps-default", _tuxpaint_plan, dest, scratch, say)


def _openclipart_plan(member: PurePosixPath) -> tuple[PurePosixPath, str] | None:
    # usr/share/openclipart/png/<category>/<subcategory>/<deeper...>/<file>.png. The label is
    # category/subcategory (88 classes; deeper folders are icon themes, card decks and holidays with
    # a handful of files each). The dataset keeps one level of label folders, so deeper folder names
    # move into the file name: computer/icons/crystal/1uparrow.png -> computer/icons/crystal__1uparrow.png
    # (icon themes reuse file names, so dropping them would collide).
    prefix = ("usr", "share", "openclipart", "png")
    parts = member.parts
    if parts[: len(prefix)] != prefix or member.suffix.lower() != ".png":
        return None
    rel = parts[len(prefix) :]
    folders, file_name = rel[:-1], rel[-1]
    label_parts, deeper = folders[:2], folders[2:]
    label = PurePosixPath(*label_parts).as_posix() if label_parts else "."
    return PurePosixPath(*label_parts, "__".join((*deeper, file_name))), label


def _import_openclipart(dest: Path, scratch: Path, say: Progress) -> _Imported:
    return _import_deb("openclipart-png", _openclipart_plan, dest, scratch, say)


# ---------------------------------------------------------------------------------------------
# flowers17 (online)


def _flowers17_plan(member: PurePosixPath) -> tuple[PurePosixPath, str] | None:
    # jpg/image_0001.jpg ... image_1360.jpg, 80 per class in FLOWERS17_CLASSES order.
    match = _FLOWERS17_MEMBER.fullmatch(member.as_posix())
    if match is None:
        return None
    number = int(match.group(1))
    if not 1 <= number <= len(FLOWERS17_CLASSES) * FLOWERS17_PER_CLASS:
        return None
    label = FLOWERS17_CLASSES[(number - 1) // FLOWERS17_PER_CLASS]
    return PurePosixPath(label, member.name), label


def _download(url: str, target: Path, name: str, say: Progress) -> None:
    """Stream ``url`` into ``target``, reporting about every 10%; FetchError on any network failure."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name}: {url!r} is not an http(s) URL; fix {FLOWERS17_URL_ENV}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    hint = "try --dataset tuxpaint, which needs no internet"
    # A quick, bounded check first, so an offline machine gets the answer in seconds.
    if not is_online(parts.hostname, port):
        raise FetchError(f"{name} needs internet, and {parts.hostname}:{port} cannot be reached; {hint}")
    say(f"downloading {url}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            received, next_report = 0, 0.1
            while chunk := response.read(1 << 20):
                out.write(chunk)
                received += len(chunk)
                if total and received / total >= next_report and received < total:
                    say(f"{name}: {received / 1e6:.0f} of {total / 1e6:.0f} MB")
                    next_report += 0.1
    except (OSError, http.client.HTTPException) as e:  # HTTPError, refused, reset, timed out, cut short
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"could not download {name} from {url}: {reason}; {hint}") from e
    if total and received != total:
        raise FetchError(f"download of {name} from {url} stopped at {received} of {total} bytes; {hint}")
    say(f"downloaded {received / 1e6:.0f} MB in {time.perf_counter() - started:.1f}s")


def _import_flowers17(dest: Path, scratch: Path, say: Progress) -> _Imported:
    url = Options.from_env().flowers17_url or FLOWERS17_URL
    archive = scratch / "17flowers.tgz"
    _download(url, archive, "flowers17", say)
    imported = _Imported(source=url)
    say("unpacking flowers17")
    try:
        with open(archive, "rb") as stream:
            _import_tar(stream, _flowers17_plan, dest, imported)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise FetchError(f"the flowers17 download from {url} is not a valid .tgz ({e}); run the fetch again") from e
    expected = len(FLOWERS17_CLASSES) * FLOWERS17_PER_CLASS
    if len(imported.labels) != expected:
        # Labels come from file numbers, so a partial archive would still be labelled right, but every
        # class count (and so every precision figure) would be off; refuse it instead.
        raise FetchError(
            f"the flowers17 archive from {url} holds {len(imported.labels)} usable images, not {expected} "
            f"({_skips(imported.skipped)}); run the fetch again"
        )
    return imported


# ---------------------------------------------------------------------------------------------
# skimage (bundled photos)


def _import_skimage(dest: Path, scratch: Path, say: Progress) -> _Imported:
    try:
        import skimage
        from skimage import data as skdata
    except ImportError as e:
        raise NotFound("the skimage photos come with scikit-image: pip install scikit-image") from e
    version = getattr(skimage, "__version__", "unknown")  # lazily loaded: no attribute for mypy
    imported = _Imported(source=f"scikit-image {version}")
    say(f"saving {len(_SKIMAGE_PHOTOS)} photos bundled with scikit-image {version}")
    loaded: dict[str, Any] = {}  # stereo_motorcycle gives both photos of the pair: load it once
    for file_name, (function, index, label) in _SKIMAGE_PHOTOS.items():
        try:
            pixels = loaded[function] if function in loaded else getattr(skdata, function)()
            loaded[function] = pixels
        except (AttributeError, ImportError, OSError, ValueError) as e:
            # An older or newer scikit-image without this photo (or that would download it):
            # the set is still useful without one picture.
            imported.skipped["unavailable"] += 1
            imported.skipped_files[file_name] = f"unavailable: {e}"
            continue
        if index is not None:
            pixels = pixels[index]
        path = dest / label / f"{file_name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Lossless either way; level 1 saves 1.5 s of the 2.3 s this set took at the default 6.
        Image.fromarray(pixels).save(path, compress_level=1)
        imported.labels[f"{label}/{file_name}.png"] = label
    return imported


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "tuxpaint",
            "439 photos (animals, food, plants, vehicles, ...) from Tux Paint's stamps, in 73 folder labels",
            "Debian package tuxpaint-stamps-default (apt, about 160 MB download)",
            False,
            _import_tuxpaint,
        ),
        DatasetSpec(
            "openclipart",
            "6,883 clip-art drawings in 88 category/subcategory labels",
            "Debian package openclipart-png (apt, about 130 MB download)",
            False,
            _import_openclipart,
        ),
        DatasetSpec(
            "flowers17",
            "Oxford 17 Category Flowers: 1,360 photos, 80 of each of 17 species",
            FLOWERS17_URL,
            True,
            _import_flowers17,
        ),
        DatasetSpec(
            "skimage",
            "18 natural photos bundled with scikit-image (astronaut, coffee, a stereo pair, ...)",
            "the scikit-image package (pip install scikit-image)",
            False,
            _import_skimage,
        ),
    )
}
