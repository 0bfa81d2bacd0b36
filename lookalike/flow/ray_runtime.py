"""The Ray runtime: the same flow YAML on a Ray cluster, each pod replica (and shard) an actor.

The driver (the `lookalike` process) keeps the flow's routing, joins, shard merges and the
``prefetch`` bound (:class:`lookalike.flow.runtime.Runtime`); the actors do the work:

- Every replica of every shard of a pod is one :class:`LookalikePod` actor, with the pod's
  ``resources`` (``num_cpus``, ``num_gpus``, ``memory``). The pods that open the workspace run on
  the driver's node; the others' actors are dealt round-robin over the alive nodes big enough for
  them (by node id, starting after the driver's node), each with a soft node affinity, so Ray
  places it elsewhere only if that node dies or cannot take it (one that reserves nothing, the
  default, reserves a token MiB of memory: Ray ignores the affinity of an actor that reserves
  nothing); a pod with
  ``custom`` resources is placed by Ray (``SPREAD``). It gets a factory, never a live object: the
  flow's text, and the pod's name, shard and replica. It builds its own executor and, for the pods
  that keep state (the shard pods and the doc indexer), opens the workspace itself, by its path.
- ``parallel`` replicas share a pod's load: a request goes to the replica with the fewest in flight.
- Requests travel as pickles, so arrays go as raw bytes (pickle protocol 5), never as JSON lists.
- Data movement: a loader reads the files where it runs, so image folders and the workspace must
  be at the same path on every node (NFS, or an object store mounted as files); images sent as
  bytes (uploads, queries) travel inside the request.
- Faults: an actor that dies (its process, or its whole node) is restarted by Ray, on another node
  if need be, and its requests are retried there; an executor's own error fails that request's
  documents as usual. When Ray gives up, the documents fail as "pod died", naming the pod, and an
  indexing run stops once what was done is committed (re-running finishes the job).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.document import Request
from lookalike.errors import POD_FAILURE, ClusterError, ConfigError, LookalikeError
from lookalike.executors.base import Executor, ExecutorContext
from lookalike.flow.config import load_flow_text
from lookalike.flow.graph import Flow, Pod
from lookalike.flow.runtime import Runtime, open_failure, run_handler
from lookalike.settings import Options, quiet_ray_usage_stats, ray_variables
from lookalike.store.workspace import Workspace

# How often Ray restarts a dead actor, and retries the requests it had, before the run gives up on
# the pod: enough for a lost node's actors to come back on the others.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3
# How long the pods may take to be placed on the cluster (started as processes). Opening them is
# not limited: a shard pod may rebuild its index, or wait for another holder's rebuild.
PLACE_TIMEOUT_S = 300.0
# Closing a shard pod may build its new index type (minutes for a million vectors).
CLOSE_TIMEOUT_S = 3600.0


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--runtime ray needs Ray on this machine and every node: pip install 'lookalike[ray]'") from e
    return ray


@dataclass(frozen=True)
class PodSpec:
    """What an actor needs to build its pod: a factory, not a live object."""

    flow_text: str
    flow_file: str
    base_dir: str
    env: dict[str, str]  # the driver's environment, for the flow's ${VAR} substitution
    options: Options  # the driver's options (the model cache, ...), for the pod's executor
    vector_shards: dict[str, int] | None  # the workspace's shards by space (a query flow's shard pods follow it)
    pod: str
    shard: int
    replica: int
    threads: int
    workspace: str | None
    writer: bool


class LookalikePod:
    """One replica of one shard of a pod, as a Ray actor (made remote by :class:`RayRuntime`).

    Created cheaply (so placement is quick to confirm); the executor is opened by :meth:`open`,
    and again on the first request after Ray restarts the actor (a restart runs only __init__)."""

    def __init__(self, spec: PodSpec):
        self.spec = spec
        self.label = f"{spec.pod}/s{spec.shard}/r{spec.replica}"
        self.workspace: Workspace | None = None
        self.executor: Executor | None = None
        self.error: tuple[str, str] | None = None  # (type, message) if the pod could not open

    def ready(self) -> str:
        """The node this actor was placed on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def open(self) -> tuple[str, str] | None:
        """Build and open the executor; why it could not, or None."""
        if self.executor is not None or self.error is not None:
            return self.error
        spec = self.spec
        try:
            loaded = load_flow_text(spec.flow_text, spec.flow_file, Path(spec.base_dir), spec.env)
            flow = Flow(loaded, options=spec.options)
            if spec.vector_shards is not None:
                flow.set_vector_shards(spec.vector_shards)
            self.pod = flow.pods[spec.pod]
            cls = self.pod.executor
            if spec.workspace is not None and (cls.stores_vectors or cls.stores_documents):
                self.workspace = Workspace.open(spec.workspace, writer=spec.writer, create=False)
            context = ExecutorContext(
                pod=spec.pod,
                replica=spec.replica,
                replicas=self.pod.config.parallel,
                shard=spec.shard,
                shards=self.pod.config.shards,
                space=self.pod.config.space if cls.stores_vectors else None,
                threads=spec.threads,
                workspace=self.workspace,
                options=spec.options,
            )
            executor = cls(self.pod.params, context)
            executor.open()
            self.executor = executor
        except Exception as e:  # noqa: BLE001 - reported to the driver, which raises it there
            self.error = (type(e).__name__, str(open_failure(self.pod, e)) if hasattr(self, "pod") else str(e))
        return self.error

    def _failed(self, request: Request) -> Request | None:
        """``request`` with its documents failed, if this pod cannot work (it could not reopen)."""
        error = self.open()
        if error is None:
            return None
        for d in request.live_docs:
            d.fail(f"pod {self.label} could not reopen after a restart: {error[1]}", POD_FAILURE)
        return request

    def handle(self, request: Request) -> Request:
        failed = self._failed(request)
        if failed is not None:
            return failed
        assert self.executor is not None
        return run_handler(self.executor, self.pod, request)

    def commit(self, request: Request) -> Request:
        failed = self._failed(request)
        if failed is not None:
            return failed
        assert self.executor is not None
        self.executor.commit(request)
        return request

    def call(self, method: str) -> Any:
        error = self.open()
        if error is not None:
            raise _remote_error(*error)
        return getattr(self.executor, method)()

    def close(self, abort: bool = False) -> tuple[str, str] | None:
        """Close the executor (a shard pod brings its index up to date and snapshots it, unless
        the run is being abandoned)."""
        try:
            if self.executor is not None:
                self.executor.context.aborting = abort
                self.executor.close()
            return None
        except Exception as e:  # noqa: BLE001 - reported to the driver
            return (type(e).__name__, str(e))
        finally:
            if self.workspace is not None:
                self.workspace.close()


