"""A workspace's named vector spaces: what each holds, and where its shards' vectors are kept.

A workspace holds one or more vector spaces (``image``, ``faces``), each fed by its own branch of
the index flow: its encoder, its vectors' size and metric, and its own shards. The doc store keeps
every space's chunks in one table; each shard of each space is one *slot* there (``chunks.shard``),
the spaces' shards numbered one after another in the manifest's order::

    image: shards 0, 1   -> slots 0, 1   (folders shard-0, shard-1)
    faces: shards 0, 1   -> slots 2, 3   (folders faces-shard-0, faces-shard-1)

So the vector log, the shard indexes and the filters work on slots and need not know of spaces;
a workspace of one ``image`` space (every workspace before spaces) is laid out as it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookalike.errors import ConfigError

# The space of a pod that stores vectors and names none, and of a search that names none.
DEFAULT_SPACE = "image"
# The space of face chunks (the faces preset's face branch, searches by face, people).
FACES = "faces"
# The space of region chunks (``lookalike index --regions``): parts of each photo, searched by a box.
REGIONS = "regions"


@dataclass(frozen=True)
class VectorSpace:
    """One space as the flows describe it (and the manifest records it)."""

    encoder: str | None  # the fingerprint of the encoder(s) feeding it, and their preprocessing
    dim: int
    metric: str  # "cosine" or "l2"
    shards: int  # in a layout, 0 leaves it to the workspace (1 when new)

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "dim": self.dim, "metric": self.metric, "shards": self.shards}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VectorSpace:
        return cls(d.get("encoder"), int(d["dim"]), str(d.get("metric", "cosine")), int(d.get("shards", 1)))


def first_slots(spaces: dict[str, VectorSpace]) -> dict[str, int]:
    """Each space's first slot: the spaces' shards numbered one after another, in order."""
    out, n = {}, 0
    for name, space in spaces.items():
        out[name] = n
        n += space.shards
    return out


def shard_folder(space: str, shard: int, first: bool) -> str:
    """The folder of a space's shard: ``shard-N`` for the workspace's first space (as before
    spaces), ``SPACE-shard-N`` for the others."""
    return f"shard-{shard}" if first else f"{space}-shard-{shard}"


def unknown_space(space: str, known: list[str] | Any) -> ConfigError:
    return ConfigError(f"no vector space {space!r} in this workspace (it has: {', '.join(known)})")
