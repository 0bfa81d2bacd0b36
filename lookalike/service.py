"""The one service layer under the CLI and the server: flows for a preset, results and workspace
facts as plain data. Both front ends call these and only add what is theirs (a rank, a URL).

A score has one meaning per metric, named here where it is turned into data: on cosine
workspaces ``similarity`` (higher is closer), on L2 (face) workspaces ``distance`` (lower is
closer). ``score`` is always "higher is closer" (minus the distance on L2), so a ranking reads the
same for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lookalike.document import Result, display_path
from lookalike.errors import ConfigError

# name -> (index flow, query flow), shipped in lookalike/flows/
PRESETS = {"default": ("index", "query"), "faces": ("faces-index", "faces-query")}


def preset_flows(preset: str) -> tuple[Path, Path]:
    """The built-in (index, query) flow files of a preset."""
    from lookalike.flow.graph import builtin_flow_path  # (heavy: not for `lookalike --help`)

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    index, query = PRESETS[preset]
    return builtin_flow_path(index), builtin_flow_path(query)


def score_fields(score: float, metric: str | None) -> dict[str, float]:
    """A result's score, named for its metric (None: a score that is no distance, such as a tag's
    probability)."""
    score = round(float(score), 6)
    if metric is None:
        return {"score": score}
    if metric == "l2":
        return {"score": score, "distance": round(-score, 6) + 0.0}  # + 0.0: never "-0.0"
    return {"score": score, "similarity": score}


def tag_fields(tags: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": label, "probability": round(p, 4)} for label, p in tags]


def doc_fields(
    doc_id: str,
    uri: str | None,
    width: int | None,
    height: int | None,
    tags: list[tuple[str, float]],
    max_tags: int | None = None,
) -> dict[str, Any]:
    """What is said about a document anywhere. File names are shown with display_path (they need
    not be valid UTF-8); the files themselves are always opened by their real path."""
    shown = display_path(uri) if uri is not None else None
    return {
        "doc_id": doc_id,
        "uri": shown,
        "name": os.path.basename(shown or "") or doc_id,
        "tags": tag_fields(tags[:max_tags]),
        "width": width,
        "height": height,
    }


def result_fields(result: Result, metric: str | None, max_tags: int | None = None) -> dict[str, Any]:
    """One search result: the document, its score named for ``metric``, the chunk that matched."""
    return (
        doc_fields(result.doc_id, result.uri, result.width, result.height, result.tags, max_tags)
        | score_fields(result.score, metric)
        | {"chunk": result.chunk_kind, "bbox": list(result.bbox) if result.bbox else None}
        | ({"match": result.match} if result.match is not None else {})
    )


def workspace_fields(info: Any) -> dict[str, Any]:
    """A workspace's facts (a :class:`lookalike.store.workspace.WorkspaceInfo`) as data."""
    return {
        "workspace": display_path(str(info.path)),
        "docs": info.docs,
        "chunks": info.chunks,
        "shards": {str(k): v for k, v in info.shards.items()},
        "encoder": info.encoder,
        "preset": info.preset,
        "faces": info.preset == "faces",
        "size_bytes": info.size_bytes,
        "index": info.indexes,
        "index_budget": {"memory_bytes": info.budget.memory_bytes, "latency_ms": info.budget.latency_ms},
    }
