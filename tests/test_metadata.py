"""Every photo format, and what the camera recorded: read at index time, stored as columns, shown.

The files are made here (EXIF with Pillow, HEIC with pillow-heif, AVIF with Pillow, a DNG by hand)
and indexed with the tiny py_modules encoder: the model is beside the point.
"""

from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
from dng import make_dng
from fastapi.testclient import TestClient
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

import lookalike
from lookalike import Options, SearchRequest
from lookalike.metadata import read_metadata
from lookalike.server.app import create_app
from lookalike.server.config import ServerConfig

from conftest import TINY_FLOWS, client_ready, quadrants

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825


def exif(
    make: str | None = "Apple",
    model: str | None = "iPhone 12",
    taken: str | None = "2024:07:14 18:03:22",
    offset: str | None = "+02:00",
    gps: tuple[float, float] | None = (48.858333, 2.294500),
) -> Image.Exif:
    """EXIF as a phone writes it: make, model, date taken with its offset, exposure and GPS."""
    out = Image.Exif()
    if make:
        out[0x010F] = make
    if model:
        out[0x0110] = model
    sub = out.get_ifd(_EXIF_IFD)
    if taken:
        sub[0x9003] = taken
    if offset:
        sub[0x9011] = offset
    sub[0x920A], sub[0x829A], sub[0x829D], sub[0x8827] = 4.2, IFDRational(1, 120), 1.6, 100
    sub[0xA434] = "iPhone 12 back dual wide camera 4.2mm f/1.6"
    if gps:
        g = out.get_ifd(_GPS_IFD)
        lat, lon = gps
        g[1], g[3] = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
        g[2], g[4] = _dms(abs(lat)), _dms(abs(lon))
    return out


def _dms(degrees: float) -> tuple[float, float, float]:
    d = int(degrees)
    m = int((degrees - d) * 60)
    return (float(d), float(m), round((degrees - d - m / 60) * 3600, 4))


