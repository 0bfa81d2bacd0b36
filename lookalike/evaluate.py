"""Retrieval quality on a labelled folder: leave-one-out P@k and mAP, and copy-detection robustness.

Labels come from folders: an image's label is its folder relative to the evaluated root (the first
``label_depth`` parts of it). Classes with fewer than ``min_class_size`` images are left out.

- **Leave-one-out.** Every evaluated image is the query once; the rest of the evaluated images are
  the gallery. The query is its stored whole-image embedding (nothing is encoded again) and the
  search is exact (the same inner products as the flat FAISS shards). We report P@1, P@5, P@10 and
  the mean average precision over the *full* ranking of the rest, overall and per class.
- **Copy detection** (``robustness=True``). Every evaluated image is flipped, cropped to 80%, resized
  to 50%, saved as a JPEG at quality 50, rotated by +10 and -10 degrees, and turned grey; each
  variant goes through the same preprocessing and encoder as a query, and is searched against the
  evaluated images. The score per transform is the fraction whose original comes first.

EfficientNet vectors come from indexing the folder with the real :class:`~lookalike.engine.Engine`
(default flows) into a workspace; the colour-histogram baseline (:mod:`lookalike.baselines`) is
computed directly, on the same preprocessing, and scored by the same code.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from lookalike.errors import BadInput, ConfigError, NotFound
from lookalike.images import ImageSource, decode, to_tensor
from lookalike.settings import int_value

METRIC_KS = (1, 5, 10)
ENCODERS = ("efficientnet", "histogram")
# The threshold: a class of 9 gives each query 8 relevant images, enough for P@5 to mean
# something and for AP not to hinge on one or two ranks.
DEFAULT_MIN_CLASS_SIZE = 9
# Images per model call while measuring robustness: 16 originals x 7 variants = 112 tensors
# (67 MB of float32), large enough for the model's batch efficiency, small enough for memory.
_ROBUSTNESS_CHUNK = 16
# Query rows per block of the leave-one-out similarity matrix: 256 x 7,000 float32 is 7 MB.
_LOO_BLOCK = 256

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


# --- metrics --------------------------------------------------------------------------------------


def ranking_metrics(relevant: np.ndarray, ks: Sequence[int] = METRIC_KS) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Average precision and P@k of rankings given as a ``Q x R`` boolean matrix (best first).

    AP is the mean, over the relevant items, of the precision at each one's rank (0 when nothing
    is relevant). P@k is the relevant fraction of the first ``k``; a ranking shorter than ``k``
    still divides by ``k``.
    """
    rel = np.atleast_2d(np.asarray(relevant, dtype=bool))
    n_rows, length = rel.shape
    for k in ks:
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
    if length == 0:
        return np.zeros(n_rows), {k: np.zeros(n_rows) for k in ks}
    hits = np.cumsum(rel, axis=1)
    n_rel = hits[:, -1]
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
    top_scores: np.ndarray  # N x t cosine similarities


