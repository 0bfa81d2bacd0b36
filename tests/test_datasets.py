"""Sample datasets: labels, the cache and its crash safety, and each source fetched for real.

Only the internet is stood in for: flowers17 is served from a tarball built here, over a real HTTP
server on loopback. apt, dpkg-deb, scikit-image and the filesystem are the real ones.
"""

from __future__ import annotations

import http.server
import io
import json
import shutil
import socket
import struct
import subprocess
import tarfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from lookalike import datasets
from lookalike.datasets import (
    DATASETS,
    FLOWERS17_CLASSES,
    MANIFEST_NAME,
    cached,
    data_dir,
    fetch,
    is_online,
    labels_from_folders,
    list_datasets,
)
from lookalike.errors import BadInput, ConfigError, FetchError, NotFound

from conftest import solid


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Settings, labels, the online check


def test_data_dir_from_env_else_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "sets"))
    assert data_dir() == tmp_path / "sets"
    monkeypatch.delenv("LOOKALIKE_DATA_DIR")
    default = data_dir()
    assert default.name == "datasets" and "lookalike" in default.parts


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_fetch_and_cached_use_the_env_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path))
    ds = fetch("skimage")
    assert ds.root == tmp_path / "skimage"
    assert cached("skimage") is not None


def test_labels_are_folders_relative_to_root(tmp_path):
    root = tmp_path / "photos"
    images = [root / "animals/birds/robin.png", root / "sports/ball.png", root / "top.png"]
    assert labels_from_folders(root, images) == {
        images[0]: "animals/birds",
        images[1]: "sports",
        images[2]: ".",  # directly in root: "." can never clash with a sub-folder's name
    }
    assert labels_from_folders(root, images, depth=1)[images[0]] == "animals"
    # Relative paths that do not start with root are relative to root; keys stay as given.
    rel = Path("animals/birds/robin.png")
    assert labels_from_folders(root, [rel]) == {rel: "animals/birds"}


def test_labels_accept_another_spelling_of_root_and_refuse_outsiders(tmp_path):
    root = tmp_path / "photos"
    (root / "cats").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(root)
    inside = link / "cats" / "tom.png"
    assert labels_from_folders(root, [inside]) == {inside: "cats"}
    with pytest.raises(BadInput, match="not inside"):
        labels_from_folders(root, [tmp_path / "elsewhere" / "x.png"])
    with pytest.raises(BadInput, match="not inside"):
        labels_from_folders(root, [Path("../x.png")])
    with pytest.raises(ConfigError, match="depth"):
        labels_from_folders(root, [], depth=0)


def test_is_online_answers_fast_and_never_raises():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert is_online("127.0.0.1", server.getsockname()[1], timeout=2)
    start = time.perf_counter()
    assert not is_online("127.0.0.1", _closed_port(), timeout=2)
    assert not is_online("no-such-host.invalid", 443, timeout=2)
    assert not is_online("", 99999, timeout=2)  # a bad port is an answer too, not an exception
    assert time.perf_counter() - start < 6


def test_unknown_dataset_names_the_known_ones(tmp_path):
    with pytest.raises(NotFound, match="tuxpaint, openclipart, flowers17, skimage"):
        fetch("imagenet", cache_dir=tmp_path)
    with pytest.raises(NotFound):
        cached("imagenet", tmp_path)


# ---------------------------------------------------------------------------------------------
# skimage: the cheap real fetch that exercises the cache


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_skimage_fetch_labels_and_cache(tmp_path):
    messages: list[str] = []
    ds = fetch("skimage", cache_dir=tmp_path, progress=messages.append)
    assert len(ds.images) == 18 and ds.skipped == {}
    assert {"astronaut", "coffee", "chelsea", "rocket", "camera", "coins"} <= set(ds.classes)
    # The stereo pair is the one class with two images: a true "same subject" pair.
    counts = Counter(ds.labels.values())
    assert counts["motorcycle"] == 2 and max(v for k, v in counts.items() if k != "motorcycle") == 1
    # The layout is the labels: every image sits in its label's folder.
    assert labels_from_folders(ds.root, ds.images) == ds.labels
    assert ds.images == sorted(ds.images) and all(p.suffix == ".png" for p in ds.images)
    with Image.open(ds.root / "astronaut" / "astronaut.png") as im:
        assert im.size == (512, 512) and im.mode == "RGB"
    manifest = json.loads((ds.root / MANIFEST_NAME).read_text())
    assert manifest["name"] == "skimage" and manifest["count"] == 18 and manifest["classes"] == ds.classes
    assert manifest["source"].startswith("scikit-image ")
    assert messages and "18 images in 17 classes" in messages[-1]

    # A second fetch is the cache: nothing is written, nothing is reported.
    mtime = (ds.root / MANIFEST_NAME).stat().st_mtime_ns
    again: list[str] = []
    assert fetch("skimage", cache_dir=tmp_path, progress=again.append) == ds
    assert again == [] and (ds.root / MANIFEST_NAME).stat().st_mtime_ns == mtime

    # force rebuilds it beside the old copy and swaps it in: same files, no duplicates, no leftovers.
    forced = fetch("skimage", cache_dir=tmp_path, force=True)
    assert forced.images == ds.images and len(_files(ds.root)) == 18 + 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["skimage"]