def encoded(image: Image.Image, fmt: str, info: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **({"exif": info.tobytes()} if info is not None else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def library_folder(tmp_path_factory) -> Path:
    """A phone's and a camera's photos: JPEG with EXIF, HEIC, AVIF, a DNG, and a PNG without any."""
    root = tmp_path_factory.mktemp("formats") / "photos"
    (root / "paris").mkdir(parents=True)
    (root / "raw").mkdir()
    (root / "paris" / "eiffel.jpg").write_bytes(encoded(quadrants(1), "JPEG", exif()))
    (root / "paris" / "louvre.heic").write_bytes(
        encoded(quadrants(2), "HEIF", exif(taken="2024:07:15 10:00:00", gps=(48.8606, 2.3376)))
    )
    (root / "rome.avif").write_bytes(
        encoded(
            quadrants(3),
            "AVIF",
            exif(make="Google", model="Pixel 8", taken="2023:05:01 12:00:00", offset=None, gps=(41.8902, 12.4922)),
        )
    )
    preview = encoded(quadrants(4).resize((160, 120)), "JPEG", exif(make="Canon", model="Canon EOS R5", gps=None))
    (root / "raw" / "IMG_0001.dng").write_bytes(make_dng(preview, make="Canon", model="Canon EOS R5"))
    quadrants(5).save(root / "scan.png")
    os.utime(root / "scan.png", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    return root


@pytest.fixture(scope="module")
def indexed(library_folder, tmp_path_factory):
    options = Options(workspace=tmp_path_factory.mktemp("ws") / "ws", **TINY_FLOWS)
    with lookalike.open(options) as library:
        report = library.index([library_folder])
        yield library, report


def by_name(library) -> dict[str, dict]:
    return {os.path.basename(d.uri): d.shown() | {"id": d.id} for d in library.workspace.store.iter_docs()}


def test_every_format_is_indexed_with_what_its_camera_recorded(indexed):
    library, report = indexed
    assert report.indexed == 5 and report.skipped == {}, report.skipped_files
    docs = by_name(library)
    eiffel = docs["eiffel.jpg"]
    assert eiffel["taken_at"] == "2024-07-14T18:03:22+02:00" and eiffel["taken_from"] == "exif"
    assert eiffel["camera"] == "Apple iPhone 12" and eiffel["format"] == "jpeg"
    assert eiffel["gps"] == pytest.approx({"lat": 48.858333, "lon": 2.2945}, abs=1e-5)
    assert (eiffel["focal_mm"], eiffel["exposure_s"], eiffel["f_number"], eiffel["iso"]) == (4.2, 0.008333, 1.6, 100)
    assert eiffel["lens"].startswith("iPhone 12 back") and eiffel["folder"].endswith("photos/paris")
    assert docs["louvre.heic"]["format"] == "heic" and docs["louvre.heic"]["taken_at"] == "2024-07-15T10:00:00+02:00"
    rome = docs["rome.avif"]
    assert rome["format"] == "avif" and rome["camera"] == "Google Pixel 8" and rome["taken_at"] == "2023-05-01T12:00:00"
    raw = docs["IMG_0001.dng"]
    assert raw["format"] == "raw" and raw["camera"] == "Canon EOS R5"
    scan = docs["scan.png"]
    assert scan["taken_from"] == "file" and scan["camera"] is None and scan["gps"] is None
    assert scan["taken_at"] == lookalike.metadata.local_time(1_600_000_000_000_000_000)


def test_a_heic_query_finds_its_own_photo_and_results_carry_the_metadata(indexed, library_folder):
    library, _ = indexed
    report = library.search(SearchRequest(image=library_folder / "paris" / "louvre.heic", top_k=5))
    best = report.hits[0].to_dict()
    assert best["name"] == "louvre.heic" and best["camera"] == "Apple iPhone 12" and best["gps"]["lat"] == 48.8606
    raw = library.search(SearchRequest(image=(library_folder / "raw" / "IMG_0001.dng").read_bytes(), top_k=1))
    assert raw.hits[0].path.endswith("IMG_0001.dng")  # bytes without a name: read as the TIFF it also is


def test_hostile_exif_indexes_with_the_field_empty_and_a_note(tmp_path):
    info = Image.Exif()
    info[0x0112] = 99  # orientation
    sub = info.get_ifd(_EXIF_IFD)
    sub[0x9003], sub[0x920A], sub[0x829A] = "yesterday", IFDRational(4294967295, 1), IFDRational(1, 0)
    g = info.get_ifd(_GPS_IFD)
    g[1], g[2], g[3], g[4] = "N", (IFDRational(0, 0), IFDRational(0, 1), IFDRational(0, 1)), "E", (1.0, 0.0, 0.0)
    meta = read_metadata(encoded(quadrants(9), "JPEG", info), "x.jpg", 1_700_000_000_000_000_000)
    assert (meta.orientation, meta.focal_mm, meta.exposure_s, meta.lat, meta.lon) == (None,) * 5
    assert meta.taken_from == "file" and meta.taken_at is not None
    notes = " | ".join(meta.notes)
    for field in ("orientation", "focal_mm", "exposure_s", "taken_at", "gps"):
        assert field in notes, notes
    # Minutes past 60 make no position, whatever the degrees (Pillow writes no negative rationals;
    # the reader refuses those by the same range check).
    info = Image.Exif()
    g = info.get_ifd(_GPS_IFD)
    g[1], g[2], g[3], g[4] = "S", (IFDRational(10, 1), IFDRational(75, 1), IFDRational(0, 1)), "E", (1.0, 0.0, 0.0)
    meta = read_metadata(encoded(quadrants(9), "JPEG", info), "z.jpg")
    assert (meta.lat, meta.lon) == (None, None) and "no position" in " ".join(meta.notes)
    # A huge text field is cut, a GPS of 0,0 is no position.
    meta = read_metadata(encoded(quadrants(9), "JPEG", exif(make="X" * 10_000, gps=(0.0, 0.0))), "y.jpg")
    assert len(meta.make or "") == 120 and meta.lat is None and "no fix" in " ".join(meta.notes)


def test_a_raw_file_without_the_raw_extra_says_how_to_install_it(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rawpy(name, *args, **kwargs):
        if name == "rawpy":
            raise ImportError("No module named 'rawpy'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rawpy)
    path = tmp_path / "IMG.nef"
    path.write_bytes(make_dng(encoded(quadrants(1), "JPEG")))
    with pytest.raises(lookalike.BadInput, match=r"lookalike\[raw\]"):
        lookalike.images.decode(path)


def test_an_older_workspace_gains_the_metadata_from_headers_alone(library_folder, tmp_path):
    """Schema migration 4 dates old rows by their mtime; the next index run reads their headers
    (and encodes nothing)."""
    from test_scale import undo_migration_4

    options = Options(workspace=tmp_path / "ws", **TINY_FLOWS)
    with lookalike.open(options) as library:
        library.index([library_folder])
    conn = sqlite3.connect(tmp_path / "ws" / "docs.sqlite")
    undo_migration_4(conn)
    conn.execute("PRAGMA user_version=3")
    conn.commit()
    conn.close()
    with lookalike.open(options) as library:
        docs = by_name(library)
        assert docs["eiffel.jpg"]["taken_from"] == "file" and docs["eiffel.jpg"]["camera"] is None
        canon = SearchRequest(image=library_folder / "scan.png", top_k=10, filters=lookalike.Filters(camera="canon"))
        assert library.search(canon).hits == []  # (the shards remember that the filter keeps nothing)
        report = library.index([library_folder])
        assert report.encoded == 0 and report.unchanged == 5
        docs = by_name(library)
        assert docs["eiffel.jpg"]["taken_at"] == "2024-07-14T18:03:22+02:00"
        assert docs["IMG_0001.dng"]["camera"] == "Canon EOS R5" and docs["rome.avif"]["format"] == "avif"
        # What the shards remembered of the filter is gone with the headers read: the DNG is found.
        assert [os.path.basename(h.path) for h in library.search(canon).hits] == ["IMG_0001.dng"]


def test_the_server_shows_a_heic_as_jpeg_with_its_metadata(indexed):
    library, _ = indexed
    heic = by_name(library)["louvre.heic"]["id"]
    with TestClient(create_app(ServerConfig(library.options)), base_url="http://127.0.0.1") as client:
        client_ready(client)
        detail = client.get(f"/api/docs/{heic}").json()
        assert detail["format"] == "heic" and detail["taken_at"] == "2024-07-15T10:00:00+02:00"
        assert detail["gps"] == {"lat": 48.8606, "lon": 2.3376} and detail["camera"] == "Apple iPhone 12"
        for url in (detail["image_url"], detail["thumbnail_url"]):
            r = client.get(url)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(r.content)).size == (64, 64)


def test_a_png_s_exif_is_read_from_its_header_without_decoding_it():
    """Pillow writes eXIf before the pixels; reading it must not decode the image (a PNG's
    getexif() would, to look past them), so a PNG whose pixels are cut off still gives its EXIF."""
    data = encoded(quadrants(3).resize((400, 300)), "PNG", exif(make="Sony", model="ILCE-7M3", gps=None))
    meta = read_metadata(data[: len(data) * 2 // 3], "cut.png", 0)
    assert (meta.format, meta.camera, meta.taken_at) == ("png", "Sony ILCE-7M3", "2024-07-14T18:03:22")
