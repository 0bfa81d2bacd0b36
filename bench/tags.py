"""Tag-search precision on tuxpaint: WordNet roll-up against the old label substring match.

    .venv/bin/python -m bench.tags [--workspace DIR] [--json]

Indexes the 439 tuxpaint photos with the default flows (or reuses ``--workspace``), then, for each
folder whose subject has a WordNet word above ImageNet classes, searches that word and reports:
- R-precision: of the first R results (R = the folder's size), the fraction from that folder;
- recall@50: the fraction of the folder's images among the first 50 results;
- the same two for the old search (ImageNet labels containing the word, best tag first).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import lookalike
from lookalike import datasets
from lookalike.library import Options, SearchRequest

# word -> the tuxpaint folders (label prefixes) it should find
QUERIES = {
    "bird": ["animals/birds"],
    "fish": ["animals/fish"],
    "insect": ["animals/insects"],
    "mammal": ["animals/mammals"],
    "animal": ["animals"],
    "fruit": ["food/fruit"],
    "vegetable": ["food/vegetables"],
    "flower": ["plants/flowers"],
    "vehicle": ["vehicles", "military/vehicles"],
    "musical instrument": ["hobbies/music"],
    "tool": ["household/tools"],
}


def score(uris: list[str], relevant: set[str]) -> tuple[float, float]:
    r = len(relevant)
    return sum(u in relevant for u in uris[:r]) / r, sum(u in relevant for u in uris[:50]) / r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", help="an index of the tuxpaint photos to reuse (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tux = datasets.fetch("tuxpaint")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(args.workspace or Path(tmp) / "ws")
        with lookalike.open(Options.from_env(workspace=ws)) as library:
            library.index([tux.root])
        rows = []
        with lookalike.open(Options.from_env(workspace=ws), write=False) as library:
            store = library.workspace.store
            for word, folders in QUERIES.items():
                relevant = {
                    str(p) for p in tux.images if any(str(p.relative_to(tux.root)).startswith(f + "/") for f in folders)
                }
                new = [h.path or "" for h in library.search(SearchRequest(tag=word, top_k=200)).hits]
                # The old search, still the fallback for text that names no WordNet concept.
                old = [d for d, _, _ in store.search_tags(word, 200)]
                old_uris = [s.uri or "" for s in (store.get_docs(old).get(d) for d in old) if s]
                (rp, r50), (orp, or50) = score(new, relevant), score(old_uris, relevant)
                rows.append(
                    {
                        "word": word,
                        "images": len(relevant),
                        "r_precision": round(rp, 3),
                        "recall_at_50": round(r50, 3),
                        "old_r_precision": round(orp, 3),
                        "old_recall_at_50": round(or50, 3),
                    }
                )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'word':20s} {'images':>6s} {'R-prec':>7s} {'rec@50':>7s} {'old R-prec':>10s} {'old rec@50':>10s}")
    for r in rows:
        print(
            f"{r['word']:20s} {r['images']:6d} {r['r_precision']:7.3f} {r['recall_at_50']:7.3f} "
            f"{r['old_r_precision']:10.3f} {r['old_recall_at_50']:10.3f}"
        )
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    print(
        f"{'mean':20s} {'':6s} {mean('r_precision'):7.3f} {mean('recall_at_50'):7.3f} "
        f"{mean('old_r_precision'):10.3f} {mean('old_recall_at_50'):10.3f}"
    )


if __name__ == "__main__":
    main()
