"""Labelled face descriptors, for measuring how well faces are grouped into people.

    .venv/bin/python -m bench.people_data

Two sets of real photos, fetched once into ``~/.cache/lookalike/datasets/`` (never into the repo):

- ``dlib-johns``: dlib's ``examples/johns`` (5 people named John, 11 photos each, 150 x 150 face
  crops), from Debian's dlib source tarball on the apt mirror (:func:`fetch_dlib_johns`).
- ``face-recognition``: face-recognition 1.3.0's test photos from its PyPI sdist
  (:func:`fetch_face_recognition_photos`): 5 of Obama, 1 of Biden.

:func:`pad_to_photo` and :func:`group_photo` turn them into photos of ordinary size, and
:func:`face_descriptors` finds and describes every face through the faces preset's own executors.
"""

from __future__ import annotations

import configparser
import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from lookalike.document import Document, Request
from lookalike.executors.faces import FaceDetector, FaceEncoder
from lookalike.models.faces import Box

DATASETS = Path.home() / ".cache" / "lookalike" / "datasets"
MANIFEST = "manifest.json"

# Debian's dlib source (bookworm: 19.24+dfsg-1); the hash is the one its .dsc lists.
DLIB_ORIG = "dlib_19.24+dfsg.orig.tar.bz2"
DLIB_ORIG_SHA256 = "66b4263822a2ff91a3e769e501c7d7927a13089e178c1427ec19cb0475823cf6"
DLIB_POOL = "pool/main/d/dlib"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_HELPER = "/usr/lib/apt/apt-helper"
DOWNLOAD_TIMEOUT_S = 300

FACE_RECOGNITION_SDIST = "face-recognition==1.3.0"
# tests/test_images/ of the sdist: obama*.jpg are Obama, biden.jpg is Biden. 32bit.png is skipped:
# it is obama2.jpg again, as RGBA (a duplicate, not another photo).
_FR_PERSON = re.compile(r"(obama|biden)[^/]*\.jpg")

# As the faces preset's index flow (lookalike/flows/faces-index.yml) runs its detector.
DETECTOR_PARAMS = {"upsample": 1, "min_score": 0.3}
PHOTO_SIZE = (1600, 1200)

