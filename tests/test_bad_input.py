"""Bad and odd input, each with the outcome a user sees; docs/reliability.md tabulates the same cases.

Index cases are built in one folder, with two good photos, and indexed by ONE real `lookalike index
--json` run (then a second run, which must be a no-op). Each case then checks the JSON summary: bad
input is listed in ``skipped_files`` with a specific reason, odd-but-valid input is stored in the
workspace. API cases go through the real FastAPI app in-process, and the slow-body case through a
real uvicorn on loopback.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from dng import make_dng
from fastapi.testclient import TestClient
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

import lookalike
from lookalike import Options
from lookalike.document import display_path
from lookalike.errors import BadInput, ConfigError, NotFound, StoreError
from lookalike.flow.graph import builtin_flow_path
from lookalike.server.app import ServerConfig, create_app
from lookalike.store.workspace import Workspace

from conftest import drop_root_read, free_port, halves, lookalike_cmd, solid, wait_until_ready

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"

# The index flow's file-size limit here: a generated 1 MB file is over it, every other case (the real
# photos included) is well under it.
MAX_FILE_MB = 0.5
# One index run over every case takes a few seconds; far longer means it hangs (a FIFO opened, say).
INDEX_TIMEOUT_S = 120
# The server must answer or drop a request whose body trickles in within this long (uvicorn's
# default keep-alive is 5 s; a slow-body timeout of that order fits well inside it).
SLOW_BODY_BOUND_S = 30
# The server's upload limit in the API cases: far above any small query, far below 2 MB.
MAX_UPLOAD_MB = 1.0

# A file name that is not valid UTF-8 (Latin-1 e-acute): Python keeps the byte as a lone surrogate.
CAFE = os.fsdecode(b"caf\xe9.jpg")

# --- building inputs -----------------------------------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_declaring(width: int, height: int, idat: bool = True) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB, with (almost) no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) if idat else b""
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + data + _png_chunk(b"IEND", b"")


def _gradient(size: tuple[int, int] = (64, 48)) -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float64)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.float64)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1).astype(np.uint8))


def _frames(n: int = 3, size: tuple[int, int] = (48, 48)) -> list[Image.Image]:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    return [solid(colours[i % len(colours)], size) for i in range(n)]


@dataclass(frozen=True)
class IndexCase:
    id: str
    kind: str  # file system | bytes | odd but valid
    make: Callable[[Path, dict[str, Image.Image]], list[str]]  # builds the input; returns its file names
    skipped: str | None = None  # regex the skip message must match; None: the file is indexed
    size: tuple[int, int] | None = None  # width x height the workspace stores for an indexed file


INDEX_CASES: list[IndexCase] = []


def index_case(id: str, kind: str, *, skipped: str | None = None, size: tuple[int, int] | None = None):
    def register(make: Callable[[Path, dict[str, Image.Image]], list[str]]):
        INDEX_CASES.append(IndexCase(id, kind, make, skipped, size))
        return make

    return register


def _write(folder: Path, name: str, data: bytes) -> list[str]:
    (folder / name).write_bytes(data)
    return [name]


# file system


@index_case("fifo", "file system", skipped=r"FIFO")
def _fifo(folder, photos):
    os.mkfifo(folder / "fifo.jpg")  # opening it for reading would block until a writer comes
    return ["fifo.jpg"]


@index_case("symlink-to-device", "file system", skipped=r"character device")
def _device(folder, photos):
    os.symlink("/dev/zero", folder / "zero.jpg")  # endless bytes: reading it never finishes
    return ["zero.jpg"]


@index_case("dangling-symlink", "file system", skipped=r"dangling symlink")
def _dangling(folder, photos):
    os.symlink(folder / "no-such-target.jpg", folder / "dangling.jpg")
    return ["dangling.jpg"]


@index_case("symlink-loop", "file system", skipped=r"symlink loop")
def _loop(folder, photos):
    os.symlink(folder / "loop-b.jpg", folder / "loop-a.jpg")
    os.symlink(folder / "loop-a.jpg", folder / "loop-b.jpg")
    return ["loop-a.jpg", "loop-b.jpg"]


@index_case("unreadable", "file system", skipped=r"[Pp]ermission denied")
def _unreadable(folder, photos):
    (folder / "unreadable.jpg").write_bytes(_encode(photos["coffee"], "JPEG"))
    (folder / "unreadable.jpg").chmod(0)
    return ["unreadable.jpg"]


@index_case("too-large", "file system", skipped=r"too large|over the 0\.5 MB limit")
def _too_large(folder, photos):
    noise = Image.effect_noise((700, 700), 80).convert("RGB")  # noise does not compress: > 1 MB
    data = _encode(noise, "PNG")
    assert len(data) > 2 * MAX_FILE_MB * 1024 * 1024
    return _write(folder, "too-large.png", data)


def _padded_png(size: int) -> bytes:
    """A valid PNG of exactly ``size`` bytes: readers ignore what follows the IEND chunk."""
    data = _encode(_gradient(), "PNG")
    return data + b"\0" * (size - len(data))


_LIMIT_BYTES = int(MAX_FILE_MB * 1024 * 1024)


@index_case("just-over-size-limit", "file system", skipped=r"over the 0\.5 MB limit")
def _just_over(folder, photos):
    return _write(folder, "just-over.png", _padded_png(_LIMIT_BYTES + 4096))


@index_case("just-under-size-limit", "file system", size=(64, 48))
def _just_under(folder, photos):
    return _write(folder, "just-under.png", _padded_png(_LIMIT_BYTES - 4096))


@index_case("non-utf8-name", "file system", size=(451, 300))
def _non_utf8(folder, photos):
    return _write(folder, CAFE, _encode(photos["chelsea"], "JPEG", quality=90))


# bytes


@index_case("empty-file", "bytes", skipped=r"^empty file$")
def _empty(folder, photos):
    return _write(folder, "empty.jpg", b"")


@index_case("truncated-jpeg", "bytes", skipped=r"^truncated image")
def _truncated_jpeg(folder, photos):
    data = _encode(photos["rocket"], "JPEG", quality=90)
    return _write(folder, "truncated.jpg", data[: len(data) // 2])


@index_case("truncated-png", "bytes", skipped=r"^truncated image")
def _truncated_png(folder, photos):
    data = _encode(photos["coins"], "PNG")
    return _write(folder, "truncated.png", data[: len(data) // 2])


@index_case("corrupt-jpeg", "bytes", skipped=r"corrupt image data")
def _corrupt_jpeg(folder, photos):
    data = _encode(photos["camera"], "JPEG", quality=90)
    scan = data.index(b"\xff\xda")  # start of scan: every header before it stays intact
    garbage = np.random.default_rng(0).integers(0, 256, len(data) - scan, dtype=np.uint8).tobytes()
    return _write(folder, "corrupt.jpg", data[: scan + 14] + garbage + b"\xff\xd9")


def _png_with_bad_crc(chunk: bytes) -> bytes:
    """A good PNG whose ``chunk`` (b"IHDR" or b"IDAT") has a CRC that no longer matches its data."""
    data = bytearray(_encode(_gradient(), "PNG"))
    at = data.index(chunk)
    (length,) = struct.unpack(">I", data[at - 4 : at])
    data[at + 4 + length] ^= 0xFF  # the CRC follows the type and the data
    return bytes(data)


@index_case("png-bad-header-crc", "bytes", skipped=r"^not an image")
def _bad_header_crc(folder, photos):
    return _write(folder, "bad-header-crc.png", _png_with_bad_crc(b"IHDR"))


@index_case("png-bad-data-crc", "bytes", size=(64, 48))
def _bad_data_crc(folder, photos):
    # Pillow checks the header's CRC but not the pixel data's: intact pixels decode, so it is indexed.
    return _write(folder, "bad-data-crc.png", _png_with_bad_crc(b"IDAT"))


@index_case("text-named-jpg", "bytes", skipped=r"^not an image")
def _text(folder, photos):
    return _write(folder, "notes.jpg", b"Shopping list:\n- milk\n- eggs\n")


@index_case("zip-named-jpg", "bytes", skipped=r"^not an image")
def _zip(folder, photos):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hello")
    return _write(folder, "archive.jpg", buf.getvalue())


@index_case("html-then-jpeg", "bytes", skipped=r"^not an image")
def _html(folder, photos):
    html = b"<!DOCTYPE html><html><body><img src='#'></body></html>\n"
    return _write(folder, "page.jpg", html + _encode(_gradient(), "JPEG"))


@index_case("gifar", "bytes", size=(64, 48))
def _gifar(folder, photos):
    # A GIF with a zip appended (the "GIFAR" trick): image readers stop at the GIF trailer.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return _write(folder, "gifar.gif", _encode(_gradient(), "GIF") + buf.getvalue())


@index_case("decompression-bomb", "bytes", skipped=r"decompression bomb")
def _bomb(folder, photos):
    return _write(folder, "bomb.png", _png_declaring(30_000, 30_000))  # 900 MP in 100 bytes


@index_case("png-0x0", "bytes", skipped=r"no pixels|not an image|corrupt")
def _zero(folder, photos):
    return _write(folder, "zero-by-zero.png", _png_declaring(0, 0))


@index_case("png-header-only", "bytes", skipped=r"truncated|corrupt")
def _header_only(folder, photos):
    return _write(folder, "header-only.png", _png_declaring(64, 48, idat=False))


@index_case("jpeg-header-only", "bytes", skipped=r"truncated|corrupt|not an image")
def _jpeg_header_only(folder, photos):
    data = _encode(_gradient(), "JPEG")
    return _write(folder, "header-only.jpg", data[: data.index(b"\xff\xda")])


# odd but valid


@index_case("cmyk-jpeg", "odd but valid", size=(64, 48))
def _cmyk(folder, photos):
    return _write(folder, "cmyk.jpg", _encode(_gradient().convert("CMYK"), "JPEG"))


@index_case("grey16-png", "odd but valid", size=(64, 48))
def _grey16(folder, photos):
    arr = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    return _write(folder, "grey16.png", _encode(Image.fromarray(arr), "PNG"))


@index_case("palette-transparency-png", "odd but valid", size=(30, 20))
def _palette(folder, photos):
    p = Image.new("P", (30, 20), 1)
    p.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    p.paste(0, (0, 0, 15, 20))
    return _write(folder, "palette.png", _encode(p, "PNG", transparency=1))


def _oriented(n: int):
    def make(folder, photos):
        exif = Image.Exif()
        exif[0x0112] = n
        return _write(folder, f"exif-{n}.jpg", _encode(halves((200, 100)), "JPEG", exif=exif, quality=95))

    return make


for _n in range(2, 9):  # 5..8 turn the image a quarter: the stored size is the displayed one
    index_case(f"exif-orientation-{_n}", "odd but valid", size=(100, 200) if _n >= 5 else (200, 100))(_oriented(_n))


@index_case("animated-gif", "odd but valid", size=(48, 48))
def _gif(folder, photos):
    frames = _frames()
    return _write(folder, "animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))


@index_case("animated-webp", "odd but valid", size=(48, 48))
def _webp(folder, photos):
    frames = _frames()
    return _write(folder, "animated.webp", _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]))


@index_case("apng", "odd but valid", size=(48, 48))
def _apng(folder, photos):
    frames = _frames()
    return _write(folder, "animated.png", _encode(frames[0], "PNG", save_all=True, append_images=frames[1:]))


@index_case("multipage-tiff", "odd but valid", size=(48, 48))
def _tiff(folder, photos):
    frames = _frames()
    return _write(folder, "pages.tif", _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))


@index_case("one-pixel", "odd but valid", size=(1, 1))
def _one(folder, photos):
    return _write(folder, "one-pixel.png", _encode(solid((10, 200, 30), (1, 1)), "PNG"))


@index_case("grey-alpha-png", "odd but valid", size=(64, 48))
def _la(folder, photos):
    return _write(folder, "grey-alpha.png", _encode(_gradient().convert("LA"), "PNG"))


@index_case("bilevel-png", "odd but valid", size=(64, 48))
def _bilevel(folder, photos):
    return _write(folder, "bilevel.png", _encode(_gradient().convert("1"), "PNG"))


@index_case("very-wide", "odd but valid", size=(4000, 10))
def _wide(folder, photos):
    return _write(folder, "wide.png", _encode(_gradient((4000, 10)), "PNG"))


@index_case("png-named-jpg", "odd but valid", size=(64, 48))
def _misnamed(folder, photos):
    return _write(folder, "really-a-png.jpg", _encode(_gradient(), "PNG"))


@index_case("upper-case-extension", "odd but valid", size=(64, 48))
def _upper(folder, photos):
    return _write(folder, "SHOUTING.JPG", _encode(_gradient(), "JPEG"))


@index_case("heic", "odd but valid", size=(64, 48))
def _heic(folder, photos):
    return _write(folder, "iphone.heic", _encode(_gradient(), "HEIF"))


@index_case("avif", "odd but valid", size=(64, 48))
def _avif(folder, photos):
    return _write(folder, "phone.avif", _encode(_gradient(), "AVIF"))


@index_case("raw-dng", "odd but valid", size=(64, 48))
def _dng(folder, photos):
    return _write(folder, "camera.dng", make_dng(_encode(_gradient(), "JPEG")))


@index_case("truncated-heic", "bytes", skipped=r"truncated|corrupt|not an image")
def _truncated_heic(folder, photos):
    data = _encode(_gradient(), "HEIF")
    return _write(folder, "half.heic", data[: len(data) // 2])


def _hostile_exif() -> bytes:
    """EXIF a camera would never write: a GPS position of NaN (0/0), a 4-gigametre focal length, an
    exposure over zero, orientation 99, a date of "yesterday" and a 10,000-character make."""
    info = Image.Exif()
    info[0x010F], info[0x0112] = "X" * 10_000, 99
    sub = info.get_ifd(0x8769)
    sub[0x9003], sub[0x920A], sub[0x829A] = "yesterday", IFDRational(4294967295, 1), IFDRational(1, 0)
    gps = info.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = (
        "N",
        (IFDRational(0, 0), IFDRational(0, 1), IFDRational(0, 1)),
        "E",
        (1.0, 0.0, 0.0),
    )
    return _encode(_gradient(), "JPEG", exif=info)


@index_case("hostile-exif", "odd but valid", size=(64, 48))
def _exif(folder, photos):
    return _write(folder, "hostile-exif.jpg", _hostile_exif())


# --- one index run over every case ---------------------------------------------------------------------


@dataclass
class IndexRun:
    folder: Path
    workspace: Path
    names: dict[str, list[str]]  # case id -> its file names
    good: list[str]
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    can_refuse_root: bool  # root's read-anything capabilities could be dropped for the run

    def summary(self, which: str = "first") -> dict[str, Any]:
        done = self.first if which == "first" else self.second
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def path(self, name: str) -> str:
        return str(self.folder / name)


def _index(prefix: list[str], args: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [*prefix, *lookalike_cmd(), "index", *args, "--json"],
            capture_output=True,
            text=True,
            timeout=INDEX_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"lookalike index hung: no answer in {INDEX_TIMEOUT_S}s; stderr: {e.stderr!r}") from e


@pytest.fixture(scope="module")
def index_run(model_dir, photos, tmp_path_factory) -> IndexRun:
    root = tmp_path_factory.mktemp("bad-input")
    folder = root / "cases"
    folder.mkdir()
    good = ["astronaut.jpg", "coffee.jpg"]
    for name in good:
        photos[name.removesuffix(".jpg")].save(folder / name, quality=90)
    names = {case.id: case.make(folder, photos) for case in INDEX_CASES}
    # The built-in index flow with a small loader limit, so that a 1 MB file is over it.
    flow_yaml = yaml.safe_load(builtin_flow_path("index").read_text())
    flow_yaml["pods"]["loader"].setdefault("with", {})["max_file_mb"] = MAX_FILE_MB
    flow = root / "small-files.yml"
    flow.write_text(yaml.safe_dump(flow_yaml, sort_keys=False))  # pod order is flow order

    prefix = drop_root_read()
    can_refuse_root = os.geteuid() != 0
    if prefix:
        probe = subprocess.run([*prefix, "cat", str(folder / "unreadable.jpg")], capture_output=True)
        can_refuse_root = probe.returncode != 0
        prefix = prefix if can_refuse_root else []
    args = [str(folder), "-w", str(root / "ws"), "--flow", str(flow)]
    first = _index(prefix, args)
    second = _index(prefix, args)
    return IndexRun(folder, root / "ws", names, good, first, second, can_refuse_root)


@pytest.fixture(scope="module")
def stored(index_run) -> dict[str, Any]:
    """What the workspace holds after the first run: uri -> stored document."""
    index_run.summary()
    with Workspace.open(index_run.workspace, writer=False, create=False) as ws:
        return ws.store.docs_by_uri()


def _skips(summary: dict[str, Any]) -> dict[str, str]:
    return {s["path"]: s["reason"] for s in summary["skipped_files"]}


def test_the_good_photos_are_indexed_and_the_run_reports_every_case(index_run, stored):
    summary = index_run.summary()
    for name in index_run.good:
        assert index_run.path(name) in stored
    n_good = sum(len(index_run.names[c.id]) for c in INDEX_CASES if c.skipped is None) + len(index_run.good)
    n_bad = sum(len(index_run.names[c.id]) for c in INDEX_CASES if c.skipped is not None)
    if not index_run.can_refuse_root:
        n_good += 1  # root reads the chmod 000 file anyway
        n_bad -= 1
    assert summary["indexed"] == n_good and summary["docs"] == n_good
    assert summary["skipped_total"] == n_bad == len(summary["skipped_files"])
    assert "Traceback" not in index_run.first.stderr


@pytest.mark.parametrize("case", INDEX_CASES, ids=lambda c: c.id)
def test_index_case(case: IndexCase, index_run, stored):
    if case.id == "unreadable" and not index_run.can_refuse_root:
        pytest.skip("running as root, and setpriv could not drop CAP_DAC_OVERRIDE: root reads a chmod 000 file")
    skips = _skips(index_run.summary())
    for name in index_run.names[case.id]:
        path = index_run.path(name)
        shown = display_path(path)
        if case.skipped is None:
            assert shown not in skips, f"{name} was skipped: {skips.get(shown)}"
            doc = stored.get(path) or stored.get(shown)
            assert doc is not None, f"{name} is neither indexed nor listed as skipped"
            assert (doc.width, doc.height) == case.size
        else:
            assert shown in skips, f"{name} is not listed as skipped; skipped: {sorted(skips)}"
            assert re.search(case.skipped, skips[shown]), skips[shown]
            assert f"skipped {shown}: {skips[shown]}" in index_run.first.stderr  # what the user reads
            assert path not in stored and shown not in stored


def test_indexing_again_is_a_no_op_that_still_lists_the_bad_files(index_run):
    first, second = index_run.summary(), index_run.summary("second")
    assert (second["indexed"], second["updated"], second["encoded"], second["removed"]) == (0, 0, 0, 0)
    assert second["unchanged"] == first["indexed"] and second["docs"] == first["docs"]
    assert _skips(second).keys() == _skips(first).keys()
    for path, reason in _skips(first).items():
        assert _skips(second)[path].startswith(reason)


def test_a_file_just_over_the_size_limit_is_not_said_to_be_the_limit(index_run):
    """4 KB over 0.5 MB: the message must tell the two sizes apart, not read "0.5 MB is over the 0.5 MB limit"."""
    message = _skips(index_run.summary())[index_run.path("just-over.png")]
    found = re.match(r"(\S+ \S+) is over the (\S+ \S+) limit", message)
    assert found is not None and found[1] != found[2], message


def test_a_file_name_that_is_not_utf8_is_searchable_and_shown_escaped(index_run):
    (name,) = index_run.names["non-utf8-name"]
    path = index_run.path(name)
    shown = display_path(path)
    assert shown.endswith("caf\\xe9.jpg")
    args = [*lookalike_cmd(), "search", path, "-w", str(index_run.workspace), "-k", "3"]
    text = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    assert re.match(rf"\s*1\s+1\.000\s+same\s+{re.escape(shown)}\s", text.stdout), text.stdout
    done = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    first = found["results"][0]
    assert first["path"] == shown and first["score"] == pytest.approx(1.0, abs=1e-4)
    # JSON has no way to carry a lone surrogate as text: the query is shown escaped, like the path
    assert found["query"] == shown


# --- odd paths on the command line ----------------------------------------------------------------------

# A folder named "x[" holding one named "y]": a path with "[/y]" in it, which rich reads as a closing tag.
MARKUP_DIR = ("x[", "y]")


@dataclass(frozen=True)
class CliCase:
    id: str
    args: Callable[[IndexRun, Path], list[str]]  # (the index run, a temporary folder) -> lookalike's arguments
    shows: Callable[[IndexRun, Path], str]  # -> a regex that some line of stdout must match


def _markup_dir(tmp: Path, index_run: IndexRun) -> Path:
    folder = tmp.joinpath(*MARKUP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(index_run.path("astronaut.jpg"), folder / "astronaut-copy.jpg")
    return folder


CLI_CASES = [
    CliCase(
        "markup-in-workspace-path",
        lambda run, tmp: ["index", str(_markup_dir(tmp, run)), "-w", str(_markup_dir(tmp, run) / "ws")],
        lambda run, tmp: rf"; workspace {re.escape(str(_markup_dir(tmp, run) / 'ws'))} holds 1 images$",
    ),
    CliCase(
        "markup-in-query-path",
        lambda run, tmp: (
            ["search", str(_markup_dir(tmp, run) / "astronaut-copy.jpg"), run.path("coffee.jpg")]
            + ["-w", str(run.workspace), "-k", "1"]
        ),
        lambda run, tmp: rf"^{re.escape(str(_markup_dir(tmp, run) / 'astronaut-copy.jpg'))}$",  # its header
    ),
    CliCase(
        "non-utf8-query-among-several",
        lambda run, tmp: ["search", run.path(CAFE), run.path("coffee.jpg")] + ["-w", str(run.workspace), "-k", "1"],
        lambda run, tmp: rf"^{re.escape(display_path(run.path(CAFE)))}$",  # its header
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_case(case: CliCase, index_run, tmp_path):
    done = subprocess.run(
        [*lookalike_cmd(), *case.args(index_run, tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert re.search(case.shows(index_run, tmp_path), done.stdout, re.MULTILINE), done.stdout


@dataclass(frozen=True)
class CliErrorCase:
    id: str
    args: Callable[[IndexRun], list[str]]  # (the index run) -> lookalike's arguments
    env: dict[str, str]  # variables set for the run
    code: int  # the exit code
    message: str  # a regex the one line on stderr must match


CLI_ERROR_CASES = [
    CliErrorCase(
        "like-not-indexed",
        lambda run: ["search", "--like", str(run.workspace.parent / "nope.jpg"), "-w", str(run.workspace)],
        {},
        NotFound.exit_code,
        r"^error: no indexed photo at .*/nope\.jpg$",
    ),
    CliErrorCase(
        "like-and-an-image",
        lambda run: ["search", run.path("coffee.jpg"), "--like", run.path("coffee.jpg"), "-w", str(run.workspace)],
        {"COLUMNS": "200"},
        2,
        r"give query images, --like PATH_OR_ID or --tag WORD, not IMAGES and --like",
    ),
    CliErrorCase(
        "cli-filter-bad-date",
        lambda run: ["list", "-w", str(run.workspace), "--taken-after", "2024-02-30"],
        {"COLUMNS": "200"},
        2,
        r"--taken-after: taken_after must be a date \(YYYY-MM-DD\), not '2024-02-30'",
    ),
    CliErrorCase(
        "cli-filter-latitude-out-of-range",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace), "--near", "95,2.3,10"],
        {"COLUMNS": "200"},
        2,
        r"--near: near\.lat must be between -90 and 90, not 95\.0",
    ),
    CliErrorCase(
        "cli-list-bad-cursor",
        lambda run: ["list", "-w", str(run.workspace), "--cursor", "not-a-cursor"],
        {},
        BadInput.exit_code,
        r"^error: cursor: not a cursor this listing gave \(pass next_cursor as it came\)$",
    ),
    CliErrorCase(
        "dupes-undo-unknown-batch",
        lambda run: ["dupes", "-w", str(run.workspace), "--undo", "20240101-000000-beef"],
        {},
        NotFound.exit_code,
        r"^error: no move batch '20240101-000000-beef' \(`lookalike dupes --moves` lists them\)$",
    ),
    CliErrorCase(
        "dupes-batch-without-undo",
        lambda run: ["dupes", "-w", str(run.workspace), "20240101-000000-beef"],
        {"COLUMNS": "200"},
        2,
        r"Invalid value for BATCH: a BATCH is only for --undo",
    ),
    CliErrorCase(
        "setting-not-a-number",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace)],
        {"LOOKALIKE_TOP_K": "lots"},
        ConfigError.exit_code,
        r"^error: LOOKALIKE_TOP_K='lots' is not a whole number$",
    ),
    CliErrorCase(
        "setting-out-of-range",
        lambda run: ["info", "-w", str(run.workspace)],
        {"LOOKALIKE_MAX_BATCH": "0"},
        ConfigError.exit_code,
        r"^error: LOOKALIKE_MAX_BATCH=0 is out of range 1\.\.256$",
    ),
    CliErrorCase(
        "setting-bad-size",
        lambda run: ["info", "-w", str(run.workspace)],
        {"LOOKALIKE_INDEX_MEMORY": "plenty"},
        ConfigError.exit_code,
        r"^error: LOOKALIKE_INDEX_MEMORY='plenty' is not a size such as 2GB or 512MB$",
    ),
    CliErrorCase(
        "watch-poll-zero",
        lambda run: ["watch", "-w", str(run.workspace), "--poll", "0"],
        {"COLUMNS": "200"},
        2,
        r"Invalid value for '--poll': Input should be greater than or equal to 0\.1",
    ),
    CliErrorCase(
        "watch-settle-negative",
        lambda run: ["watch", "-w", str(run.workspace), "--settle", "-1"],
        {"COLUMNS": "200"},
        2,
        r"Invalid value for '--settle': Input should be greater than or equal to 0",
    ),
    CliErrorCase(
        "watch-max-watches-zero",
        lambda run: ["watch", "-w", str(run.workspace), "--max-watches", "0"],
        {"COLUMNS": "200"},
        2,
        r"Invalid value for '--max-watches': Input should be greater than or equal to 1",
    ),
    CliErrorCase(
        "watch-setting-not-a-number",
        lambda run: ["watch", "-w", str(run.workspace)],
        {"LOOKALIKE_WATCH_SETTLE": "soon"},
        ConfigError.exit_code,
        r"^error: LOOKALIKE_WATCH_SETTLE='soon' is not a number$",
    ),
    CliErrorCase(
        "watch-not-a-folder",
        lambda run: ["watch", str(run.workspace.parent / "no-such-folder"), "-w", str(run.workspace)],
        {},
        NotFound.exit_code,
        r"^error: no such folder to watch: .*/no-such-folder$",
    ),
    CliErrorCase(
        "person-filter-without-faces",
        lambda run: ["list", "-w", str(run.workspace), "--person", "Ann"],
        {},
        NotFound.exit_code,
        r"^error: this workspace holds no faces: index it with faces \(`lookalike index --reset --faces PATH`\)$",
    ),
    CliErrorCase(
        "people-without-faces",
        lambda run: ["people", "-w", str(run.workspace)],
        {},
        NotFound.exit_code,
        r"^error: this workspace holds no faces",
    ),
    CliErrorCase(
        "faces-and-preset-default",
        lambda run: ["index", run.path("coffee.jpg"), "-w", str(run.workspace), "--faces", "--preset", "default"],
        {"COLUMNS": "200"},
        2,
        r"--faces is the faces preset; leave out --preset default",
    ),
    CliErrorCase(
        "search-box-outside-the-photo",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace), "--box", "0.5,0.5,0.2,0.9"],
        {"COLUMNS": "200"},
        2,
        r"is not inside the photo: give x0,y0,x1,y1 as fractions",
    ),
    CliErrorCase(
        "search-box-not-four-numbers",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace), "--box", "left,top"],
        {"COLUMNS": "200"},
        2,
        r"box must be four numbers x0,y0,x1,y1",
    ),
    CliErrorCase(
        "search-box-without-regions",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace), "--box", "0,0,1,1"],
        {},
        ConfigError.exit_code,
        r"^error: this workspace holds no regions, so it cannot be searched by a box: "
        r"index it with `lookalike index --reset --regions PATH`$",
    ),
    CliErrorCase(
        "search-box-and-face",
        lambda run: ["search", run.path("coffee.jpg"), "-w", str(run.workspace), "--box", "0,0,1,1", "--face", "0"],
        {"COLUMNS": "200"},
        2,
        r"search by a face \(--face\) or by a part of the photo \(--box\), not both",
    ),
    CliErrorCase(
        "index-faces-and-regions",
        lambda run: ["index", run.path("coffee.jpg"), "-w", str(run.workspace), "--faces", "--regions"],
        {"COLUMNS": "200"},
        2,
        r"a workspace holds faces or regions, not both yet",
    ),
    CliErrorCase(
        "explain-result-not-indexed",
        lambda run: ["explain", run.path("coffee.jpg"), "no-such-photo", "-w", str(run.workspace)],
        {},
        NotFound.exit_code,
        r"^error: no indexed document 'no-such-photo'$",
    ),
    CliErrorCase(
        "explain-query-not-a-file",
        lambda run: ["explain", run.path("gone.jpg"), run.path("coffee.jpg"), "-w", str(run.workspace)],
        {},
        NotFound.exit_code,
        r"^error: no indexed photo at .*/gone\.jpg$",
    ),
    CliErrorCase(
        "people-move-face-not-a-number",
        lambda run: ["people", "-w", str(run.workspace), "move", "left", "none"],
        {"COLUMNS": "200"},
        2,
        r"Invalid value for 'FACE': Input should be a valid integer",
    ),
]


@pytest.mark.parametrize("case", CLI_ERROR_CASES, ids=lambda c: c.id)
def test_cli_error_case(case: CliErrorCase, index_run):
    done = subprocess.run(
        [*lookalike_cmd(), *case.args(index_run)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **case.env},
    )
    assert done.returncode == case.code, (done.stdout, done.stderr)
    assert re.search(case.message, done.stderr.strip(), re.MULTILINE), done.stderr
    assert "Traceback" not in done.stderr


@dataclass(frozen=True)
class MissingExtraCase:
    id: str
    module: str  # what is not installed
    args: Callable[[IndexRun, Path], list[str]]  # (the index run, a scratch folder) -> lookalike's arguments
    message: str


MISSING_EXTRA_CASES = [
    MissingExtraCase(
        "extra-plot-missing",
        "matplotlib",
        lambda run, tmp: ["eval", str(run.workspace.parent), "--plot", str(tmp / "p.png")],
        r"^error: --plot needs matplotlib: pip install 'lookalike\[plot\]'$",
    ),
    MissingExtraCase(
        "extra-remote-missing",
        "httpx",
        lambda run, tmp: ["index", str(tmp), "-w", str(tmp / "ws"), "--flow", str(_remote_flow(tmp))],
        r"^error: pods that call an executor service \(host/port or docker://\) need httpx: "
        r"pip install 'lookalike\[remote\]'$",
    ),
]


def _remote_flow(tmp: Path) -> Path:
    flow = tmp / "remote.yml"
    flow.write_text("pods:\n  loader: {uses: ImageReader}\n  encoder: {host: 127.0.0.1, port: 9}\n")
    return flow


@pytest.mark.parametrize("case", MISSING_EXTRA_CASES, ids=lambda c: c.id)
def test_a_missing_extra_is_one_line_naming_it_before_any_work(case: MissingExtraCase, index_run, tmp_path):
    """An optional feature whose extra is not installed says which extra, at once (eval does not
    index first). The module is hidden as if uninstalled: a package of that name that fails to import."""
    hidden = tmp_path / "hidden"
    (hidden / case.module).mkdir(parents=True)
    (hidden / case.module / "__init__.py").write_text("raise ImportError('not installed (hidden by the test)')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [*lookalike_cmd(), *case.args(index_run, tmp_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == ConfigError.exit_code, (done.stdout, done.stderr)
    assert re.search(case.message, done.stderr.strip()), done.stderr
    assert "Traceback" not in done.stderr and "indexing" not in done.stderr


# --- the Python API -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonCase:
    id: str
    call: Callable[[Path], object]  # (a workspace) -> what raises
    error: type[Exception]
    message: str  # a regex the error's text must match


def _search(request: dict[str, Any]) -> Callable[[Path], object]:
    def call(ws: Path) -> object:
        with lookalike.open(Options(workspace=ws), write=False) as library:
            return library.search(lookalike.SearchRequest(**request))

    return call


def _move(doc_ids: list[str] | None, folder: str) -> Callable[[Path], object]:
    """Library.move of ``doc_ids`` (None: the first indexed document) into ``folder``."""

    def call(ws: Path) -> object:
        with lookalike.open(Options(workspace=ws)) as library:
            ids = doc_ids if doc_ids is not None else [next(library.workspace.store.iter_docs()).id]
            return library.move(ids, folder)

    return call


def _undo(ws: Path) -> object:
    with lookalike.open(Options(workspace=ws)) as library:
        return library.undo_move()


PYTHON_CASES = [
    PythonCase("move-no-documents", _move([], "dupes"), BadInput, r"^name at least one document to move$"),
    PythonCase(
        "move-outside-the-folders",
        _move(None, "/"),
        BadInput,
        r"^/ is outside the indexed folders and the trash folder .*/trash: move files only within them$",
    ),
    PythonCase(
        "move-traversal", _move(None, "../../etc"), BadInput, r"^\.\./\.\./etc: a destination may not climb out"
    ),
    PythonCase(
        "undo-nothing-moved", _undo, NotFound, r"^nothing to undo: no files were moved, or every move was undone$"
    ),
    PythonCase("request-with-no-query", _search({}), BadInput, r"^a search needs exactly one of image, like and tag$"),
    PythonCase(
        "request-with-two-queries",
        _search({"image": b"", "tag": "bird"}),
        BadInput,
        r"^a search needs exactly one of image, like and tag, not image and tag$",
    ),
    PythonCase(
        "request-top-k-0", _search({"tag": "bird", "top_k": 0}), BadInput, r"^top_k must be between 1 and 1000, got 0$"
    ),
    PythonCase(
        "request-min-match-unknown",
        _search({"tag": None, "image": b"x", "min_match": "close"}),
        BadInput,
        r"^min_match must be one of same, near_duplicate, similar, weak, not 'close'$",
    ),
    PythonCase(
        "request-min-match-with-a-tag",
        _search({"tag": "bird", "min_match": "similar"}),
        BadInput,
        r"^min_match cannot be used with a tag search",
    ),
    PythonCase("request-blank-tag", _search({"tag": "  "}), BadInput, r"^the tag query is empty$"),
    PythonCase(
        "request-image-of-another-type",
        _search({"image": 42}),
        BadInput,
        r"^a query image must be a path or bytes, not int$",
    ),
    PythonCase("request-empty-image", _search({"image": b""}), BadInput, r"^query image: empty file$"),
    PythonCase(
        "open-a-missing-workspace",
        lambda ws: lookalike.open(Options(workspace=ws.parent / "nowhere"), write=False),
        StoreError,
        r"^no workspace at .*nowhere",
    ),
    PythonCase(
        "request-face-with-a-tag",
        _search({"tag": "bird", "face": 0}),
        BadInput,
        r"^face picks a face of the query photo: a number from 0, with image or like$",
    ),
    PythonCase(
        "search-by-face-without-faces",
        _search({"image": _encode(_gradient(), "PNG"), "face": 0}),
        ConfigError,
        r"^this workspace holds no faces: index it with `lookalike index --reset --faces PATH`$",
    ),
    PythonCase(
        "request-box-outside-the-photo",
        _search({"image": b"x", "box": (0.5, 0.5, 0.2, 0.9)}),
        BadInput,
        r"^box 0.5,0.5,0.2,0.9 is not inside the photo: give x0,y0,x1,y1 as fractions with 0 <= x0 < x1 <= 1",
    ),
    PythonCase(
        "request-box-with-a-tag",
        _search({"tag": "bird", "box": (0, 0, 1, 1)}),
        BadInput,
        r"^box searches by a part of a photo: give it with image or like, not with tag or face$",
    ),
    PythonCase(
        "request-box-with-min-match",
        _search({"image": b"x", "box": (0, 0, 1, 1), "min_match": "similar"}),
        BadInput,
        r"^min_match cannot be used with a box: match levels are measured for whole photos, not their parts$",
    ),
    PythonCase(
        "search-by-box-without-regions",
        _search({"image": _encode(_gradient(), "PNG"), "box": (0, 0, 1, 1)}),
        ConfigError,
        r"^this workspace holds no regions, so it cannot be searched by a box: "
        r"index it with `lookalike index --reset --regions PATH`$",
    ),
    PythonCase(
        "explain-two-queries",
        lambda ws: lookalike.ExplainRequest("r", image=b"x", like="d"),
        BadInput,
        r"^explain needs exactly one query: an image or a stored photo \(like\)$",
    ),
    PythonCase(
        "library-people-without-faces",
        lambda ws: lookalike.open(Options(workspace=ws), write=False).people.person("Ann"),
        NotFound,
        r"^this workspace holds no faces: index it with faces \(`lookalike index --reset --faces PATH`\)$",
    ),
    PythonCase(
        "filter-too-many-people",
        lambda ws: lookalike.Filters(people=tuple(str(i) for i in range(21))),
        BadInput,
        r"^person: at most 20 people, not 21$",
    ),
]


@pytest.mark.parametrize("case", PYTHON_CASES, ids=lambda c: c.id)
def test_python_case(case: PythonCase, index_run):
    with pytest.raises(case.error) as raised:
        case.call(index_run.workspace)
    assert re.search(case.message, str(raised.value)), str(raised.value)


# --- the API ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_workspace(model_dir, photos, tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("bad-api")
    (root / "photos").mkdir()
    paths = []
    for name in ("astronaut", "coffee", "chelsea"):
        paths.append(root / "photos" / f"{name}.jpg")
        photos[name].save(paths[-1], quality=90)
    with lookalike.open(Options(workspace=root / "ws")) as library:
        library.index([root / "photos"])
    return root / "ws", paths


@pytest.fixture(scope="module")
def api(api_workspace):
    ws, _ = api_workspace
    config = ServerConfig(Options(workspace=ws, max_upload_mb=MAX_UPLOAD_MB), read_only=True)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").text
            time.sleep(0.05)
        yield client


def _data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


@dataclass(frozen=True)
class ApiCase:
    id: str
    call: Callable[[TestClient, str], httpx.Response]  # (client, a good query's data URI) -> response
    status: int
    type: str
    message: str  # regex the error message must match


def _json(body: bytes, ctype: str = "application/json", **headers: str) -> Callable[[TestClient, str], Any]:
    return lambda c, q: c.post("/api/search", content=body, headers={"content-type": ctype, **headers})


def _truncated(uri: str) -> str:
    """The data URI of the first half of the image in ``uri``."""
    data = base64.b64decode(uri.split(",", 1)[1])
    return _data_uri(data[: len(data) // 2])


_TINY_PNG = _encode(solid((1, 2, 3), (2, 2)), "PNG")
_SEND_JSON = r"^send JSON, or multipart/form-data with a 'file' field$"
_NO_DOC = r"^no indexed document '0{16}'$"

API_CASES = [
    ApiCase("malformed-json", _json(b'{"data": ['), 400, "BadInput", _SEND_JSON),
    ApiCase("empty-body", _json(b""), 400, "BadInput", _SEND_JSON),
    ApiCase("json-list", _json(b"[1, 2]"), 422, "ValidationError", r"^Input should be an object$"),
    ApiCase("json-string", _json(b'"astronaut"'), 422, "ValidationError", r"^Input should be an object$"),
    ApiCase(
        "top-k-string",
        lambda c, q: c.post("/api/search", json={"data": [q], "top_k": "many"}),
        422,
        "ValidationError",
        r"^top_k: Input should be a valid integer",
    ),
    ApiCase(
        "top-k-negative",
        lambda c, q: c.post("/api/search", json={"data": [q], "top_k": -3}),
        422,
        "ValidationError",
        r"^top_k: Input should be greater than or equal to 1$",
    ),
    ApiCase(
        "top-k-10000",
        lambda c, q: c.post("/api/search", json={"data": [q], "top_k": 10000}),
        422,
        "ValidationError",
        r"^top_k: Input should be less than or equal to 1000$",
    ),
    ApiCase(
        "data-not-a-list",
        lambda c, q: c.post("/api/search", json={"data": q}),
        422,
        "ValidationError",
        r"^data: Input should be a valid array$",
    ),
    ApiCase(
        "data-empty-list",
        lambda c, q: c.post("/api/search", json={"data": []}),
        422,
        "ValidationError",
        r"^data: List should have at least 1 item",
    ),
    ApiCase(
        "data-uri-without-base64",
        lambda c, q: c.post("/api/search", json={"data": ["data:image/png,hello"]}),
        400,
        "BadInput",
        r"^data\[0\] is a data URI without ;base64$",
    ),
    ApiCase(
        "data-uri-bad-base64",
        lambda c, q: c.post("/api/search", json={"data": ["data:image/png;base64,@@not base64@@"]}),
        400,
        "BadInput",
        r"^data\[0\] is not valid base64$",
    ),
    ApiCase(
        "data-uri-of-text",
        lambda c, q: c.post("/api/search", json={"data": [_data_uri(b"just some text\n", "image/png")]}),
        400,
        "BadInput",
        r"^query image: not an image",
    ),
    ApiCase(
        "data-uri-truncated-image",
        lambda c, q: c.post("/api/search", json={"data": [_truncated(q)]}),
        400,
        "BadInput",
        r"^query image: truncated image",
    ),
    ApiCase("text-plain-body", _json(b"find me a cat", "text/plain"), 400, "BadInput", _SEND_JSON),
    ApiCase("xml-body", _json(b"<search><top_k>3</top_k></search>", "application/xml"), 400, "BadInput", _SEND_JSON),
    ApiCase(
        "too-many-images",
        lambda c, q: c.post("/api/search", json={"data": [_data_uri(_TINY_PNG, "image/png")] * 65}),
        422,
        "ValidationError",
        r"^data: List should have at most 64 items",
    ),
    ApiCase("unknown-doc-id-get", lambda c, q: c.get("/api/docs/" + "0" * 16), 404, "NotFound", _NO_DOC),
    ApiCase(
        "unknown-doc-id-search",
        lambda c, q: c.post("/api/search", json={"doc_id": "0" * 16}),
        404,
        "NotFound",
        _NO_DOC,
    ),
    ApiCase(
        "doc-id-not-a-string",
        lambda c, q: c.post("/api/search", json={"doc_id": 42}),
        422,
        "ValidationError",
        r"^doc_id: Input should be a valid string$",
    ),
    ApiCase(
        "multipart-without-file",
        lambda c, q: c.post("/api/search", files={"image": ("q.jpg", b"\xff\xd8", "image/jpeg")}),
        422,
        "ValidationError",
        r"^file: a multipart search needs a 'file' field$",
    ),
    ApiCase(
        "multipart-file-is-text",
        lambda c, q: c.post("/api/search", files={"file": ("notes.txt", b"just text", "text/plain")}),
        400,
        "BadInput",
        r"^query image: not an image",
    ),
    ApiCase(
        "gzip-body",
        lambda c, q: c.post(
            "/api/search",
            content=gzip.compress(json.dumps({"data": [q]}).encode()),
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        ),
        400,
        "BadInput",
        _SEND_JSON,
    ),
    ApiCase(
        "oversized-upload",
        lambda c, q: c.post(
            "/api/search", files={"file": ("big.jpg", b"\xff" * int(2 * MAX_UPLOAD_MB * 1024 * 1024), "image/jpeg")}
        ),
        413,
        "PayloadTooLarge",
        r"^the request body is over the 1 MB upload limit$",
    ),
    ApiCase(
        "data-empty-string",
        lambda c, q: c.post("/api/search", json={"data": [""]}),
        422,
        "ValidationError",
        r"^data\.0: String should have at least 1 character$",
    ),
    ApiCase(
        "filter-unknown-key",
        lambda c, q: c.post("/api/search", json={"data": [q], "filters": {"colour": "red"}}),
        422,
        "ValidationError",
        r"^filters\.colour: Extra inputs are not permitted$",
    ),
    ApiCase(
        "filter-bad-date",
        lambda c, q: c.get("/api/docs", params={"taken_after": "2024-02-30"}),
        422,
        "ValidationError",
        r"^taken_after must be a date \(YYYY-MM-DD\), not '2024-02-30'$",
    ),
    ApiCase(
        "filter-date-not-a-date",
        lambda c, q: c.post("/api/search", json={"data": [q], "filters": {"taken_before": "last summer"}}),
        422,
        "ValidationError",
        r"^filters\.taken_before: a date, YYYY-MM-DD$",
    ),
    ApiCase(
        "filter-latitude-out-of-range",
        lambda c, q: c.get("/api/docs", params={"near": "95,2.3,10"}),
        422,
        "ValidationError",
        r"^near: LAT,LON,KM: a latitude from -90 to 90, a longitude from -180 to 180, kilometres from 0$",
    ),
    ApiCase(
        "filter-gps-nan",
        _json(b'{"doc_id": "x", "filters": {"near": {"lat": NaN, "lon": 2, "km": 1}}}'),
        422,
        "ValidationError",
        r"^filters\.near\.lat: Input should be a finite number$",
    ),
    ApiCase(
        "list-bad-cursor",
        lambda c, q: c.get("/api/docs", params={"cursor": "not-a-cursor"}),
        400,
        "BadInput",
        r"^cursor: not a cursor this listing gave \(pass next_cursor as it came\)$",
    ),
    ApiCase(
        "timeline-bad-filter",
        lambda c, q: c.get("/api/timeline", params={"orientation": "diagonal"}),
        422,
        "ValidationError",
        r"^orientation: Input should be 'landscape', 'portrait' or 'square'$",
    ),
    ApiCase(
        "folders-unknown-parent",
        lambda c, q: c.get("/api/folders", params={"parent": "/no/such/folder"}),
        404,
        "NotFound",
        r"^no indexed photo lies in the folder '/no/such/folder'$",
    ),
    ApiCase(
        "thumbnail-foreign-etag",
        lambda c, q: c.get("/api/docs/" + "0" * 16 + "/thumbnail", headers={"If-None-Match": '"anything"'}),
        404,
        "NotFound",
        _NO_DOC,
    ),
    ApiCase(
        "people-unknown-person",
        lambda c, q: c.get("/api/people/Ann"),
        404,
        "NotFound",
        r"^this workspace holds no faces: index it with faces",
    ),
    ApiCase(
        "api-person-filter-without-faces",
        lambda c, q: c.get("/api/docs", params={"person": "Ann"}),
        404,
        "NotFound",
        r"^this workspace holds no faces",
    ),
    ApiCase(
        "api-search-box-outside-the-photo",
        lambda c, q: c.post("/api/search", json={"data": [q], "box": [0.5, 0.5, 0.2, 0.9]}),
        400,
        "BadInput",
        r"^box 0.5,0.5,0.2,0.9 is not inside the photo",
    ),
    ApiCase(
        "search-box-three-numbers",
        lambda c, q: c.post("/api/search", json={"data": [q], "box": [0, 0, 1]}),
        422,
        "ValidationError",
        r"^box: List should have at least 4 items",
    ),
    ApiCase(
        "search-box-form-not-fractions",
        lambda c, q: c.post("/api/search", files={"file": ("q.png", b"x", "image/png")}, data={"box": "0,0,2,2"}),
        422,
        "ValidationError",
        r"^box: String should match pattern",
    ),
    ApiCase(
        "api-search-box-without-regions",
        lambda c, q: c.post("/api/search", json={"data": [q], "box": [0, 0, 1, 1]}),
        400,
        "ConfigError",
        r"^this workspace holds no regions, so it cannot be searched by a box",
    ),
    ApiCase(
        "explain-unknown-result",
        lambda c, q: c.post("/api/explain", json={"data": q, "result": "0" * 16}),
        404,
        "NotFound",
        r"^no indexed document '0{16}'$",
    ),
    ApiCase(
        "explain-no-query",
        lambda c, q: c.post("/api/explain", json={"result": "0" * 16}),
        422,
        "ValidationError",
        r"give the query as 'doc_id' or as 'data', not both",
    ),
    ApiCase(
        "face-id-out-of-range",
        lambda c, q: c.get("/api/faces/9223372036854775808/thumbnail"),
        422,
        "ValidationError",
        r"^face: Input should be less than or equal to 9223372036854775807$",
    ),
    ApiCase(
        "person-name-invisible",
        lambda c, q: c.post("/api/people/1/name", json={"name": "\u200b\u200b"}),
        422,
        "ValidationError",
        r"^name: a name with at least one visible character$",
    ),
    ApiCase(
        "face-person-unknown-key",
        lambda c, q: c.post("/api/faces/1/person", json={"person": "1", "sure": True}),
        422,
        "ValidationError",
        r"^sure: Extra inputs are not permitted$",
    ),
    ApiCase(
        "dupes-threshold-out-of-range",
        lambda c, q: c.get("/api/dupes", params={"threshold": 2}),
        422,
        "ValidationError",
        r"^threshold: Input should be less than or equal to 1$",
    ),
    ApiCase(
        "move-no-doc-ids",
        lambda c, q: c.post("/api/dupes/move", json={"doc_ids": [], "folder": "dupes"}),
        422,
        "ValidationError",
        r"^doc_ids: List should have at least 1 item",
    ),
    ApiCase(
        "move-blank-folder",
        lambda c, q: c.post("/api/dupes/move", json={"doc_ids": ["0" * 16], "folder": " "}),
        422,
        "ValidationError",
        r"^folder: a folder's path, not blank$",
    ),
    ApiCase(
        "move-unknown-key",
        lambda c, q: c.post("/api/dupes/move", json={"doc_ids": ["0" * 16], "folder": "x", "overwrite": True}),
        422,
        "ValidationError",
        r"^overwrite: Extra inputs are not permitted$",
    ),
    ApiCase(
        "remove-too-many-ids",
        lambda c, q: c.post("/api/remove", json={"doc_ids": ["0" * 16] * 1001}),
        422,
        "ValidationError",
        r"^doc_ids: List should have at most 1000 items",
    ),
    ApiCase(
        "search-with-get",
        lambda c, q: c.get("/api/search"),
        405,
        "MethodNotAllowed",
        r"^Method Not Allowed$",
    ),
]


@pytest.fixture(scope="module")
def query_uri(api_workspace) -> str:
    _, paths = api_workspace
    return _data_uri(paths[0].read_bytes())


def test_a_good_query_works(api, api_workspace, query_uri):
    _, paths = api_workspace
    r = api.post("/api/search", json={"data": [query_uri], "top_k": 2})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["matches"][0]["uri"] == str(paths[0])


@pytest.mark.parametrize("case", API_CASES, ids=lambda c: c.id)
def test_api_case(case: ApiCase, api, query_uri):
    r = case.call(api, query_uri)
    assert r.status_code == case.status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == case.type, body
    assert re.search(case.message, body["error"]["message"]), body["error"]["message"]


def _read_until_closed(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (a response can span segments)."""
    parts, deadline = [], time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            part = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not part:
            break
        parts.append(part)
    return b"".join(parts)


