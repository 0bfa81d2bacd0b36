"""What the camera recorded: EXIF read from a file's header at index time, into plain fields.

Read from the bytes the loader already holds (Pillow parses the header only; nothing is decoded).
Every field is checked on its own: a broken or hostile value (a string where a number belongs, a
rational over zero, a GPS position of NaN or past the poles, a date in year 0) leaves that field
empty and adds a note saying why, and never stops the photo from being indexed.

Dates are kept as the photo's local wall-clock time, ``YYYY-MM-DDTHH:MM:SS`` (what a person means by
"taken on the 14th"), with the UTC offset in minutes where EXIF records one. A photo without an EXIF
date is dated by its file's modification time (local time) and flagged ``taken_from = "file"``.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from PIL import Image

# Bumped whenever what is read changes, so the next index run reads older documents' headers again.
METADATA_VERSION = 1

# EXIF tags (IFD0, the Exif IFD and the GPS IFD).
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_EXPOSURE, _FNUMBER, _ISO, _ORIGINAL, _DIGITIZED = 0x829A, 0x829D, 0x8827, 0x9003, 0x9004
_OFFSET_ORIGINAL, _FOCAL, _LENS_MAKE, _LENS_MODEL = 0x9011, 0x920A, 0xA433, 0xA434
_TEXT_LIMIT = 120  # longer makes, models and lens names are cut: a header is no place for an essay

# The format names a filter takes, from Pillow's (and RAW for rawpy's previews).
FORMATS = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "GIF": "gif",
    "BMP": "bmp",
    "WEBP": "webp",
    "TIFF": "tiff",
    "HEIF": "heic",
    "AVIF": "avif",
}
FORMAT_NAMES = ("jpeg", "png", "gif", "bmp", "webp", "tiff", "heic", "avif", "raw")


@dataclass
class PhotoMeta:
    """The fields of one photo's header, each None when absent or unreadable."""

    taken_at: str | None = None  # local time, ISO 8601 without offset
    taken_offset: int | None = None  # minutes east of UTC, when EXIF says
    taken_from: str | None = None  # "exif" or "file"
    make: str | None = None
    model: str | None = None
    lens: str | None = None
    focal_mm: float | None = None
    exposure_s: float | None = None
    f_number: float | None = None
    iso: int | None = None
    lat: float | None = None
    lon: float | None = None
    orientation: int | None = None  # EXIF 1-8
    format: str | None = None
    notes: list[str] = field(default_factory=list)  # why a field present in the file was left empty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def camera(self) -> str | None:
        """Make and model as people say them ("Apple iPhone 12", not "Apple Apple iPhone 12")."""
        if self.make and self.model and not self.model.lower().startswith(self.make.lower()):
            return f"{self.make} {self.model}"
        return self.model or self.make

    @property
    def taken(self) -> str | None:
        """The date taken as ISO 8601, with its UTC offset where EXIF records one."""
        if self.taken_at is None or self.taken_offset is None:
            return self.taken_at
        sign, minutes = ("+" if self.taken_offset >= 0 else "-"), abs(self.taken_offset)
        return f"{self.taken_at}{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def shown(self, folder: str | None = None) -> dict[str, Any]:
        """What is said about a photo's header anywhere (the API, the CLI's --json, search results)."""
        return {
            "taken_at": self.taken,
            "taken_from": self.taken_from,
            "camera": self.camera,
            "make": self.make,
            "model": self.model,
            "lens": self.lens,
            "focal_mm": self.focal_mm,
            "exposure_s": self.exposure_s,
            "f_number": self.f_number,
            "iso": self.iso,
            "gps": {"lat": self.lat, "lon": self.lon} if self.lat is not None and self.lon is not None else None,
            "orientation": self.orientation,
            "format": self.format,
            "folder": folder,
            "metadata_notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoMeta:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def read_metadata(
    data: bytes | BinaryIO, name: str | os.PathLike | None = None, mtime_ns: int | None = None
) -> PhotoMeta:
    """The header fields of an image file (its bytes, or the file open for reading: then only the
    header is read). Never raises: what cannot be read stays empty."""
    from lookalike.images import is_raw_name

    meta = PhotoMeta(format="raw" if is_raw_name(name) else None)
    exif = None
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data) as img:
            pillows = img.format or ""
            meta.format = meta.format or FORMATS.get(pillows, pillows.lower() or None)
            try:
                exif = _header_exif(img)
            except Exception as e:  # noqa: BLE001 - a broken EXIF block: the rest of the header stands
                meta.notes.append(f"EXIF unreadable ({type(e).__name__})")
    except Exception:  # noqa: BLE001 - any header Pillow cannot parse: the decoder reports the file itself
        pass
    if exif is not None:
        _read_exif(exif, meta)
    if meta.taken_at is None and mtime_ns is not None:
        meta.taken_at, meta.taken_from = local_time(mtime_ns), "file"
    return meta


def _header_exif(img: Image.Image) -> Image.Exif:
    """The EXIF of an opened image, read from its header: Pillow's ``getexif`` decodes a whole PNG
    to look past its pixels for an eXIf chunk, which cameras do not write."""
    if img.format != "PNG":
        return img.getexif()
    exif = Image.Exif()
    raw = img.info.get("exif")
    if raw:
        exif.load(raw)
    return exif