def test_an_interrupted_fetch_is_not_cached_and_leaves_nothing(tmp_path):
    def interrupt(message: str) -> None:
        if message.startswith("saving"):
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        fetch("skimage", cache_dir=tmp_path, progress=interrupt)
    assert cached("skimage", tmp_path) is None
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    assert len(fetch("skimage", cache_dir=tmp_path).images) == 18


def test_leftovers_of_a_killed_fetch_are_not_cached_and_get_replaced(tmp_path):
    # What `kill -9` can leave: a staging folder, and an old dataset folder without its manifest.
    (tmp_path / ".skimage.partial-dead" / "data" / "coffee").mkdir(parents=True)
    (tmp_path / ".skimage.partial-dead" / "data" / "coffee" / "coffee.png").write_bytes(b"half")
    (tmp_path / "skimage" / "coffee").mkdir(parents=True)
    (tmp_path / "skimage" / "coffee" / "stale.png").write_bytes(_png(solid((1, 2, 3))))
    assert cached("skimage", tmp_path) is None
    assert not next(i for i in list_datasets(tmp_path) if i.name == "skimage").cached

    ds = fetch("skimage", cache_dir=tmp_path)
    assert len(_files(ds.root)) == 18 + 1 and not (ds.root / "coffee" / "stale.png").exists()
    assert not list(tmp_path.glob(".skimage.partial-*"))


