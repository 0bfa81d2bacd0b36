"""Executors as network services: `lookalike executor serve USES`, and the pods that call them.

The service runs one executor (a built-in, a class from ``py_modules``, or an executor YAML) on a
port. Requests travel as :mod:`lookalike.wire` frames (raw bytes for tensors and embeddings):

- ``GET /healthz``: the process is up; ``GET /readyz``: the executor is open;
- ``GET /info``: the handshake: which request kinds it handles, its parameters, and what a flow
  checks before using it (its model's fingerprint, the preprocessing it needs, its vectors);
- ``POST /handle``: one request frame in, the handled request frame out.

A pod with ``host``/``port`` (or ``hosts``) runs a :class:`RemoteExecutor` in its place: the flow
learns the executor's facts from the handshake, so a remote encoder that is not the workspace's is
refused like a local one. Executors that own a workspace's state (vector shards, the doc store)
stay in the flow's process.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from lookalike.document import Request, StagedWrites
from lookalike.errors import POD_FAILURE, BadInput, ClusterError, ConfigError
from lookalike.executors.base import Executor, Preprocessing
from lookalike.version import __version__
from lookalike.wire import CONTENT_TYPE, MAGIC, decode, encode

if TYPE_CHECKING:
    from starlette.requests import Request as HttpRequest
    from starlette.responses import Response

# A request that could not be sent (no connection: the service restarting, say) is tried again
# this often, with this pause growing each time. One that reached the service is never repeated.
CONNECT_RETRIES = 3
RETRY_PAUSE_S = 0.5
HANDSHAKE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# The largest request a service reads: 16 tensors of 3x224x224 float32 are 9.2 MB.
MAX_FRAME_BYTES = 1 << 30
HANDSHAKE_KEYS = ("uses", "class", "with", "handles", "fingerprint", "wire")


def handshake(executor: Executor, uses: str) -> dict[str, Any]:
    """What a service tells a flow about its executor (GET /info)."""
    cls, params = type(executor), executor.params
    pre = cls.preprocessing_of(params)
    space = cls.vector_space_of(params)
    return {
        "uses": uses,
        "class": cls.__name__,
        "with": params.model_dump(mode="json"),
        "handles": sorted(cls.handlers),
        "fingerprint": cls.fingerprint_of(params),
        "preprocessing": {"size": pre.size} if pre else None,
        "preprocessing_fingerprint": cls.preprocessing_fingerprint(params),
        "vector_space": list(space) if space else None,
        "other_spaces": {name: list(made) for name, made in cls.other_spaces_of(params).items()},
        "lookalike_version": __version__,
        "wire": MAGIC.decode(),
    }


class _ServedExecutor:
    """What a service's routes share: its executor, the handshake and whether it is open. Requests
    run one at a time, because an executor is not thread-safe (a pod scales by replicas instead)."""

    def __init__(self, executor: Executor, uses: str):
        self.executor = executor
        self.info = handshake(executor, uses)
        self.ready = False
        self.lock = threading.Lock()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(self.executor.open)
        self.ready = True
        try:
            yield
        finally:
            self.ready = False
            await run_in_threadpool(self.executor.close)

    async def healthz(self, request: HttpRequest) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"ok": True})

    async def readyz(self, request: HttpRequest) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

    async def describe(self, request: HttpRequest) -> Response:
        from starlette.responses import JSONResponse

        return JSONResponse(self.info)

    def run(self, frame: bytes) -> bytes:
        req = decode(frame)
        with self.lock:
            self.executor.handle(req)  # the flow's runtime turns an exception into per-document failures
        return encode(req)

    async def handle(self, request: HttpRequest) -> Response:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, Response

        length = int(request.headers.get("content-length") or 0)
        if length > MAX_FRAME_BYTES:
            message = f"a request of {length} bytes; at most {MAX_FRAME_BYTES} are read"
            return JSONResponse({"error": {"type": "BadInput", "message": message}}, status_code=413)
        body = await request.body()
        try:
            out = await run_in_threadpool(self.run, body)
        except BadInput as e:
            return JSONResponse({"error": {"type": "BadInput", "message": _line(e)}}, status_code=400)
        except Exception as e:  # noqa: BLE001 - the executor's failure, reported to the flow that sent it
            return JSONResponse({"error": {"type": type(e).__name__, "message": _line(e)}}, status_code=500)
        return Response(out, media_type=CONTENT_TYPE)


def create_service_app(executor: Executor, uses: str) -> Any:
    """The ASGI app serving ``executor`` (opened on startup, closed on shutdown)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    served = _ServedExecutor(executor, uses)
    return Starlette(
        routes=[
            Route("/healthz", served.healthz),
            Route("/readyz", served.readyz),
            Route("/info", served.describe),
            Route("/handle", served.handle, methods=["POST"]),
        ],
        lifespan=served.lifespan,
    )


