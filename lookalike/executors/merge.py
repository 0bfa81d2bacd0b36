"""_merge: the join. The runtime hands it one request already merged from all its upstream pods."""

from __future__ import annotations

from lookalike.executors.base import Executor


class Merge(Executor):
    """Joins branches. Merging happens in the runtime (it must wait for every branch of a request);
    what reaches this executor is the joined request, which it passes on unchanged."""
