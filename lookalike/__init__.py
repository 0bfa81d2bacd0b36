"""lookalike: neural image search over a folder of photos.

The Python API (:mod:`lookalike.library`) is importable from here: ``lookalike.open``,
``lookalike.Options``, ``lookalike.SearchRequest`` and the rest. It is imported on first use, so
that ``lookalike --help`` does not load numpy, FAISS and onnxruntime.
"""

from typing import Any

from lookalike.version import __version__

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    import lookalike.library as library

    if name in library.__all__:
        return getattr(library, name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