@dataclass(frozen=True)
class Expansion:
    """Alpha query expansion as the engine does it: ``k`` neighbours, weights similarity**alpha,
    and no expansion for a query whose best match reaches ``copy_floor``."""

    k: int
    alpha: float
    copy_floor: float

    def apply(self, queries: np.ndarray, sims: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """The similarities of the expanded queries (rows of ``sims`` with -inf stay -inf)."""
        from lookalike.descriptors import alpha_qe_search

        return alpha_qe_search(queries, gallery, self.k, self.alpha, self.copy_floor, sims=sims)


def _ranked_blocks(
    vecs: np.ndarray, expansion: Expansion | None, depth: int
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Leave-one-out rankings, a block of query rows at a time: (start, stop, the plain similarities,
    those the ranking used (expanded, if ``expansion``), and each row's first ``depth`` others).
    A query's own column is -inf in both, so it sorts last and is cut off."""
    n = len(vecs)
    for start in range(0, n, _LOO_BLOCK):
        stop = min(start + _LOO_BLOCK, n)
        plain = vecs[start:stop] @ vecs.T
        rows = np.arange(stop - start)
        plain[rows, start + rows] = -np.inf
        ranked = plain if expansion is None else expansion.apply(vecs[start:stop], plain, vecs)
        yield start, stop, plain, ranked, np.argsort(-ranked, axis=1, kind="stable")[:, :depth]


def leave_one_out(
    vectors: np.ndarray,
    labels: Sequence[str],
    ks: Sequence[int] = METRIC_KS,
    keep_top: int = 5,
    expansion: Expansion | None = None,
) -> LeaveOneOut:
    """Each row of ``vectors`` queries all the other rows (exact inner product, ties by index),
    expanded as the engine's searches are when ``expansion`` is given."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vecs)
    if n != len(labels):
        raise BadInput(f"{n} vectors but {len(labels)} labels")
    if n < 2:
        raise BadInput("leave-one-out needs at least 2 images")
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].ravel()
    t = min(keep_top, n - 1)
    ap = np.empty(n)
    precision = {k: np.empty(n) for k in ks}
    top = np.empty((n, t), dtype=np.int64)
    top_scores = np.empty((n, t), dtype=np.float32)
    for start, stop, _plain, sims, order in _ranked_blocks(vecs, expansion, n - 1):
        block_ap, block_p = ranking_metrics(codes[order] == codes[start:stop, None], ks)
        ap[start:stop] = block_ap
        for k in ks:
            precision[k][start:stop] = block_p[k]
        top[start:stop] = order[:, :t]
        top_scores[start:stop] = np.take_along_axis(sims, order[:, :t], axis=1)
    return LeaveOneOut(ap, precision, top, top_scores)


# --- copy detection -------------------------------------------------------------------------------


@dataclass
class Robustness:
    """Per transform: the fraction of variants whose original ranks first, and their median
    cosine similarity to that original."""

    top1: dict[str, float]
    similarity: dict[str, float]
    images: int  # measured: images that could no longer be read are left out
    similarities: dict[str, np.ndarray] = field(default_factory=dict)  # per edit: each copy's to its original

    @property
    def mean_single(self) -> float:
        """The headline: the mean over the single edits ("combined" is reported beside it)."""
        return float(np.mean([self.top1[e] for e in SINGLE_EDITS if e in self.top1]))


def variant_tensors(source: ImageSource, size: int = 224) -> np.ndarray:
    """The model inputs of every transform of one image (``len(TRANSFORMS) x 3 x size x size``).

    The original is decoded at full size (alpha onto white, EXIF applied); each variant is then
    decoded and preprocessed exactly as a query would be.
    """
    original = decode(source, draft_size=None).image
    draft_size = round(size * 256 / 224)
    return np.stack(
        [to_tensor(decode(transform(original), draft_size=draft_size).image, size) for transform in TRANSFORMS.values()]
    )


def copy_detection(
    sources: Sequence[ImageSource],
    gallery: np.ndarray,
    embed: Callable[[np.ndarray], np.ndarray],
    *,
    size: int = 224,
    workers: int | None = None,
    progress: Progress | None = None,
    expansion: Expansion | None = None,
) -> Robustness:
    """Search every transform of ``sources[i]`` against ``gallery``, whose row ``i`` is its original.

    ``embed`` maps preprocessed tensors to L2-normalised vectors. Variants are made in a thread pool
    (Pillow releases the GIL) while the previous chunk is being embedded.
    """
    if len(sources) != len(gallery):
        raise BadInput(f"{len(sources)} images but {len(gallery)} gallery vectors")
    names = list(TRANSFORMS)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    hits = np.zeros((len(sources), len(names)), dtype=bool)
    sims = np.zeros((len(sources), len(names)), dtype=np.float32)
    measured = np.zeros(len(sources), dtype=bool)
    step = _ROBUSTNESS_CHUNK
    chunks = [list(range(s, min(s + step, len(sources)))) for s in range(0, len(sources), step)]
    # One variant maker per two cores: the encoder's own thread pool runs at the same time.
    pool_size = workers or max(1, _cores() // 2)
    with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="lookalike-variants") as pool:

        def make(i: int) -> np.ndarray | None:
            try:
                return variant_tensors(sources[i], size)
            except BadInput:  # changed or gone since it was indexed: nothing to measure
                return None

        def submit(chunk: list[int]) -> list[Future[np.ndarray | None]]:
            return [pool.submit(make, i) for i in chunk]

        pending = submit(chunks[0]) if chunks else []
        for n, chunk in enumerate(chunks):
            made = [(i, t) for i, f in zip(chunk, pending, strict=True) if (t := f.result()) is not None]
            pending = submit(chunks[n + 1]) if n + 1 < len(chunks) else []
            if not made:
                continue
            vecs = embed(np.concatenate([t for _, t in made])).reshape(len(made), len(names), -1)
            for row, (i, _) in enumerate(made):
                plain = vecs[row] @ gallery.T  # transforms x gallery
                scores = plain if expansion is None else expansion.apply(vecs[row], plain, gallery)
                hits[i] = scores.argmax(axis=1) == i
                sims[i] = plain[:, i]  # the copy's own similarity to its original
                measured[i] = True
            if progress is not None and (n + 1) % 10 == 0:
                progress(f"robustness: {chunk[-1] + 1} of {len(sources)} images")
    if not measured.any():
        raise BadInput("none of the images could be read again to make copies of them", "unreadable file")
    return Robustness(
        top1={name: float(hits[measured, j].mean()) for j, name in enumerate(names)},
        similarity={name: float(np.median(sims[measured, j])) for j, name in enumerate(names)},
        images=int(measured.sum()),
        similarities={name: sims[measured, j] for j, name in enumerate(names)},
    )


# --- match levels ---------------------------------------------------------------------------------


@dataclass
class CutoffScores:
    """How the ``similar`` cut of :mod:`lookalike.relevance` does in leave-one-out, beside a fixed top 10."""

    precision: float  # of all results the cut keeps (each query's kept results, pooled)
    mean_kept: float  # results kept per query
    none_kept: float  # fraction of queries that keep none
    precision_top10: float  # of a fixed top 10 (P@10), for comparison
    copies_labelled: dict[str, float] = field(default_factory=dict)  # per edit: same or near_duplicate


def cutoff_scores(
    vectors: np.ndarray, labels: Sequence[str], cal: Any, expansion: Expansion | None = None, depth: int = 100
) -> CutoffScores:
    """Label each query's ranking (up to ``depth``) with ``cal`` and measure what "similar" keeps."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].ravel()
    n = len(vecs)
    kept_rel = kept_all = none = 0
    top10 = []
    for start, _stop, sims, _ranked, order in _ranked_blocks(vecs, expansion, min(depth, n - 1)):
        for r, idx in enumerate(order):
            scores = sims[r, idx]  # labelled by their cosine to the query, as the engine does
            keep = np.array([lv != "weak" for lv in cal.levels(scores.tolist())])
            rel = codes[idx] == codes[start + r]
            kept_rel += int(rel[keep].sum())
            kept_all += int(keep.sum())
            none += int(not keep.any())
            top10.append(rel[:10].mean())
    return CutoffScores(
        precision=kept_rel / kept_all if kept_all else 0.0,
        mean_kept=kept_all / n,
        none_kept=none / n,
        precision_top10=float(np.mean(top10)),
    )


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

    ``workspace``: where the EfficientNet index is built (kept, and reused incrementally next time);
    by default a temporary one, removed afterwards. ``index_progress`` is an
    :class:`~lookalike.engine.IndexProgress` for the indexing step.
    """
    from lookalike.datasets import labels_from_folders
    from lookalike.engine import scan

    say: Progress = progress or (lambda _msg: None)
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}; choose one of: {', '.join(ENCODERS)}")
    if min_class_size < 2:
        raise ConfigError(f"--min-class-size must be at least 2 (a query needs another image), got {min_class_size}")
    if max_per_class is not None and max_per_class < 2:
        raise ConfigError(f"--max-per-class must be at least 2, got {max_per_class}")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")
    if encoder == "histogram" and workspace is not None:
        raise ConfigError("the histogram baseline is computed directly and stores nothing: drop --workspace")
    if encoder == "histogram" and flow is not None:
        raise ConfigError("the histogram baseline runs no flow: drop --flow")
    index_flow = _open_index_flow(flow) if flow is not None else None
    root_path = Path(os.path.abspath(os.fspath(root)))
    if not root_path.exists():
        raise NotFound(f"no such folder: {root}")
    if not root_path.is_dir():
        raise BadInput(f"{root} is not a folder: eval needs a folder of images in label folders", "not a folder")

    exclude = [Path(workspace)] if workspace is not None else []
    files = scan([root_path], exclude=exclude).files
    by_folder = labels_from_folders(root_path, [Path(f) for f in files], label_depth)
    folder_labels = {str(p): label for p, label in by_folder.items()}
    chosen, left_classes, left_images = select(folder_labels, min_class_size, max_per_class, seed)
    if not chosen:
        n_classes = len(set(folder_labels.values()))
        raise BadInput(
            f"no class under {root_path} has {min_class_size} images or more ({len(files)} images in "
            f"{n_classes} folders); lower --min-class-size, or use --label-depth to merge sub-folders",
            "no classes",
        )
    seconds: dict[str, float] = {}
    result_ws: str | None = None
    calibration = None
    if encoder == "efficientnet":
        vectors, skipped, result_ws, seconds["index"], calibration = _index_with_engine(
            root_path, workspace, chosen, index_progress, say, index_flow
        )
    else:
        say(f"computing colour histograms of {len(chosen)} images")
        start = time.perf_counter()
        vectors, skipped = _histograms(chosen)
        seconds["embed"] = time.perf_counter() - start

    # Images that could not be used can leave a class too small: apply the rule again.
    usable = {p: folder_labels[p] for p in chosen if p in vectors}
    kept, more_classes, more_images = select(usable, min_class_size)
    left_classes += more_classes
    left_images += more_images  # the unusable files themselves are listed in `skipped`
    if not kept:
        raise BadInput(f"no class under {root_path} has {min_class_size} usable images", "no classes")
    labels = [folder_labels[p] for p in kept]
    matrix = np.stack([vectors[p] for p in kept])

    say(f"leave-one-out over {len(kept)} images in {len(set(labels))} classes")
    start = time.perf_counter()
    expansion = None
    qe_k = int_value("LOOKALIKE_QUERY_EXPANSION", 0, 100)
    if calibration is not None and qe_k > 0:  # as the workspace's searches are expanded
        from lookalike.descriptors import QE_ALPHA

        expansion = Expansion(qe_k, QE_ALPHA, calibration.near_floor)
    loo = leave_one_out(matrix, labels, expansion=expansion)
    seconds["leave_one_out"] = time.perf_counter() - start

    rob = None
    if robustness:
        say(f"robustness: {len(TRANSFORMS)} transforms of {len(kept)} images")
        start = time.perf_counter()
        # The histogram costs nothing next to making the variants: then every core makes variants.
        workers = _cores() if encoder == "histogram" else None
        embed, size = _embedder(encoder, index_flow)
        rob = copy_detection(kept, matrix, embed, size=size, workers=workers, progress=say, expansion=expansion)
        seconds["robustness"] = time.perf_counter() - start

    cutoff = None
    if calibration is not None:  # the match levels the workspace's searches give
        cutoff = cutoff_scores(matrix, labels, calibration, expansion)
        if rob is not None:
            cutoff.copies_labelled = {
                e: float(np.mean(calibration.levels_of_copies(sims))) for e, sims in rob.similarities.items()
            }

    return EvalResult(
        root=root_path,
        encoder=encoder if encoder == "histogram" else _encoder_name(index_flow),
        paths=kept,
        labels=labels,
        loo=loo,
        label_depth=label_depth,
        min_class_size=min_class_size,
        max_per_class=max_per_class,
        seed=seed,
        left_out_classes=left_classes,
        left_out_images=left_images,
        skipped=skipped,
        robustness=rob,
        seconds=seconds,
        workspace=result_ws,
        cutoff=cutoff,
    )


def _open_index_flow(path: str | os.PathLike) -> Any:
    from lookalike.flow.graph import open_flow

    flow = open_flow(path, "index")
    if not flow.pods_storing_vectors():
        flow.close()
        raise ConfigError(f"{path} is not an index flow: it has no VectorIndexer pod to store vectors")
    return flow


def query_flow_for(index_flow: Any) -> Any:
    """The built-in query flow with the index flow's ImageEncoder (model, pooling), so the two
    fingerprints agree; an index flow without one serves as its own (eval searches stored vectors)."""
    import yaml

    from lookalike.flow.config import load_flow_text
    from lookalike.flow.graph import Flow, builtin_flow_path

    params = _image_encoder_params(index_flow)
    if params is None:
        return index_flow
    path = builtin_flow_path("query")
    data = yaml.safe_load(path.read_text("utf-8"))
    data["pods"]["encoder"].setdefault("with", {}).update(model=params.model, pooling=params.pooling)
    text = yaml.safe_dump(data, sort_keys=False)
    return Flow(load_flow_text(text, "<eval query flow>", path.parent), "query")


def _image_encoder_params(flow: Any) -> Any:
    """The params of the flow's ImageEncoder pod (the default flow's when ``flow`` is None)."""
    from lookalike.executors.encoders import ImageEncoder

    if flow is None:
        return ImageEncoder.Params()
    pods = [p for p in flow.pods.values() if issubclass(p.executor, ImageEncoder)]
    return pods[0].params if pods else None


def _encoder_name(flow: Any) -> str:
    params = _image_encoder_params(flow)
    if params is None:
        return "the flow's encoder"
    return f"{params.model} ({params.pooling} pooling)"


def _index_with_engine(
    root: Path,
    workspace: str | os.PathLike | None,
    wanted: list[str],
    index_progress: Any,
    say: Progress,
    index_flow: Any = None,
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]], str | None, float, Any]:
    """Index ``root`` with ``index_flow`` (default: the built-in one); the stored whole-image vectors
    of ``wanted``, and the workspace's match-level calibration."""
    from lookalike.engine import Engine

    ws_path = Path(workspace) if workspace is not None else Path(tempfile.mkdtemp(prefix="lookalike-eval-"))
    try:
        say(f"indexing {root} into {'workspace ' + str(ws_path) if workspace is not None else 'a temporary workspace'}")
        query_flow = query_flow_for(index_flow) if index_flow is not None else None
        with Engine.open(ws_path, index_flow=index_flow, query_flow=query_flow) as engine:
            summary = engine.index([root], progress=index_progress)
            store = engine.workspace.store
            doc_ids, vecs = store.vectors_by_doc(engine.workspace.dim)
            uris = {d.id: d.uri for d in store.get_docs(doc_ids).values()}
            calibration = engine.calibration()
    finally:
        if workspace is None:
            shutil.rmtree(ws_path, ignore_errors=True)
    want = set(wanted)
    by_path = {uri: vecs[i] for i, d in enumerate(doc_ids) if (uri := uris.get(d)) is not None and uri in want}
    skipped = [(p, reason) for p, reason in summary.skipped_files if p in want]
    return by_path, skipped, (str(ws_path) if workspace is not None else None), summary.seconds, calibration


def _histograms(paths: list[str]) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Colour histograms of the files, preprocessed as indexing does (in a thread pool)."""
    from lookalike.baselines import ColorHistogramEncoder

    hist = ColorHistogramEncoder()

    def one(path: str) -> np.ndarray | BadInput:
        try:
            return hist.encode_tensors(to_tensor(decode(path).image)[None])[0]
        except BadInput as e:
            return e

    vectors: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=_cores()) as pool:
        for path, out in zip(paths, pool.map(one, paths), strict=True):
            if isinstance(out, BadInput):
                skipped.append((path, str(out)))
            else:
                vectors[path] = out
    return vectors, skipped


def _embedder(encoder: str, flow: Any = None) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """What copy detection queries with, and its input size: the flow's ImageEncoder as its query
    flow would run it (same model and pooling, every core: nothing else runs now)."""
    if encoder == "histogram":
        from lookalike.baselines import ColorHistogramEncoder

        return ColorHistogramEncoder().encode_tensors, 224
    from lookalike.models.encoder import EfficientNetEncoder

    params = _image_encoder_params(flow)
    if params is None:
        raise ConfigError("--robustness needs an ImageEncoder pod in the --flow, to encode the copies with")
    model = EfficientNetEncoder(params.model, pooling=params.pooling)
    return (lambda batch: model.encode_tensors(batch)[0]), model.input_size


# --- the plot and the contact sheet ---------------------------------------------------------------


def write_plot(result: EvalResult, path: str | os.PathLike) -> None:
    """A PNG: per-class P@10 bars, and one bar per transform when robustness was measured."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from e

    classes = sorted(result.per_class(), key=lambda c: (c.precision.get(10, 0.0), c.label))
    height = max(3.0, 0.8 + 0.24 * len(classes))
    fig = Figure(figsize=(11 if result.robustness else 7.5, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_rob = None
    if result.robustness is not None:
        # The robustness bars keep a readable height however many classes stretch the figure.
        rob_height = min(height, 4.5)
        grid = fig.add_gridspec(2, 2, width_ratios=[3, 2], height_ratios=[rob_height, max(height - rob_height, 1e-3)])
        ax, ax_rob = fig.add_subplot(grid[:, 0]), fig.add_subplot(grid[0, 1])
    else:
        ax = fig.add_subplot(1, 1, 1)
    p10 = [c.precision.get(10, 0.0) for c in classes]
    ax.barh(range(len(classes)), p10, color="#4c72b0")
    ax.set_yticks(range(len(classes)), [f"{c.label} ({c.images})" for c in classes], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(classes) - 0.4)
    ax.set_xlabel("P@10 (leave-one-out)")
    m = result.metrics()
    ax.set_title(
        f"{result.encoder}: {len(result.paths)} images, {len(classes)} classes\n"
        f"P@1 {m['p_at_1']:.3f}  P@10 {m['p_at_10']:.3f}  mAP {m['map']:.3f}",
        fontsize=10,
    )
    ax.axvline(m["p_at_10"], color="#444444", linestyle="--", linewidth=1, label="all queries")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    if ax_rob is not None and result.robustness is not None:
        names = list(result.robustness.top1)
        scores = [result.robustness.top1[n] for n in names]
        ax_rob.bar(range(len(names)), scores, color="#dd8452")
        ax_rob.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax_rob.set_ylim(0, 1.1)
        ax_rob.set_ylabel("original ranked first")
        ax_rob.set_title(f"copy detection ({result.robustness.images} images)", fontsize=10)
        for x, s in enumerate(scores):
            ax_rob.text(x, s + 0.01, f"{s:.2f}", ha="center", fontsize=8)
        ax_rob.grid(axis="y", alpha=0.3)
    fig.savefig(os.fspath(path), format="png")


def _thumbnail(path: str, side: int) -> str:
    """A small JPEG of the image as a data: URI (a grey square if it cannot be read any more)."""
    try:
        img = decode(path, draft_size=side).image
    except BadInput:
        img = Image.new("RGB", (side, side), (200, 200, 200))
    img.thumbnail((side, side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _report_rows(result: EvalResult, worst: int, side: int) -> Iterator[str]:
    thumbs: dict[str, str] = {}

    def thumb(path: str) -> str:
        if path not in thumbs:
            thumbs[path] = _thumbnail(path, side)
        return thumbs[path]

    esc = html.escape
    for rank, i in enumerate(result.worst(worst), 1):
        cells = [
            f'<figure class="query"><img src="{thumb(result.paths[i])}" title="{esc(result.paths[i])}">'
            f"<figcaption><b>{esc(result.labels[i])}</b><br>query #{rank}, AP {result.loo.ap[i]:.3f}"
            "</figcaption></figure>"
        ]
        for j, score in zip(result.loo.top[i], result.loo.top_scores[i], strict=True):
            ok = result.labels[j] == result.labels[i]
            mark = "&#10003;" if ok else "&#10007;"
            cells.append(
                f'<figure class="{"ok" if ok else "bad"}"><img src="{thumb(result.paths[j])}" '
                f'title="{esc(result.paths[j])}"><figcaption>{mark} {esc(result.labels[j])}<br>{score:.3f}'
                "</figcaption></figure>"
            )
        yield '<div class="row">' + "".join(cells) + "</div>"


def write_report(result: EvalResult, path: str | os.PathLike, worst: int = 24, thumb_side: int = 120) -> int:
    """A self-contained HTML contact sheet of the ``worst`` queries (lowest AP), each with its
    top 5; thumbnails are embedded as small base64 JPEGs. Returns how many queries it shows."""
    m = result.metrics()
    rows = list(_report_rows(result, worst, thumb_side))
    head = (
        f"{html.escape(result.encoder)} on {html.escape(str(result.root))}: {len(result.paths)} images in "
        f"{len(result.classes)} classes. P@1 {m['p_at_1']:.3f}, P@5 {m['p_at_5']:.3f}, "
        f"P@10 {m['p_at_10']:.3f}, mAP {m['map']:.3f}."
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lookalike eval: the worst queries</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 1.5em; color: #222; }}
.row {{ display: flex; gap: 8px; align-items: flex-start; border-bottom: 1px solid #ddd; padding: 8px 0; }}
figure {{ margin: 0; width: {thumb_side + 8}px; text-align: center; }}
figure img {{ width: {thumb_side}px; height: {thumb_side}px; object-fit: contain; background: #f4f4f4;
  border: 4px solid transparent; }}
figure.query img {{ border-color: #4c72b0; }}
figure.ok img {{ border-color: #2e9e44; }}
figure.bad img {{ border-color: #d33; }}
figure.ok figcaption {{ color: #1d6e2e; }}
figure.bad figcaption {{ color: #b22; }}
figcaption {{ font-size: 11px; overflow-wrap: anywhere; }}
.query {{ margin-right: 16px; }}
</style></head><body>
<h1>The {len(rows)} worst queries</h1>
<p>{head}</p>
<p>Each row: the query (blue), then its 5 nearest other images, &#10003; same label (green) or
&#10007; another label (red), with the cosine similarity. Hover a picture for its path.</p>
{chr(10).join(rows)}
</body></html>
"""
    Path(path).write_text(doc, encoding="utf-8")
    return len(rows)
