"""Photos with a known object in a known place: tuxpaint cut-outs pasted onto scikit-image photos.

Three cut-outs (an orange, a lobster, a daffodil), each pasted onto square crops of two photos (a
cup of coffee, a cat) in different corners, at 45% of the side; and two plain photos. A search by
the whole of a composite meets the other objects on the same background; a box around its object
finds that object on the other background. Used by the regions tests and their browser tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

SIDE = 384  # the composites are SIDE x SIDE JPEGs: square, so the model sees all of each
OBJECT = 0.45  # the pasted object's longer side, as a fraction of the composite's
MARGIN = 0.04  # from the composite's edge to the object's
STAMPS = {"orange": "orange_seville.png", "lobster": "lobster.png", "daffodil": "daffodil.png"}
# Each object on both backgrounds, never in the same corner twice on one background.
LAYOUT = [
    ("orange", "coffee", "top-left"),
    ("orange", "chelsea", "bottom-right"),
    ("lobster", "coffee", "bottom-right"),
    ("lobster", "chelsea", "top-left"),
    ("daffodil", "coffee", "top-right"),
    ("daffodil", "chelsea", "bottom-left"),
]
PLAIN = ("rocket", "coins")  # photos with none of the objects


def square(img: Image.Image) -> Image.Image:
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    return img.convert("RGB").crop((left, top, left + side, top + side)).resize((SIDE, SIDE), Image.Resampling.LANCZOS)


def paste(background: Image.Image, stamp: Path, corner: str) -> tuple[Image.Image, list[float]]:
    """``stamp`` (cut out: transparent around it) on ``background`` in ``corner`` ("center" too); the
    composite and the object's box as fractions (x0, y0, x1, y1)."""
    obj = Image.open(stamp).convert("RGBA")
    obj = obj.crop(obj.getbbox())
    scale = OBJECT * SIDE / max(obj.size)
    obj = obj.resize((round(obj.width * scale), round(obj.height * scale)), Image.Resampling.LANCZOS)
    margin = round(MARGIN * SIDE)
    x = {"left": margin, "right": SIDE - margin - obj.width}
    y = {"top": margin, "bottom": SIDE - margin - obj.height}
    if corner == "center":
        left, top = (SIDE - obj.width) // 2, (SIDE - obj.height) // 2
    else:
        vertical, horizontal = corner.split("-")
        left, top = x[horizontal], y[vertical]
    out = square(background)
    out.paste(obj, (left, top), obj)
    return out, [left / SIDE, top / SIDE, (left + obj.width) / SIDE, (top + obj.height) / SIDE]


def make_composites(tuxpaint: Any, photos: dict[str, Image.Image], root: Path, upload_dir: Path) -> dict[str, Any]:
    """The folder of photos to index (``root``); each composite's object box by name; and a query to
    upload (the daffodil, in the middle of a photo that is not indexed, in ``upload_dir``)."""
    stamps = {name: next(p for p in tuxpaint.images if p.name == file) for name, file in STAMPS.items()}
    boxes = {}
    for obj, background, corner in LAYOUT:
        image, box = paste(photos[background], stamps[obj], corner)
        image.save(root / f"{obj}-{background}.jpg", quality=92)
        boxes[f"{obj}-{background}"] = box
    for name in PLAIN:
        square(photos[name]).save(root / f"{name}.jpg", quality=92)
    (root.parent / f"{root.name}-truth.json").write_text(json.dumps(boxes))  # beside, for a person to look at
    upload, upload_box = paste(photos["astronaut"], stamps["daffodil"], "center")
    upload.save(upload_dir / "daffodil-astronaut.jpg", quality=92)
    stamp_dir = upload_dir / "stamps"
    stamp_dir.mkdir(exist_ok=True)
    clean = {}
    for name, path in stamps.items():  # each cut-out alone on white: the clean object photo
        obj = Image.open(path).convert("RGBA")
        flat = Image.new("RGB", obj.size, "white")
        flat.paste(obj, mask=obj)
        flat.save(stamp_dir / f"{name}.png")
        clean[name] = stamp_dir / f"{name}.png"
    return {
        "root": root,
        "boxes": boxes,
        "upload": upload_dir / "daffodil-astronaut.jpg",
        "upload_box": upload_box,
        "clean": clean,
    }
