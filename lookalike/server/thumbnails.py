"""Thumbnails, made once and cached on disk beside the workspace."""

from __future__ import annotations

import io
from pathlib import Path

from lookalike.atomic import atomic_write
from lookalike.images import decode


def thumbnail(source: Path, doc_id: str, content_hash: str, size: int, cache: Path) -> Path:
    """A JPEG no larger than ``size`` on its longer side. The cache key includes the content hash,
    so a changed file gets a new thumbnail rather than a stale one."""
    target = cache / f"{doc_id}-{size}-{content_hash[:12]}.jpg"
    if target.is_file():
        return target
    # draft() lets JPEGs decode at a fraction of full size; alpha is composited onto white.
    image = decode(source, draft_size=size).image
    image.thumbnail((size, size))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=82, optimize=True, progressive=True)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(target, buf.getvalue())
    return target


def face_thumbnail(
    source: Path, face: int, bbox: tuple[int, int, int, int], content_hash: str, size: int, cache: Path
) -> Path:
    """A face cut out of its photo: the square around ``bbox`` (x, y, w, h in the photo's pixels)
    with a third of its size around it, moved inside the photo where it fits (a face at an edge is
    not cut out with black beside it), as a JPEG of ``size`` pixels; cached like thumbnails."""
    target = cache / f"face-{face}-{size}-{content_hash[:12]}.jpg"
    if target.is_file():
        return target
    image = decode(source, draft_size=None).image  # the box is in the full photo's pixels
    x, y, w, h = bbox
    side = min(max(w, h) * 5 / 3, image.width, image.height)
    left = min(max(x + w / 2 - side / 2, 0), image.width - side)
    top = min(max(y + h / 2 - side / 2, 0), image.height - side)
    box = (round(left), round(top), round(left + side), round(top + side))
    crop = image.crop(box).resize((size, size))  # outside the photo: filled with black
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=85)
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write(target, buf.getvalue())
    return target
