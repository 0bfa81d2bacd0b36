"""Why a result matched: a heat map over the result and over the query, by occlusion.

The question is which parts of each picture make the two alike. The answer here is measured, not
read off the features: each cell of the model's view (the 7 x 7 grid its feature map has, 32 px of
its 224 px input each) is greyed out in turn, and the cell's heat is how much the similarity
falls without it (Zeiler and Fergus's occlusion sensitivity, 2014): the whole-image embeddings'
cosine, or for a search by a box the query box against the result's best region. (A plain search
in a workspace with regions ranks by the whole photo's score and half its best region's; what is
explained then is the whole photos' cosine, which its match level is judged on.) Occlusion costs
one model batch per picture (49 cells and the original, ~0.5 s on 2 cores), needs no gradient, and
attributes the score it explains; a cell-to-cell cosine of the feature maps, the cheaper
candidate, put the hottest cell on the pasted object less often (docs/benchmarks.md, "Regions").

A heat map is the grid, row by row from the top, scaled so that its hottest cell is 1 (all 0 when
no cell lowers the similarity), with the part of the picture it covers (``heat_box``: the centred
square the model sees, as fractions of the width and height).
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from lookalike.document import display_path
from lookalike.errors import BadInput, ConfigError, NotFound
from lookalike.executors.crafters import crop
from lookalike.images import decode, model_view, to_tensor
from lookalike.library.flows import Flows
from lookalike.library.searching import Searcher
from lookalike.library.types import check_box
from lookalike.store.spaces import REGIONS
from lookalike.store.workspace import Workspace

if TYPE_CHECKING:  # the model's modules import onnxruntime: only once something is explained
    from lookalike.models.encoder import EfficientNetEncoder

Fractions = tuple[float, float, float, float]


@dataclass(frozen=True)
class ExplainRequest:
    """Explain why ``result`` (a stored photo: its document id or indexed path) matched a query: an
    ``image`` (a path or bytes) or a stored photo (``like``), searched whole or by its ``box``
    (x0, y0, x1, y1 fractions; a workspace indexed with regions)."""

    result: str
    image: str | os.PathLike | bytes | None = None
    like: str | None = None
    box: Fractions | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.like is None):
            raise BadInput("explain needs exactly one query: an image or a stored photo (like)", "bad request")
        if self.image is not None and not isinstance(self.image, (str, os.PathLike, bytes, bytearray)):
            raise BadInput(f"a query image must be a path or bytes, not {type(self.image).__name__}", "wrong type")
        if self.box is not None:
            object.__setattr__(self, "box", check_box(self.box))


@dataclass
class Explanation:
    """The heat maps of one (query, result) pair; see the module."""

    score: float  # the similarity explained
    space: str  # "image" (whole photos) or "regions" (a box)
    heat: np.ndarray  # the result's grid
    heat_box: Fractions
    query_heat: np.ndarray
    query_box: Fractions
    region: Fractions | None = None  # a box search: the result's best-matching region
    box: Fractions | None = None  # a box search: the query's box
    result_id: str = ""
    result_path: str | None = None
    images: tuple[Image.Image, Image.Image] | None = field(default=None, repr=False)  # (query, result)

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result_id,
            "path": self.result_path,
            "score": round(self.score, 6),
            "space": self.space,
            "grid": list(self.heat.shape),
            "heat": _rounded(self.heat),
            "heat_box": list(self.heat_box),
            "query_heat": _rounded(self.query_heat),
            "query_box": list(self.query_box),
            "region": list(self.region) if self.region is not None else None,
        }

    def png(self, height: int = 320) -> bytes:
        """Both pictures side by side (query left, result right), each with its heat laid over it,
        the query's box and the result's matched region outlined in blue."""
        if self.images is None:
            raise ValueError("this explanation has no pictures")
        query = _overlay(self.images[0], self.query_heat, self.query_box, height, self.box)
        result = _overlay(self.images[1], self.heat, self.heat_box, height, self.region)
        gap = 12
        canvas = Image.new("RGB", (query.width + gap + result.width, height), "white")
        canvas.paste(query, (0, 0))
        canvas.paste(result, (query.width + gap, 0))
        out = io.BytesIO()
        canvas.save(out, "PNG")
        return out.getvalue()


class Explainer:
    """Explains results of one workspace's searches with the encoder of its query flow."""

    def __init__(self, workspace: Workspace, flows: Flows, searcher: Searcher):
        self.workspace, self.flows, self.searcher = workspace, flows, searcher
        self._encoder: EfficientNetEncoder | None = None
        self._lock = threading.Lock()  # a server's threads explain at once: one encoder for them all

    @property
    def encoder(self) -> EfficientNetEncoder:
        """The query flow's model, made on first use (its session is shared: onnxruntime runs
        several at once); its idle threads do not spin, leaving the cores to the server between calls."""
        with self._lock:
            return self._encoder or self._make_encoder()

    def _make_encoder(self) -> EfficientNetEncoder:
        from lookalike.executors.encoders import ImageEncoder
        from lookalike.models.encoder import EfficientNetEncoder

        pods = [p for p in self.flows.flow("query").pods.values() if p.executor is ImageEncoder]
        if not pods:
            raise ConfigError("explain needs the built-in ImageEncoder in the query flow; this workspace uses another")
        params = pods[0].params
        assert isinstance(params, ImageEncoder.Params)
        options = self.flows.options
        self._encoder = EfficientNetEncoder(
            params.model,
            pooling=params.pooling,
            spin=False,
            cache_dir=options.model_cache,
            data_dir=options.dataset_cache,
        )
        return self._encoder

    def explain(self, request: ExplainRequest) -> Explanation:
        if request.box is not None:
            self.flows.query_kind(REGIONS)  # a workspace without regions says so
        result_id = self.searcher.stored_id(request.result)
        result_path = self._file(result_id)
        result_img = _decoded(result_path)
        if request.like is not None:
            query_img = _decoded(self._file(self.searcher.stored_id(request.like)))
        elif isinstance(request.image, (bytes, bytearray)):
            query_img = _decoded(bytes(request.image))
        else:
            assert request.image is not None
            if not os.path.isfile(request.image):
                raise NotFound(f"no such image: {display_path(os.fspath(request.image))}")
            query_img = _decoded(os.fspath(request.image))
        size = self.encoder.input_size
        shown = query_img if request.box is None else crop(query_img, list(request.box))
        q_tensor, r_tensor = to_tensor(shown, size), to_tensor(result_img, size)
        if request.box is None:  # whole photos: the embeddings' cosine
            query_side = result_side = self._embeddings
        else:  # a box: the query box against the result's best region
            query_side, result_side = self.encoder.encode_boxes, self._regions
        q_vec, r_vec = query_side(q_tensor[None])[0], result_side(r_tensor[None])[0]
        cells = self.encoder.map_size
        heat = _occlusion_heat(r_tensor, lambda masked: _best(result_side(masked), q_vec), cells)
        query_heat = _occlusion_heat(q_tensor, lambda masked: _best(query_side(masked), r_vec), cells)
        region = None
        if request.box is not None:
            best = int(np.argmax(r_vec @ q_vec))
            region = _window_box(result_img.size, self.encoder.windows[best], cells)
        score = float(_best(q_vec[None], r_vec)[0])
        return Explanation(
            score=score,
            space=REGIONS if request.box is not None else "image",
            heat=heat,
            heat_box=_view_box(result_img.size),
            query_heat=query_heat,
            query_box=_view_box(shown.size, query_img.size, request.box),
            region=region,
            box=request.box,
            result_id=result_id,
            result_path=result_path,
            images=(query_img, result_img),
        )

    def _file(self, doc_id: str) -> str:
        return self.searcher.stored_file(doc_id, "it cannot be explained")

    def _embeddings(self, batch: np.ndarray) -> np.ndarray:
        """Whole-image embeddings (N x 1280), as the image space holds them."""
        return self.encoder.encode_tensors(batch)[0]

    def _regions(self, batch: np.ndarray) -> np.ndarray:
        """Each picture's region descriptors (N x 4 x 256), as the regions space holds them."""
        return self.encoder.encode_with_regions(batch)[2]


