"""The pasted-object set: objects of one collection pasted onto the photos of others.

The objects are tuxpaint's cut-out photos (transparent around the object); the backgrounds are
every photo of scikit-image's set, face_recognition's test photos and dlib's labelled faces. Each
object is pasted onto ``copies`` different backgrounds, each time at a random size (a side of
``SIDE`` of the picture's) and place, after a random square crop of the background (a square:
the preprocessing's centre crop would otherwise cut some objects off, which is a fact about the
preprocessing, not about regions; see docs/benchmarks.md). Seeded, so every machine builds the
same files. Nothing here is committed: the set is made from the fetched datasets on first use.

Layout of ``root``: ``composites/OBJ-K.jpg`` (with ``truth.json``: each composite's object and
the object's box, as fractions of the picture) and ``objects/OBJ.png`` (the clean objects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.people_data import fetch_dlib_johns, fetch_face_recognition_photos
from lookalike import datasets

SIDE = (0.3, 0.55)  # the pasted object's longer side, as a fraction of the composite's side
SIZE = 320  # composites are SIZE x SIZE JPEGs


@dataclass(frozen=True)
class Composite:
    path: Path
    obj: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions


def _backgrounds() -> list[Path]:
    out = list(datasets.fetch("skimage").images)
    for people in (fetch_face_recognition_photos(), fetch_dlib_johns()):
        out += [p for photos in people.values() for p in photos]
    return sorted(out)


def _objects(n: int, rng: np.random.Generator) -> list[Path]:
    """``n`` tuxpaint stamps, at most one per folder first (so objects differ), then at random."""
    ds = datasets.fetch("tuxpaint")
    stamps = [p for p in ds.images if Image.open(p).mode in ("RGBA", "LA", "P")]
    by_folder: dict[Path, list[Path]] = {}
    for p in stamps:
        by_folder.setdefault(p.parent, []).append(p)
    firsts = [v[int(rng.integers(len(v)))] for _, v in sorted(by_folder.items())]
    rng.shuffle(firsts)  # type: ignore[arg-type]
    return sorted(firsts[:n])


def _square(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    side = int(min(w, h) * rng.uniform(0.6, 1.0))
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    return img.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def build(root: Path, objects: int = 40, copies: int = 5, seed: int = 0) -> list[Composite]:
    """Make (or find made) the set under ``root``; its composites."""
    truth_file = root / "truth.json"
    key = {"objects": objects, "copies": copies, "seed": seed, "side": list(SIDE), "size": SIZE}
    if truth_file.exists():
        saved = json.loads(truth_file.read_text())
        if saved["key"] == key:
            return [Composite(root / c["path"], c["obj"], tuple(c["box"])) for c in saved["composites"]]
    rng = np.random.default_rng(seed)
    backgrounds = _backgrounds()
    (root / "composites").mkdir(parents=True, exist_ok=True)
    (root / "objects").mkdir(parents=True, exist_ok=True)
    made = []
    for obj_path in _objects(objects, rng):
        name = f"{obj_path.parent.name}-{obj_path.stem}"
        obj = Image.open(obj_path).convert("RGBA")
        obj = obj.crop(obj.getbbox() or (0, 0, *obj.size))
        clean = Image.new("RGB", obj.size, "white")
        clean.paste(obj, mask=obj)
        clean.save(root / "objects" / f"{name}.png")
        for k, bg_i in enumerate(rng.choice(len(backgrounds), size=copies, replace=False)):
            bg = _square(Image.open(backgrounds[int(bg_i)]).convert("RGB"), rng)
            scale = rng.uniform(*SIDE) * SIZE / max(obj.size)
            o = obj.resize(
                (max(1, round(obj.width * scale)), max(1, round(obj.height * scale))), Image.Resampling.LANCZOS
            )
            x, y = int(rng.integers(0, SIZE - o.width + 1)), int(rng.integers(0, SIZE - o.height + 1))
            bg.paste(o, (x, y), mask=o)
            path = root / "composites" / f"{name}-{k}.jpg"
            bg.save(path, quality=90)
            box = (x / SIZE, y / SIZE, (x + o.width) / SIZE, (y + o.height) / SIZE)
            made.append(Composite(path, name, box))
    saved_list = [{"path": str(c.path.relative_to(root)), "obj": c.obj, "box": list(c.box)} for c in made]
    truth_file.write_text(json.dumps({"key": key, "composites": saved_list}, indent=1))
    return made
