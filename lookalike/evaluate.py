"""Retrieval quality on a labelled folder: leave-one-out P@k and mAP, copy detection, match levels.

Labels come from folders: an image's label is its folder relative to the evaluated root (the first
``label_depth`` parts of it). Classes with fewer than ``min_class_size`` images are left out.

Eval measures the product: the evaluated images are indexed into a workspace of their own with
the library (:mod:`lookalike.library`), and every query runs through the same search path as a
user's, expansion and match levels included.

- **Leave-one-out.** Every evaluated image is the query once, as "more like this" stored photo
  (its stored vectors; nothing is encoded again), left out of its own results; the rest of the
  evaluated images are the gallery. We report P@1, P@5, P@10 and the mean average precision over
  the whole ranking, overall and per class (past the 1,000 results a search returns, the rest of
  the collection follows by its cosine to the query's vector).
- **Copy detection** (``robustness=True``). Every evaluated image is flipped, cropped to 80%,
  resized to 50%, saved as a JPEG at quality 50, rotated by +10 and -10 degrees, turned grey, and
  given all of a re-post's edits at once; each copy is searched for as an image, and the score per
  edit is the fraction whose original comes first.
- **Match levels.** How many results the ``similar`` cut keeps, at what precision, and how many
  copies are labelled ``same`` or ``near_duplicate``.

``--encoder histogram`` runs the same with a colour histogram for an encoder (the floor), and
``--flow`` any index flow (its query flow takes the built-in one's shape, with its encoder).
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from lookalike.errors import BadInput, ConfigError, NotFound
from lookalike.images import ImageSource, decode
from lookalike.library import IndexRequest, Library, SearchReport, SearchRequest
from lookalike.library import open as open_library
from lookalike.library.types import MAX_TOP_K
from lookalike.relevance import Calibration
from lookalike.settings import Options

METRIC_KS = (1, 5, 10)
ENCODERS = ("efficientnet", "histogram")
# The threshold: a class of 9 gives each query 8 relevant images, enough for P@5 to mean
# something and for AP not to hinge on one or two ranks.
DEFAULT_MIN_CLASS_SIZE = 9
# Images whose copies are made (in a thread pool) while the previous ones are searched: 16 images
# x 8 edits = 128 queries, one batch through the query flow.
_ROBUSTNESS_CHUNK = 16
# Leave-one-out queries per batch through the query flow, and query rows per block of the
# reference similarity matrix (256 x 7,000 float32 is 7 MB).
_LOO_BATCH = 64
_LOO_BLOCK = 256
# Results a query's "similar" cut is measured on.
_CUTOFF_DEPTH = 100

Progress = Callable[[str], None]


# --- the copy-detection transforms ----------------------------------------------------------------


def _flip(img: Image.Image) -> ImageSource:
    return ImageOps.mirror(img)


def _crop80(img: Image.Image) -> ImageSource:
    w, h = img.size
    cw, ch = max(1, round(w * 0.8)), max(1, round(h * 0.8))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _resize50(img: Image.Image) -> ImageSource:
    w, h = img.size
    return img.resize((max(1, round(w / 2)), max(1, round(h / 2))), Image.Resampling.LANCZOS)


def _jpeg50(img: Image.Image) -> ImageSource:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=50)
    return buf.getvalue()  # bytes: decoded like any JPEG file, draft() included


def _rotate(angle: float) -> Callable[[Image.Image], ImageSource]:
    def rotate(img: Image.Image) -> ImageSource:
        # Same canvas, corners filled black: torchvision's RandomRotation defaults, the usual
        # copy-detection augmentation.
        return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))

    return rotate


def _grey(img: Image.Image) -> ImageSource:
    return ImageOps.grayscale(img)


def _combined(img: Image.Image) -> ImageSource:
    """Several edits stacked, as a re-posted copy is: an off-centre crop keeping 75% of each side,
    a 5-degree rotation, 25% brighter, a caption across the bottom, then a third of the size (but
    not under 96 px on the long side: many stamps are small already) and JPEG quality 40."""
    w, h = img.size
    cw, ch = max(1, round(w * 0.75)), max(1, round(h * 0.75))
    left, top = round(w * 0.2), round(h * 0.05)  # off-centre: more of the left side is lost
    out = img.convert("RGB").crop((left, top, min(w, left + cw), min(h, top + ch)))
    out = out.rotate(5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(0, 0, 0))
    out = ImageEnhance.Brightness(out).enhance(1.25)
    draw = ImageDraw.Draw(out)
    band = max(8, out.height // 8)
    font = ImageFont.load_default(size=max(6, band * 3 // 4))
    draw.rectangle((0, out.height - band, out.width, out.height), fill=(0, 0, 0))
    draw.text((band // 4, out.height - band), "lookalike copy 2026", fill=(255, 255, 255), font=font)
    scale = min(1.0, max(1 / 3, 96 / max(out.size)))
    out = out.resize((max(1, round(out.width * scale)), max(1, round(out.height * scale))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=40)
    return buf.getvalue()


TRANSFORMS: dict[str, Callable[[Image.Image], ImageSource]] = {
    "flip": _flip,
    "crop80": _crop80,
    "resize50": _resize50,
    "jpeg50": _jpeg50,
    "rotate+10": _rotate(10),
    "rotate-10": _rotate(-10),
    "grey": _grey,
    "combined": _combined,
}
# The single edits, whose mean is the headline copy-detection score; "combined" is reported beside it.
SINGLE_EDITS = tuple(name for name in TRANSFORMS if name != "combined")
COPY_EDITS = TRANSFORMS


def variants(source: ImageSource) -> list[bytes]:
    """Every edit of one image, as the image files a user would search with (lossless PNG for the
    pixel edits, JPEG where the edit is a JPEG). The original is decoded at full size (alpha onto
    white, EXIF applied) first."""
    original = decode(source, draft_size=None).image
    out = []
    for transform in TRANSFORMS.values():
        made = transform(original)
        if isinstance(made, Image.Image):
            buf = io.BytesIO()
            made.save(buf, "PNG", compress_level=1)  # lossless and quick: the copy is the pixels
            made = buf.getvalue()
        assert isinstance(made, bytes)
        out.append(made)
    return out


# --- metrics --------------------------------------------------------------------------------------


def ranking_metrics(
    relevant: np.ndarray, ks: Sequence[int] = METRIC_KS, total: np.ndarray | None = None
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Average precision and P@k of rankings given as a ``Q x R`` boolean matrix (best first).

    AP is the mean, over the relevant items, of the precision at each one's rank (0 when nothing
    is relevant); over ``total`` relevant items a row has (where the ranking is cut short of
    them: those it misses count 0), else over those in the ranking. P@k is the relevant fraction
    of the first ``k``; a ranking shorter than ``k`` still divides by ``k``.
    """
    rel = np.atleast_2d(np.asarray(relevant, dtype=bool))
    n_rows, length = rel.shape
    for k in ks:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
    if length == 0:
        return np.zeros(n_rows), {k: np.zeros(n_rows) for k in ks}
    hits = np.cumsum(rel, axis=1)
    n_rel = hits[:, -1] if total is None else np.maximum(np.asarray(total), hits[:, -1])
    precision = hits / np.arange(1, length + 1)
    ap = np.where(n_rel > 0, (precision * rel).sum(axis=1) / np.maximum(n_rel, 1), 0.0)
    return ap, {k: hits[:, min(k, length) - 1] / k for k in ks}


