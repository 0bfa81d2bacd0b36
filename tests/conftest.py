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
