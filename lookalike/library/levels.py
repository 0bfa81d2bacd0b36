"""Match levels for a workspace's search results (see :mod:`lookalike.relevance`): the collection's
calibration, kept fresh as it changes, and the labelling of each result."""

from __future__ import annotations

import threading

import lookalike.relevance as relevance
from lookalike.document import Result
from lookalike.relevance import LEVELS, Calibration, MatchLevel
from lookalike.store.spaces import FACES
from lookalike.store.workspace import Workspace


class MatchLevels:
    """Labels results ``same``, ``near_duplicate``, ``similar`` or ``weak`` for one workspace."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._calibration: Calibration | None = None
        self._generation = -1
        self._lock = threading.Lock()

    def calibration(self) -> Calibration | None:
        """The collection's background for match levels (None unless the workspace is cosine):
        loaded from the workspace, and fitted again when missing, from another encoder, or the
        collection has grown or shrunk by a factor of 1.25 since. Checked again only after a commit
        (the store's generation moved), so a search pays nothing for it."""
        ws = self.workspace
        if ws.metric != "cosine":
            return None
        generation = ws.store.generation
        with self._lock:
            if self._calibration is not None and self._generation == generation:
                return self._calibration
            fingerprint, docs = ws.encoder or "", ws.store.count_docs()
            cal = self._calibration or Calibration.load(ws.path)
            if cal is None or cal.stale(fingerprint, docs):
                cal = Calibration.fit(ws.store.sample_embeddings(relevance.SAMPLE, ws.dim), fingerprint, docs)
                try:
                    cal.save(ws.path)
                except OSError:
                    pass  # a read-only workspace: fitted again by the next process, a second's work
            self._calibration, self._generation = cal, generation
            return cal

    def label(self, results: list[Result], cal: Calibration | None, space: str | None = None) -> None:
        """Set each result's ``match`` level: from the calibration in a cosine first space (judged
        on its similarity to the query), from dlib's distances in the faces space, none otherwise.

        Levels never rise down the list: a result ranked below another is labelled no better than
        it, so a list cut at ``min_match`` is a prefix of the list, and a word means one thing."""
        scores = [r.similarity if r.similarity is not None else r.score for r in results]
        if cal is not None:
            levels: list[MatchLevel] | None = cal.levels(scores)
        elif space == FACES:
            levels = relevance.face_levels(scores)
        else:
            levels = None  # an L2 space of somebody's own encoder: nothing measured to say
        worst = 0
        for n, r in enumerate(results):
            if levels is None:
                r.match = None
                continue
            worst = max(worst, LEVELS.index(levels[n]))
            r.match = LEVELS[worst]


def cut(results: list[Result], min_match: MatchLevel | None) -> list[Result]:
    """The results whose match level is ``min_match`` or better (all of them for None)."""
    if min_match is None:
        return results
    return [r for r in results if r.match is not None and relevance.at_least(r.match, min_match)]