def need_httpx() -> ModuleType:
    """httpx, the HTTP client of the pods that call a service (``host``/``port``, ``docker://``): an
    optional extra, so a one-line error naming it when it is missing."""
    try:
        import httpx
    except ImportError as e:
        raise ConfigError(
            "pods that call an executor service (host/port or docker://) need httpx: pip install 'lookalike[remote]'"
        ) from e
    return httpx


def fetch_handshake(pod: str, address: str) -> dict[str, Any]:
    """GET /info of the service at ``address`` (``http://HOST:PORT``), or a ClusterError naming the pod."""
    httpx = need_httpx()

    try:
        r = httpx.get(f"{address}/info", timeout=HANDSHAKE_TIMEOUT_S, trust_env=False)
        r.raise_for_status()
        info = r.json()
    except httpx.InvalidURL as e:
        raise ConfigError(f"pod {pod}: {address} is not an address ({e})") from e
    except httpx.HTTPError as e:
        raise ClusterError(f"pod {pod}: no executor service at {address} ({_why(e)})") from e
    except ValueError as e:
        raise ClusterError(f"pod {pod}: {address} is not a lookalike executor service") from e
    if not isinstance(info, dict) or any(k not in info for k in HANDSHAKE_KEYS):
        raise ClusterError(f"pod {pod}: {address} is not a lookalike executor service")
    if info.get("wire") != MAGIC.decode():
        raise ClusterError(
            f"pod {pod}: the service at {address} runs lookalike {info.get('lookalike_version', '?')}, which speaks "
            f"{info.get('wire')} to flows, not {MAGIC.decode()}: run the same lookalike version on both sides"
        )
    return info


def _line(e: BaseException, limit: int = 300) -> str:
    """An error's first line, cut to ``limit`` characters (onnxruntime's and pydantic's run long)."""
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


def _why(e: Exception) -> str:
    cause = e.__cause__ or e.__context__
    text = str(cause or e) or type(e).__name__
    return text.splitlines()[0][:200]


