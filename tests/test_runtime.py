"""The local runtime, run for real on small executors: replicas, backpressure, shards, joins, failures.

The executors live in a user module written into ``tmp_path`` and loaded through ``py_modules``,
exactly as a user's own would be. Each test gets its own copy of that module, so the state the
executors record (module globals) starts empty. Nothing here measures wall-clock time: concurrency
is shown with a barrier that only opens when every replica is inside it at once.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
import zlib
from pathlib import Path
from types import ModuleType

import pytest

from lookalike.document import Document, Request, shard_for
from lookalike.errors import LookalikeError
from lookalike.flow.config import load_flow_text
from lookalike.flow.graph import Flow
from lookalike.flow.local_runtime import LocalRuntime

WAIT_S = 10  # a generous bound on any one wait: a bug shows up as a failure, never as a hung suite

EXECUTORS_PY = '''
"""Test executors. They record what they were handed in CALLS, one entry per handler call."""

import random
import threading
import time
import zlib
from typing import Literal

from lookalike.document import Chunk, Match
from lookalike.errors import BadInput
from lookalike.executors import Executor, requests

LOCK = threading.Condition()
CALLS = []  # (pod, shard, replica, request id, [doc ids])
OPENED = []  # (pod, shard, replica)
CLOSED = []
BARRIER = None  # a threading.Barrier, put here by the test that uses Rendezvous
INSIDE = set()  # ids of the requests between Enter and Leave
MOST_INSIDE = 0
FILLED = False  # whether `fill` requests were ever in flight at once
WAITED = False
ARRIVED_WITH_MATCHES = 0


def note(executor, request, docs):
    ctx = executor.context
    with LOCK:
        CALLS.append((ctx.pod, ctx.shard, ctx.replica, request.id, [d.id for d in docs]))


def checksum(text):
    return zlib.crc32(text.encode())


def fake_matches(shard, doc_id, chunk_index, k):
    """What shard `shard` finds for a query chunk: k matches (one fewer on shard 2), scores with ties."""
    rng = random.Random(f"{shard}/{doc_id}/{chunk_index}")
    n = k - 1 if shard == 2 else k
    return [Match(chunk_id=shard * 1000 + i, doc_id=f"s{shard}-{i}", score=rng.randint(0, 20) / 20) for i in range(n)]


class Tracked(Executor):
    """Remembers being opened and closed."""

    def open(self):
        ctx = self.context
        with LOCK:
            OPENED.append((ctx.pod, ctx.shard, ctx.replica))

    def close(self):
        ctx = self.context
        with LOCK:
            CLOSED.append((ctx.pod, ctx.shard, ctx.replica))


class Record(Tracked):
    """Tags each document with (pod, shard); `jitter_ms` makes replicas finish out of order."""

    class Params(Tracked.Params):
        jitter_ms: int = 0

    @requests(on=["index", "search"])
    def record(self, docs, request):
        note(self, request, docs)
        if self.params.jitter_ms:
            time.sleep(checksum(str([d.id for d in docs])) % (self.params.jitter_ms + 1) / 1000)
        for doc in docs:
            doc.tags.append((self.context.pod, float(self.context.shard)))


class Chunker(Executor):
    class Params(Executor.Params):
        per_doc: int = 1

    @requests(on=["index", "search"])
    def split(self, docs):
        for doc in docs:
            doc.chunks.extend(Chunk(kind=f"part{i}") for i in range(self.params.per_doc))


class SetField(Executor):
    """Sets one field of each document from its id, and adds a chunk named after the pod."""

    class Params(Executor.Params):
        field: Literal["width", "height", "size"]

    @requests(on="index")
    def set_field(self, docs, request):
        note(self, request, docs)
        for doc in docs:
            setattr(doc, self.params.field, checksum(self.params.field + doc.id) % 1000)
            doc.chunks.append(Chunk(kind=self.context.pod))


class ShardMatches(Executor):
    """A stand-in vector shard: writes fake_matches on every chunk, like VectorIndexer.search."""

    class Params(Executor.Params):
        k: int = 4

    @requests(on="search")
    def search(self, docs, request):
        note(self, request, docs)
        request.parameters["chunks_per_query"] = self.params.k  # as VectorIndexer declares its k
        for doc in docs:
            for j, chunk in enumerate(doc.chunks):
                chunk.matches = fake_matches(self.context.shard, doc.id, j, self.params.k)


class AppendMatches(Executor):
    """Appends this shard's match to each chunk, counting chunks that arrive with matches already."""

    @requests(on="search")
    def search(self, docs, request):
        global ARRIVED_WITH_MATCHES
        foreign = 0
        request.parameters["chunks_per_query"] = 2  # one match from each of the two shards
        for doc in docs:
            for chunk in doc.chunks:
                foreign += bool(chunk.matches)
                chunk.matches.append(Match(chunk_id=self.context.shard, doc_id="d", score=1.0))
        with LOCK:
            ARRIVED_WITH_MATCHES += foreign