def precision_at_k(relevant: Sequence[bool] | np.ndarray, k: int) -> float:
    """Fraction of the first ``k`` results that are relevant (``relevant`` is one ranking)."""
    return float(ranking_metrics(np.asarray(relevant, dtype=bool)[None, :], (k,))[1][k][0])


def average_precision(relevant: Sequence[bool] | np.ndarray) -> float:
    """Average precision of one full ranking: the mean precision at the rank of each relevant item."""
    return float(ranking_metrics(np.asarray(relevant, dtype=bool)[None, :], (1,))[0][0])


@dataclass
class LeaveOneOut:
    """Per query: AP, P@k, and its nearest other images (indices into the evaluated set)."""

    ap: np.ndarray
    precision: dict[int, np.ndarray]
    top: np.ndarray  # N x t indices, best first
    top_scores: np.ndarray  # N x t scores (cosine similarities to the query)


def leave_one_out(
    vectors: np.ndarray, labels: Sequence[str], ks: Sequence[int] = METRIC_KS, keep_top: int = 5
) -> LeaveOneOut:
    """The exact reference: each row of ``vectors`` queries all the other rows by inner product
    (ties by index), nothing else. What eval measures through the product equals it when query
    expansion is off; the descriptor ablation (``bench.quality``) scores its candidates with it."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vecs)
    if n != len(labels):
        raise BadInput(f"{n} vectors but {len(labels)} labels")
    if n < 2:
        raise BadInput("leave-one-out needs at least 2 images")
    codes = _codes(labels)
    t = min(keep_top, n - 1)
    out = LeaveOneOut(
        np.empty(n), {k: np.empty(n) for k in ks}, np.empty((n, t), np.int64), np.empty((n, t), np.float32)
    )
    for start in range(0, n, _LOO_BLOCK):
        stop = min(start + _LOO_BLOCK, n)
        sims = vecs[start:stop] @ vecs.T
        rows = np.arange(stop - start)
        sims[rows, start + rows] = -np.inf  # its own column sorts last, and is cut off
        order = np.argsort(-sims, axis=1, kind="stable")[:, : n - 1]
        _fill(out, start, stop, order, np.take_along_axis(sims, order, axis=1), codes, ks)
    return out


def _codes(labels: Sequence[str]) -> np.ndarray:
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def _fill(
    out: LeaveOneOut,
    start: int,
    stop: int,
    order: np.ndarray,
    scores: np.ndarray,
    codes: np.ndarray,
    ks: Sequence[int],
    total: np.ndarray | None = None,
) -> None:
    """Score rows ``start:stop`` from their rankings (``order``: indices, -1 past a short one)."""
    relevant = (codes[np.maximum(order, 0)] == codes[start:stop, None]) & (order >= 0)
    ap, precision = ranking_metrics(relevant, ks, total)
    out.ap[start:stop] = ap
    for k in ks:
        out.precision[k][start:stop] = precision[k]
    t = out.top.shape[1]
    out.top[start:stop], out.top_scores[start:stop] = order[:, :t], scores[:, :t]


# --- through the product --------------------------------------------------------------------------


@dataclass
class CutoffScores:
    """How the ``similar`` cut of :mod:`lookalike.relevance` does in leave-one-out, beside a fixed top 10."""

    precision: float  # of all results the cut keeps (each query's kept results, pooled)
    mean_kept: float  # results kept per query
    none_kept: float  # fraction of queries that keep none
    precision_top10: float  # of a fixed top 10 (P@10), for comparison
    copies_labelled: dict[str, float] = field(default_factory=dict)  # per edit: same or near_duplicate


def searched_leave_one_out(
    library: Library, doc_ids: Sequence[str], labels: Sequence[str], ks: Sequence[int] = METRIC_KS, keep_top: int = 5
) -> tuple[LeaveOneOut, CutoffScores]:
    """Leave-one-out through the search path: each document searches "more like" itself, left out
    of its own results, over a workspace that holds exactly ``doc_ids``. Also how the match levels'
    ``similar`` cut does on those same results."""
    n = len(doc_ids)
    if n < 2:
        raise BadInput("leave-one-out needs at least 2 images")
    codes, position = _codes(labels), {d: i for i, d in enumerate(doc_ids)}
    total = np.bincount(codes)[codes] - 1  # each query's relevant images: its class but itself
    depth = min(n - 1, MAX_TOP_K)
    out = LeaveOneOut(
        np.empty(n),
        {k: np.empty(n) for k in ks},
        np.empty((n, min(keep_top, n - 1)), np.int64),
        np.empty((n, min(keep_top, n - 1)), np.float32),
    )
    tail = _Tail(library, doc_ids) if n - 1 > depth else None
    kept_rel = kept_all = none = 0
    for start in range(0, n, _LOO_BATCH):
        stop = min(start + _LOO_BATCH, n)
        reports = library.search_many(SearchRequest(like=d, top_k=depth) for d in doc_ids[start:stop])
        order = np.full((stop - start, n - 1), -1, np.int64)
        scores = np.full((stop - start, n - 1), -np.inf, np.float32)
        for row, report in enumerate(reports):
            ranked = [(position[h.doc_id], h.score) for h in report.hits if h.doc_id in position]
            if tail is not None:
                ranked += tail.rest(start + row, report.vector, {i for i, _ in ranked})
            order[row, : len(ranked)] = [i for i, _ in ranked]
            scores[row, : len(ranked)] = [s for _, s in ranked]
            first = report.hits[:_CUTOFF_DEPTH]
            cut = [h.match != "weak" for h in first]
            rel = [h.doc_id in position and codes[position[h.doc_id]] == codes[start + row] for h in first]
            kept_rel += sum(k and r for k, r in zip(cut, rel, strict=True))
            kept_all += sum(cut)
            none += not any(cut)
        _fill(out, start, stop, order, scores, codes, ks, total[start:stop])
    p10 = float(np.mean(out.precision[10])) if 10 in out.precision else 0.0
    cutoff = CutoffScores(kept_rel / kept_all if kept_all else 0.0, kept_all / n, none / n, p10)
    return out, cutoff


class _Tail:
    """The rest of a ranking past the deepest a search returns (``MAX_TOP_K``): on collections that
    large, the documents a search did not return follow, by their cosine to the query's vector, so
    that average precision counts every relevant image, as on smaller collections."""

    def __init__(self, library: Library, doc_ids: Sequence[str]):
        found, vectors = library.workspace.store.vectors_by_doc(library.workspace.dim)
        row = {d: i for i, d in enumerate(found)}
        self.vectors = np.stack([vectors[row[d]] for d in doc_ids]).astype(np.float32)

    def rest(self, query: int, vector: np.ndarray | None, returned: set[int]) -> list[tuple[int, float]]:
        if vector is None:
            return []
        sims = self.vectors @ vector.astype(np.float32)
        order = np.argsort(-sims, kind="stable")
        return [(int(i), float(sims[i])) for i in order if i != query and int(i) not in returned]


@dataclass
class Robustness:
    """Per edit: the fraction of copies whose original ranks first, and their median cosine
    similarity to that original."""

    top1: dict[str, float]
    similarity: dict[str, float]
    images: int  # measured: images that could no longer be read are left out
    similarities: dict[str, np.ndarray] = field(default_factory=dict)  # per edit: each copy's to its original

    @property
    def mean_single(self) -> float:
        """The headline: the mean over the single edits ("combined" is reported beside it)."""
        return float(np.mean([self.top1[e] for e in SINGLE_EDITS if e in self.top1]))


def copy_detection(
    library: Library, sources: Sequence[ImageSource], doc_ids: Sequence[str], *, progress: Progress | None = None
) -> Robustness:
    """Search every edit of ``sources[i]`` (whose stored document is ``doc_ids[i]``) as an image,
    through the search path. Copies are made in a thread pool (Pillow releases the GIL) while the
    previous ones are searched."""
    if len(sources) != len(doc_ids):
        raise BadInput(f"{len(sources)} images but {len(doc_ids)} documents")
    names = list(TRANSFORMS)
    found, vectors = library.workspace.store.vectors_by_doc(library.workspace.dim)
    stored = dict(zip(found, vectors, strict=True))
    hits = np.zeros((len(sources), len(names)), dtype=bool)
    sims = np.zeros((len(sources), len(names)), dtype=np.float32)
    measured = np.zeros(len(sources), dtype=bool)
    for n, made in enumerate(_made_in_chunks(sources)):
        queries = [SearchRequest(image=copy, top_k=1) for _, copies in made for copy in copies]
        reports = iter(library.search_many(queries))
        for i, _ in made:
            for j in range(len(names)):
                report = next(reports)
                hits[i, j] = bool(report.hits) and report.hits[0].doc_id == doc_ids[i]
                sims[i, j] = _similarity(report, stored.get(doc_ids[i]))
            measured[i] = True
        if progress is not None and (n + 1) % 10 == 0:
            progress(f"robustness: {min((n + 1) * _ROBUSTNESS_CHUNK, len(sources))} of {len(sources)} images")
    if not measured.any():
        raise BadInput("none of the images could be read again to make copies of them", "unreadable file")
    return Robustness(
        top1={name: float(hits[measured, j].mean()) for j, name in enumerate(names)},
        similarity={name: float(np.median(sims[measured, j])) for j, name in enumerate(names)},
        images=int(measured.sum()),
        similarities={name: sims[measured, j] for j, name in enumerate(names)},
    )


def _made_in_chunks(sources: Sequence[ImageSource]) -> Iterator[list[tuple[int, list[bytes]]]]:
    """(index, its copies) for every source still readable, a chunk at a time, the next chunk
    being made while the caller works on this one."""
    chunks = [
        list(range(s, min(s + _ROBUSTNESS_CHUNK, len(sources)))) for s in range(0, len(sources), _ROBUSTNESS_CHUNK)
    ]
    # One copy maker per two cores: the encoder's own thread pool runs at the same time.
    with ThreadPoolExecutor(max_workers=max(1, _cores() // 2), thread_name_prefix="lookalike-copies") as pool:

        def make(i: int) -> list[bytes] | None:
            try:
                return variants(sources[i])
            except BadInput:  # changed or gone since it was indexed: nothing to measure
                return None

        def submit(chunk: list[int]) -> list[Future[list[bytes] | None]]:
            return [pool.submit(make, i) for i in chunk]

        pending = submit(chunks[0]) if chunks else []
        for n, chunk in enumerate(chunks):
            made = [(i, c) for i, f in zip(chunk, pending, strict=True) if (c := f.result()) is not None]
            pending = submit(chunks[n + 1]) if n + 1 < len(chunks) else []
            yield made


def _similarity(report: SearchReport, original: np.ndarray | None) -> float:
    """The copy's cosine similarity to its original's stored vector."""
    if report.vector is None or original is None:
        return 0.0
    return float(np.dot(report.vector.astype(np.float32), original.astype(np.float32)))


# --- the evaluation -------------------------------------------------------------------------------


@dataclass
class ClassScores:
    label: str
    images: int
    precision: dict[int, float]
    map: float


@dataclass
class EvalResult:
    """What ``lookalike eval`` measured. ``paths[i]`` has ``labels[i]`` and ``loo`` row ``i``."""

    root: Path
    encoder: str
    paths: list[str]
    labels: list[str]
    loo: LeaveOneOut
    label_depth: int | None = None
    min_class_size: int = DEFAULT_MIN_CLASS_SIZE
    max_per_class: int | None = None
    seed: int = 0
    left_out_classes: int = 0
    left_out_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): could not be used
    robustness: Robustness | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    workspace: str | None = None
    cutoff: CutoffScores | None = None

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels))

    def metrics(self) -> dict[str, float]:
        out = {f"p_at_{k}": float(v.mean()) for k, v in self.loo.precision.items()}
        out["map"] = float(self.loo.ap.mean())
        return out

    def per_class(self) -> list[ClassScores]:
        labels = np.asarray(self.labels)
        out = []
        for label in self.classes:
            mask = labels == label
            out.append(
                ClassScores(
                    label=label,
                    images=int(mask.sum()),
                    precision={k: float(v[mask].mean()) for k, v in self.loo.precision.items()},
                    map=float(self.loo.ap[mask].mean()),
                )
            )
        return out

    def worst(self, n: int) -> list[int]:
        """Indices of the ``n`` queries with the lowest AP (ties: by path)."""
        return sorted(range(len(self.paths)), key=lambda i: (self.loo.ap[i], self.paths[i]))[:n]

    def to_dict(self, worst: int = 10) -> dict[str, Any]:
        r4 = lambda x: round(float(x), 4)  # noqa: E731
        return {
            "root": str(self.root),
            "encoder": self.encoder,
            "images": len(self.paths),
            "classes": len(self.classes),
            "label_depth": self.label_depth,
            "min_class_size": self.min_class_size,
            "max_per_class": self.max_per_class,
            "seed": self.seed,
            "left_out": {"classes": self.left_out_classes, "images": self.left_out_images},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "metrics": {k: r4(v) for k, v in self.metrics().items()},
            "per_class": [
                {
                    "label": c.label,
                    "images": c.images,
                    **{f"p_at_{k}": r4(v) for k, v in c.precision.items()},
                    "map": r4(c.map),
                }
                for c in self.per_class()
            ],
            "robustness": None
            if self.robustness is None
            else {
                "images": self.robustness.images,
                "mean_single_edits": r4(self.robustness.mean_single),
                "top1": {k: r4(v) for k, v in self.robustness.top1.items()},
                "median_similarity": {k: r4(v) for k, v in self.robustness.similarity.items()},
            },
            "match_levels": None
            if self.cutoff is None
            else {
                "similar_cut_precision": r4(self.cutoff.precision),
                "similar_cut_mean_kept": round(self.cutoff.mean_kept, 2),
                "similar_cut_none_kept": r4(self.cutoff.none_kept),
                "top10_precision": r4(self.cutoff.precision_top10),
                "copies_same_or_near_duplicate": {k: r4(v) for k, v in self.cutoff.copies_labelled.items()},
            },
            "worst": [
                {
                    "path": self.paths[i],
                    "label": self.labels[i],
                    "ap": r4(self.loo.ap[i]),
                    "top": [
                        {"path": self.paths[j], "label": self.labels[j], "score": r4(s)}
                        for j, s in zip(self.loo.top[i], self.loo.top_scores[i], strict=True)
                    ],
                }
                for i in self.worst(worst)
            ],
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "workspace": self.workspace,
        }


def _cores() -> int:
    from lookalike.models.encoder import available_cores

    return available_cores()


def select(
    labels: dict[str, str], min_class_size: int, max_per_class: int | None = None, seed: int = 0
) -> tuple[list[str], int, int]:
    """(kept paths, sorted; classes left out; images left out) under the class-size rules.

    Classes smaller than ``min_class_size`` are left out; larger ones are cut to a seeded random
    ``max_per_class`` (the same paths for the same seed on any machine).
    """
    by_class: dict[str, list[str]] = {}
    for path in sorted(labels):
        by_class.setdefault(labels[path], []).append(path)
    kept: list[str] = []
    left_classes = left_images = 0
    for label in sorted(by_class):
        paths = by_class[label]
        if len(paths) < min_class_size:
            left_classes += 1
            left_images += len(paths)
            continue
        if max_per_class is not None and len(paths) > max_per_class:
            rng = np.random.default_rng([seed, *label.encode()])  # per class: adding a class changes no other
            paths = sorted(rng.choice(paths, size=max_per_class, replace=False).tolist())
        kept.extend(paths)
    return sorted(kept), left_classes, left_images


def evaluate(
    root: str | os.PathLike,
    *,
    options: Options | None = None,
    label_depth: int | None = None,
    min_class_size: int = DEFAULT_MIN_CLASS_SIZE,
    max_per_class: int | None = None,
    seed: int = 0,
    encoder: str = "efficientnet",
    workspace: str | os.PathLike | None = None,
    robustness: bool = False,
    index_progress: Any = None,
    progress: Progress | None = None,
    flow: str | os.PathLike | None = None,
) -> EvalResult:
    """Evaluate retrieval on the labelled images under ``root``; see the module docstring.

    ``workspace``: eval's own workspace, kept (and reused incrementally next time); it holds exactly
    the evaluated images. By default a temporary one, removed afterwards. ``options``: the settings
    the searches run with (query expansion, ...), the settings in effect by default.
    ``index_progress`` is an :class:`~lookalike.library.IndexProgress` for the indexing step.
    """
    say: Progress = progress or (lambda _msg: None)
    _check_arguments(min_class_size, max_per_class, seed, encoder, flow)
    root_path = Path(os.path.abspath(os.fspath(root)))
    folder_labels, chosen, left_classes, left_images = _choose(
        root_path, workspace, label_depth, min_class_size, max_per_class, seed
    )
    options = options or Options.from_env()
    with tempfile.TemporaryDirectory(prefix="lookalike-eval-") as tmp:
        ws_path = Path(workspace) if workspace is not None else Path(tmp) / "ws"
        index_flow, query_flow = eval_flows(Path(flow) if flow is not None else None, encoder, Path(tmp))
        where = f"workspace {ws_path}" if workspace is not None else "a temporary workspace"
        say(f"indexing {len(chosen)} images into {where}")
        run_options = options.replace(workspace=ws_path, index_flow=index_flow, query_flow=query_flow, preset=None)
        with open_library(run_options, write=True) as library:
            indexed = library.index(IndexRequest(tuple(chosen)), index_progress)
            kept, doc_ids, more_classes, more_images = _keep_indexed(library, chosen, folder_labels, min_class_size)
            labels = [folder_labels[p] for p in kept]
            loo, cutoff, rob, seconds = _measure(library, kept, doc_ids, labels, robustness, say)
            seconds["index"] = indexed.seconds
            calibration = library.searcher.levels.calibration()
    return EvalResult(
        root=root_path,
        encoder=_encoder_name(flow, encoder),
        paths=kept,
        labels=labels,
        loo=loo,
        label_depth=label_depth,
        min_class_size=min_class_size,
        max_per_class=max_per_class,
        seed=seed,
        left_out_classes=left_classes + more_classes,
        left_out_images=left_images + more_images,  # the unusable files themselves are listed in `skipped`
        skipped=[(p, reason) for p, reason in indexed.skipped_files if p in set(chosen)],
        robustness=rob,
        seconds=seconds,
        workspace=str(ws_path) if workspace is not None else None,
        cutoff=_with_copies(cutoff, calibration, rob),
    )


def _measure(
    library: Library, kept: list[str], doc_ids: list[str], labels: list[str], robustness: bool, say: Progress
) -> tuple[LeaveOneOut, CutoffScores, Robustness | None, dict[str, float]]:
    """Leave-one-out (and copy detection) through the library; what each took."""
    say(f"leave-one-out over {len(kept)} images in {len(set(labels))} classes")
    start = time.perf_counter()
    loo, cutoff = searched_leave_one_out(library, doc_ids, labels)
    seconds = {"leave_one_out": time.perf_counter() - start}
    rob = None
    if robustness:
        say(f"robustness: {len(TRANSFORMS)} edits of {len(kept)} images")
        start = time.perf_counter()
        rob = copy_detection(library, kept, doc_ids, progress=say)
        seconds["robustness"] = time.perf_counter() - start
    return loo, cutoff, rob, seconds


def _check_arguments(
    min_class_size: int, max_per_class: int | None, seed: int, encoder: str, flow: str | os.PathLike | None
) -> None:
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}; choose one of: {', '.join(ENCODERS)}")
    if min_class_size < 2:
        raise ConfigError(f"--min-class-size must be at least 2 (a query needs another image), got {min_class_size}")
    if max_per_class is not None and max_per_class < 2:
        raise ConfigError(f"--max-per-class must be at least 2, got {max_per_class}")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")
    if encoder == "histogram" and flow is not None:
        raise ConfigError("--encoder histogram indexes with the built-in flows and a histogram: drop --flow")


def _choose(
    root: Path,
    workspace: str | os.PathLike | None,
    label_depth: int | None,
    min_class_size: int,
    max_per_class: int | None,
    seed: int,
) -> tuple[dict[str, str], list[str], int, int]:
    """Each image's label, the images chosen by the class-size rules, and what they left out."""
    from lookalike.datasets import labels_from_folders
    from lookalike.library.planning import scan

    if not root.exists():
        raise NotFound(f"no such folder: {root}")
    if not root.is_dir():
        raise BadInput(f"{root} is not a folder: eval needs a folder of images in label folders", "not a folder")
    exclude = [Path(workspace)] if workspace is not None else []
    files = scan([root], exclude=exclude).files
    by_folder = labels_from_folders(root, [Path(f) for f in files], label_depth)
    folder_labels = {str(p): label for p, label in by_folder.items()}
    chosen, left_classes, left_images = select(folder_labels, min_class_size, max_per_class, seed)
    if not chosen:
        n_classes = len(set(folder_labels.values()))
        raise BadInput(
            f"no class under {root} has {min_class_size} images or more ({len(files)} images in "
            f"{n_classes} folders); lower --min-class-size, or use --label-depth to merge sub-folders",
            "no classes",
        )
    return folder_labels, chosen, left_classes, left_images


