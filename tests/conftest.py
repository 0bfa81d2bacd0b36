from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh model cache per test session, so every run converts the weights for real once."""
    path = tmp_path_factory.mktemp("models")
    os.environ["LOOKALIKE_MODEL_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def encoder(model_dir: Path):
    from lookalike.models.encoder import EfficientNetEncoder

    return EfficientNetEncoder(cache_dir=model_dir)


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photographs bundled with scikit-image (no download)."""
    from skimage import data

    return {
        name: Image.fromarray(getattr(data, name)())
        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")
    }


def solid(color: tuple[int, ...], size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, color)


def halves(size: tuple[int, int] = (200, 100)) -> Image.Image:
    """Left half red, right half blue: orientation and crops are visible in the pixels."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (255, 0, 0)
    arr[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


@pytest.fixture(scope="session")
def tuxpaint():
    """The 439 labelled tuxpaint photos (Debian package, fetched once into the dataset cache)."""
    from lookalike.datasets import fetch

    return fetch("tuxpaint")


def copy_photos(dataset, dest: Path, per_class: int, classes: list[str] | None = None) -> list[Path]:
    """Copy up to ``per_class`` photos of each class into ``dest/<class>/``; returns the copies."""
    import shutil

    by_class: dict[str, list[Path]] = {}
    for image in sorted(dataset.images):
        by_class.setdefault(dataset.labels[image], []).append(image)
    out = []
    for label in classes or sorted(by_class):
        for image in by_class[label][:per_class]:
            target = dest / label / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(image, target)
            out.append(target)
    return out


# Capabilities that let root read any file whatever its mode: dropped for a run that must meet a
# chmod 000 file or folder as anyone else would.
ROOT_READ_CAPS = "-dac_override,-dac_read_search"


def drop_root_read() -> list[str]:
    """A command prefix that runs root without the capabilities to read any file whatever its mode."""
    import os
    import shutil

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return []
    return ["setpriv", f"--bounding-set={ROOT_READ_CAPS}", f"--inh-caps={ROOT_READ_CAPS}", "--"]


def lookalike_cmd() -> list[str]:
    """The installed console script, run for real in a subprocess."""
    import sys

    return [str(Path(sys.executable).parent / "lookalike")]


# face-recognition's source distribution ships test photos: five of one person, one of another.
FACE_RECOGNITION_SDIST = "face-recognition==1.3.0"


@pytest.fixture(scope="session")
def people(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """face-recognition's test photos: five of one person, one of another (and an RGBA copy).

    Downloaded once into pytest's cache (or a temporary folder when the cache is off)."""
    pytest_cache = getattr(pytestconfig, "cache", None)  # absent under -p no:cacheprovider
    if pytest_cache is not None:
        cache = Path(pytest_cache.mkdir("face-recognition-sdist"))
    else:
        cache = tmp_path_factory.mktemp("face-recognition-sdist")
    tarballs = sorted(cache.glob("face_recognition-*.tar.gz"))
    if not tarballs:
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
            + [FACE_RECOGNITION_SDIST, "-d", str(cache)],
            capture_output=True,
            text=True,
        )
        tarballs = sorted(cache.glob("face_recognition-*.tar.gz"))
        if got.returncode != 0 or not tarballs:
            reason = f"cannot download {FACE_RECOGNITION_SDIST} from PyPI: {got.stderr.strip()[-300:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)  # CI must run the real-face tests, not skip them
            pytest.skip(reason)
    with tarfile.open(tarballs[0]) as tar:
        return {
            Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() and "/tests/test_images/" in m.name
        }


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_ready(client, timeout: float = 60) -> None:
    """Wait until a TestClient's app answers /readyz (the library loads in the background)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(client.get("/readyz").json())


def wait_until_ready(base: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    """Poll ``base``/readyz until it answers 200; fail with the server's output if it dies first."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the server exited with {proc.returncode}: {out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{base} was not ready within {timeout:.0f}s")
        time.sleep(0.1)


def data_uri(path: Path) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def check_a_served_workspace(base: str, port: int, photos: list[Path]) -> None:
    """What a real server on loopback must do, whatever encoder it runs (started with
    ``--allowed-host photos.example``, over a workspace holding ``photos``): a search finds a
    photo, the page carries its CSP, a foreign Host is refused (DNS rebinding) and a cross-site
    form post changes nothing."""
    import httpx

    r = httpx.post(f"{base}/api/search", json={"data": [data_uri(photos[4])], "top_k": 3}, timeout=30)
    assert r.status_code == 200 and r.json()["results"][0]["matches"][0]["uri"] == str(photos[4])
    page = httpx.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # DNS rebinding: the name a browser puts in Host is the attacker's, even when it resolves here.
    evil = httpx.get(f"{base}/api/stats", headers={"Host": "evil.example"}, timeout=10)
    assert evil.status_code == 400 and evil.json()["error"]["type"] == "BadHost"
    assert httpx.get(f"{base}/api/stats", headers={"Host": f"photos.example:{port}"}, timeout=10).is_success
    # A cross-site form post, as a browser marks it, changes nothing.
    before = httpx.get(f"{base}/api/stats", timeout=10).json()["docs"]
    r = httpx.post(
        f"{base}/api/index",
        files={"files": ("x.png", photos[0].read_bytes(), "image/png")},
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://127.0.0.1:1"},
        timeout=30,
    )
    assert r.status_code == 403 and r.json()["error"]["type"] == "CrossSiteRequest"
    assert httpx.get(f"{base}/api/stats", timeout=10).json()["docs"] == before


def group_photo(people: dict[str, bytes], path: Path) -> Path:
    """Obama large on the left, Biden smaller on the right: one photo, two faces of two people."""
    import io

    obama = Image.open(io.BytesIO(people["obama.jpg"])).convert("RGB")
    biden = Image.open(io.BytesIO(people["biden.jpg"])).convert("RGB")
    biden = biden.resize((biden.width * 2 // 3, biden.height * 2 // 3))
    group = Image.new("RGB", (obama.width + biden.width + 40, max(obama.height, biden.height)), "white")
    group.paste(obama, (0, 0))
    group.paste(biden, (obama.width + 40, 0))
    group.save(path, quality=92)
    return path


# The tiny encoder's flows (tests/fixtures/tiny, loaded through py_modules): real flows, no model.
TINY_FLOWS = {
    "index_flow": Path(__file__).parent / "fixtures" / "tiny" / "index.yml",
    "query_flow": Path(__file__).parent / "fixtures" / "tiny" / "query.yml",
}


def quadrants(seed: int, side: int = 64) -> Image.Image:
    """A distinct picture per seed, for the tiny encoder: four quadrants of random colours."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((side, side, 3), np.uint8)
    half = side // 2
    for y in (0, half):
        for x in (0, half):
            arr[y : y + half, x : x + half] = rng.integers(0, 256, 3)
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, once a module (tests/browsing.py has the helpers)."""
    from browsing import CHROMIUM, CHROMIUM_ARGS, need

    if not CHROMIUM.exists():
        need(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright package is not installed")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def one_space(encoder: str | None = "e", dim: int = 8, shards: int = 0, metric: str = "cosine") -> dict:
    """A layout's spaces for a workspace of one ``image`` space (shards 0: as the workspace has, 1 when new)."""
    from lookalike.store.spaces import VectorSpace

    return {"image": VectorSpace(encoder, dim, metric, shards)}
