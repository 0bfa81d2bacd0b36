"""Where "near duplicate" should start: copy edits against a collection's nearest non-copies.

    .venv/bin/python -m bench.neardup [--workspace DIR] [--json]

Indexes the 439 tuxpaint photos with the default flows (or reuses ``--workspace``), then:

1. For every photo, its nearest *other* photo (cosine of the stored whole-image vectors): the pairs
   from 0.80 up are listed, so a person can see which are the same picture edited (mirrored,
   recoloured, one letter changed) and which are two different things (a crow and a blackbird).
2. Eighty photos (a fixed sample) are edited as a user's copies are: cropped to 80%, halved, saved
   as JPEG 50, rotated 10 degrees, turned grey, mirrored (each onto white first, as the
   preprocessing does); each copy's cosine to its original is measured through the query flow.

For each candidate floor it reports the share of each kind of copy at or above it, and how many
nearest-other pairs of different pictures (by content hash) reach it.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

import lookalike
from bench.tuxpaint import indexed_tuxpaint
from lookalike.library import SearchRequest

FLOORS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.95)
SAMPLE = 80


def _on_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop to 80%": lambda im: im.crop((im.width // 10, im.height // 10, im.width * 9 // 10, im.height * 9 // 10)),
    "resize to 50%": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS),
    "JPEG quality 50": lambda im: _jpeg(im, 50),
    "rotate 10°": lambda im: im.rotate(10, expand=True, fillcolor=(255, 255, 255)),
    "grey": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "mirror": ImageOps.mirror,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", help="an index of the tuxpaint photos to reuse (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with indexed_tuxpaint(args.workspace) as (library, tux):
        result = measure(library, tux.root)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for pair in result["pairs"]:
        print(f"{pair['cosine']:.3f}  {'same bytes  ' if pair['same_bytes'] else ''}{pair['a']}  ~  {pair['b']}")
    for row in result["floors"]:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in row["copies"].items())
        print(f"floor {row['floor']:.2f}: different pictures at or above: {row['different_pairs']}; copies: {shares}")


def measure(library: lookalike.Library, root: Path) -> dict:
    store = library.workspace.store
    docs = list(store.iter_docs())
    vectors = np.stack([next(c for c in store.chunks_of(d.id) if c[1] == "whole")[3] for d in docs])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    nearest = sims.argmax(1)
    pairs = sorted({(min(i, int(j)), max(i, int(j))) for i, j in enumerate(nearest)}, key=lambda p: -sims[p])
    name = {i: str(Path(d.uri or "").relative_to(root)) for i, d in enumerate(docs)}
    same = {p: docs[p[0]].content_hash == docs[p[1]].content_hash for p in pairs}
    picked = np.random.default_rng(0).choice(len(docs), SAMPLE, replace=False)
    copies: dict[str, list[float]] = {k: [] for k in EDITS}
    for i in picked:
        with Image.open(docs[i].uri or "") as im:
            original = _on_white(im)
        for kind, edit in EDITS.items():
            buf = io.BytesIO()
            edit(original).save(buf, "PNG")
            report = library.search(SearchRequest(image=buf.getvalue(), top_k=1))
            assert report.vector is not None
            copies[kind].append(float(np.dot(report.vector / np.linalg.norm(report.vector), vectors[i])))
    return {
        "pairs": [
            {"cosine": round(float(sims[p]), 3), "a": name[p[0]], "b": name[p[1]], "same_bytes": same[p]}
            for p in pairs
            if sims[p] >= FLOORS[0]
        ],
        "copy_medians": {k: round(float(np.median(v)), 3) for k, v in copies.items()},
        "floors": [
            {
                "floor": f,
                "different_pairs": sum(1 for p in pairs if sims[p] >= f and not same[p]),
                "copies": {k: round(float(np.mean(np.asarray(v) >= f)), 2) for k, v in copies.items()},
            }
            for f in FLOORS
        ],
    }


if __name__ == "__main__":
    main()
