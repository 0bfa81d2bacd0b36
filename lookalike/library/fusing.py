"""A plain search in a workspace with regions: whole photos, and the photos' parts.

A search by a whole photo (no face, no box) compares it with every whole photo, and, where the
workspace holds regions, also with every photo's regions, the whole query as the box: so a photo in
which the query's object is one thing among others ranks too. Each photo then ranks by its whole
photo's score plus half its best region's (:func:`fuse`), within its match level, which stays
judged on its whole photo's ``similarity`` (:func:`within_levels`). Measured on ``lookalike
eval``'s tuxpaint set, this changes P@10 and mAP by less than 0.01 (docs/benchmarks.md,
"Regions"), which is why it is the default.

A "more like this" of a stored photo reads its file for this (the region query is made from the
pixels); a photo whose file is gone is searched by its whole-photo vector only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import numpy as np

from lookalike.document import Document, Request, Result
from lookalike.errors import LookalikeError
from lookalike.relevance import LEVELS, MatchLevel
from lookalike.store.workspace import Workspace

log = logging.getLogger(__name__)

WHOLE_BOX = [0.0, 0.0, 1.0, 1.0]
# A photo's score in a plain search with regions: its whole photo's plus this times its best
# region's. Of max(whole, region + d) for d in 0..0.2, reciprocal rank fusion and sums with 0.5
# and 1, this found the most photos holding the query's object (0.615 -> 0.740 of them in the top
# 10; 0.670 once ordered by match level first) while leaving `lookalike eval`'s P@10 and mAP within
# 0.01 (docs/benchmarks.md, "Regions").
REGION_WEIGHT = 0.5

Submit = Callable[[str, Request], dict[str, Document]]
Similarities = Callable[[list[str], np.ndarray], dict[str, float]]  # (doc ids, query vector) -> whole cosines


def regions_query(qid: str, image: object, like_file: str | None) -> Document | None:
    """The region-space query of a plain search: the same picture, read again (its first reading
    was consumed by the whole-photo flow), or None where there is no picture to read."""
    if like_file is not None:
        return Document(id=f"{qid}-regions", uri=like_file) if os.path.isfile(like_file) else None
    if isinstance(image, (bytes, bytearray)):
        return Document(id=f"{qid}-regions", blob=bytes(image))
    if isinstance(image, (str, os.PathLike)):
        return Document(id=f"{qid}-regions", uri=os.path.abspath(os.fspath(image)))
    return None


def whole_cosines(workspace: Workspace) -> Similarities:
    """The cosine of each document's whole-photo vector (the first space's) to a query vector."""

    def cosines(doc_ids: list[str], vector: np.ndarray) -> dict[str, float]:
        slots, out = workspace.slots(None), {}
        for doc_id in doc_ids:
            rows = workspace.store.chunks_of(doc_id, slots)
            whole = [emb for _, kind, _, emb in rows if kind == "whole"] or [emb for _, _, _, emb in rows]
            if whole:
                out[doc_id] = float(np.dot(whole[0], vector))
        return out

    return cosines


def with_regions(
    submit: Submit,
    kind: str,
    pairs: list[tuple[Document, Document]],
    parameters: dict,
    similarities: Similarities,
) -> None:
    """Search the regions space with each ``(query's results, its region query)`` pair's region
    query, and fuse what it finds into the query's results (see the module). ``similarities``
    gives the whole-photo cosines of documents only the regions found. A search of the regions
    that fails leaves the whole-photo results as they are, and says so in the log."""
    if not pairs:
        return
    try:
        found = submit(kind, Request("search", [r for _, r in pairs], parameters=dict(parameters, box=WHOLE_BOX)))
    except LookalikeError as e:
        log.warning("the regions could not be searched (%s); these results compare whole photos only", e)
        return
    for done, query in pairs:
        regions = found.get(query.id)
        vector = next((c.embedding for c in done.chunks if c.embedding is not None), None)
        if regions is not None and regions.error is None and vector is not None:
            have = {w.doc_id for w in done.results}
            missing = [r.doc_id for r in regions.results if r.doc_id not in have]
            done.results = fuse(done.results, regions.results, similarities(missing, vector) if missing else {})


def fuse(
    whole: list[Result], regions: list[Result], found: dict[str, float], weight: float = REGION_WEIGHT
) -> list[Result]:
    """One ranking of both lists, each document once, by its whole photo's score plus ``weight``
    times its best region's. A document only one list holds is given its whole photo's cosine
    (``found``: looked up for those only the regions found), or that list's lowest region score,
    which its own cannot exceed. Its ``similarity`` is its whole photo's cosine; one whose best
    region is closer to the query than its whole photo is shown by that region (chunk and box)."""
    if not regions:
        return whole
    floor_region = min(r.score for r in regions)
    by_whole = {r.doc_id: r for r in whole}
    by_region = {r.doc_id: r for r in regions}
    out = []
    for doc_id in by_whole.keys() | by_region.keys():
        w, g = by_whole.get(doc_id), by_region.get(doc_id)
        if w is None and doc_id not in found:
            continue  # no whole photo left to compare (removed meanwhile)
        similarity = _similarity(w) if w is not None else found[doc_id]
        region = g.score if g is not None else floor_region
        shown = g if g is not None and (w is None or region > similarity) else w
        assert shown is not None
        shown.score = (w.score if w is not None else similarity) + weight * region
        shown.similarity = similarity
        out.append(shown)
    return sorted(out, key=lambda r: (-r.score, r.doc_id))


def within_levels(results: list[Result], levels: list[MatchLevel]) -> list[Result]:
    """A fused list (with each result's own match ``levels``, judged on its whole photo) ordered
    so that levels never rise down it: by level, then score; a score is lowered to the one above
    it where the order moved it up. Regions reorder photos within a match level and never lift a
    photo above one whose whole photo is closer by level, so a list cut at ``min_match`` is still
    a prefix and a word still means one thing."""
    order = sorted(range(len(results)), key=lambda i: (LEVELS.index(levels[i]), -results[i].score))
    out = [results[i] for i in order]
    for above, r in zip(out, out[1:], strict=False):
        r.score = min(r.score, above.score)
    return out


def _similarity(r: Result) -> float:
    return r.similarity if r.similarity is not None else r.score