class Rendezvous(Executor):
    """Passes only when BARRIER's parties are all inside at once."""

    @requests(on="index")
    def meet(self, docs, request):
        BARRIER.wait()
        note(self, request, docs)


class Enter(Executor):
    """Counts the requests in flight (until Leave). The first ones wait, once, until `fill` are in."""

    class Params(Executor.Params):
        fill: int

    @requests(on="index")
    def enter(self, docs, request):
        global MOST_INSIDE, FILLED, WAITED
        with LOCK:
            INSIDE.add(request.id)
            MOST_INSIDE = max(MOST_INSIDE, len(INSIDE))
            LOCK.notify_all()
            if not WAITED:
                FILLED = LOCK.wait_for(lambda: len(INSIDE) >= self.params.fill, timeout=10) or FILLED
                WAITED = True


class Leave(Executor):
    @requests(on="index")
    def leave(self, docs, request):
        with LOCK:
            INSIDE.discard(request.id)


class Fail(Executor):
    """Raises for requests whose parameters ask for it."""

    @requests(on=["index", "search"])
    def maybe_fail(self, docs, request):
        note(self, request, docs)
        if request.parameters.get("boom"):
            raise RuntimeError(f"request {request.parameters['n']} went boom")
        if request.parameters.get("bad"):
            raise BadInput("cannot read it", "truncated image")


class OpenFails(Tracked):
    def open(self):
        raise OSError("weights.onnx is missing")
