"""lookalike's Python API: the one way in, for the CLI, the server, `eval`, the benchmarks and you.

    import lookalike

    with lookalike.open("photos.lookalike") as library:        # the settings in effect (LOOKALIKE_*)
        library.index(["photos"])                                # incremental
        report = library.search(lookalike.SearchRequest(image="photos/cat.jpg", top_k=5))
        for hit in report.hits:
            print(hit.path, hit.similarity, hit.match)

See README's "Python" section. Everything here is also importable from ``lookalike`` itself.
"""

from lookalike.dupes import DupeReport
from lookalike.errors import (
    BadInput,
    ClusterError,
    ConfigError,
    FetchError,
    LookalikeError,
    ModelError,
    NotFound,
    StoreError,
)
from lookalike.filters import Near
from lookalike.library.core import Library, open
from lookalike.library.explaining import ExplainRequest, Explanation
from lookalike.library.indexing import IndexProgress
from lookalike.library.inspecting import InfoReport
from lookalike.library.types import (
    Filters,
    Hit,
    IndexReport,
    IndexRequest,
    ListReport,
    ListRequest,
    SearchReport,
    SearchRequest,
)
from lookalike.settings import Options

__all__ = [
    "BadInput",
    "ClusterError",
    "ConfigError",
    "DupeReport",
    "ExplainRequest",
    "Explanation",
    "FetchError",
    "Filters",
    "Hit",
    "IndexProgress",
    "IndexReport",
    "IndexRequest",
    "InfoReport",
    "Library",
    "ListReport",
    "ListRequest",
    "LookalikeError",
    "ModelError",
    "Near",
    "NotFound",
    "Options",
    "SearchReport",
    "SearchRequest",
    "StoreError",
    "open",
]