def _keep_indexed(
    library: Library, chosen: list[str], labels: dict[str, str], min_class_size: int
) -> tuple[list[str], list[str], int, int]:
    """The chosen images that were indexed, under the class-size rules again (unusable files can
    leave a class too small), with their document ids; the workspace is left holding exactly them."""
    from lookalike.document import doc_id_for

    ids = {p: doc_id_for(p) for p in chosen}
    stored = library.workspace.store.get_docs(ids.values())
    usable = {p: labels[p] for p in chosen if ids[p] in stored}
    kept, more_classes, more_images = select(usable, min_class_size)
    if not kept:
        raise BadInput(f"no class has {min_class_size} usable images", "no classes")
    wanted = {ids[p] for p in kept}
    extra = [d.id for d in library.workspace.store.iter_docs() if d.id not in wanted]
    library.indexer.delete_ids(extra)  # earlier runs' or too small classes': not in this gallery
    return kept, [ids[p] for p in kept], more_classes, more_images


def _with_copies(cutoff: CutoffScores, calibration: Calibration | None, rob: Robustness | None) -> CutoffScores | None:
    """The match levels' figures (none where the workspace has no calibration), with how many
    copies of each edit are labelled same or near-duplicate."""
    if calibration is None:
        return None
    if rob is not None:
        cutoff.copies_labelled = {
            e: float(np.mean(calibration.levels_of_copies(sims))) for e, sims in rob.similarities.items()
        }
    return cutoff


