"""Build lookalike/models/imagenet_wordnet.json: ImageNet's 1000 classes placed in WordNet's noun
hierarchy, so that a tag search for "dog" or "bird" finds every class under it.

    apt-get install wordnet-base        # WordNet 3.0, the version ImageNet's synset ids refer to
    .venv/bin/python scripts/make_wordnet_tags.py

Inputs, both fetched from this environment's registries and never committed:
- WordNet 3.0's noun database (``data.noun``, ``index.noun``, ``noun.exc``) from Debian's
  ``wordnet-base``, in ``/usr/share/wordnet`` (``--wordnet DIR`` to read it elsewhere);
- the 1000 ImageNet-1k synset ids in the model's class order (sorted ``n0…`` ids), read from the
  ``timm`` wheel's ``timm/data/_info/imagenet_synsets.txt``: the wheel is downloaded with
  ``pip download --no-deps timm`` into a temporary folder and only that text file is read (no
  torch, nothing installed). ``--synsets FILE`` reads the ids from a file instead.

The output (a derived table; WordNet's licence allows redistribution with its notice, quoted in the
file's ``source``):
- ``concepts``: every synset that is an ImageNet class or one of its hypernyms (through ``@`` and
  instance ``@i`` links), with its lemmas and the model's class indices beneath it;
- ``words``: each lemma (lower case, ``_`` as a space) to the concepts it names, most frequent sense
  first (``index.noun``'s order);
- ``plurals``: WordNet's irregular plurals of those lemmas (``noun.exc``: geese -> goose).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "lookalike" / "models" / "imagenet_wordnet.json"
TIMM_SYNSETS = "timm/data/_info/imagenet_synsets.txt"


def imagenet_synsets(path: str | None) -> tuple[list[str], str]:
    if path:
        return Path(path).read_text().split(), f"ImageNet-1k synset ids from {Path(path).name}"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "timm", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("timm-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            ids = z.read(TIMM_SYNSETS).decode().split()
        return ids, f"ImageNet-1k synset ids in class order from {wheel.name} ({TIMM_SYNSETS})"


def parse_data_noun(path: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(offset -> lemmas, offset -> hypernym offsets) from WordNet's data.noun."""
    lemmas: dict[str, list[str]] = {}
    hypernyms: dict[str, list[str]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):  # the licence header
            continue
        fields = line.split(" | ")[0].split()
        offset, n_words = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        lemmas[offset] = [w.split("(")[0] for w in words]  # adjective markers like (a) never occur in nouns
        i = 4 + 2 * n_words
        n_ptrs = int(fields[i])
        ups = []
        for p in range(n_ptrs):
            symbol, target, pos = fields[i + 1 + 4 * p : i + 4 + 4 * p]
            if symbol in ("@", "@i") and pos == "n":
                ups.append(target)
        hypernyms[offset] = ups
    return lemmas, hypernyms


def parse_index_noun(path: Path) -> dict[str, list[str]]:
    """lemma -> synset offsets, most frequent sense first."""
    senses: dict[str, list[str]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        f = line.split()
        n_synsets, n_ptrs = int(f[2]), int(f[3])
        senses[f[0].replace("_", " ")] = f[4 + n_ptrs + 2 :][:n_synsets]
    return senses


def licence(path: Path) -> str:
    head = [line.strip() for line in path.read_text(encoding="latin-1").splitlines() if line.startswith("  ")]
    text = [line.split(" ", 1)[1] if " " in line else "" for line in head]  # drop the line numbers
    return " ".join(t for t in text if t).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", default="/usr/share/wordnet", help="folder with data.noun, index.noun, noun.exc")
    ap.add_argument("--synsets", help="a file of the 1000 ImageNet synset ids in class order (default: from timm)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    wn = Path(args.wordnet)
    if not (wn / "data.noun").is_file():
        sys.exit(f"no WordNet noun database in {wn}: apt-get install wordnet-base, or pass --wordnet DIR")
    ids, ids_source = imagenet_synsets(args.synsets)
    if len(ids) != 1000 or any(not (i.startswith("n") and len(i) == 9) for i in ids):
        sys.exit(f"expected 1000 synset ids like n01440764, got {len(ids)}")
    lemmas, hypernyms = parse_data_noun(wn / "data.noun")
    senses = parse_index_noun(wn / "index.noun")

    leaves_under: dict[str, set[int]] = defaultdict(set)
    for cls, wnid in enumerate(ids):
        stack, seen = [wnid[1:]], set()
        while stack:
            off = stack.pop()
            if off in seen:
                continue
            seen.add(off)
            leaves_under[off].add(cls)
            stack.extend(hypernyms.get(off, []))
    concepts = {
        f"n{off}": {"names": lemmas[off], "classes": sorted(classes)} for off, classes in sorted(leaves_under.items())
    }
    words: dict[str, list[str]] = {}
    for off in leaves_under:
        for lemma in lemmas[off]:
            key = lemma.lower()
            if key in words:
                continue
            order = senses.get(key, [])
            covering = [f"n{o}" for o in order if o in leaves_under]
            words[key] = covering + sorted(
                f"n{o}" for o in leaves_under if lemma in lemmas[o] and f"n{o}" not in covering
            )
    plurals = {}
    for line in (wn / "noun.exc").read_text(encoding="latin-1").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].replace("_", " ") in words:
            plurals[parts[0].replace("_", " ")] = parts[1].replace("_", " ")
    out = {
        "source": (
            f"Derived by scripts/make_wordnet_tags.py from WordNet 3.0 (Debian wordnet-base, {wn}/data.noun, "
            f"index.noun, noun.exc) and the {ids_source}. WordNet licence: {licence(wn / 'data.noun')}"
        ),
        "classes": ids,
        "concepts": concepts,
        "words": dict(sorted(words.items())),
        "plurals": dict(sorted(plurals.items())),
    }
    Path(args.out).write_text(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(concepts)} concepts, {len(words)} words, {len(plurals)} irregular plurals")


if __name__ == "__main__":
    main()
