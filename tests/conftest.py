from __future__ import annotations

import os
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
    from lookalike.models.encoder import ImageEncoder

    return ImageEncoder(cache_dir=model_dir)


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