def test_concurrent_fetches_of_one_dataset_do_not_collide(tmp_path):
    # Two commands fetching at once: the second waits for the first, then finds it cached.
    results: list[datasets.FetchedDataset] = []
    threads = [threading.Thread(target=lambda: results.append(fetch("skimage", cache_dir=tmp_path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1] and len(results[0].images) == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == [".skimage.lock", "skimage"]


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_a_broken_or_incomplete_cache_is_not_cached(tmp_path):
    ds = fetch("skimage", cache_dir=tmp_path)
    manifest = ds.root / MANIFEST_NAME
    ds.images[0].unlink()  # a file removed behind our back
    assert cached("skimage", tmp_path) is None
    ds = fetch("skimage", cache_dir=tmp_path)
    manifest.write_text("{not json")
    assert cached("skimage", tmp_path) is None
    fetch("skimage", cache_dir=tmp_path, force=True)
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format": 0}))  # an older layout: fetch again
    assert cached("skimage", tmp_path) is None


def test_list_datasets_reports_what_is_cached(tmp_path):
    infos = {i.name: i for i in list_datasets(tmp_path)}
    assert list(infos) == list(DATASETS) == ["tuxpaint", "openclipart", "flowers17", "skimage"]
    assert not any(i.cached for i in infos.values())
    assert infos["flowers17"].online_only and not infos["tuxpaint"].online_only
    assert infos["tuxpaint"].path == tmp_path / "tuxpaint" and infos["tuxpaint"].n_images is None
    fetch("skimage", cache_dir=tmp_path)
    info = next(i for i in list_datasets(tmp_path) if i.name == "skimage")
    assert info.cached and info.n_images == 18 and info.n_classes == 17


def test_an_unwritable_cache_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="LOOKALIKE_DATA_DIR"):
        fetch("skimage", cache_dir=blocker / "sets")


# ---------------------------------------------------------------------------------------------
# flowers17, served from loopback


class _Archive(http.server.BaseHTTPRequestHandler):
    """Serves `body` for any GET, claiming `length` bytes (more than the body = a cut-off download)."""

    body = b""
    length: int | None = None

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(self.length if self.length is not None else len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def serve(monkeypatch) -> Iterator:
    """serve(body, length=None): point LOOKALIKE_FLOWERS17_URL at a real HTTP server on loopback."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(body: bytes, length: int | None = None) -> str:
        handler = type("Handler", (_Archive,), {"body": body, "length": length})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/17flowers.tgz"
        monkeypatch.setenv("LOOKALIKE_FLOWERS17_URL", url)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _flowers_tgz(count: int = 1360) -> bytes:
    """The real archive's layout: jpg/image_0001.jpg ... in class order, plus files.txt.

    Each class gets its own colour, so a test can tell from the pixels which class a file came from.
    Also holds members that must never be written: a path traversal and numbers out of range.
    """
    colours = [_jpeg(solid(((i * 15) % 256, 255 - i * 15, 100), (8, 8))) for i in range(len(FLOWERS17_CLASSES))]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        _add(tar, "jpg/files.txt", "\n".join(f"image_{n:04d}.jpg" for n in range(1, count + 1)).encode())
        for n in range(1, count + 1):
            _add(tar, f"jpg/image_{n:04d}.jpg", colours[(n - 1) // 80])
        _add(tar, "../evil.jpg", colours[0])
        _add(tar, "jpg/../../evil2.jpg", colours[0])
        _add(tar, "jpg/image_0000.jpg", colours[0])
        _add(tar, "jpg/image_1361.jpg", colours[0])
    return buf.getvalue()


@pytest.fixture(scope="module")
def flowers_tgz() -> bytes:
    return _flowers_tgz()


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_flowers17_labels_by_file_order(serve, flowers_tgz, tmp_path):
    url = serve(flowers_tgz)
    cache = tmp_path / "cache"
    ds = fetch("flowers17", cache_dir=cache)
    assert len(ds.images) == 1360 and ds.skipped == {}
    assert ds.classes == sorted(FLOWERS17_CLASSES)
    assert Counter(ds.labels.values()) == {c: 80 for c in FLOWERS17_CLASSES}
    by_name = {p.name: label for p, label in ds.labels.items()}
    assert by_name["image_0001.jpg"] == by_name["image_0080.jpg"] == "Daffodil"
    assert by_name["image_0081.jpg"] == "Snowdrop"
    assert by_name["image_0801.jpg"] == "Daisy"
    assert by_name["image_1360.jpg"] == "Pansy"
    assert ds.root / "Pansy" / "image_1360.jpg" in ds.labels
    assert labels_from_folders(ds.root, ds.images) == ds.labels
    # The pixels agree: image 81 is the second class's colour.
    with Image.open(ds.root / "Snowdrop" / "image_0081.jpg") as im:
        assert abs(im.getpixel((4, 4))[0] - 15) < 8
    # Nothing escaped the dataset folder, and the download itself is gone.
    assert sorted(p.name for p in tmp_path.rglob("evil*")) == []
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == ["flowers17"]
    assert json.loads((ds.root / MANIFEST_NAME).read_text())["source"] == url


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_flowers17_cached_needs_no_network(serve, flowers_tgz, tmp_path, monkeypatch):
    serve(flowers_tgz)
    ds = fetch("flowers17", cache_dir=tmp_path)
    monkeypatch.setenv("LOOKALIKE_FLOWERS17_URL", f"http://127.0.0.1:{_closed_port()}/17flowers.tgz")
    start = time.perf_counter()
    assert fetch("flowers17", cache_dir=tmp_path) == ds
    assert time.perf_counter() - start < 1


def test_flowers17_offline_is_a_fast_fetch_error(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKALIKE_FLOWERS17_URL", f"http://127.0.0.1:{_closed_port()}/17flowers.tgz")
    start = time.perf_counter()
    with pytest.raises(FetchError, match=r"flowers17 needs internet.*try --dataset tuxpaint"):
        fetch("flowers17", cache_dir=tmp_path)
    assert time.perf_counter() - start < 3
    assert cached("flowers17", tmp_path) is None
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_flowers17_cut_off_download_is_not_cached(serve, flowers_tgz, tmp_path):
    serve(flowers_tgz[: len(flowers_tgz) // 2], length=len(flowers_tgz))
    with pytest.raises(FetchError, match="flowers17"):
        fetch("flowers17", cache_dir=tmp_path)
    assert cached("flowers17", tmp_path) is None
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_flowers17_not_a_tgz_or_incomplete_is_a_fetch_error(serve, tmp_path):
    serve(b"<html>maintenance</html>")
    with pytest.raises(FetchError, match="not a valid .tgz"):
        fetch("flowers17", cache_dir=tmp_path)
    serve(_flowers_tgz(count=100))
    with pytest.raises(FetchError, match="holds 100 usable images, not 1360"):
        fetch("flowers17", cache_dir=tmp_path)
    assert cached("flowers17", tmp_path) is None


def test_flowers17_url_must_be_http(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOKALIKE_FLOWERS17_URL", "file:///etc/passwd")
    with pytest.raises(ConfigError, match="LOOKALIKE_FLOWERS17_URL"):
        fetch("flowers17", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Debian packages: the filter on a small package built here, then the real ones


def _bomb_png(width: int, height: int) -> bytes:
    """Just a PNG header claiming `width` x `height`: Pillow refuses it at open, before any pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _noise_png() -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (1900, 1900, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    assert len(buf.getvalue()) > datasets.MAX_IMAGE_BYTES
    return buf.getvalue()


@pytest.fixture(scope="module")
def clipart_deb(tmp_path_factory) -> Path:
    """A real .deb in openclipart-png's layout, holding one of every case the filter must handle."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    top = tmp_path_factory.mktemp("pkg")
    tree = top / "openclipart-png"
    base = tree / "usr/share/openclipart/png"
    good = _png(solid((200, 30, 30), (32, 24), "RGBA"))
    files = {
        "animals/frog.png": good,
        "animals/birds/robin.png": good,
        "computer/icons/crystal/1uparrow.png": good,
        "computer/icons/nuvola/1uparrow.png": good,  # same name in another theme: must not collide
        "food/fruit/giant.png": _png(Image.new("1", (5000, 4001))),  # 20 MP, a few KB on disk
        "food/fruit/bomb.png": _bomb_png(20000, 20000),
        "food/fruit/truncated.png": good[: len(good) // 2],
        "food/fruit/notes.png": b"not a picture at all",
        "food/fruit/noise.png": _noise_png(),  # 4 MP but over 10 MB
        "food/fruit/README.txt": b"ignored: not a png",
    }
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    (base / "science").mkdir()
    (base / "science/frog.png").symlink_to("../animals/frog.png")
    (tree / "usr/share/doc/openclipart-png").mkdir(parents=True)
    (tree / "usr/share/doc/openclipart-png/copyright").write_text("public domain\n")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        "Package: openclipart-png\nVersion: 1:0.18+test\nArchitecture: all\n"
        "Maintainer: Test <test@example.org>\nDescription: test package\n"
    )
    deb = top / "openclipart-png_0.18+test_all.deb"
    build = ["dpkg-deb", "-Znone", "--root-owner-group", "--build", str(tree), str(deb)]
    subprocess.run(build, check=True, capture_output=True)
    return deb


def test_openclipart_filter_on_a_small_package(clipart_deb, tmp_path):
    imported = datasets._import_deb_file(clipart_deb, datasets._openclipart_plan, tmp_path)
    assert imported.source == "debian:openclipart-png=1:0.18+test"
    assert imported.labels == {
        "animals/frog.png": "animals",
        "animals/birds/robin.png": "animals/birds",
        "computer/icons/crystal__1uparrow.png": "computer/icons",
        "computer/icons/nuvola__1uparrow.png": "computer/icons",
    }
    assert imported.skipped == {"symlink": 1, "too_large": 3, "unreadable": 2}
    assert imported.skipped_files["usr/share/openclipart/png/food/fruit/giant.png"] == "too_large"
    assert imported.skipped_files["usr/share/openclipart/png/food/fruit/truncated.png"] == "unreadable"
    assert imported.skipped_files["usr/share/openclipart/png/food/fruit/noise.png"].startswith("too_large")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in _files(tmp_path)) == sorted(imported.labels)


def test_a_corrupt_deb_is_a_fetch_error(tmp_path):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    deb = tmp_path / "broken_1_all.deb"
    deb.write_bytes(b"!<arch>\nthis is not a package")
    with pytest.raises(FetchError, match="dpkg-deb could not read broken_1_all.deb"):
        datasets._import_deb_file(deb, datasets._openclipart_plan, tmp_path)


def test_tuxpaint_plan_keeps_photos_only():
    plan = datasets._tuxpaint_plan
    stamps = PurePosixPath("usr/share/tuxpaint/stamps")
    assert plan(stamps / "animals/birds/robin.png") == (PurePosixPath("animals/birds/robin.png"), "animals/birds")
    assert plan(stamps / "sports/ball.png") == (PurePosixPath("sports/ball.png"), "sports")
    assert plan(stamps / "animals/cartoon/fox.png") is None
    assert plan(stamps / "food/cartoon/sweets/cake.png") is None
    assert plan(stamps / "symbols/math/plus.png") is None
    assert plan(stamps / "animals/birds/robin.svg") is None
    assert plan(PurePosixPath("usr/share/doc/tuxpaint-stamps-default/logo.png")) is None


def test_without_apt_the_error_says_what_to_use(monkeypatch, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(NotFound, match="apt-get is not installed.*--dataset skimage"):
        fetch("tuxpaint", cache_dir=tmp_path / "cache")
    assert cached("tuxpaint", tmp_path / "cache") is None


@pytest.mark.slow  # a second or more: real scikit-image / apt / archive work
def test_apt_failure_carries_apts_reason_and_a_hint(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed")
    with pytest.raises(FetchError, match=r"Unable to locate package.*apt-get update"):
        datasets._apt_download("lookalike-no-such-package", tmp_path, lambda _m: None)


@pytest.fixture(scope="module")
def tuxpaint(tmp_path_factory) -> tuple[datasets.FetchedDataset, Path, float]:
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed")
    cache = tmp_path_factory.mktemp("datasets")
    start = time.perf_counter()
    ds = fetch("tuxpaint", cache_dir=cache)
    return ds, cache, time.perf_counter() - start


@pytest.mark.slow
def test_tuxpaint_real_fetch(tuxpaint):
    ds, cache, seconds = tuxpaint
    assert len(ds.images) == 439 and ds.skipped == {}
    assert ds.source.startswith("debian:tuxpaint-stamps-default=")
    assert {"animals/birds", "animals/mammals/cats", "food/fruit", "sports"} <= set(ds.classes)
    assert len(ds.classes) == 73
    rel = [p.relative_to(ds.root).as_posix() for p in ds.images]
    assert not any("/cartoon/" in f"/{r}" or r.startswith("symbols/") for r in rel)
    assert labels_from_folders(ds.root, ds.images) == ds.labels
    # Photos with alpha, as the preprocessing's "composite onto white" expects.
    with Image.open(ds.root / "food/fruit/apple_red.png") as im:
        assert "A" in im.getbands()
    # The .deb and everything unpacked from it are gone: only the dataset and its lock stay.
    assert sorted(p.name for p in cache.iterdir()) == [".tuxpaint.lock", "tuxpaint"]
    assert seconds < 120


@pytest.mark.slow
def test_tuxpaint_second_fetch_is_the_cache_and_never_calls_apt(tuxpaint, monkeypatch, tmp_path):
    ds, cache, _ = tuxpaint
    mtime = (ds.root / MANIFEST_NAME).stat().st_mtime_ns
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get to call even if it wanted to
    start = time.perf_counter()
    assert fetch("tuxpaint", cache_dir=cache) == ds
    assert time.perf_counter() - start < 1
    assert (ds.root / MANIFEST_NAME).stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_tuxpaint_without_manifest_is_fetched_again_without_duplicates(tuxpaint):
    ds, cache, _ = tuxpaint
    (ds.root / MANIFEST_NAME).unlink()  # as if the fetch died just before its last step
    assert cached("tuxpaint", cache) is None
    assert not next(i for i in list_datasets(cache) if i.name == "tuxpaint").cached
    again = fetch("tuxpaint", cache_dir=cache)
    assert again.images == ds.images and len(_files(again.root)) == 439 + 1


@pytest.mark.slow
def test_openclipart_real_fetch(tmp_path):
    # About 15 s (4 s apt download, 11 s to stream 6,900 files out of the package and check them).
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed")
    ds = fetch("openclipart", cache_dir=tmp_path)
    assert len(ds.images) == 6883 and len(ds.classes) == 88
    assert ds.skipped == {"symlink": 1221, "too_large": 17}
    assert {"animals/birds", "computer/icons", "food/fruit", "unsorted"} <= set(ds.classes)
    assert labels_from_folders(ds.root, ds.images) == ds.labels
    assert sorted(p.name for p in tmp_path.iterdir()) == [".openclipart.lock", "openclipart"]