@dataclass
class _Replica:
    actor: Any
    label: str  # pod/sS/rR
    node: str = ""
    in_flight: int = 0


def connect(address: str | None) -> None:
    """Connect this process to the Ray cluster at ``address`` (once), or start a local one."""
    ray = _ray()
    if ray.is_initialized():
        return
    quiet_ray_usage_stats()
    if address is not None:
        _check_reachable(address)
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        kwargs["include_dashboard"] = False  # a cluster of our own, for this run
    try:
        with _quiet_stderr():
            ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ClusterError(f"cannot connect to {where}: {_short(e)}") from e


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, not after Ray's minute of retries, when nothing listens at a HOST:PORT head."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", or a ray:// client address: Ray resolves those itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {e.strerror or e}; is its head running "
            "(`ray start --head --port PORT`)?"
        ) from e


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Ray's C++ core writes its start-up warnings (how it found this host's address, say) straight
    to file descriptor 2; while connecting they go nowhere, so the CLI prints only its own lines.
    A failure to connect is still reported, as the exception."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class RayRuntime(Runtime):
    """Run a :class:`Flow` with every pod replica as a Ray actor."""

    def __init__(self, flow: Flow, workspace: Workspace | None = None, *, address: str | None = None, on_done=None):
        super().__init__(flow, on_done=on_done)
        self.workspace = workspace
        self.address = address
        self._replicas: dict[tuple[str, int], list[_Replica]] = {}
        self._load_lock = threading.Lock()
        self.run_id = uuid.uuid4().hex[:8]

    # --- lifecycle ----------------------------------------------------------------------------

    def _spec(self, pod: Pod, shard: int, replica: int) -> PodSpec:
        ws = self.workspace
        loaded = self.flow.loaded
        cpus = pod.config.resources.num_cpus
        return PodSpec(
            flow_text=loaded.text,
            flow_file=loaded.source.file,
            base_dir=str(loaded.base_dir),
            env={k: v for k, v in self.flow.options.flow_variables().items() if k in _referenced(loaded.text)},
            options=self.flow.options,
            vector_shards=ws.shards_by_space if ws is not None else None,
            pod=pod.name,
            shard=shard,
            replica=replica,
            threads=max(1, int(cpus)),
            workspace=str(ws.path.resolve()) if ws is not None else None,
            writer=bool(ws is not None and ws.writer),
        )

    def start(self) -> RayRuntime:
        from lookalike.executors.containers import is_container

        boxed = [p.name for p in self.flow.pods.values() if is_container(p.config.uses)]
        if boxed:
            raise ConfigError(
                f"pod {boxed[0]} runs a container image (uses: docker://...): that is the local runtime's; "
                "on Ray, give the pod resources, or serve it and point the pod at it with host/port"
            )
        connect(self.address)
        ray = _ray()
        try:
            self._create_actors(ray)
            everyone = [r for rs in self._replicas.values() for r in rs]
            refs = [r.actor.ready.remote() for r in everyone]
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=PLACE_TIMEOUT_S)
            if pending:
                stuck = [r.label for r, ref in zip(everyone, refs, strict=True) if ref in pending]
                raise ClusterError(
                    f"the Ray cluster did not place pod {stuck[0]} within {PLACE_TIMEOUT_S:.0f}s "
                    f"({len(stuck)} pods waiting): does it have the CPUs, GPUs, memory and custom "
                    "resources their `resources:` ask for?"
                )
            for r, node in zip(everyone, ray.get(refs), strict=True):
                r.node = node
            # Opened all at once; a shard pod may take long (a rebuild), so this is not timed.
            for failure in ray.get([r.actor.open.remote() for r in everyone]):
                if failure is not None:
                    raise _remote_error(*failure)
        except ray.exceptions.RayError as e:
            self._kill()
            raise ClusterError(f"a pod could not start on the Ray cluster: {_short(e)}") from e
        except BaseException:
            self._kill()
            raise
        self._started = True
        return self

    def _create_actors(self, ray: Any) -> None:
        actor_class = ray.remote(LookalikePod)
        here = ray.get_runtime_context().get_node_id()
        # Ray's SPREAD is best effort (it has put every actor on one node), so the stateless pods are
        # dealt out here instead; the node after the driver's comes first, so that even two actors
        # use two nodes.
        deal = _Deal(_round_robin_order(_alive_node_resources(ray), here))
        for pod in self.flow.pods.values():
            if pod.is_merge:
                continue
            for shard in range(pod.config.shards):
                replicas = []
                for replica in range(pod.config.parallel):
                    label = f"{pod.name}/s{shard}/r{replica}"
                    options = self._actor_options(pod, label, deal, here)
                    actor = actor_class.options(**options).remote(self._spec(pod, shard, replica))
                    replicas.append(_Replica(actor, label))
                self._replicas[(pod.name, shard)] = replicas

    def _actor_options(self, pod: Pod, label: str, deal: _Deal, here: str) -> dict[str, Any]:
        """How Ray places and runs one replica: its resources, its node, restarts, environment."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        res = pod.config.resources
        memory = int(res.memory or 0)
        strategy: Any = "SPREAD"  # Ray's call: only it knows who offers custom resources
        # SQLite's WAL needs every process that opens docs.sqlite on one host: the pods that open
        # the workspace run on this node unless `resources.custom` places them.
        opens_workspace = pod.executor.stores_vectors or pod.executor.stores_documents
        if opens_workspace and self.workspace is not None and not res.custom:
            strategy = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
        elif not res.custom:
            # Ray (2.60) ignores a soft node affinity for an actor that reserves nothing (it picks a
            # random node), and a hard one would keep it from coming back elsewhere when its node
            # is lost: such a pod reserves a token of memory, so that the deal holds.
            if not (res.num_cpus or res.num_gpus or memory):
                memory = PLACEMENT_MEMORY
            node = deal.next({"CPU": res.num_cpus, "GPU": res.num_gpus, "memory": float(memory)})
            if node is not None:  # soft: should that node die or not fit after all, Ray places it elsewhere
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
        options: dict[str, Any] = {
            "name": f"lookalike:{self.flow.name}:{self.run_id}:{label}",
            "num_cpus": res.num_cpus,
            "num_gpus": res.num_gpus,
            "scheduling_strategy": strategy,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": MAX_TASK_RETRIES,
            # The actors' environment: lookalike's settings (the model cache, say), never its token.
            "runtime_env": {"env_vars": self.flow.options.environment() | ray_variables()},
        }
        if memory:
            options["memory"] = memory
        if res.custom:
            options["resources"] = dict(res.custom)
        return options

    def _kill(self) -> None:
        ray = _ray()
        for rs in self._replicas.values():
            for r in rs:
                try:
                    ray.kill(r.actor)
                except Exception:  # noqa: BLE001 - gone already
                    pass
        self._replicas = {}
        self._started = False

    def close(self, abort: bool = False) -> None:
        """Close every pod (shard pods snapshot their indexes, unless ``abort``), then end the
        actors. The first failure to close is raised once all have closed."""
        if not self._replicas:
            return
        ray = _ray()
        everyone = [r for rs in self._replicas.values() for r in rs]
        errors: list[LookalikeError] = []
        try:
            refs = [r.actor.close.remote(abort) for r in everyone]
            for r, ref in zip(everyone, refs, strict=True):
                try:
                    failure = ray.get(ref, timeout=CLOSE_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError:
                    errors.append(ClusterError(f"pod {r.label} did not close within {CLOSE_TIMEOUT_S:.0f}s"))
                    continue
                except ray.exceptions.RayError as e:
                    errors.append(ClusterError(f"pod {r.label} died while closing: {_short(e)}"))
                    continue
                if failure is not None:
                    errors.append(_remote_error(*failure))
        finally:
            self._kill()
        if errors:
            raise errors[0]

    # --- moving requests ----------------------------------------------------------------------

    def _pick(self, pod_name: str, shard: int) -> _Replica:
        with self._load_lock:
            replica = min(self._replicas[(pod_name, shard)], key=lambda r: r.in_flight)
            replica.in_flight += 1
            return replica

    def _call(self, pod: Pod, shard: int, method: str, request: Request, then) -> None:
        replica = self._pick(pod.name, shard)
        try:
            future: Future = getattr(replica.actor, method).remote(request).future()
        except Exception as e:  # noqa: BLE001 - Ray could not even send it: the pod's failure
            with self._load_lock:
                replica.in_flight -= 1
            for d in request.live_docs:
                d.fail(f"pod {replica.label} ({pod.uses}) is unreachable: {_short(e)}", POD_FAILURE)
            then(request)
            return

        def done(f: Future) -> None:
            with self._load_lock:
                replica.in_flight -= 1
            try:
                result = f.result()
            except Exception as e:  # noqa: BLE001 - Ray gave up on the actor: the pod, not the file
                for d in request.live_docs:
                    d.fail(f"pod {replica.label} ({pod.uses}) died: {_short(e)}", POD_FAILURE)
                result = request
            then(result)

        future.add_done_callback(done)

    def _deliver(self, pod: Pod, shard: int, request: Request) -> None:
        self._call(pod, shard, "handle", request, lambda result: self._after_pod(pod, shard, result))

    def _commit(self, request: Request) -> None:
        assert self.committer is not None
        self._call(self.committer, 0, "commit", request, self._resolve)

    def ask(self, pod_name: str, method: str) -> list[Any]:
        ray = _ray()
        shards = sorted(s for (name, s) in self._replicas if name == pod_name)
        refs = [self._replicas[(pod_name, s)][0].actor.call.remote(method) for s in shards]
        try:
            return list(ray.get(refs, timeout=60))
        except ray.exceptions.RayError as e:
            raise ClusterError(f"pod {pod_name} did not answer: {_short(e)}") from e

    def placement(self) -> dict[str, str]:
        """Each pod replica's node id (as Ray names nodes), by pod/sS/rR."""
        return {r.label: r.node for rs in self._replicas.values() for r in rs}