# --- the flows eval indexes and searches with -----------------------------------------------------


def eval_flows(flow: Path | None, encoder: str, folder: Path) -> tuple[Path | None, Path | None]:
    """The (index, query) flow files eval runs: the built-in ones (None, None); a colour histogram
    in the built-in ones' encoder pods; or ``flow`` with the built-in query flow, whose encoder pod
    takes the index flow's encoder (its ``uses``, ``with`` and ``py_modules``), so the two agree.
    Derived flows are written into ``folder``."""
    from lookalike.flow.graph import builtin_flow_path

    if flow is None and encoder != "histogram":
        return None, None
    query = yaml.safe_load(builtin_flow_path("query").read_text("utf-8"))
    if encoder == "histogram":
        index = yaml.safe_load(builtin_flow_path("index").read_text("utf-8"))
        index["pods"]["encoder"] = {"uses": "ColorHistogramEncoder", "parallel": 2}
        query["pods"]["encoder"] = {"uses": "ColorHistogramEncoder"}
        return _write(index, folder / "index.yml"), _write(query, folder / "query.yml")
    assert flow is not None
    query["pods"]["encoder"] = _encoder_pod(flow)
    return flow, _write(query, folder / "query.yml")


def _encoder_pod(flow: Path) -> dict[str, Any]:
    """The index flow's encoder pod (the one that says what its vectors are), for a query flow."""
    from lookalike.flow.graph import open_flow

    with open_flow(flow, "index", start_containers=False) as built:
        if not built.pods_storing_vectors():
            raise ConfigError(f"{flow} is not an index flow: it has no VectorIndexer pod to store vectors")
        pods = [p for p in built.pods.values() if p.executor.fingerprint_of(p.params)]
        if not pods:
            raise ConfigError(f"{flow} has no encoder pod (one whose executor says what its vectors are)")
        cfg = pods[0].config
        base = built.loaded.base_dir
    pod: dict[str, Any] = {"uses": cfg.uses, "with": dict(cfg.with_)}
    if cfg.py_modules:
        pod["py_modules"] = [str((base / m).resolve()) for m in cfg.py_modules]
    if cfg.uses == "ImageEncoder":
        pod["with"].setdefault("spin", False)  # as the built-in query flow's encoder
    return pod


def _write(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    return path


def _encoder_name(flow: str | os.PathLike | None, encoder: str) -> str:
    if encoder == "histogram":
        return "histogram"
    from lookalike.executors.encoders import ImageEncoder
    from lookalike.flow.graph import open_flow

    if flow is None:
        return _model_name(ImageEncoder.Params())
    with open_flow(flow, "index", start_containers=False) as built:
        pods = [p for p in built.pods.values() if p.config.uses == "ImageEncoder"]
        return _model_name(pods[0].params) if pods else "the flow's encoder"


def _model_name(params: Any) -> str:
    return f"{params.model} ({params.pooling} pooling)"