'''


def make_flow(tmp_path: Path, yaml_text: str) -> tuple[Flow, ModuleType]:
    """The flow, with the test executors from a py_module beside it, and that module (for its globals)."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "executors.py").write_text(EXECUTORS_PY, "utf-8")
    flow = Flow(load_flow_text(yaml_text, "t.yml", base_dir=tmp_path, env={}))
    custom = next(p.executor for p in flow.pods.values() if p.executor.__module__.startswith("lookalike_user_"))
    return flow, sys.modules[custom.__module__]


def pod(name: str, uses: str, params: str | None = None, **settings: object) -> str:
    """One pod of a flow, as a line of YAML; ``params`` is its ``with:`` mapping."""
    fields = {"uses": uses, "py_modules": "executors.py", **settings}
    if params is not None:
        fields["with"] = params
    return f"  {name}: {{{', '.join(f'{k}: {v}' for k, v in fields.items())}}}\n"


def requests_of(n: int, docs: int, kind: str = "index", **parameters: object) -> list[Request]:
    return [
        Request(kind, [Document(id=f"doc-{r}-{i}") for i in range(docs)], parameters={"n": r, **parameters})
        for r in range(n)
    ]


def test_a_linear_flow_processes_every_document_of_every_request(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "prefetch: 4\npods:\n"
        + pod("first", "Record", parallel=2)
        + pod("second", "Record", parallel=3, params="{jitter_ms: 2}")
        + pod("third", "Record"),
    )
    sent = requests_of(40, docs=5)
    with LocalRuntime(flow, None, cores=4) as runtime:
        workers = [t for t in threading.enumerate() if t.name.split("/")[0] in ("first", "second", "third")]
        assert sorted(t.name for t in workers) == sorted(  # one thread per replica, named pod/shard/replica
            ["first/s0/r0", "first/s0/r1", "second/s0/r0", "second/s0/r1", "second/s0/r2", "third/s0/r0"]
        )
        done = list(runtime.run(sent))
    assert not any(t.is_alive() for t in workers)  # all stopped on close

    assert [r.parameters["n"] for r in done] == list(range(40))  # in submission order
    for request, original in zip(done, sent, strict=True):
        assert request.id == original.id
        assert [d.id for d in request.docs] == [d.id for d in original.docs]
        for doc in request.docs:
            assert doc.error is None
            assert doc.tags == [("first", 0.0), ("second", 0.0), ("third", 0.0)]
    handled = [(pod_name, request_id) for pod_name, _, _, request_id, _ in mod.CALLS]
    assert sorted(handled) == sorted((p, r.id) for p in ("first", "second", "third") for r in sent)
    # Every replica was built and opened, and closed again at the end.
    replicas = [("first", 0, 0), ("first", 0, 1), ("second", 0, 0), ("second", 0, 1), ("second", 0, 2)]
    assert sorted(mod.OPENED) == sorted(mod.CLOSED) == sorted([*replicas, ("third", 0, 0)])


def test_replicas_run_concurrently(tmp_path):
    # Four replicas, eight requests in flight: the barrier opens only if four handlers are inside at
    # once. Were the replicas serialised, it would break after its timeout and fail the documents.
    flow, mod = make_flow(tmp_path, "prefetch: 8\npods:\n" + pod("meet", "Rendezvous", parallel=4))
    mod.BARRIER = threading.Barrier(4, timeout=WAIT_S)
    with LocalRuntime(flow, None) as runtime:
        futures = [runtime.submit(r) for r in requests_of(8, docs=2)]
        done = [f.result(timeout=2 * WAIT_S) for f in futures]
    assert [d.error for r in done for d in r.docs] == [None] * 16
    assert not mod.BARRIER.broken
    assert {replica for _, _, replica, _, _ in mod.CALLS} == {0, 1, 2, 3}


def test_backpressure_keeps_at_most_prefetch_requests_in_flight(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "prefetch: 3\npods:\n"
        + pod("enter", "Enter", parallel=4, params="{fill: 3}")
        + pod("work", "Record", parallel=4, params="{jitter_ms: 1}")
        + pod("leave", "Leave", parallel=4),
    )
    with LocalRuntime(flow, None) as runtime:
        done = list(runtime.run(requests_of(50, docs=2)))
    assert len(done) == 50 and all(d.error is None for r in done for d in r.docs)
    assert mod.FILLED  # three requests were in flight at once...
    assert mod.MOST_INSIDE == 3  # ...and never a fourth
    assert mod.INSIDE == set()


def test_shards_polling_any_split_documents_by_shard_for(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "pods:\n" + pod("spread", "Record", shards=3, parallel=2) + pod("after", "Record"),
    )
    sent = requests_of(12, docs=10)
    with LocalRuntime(flow, None) as runtime:
        done = list(runtime.run(sent))

    seen_by_shard: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    for pod_name, shard, _, _, doc_ids in mod.CALLS:
        if pod_name == "spread":
            assert all(shard_for(i, 3) == shard for i in doc_ids), (shard, doc_ids)
            seen_by_shard[shard].update(doc_ids)
    everything = {d.id for r in sent for d in r.docs}
    assert all(seen_by_shard.values())  # the ids do spread over every shard
    assert set.union(*seen_by_shard.values()) == everything
    assert sum(len(s) for s in seen_by_shard.values()) == len(everything)  # each doc on exactly one shard

    assert [r.parameters["n"] for r in done] == list(range(12))
    for request, original in zip(done, sent, strict=True):
        ids = [d.id for d in request.docs]
        assert sorted(ids) == sorted(d.id for d in original.docs)  # every doc, once
        for doc in request.docs:
            assert doc.error is None
            assert doc.tags == [("spread", float(shard_for(doc.id, 3))), ("after", 0.0)]


def test_shards_polling_all_see_every_document_and_merge_to_the_exact_top_k(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "pods:\n"
        + pod("chunker", "Chunker", params="{per_doc: 3}")
        + pod("search", "ShardMatches", shards=3, polling="all", parallel=2, params="{k: 4}")
        + pod("after", "Record"),
    )
    sent = requests_of(10, docs=6, kind="search")
    with LocalRuntime(flow, None) as runtime:
        done = list(runtime.run(sent))

    for shard in range(3):
        seen = [(r, ids) for p, s, _, r, ids in mod.CALLS if p == "search" and s == shard]
        assert sorted(seen) == sorted((r.id, [d.id for d in r.docs]) for r in sent)  # every doc, in order

    for request, original in zip(done, sent, strict=True):
        assert [d.id for d in request.docs] == [d.id for d in original.docs]
        for doc in request.docs:
            assert doc.error is None and doc.tags == [("after", 0.0)]
            assert [c.kind for c in doc.chunks] == ["part0", "part1", "part2"]
            for j, chunk in enumerate(doc.chunks):
                found = [m for shard in range(3) for m in mod.fake_matches(shard, doc.id, j, 4)]
                best = sorted(found, key=lambda m: (-m.score, m.chunk_id))[:4]
                assert chunk.matches == best
                # Exact: nothing left out scores higher than the worst match kept.
                assert all(m.score <= best[-1].score for m in found if m not in best)


def test_each_shard_of_polling_all_gets_the_request_as_it_left_the_pod_before(tmp_path):
    # The copies for shards 1.. must be taken before shard 0 is handed the original: otherwise shard
    # 0 can write into the documents while they are being copied, and the other shards receive its
    # matches. A large request makes the copying outlast the interpreter's thread switch interval.
    flow, mod = make_flow(
        tmp_path,
        "pods:\n" + pod("chunker", "Chunker") + pod("search", "AppendMatches", shards=2, polling="all"),
    )
    with LocalRuntime(flow, None) as runtime:
        done = [f.result(timeout=WAIT_S) for f in [runtime.submit(r) for r in requests_of(2, 3000, "search")]]
    assert mod.ARRIVED_WITH_MATCHES == 0
    assert all([m.chunk_id for m in c.matches] == [0, 1] for r in done for d in r.docs for c in d.chunks)


def test_a_join_merges_both_branches_without_duplicating_earlier_chunks(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "pods:\n"
        + pod("before", "Chunker")
        + pod("a", "SetField", needs="before", parallel=2, params="{field: width}")
        + pod("b", "SetField", needs="before", params="{field: height}")
        + "  join: {uses: _merge, needs: [a, b]}\n",
    )
    sent = requests_of(15, docs=4)
    with LocalRuntime(flow, None) as runtime:
        done = list(runtime.run(sent))

    assert [r.parameters["n"] for r in done] == list(range(15))
    for request, original in zip(done, sent, strict=True):
        assert [d.id for d in request.docs] == [d.id for d in original.docs]
        for doc in request.docs:
            assert doc.error is None
            assert doc.width == zlib.crc32(f"width{doc.id}".encode()) % 1000
            assert doc.height == zlib.crc32(f"height{doc.id}".encode()) % 1000
            assert sorted(c.kind for c in doc.chunks) == ["a", "b", "part0"]
            assert len({c.uid for c in doc.chunks}) == 3
    branches = sorted((p, r) for p, _, _, r, _ in mod.CALLS)
    assert branches == sorted((p, r.id) for p in ("a", "b") for r in sent)


def test_a_join_of_two_roots_gets_the_input_on_both(tmp_path):
    flow, _ = make_flow(
        tmp_path,
        "pods:\n"
        + pod("a", "SetField", params="{field: width}")
        + pod("b", "SetField", needs="gateway", params="{field: size}")
        + "  join: {uses: _merge, needs: [a, b]}\n",
    )
    assert flow.roots == ["a", "b"]
    with LocalRuntime(flow, None) as runtime:
        done = list(runtime.run(requests_of(5, docs=3)))
    for doc in (d for r in done for d in r.docs):
        assert doc.width is not None and doc.size is not None
        assert sorted(c.kind for c in doc.chunks) == ["a", "b"]


def test_an_executor_that_raises_fails_only_its_requests(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "prefetch: 4\npods:\n" + pod("first", "Record") + pod("risky", "Fail", parallel=2) + pod("last", "Record"),
    )
    sent = [
        Request("index", [Document(id=f"doc-{n}-{i}") for i in range(3)], parameters={"n": n, "boom": n % 3 == 0})
        for n in range(12)
    ]
    with LocalRuntime(flow, None) as runtime:
        futures = [runtime.submit(r) for r in sent]
        done = [f.result(timeout=WAIT_S) for f in futures]
        for request in done:
            n = request.parameters["n"]
            for doc in request.docs:
                if n % 3 == 0:
                    assert doc.error == f"risky (Fail) failed: RuntimeError: request {n} went boom"
                    assert doc.error_reason == "executor error"
                    assert doc.tags == [("first", 0.0)]  # later pods skip a failed document
                else:
                    assert doc.error is None
                    assert doc.tags == [("first", 0.0), ("last", 0.0)]

        # The runtime goes on working, and BadInput keeps its reason.
        later = [runtime.submit(r) for r in requests_of(3, docs=2, bad=True) + requests_of(3, docs=2)]
        results = [f.result(timeout=WAIT_S) for f in later]
    for doc in (d for r in results[:3] for d in r.docs):
        assert doc.error == "risky: cannot read it" and doc.error_reason == "truncated image"
    assert all(d.error is None for r in results[3:] for d in r.docs)
    assert len([c for c in mod.CALLS if c[0] == "last"]) == 12 + 6  # the failed requests still reached it


def test_a_failing_open_makes_start_raise_and_leaves_no_threads(tmp_path):
    flow, mod = make_flow(
        tmp_path,
        "pods:\n" + pod("first", "Record", parallel=2) + pod("model", "OpenFails", parallel=2) + pod("last", "Record"),
    )
    runtime = LocalRuntime(flow, None)
    with pytest.raises(LookalikeError, match=r"^pod model \(OpenFails\) failed to open: OSError: weights\.onnx"):
        runtime.start()
    left = [t.name for t in threading.enumerate() if t.name.split("/")[0] in ("first", "model", "last")]
    assert left == []  # every worker thread stopped
    # What did open is closed again.
    assert sorted(mod.CLOSED) == sorted(mod.OPENED) == [("first", 0, 0), ("first", 0, 1), ("last", 0, 0)]
    with pytest.raises(RuntimeError, match="start the runtime first"):
        runtime.submit(requests_of(1, docs=1)[0])


def test_parallel_replicas_give_the_same_results_as_one(tmp_path):
    def outcome(parallel: int) -> list[tuple]:
        flow, _ = make_flow(
            tmp_path / f"p{parallel}",
            "prefetch: 6\npods:\n"
            + pod("chunker", "Chunker", parallel=parallel, params="{per_doc: 2}")
            + pod("record", "Record", parallel=parallel, params="{jitter_ms: 3}")
            + pod("sized", "SetField", parallel=parallel, params="{field: width}")
            + pod("fail", "Fail", parallel=parallel),
        )
        rng = random.Random(7)
        sent = [
            Request("index", [Document(id=f"d{rng.randrange(10**6)}") for _ in range(rng.randint(1, 6))], {"n": n})
            for n in range(30)
        ]
        sent[11].parameters["boom"] = True
        with LocalRuntime(flow, None) as runtime:
            return [
                (
                    r.parameters["n"],
                    [(d.id, d.width, d.tags, [c.kind for c in d.chunks], d.error) for d in r.docs],
                )
                for r in runtime.run(sent)
            ]

    one, four = outcome(1), outcome(4)
    assert [n for n, _ in one] == list(range(30))
    assert four == one


def test_what_branches_staged_in_other_processes_reaches_one_commit():
    """In one process a request's branches share their staged writes; across processes (Ray actors)
    each branch and each shard comes back with its own copy, and the join must take in them all."""
    import pickle

    from lookalike.flow.runtime import concat_shards, merge_requests

    def shipped(request: Request) -> Request:  # what an actor hands back: a copy of its own
        return pickle.loads(pickle.dumps(request))

    request = Request("index", [Document(id="a"), Document(id="b")])
    shard0, shard1 = (
        shipped(dataclasses.replace(request, docs=[request.docs[0]])),
        shipped(dataclasses.replace(request, docs=[request.docs[1]])),
    )
    shard0.staged.vectors[("a", 0)] = []
    shard1.staged.vectors[("b", 1)] = []
    vectors = concat_shards([shard0, shard1])
    documents = shipped(request)
    documents.staged.doc_ids.extend(["a", "b"])
    joined = merge_requests([documents, vectors])
    assert joined.staged.doc_ids == ["a", "b"]
    assert joined.staged.vectors == {("a", 0): [], ("b", 1): []}
    # In one process the branches share one StagedWrites: taking it in again duplicates nothing.
    same = request.fork()
    request.staged.doc_ids.append("a")
    assert merge_requests([request, same]).staged.doc_ids == ["a"]
