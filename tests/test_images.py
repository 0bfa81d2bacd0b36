"""The one preprocessing: modes, alpha, EXIF, animation, draft(), and every kind of bad file."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from lookalike.errors import BadInput
from lookalike.images import MAX_PIXELS, decode, load_tensor, to_tensor

from conftest import halves, solid

WHITE = (255 - 127) / 128
BLACK = (0 - 127) / 128


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_tensor_shape_dtype_and_scale():
    t = load_tensor(solid((255, 0, 127), (300, 200)))
    assert t.shape == (3, 224, 224) and t.dtype == np.float32 and t.flags.c_contiguous
    assert np.allclose(t[0], WHITE) and np.allclose(t[1], BLACK) and np.allclose(t[2], 0.0)


def test_centre_crop_of_the_shorter_side():
    # 200x100, left red / right blue: the centre crop keeps both halves, split down the middle.
    t = load_tensor(halves((200, 100)))
    red, blue = t[0], t[2]
    assert red[:, :100].mean() > 0.9 and blue[:, :100].mean() < -0.9
    assert blue[:, 124:].mean() > 0.9 and red[:, 124:].mean() < -0.9


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert np.allclose(load_tensor(rgba), WHITE)
    half = Image.new("RGBA", (50, 50), (0, 0, 0, 255))
    half.paste((0, 0, 0, 0), (0, 0, 25, 50))
    t = load_tensor(half)
    assert t[:, :, :100].mean() > 0.9 and t[:, :, 124:].mean() < -0.9


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: Image.new("L", (40, 40), 255), WHITE),
        (lambda: Image.new("LA", (40, 40), (0, 0)), WHITE),  # fully transparent black -> white
        (lambda: Image.new("1", (40, 40), 0), BLACK),
        (lambda: Image.new("CMYK", (40, 40), (0, 0, 0, 0)), WHITE),
        (lambda: Image.new("P", (40, 40), 0), BLACK),  # palette index 0 is black
        # 16-bit grey at half scale must be mid-grey, not clipped to white as convert() would.
        (lambda: Image.fromarray(np.full((40, 40), 32768, np.uint16)), (128 - 127) / 128),
        (lambda: Image.fromarray(np.full((40, 40), 0.5, np.float32)), (128 - 127) / 128),
    ],
)
def test_every_mode_becomes_rgb(make, expected):
    img = make()
    decoded = decode(img)
    assert decoded.image.mode == "RGB"
    assert np.allclose(to_tensor(decoded.image), expected, atol=1 / 128)


def test_palette_transparency_is_white():
    p = Image.new("P", (30, 30), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.info["transparency"] = 1
    png = _bytes(p, "PNG", transparency=1)
    assert np.allclose(load_tensor(png), WHITE)


def test_exif_orientation_is_applied():
    img = halves((200, 100))  # landscape, red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    decoded = decode(_bytes(img, "JPEG", exif=exif, quality=95))
    assert decoded.image.size == (100, 200)
    assert (decoded.width, decoded.height) == (100, 200)
    arr = np.asarray(decoded.image).astype(int)
    assert arr[:90, :, 0].mean() > 200 and arr[110:, :, 2].mean() > 200  # red on top, blue below


def test_animated_gif_uses_the_first_frame():
    frames = [solid((255, 0, 0), (40, 40)), solid((0, 0, 255), (40, 40))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    t = load_tensor(buf.getvalue())
    assert t[0].mean() > 0.9 and t[2].mean() < -0.9


def test_jpeg_draft_decodes_smaller_and_looks_the_same(photos):
    big = photos["astronaut"].resize((2048, 2048))
    jpeg = _bytes(big, "JPEG", quality=90)
    fast, full = decode(jpeg, draft_size=256), decode(jpeg, draft_size=None)
    assert full.image.size == (2048, 2048)
    assert fast.image.size == (256, 256)  # 1/8 scale: both sides still >= 256
    assert (fast.width, fast.height) == (2048, 2048)  # the original's size is reported
    a, b = to_tensor(fast.image).ravel(), to_tensor(full.image).ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


def _png_with_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _bad_files(tmp_path):
    jpeg = _bytes(halves((400, 300)), "JPEG", quality=90)
    png = _bytes(halves((400, 300)), "PNG")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("this is not an image\n")
    return {
        "truncated jpeg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated png": (png[: len(png) // 2], "truncated|corrupt"),
        "corrupt jpeg body": (jpeg[:200] + bytes(range(256)) * 20, "corrupt|truncated"),
        "empty bytes": (b"", "empty file"),
        "empty file": (tmp_path / "empty.jpg", "empty file"),
        "text file": (tmp_path / "notes.txt", "not an image"),
        "directory": (tmp_path / "dir.jpg", "directory"),
        "missing file": (tmp_path / "nope.jpg", "no such file"),
        "decompression bomb": (_png_with_size(100_000, 100_000), "decompression bomb"),
        "wrong type": (12345, "cannot read an image from a int"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "truncated jpeg",
        "truncated png",
        "corrupt jpeg body",
        "empty bytes",
        "empty file",
        "text file",
        "directory",
        "missing file",
        "decompression bomb",
        "wrong type",
    ],
)
def test_bad_files_raise_bad_input_with_a_reason(kind, tmp_path):
    source, reason = _bad_files(tmp_path)[kind]
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            load_tensor(source)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - the test inspects whatever came out
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), f"{kind}: decoding hung"
    err = outcome[0]
    assert isinstance(err, BadInput), f"{kind}: got {err!r}"
    assert pytest.importorskip("re").search(reason, str(err)), f"{kind}: {err}"
    assert "Traceback" not in str(err)


def test_bomb_limit_is_pillows_and_reports_the_size():
    assert MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    # Just over our limit (Pillow only refuses at twice it): our own message, with the size.
    with pytest.raises(BadInput, match=r"10000x10000 \(100 MP\), over the 89 MP limit"):
        decode(_png_with_size(10_000, 10_000))
    with pytest.raises(BadInput, match="decompression bomb"):
        decode(_png_with_size(100_000, 100_000))