def local_time(ns: int | None) -> str | None:
    """Nanoseconds since the epoch as local wall-clock time, ISO 8601 to the second."""
    if ns is None:
        return None
    try:
        return datetime.fromtimestamp(ns / 1e9).replace(microsecond=0).isoformat()
    except (OverflowError, OSError, ValueError):
        return None  # an mtime no calendar holds


def _read_exif(exif: Image.Exif, meta: PhotoMeta) -> None:
    sub, gps = _ifd(exif, _EXIF_IFD, "Exif", meta), _ifd(exif, _GPS_IFD, "GPS", meta)
    fields = {
        "make": lambda: _text(exif.get(_MAKE)),
        "model": lambda: _text(exif.get(_MODEL)),
        "lens": lambda: _lens(sub),
        "focal_mm": lambda: _number(sub.get(_FOCAL), 0, 10_000),
        "exposure_s": lambda: _number(sub.get(_EXPOSURE), 0, 100_000),
        "f_number": lambda: _number(sub.get(_FNUMBER), 0, 1_000),
        "iso": lambda: _iso(sub.get(_ISO)),
        "orientation": lambda: _orientation(exif.get(_ORIENTATION)),
    }
    for name, read in fields.items():
        _set(meta, name, read)
    _set(meta, "taken_at", lambda: _date(sub.get(_ORIGINAL) or sub.get(_DIGITIZED)))
    if meta.taken_at is not None:
        meta.taken_from = "exif"
        _set(meta, "taken_offset", lambda: _offset(sub.get(_OFFSET_ORIGINAL)))
    if gps:
        _gps(gps, meta)


def _ifd(exif: Image.Exif, tag: int, name: str, meta: PhotoMeta) -> dict:
    try:
        return dict(exif.get_ifd(tag))
    except Exception as e:  # noqa: BLE001 - a broken pointer to the IFD, however Pillow trips on it
        meta.notes.append(f"{name} IFD unreadable ({type(e).__name__})")
        return {}


def _set(meta: PhotoMeta, name: str, read: Any) -> None:
    try:
        setattr(meta, name, read())
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, AttributeError) as e:
        meta.notes.append(f"{name}: {e}"[:200])


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    text = " ".join(value.replace("\x00", " ").split())
    return text[:_TEXT_LIMIT] or None


def _lens(sub: dict) -> str | None:
    make, model = _text(sub.get(_LENS_MAKE)), _text(sub.get(_LENS_MODEL))
    if model and make and not model.lower().startswith(make.lower()):
        return f"{make} {model}"[:_TEXT_LIMIT]
    return model or make


def _number(value: Any, low: float, high: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:  # a raw (numerator, denominator)
        value = value[0] / value[1]
    number = float(value)
    if not math.isfinite(number) or not low < number <= high:
        raise ValueError(f"{number!r} is out of range")
    return round(number, 6)


def _iso(value: Any) -> int | None:
    if isinstance(value, tuple):
        value = value[0] if value else None
    number = _number(value, 0, 10_000_000)
    return None if number is None else int(number)


def _orientation(value: Any) -> int | None:
    if value is None:
        return None
    number = int(value)
    if not 1 <= number <= 8:
        raise ValueError(f"orientation {number} is not 1-8")
    return number


def _date(value: Any) -> str | None:
    text = _text(value)
    if text is None or set(text) <= set("0: "):
        return None  # cameras write "0000:00:00 00:00:00" when they do not know
    parsed = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    if parsed.year < 1800:
        raise ValueError(f"year {parsed.year} is before photography")
    return parsed.isoformat()


_OFFSET = re.compile(r"^([+-])(\d\d):(\d\d)$")


def _offset(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    m = _OFFSET.match(text)
    if m is None or int(m[2]) > 14 or int(m[3]) > 59:
        raise ValueError(f"offset {text!r} is not ±HH:MM")
    return (1 if m[1] == "+" else -1) * (int(m[2]) * 60 + int(m[3]))


def _gps(gps: dict, meta: PhotoMeta) -> None:
    try:
        lat = _degrees(gps.get(2), gps.get(1), "NS", 90)
        lon = _degrees(gps.get(4), gps.get(3), "EW", 180)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, IndexError) as e:
        meta.notes.append(f"gps: {e}"[:200])
        return
    if lat is None or lon is None:
        return
    if lat == 0 and lon == 0:
        meta.notes.append("gps: 0,0 (the camera had no fix)")
        return
    meta.lat, meta.lon = round(lat, 7), round(lon, 7)


def _degrees(value: Any, ref: Any, refs: str, limit: float) -> float | None:
    if value is None:
        return None
    parts = [float(v[0] / v[1]) if isinstance(v, tuple) else float(v) for v in value]
    if len(parts) != 3:
        raise ValueError(f"{len(parts)} parts, not degrees, minutes and seconds")
    if not all(math.isfinite(p) for p in parts) or not 0 <= parts[0] <= limit or not 0 <= parts[1] < 60:
        raise ValueError(f"{parts!r} is no position (degrees 0-{limit:g}, minutes 0-60)")
    if not 0 <= parts[2] < 60:
        raise ValueError(f"{parts!r} is no position (seconds 0-60)")
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    if degrees > limit:
        raise ValueError(f"{degrees!r} degrees is out of range")
    side = _text(ref) or refs[0]
    if side.upper() not in refs:
        raise ValueError(f"reference {side!r} is not {' or '.join(refs)}")
    return -degrees if side.upper() == refs[1] else degrees