def _best(vectors: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The similarity the search ranks by, for each of ``vectors`` (N x d, or N x R x d regions)
    against ``other`` (d, or R x d regions): the cosine, or the best region's."""
    sims = vectors @ other.T if other.ndim == 2 else vectors @ other
    return sims.reshape(len(vectors), -1).max(axis=1)


def _occlusion_heat(tensor: np.ndarray, score: Any, cells: int) -> np.ndarray:
    """Each cell's heat: how much ``score`` falls with that cell greyed out (see the module)."""
    size = tensor.shape[-1]
    edges = [round(i * size / cells) for i in range(cells + 1)]
    batch = np.repeat(tensor[None], cells * cells + 1, axis=0)
    for i in range(cells * cells):
        r, c = divmod(i, cells)
        batch[i + 1, :, edges[r] : edges[r + 1], edges[c] : edges[c + 1]] = 0.0  # mid-grey after scaling
    scores = np.asarray(score(batch), dtype=np.float64)
    drop = np.clip(scores[0] - scores[1:], 0.0, None).reshape(cells, cells)
    top = drop.max()
    return (drop / top if top > 0 else drop).astype(np.float32)


def _view_box(size: tuple[int, int], within: tuple[int, int] | None = None, box: Fractions | None = None) -> Fractions:
    """The model's view of a ``size`` picture as fractions of it; or, for a box's square
    (:func:`~lookalike.executors.crafters.crop`: the box centred on it, at the photo's scale), of
    the photo ``within`` it was cut from: then it may reach past the photo's edges, where the box is
    not square (the grey the square was padded with)."""
    w, h = size
    left, top, side = model_view(w, h)
    if box is None or within is None:
        return _rounded_box((left / w, top / h, (left + side) / w, (top + side) / h))
    pw, ph = within
    cx, cy = (box[0] + box[2]) / 2 * pw, (box[1] + box[3]) / 2 * ph  # the square's centre, in the photo's pixels
    return _rounded_box(((cx - side / 2) / pw, (cy - side / 2) / ph, (cx + side / 2) / pw, (cy + side / 2) / ph))


def _rounded_box(fit: tuple[float, ...]) -> Fractions:
    return tuple(round(v, 4) for v in fit)  # type: ignore[return-value]


def _window_box(size: tuple[int, int], window: tuple[int, int, int, int], cells: int) -> Fractions:
    w, h = size
    left, top, side = model_view(w, h)
    t, b, lft, r = window
    fit = (
        (left + lft / cells * side) / w,
        (top + t / cells * side) / h,
        (left + r / cells * side) / w,
        (top + b / cells * side) / h,
    )
    return tuple(round(v, 4) for v in fit)  # type: ignore[return-value]


def _decoded(source: str | bytes) -> Image.Image:
    return decode(source, name=source if isinstance(source, str) else None).image


def _rounded(grid: np.ndarray) -> list[list[float]]:
    return [[round(float(v), 3) for v in row] for row in grid]


def _overlay(img: Image.Image, heat: np.ndarray, box: Fractions, height: int, outline: Fractions | None) -> Image.Image:
    """``img`` scaled to ``height`` with ``heat`` (0..1) laid over ``box`` in a warm colour, and
    ``outline`` (fractions) drawn."""
    scaled = img.convert("RGB").resize((max(1, round(img.width * height / img.height)), height))
    w, h = scaled.size
    x0, y0, x1, y1 = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    if x1 > x0 and y1 > y0:
        alpha = Image.fromarray((np.clip(heat, 0, 1) * 170).astype(np.uint8), "L").resize(
            (x1 - x0, y1 - y0), Image.Resampling.BILINEAR
        )
        tint = Image.new("RGB", alpha.size, (255, 64, 0))
        part = scaled.crop((x0, y0, x1, y1))
        scaled.paste(Image.composite(tint, part, alpha), (x0, y0))
    draw = ImageDraw.Draw(scaled)
    if outline is not None:
        draw.rectangle(
            (outline[0] * w, outline[1] * h, outline[2] * w - 1, outline[3] * h - 1), outline=(0, 160, 255), width=3
        )
    return scaled
