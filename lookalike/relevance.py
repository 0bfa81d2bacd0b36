"""Match levels: how much a search result is like its query, in words a user can trust.

Every result is labelled ``same``, ``near_duplicate``, ``similar`` or ``weak``. A fixed score
threshold cannot do this, because good and bad scores differ from query to query and from one
collection to another. So the levels are calibrated on two things:

- **The collection's own background**: the similarities of random pairs of its images
  (:class:`Calibration`, sampled from the workspace, stored in it, and refitted as it grows). A
  score that one random pair in a thousand reaches says little; the levels sit above it.
- **The query's own neighbour curve**: a result is ``similar`` only while it stays near the
  query's best non-copy match, measured in units of how far that best match stands above the
  background (so a query with only distant neighbours keeps none of them).

``same`` and ``near_duplicate`` are copies: the same picture re-encoded or resized, and the same
picture edited (cropped, rotated, recoloured). Their floors are properties of the encoder, measured
by ``lookalike eval --robustness`` and quoted in docs/benchmarks.md, and raised where a collection's
background is unusually high. On face workspaces (L2 distances from dlib) the levels follow dlib's
distances: under 0.6 is the same person.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lookalike.atomic import atomic_write

MatchLevel = Literal["same", "near_duplicate", "similar", "weak"]
LEVELS: tuple[MatchLevel, ...] = ("same", "near_duplicate", "similar", "weak")

# Cosine floors of the copy levels (R-MAC EfficientNet-Lite0 embeddings, measured on tuxpaint,
# docs/benchmarks.md "Match levels"): "same" is the same picture as good as untouched;
# "near_duplicate" is the same picture edited (mirrored, recoloured, resized, cropped), one floor
# for the result badges and `lookalike dupes`. It sits above every pair of *different* pictures
# among the collection's nearest neighbours (the highest: a polo shirt and a T-shirt at 0.878, an
# orange and a mandarine at 0.857, a crow and a blackbird at 0.804), so it never calls two birds
# copies; what it costs is the heavier edits of small images (a 20% crop or a half-size of a
# cut-out stamp reaches it about half the time; `lookalike eval --robustness` measures them).
SAME_FLOOR = 0.97
NEAR_DUPLICATE_FLOOR = 0.90
# A result is "similar" while it scores at least this far up from the background (the median of
# random pairs) towards the query's best non-copy match.
SIMILAR_FRACTION = 0.7
# ... and never below this quantile of random pairs.
BACKGROUND_QUANTILE = 0.99
# Face distances (dlib: under 0.6 is the same person).
FACE_SAME, FACE_NEAR, FACE_SIMILAR = 0.2, 0.4, 0.6

NEAR_DUPLICATE_CAP = 0.95
# A photo is tagged with a word when the model gives the word's ImageNet classes (summed, among its
# five stored tags) at least this much of its probability: more likely than not. On tuxpaint
# (bench/tags.py) it keeps precision at 0.83 or more for bird, fish, insect, fruit, vegetable, flower
# and musical instrument; 0.4 lets vegetable fall to 0.75 and musical instrument to 0.71.
TAG_FLOOR = 0.5
MIN_SAMPLE = 30  # images below which the background is not estimated
SAMPLE = 2000  # images whose pairwise similarities are the background: 2 million pairs
REFIT_GROWTH = 1.25  # refit when the collection has grown (or shrunk) by this factor since the fit
FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """The background of one collection: quantiles of the similarity of random pairs."""

    fingerprint: str
    docs: int  # how many documents the collection had when it was fitted
    sample: int
    median: float
    q99: float
    q999: float

    @classmethod
    def fit(cls, vectors: np.ndarray, fingerprint: str, docs: int) -> Calibration:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(v)
        if n < MIN_SAMPLE:  # too few pairs to say what random looks like: no background bar
            return cls(fingerprint, docs, n, -1.0, -1.0, -1.0)
        sims = v @ v.T
        pairs = sims[np.triu_indices(n, k=1)]
        q = np.quantile(pairs, [0.5, BACKGROUND_QUANTILE, 0.999])
        return cls(fingerprint, docs, n, float(q[0]), float(q[1]), float(q[2]))

    def stale(self, fingerprint: str, docs: int) -> bool:
        if fingerprint != self.fingerprint:
            return True
        lo, hi = sorted((max(self.docs, 1), max(docs, 1)))
        return hi / lo >= REFIT_GROWTH and abs(docs - self.docs) >= 10

    def save(self, workspace: str | os.PathLike) -> None:
        atomic_write(Path(workspace) / FILE, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def load(cls, workspace: str | os.PathLike) -> Calibration | None:
        try:
            data = json.loads((Path(workspace) / FILE).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None  # missing or unreadable: derived data, fitted again

    # --- the levels ---------------------------------------------------------------------------

    @property
    def same_floor(self) -> float:
        return SAME_FLOOR

    @property
    def near_floor(self) -> float:
        """Raised above the fixed floor where one random pair in a thousand of this collection
        scores higher (a collection of near-identical frames), but never to the "same" floor."""
        return min(max(NEAR_DUPLICATE_FLOOR, self.q999), NEAR_DUPLICATE_CAP)

    def levels_of_copies(self, similarities: np.ndarray) -> np.ndarray:
        """Whether each copy's similarity to its original labels it ``same`` or ``near_duplicate``."""
        return np.asarray(similarities) >= self.near_floor

    def levels(self, scores: list[float], reference: float | None = None) -> list[MatchLevel]:
        """Levels of one query's results (``scores``: their cosine similarity to the query).

        ``reference``: the query's best non-copy score, if the caller knows it beyond these results;
        by default the best of ``scores`` below the near-duplicate floor.
        """
        if reference is None:
            reference = max((s for s in scores if s < self.near_floor), default=None)
        similar_floor = self.q99
        if reference is not None:
            base = max(self.median, 0.0)  # no background known (-1): measured up from orthogonal
            similar_floor = max(similar_floor, base + SIMILAR_FRACTION * (reference - base))
        out: list[MatchLevel] = []
        for s in scores:
            if s >= self.same_floor:
                out.append("same")
            elif s >= self.near_floor:
                out.append("near_duplicate")
            elif s >= similar_floor:
                out.append("similar")
            else:
                out.append("weak")
        return out


def face_levels(scores: list[float]) -> list[MatchLevel]:
    """Levels of face matches, whose scores are minus dlib's Euclidean distance."""
    out: list[MatchLevel] = []
    for s in scores:
        d = -s
        out.append(
            "same"
            if d <= FACE_SAME
            else "near_duplicate"
            if d <= FACE_NEAR
            else "similar"
            if d <= FACE_SIMILAR
            else "weak"
        )
    return out


def at_least(level: MatchLevel, minimum: MatchLevel) -> bool:
    """Whether ``level`` is ``minimum`` or better (same > near_duplicate > similar > weak)."""
    return LEVELS.index(level) <= LEVELS.index(minimum)
