"""A minimal Adobe DNG, written by hand for the camera RAW tests.

No RAW sample ships in any package we may use, so the tests build one: a little-endian TIFF whose IFD0 is the
embedded JPEG preview (what rawpy's ``extract_thumb`` returns) and whose one SubIFD is a small uncompressed 16-bit
RGGB Bayer raw image, with the DNG tags LibRaw needs to accept the file.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

# TIFF field types: (struct format of one value, its size in bytes).
_BYTE, _ASCII, _SHORT, _LONG, _SRATIONAL = 1, 2, 3, 4, 10
_FORMATS = {_BYTE: ("B", 1), _ASCII: ("s", 1), _SHORT: ("H", 2), _LONG: ("I", 4), _SRATIONAL: ("ii", 8)}

Entry = tuple[int, int, "tuple[int, ...] | str"]


def _ifd(entries: list[Entry], offset: int, next_ifd: int = 0) -> bytes:
    """One IFD placed at ``offset``, followed by the values too long for their entry."""
    entries = sorted(entries)
    data_at = offset + 2 + 12 * len(entries) + 4
    head, tail = struct.pack("<H", len(entries)), b""
    for tag, kind, values in entries:
        fmt, size = _FORMATS[kind]
        if isinstance(values, str):
            raw, count = values.encode("ascii") + b"\0", len(values) + 1
        else:
            count = len(values) // (2 if kind == _SRATIONAL else 1)
            raw = struct.pack(f"<{len(values)}{fmt[0]}", *values)
        if count * size <= 4:
            head += struct.pack("<HHI", tag, kind, count) + raw.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, kind, count, data_at + len(tail))
            tail += raw + b"\0" * (len(raw) % 2)
    return head + struct.pack("<I", next_ifd) + tail


def make_dng(
    preview_jpeg: bytes, *, make: str = "Canon", model: str = "EOS R5", width: int = 64, height: int = 48
) -> bytes:
    """A DNG of a ``width`` x ``height`` RGGB mosaic (a gray gradient) whose preview is ``preview_jpeg``.

    LibRaw rejects raw images under 22 pixels a side. ``extract_thumb`` gives back ``preview_jpeg`` byte for byte
    only when its first segment is an Exif APP1 (as cameras write it); otherwise LibRaw inserts one after the SOI.
    """
    if min(width, height) < 22:
        raise ValueError(f"LibRaw rejects a {width}x{height} raw image: both sides must be at least 22 pixels")
    with Image.open(io.BytesIO(preview_jpeg)) as preview:
        preview_width, preview_height = preview.size
    gradient = ((1024 + 8 * (x + y)) % 16384 for y in range(height) for x in range(width))
    pixels = struct.pack(f"<{width * height}H", *gradient)

    def ifds(raw_ifd: int, jpeg_at: int, pixels_at: int) -> tuple[list[Entry], list[Entry]]:
        preview_tags: list[Entry] = [
            (254, _LONG, (1,)),  # NewSubfileType: reduced-resolution preview
            (256, _LONG, (preview_width,)),
            (257, _LONG, (preview_height,)),
            (258, _SHORT, (8, 8, 8)),
            (259, _SHORT, (7,)),  # Compression: JPEG
            (262, _SHORT, (6,)),  # PhotometricInterpretation: YCbCr
            (271, _ASCII, make),
            (272, _ASCII, model),
            (273, _LONG, (jpeg_at,)),
            (277, _SHORT, (3,)),
            (278, _LONG, (preview_height,)),
            (279, _LONG, (len(preview_jpeg),)),
            (284, _SHORT, (1,)),
            (330, _LONG, (raw_ifd,)),  # SubIFDs: the raw image
            (50706, _BYTE, (1, 4, 0, 0)),  # DNGVersion
            (50707, _BYTE, (1, 1, 0, 0)),  # DNGBackwardVersion
            (50708, _ASCII, f"{make} {model}"),  # UniqueCameraModel
            (50721, _SRATIONAL, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)),  # ColorMatrix1: identity
            (50778, _SHORT, (21,)),  # CalibrationIlluminant1: D65
        ]
        raw_tags: list[Entry] = [
            (254, _LONG, (0,)),  # NewSubfileType: the main image
            (256, _LONG, (width,)),
            (257, _LONG, (height,)),
            (258, _SHORT, (16,)),
            (259, _SHORT, (1,)),  # Compression: none
            (262, _SHORT, (32803,)),  # PhotometricInterpretation: CFA
            (273, _LONG, (pixels_at,)),
            (277, _SHORT, (1,)),
            (278, _LONG, (height,)),
            (279, _LONG, (len(pixels),)),
            (284, _SHORT, (1,)),
            (33421, _SHORT, (2, 2)),  # CFARepeatPatternDim
            (33422, _BYTE, (0, 1, 1, 2)),  # CFAPattern: RGGB
            (50714, _LONG, (0,)),  # BlackLevel
            (50717, _LONG, (16383,)),  # WhiteLevel
        ]
        return preview_tags, raw_tags

    # Lay the file out once with dummy offsets to learn the IFDs' sizes, then again for real.
    preview_tags, raw_tags = ifds(0, 0, 0)
    raw_ifd = 8 + len(_ifd(preview_tags, 8))
    jpeg_at = raw_ifd + len(_ifd(raw_tags, raw_ifd))
    pixels_at = jpeg_at + len(preview_jpeg) + len(preview_jpeg) % 2
    preview_tags, raw_tags = ifds(raw_ifd, jpeg_at, pixels_at)
    body = _ifd(preview_tags, 8) + _ifd(raw_tags, raw_ifd) + preview_jpeg + b"\0" * (len(preview_jpeg) % 2)
    return b"II*\0" + struct.pack("<I", 8) + body + pixels
