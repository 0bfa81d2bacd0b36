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
