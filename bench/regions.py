"""Search by a part of a photo, and why a result matched: regions measured on pasted objects.

    .venv/bin/python -m bench.regions [--json FILE] [--parts find speed explain copies eval]

The set (:mod:`bench.pasted`): 40 tuxpaint cut-outs, each pasted onto 5 photos of other
collections (scikit-image, face_recognition's and dlib's test photos) at a random place, its longer
side 30% to 55% of the picture's: 200 composites. Everything runs through the library, as users do.

1. **find**: recall@10 of the other composites holding the same object, for
   - a plain search of a composite (``like``): on the photos indexed without regions (whole
     photos only), and with regions (whole photos and their parts, each photo by its better score);
   - a box search: the object's box on a composite (``like`` + ``box``: the regions space only);
   - the clean object photo as the query: plain search without and with regions, and by the box of
     the whole photo (``box 0,0,1,1``: the regions space only);
   and the box search's recall@10 by the size of the object in the photo found; its latency.
2. **speed**: indexing the 200 composites with the default flow and with regions (alternately,
   best of 3 each, one process), and the bytes per image of each workspace.
3. **explain**: for matched pairs (found in the top 10 of a box search, and of a clean-object
   search), how often the explanation's hottest cell lies on the pasted object: its centre inside
   the object's box, and (looser) the cell overlapping it.
4. **copies**: ``lookalike eval --robustness``'s combined edit (off-centre crop, rotation,
   brightness, caption, downscale, JPEG) of the tuxpaint photos ``eval`` evaluates: how often the
   original comes first, by plain search without and with regions, and by a box of the whole edit.
5. **eval**: ``lookalike eval``'s leave-one-out on those photos (label depth 2, classes of 9 or
   more; its own search path, expansion included), P@10 and mAP without and with regions.
6. **ablation**: the choices behind the regions, and their ceiling (:func:`ablation`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import lookalike
from bench.pasted import Composite, build
from lookalike import datasets
from lookalike.evaluate import TRANSFORMS, searched_leave_one_out, select
from lookalike.images import decode
from lookalike.library import ExplainRequest, IndexRequest, ListRequest, Options, SearchRequest

WHOLE = (0.0, 0.0, 1.0, 1.0)
EXPLAINED = 150  # matched pairs explained per kind (seeded sample): ~0.5 s each


def _options(ws: Path, preset: str | None) -> Options:
    return Options.from_env().replace(workspace=ws, preset=preset)


def _index(root: Path, ws: Path, preset: str | None) -> float:
    """Index ``root`` into a fresh ``ws``; images a second."""
    shutil.rmtree(ws, ignore_errors=True)
    with lookalike.open(_options(ws, preset), reset=True) as lib:
        report = lib.index(IndexRequest((str(root),)))
    return report.indexed / report.seconds


def _recall(found: list[str], relevant: set[str]) -> float:
    return len(relevant & set(found[:10])) / len(relevant)


def find(ws: Path, plain_ws: Path, comps: list[Composite], root: Path) -> dict:
    by_obj: dict[str, set[str]] = {}
    for c in comps:
        by_obj.setdefault(c.obj, set()).add(str(c.path))
    size = {str(c.path): max(c.box[2] - c.box[0], c.box[3] - c.box[1]) for c in comps}
    out: dict = {}
    with lookalike.open(_options(ws, None)) as lib:
        paths = lambda report: [h.path for h in report.hits]  # noqa: E731
        whole, box, per_size, latency = [], [], [], []
        for c in comps:
            relevant = by_obj[c.obj] - {str(c.path)}
            whole.append(_recall(paths(lib.search(SearchRequest(like=str(c.path), top_k=10))), relevant))
            start = time.perf_counter()
            found = paths(lib.search(SearchRequest(like=str(c.path), box=c.box, top_k=10)))
            latency.append(time.perf_counter() - start)
            box.append(_recall(found, relevant))
            per_size += [(size[p], p in found) for p in relevant]
        clean_box, clean_plain = [], []
        for obj, relevant in sorted(by_obj.items()):
            image = str(root / "objects" / f"{obj}.png")
            clean_box.append(_recall(paths(lib.search(SearchRequest(image=image, box=WHOLE, top_k=10))), relevant))
            clean_plain.append(_recall(paths(lib.search(SearchRequest(image=image, top_k=10))), relevant))
    with lookalike.open(_options(plain_ws, None)) as lib:  # the same photos indexed without regions
        only_whole = [
            _recall(paths(lib.search(SearchRequest(like=str(c.path), top_k=10))), by_obj[c.obj] - {str(c.path)})
            for c in comps
        ]
        clean_whole = [
            _recall(paths(lib.search(SearchRequest(image=str(root / "objects" / f"{o}.png"), top_k=10))), rel)
            for o, rel in sorted(by_obj.items())
        ]
    sizes = np.array([s for s, _ in per_size])
    hit = np.array([f for _, f in per_size])
    buckets = {}
    for lo, hi in ((0.3, 0.38), (0.38, 0.46), (0.46, 0.56)):
        sel = (sizes >= lo) & (sizes < hi)
        buckets[f"{lo:.2f}-{hi:.2f}"] = {"recall@10": round(float(hit[sel].mean()), 3), "pairs": int(sel.sum())}
    out["recall@10"] = {
        "a composite, plain search without regions (whole photos)": round(float(np.mean(only_whole)), 3),
        "a composite, plain search with regions (whole photos and parts)": round(float(np.mean(whole)), 3),
        "a composite, box search (the object's box)": round(float(np.mean(box)), 3),
        "clean object, plain search without regions": round(float(np.mean(clean_whole)), 3),
        "clean object, plain search with regions": round(float(np.mean(clean_plain)), 3),
        "clean object, box 0,0,1,1 (regions only)": round(float(np.mean(clean_box)), 3),
    }
    out["box search recall@10 by the found object's side"] = buckets
    out["box search ms (p50, p90)"] = [round(float(np.percentile(latency, q)) * 1000, 1) for q in (50, 90)]
    return out


def speed(root: Path, scratch: Path, rounds: int = 3) -> dict:
    rates: dict[str, list[float]] = {"default": [], "regions": []}
    for _ in range(rounds):
        for preset in ("default", "regions"):
            rates[preset].append(_index(root, scratch / f"ws-{preset}", None if preset == "default" else preset))
    n = len(list((root).glob("*.jpg")))
    sizes = {}
    for preset in ("default", "regions"):
        ws = scratch / f"ws-{preset}"
        parts = {
            p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            for p in ws.iterdir()
        }
        shard = sum(v for k, v in parts.items() if k.startswith("shard-"))
        regions = sum(v for k, v in parts.items() if k.startswith("regions-shard-"))
        sizes[preset] = {
            "docs.sqlite KB/image": round(parts.get("docs.sqlite", 0) / n / 1024, 2),
            "image shards KB/image": round(shard / n / 1024, 2),
            "regions shards KB/image": round(regions / n / 1024, 2),
            "total KB/image": round(sum(parts.values()) / n / 1024, 2),
        }
    best = {k: max(v) for k, v in rates.items()}
    return {
        "images/s (best of rounds)": {k: round(v, 1) for k, v in best.items()},
        "all rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "regions / default speed": round(best["regions"] / best["default"], 3),
        "bytes": sizes,
        "regions / default bytes": round(sizes["regions"]["total KB/image"] / sizes["default"]["total KB/image"], 3),
    }


def _hottest_on(heat: list[list[float]], grid_box: list[float], obj: tuple[float, ...]) -> tuple[bool, bool]:
    """(the hottest cell's centre inside ``obj``, the hottest cell overlapping it), in fractions."""
    grid = np.asarray(heat)
    r, c = divmod(int(np.argmax(grid)), grid.shape[1])
    x0, y0, x1, y1 = grid_box
    cw, ch = (x1 - x0) / grid.shape[1], (y1 - y0) / grid.shape[0]
    left, top = x0 + c * cw, y0 + r * ch
    cx, cy = left + cw / 2, top + ch / 2
    inside = obj[0] <= cx <= obj[2] and obj[1] <= cy <= obj[3]
    overlap = not (left >= obj[2] or left + cw <= obj[0] or top >= obj[3] or top + ch <= obj[1])
    return inside, overlap


def explain(ws: Path, comps: list[Composite], root: Path, sample: int = EXPLAINED) -> dict:
    truth = {str(c.path): c for c in comps}
    rng = np.random.default_rng(0)
    out = {}
    with lookalike.open(_options(ws, None)) as lib:
        for kind in ("box search", "clean object (box 0,0,1,1)"):
            pairs = []
            if kind == "box search":
                for c in comps:
                    hits = lib.search(SearchRequest(like=str(c.path), box=c.box, top_k=10)).hits
                    pairs += [(c, h) for h in hits if h.path in truth and truth[h.path].obj == c.obj]
            else:
                for obj in sorted({c.obj for c in comps}):
                    image = str(root / "objects" / f"{obj}.png")
                    hits = lib.search(SearchRequest(image=image, box=WHOLE, top_k=10)).hits
                    pairs += [(image, h) for h in hits if h.path in truth and truth[h.path].obj == obj]
            chosen = [pairs[i] for i in sorted(rng.choice(len(pairs), min(sample, len(pairs)), replace=False))]
            inside = overlap = 0
            start = time.perf_counter()
            for query, hit in chosen:
                if isinstance(query, Composite):
                    request = ExplainRequest(hit.doc_id, like=str(query.path), box=query.box)
                else:
                    request = ExplainRequest(hit.doc_id, image=query, box=WHOLE)
                e = lib.explain(request).to_dict()
                a, b = _hottest_on(e["heat"], e["heat_box"], truth[hit.path].box)
                inside += a
                overlap += b
            n = max(1, len(chosen))
            out[kind] = {
                "matched pairs": len(pairs),
                "explained": len(chosen),
                "hottest cell's centre on the object": round(inside / n, 3),
                "hottest cell overlapping the object": round(overlap / n, 3),
                "s per explanation": round((time.perf_counter() - start) / n, 2),
            }
    return out


def _tuxpaint() -> tuple[list[str], list[str]]:
    ds = datasets.fetch("tuxpaint")
    labels = {str(p): lab for p, lab in datasets.labels_from_folders(ds.root, ds.images, depth=2).items()}
    kept, _, _ = select(labels, 9)
    return kept, [labels[p] for p in kept]


def _tux_workspaces(scratch: Path) -> tuple[list[str], dict[str, Path]]:
    """The evaluated tuxpaint photos (exactly those, as eval indexes them), indexed without and with
    regions."""
    paths, _ = _tuxpaint()
    folder = scratch / "tux"
    spaces = {"without regions": scratch / "ws-tux", "with regions": scratch / "ws-tux-regions"}
    if not folder.exists():
        folder.mkdir(parents=True)
        for i, p in enumerate(paths):
            shutil.copy(p, folder / f"{i:04d}{Path(p).suffix}")
        _index(folder, spaces["without regions"], None)
        _index(folder, spaces["with regions"], "regions")
    return sorted(str(p) for p in folder.iterdir()), spaces


def copies(scratch: Path) -> dict:
    """The combined edit of every evaluated photo, searched as an image: how often its original is
    first, by plain search without and with regions, and by a box of the whole edit (regions only)."""
    originals, spaces = _tux_workspaces(scratch)
    edits = [TRANSFORMS["combined"](decode(p, draft_size=None).image) for p in originals]
    first: dict[str, float] = {}
    for name, ws in spaces.items():
        with lookalike.open(_options(ws, None)) as lib:
            reports = lib.search_many(SearchRequest(image=e, top_k=1) for e in edits)  # type: ignore[arg-type]
            first[f"plain search, {name}"] = _first(reports, originals)
            if name == "with regions":
                boxed = [lib.search(SearchRequest(image=e, box=WHOLE, top_k=1)) for e in edits]  # type: ignore[arg-type]
                first["box 0,0,1,1 (regions only)"] = _first(boxed, originals)
    return {"images": len(originals), "original first": first}


def _first(reports: list, originals: list[str]) -> float:
    return round(
        sum(bool(r.hits) and r.hits[0].path == o for r, o in zip(reports, originals, strict=True)) / len(originals), 3
    )


def eval_fused(scratch: Path) -> dict:
    """``lookalike eval``'s leave-one-out (searched_leave_one_out: the search path, expansion and all)
    on the same photos without and with regions."""
    originals, spaces = _tux_workspaces(scratch)
    _, labels = _tuxpaint()
    label_of = {Path(p).stem: lab for p, lab in zip(originals, labels, strict=True)}
    out: dict = {"queries": len(originals)}
    for name, ws in spaces.items():
        with lookalike.open(_options(ws, None)) as lib:
            docs = sorted(lib.list(ListRequest(limit=1000)).docs, key=lambda d: d.uri or "")
            loo, _ = searched_leave_one_out(lib, [d.id for d in docs], [label_of[Path(d.uri or "").stem] for d in docs])
        out[f"plain search, {name}"] = {
            "P@10": round(float(loo.precision[10].mean()), 3),
            "mAP": round(float(loo.ap.mean()), 3),
        }
    return out


def ablation(comps: list[Composite], root: Path) -> dict:
    """Why the regions are what they are, on the same composites, in NumPy over the model's own
    feature maps (``features``): recall@10 of a box query (the object's box) and of the clean
    object, against
    - the product's 4 windows (2 x 2, 4 cells each) and 9 smaller ones (3 x 3, 3 cells each);
    - an oracle: the cells under the object's own box, max- and average-pooled (the best any
      pooling of the 7 x 7 map could place a region);
    - an oracle with a second model pass: the object's box cut out of each photo and encoded on its
      own (what a region would be with compute spent on it);
    and the query side: the product's crop shrunk into a window of an empty input, against the crop
    encoded at full size."""
    from lookalike.descriptors import l2_normalise, region_projection
    from lookalike.executors.crafters import crop
    from lookalike.images import shrink, to_tensor
    from lookalike.models.efficientnet_lite import get_variant, weights_path
    from lookalike.models.encoder import EfficientNetEncoder
    from lookalike.models.torch_checkpoint import load_state_dict

    enc = EfficientNetEncoder()
    proj = region_projection(load_state_dict(weights_path(get_variant(enc.name)))["_fc.weight"])
    objs = sorted({c.obj for c in comps})
    owner = np.array([objs.index(c.obj) for c in comps])
    photos = [decode(str(c.path)).image for c in comps]
    # The clean objects as the product takes them with box 0,0,1,1: whole, centred on a grey square.
    clean = [crop(decode(str(root / "objects" / f"{o}.png")).image, list(WHOLE)) for o in objs]
    maps = enc.feature_maps(np.stack([to_tensor(p, 224) for p in photos]))

    def project(v: np.ndarray) -> np.ndarray:
        return l2_normalise(l2_normalise(v) @ proj)

    def windows(side: int, starts: tuple[int, ...]) -> np.ndarray:
        return np.stack(
            [project(maps[:, :, t : t + side, s : s + side].max(axis=(2, 3))) for t in starts for s in starts], 1
        )

    def oracle(pool: str) -> np.ndarray:
        out = []
        for m, c in zip(maps, comps, strict=True):  # composites are square: the map covers 7/8 of them, centred
            cells = [min(6, max(0, int((v - 1 / 16) / (7 / 8) * 7))) for v in c.box]
            part = m[:, cells[1] : cells[3] + 1, cells[0] : cells[2] + 1]
            out.append(part.max(axis=(1, 2)) if pool == "max" else part.mean(axis=(1, 2)))
        return project(np.stack(out))[:, None]

    def canvas(images: list, px: int) -> np.ndarray:
        batch = np.zeros((len(images), 3, 224, 224), np.float32)
        for i, img in enumerate(images):
            batch[i, :, :px, :px] = shrink(to_tensor(img, 224), (px, px))
        cells = px // 32
        return project(enc.feature_maps(batch)[:, :, :cells, :cells].mean(axis=(2, 3)))

    def full(images: list) -> np.ndarray:
        return project(enc.feature_maps(np.stack([to_tensor(i, 224) for i in images])).max(axis=(2, 3)))

    crops = [crop(p, list(c.box)) for p, c in zip(photos, comps, strict=True)]

    def recall(queries: np.ndarray, regions: np.ndarray, by_box: bool) -> float:
        scores = np.einsum("qc,nrc->qnr", queries, regions).max(axis=2)
        out = []
        for q in range(len(queries)):
            s = scores[q].copy()
            relevant = set(np.flatnonzero(owner == (owner[q] if by_box else q)))
            if by_box:
                s[q] = -np.inf
                relevant.discard(q)
            out.append(len(relevant & set(np.argsort(-s)[:10].tolist())) / len(relevant))
        return round(float(np.mean(out)), 3)

    shrunk = {px: (canvas(crops, px), canvas(clean, px)) for px in (128, 96)}  # a window of 4 or 3 cells
    whole = (full(crops), full(clean))
    rows = {
        "4 windows of 4 x 4 cells (the product)": (windows(4, (0, 3)), 128),
        "9 windows of 3 x 3 cells": (windows(3, (0, 2, 4)), 96),
        "oracle: the object's cells, max-pooled": (oracle("max"), 128),
        "oracle: the object's cells, average-pooled": (oracle("avg"), 128),
    }
    out: dict = {}
    for name, (regions, px) in rows.items():
        for qname, (box_q, clean_q) in (
            ("crop shrunk into a window (the product)", shrunk[px]),
            ("crop at full size", whole),
        ):
            out[f"{name}; query: {qname}"] = {
                "box": recall(box_q, regions, True),
                "clean object": recall(clean_q, regions, False),
            }
    rmac_q = lambda images: l2_normalise(enc.run(np.stack([to_tensor(i, 224) for i in images]), ["rmac"])[0])  # noqa: E731
    cut_full = l2_normalise(enc.run(np.stack([to_tensor(c, 224) for c in crops]), ["rmac"])[0])[:, None]
    out["oracle: the object cut out of each photo and encoded (a second pass); query: crop encoded"] = {
        "box": recall(rmac_q(crops), cut_full, True),
        "clean object": recall(rmac_q(clean), cut_full, False),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--parts", nargs="+", default=["find", "speed", "explain", "copies", "eval", "ablation"])
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "lookalike-pasted")
    args = ap.parse_args()
    comps = build(args.root)
    results: dict = {"composites": len(comps), "objects": len({c.obj for c in comps})}
    with tempfile.TemporaryDirectory(prefix="bench-regions-") as tmp:
        scratch = Path(tmp)
        ws, plain_ws = scratch / "ws-regions", scratch / "ws-plain"
        _index(args.root / "composites", ws, "regions")
        if "find" in args.parts:
            _index(args.root / "composites", plain_ws, None)
            results["find"] = find(ws, plain_ws, comps, args.root)
            print(json.dumps(results["find"], indent=1), flush=True)
        if "explain" in args.parts:
            results["explain"] = explain(ws, comps, args.root)
            print(json.dumps(results["explain"], indent=1), flush=True)
        if "speed" in args.parts:
            results["speed"] = speed(args.root / "composites", scratch)
            print(json.dumps(results["speed"], indent=1), flush=True)
        if "copies" in args.parts:
            results["copies"] = copies(scratch)
            print(json.dumps(results["copies"], indent=1), flush=True)
        if "eval" in args.parts:
            results["eval"] = eval_fused(scratch)
            print(json.dumps(results["eval"], indent=1), flush=True)
        if "ablation" in args.parts:
            results["ablation"] = ablation(comps, args.root)
            print(json.dumps(results["ablation"], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