class RemoteExecutor(Executor):
    """Stands for an executor that runs as a service: :func:`remote_executor` makes a subclass per
    pod, whose class facts (fingerprint, preprocessing, vectors) are the service's handshake."""

    info: ClassVar[dict[str, Any]] = {}
    addresses: ClassVar[list[str]] = []
    timeout: ClassVar[float] = 120.0
    pod_name: ClassVar[str] = "pod"

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        return cls.info.get("fingerprint")

    @classmethod
    def preprocessing_of(cls, params: BaseModel) -> Preprocessing | None:
        pre = cls.info.get("preprocessing")
        return Preprocessing(int(pre["size"])) if pre else None

    @classmethod
    def preprocessing_fingerprint(cls, params: BaseModel) -> str | None:
        return cls.info.get("preprocessing_fingerprint")

    @classmethod
    def follow_preprocessing(cls, params: BaseModel, wanted: Preprocessing, pod: str, encoder: str) -> BaseModel:
        """A preprocessing service cannot be told another size from here: one that makes another
        than the encoder downstream needs is refused."""
        size = (cls.info.get("with") or {}).get("size")
        if isinstance(size, int) and size != wanted.size:
            raise ConfigError(
                f"pod {pod}'s service makes {size} px inputs, but {encoder} needs {wanted.size}: "
                f"serve it with --with '{{\"size\": {wanted.size}}}'"
            )
        return params

    @classmethod
    def vector_space_of(cls, params: BaseModel) -> tuple[int, str] | None:
        space = cls.info.get("vector_space")
        return (int(space[0]), str(space[1])) if space else None

    @classmethod
    def other_spaces_of(cls, params: BaseModel) -> dict[str, tuple[str, int, str]]:
        spaces = cls.info.get("other_spaces") or {}
        return {name: (str(fp), int(dim), str(metric)) for name, (fp, dim, metric) in spaces.items()}

    def open(self) -> None:
        httpx = need_httpx()

        self.address = self.addresses[self.context.replica % len(self.addresses)]
        timeout = httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT_S, self.timeout))
        self.client = httpx.Client(base_url=self.address, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def handle(self, request: Request) -> None:
        if request.kind not in self.handlers:
            return
        httpx = need_httpx()

        # The staged writes stay here: a service never stages (it owns no workspace state), and
        # another branch of this request may be staging into them right now.
        frame = encode(dataclasses.replace(request, staged=StagedWrites()))
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                r = self.client.post("/handle", content=frame, headers={"content-type": CONTENT_TYPE})
                break
            except httpx.ConnectError as e:  # never reached the service: safe to send again
                if attempt == CONNECT_RETRIES:
                    return self._unreachable(request, _why(e))
                time.sleep(RETRY_PAUSE_S * (attempt + 1))
            except httpx.TimeoutException:
                return self._unreachable(request, f"no answer within {self.timeout:g}s")
            except httpx.TransportError as e:  # the service went away mid-request: not repeated
                return self._unreachable(request, _why(e))
        if r.status_code != 200:
            try:
                error = r.json()["error"]
                message = f"{error['type']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {r.status_code}"
            raise RuntimeError(f"the service at {self.address} failed: {message}")
        try:
            done = decode(r.content)
        except BadInput as e:
            raise RuntimeError(f"the service at {self.address} answered with {e}") from e
        request.docs = done.docs
        request.parameters = done.parameters

    def _unreachable(self, request: Request, why: str) -> None:
        for d in request.live_docs:
            d.fail(f"pod {self.pod_name} ({self.address}) is unreachable: {why}", POD_FAILURE)


def remote_executor(pod: str, info: dict[str, Any], addresses: list[str], timeout: float) -> type[Executor]:
    """The executor class of pod ``pod``, whose executor runs at ``addresses``."""
    handles = [k for k in info.get("handles", []) if k in ("index", "search", "delete")]
    attrs = {
        "info": info,
        "addresses": addresses,
        "timeout": timeout,
        "pod_name": pod,
        "handlers": {kind: "handle" for kind in handles},
        "__doc__": f"{info.get('class', 'executor')} at {', '.join(addresses)}",
    }
    return type(f"Remote{info.get('class', 'Executor')}", (RemoteExecutor,), attrs)


def serve_check(cls: type[Executor]) -> None:
    """Refuse executors that own a workspace's state (they stay in the flow's process), and pods
    that are themselves elsewhere (a service, a container)."""
    if issubclass(cls, RemoteExecutor):
        raise ConfigError("executor serve runs an executor here; a service or a container image is already one")
    if cls.stores_vectors or cls.stores_documents:
        raise ConfigError(
            f"{cls.__name__} owns a workspace's state (vector shards or the doc store); it runs in the "
            "flow's process, not as a service"
        )
