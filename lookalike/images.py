"""The one image preprocessing, shared by indexing and querying.

decode (JPEG ``draft()`` when it helps) -> first frame -> EXIF transpose -> alpha onto white ->
RGB -> shorter side to 256 and centre crop 224 (one resample of just the crop box) ->
``(x - 127) / 128`` as CHW float32.

Anything that cannot be decoded raises :class:`BadInput` with a reason a person can act on.
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike.errors import BadInput

# Bumped whenever the pixels handed to the model could change, so old workspaces are re-encoded.
PREPROCESS_VERSION = 1

# Pillow's own decompression-bomb threshold (about 89.5 MP): far above any camera photo we expect,
# and keeping ours equal to it means Pillow never warns about an image we then accept.
MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
# Pillow warns at open() about images between its limit and twice it; decode() refuses exactly those
# with a clearer BadInput, so the warning would only be noise on the user's terminal.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning, module="PIL.Image")

# The ImageNet evaluation convention: resize the shorter side to 256/224 of the crop, then crop.
RESIZE_RATIO = 256 / 224

# Camera RAW files: indexed from the preview the camera embedded (rawpy, the ``raw`` extra).
RAW_EXTENSIONS = frozenset(
    ".dng .cr2 .cr3 .nef .nrw .arw .srf .sr2 .orf .rw2 .raf .pef .srw .3fr .iiq .x3f .kdc .mrw .erf .mos".split()
)
# What a folder scan picks up; anything else must be named explicitly (or matched with --glob).
IMAGE_EXTENSIONS = (
    frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
    | RAW_EXTENSIONS
)
# What a user is told lookalike reads, when a file is none of it.
READABLE = "JPEG, PNG, GIF, BMP, WebP, TIFF, HEIC, AVIF and camera RAW"
NOT_AN_IMAGE = f"not an image lookalike can read ({READABLE})"
RAW_EXTRA = "a camera RAW file: install the raw extra to index it (pip install 'lookalike[raw]')"

# HEIC/HEIF through pillow-heif (AVIF is Pillow's own); registered once, for every decode and thumbnail.
pillow_heif.register_heif_opener()

# (x - 127) / 128 for every uint8 value, so normalising is one table lookup.
_NORMALISE_LUT = ((np.arange(256, dtype=np.float32) - 127.0) / 128.0).astype(np.float32)

ImageSource = str | os.PathLike | bytes | BinaryIO | Image.Image


@dataclass
class DecodedImage:
    """An RGB image ready to preprocess, with the original's size (after EXIF rotation)."""

    image: Image.Image
    width: int
    height: int
    format: str | None


def is_raw_name(name: str | os.PathLike | None) -> bool:
    return name is not None and os.path.splitext(os.fspath(name))[1].lower() in RAW_EXTENSIONS


def _open_raw(data: bytes) -> Image.Image:
    """A camera RAW file's embedded preview (most cameras store a full-size JPEG), decoded."""
    try:
        import rawpy
    except ImportError as e:
        raise BadInput(RAW_EXTRA, "raw needs extra") from e
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            thumb = raw.extract_thumb()
    except rawpy.LibRawNoThumbnailError as e:
        raise BadInput("a camera RAW file without an embedded preview to index", "raw without preview") from e
    except (rawpy.LibRawError, OSError, ValueError) as e:
        raise BadInput(NOT_AN_IMAGE, "not an image") from e
    if thumb.format == rawpy.ThumbFormat.JPEG:
        return Image.open(io.BytesIO(bytes(thumb.data)))
    return Image.fromarray(np.asarray(thumb.data))


def _read_bytes(source: ImageSource) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        return Path(source).read_bytes()
    assert hasattr(source, "read")
    source.seek(0)
    return source.read()


def _open(source: ImageSource, name: str | os.PathLike | None = None) -> Image.Image:
    """``source`` opened by Pillow (HEIC and AVIF included), or a RAW file's preview by rawpy: by
    its name's extension where it has one (RAW files are often TIFFs that Pillow would misread),
    else when Pillow knows nothing of its bytes."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, os.PathLike)) and name is None:
        name = source
    try:
        if is_raw_name(name):
            if isinstance(source, (str, os.PathLike)):
                _check_path(Path(source))
            return _open_raw(_read_bytes(source))
        return _open_pillow(source)
    except UnidentifiedImageError:
        if is_raw_name(name) or not _could_be_raw(source):
            raise
        return _open_raw(_read_bytes(source))


# How camera RAW files begin: TIFF (DNG, CR2, NEF, ARW, PEF ...), Canon CR3, Fujifilm RAF, Olympus
# ORF, Panasonic RW2, Sigma X3F.
RAW_MAGIC = (b"II*\x00", b"MM\x00*", b"FUJIFILMCCD-RAW", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FOVb")


def _could_be_raw(source: ImageSource) -> bool:
    """Whether rawpy is worth a try on bytes Pillow refused: they begin as a RAW file does (nothing
    else is handed to LibRaw), and rawpy is installed (else Pillow's refusal stands)."""
    head = bytes(source[:16]) if isinstance(source, (bytes, bytearray, memoryview)) else b""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(16)
    is_raw = head.startswith(RAW_MAGIC) or head[4:12] == b"ftypcrx "
    return is_raw and importlib.util.find_spec("rawpy") is not None


def _check_path(path: Path) -> None:
    """A path that can be read as an image file: it exists, is no directory, and is not empty."""
    if path.is_dir():
        raise BadInput(f"{path} is a directory, not an image", "not a file")
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise BadInput(f"no such file: {path}", "missing file") from e
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}", "unreadable file") from e
    if size == 0:
        raise BadInput("empty file", "empty file")


