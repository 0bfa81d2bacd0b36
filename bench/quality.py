"""The descriptor ablation: which pooling, views and neighbourhood methods give the best results.

    .venv/bin/python -m bench.quality [--json FILE] [--openclipart-per-class 50] [--cache FILE] [--only TEXT]

Every candidate is scored on the same images by the metrics code of ``lookalike eval``
(:mod:`lookalike.evaluate`: ``ranking_metrics``, and its exact reference ``leave_one_out`` for every
candidate that stores one vector per image and searches it as it is):

- tuxpaint, labels at depth 2 (``animals/birds``) and at the full path, classes of 9 or more,
  leave-one-out P@10 and mAP over the full ranking;
- openclipart, balanced: 50 images from every class that has 50;
- copy detection on the tuxpaint depth-2 images: the seven edits of ``eval --robustness`` plus
  ``combined`` (off-centre crop, rotation, brightness, caption, downscale and JPEG, stacked).

A *query* is always what the query flow encodes: one view of the image at the model's own size.
Database-side options (flip-averaging, several scales, database-side augmentation) change only the
gallery. In leave-one-out every neighbourhood method is computed without the held-out query, so
nothing about the query leaks into the gallery it is scored against.

Features come from the cached ONNX graphs with the head's feature map exposed as an extra output
(the same weights, preprocessing and graph as the product), pooled here in NumPy. Costs: indexing
images/s and query ms are measured on this machine for the encoder views each candidate needs.
What the product does not do is computed here: database-side views, DBA, whitening, concatenated
descriptors and concept vectors.

One more row is the product itself, beside the candidates: ``lookalike.evaluate.evaluate`` (what
``lookalike eval --label-depth 2 --robustness`` runs) on the tuxpaint depth-2 set, through the
library with the default flows and the settings in effect (R-MAC, aQE k=3 not for copies, its
own copy floor): what users get, to hold the numpy R-MAC + aQE row against.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from lookalike import datasets
from lookalike.descriptors import alpha_qe_search, database_augment
from lookalike.descriptors import l2_normalise as _l2
from lookalike.descriptors import pool as pool_features
from lookalike.evaluate import SINGLE_EDITS, TRANSFORMS, evaluate, leave_one_out, ranking_metrics, select
from lookalike.images import decode, to_tensor
from lookalike.library import Options
from lookalike.models.efficientnet_lite import build_graph, get_variant, weights_path
from lookalike.models.torch_checkpoint import load_state_dict

POOLS = ("avg", "gem3", "mac", "rmac", "logits")
# The row of the product itself (its name contains the default candidate's, so --only picks both).
PRODUCT = "lookalike eval, the product (default flows: R-MAC + aQE k=3, not for copies)"


def feature_session(model: str, size: int) -> ort.InferenceSession:
    """The model's graph built for input ``size``, with the head's feature map as an extra output."""
    variant = dataclasses.replace(get_variant(model), resolution=size)
    graph = build_graph(variant, load_state_dict(weights_path(variant)))
    del graph.graph.output[:]
    for name in ("embedding", "logits", "_conv_head.relu6"):
        graph.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def pool_all(fmap: np.ndarray) -> dict[str, np.ndarray]:
    """Each pooling of ``N x C x H x W`` maps, L2-normalised (the product's, plus MAC)."""
    out = {p: pool_features(fmap, q) for p, q in (("avg", "avg"), ("gem3", "gem"), ("rmac", "rmac"))}
    out["mac"] = _l2(fmap.max(axis=(2, 3)))
    return out


class Extractor:
    """Pooled descriptors of images at one model and size, plain and mirrored, with timing."""

    def __init__(self, model: str, size: int):
        self.model, self.size = model, size
        self.session = feature_session(model, size)
        self.seconds = 0.0
        self.images = 0

    def run(self, tensors: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outs = [self.session.run(None, {"input": tensors[i : i + 16]}) for i in range(0, len(tensors), 16)]
        self.seconds += time.perf_counter() - start
        self.images += len(tensors)
        pooled = pool_all(np.concatenate([o[2] for o in outs]))
        pooled["logits"] = np.concatenate([o[1] for o in outs])
        return pooled

    @property
    def rate(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def tensors_of(images: list, size: int, mirror: bool = False) -> np.ndarray:
    def one(img):
        t = to_tensor(img, size)
        return t[:, :, ::-1] if mirror else t

    with ThreadPoolExecutor(2) as pool:
        return np.ascontiguousarray(np.stack(list(pool.map(one, images))))


@dataclasses.dataclass
class Views:
    """Per pooling: ``{view name: N x C}``, view names like ``lite0@224`` and ``lite0@224/flip``."""

    by_pool: dict[str, dict[str, np.ndarray]]


def extract(images: list, extractors: list[Extractor], flips: bool = True) -> Views:
    by_pool: dict[str, dict[str, np.ndarray]] = {p: {} for p in POOLS}
    for ex in extractors:
        for mirror in (False, True) if flips else (False,):
            pooled = ex.run(tensors_of(images, ex.size, mirror))
            name = f"{ex.model.split('-')[-1]}@{ex.size}" + ("/flip" if mirror else "")
            for p in POOLS:
                by_pool[p][name] = pooled[p]
    return Views(by_pool)


# --- the candidates -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Candidate:
    name: str
    pool: str = "avg"
    query_views: tuple[str, ...] = ("lite0@224",)
    db_views: tuple[str, ...] = ("lite0@224",)
    whiten: bool = False
    qe: tuple[int, float] | None = None  # (k, alpha)
    qe_copy_floor: float | None = None  # queries with a match this close are not expanded
    dba: tuple[int, float] | None = None
    concepts: float = 0.0  # weight of the WordNet concept vector concatenated to the descriptor


def concept_matrix(max_classes: int = 300) -> np.ndarray:
    """1000 x K: class c is under concept k (concepts covering at most ``max_classes`` classes)."""
    from lookalike.models.wordnet import table

    cols = [c["classes"] for c in table()["concepts"].values() if len(c["classes"]) <= max_classes]
    m = np.zeros((1000, len(cols)), np.float32)
    for k, classes in enumerate(cols):
        m[classes, k] = 1.0
    return m


def with_concepts(desc: np.ndarray, logits: np.ndarray, weight: float) -> np.ndarray:
    """``desc`` concatenated with ``weight`` x the L2-normalised sqrt of the rolled-up probabilities."""
    from lookalike.models.imagenet import softmax

    rolled = np.sqrt(softmax(logits).astype(np.float32) @ concept_matrix())
    return _l2(np.concatenate([desc, weight * _l2(rolled)], axis=1))


def combine(views: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Average views of one model; concatenate (then normalise) across models."""
    models: dict[str, list[np.ndarray]] = {}
    for n in names:
        models.setdefault(n.split("@")[0], []).append(views[n])
    return _l2(np.concatenate([_l2(np.mean(v, axis=0)) for v in models.values()], axis=1))


def fit_whitening(train: np.ndarray, dim: int = 512, shrink: float = 0.5) -> Callable[[np.ndarray], np.ndarray]:
    """PCA-whitening fitted on ``train`` (another collection): centre, rotate, scale by eigenvalue^-shrink/2."""
    mean = train.mean(axis=0)
    cov = np.cov((train - mean).T)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1][:dim]
    proj = vecs[:, order] / np.power(np.maximum(vals[order], 1e-9), shrink / 2)
    return lambda x: _l2((x - mean) @ proj)


def loo_scores(queries: np.ndarray, gallery: np.ndarray, labels: list[str], cand: Candidate) -> tuple[float, float]:
    """Leave-one-out P@10 and mAP: query i against gallery rows != i, with the candidate's QE/DBA.

    Without QE or DBA, a candidate whose query is its stored vector is scored by the exact
    reference of ``lookalike eval``; one with other database-side views by the same ranking with
    an asymmetric gallery (the product stores one vector per image, and queries with it).
    """
    if cand.qe is None and cand.dba is None:
        if np.array_equal(queries, gallery):
            loo = leave_one_out(gallery, labels, ks=(10,))
            return float(loo.precision[10].mean()), float(loo.ap.mean())
        return leave_one_out_asymmetric(queries, gallery, labels)
    n = len(queries)
    codes = label_codes(labels)
    ap = np.empty(n)
    p10 = np.empty(n)
    gg = gallery @ gallery.T
    for i in range(n):
        keep = np.flatnonzero(np.arange(n) != i)
        g = gallery[keep]
        if cand.dba is not None:
            k, alpha = cand.dba
            g = database_augment(g, k, alpha, sims=gg[np.ix_(keep, keep)])
        if cand.qe is not None:
            k, alpha = cand.qe
            scores = alpha_qe_search(queries[i : i + 1], g, k, alpha, cand.qe_copy_floor)[0]
        else:
            scores = queries[i] @ g.T
        order = np.argsort(-scores, kind="stable")
        a, p = ranking_metrics((codes[keep][order] == codes[i])[None, :], (10,))
        ap[i], p10[i] = a[0], p[10][0]
    return float(p10.mean()), float(ap.mean())


def label_codes(labels: list[str]) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def leave_one_out_asymmetric(queries: np.ndarray, gallery: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """P@10 and mAP of query row i against every gallery row but i (gallery row i is image i seen
    from the database side), ranked as ``lookalike.evaluate.leave_one_out`` ranks (ties by index)."""
    codes = label_codes(labels)
    sims = queries @ gallery.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
    ap, p = ranking_metrics(codes[order] == codes[:, None], (10,))
    return float(p[10].mean()), float(ap.mean())


def copy_top1(variant_queries: dict[str, np.ndarray], gallery: np.ndarray, cand: Candidate) -> dict[str, float]:
    """Per edit, the fraction of copies whose original ranks first: what ``lookalike eval
    --robustness`` measures through the product, here on the candidate's own vectors."""
    g = gallery
    if cand.dba is not None:
        g = database_augment(gallery, *cand.dba)
    out = {}
    for edit, q in variant_queries.items():
        if cand.qe is not None:
            scores = alpha_qe_search(q, g, *cand.qe, copy_floor=cand.qe_copy_floor)
        else:
            scores = q @ g.T
        out[edit] = float((scores.argmax(axis=1) == np.arange(len(q))).mean())
    return out


def product_row(root: Path, expected: set[str], say: Callable[[str], None]) -> dict:
    """The product on the tuxpaint depth-2 set: ``lookalike.evaluate.evaluate`` with the default
    flows, leave-one-out and copy detection through the library, as ``lookalike eval`` runs them."""
    options = Options.from_env()
    result = evaluate(root, options=options, label_depth=2, min_class_size=9, robustness=True, progress=say)
    metrics, rob = result.metrics(), result.robustness
    assert rob is not None
    return {
        "candidate": PRODUCT,
        "encoder": result.encoder,
        "query_expansion": options.query_expansion,
        "images": len(result.paths),
        "same_images_as_candidates": set(result.paths) == expected,
        "tuxpaint depth 2": {"p_at_10": round(metrics["p_at_10"], 4), "map": round(metrics["map"], 4)},
        "copies": {e: round(v, 4) for e, v in rob.top1.items()},
        "copies_mean7": round(rob.mean_single, 4),
        # End to end (decode, model, commit) rather than the model alone: not the candidates' cost columns.
        "product_index_images_per_s": round(len(result.paths) / result.seconds["index"], 1),
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="also write the table here")
    ap.add_argument("--openclipart-per-class", type=int, default=50)
    ap.add_argument("--cache", help="keep the extracted features in this file, and read them from it next time")
    ap.add_argument(
        "--only", help="run only the candidates (and the product's row) whose name contains this (case-insensitive)"
    )
    args = ap.parse_args()
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    tux = datasets.fetch("tuxpaint").root
    clip = datasets.fetch("openclipart").root
    files = sorted(p for p in tux.rglob("*") if p.is_file() and p.suffix.lower() in (".png", ".jpg"))
    tux2 = datasets.labels_from_folders(tux, files, 2)
    tux_full = datasets.labels_from_folders(tux, files, None)
    sets: dict[str, dict[str, str]] = {}
    chosen, _, _ = select({str(p): v for p, v in tux2.items()}, 9)
    sets["tuxpaint depth 2"] = {p: tux2[Path(p)] for p in chosen}
    chosen, _, _ = select({str(p): v for p, v in tux_full.items()}, 9)
    sets["tuxpaint full path"] = {p: tux_full[Path(p)] for p in chosen}
    cfiles = sorted(p for p in clip.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    clabels = datasets.labels_from_folders(clip, cfiles, None)
    per = args.openclipart_per_class
    chosen, _, _ = select({str(p): v for p, v in clabels.items()}, per, per, seed=0)
    sets["openclipart"] = {p: clabels[Path(p)] for p in chosen}
    for name, s in sets.items():
        say(f"{name}: {len(s)} images, {len(set(s.values()))} classes")

    cache = Path(args.cache) if args.cache else None
    if cache is not None and cache.is_file():
        views, copy_views, rates, index = pickle.loads(cache.read_bytes())
        base_paths = sorted(sets["tuxpaint depth 2"])
        say(f"features read from {cache}")
    else:
        extractors = [
            Extractor("efficientnet-lite0", 224),
            Extractor("efficientnet-lite0", 320),
            Extractor("efficientnet-lite2", 260),
        ]
        all_paths = sorted({p for s in sets.values() for p in s})
        say(f"decoding {len(all_paths)} images")
        imgs = [decode(p, draft_size=None).image for p in all_paths]
        say("extracting features (3 encoder views, plain and mirrored)")
        views = extract(imgs, extractors)
        index = {p: i for i, p in enumerate(all_paths)}
        rates = {f"{e.model.split('-')[-1]}@{e.size}": e.rate for e in extractors}
        say(f"encoder rates (images/s, 2 threads): {rates}")

        # copies of the tuxpaint depth-2 images, queried at the query flow's single view
        base_paths = sorted(sets["tuxpaint depth 2"])
        base_imgs = [imgs[index[p]] for p in base_paths]
        copy_views: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # edit -> pool -> view -> vectors
        query_exts = [extractors[0], extractors[2]]
        for edit, fn in TRANSFORMS.items():
            edited = [decode(fn(im), draft_size=None).image for im in base_imgs]
            copy_views[edit] = extract(edited, query_exts, flips=False).by_pool
        say("copies encoded")
        if cache is not None:
            cache.write_bytes(pickle.dumps((views, copy_views, rates, index)))

    whiteners = {}
    for pool in POOLS:  # a whitening fitted on another collection: openclipart <-> tuxpaint
        clip_rows = [index[p] for p in sets["openclipart"]]
        tux_rows = [index[p] for p in sorted(set(sets["tuxpaint depth 2"]) | set(sets["tuxpaint full path"]))]
        v = views.by_pool[pool]["lite0@224"]
        whiteners[pool] = {"tux": fit_whitening(v[clip_rows]), "clip": fit_whitening(v[tux_rows])}

    flip, ms = ("lite0@224", "lite0@224/flip"), ("lite0@224", "lite0@320")
    cands = [
        Candidate("Lite0 average pool (the old default)"),
        Candidate("Lite0 GeM p=3", pool="gem3"),
        Candidate("Lite0 MAC", pool="mac"),
        Candidate("Lite0 R-MAC", pool="rmac"),
        Candidate("Lite0, database flip-averaged", db_views=flip),
        Candidate("Lite0, database 224+320 px", db_views=ms),
        Candidate("Lite0, PCA-whitened (fit on the other set)", whiten=True),
        Candidate("Lite0 + aQE k=3 a=3", qe=(3, 3.0)),
        Candidate("Lite0 + aQE k=5 a=3", qe=(5, 3.0)),
        Candidate("Lite0 + aQE k=3, not for copies (top-1 >= 0.82)", qe=(3, 3.0), qe_copy_floor=0.82),
        Candidate("Lite0 + aQE k=5, not for copies (top-1 >= 0.82)", qe=(5, 3.0), qe_copy_floor=0.82),
        Candidate("Lite0 R-MAC + aQE k=3, not for copies", pool="rmac", qe=(3, 3.0), qe_copy_floor=0.82),
        Candidate("Lite0 + aQE k=10 a=3", qe=(10, 3.0)),
        Candidate("Lite0 + DBA k=3 + aQE k=5", qe=(5, 3.0), dba=(3, 3.0)),
        Candidate("Lite0 flip-averaged + aQE k=5", db_views=flip, qe=(5, 3.0)),
        Candidate("Lite0 R-MAC + aQE k=5", pool="rmac", qe=(5, 3.0)),
        Candidate("Lite2 average pool", query_views=("lite2@260",), db_views=("lite2@260",)),
        Candidate("Lite2 + aQE k=5", query_views=("lite2@260",), db_views=("lite2@260",), qe=(5, 3.0)),
        Candidate(
            "Lite0+Lite2 concatenated", query_views=("lite0@224", "lite2@260"), db_views=("lite0@224", "lite2@260")
        ),
        Candidate("Lite0 + WordNet concepts w=0.5", concepts=0.5),
        Candidate("Lite0 + WordNet concepts w=1", concepts=1.0),
        Candidate("Lite0 + WordNet concepts w=1 + aQE k=3", concepts=1.0, qe=(3, 3.0)),
        Candidate("Lite0 + WordNet concepts w=1.5", concepts=1.5),
        Candidate(
            "Lite0+Lite2 concatenated + aQE k=5",
            query_views=("lite0@224", "lite2@260"),
            db_views=("lite0@224", "lite2@260"),
            qe=(5, 3.0),
        ),
    ]
    if args.only:
        cands = [c for c in cands if args.only.lower() in c.name.lower()]
    rows = []
    for cand in cands:
        pv = views.by_pool[cand.pool]
        row: dict = {"candidate": cand.name}
        for set_name, labels in sets.items():
            paths = sorted(labels)
            rows_idx = [index[p] for p in paths]
            q = combine({k: v[rows_idx] for k, v in pv.items()}, cand.query_views)
            g = combine({k: v[rows_idx] for k, v in pv.items()}, cand.db_views)
            if cand.whiten:
                w = whiteners[cand.pool]["clip" if set_name == "openclipart" else "tux"]
                q, g = w(q), w(g)
            if cand.concepts:
                lv = views.by_pool["logits"]
                ql = np.mean([lv[v][rows_idx] for v in cand.query_views if v.startswith("lite0")], 0)
                gl = np.mean([lv[v][rows_idx] for v in cand.db_views if v.startswith("lite0")], 0)
                q, g = with_concepts(q, ql, cand.concepts), with_concepts(g, gl, cand.concepts)
            p10, m = loo_scores(q, g, [labels[p] for p in paths], cand)
            row[set_name] = {"p_at_10": round(p10, 4), "map": round(m, 4)}
        rows_idx = [index[p] for p in base_paths]
        g = combine({k: v[rows_idx] for k, v in pv.items()}, cand.db_views)
        qs = {e: combine(copy_views[e][cand.pool], cand.query_views) for e in TRANSFORMS}
        if cand.whiten:
            w = whiteners[cand.pool]["tux"]
            g, qs = w(g), {e: w(q) for e, q in qs.items()}
        if cand.concepts:
            lv = views.by_pool["logits"]
            gl = np.mean([lv[v][rows_idx] for v in cand.db_views if v.startswith("lite0")], 0)
            g = with_concepts(g, gl, cand.concepts)
            qs = {e: with_concepts(q, copy_views[e]["logits"]["lite0@224"], cand.concepts) for e, q in qs.items()}
        top1 = copy_top1(qs, g, cand)
        row["copies"] = {e: round(v, 4) for e, v in top1.items()}
        row["copies_mean7"] = round(float(np.mean([top1[e] for e in SINGLE_EDITS])), 4)
        # cost: encoder passes per indexed image and per query, at the measured rates
        index_s = sum(1 / rates[v.split("/")[0]] for v in cand.db_views)
        query_s = sum(1 / rates[v] for v in cand.query_views)
        row["index_images_per_s"] = round(1 / index_s, 1)
        row["query_model_ms"] = round(1000 * query_s, 1)
        rows.append(row)
        d2 = row["tuxpaint depth 2"]
        say(
            f"{cand.name}: tux2 P@10 {d2['p_at_10']:.3f} mAP {d2['map']:.3f}; copies {row['copies_mean7']:.3f}, "
            f"combined {top1['combined']:.3f}"
        )
    if not args.only or args.only.lower() in PRODUCT.lower():
        say("the product: lookalike eval on tuxpaint depth 2 (indexing, leave-one-out, copies)")
        row = product_row(tux, set(sets["tuxpaint depth 2"]), say)
        rows.append(row)
        d2 = row["tuxpaint depth 2"]
        say(
            f"{PRODUCT}: tux2 P@10 {d2['p_at_10']:.3f} mAP {d2['map']:.3f}; copies {row['copies_mean7']:.3f}, "
            f"combined {row['copies']['combined']:.3f}"
        )
    print(json.dumps({"sets": {k: len(v) for k, v in sets.items()}, "encoder_rates": rates, "rows": rows}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
