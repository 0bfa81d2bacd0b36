"""Tag words up WordNet's hierarchy: "dog" names the 118 ImageNet classes of dogs, "bird" the 59 of
birds, so a tag search sums the probabilities of every class beneath the word.

The table (``imagenet_wordnet.json``) is derived from WordNet 3.0 and ImageNet's synset ids by
``scripts/make_wordnet_tags.py``; its ``source`` field says exactly from what.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from lookalike.errors import ModelError
from lookalike.models.imagenet import labels

# Regular English plural endings, tried in order when a word is not in WordNet as it is typed
# (WordNet's own irregular plurals, geese -> goose, come from the table).
_SUFFIXES = (
    ("ies", "y"),
    ("ves", "f"),
    ("ves", "fe"),
    ("ses", "s"),
    ("xes", "x"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("es", "e"),
    ("s", ""),
)


@dataclass(frozen=True)
class Concept:
    """What a tag query names: the words it matched, and the ImageNet class labels beneath them."""

    word: str
    synsets: tuple[str, ...]
    names: tuple[str, ...]  # the matched synsets' lemmas, for display
    classes: frozenset[int]

    @property
    def labels(self) -> list[str]:
        """The stored tag labels of the classes (two ImageNet classes share a name, e.g. crane)."""
        names = labels()
        return sorted({names[c] for c in self.classes})


@lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    try:
        text = resources.files("lookalike.models").joinpath("imagenet_wordnet.json").read_text("utf-8")
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the WordNet tag table: {e}; reinstall lookalike") from e
    if len(data.get("classes", [])) != 1000:
        raise ModelError("the WordNet tag table does not list 1000 ImageNet classes; reinstall lookalike")
    return data


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("_", " ")).strip().lower()


def _lemma_of(word: str) -> str | None:
    t = table()
    if word in t["words"]:
        return word
    if word in t["plurals"]:
        return str(t["plurals"][word])
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            base = word[: -len(suffix)] + replacement
            if base in t["words"]:
                return base
    return None


def concept(text: str) -> Concept | None:
    """The concept a tag query names (every noun sense of the word that has ImageNet classes
    beneath it), or None when WordNet has no such word above any class."""
    word = _lemma_of(normalise(text))
    if word is None:
        return None
    t = table()
    synsets = tuple(t["words"][word])
    classes: set[int] = set()
    names: list[str] = []
    for s in synsets:
        entry = t["concepts"][s]
        classes.update(entry["classes"])
        names.extend(n for n in entry["names"] if n not in names)
    return Concept(word, synsets, tuple(names), frozenset(classes))


@lru_cache(maxsize=1)
def _vocabulary() -> list[tuple[str, int]]:
    """Every word with the number of classes it covers, the broadest first, then alphabetical."""
    t = table()
    sizes = {w: len({c for s in synsets for c in t["concepts"][s]["classes"]}) for w, synsets in t["words"].items()}
    return sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))


def suggest(prefix: str, limit: int = 10) -> list[tuple[str, int]]:
    """Words starting with ``prefix`` (or with a word of theirs starting with it), with how many
    ImageNet classes each covers: whole-word starts first, the broadest words first."""
    p = normalise(prefix)
    if not p or limit < 1:
        return []
    starts = [(w, n) for w, n in _vocabulary() if w.startswith(p)]
    inner = [(w, n) for w, n in _vocabulary() if not w.startswith(p) and f" {p}" in f" {w}"]
    return (starts + inner)[:limit]