People = dict[str, list[Path]]
Faces = list[tuple[Box, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# The cache


def _cached(cache: Path) -> People | None:
    """The people of a complete cache (its manifest, every file present), else None."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
        people = {name: [cache / name / f for f in files] for name, files in manifest["people"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not people or not all(p.is_file() for paths in people.values() for p in paths):
        return None
    return people


def _build(cache: Path, fill: Callable[[Path], str]) -> People:
    """Fill a staging folder beside ``cache`` (``fill`` returns the source), then move it in place."""
    people = _cached(cache)
    if people is not None:
        return people
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.partial-", dir=cache.parent))
    try:
        source = fill(staging)
        found = {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(staging.iterdir()) if d.is_dir()}
        if not found:
            raise RuntimeError(f"no photos found in {source}")
        (staging / MANIFEST).write_text(json.dumps({"source": source, "people": found}, indent=1))
        if cache.exists():
            shutil.rmtree(cache)  # an incomplete earlier fetch
        staging.rename(cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    people = _cached(cache)
    assert people is not None
    return people


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, person: str, name: str) -> None:
    """Copy one regular file out of ``tar`` to ``dest/person/name``, refusing unsafe names."""
    for part in (person, name):
        if part in ("", ".", "..") or "/" in part or "\\" in part or part.startswith("."):
            raise RuntimeError(f"unsafe path in the archive: {member.name!r}")
    source = tar.extractfile(member)
    if source is None:
        raise RuntimeError(f"cannot read {member.name!r} from the archive")
    (dest / person).mkdir(exist_ok=True)
    with source, open(dest / person / name, "wb") as out:
        shutil.copyfileobj(source, out)


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...] | None:
    """The parts of a regular file's name, or None for links, devices and unsafe names."""
    path = PurePosixPath(member.name)
    if not member.isreg() or path.is_absolute() or ".." in path.parts or member.name.startswith("/"):
        return None
    return path.parts


# ---------------------------------------------------------------------------------------------
# dlib's johns


def _apt_source_uris() -> list[str]:
    """The orig tarball's URL as ``apt-get source --print-uris`` gives it (needs deb-src lines)."""
    try:
        done = subprocess.run(
            ["apt-get", "source", "--print-uris", "dlib"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [m for m in re.findall(r"^'([^']+)'", done.stdout, re.MULTILINE) if m.endswith("/" + DLIB_ORIG)]


def _apt_mirrors(etc: Path = Path("/etc/apt")) -> list[str]:
    """Base URLs of the Debian archives apt is configured with (component main), main suites first."""
    entries: list[tuple[str, list[str], list[str]]] = []  # (uri, suites, components)
    lists = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in lists:
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])  # drop comments and [options]
            words = line.split()
            if len(words) >= 4 and words[0] in ("deb", "deb-src"):
                entries.append((words[1], [words[2]], words[3:]))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        try:
            text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            parser = configparser.ConfigParser(delimiters=(":",), interpolation=None)
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            try:
                parser.read_string("[s]\n" + stanza)
            except configparser.Error:
                continue
            fields = parser["s"]
            if fields.get("Enabled", "yes").strip().lower() == "no":
                continue
            if not set(fields.get("Types", "").split()) & {"deb", "deb-src"}:
                continue
            for uri in fields.get("URIs", "").split():
                entries.append((uri, fields.get("Suites", "").split(), fields.get("Components", "").split()))
    mirrors: list[str] = []
    # Security archives do not hold dlib's source; try the other Debian archives first.
    for uri, _suites, components in sorted(entries, key=lambda e: any("security" in s for s in e[1])):
        base = uri.rstrip("/")
        if "main" in components and base.startswith(("http://", "https://")) and base not in mirrors:
            mirrors.append(base)
    if DEFAULT_MIRROR not in mirrors:
        mirrors.append(DEFAULT_MIRROR)
    return mirrors


def dlib_archive_urls() -> list[str]:
    """Where Debian's dlib orig tarball may be fetched from, best first, as apt is configured here."""
    urls = _apt_source_uris()
    for mirror in _apt_mirrors():
        url = f"{mirror}/{DLIB_POOL}/{DLIB_ORIG}"
        if url not in urls:
            urls.append(url)
    return urls


def _apt_download(url: str, dest: Path) -> str | None:
    """Fetch ``url`` with apt's own downloader (hash checked); None when it worked, else why not."""
    try:
        done = subprocess.run(
            [APT_HELPER, "download-file", url, str(dest), f"SHA256:{DLIB_ORIG_SHA256}"],
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return f"{APT_HELPER} is missing (not a Debian system?)"
    except subprocess.TimeoutExpired:
        return f"no answer from {url} in {DOWNLOAD_TIMEOUT_S}s"
    if done.returncode != 0 or not dest.is_file():
        errors = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.startswith("E:")]
        return (errors[0] if errors else f"apt-helper exited with {done.returncode}").removeprefix("E: ")
    if hashlib.sha256(dest.read_bytes()).hexdigest() != DLIB_ORIG_SHA256:
        return f"{url} is not the expected archive (SHA-256 differs)"
    return None


def _fill_johns(dest: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="dlib-src-") as tmp:
        archive = Path(tmp) / DLIB_ORIG
        reasons = []
        for url in dlib_archive_urls():
            reason = _apt_download(url, archive)
            if reason is None:
                break
            reasons.append(reason)
            archive.unlink(missing_ok=True)
        else:
            raise RuntimeError(f"cannot fetch {DLIB_ORIG}: " + "; ".join(reasons))
        with tarfile.open(archive, "r:bz2") as tar:
            for member in tar:
                parts = _member_parts(member)
                # <top>/examples/johns/<person>/<photo>
                if parts and len(parts) == 5 and parts[1:3] == ("examples", "johns"):
                    _write_member(tar, member, dest, parts[3], parts[4])
    return url


def fetch_dlib_johns(cache: Path = DATASETS / "dlib-johns") -> People:
    """dlib's ``examples/johns``: {person: sorted photo paths}, 5 people x 11 face crops of 150 px.

    Downloaded once from Debian's dlib source tarball (``apt-get source --print-uris`` when apt has
    deb-src lines, else the pool of each archive in apt's sources, else deb.debian.org) with apt's
    downloader, hash-checked, and only the photos kept in ``cache``. Raises RuntimeError when it
    cannot be fetched.
    """
    return _build(cache, _fill_johns)


# ---------------------------------------------------------------------------------------------
# face-recognition's test photos


def _fill_face_recognition(dest: Path) -> str:
    with tempfile.TemporaryDirectory(prefix="face-recognition-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
        command += ["--disable-pip-version-check", FACE_RECOGNITION_SDIST, "-d", tmp]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"pip download {FACE_RECOGNITION_SDIST} took over {DOWNLOAD_TIMEOUT_S}s") from e
        tarballs = sorted(Path(tmp).glob("face_recognition-*.tar.gz"))
        if done.returncode != 0 or not tarballs:
            lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
            reason = ([ln for ln in lines if ln.startswith("ERROR")] or lines or [f"pip exited {done.returncode}"])[-1]
            raise RuntimeError(f"cannot download {FACE_RECOGNITION_SDIST} from PyPI: {reason[:300]}")
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for member in tar:
                parts = _member_parts(member)
                # <top>/tests/test_images/<photo>
                if parts and len(parts) == 4 and parts[1:3] == ("tests", "test_images"):
                    matched = _FR_PERSON.fullmatch(parts[3])
                    if matched:
                        _write_member(tar, member, dest, matched.group(1), parts[3])
    return f"{FACE_RECOGNITION_SDIST} (PyPI sdist)"


def fetch_face_recognition_photos(cache: Path = DATASETS / "face-recognition") -> People:
    """face-recognition 1.3.0's test photos: {person: sorted photo paths}.

    ``obama``: obama.jpg, obama2.jpg, obama3.jpg, obama_partial_face.jpg, obama_partial_face2.jpg
    (the partial ones show half a face); ``biden``: biden.jpg. Skipped: 32bit.png (obama2.jpg again,
    as RGBA). The sdist is downloaded once with this Python's pip; raises RuntimeError on failure.
    """
    return _build(cache, _fill_face_recognition)


# ---------------------------------------------------------------------------------------------
# Photos


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """``img`` as RGB, shrunk (never enlarged) to fit ``box``."""
    img = img.convert("RGB")
    scale = min(box[0] / img.width, box[1] / img.height, 1.0)
    if scale < 1.0:
        img = img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS
        )
    return img


def _background(size: tuple[int, int], rng: np.random.Generator, noise: float) -> Image.Image:
    """A plain canvas of a random muted colour with Gaussian noise of ``noise`` grey levels."""
    width, height = size
    pixels = np.empty((height, width, 3), np.float32)
    pixels[:] = rng.integers(60, 200, 3)
    if noise > 0:
        pixels += rng.standard_normal((height, width, 3), dtype=np.float32) * noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def pad_to_photo(
    img: Image.Image, size: tuple[int, int] = PHOTO_SIZE, seed: int = 0, noise: float = 6.0
) -> Image.Image:
    """``img`` at a random position on a noisy plain background of ``size`` (shrunk to fit if larger)."""
    rng = np.random.default_rng(seed)
    canvas = _background(size, rng, noise)
    img = _fit(img, size)
    x = int(rng.integers(0, size[0] - img.width + 1))
    y = int(rng.integers(0, size[1] - img.height + 1))
    canvas.paste(img, (x, y))
    return canvas


def group_photo(
    a: Image.Image, b: Image.Image, size: tuple[int, int] = PHOTO_SIZE, seed: int = 0, noise: float = 6.0
) -> Image.Image:
    """A group photo of two: ``a`` in the left half and ``b`` in the right half of one canvas."""
    rng = np.random.default_rng(seed)
    canvas = _background(size, rng, noise)
    half, margin = size[0] // 2, 20
    for i, img in enumerate((a, b)):
        img = _fit(img, (half - 2 * margin, size[1] - 2 * margin))
        x = i * half + int(rng.integers(margin, half - img.width - margin + 1))
        y = int(rng.integers(margin, size[1] - img.height - margin + 1))
        canvas.paste(img, (x, y))
    return canvas


# ---------------------------------------------------------------------------------------------
# Descriptors


def _encoded(img: Image.Image, quality: int | None) -> bytes:
    buf = BytesIO()
    if quality is None:
        img.save(buf, "PNG")
    else:
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def face_descriptors(images: Sequence[Image.Image], quality: int | None = 95, batch: int = 8) -> list[Faces]:
    """Every face found in each image, largest first: ``(box (x, y, w, h), 128-d descriptor)``.

    Runs the faces preset's FaceDetector (upsample 1, min_score 0.3, as faces-index.yml) and
    FaceEncoder on each image saved as a JPEG of ``quality`` (PNG when None), as a file would be.
    """
    found: list[Faces] = []
    with FaceDetector(DETECTOR_PARAMS) as detector, FaceEncoder({}) as encoder:
        for start in range(0, len(images), batch):
            docs = [
                Document(id=f"image{start + i}", blob=_encoded(img, quality))
                for i, img in enumerate(images[start : start + batch])
            ]
            request = Request("index", docs)
            detector.handle(request)
            encoder.handle(request)
            for doc in docs:
                if doc.error is not None:
                    raise RuntimeError(f"{doc.id}: {doc.error}")
                found.append(
                    [(c.bbox, c.embedding) for c in doc.chunks if c.bbox is not None and c.embedding is not None]
                )
    return found


# ---------------------------------------------------------------------------------------------


def labelled_photos() -> tuple[list[Image.Image], list[list[str]]]:
    """Both sets' photos padded to ordinary photos, each with its person, then the 10 group photos
    of two johns (every pair) with their people left to right."""
    images: list[Image.Image] = []
    labels: list[list[str]] = []
    sets = [fetch_dlib_johns(), fetch_face_recognition_photos()]
    for people in sets:
        for person, paths in people.items():
            for path in paths:
                with Image.open(path) as img:
                    images.append(pad_to_photo(img, seed=len(images)))
                labels.append([person])
    johns = sets[0]
    for k, (left, right) in enumerate(itertools.combinations(sorted(johns), 2)):  # 5 people: 10 pairs
        with Image.open(johns[left][k % len(johns[left])]) as a, Image.open(johns[right][k % len(johns[right])]) as b:
            images.append(group_photo(a, b, seed=k))
        labels.append([left, right])
    return images, labels


def main() -> None:
    t0 = time.perf_counter()
    images, all_labels = labelled_photos()
    print(f"fetched and padded in {time.perf_counter() - t0:.1f}s: {len(images)} photos")
    labels = [names[0] for names in all_labels if len(names) == 1]
    group_labels = [tuple(names) for names in all_labels if len(names) == 2]
    johns = sorted({name for names in group_labels for name in names})
    t1 = time.perf_counter()
    faces = face_descriptors(images)
    t_describe = time.perf_counter() - t1
    print(f"{len(images)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}: faces found and described in {t_describe:.1f}s")

    singles, groups = faces[: len(labels)], faces[len(labels) :]
    print("photos with exactly one face, per person:")
    for person in dict.fromkeys(labels):
        counts = [len(f) for f, label in zip(singles, labels, strict=True) if label == person]
        extra = sorted(c for c in counts if c != 1)
        print(f"  {person:14} {counts.count(1):2}/{len(counts)}" + (f"  (others: {extra} faces)" if extra else ""))
    found = [len(f) for f in groups]
    print(f"group photos of two: {found.count(2)}/{len(groups)} with 2 faces; faces found per photo: {found}")

    # A sanity check of the descriptors: same-person distances should sit well under 0.6, and each
    # face of a group photo should be nearest the mean descriptor of its own person.
    vectors = [(f[0][1], label) for f, label in zip(singles, labels, strict=True) if len(f) == 1]
    same: list[float] = []
    different: list[float] = []
    for (u, p), (v, q) in itertools.combinations(vectors, 2):
        (same if p == q else different).append(float(np.linalg.norm(u - v)))
    if same and different:
        print(f"descriptor distances: same person median {np.median(same):.3f}, different {np.median(different):.3f}")
    means = {person: np.mean([v for v, p in vectors if p == person], axis=0) for person in johns}
    hits = tried = 0
    for group, names in zip(groups, group_labels, strict=True):
        if len(group) != 2:
            continue
        for (_, vector), name in zip(sorted(group, key=lambda face: face[0][0]), names, strict=True):
            distances = {person: float(np.linalg.norm(mean - vector)) for person, mean in means.items()}
            hits += min(distances, key=distances.__getitem__) == name
            tried += 1
    print(f"group faces, left to right, nearest their own person's mean: {hits}/{tried}")
    print(f"wall time {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
