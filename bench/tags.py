"""Tag-search precision and recall on tuxpaint: the list a tag search returns, which ends where
the model's probability for the word falls below ``TAG_FLOOR``.

    .venv/bin/python -m bench.tags [--workspace DIR] [--json]

Indexes the 439 tuxpaint photos with the default flows (or reuses ``--workspace``), then, for each
folder whose subject has a WordNet word above ImageNet classes, searches that word (``top_k``
1000: the whole list) and reports:
- precision: the fraction of the photos returned that are from that folder;
- recall: the fraction of the folder's photos that are returned;
- ``total``: how many photos the search says have the tag (the list's length);
- R-precision of the same words' ranking without the floor (the first R of every photo tagged
  with any of the word's classes, R = the folder's size), as before the floor.
"""

from __future__ import annotations

import argparse
import json

from bench.tuxpaint import indexed_tuxpaint
from lookalike.library import SearchRequest
from lookalike.models.wordnet import concept

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


def r_precision(uris: list[str], relevant: set[str]) -> float:
    return sum(u in relevant for u in uris[: len(relevant)]) / len(relevant)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", help="an index of the tuxpaint photos to reuse (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with indexed_tuxpaint(args.workspace) as (library, tux):
        store = library.workspace.store
        for word, folders in QUERIES.items():
            relevant = {
                str(p) for p in tux.images if any(str(p.relative_to(tux.root)).startswith(f + "/") for f in folders)
            }
            report = library.search(SearchRequest(tag=word, top_k=1000))
            found = [h.path or "" for h in report.hits]
            concept_of = concept(word)
            assert concept_of is not None, word
            unfloored, _ = store.search_labels(concept_of.labels, 1000)
            stored = store.get_docs(d for d, _, _ in unfloored)
            ranked = [stored[d].uri or "" for d, _, _ in unfloored if d in stored]
            hits = sum(u in relevant for u in found)
            rows.append(
                {
                    "word": word,
                    "images": len(relevant),
                    "total": report.total,
                    "precision": round(hits / len(found), 3) if found else None,
                    "recall": round(hits / len(relevant), 3),
                    "r_precision_without_floor": round(r_precision(ranked, relevant), 3),
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'word':20s} {'images':>6s} {'found':>6s} {'precision':>9s} {'recall':>7s} {'R-prec, no floor':>16s}")
    for r in rows:
        precision = f"{r['precision']:9.3f}" if r["precision"] is not None else f"{'-':>9s}"
        print(
            f"{r['word']:20s} {r['images']:6d} {r['total']:6d} {precision} {r['recall']:7.3f} "
            f"{r['r_precision_without_floor']:16.3f}"
        )


if __name__ == "__main__":
    main()