# A node that has just joined is listed alive a moment before the cluster counts its resources;
# dealt out then, it would get no pods for the whole run. Bounded: a node still silent after this is
# left to Ray (the pods dealt to the others still fall back to it, being soft).
NODE_RESOURCES_WAIT_S = 5.0
# What a stateless pod that reserves nothing reserves anyway, so that Ray honours the node it is
# dealt (see RayRuntime._actor_options): a MiB of memory, which no node misses and which, unlike a
# token share of a CPU, never leaves a pod that asks for whole CPUs without room.
PLACEMENT_MEMORY = 1 << 20


def _alive_node_resources(ray: Any, wait_s: float = NODE_RESOURCES_WAIT_S) -> dict[str, dict[str, float]]:
    """Each alive node's total resources, by node id, once the cluster's totals count them all."""
    deadline = time.monotonic() + wait_s
    while True:
        nodes = {n["NodeID"]: dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")}
        counted = ray.cluster_resources()
        summed: dict[str, float] = {}
        for resources in nodes.values():
            for key, value in resources.items():
                summed[key] = summed.get(key, 0.0) + value
        reported = all(nodes.values()) and all(counted.get(k, 0.0) >= v - 1e-6 for k, v in summed.items())
        if reported or time.monotonic() >= deadline:
            return {node: resources for node, resources in nodes.items() if resources}
        time.sleep(0.1)


def _round_robin_order(nodes: dict[str, dict[str, float]], driver: str) -> dict[str, dict[str, float]]:
    """``nodes`` in a stable order (by id) that starts after the driver's node and ends with it."""
    ids = sorted(nodes)
    if driver in ids:
        at = ids.index(driver) + 1
        ids = ids[at:] + ids[:at]
    return {node: nodes[node] for node in ids}


class _Deal:
    """Deals the stateless pods' replicas out to the nodes, in turn.

    A node takes a replica if its size fits what the replica reserves. Nodes with room left beside
    what this run already dealt them go first, so the deal never makes a pod wait on a full node
    while another has room; else any node big enough takes it (Ray then waits for room there, as it
    would for any pod). None: no node is big enough, and Ray decides."""

    def __init__(self, hosts: dict[str, dict[str, float]]):
        self.hosts = hosts
        self.taken: dict[str, dict[str, float]] = {node: {} for node in hosts}
        self.turn = 0

    def next(self, need: dict[str, float]) -> str | None:
        order = list(self.hosts)
        for room_left in (True, False):
            for step in range(len(order)):
                i = (self.turn + step) % len(order)
                node = order[i]
                size, used = self.hosts[node], self.taken[node]
                spare = {k: size.get(k, 0.0) - (used.get(k, 0.0) if room_left else 0.0) for k in need}
                if all(spare[k] >= v - 1e-9 for k, v in need.items() if v):
                    for k, v in need.items():
                        used[k] = used.get(k, 0.0) + v
                    self.turn = i + 1
                    return node
        return None


def _referenced(flow_text: str) -> set[str]:
    """The environment variables a flow's text substitutes (``${VAR}``): all an actor is given."""
    from lookalike.flow.config import _ENV

    return {m.group(1) for m in _ENV.finditer(flow_text)}


def _short(e: BaseException) -> str:
    """One line of a Ray error (they carry whole remote tracebacks)."""
    text = str(e).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"{type(e).__name__}: {first[:300]}"


def _remote_error(kind: str, message: str) -> LookalikeError:
    """An error a pod reported from its actor, as the same class here where it is one of ours."""
    import lookalike.errors as errors

    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, LookalikeError):
        return cls(message)
    return LookalikeError(message)