def test_slow_body_is_cut_off_and_other_searches_go_on(api_workspace, query_uri):
    """A body that trickles in (Content-Length 1000, 4 bytes every 0.5 s) must not hold a connection
    for ever; meanwhile another client's search, on a second connection, must succeed."""
    ws, paths = api_workspace
    port = free_port()
    proc = subprocess.Popen(
        [*lookalike_cmd(), "serve", "-w", str(ws), "--host", "127.0.0.1", "--port", str(port), "--read-only"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, proc)
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        head = (
            f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        slow.sendall(head.encode())
        start = time.monotonic()
        answer: bytes | None = None
        other: httpx.Response | None = None
        while time.monotonic() - start < SLOW_BODY_BOUND_S:
            try:
                slow.sendall(b'{"da')
            except (BrokenPipeError, ConnectionResetError):
                answer = b""  # the server closed the connection
                break
            if select.select([slow], [], [], 0.5)[0]:
                answer = _read_until_closed(slow)
                break
            if other is None:  # a second client, while the first still trickles
                other = httpx.post(f"{base}/api/search", json={"data": [query_uri], "top_k": 1}, timeout=20)
        waited = time.monotonic() - start
        slow.close()
        assert other is not None and other.status_code == 200, other.text if other else "no second search ran"
        assert other.json()["results"][0]["matches"][0]["uri"] == str(paths[0])
        assert answer is not None, (
            f"the server still waited for the body after {waited:.0f}s: no timeout for slow request bodies"
        )
        # A 408 in our error shape, once the body's deadline (10 s plus its size at 100 kB/s) passed.
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408 "), status_line
        body = json.loads(rest.partition(b"\r\n\r\n")[2] or b"{}")
        assert body["error"]["type"] == "RequestTimeout" and "did not arrive within 10s" in body["error"]["message"]
        assert waited < 20, f"cut off only after {waited:.0f}s"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the docs --------------------------------------------------------------------------------------------


def _documented_ids() -> list[str]:
    """The case id (the first `code` in the input column) of each row of the bad-input table."""
    text = DOC.read_text("utf-8")
    section = text.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    ids = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.lstrip().startswith("|"):
            found = re.match(r"`([^`]+)`", cells[1])
            if found:
                ids.append(found.group(1))
    return ids


def test_every_case_is_in_docs_reliability_md():
    suite = [c.id for c in INDEX_CASES] + [c.id for c in CLI_CASES] + [c.id for c in API_CASES] + ["slow-body"]
    suite += [c.id for c in CLI_ERROR_CASES] + [c.id for c in MISSING_EXTRA_CASES] + [c.id for c in PYTHON_CASES]
    documented = _documented_ids()
    assert len(suite) == len(set(suite)) and len(documented) == len(set(documented))
    assert sorted(set(suite) - set(documented)) == [], "cases missing from docs/reliability.md"
    assert sorted(set(documented) - set(suite)) == [], "docs/reliability.md documents cases the suite lacks"
