"""Inspecting a workspace: what it holds, whether the store and the shards agree, one document,
and its duplicates. Nothing here runs a flow or loads a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookalike.document import display_path
from lookalike.dupes import DEFAULT_THRESHOLD, DupeReport, find_duplicates
from lookalike.errors import NotFound
from lookalike.library.flows import Flows
from lookalike.store.docstore import StoredDoc
from lookalike.store.workspace import Workspace, WorkspaceInfo

RECALL_QUERIES = 200  # held-out vectors per shard for `info --recall`


@dataclass
class InfoReport:
    """What a workspace holds, and (when checked) whether its store and shards agree."""

    info: WorkspaceInfo
    problems: list[str] | None = None  # None: not checked
    runtime: dict[str, Any] | None = None  # a server's: where its query pods run

    def to_dict(self) -> dict[str, Any]:
        i = self.info
        out: dict[str, Any] = {
            "workspace": display_path(str(i.path)),
            "docs": i.docs,
            "chunks": i.chunks,
            "shards": {str(k): v for k, v in i.shards.items()},
            "encoder": i.encoder,
            "preset": i.preset,
            "faces": i.preset == "faces",
            "size_bytes": i.size_bytes,
            "index": i.indexes,
            "index_budget": {"memory_bytes": i.budget.memory_bytes, "latency_ms": i.budget.latency_ms},
        }
        if self.problems is not None:
            out |= {"consistent": not self.problems, "problems": self.problems}
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return out


class Inspector:
    """Reads one workspace (and asks its running query pods, where a server has them)."""

    def __init__(self, workspace: Workspace, flows: Flows):
        self.workspace, self.flows = workspace, flows

    def info(self, *, verify: bool = True, recall: bool = False) -> InfoReport:
        """Documents, chunks, shards and their vector index (type, memory, recall@10 measured when
        built, or now with ``recall``), and with ``verify`` whether the store and the shards agree.
        Each shard's index is opened here, as its pod would open it."""
        ws = self.workspace
        shards = ws.shard_indexes()
        try:
            info = ws.info([shard.describe() for shard in shards])
            if recall:
                for entry, measured in zip(info.indexes, ws.measure_recall(RECALL_QUERIES, shards=shards), strict=True):
                    entry["recall_at_10"], entry["recall_queries"] = measured, min(RECALL_QUERIES, entry["vectors"])
            problems = ws.verify(shards) if verify else None
        finally:
            for shard in shards:
                shard.close(flush=False)
        return InfoReport(info, problems)

    def stats(self) -> InfoReport:
        """What a server says of its workspace: its running query pods describe the shard indexes
        they hold (on Ray, the shard actors answer), and where they run."""
        runtime = self.flows.running("query")
        described = None
        if runtime is not None:
            pods = self.flows.flow("query").pods_storing_vectors()
            described = runtime.ask(pods[0].name, "describe") if pods else None
        choice = self.flows.choice("query")
        where = {"kind": choice.kind, "pods": runtime.placement() if runtime is not None else {}}
        return InfoReport(self.workspace.info(described), runtime=where)

    def doc(self, doc_id: str) -> StoredDoc:
        """An indexed document, or NotFound."""
        doc = self.workspace.store.get_docs([doc_id]).get(doc_id)
        if doc is None:
            raise NotFound(f"no indexed document {doc_id!r}")
        return doc

    def dupes(self, threshold: float = DEFAULT_THRESHOLD) -> DupeReport:
        """Groups of exact copies (the same bytes) and of near duplicates (see :mod:`lookalike.dupes`)."""
        return find_duplicates(self.workspace, threshold)
