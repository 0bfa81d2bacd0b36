"""Burst frames against edited copies: what the encoder and the pixels say of each.

    .venv/bin/python -m bench.bursts [--json]

Seven scikit-image photos (bundled, no download) each get edited copies (halved, JPEG 40,
recoloured, grey, mirrored, cropped 5% and 10% a side) and simulated burst frames (the middle third
moved 2, 4 or 8% of the width; the camera panned 3%; both), and scikit-image's stereo pair stands for
a frame shot from a step aside. For each, the cosine of its EfficientNet-Lite0 vector to the
original's, and :func:`lookalike.bursts.moved` as the same-second check compares them.
The rule in :mod:`lookalike.bursts` is read from this table: the encoder cannot tell the two kinds
apart, plain pixels can only for copies of the same geometry, so the camera's clock decides first.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable

from PIL import Image, ImageEnhance, ImageOps

from lookalike.bursts import cells, moved
from lookalike.models.encoder import EfficientNetEncoder

Edit = Callable[[Image.Image], Image.Image]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(img: Image.Image, f: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * f), round(h * f), w - round(w * f), h - round(h * f)))


def _subject_moved(img: Image.Image, shift: float) -> Image.Image:
    w, h = img.size
    box = (w // 3, h // 3, 2 * w // 3, 2 * h // 3)
    frame = img.copy()
    frame.paste(img.crop(box), (box[0] + round(w * shift), box[1]))
    return frame


def _panned(img: Image.Image, f: float = 0.03) -> Image.Image:
    return img.crop((round(img.width * f), 0, img.width, img.height)).resize(img.size)


EDITS: dict[str, Edit] = {
    "halved": lambda i: i.resize((i.width // 2, i.height // 2), Image.Resampling.LANCZOS),
    "jpeg 40": lambda i: _jpeg(i, 40),
    "recoloured": lambda i: ImageEnhance.Color(ImageEnhance.Brightness(i).enhance(1.3)).enhance(0.4),
    "grey": lambda i: ImageOps.grayscale(i).convert("RGB"),
    "mirrored": ImageOps.mirror,
    "crop 5%": lambda i: _crop(i, 0.05),
    "crop 10%": lambda i: _crop(i, 0.10),
}
BURSTS: dict[str, Edit] = {
    "moved 2%": lambda i: _subject_moved(i, 0.02),
    "moved 4%": lambda i: _subject_moved(i, 0.04),
    "moved 8%": lambda i: _subject_moved(i, 0.08),
    "panned 3%": _panned,
    "panned, moved 4%": lambda i: _subject_moved(_panned(i), 0.04),
}


def measure() -> list[dict]:
    from skimage import data

    encoder = EfficientNetEncoder()
    names = ("astronaut", "coffee", "chelsea", "rocket", "coins", "camera")
    photos = {n: Image.fromarray(getattr(data, n)()).convert("RGB") for n in names}
    left, right, _ = data.stereo_motorcycle()
    photos["motorcycle"] = Image.fromarray(left)
    pairs = [
        (k, e, n, img, f(img))
        for n, img in photos.items()
        for k, t in (("edit", EDITS), ("burst", BURSTS))
        for e, f in t.items()
    ]
    pairs.append(("burst", "stereo pair", "motorcycle", photos["motorcycle"], Image.fromarray(right)))
    rows = []
    for kind, what, name, a, b in pairs:
        vectors, _ = encoder.encode([a, b])
        same_size = a.size == b.size
        rows.append({
            "kind": kind, "what": what, "photo": name, "cosine": round(float(vectors[0] @ vectors[1]), 3),
            "moved": round(moved(cells(a), cells(b)), 3) if same_size else None,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    rows = measure()
    if parser.parse_args().json:
        print(json.dumps(rows))
        return
    for what in [*EDITS, *BURSTS, "stereo pair"]:
        mine = [r for r in rows if r["what"] == what]
        cos = [r["cosine"] for r in mine]
        pix = [r["moved"] for r in mine if r["moved"] is not None]
        shown = f"moved {min(pix):.2f} - {max(pix):.2f}" if pix else "other size"
        print(f"{mine[0]['kind']:5s}  {what:17s}  cosine {min(cos):.3f} - {max(cos):.3f}   {shown}")


if __name__ == "__main__":
    main()