def _open_pillow(source: ImageSource) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_path(path)
        try:
            return Image.open(path)
        except PermissionError as e:
            raise BadInput(f"permission denied: {path}", "unreadable file") from e
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise BadInput("empty file", "empty file")
        return Image.open(io.BytesIO(source))
    if hasattr(source, "read") and not isinstance(source, Image.Image):
        return Image.open(source)
    raise BadInput(f"cannot read an image from a {type(source).__name__}", "wrong type")


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        # High-bit-depth greyscale: Pillow's convert() clips to 0..255, which turns 16-bit photos
        # white. Scale by the bit depth instead.
        arr = np.asarray(img).astype(np.float64)
        if mode == "F":
            peak = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        elif mode.startswith("I;16") or (arr.size and arr.max() > 255):
            peak = 65535.0 if not arr.size or arr.max() <= 65535 else float(arr.max())
        else:
            peak = 255.0
        grey = np.clip(np.nan_to_num(arr) * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode(
    source: ImageSource,
    *,
    draft_size: int | None = 256,
    max_pixels: int = MAX_PIXELS,
    name: str | os.PathLike | None = None,
) -> DecodedImage:
    """Decode ``source`` into an RGB image.

    ``draft_size``: let the JPEG decoder downscale by 1/2, 1/4 or 1/8 while keeping both sides at
    least this long (``None`` decodes at full size). ``name``: the file's name, for bytes whose
    extension says what they are (camera RAW).
    """
    try:
        img = _open(source, name)
        fmt = img.format
        width, height = img.size
        if width <= 0 or height <= 0:
            raise BadInput(f"image has no pixels ({width}x{height})", "empty image")
        if width * height > max_pixels:
            raise BadInput(
                f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
                "too many pixels",
            )
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated: the first frame stands for the file
        if draft_size and fmt == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        orientation = img.getexif().get(0x0112, 1)
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        img = ImageOps.exif_transpose(img) or img
        rgb = _to_rgb(img)
    except BadInput:
        raise
    except UnidentifiedImageError as e:
        raise BadInput(NOT_AN_IMAGE, "not an image") from e
    except Image.DecompressionBombError as e:
        raise BadInput(f"possible decompression bomb: {e}", "too many pixels") from e
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise BadInput("truncated image: the file ends before the image data does", "truncated image") from e
        raise BadInput(f"corrupt image data: {msg}", "corrupt image") from e
    except MemoryError as e:
        raise BadInput("image too large to decode in memory", "too many pixels") from e
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many types on hostile input
        raise BadInput(f"corrupt image data ({type(e).__name__}: {e})", "corrupt image") from e
    return DecodedImage(rgb, width, height, fmt)


def model_view(width: float, height: float) -> tuple[float, float, float]:
    """The part of a ``width x height`` image the model sees: the centred square (left, top, side),
    in the image's pixels, of side 224/256 of the shorter side."""
    side = min(width, height) / RESIZE_RATIO
    return (width - side) / 2, (height - side) / 2, side


def shrink(tensor: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A preprocessed ``3 x H x W`` tensor resampled to ``3 x size`` (height, width)."""
    h, w = size
    channels = [
        np.asarray(Image.fromarray(c, "F").resize((w, h), Image.Resampling.BILINEAR, reducing_gap=3.0))
        for c in np.asarray(tensor, dtype=np.float32)
    ]
    return np.stack(channels)


def to_tensor(img: Image.Image, size: int = 224) -> np.ndarray:
    """Shorter side to ``size * 256/224``, centre crop ``size``, scale to CHW float32.

    The crop box is computed in source pixels and resampled once, which equals resize-then-crop
    without resampling the pixels the crop throws away.
    """
    left, top, side = model_view(*img.size)
    # reducing_gap=3: a box pre-reduction for big downscales, "indistinguishable from fair
    # resampling" per Pillow's docs, and several times faster on large PNGs.
    crop = img.resize(
        (size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side), reducing_gap=3.0
    )
    arr = _NORMALISE_LUT[np.asarray(crop, dtype=np.uint8)]  # H x W x 3, float32
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_tensor(source: ImageSource, size: int = 224, *, draft: bool = True) -> np.ndarray:
    """Decode and preprocess one image into a ``3 x size x size`` float32 array."""
    draft_size = round(size * RESIZE_RATIO) if draft else None
    return to_tensor(decode(source, draft_size=draft_size).image, size)
