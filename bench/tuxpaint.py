"""The 439 tuxpaint photos, indexed with the default flows, for the benchmarks that read them back."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lookalike
from lookalike import datasets
from lookalike.library import Library, Options


@contextmanager
def indexed_tuxpaint(workspace: str | None = None) -> Iterator[tuple[Library, datasets.FetchedDataset]]:
    """The tuxpaint photos indexed (incrementally) into ``workspace``, or a temporary one, and that
    workspace opened read-only, with the dataset."""
    tux = datasets.fetch("tuxpaint")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(workspace or Path(tmp) / "ws")
        with lookalike.open(Options.from_env(workspace=ws)) as library:
            library.index([tux.root])
        with lookalike.open(Options.from_env(workspace=ws), write=False) as library:
            yield library, tux
