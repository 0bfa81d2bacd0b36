"""`make demo` for now: encode scikit-image's bundled photos and print what the model sees.

(The full demo, which indexes a photo folder and searches it, arrives with the index/search CLI.)
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    try:
        from PIL import Image
        from skimage import data
    except ImportError:
        print("the demo photos come with scikit-image: pip install scikit-image", file=sys.stderr)
        return 1
    from lookalike.errors import LookalikeError
    from lookalike.models.encoder import ImageEncoder

    names = ("astronaut", "coffee", "chelsea", "rocket", "camera")
    try:
        start = time.perf_counter()
        encoder = ImageEncoder()
        ready = time.perf_counter()
        embeddings, logits = encoder.encode([Image.fromarray(getattr(data, n)()) for n in names])
    except LookalikeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    done = time.perf_counter()
    print(
        f"{encoder.name} ({encoder.fingerprint}) loaded in {ready - start:.2f}s; "
        f"{len(names)} photos encoded in {done - ready:.2f}s\n"
    )
    for name, tags in zip(names, encoder.tags(logits, k=3), strict=True):
        print(f"{name:10s} " + ", ".join(f"{t.label} {t.probability:.0%}" for t in tags))
    sims = embeddings @ embeddings.T
    print("\ncosine similarity between photos:")
    print(" " * 11 + "".join(f"{n[:9]:>10s}" for n in names))
    for i, name in enumerate(names):
        print(f"{name:10s} " + "".join(f"{sims[i, j]:10.2f}" for j in range(len(names))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
