"""Executors: small classes whose methods handle a batch of documents for one kind of request.

    class ImageFlipper(Executor):
        class Params(Executor.Params):
            mirror: bool = True

        @requests(on="index")
        def flip(self, docs, request):
            ...

``Params`` is validated from the flow's ``with:`` and forbids unknown keys. Handlers are
registered when the class is created, and a handler with the wrong signature fails right there,
at import, not in the middle of a run. Heavy resources are opened in :meth:`open` and released in
:meth:`close`; each replica builds its own executor from a factory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from lookalike.document import REQUEST_KINDS, Request, RequestKind
from lookalike.errors import ConfigError
from lookalike.settings import Options

if TYPE_CHECKING:
    from lookalike.store.workspace import Workspace

_HANDLER_ATTR = "_lookalike_requests_on"


@dataclass(frozen=True)
class Preprocessing:
    """What an encoder needs as input: a ``size`` x ``size`` crop (see lookalike.images)."""

    size: int


def requests(on: RequestKind | Iterable[RequestKind]) -> Callable[[Callable], Callable]:
    """Mark a method as the handler of one or more request kinds ("index", "search", "delete")."""
    kinds = (on,) if isinstance(on, str) else tuple(on)
    for kind in kinds:
        if kind not in REQUEST_KINDS:
            raise TypeError(f"@requests(on={kind!r}): the request kinds are {', '.join(REQUEST_KINDS)}")

    def mark(fn: Callable) -> Callable:
        setattr(fn, _HANDLER_ATTR, kinds)
        return fn

    return mark


@dataclass
class ExecutorContext:
    """What the runtime tells an executor about where it runs."""

    pod: str = "executor"
    replica: int = 0
    replicas: int = 1
    shard: int = 0
    shards: int = 1
    space: str | None = None  # a pod that stores vectors: the vector space it holds (None: the first)
    threads: int = 1  # this replica's share of the cores, for thread pools such as onnxruntime's
    workspace: Workspace | None = None
    # What the executor is told (the model and dataset caches, ...): the flow's options.
    options: Options = field(default_factory=Options.from_env)
    # Set before close() when the run is being abandoned (interrupted, or stopped by a store error):
    # close quickly, without finishing work such as building and snapshotting an index.
    aborting: bool = False


class Executor:
    """Base class of every executor, built-in or from ``py_modules``."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")

    handlers: ClassVar[dict[str, str]] = {}
    # What a pod of this executor keeps, so a flow can say what its workspace must hold without
    # knowing executor classes: vectors (sharded; the workspace has one shard per pod shard), documents.
    stores_vectors: ClassVar[bool] = False
    stores_documents: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers = dict(getattr(cls, "handlers", {}))
        for name, member in cls.__dict__.items():
            kinds = getattr(member, _HANDLER_ATTR, None)
            if kinds is None:
                continue
            _check_handler(cls, name, member)
            for kind in kinds:
                handlers[kind] = name
        cls.handlers = handlers
        params = cls.__dict__.get("Params")
        if params is not None and not (isinstance(params, type) and issubclass(params, BaseModel)):
            raise TypeError(f"{cls.__name__}.Params must subclass Executor.Params (a pydantic model)")
        if params is not None and params.model_config.get("extra") != "forbid":
            raise TypeError(f"{cls.__name__}.Params must forbid extra keys: subclass Executor.Params")

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, context: ExecutorContext | None = None):
        if params is None or isinstance(params, dict):
            params = self.Params.model_validate(params or {})
        self.params = params
        self.context = context or ExecutorContext()

    def open(self) -> None:
        """Acquire heavy resources (model sessions, indexes, connections)."""

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    def commit(self, request: Request) -> None:
        """For executors that store documents (``stores_documents``): commit a finished index or
        delete request. The runtime calls it at the flow's end; failures go on the documents."""
        raise NotImplementedError(f"{type(self).__name__} stores no documents")

    @classmethod
    def fingerprint_of(cls, params: BaseModel) -> str | None:
        """What identifies the vectors this executor produces (encoders return their model's).

        A workspace records the index flow's fingerprints and refuses a query flow whose differ.
        It is computed from the parameters alone, before anything is opened.
        """
        return None

    @classmethod
    def preprocessing_of(cls, params: BaseModel) -> Preprocessing | None:
        """For encoders: the input the model needs (its size). A preprocessing pod upstream takes
        its settings from here, so changing the model changes the pixels it is fed."""
        return None

    @classmethod
    def follow_preprocessing(cls, params: BaseModel, wanted: Preprocessing, pod: str, encoder: str) -> BaseModel:
        """For preprocessing executors: ``params`` made to feed ``wanted`` (the input of the encoder
        pod ``encoder`` downstream). Raise ConfigError where the flow set something else."""
        return params

    @classmethod
    def preprocessing_fingerprint(cls, params: BaseModel) -> str | None:
        """For preprocessing executors: what identifies the pixels they hand the encoder."""
        return None

    @classmethod
    def other_spaces_of(cls, params: BaseModel) -> dict[str, tuple[str, int, str]]:
        """Spaces besides its main one that this executor also fills, each as (fingerprint,
        dimension, metric): the ImageEncoder with ``regions`` fills ``regions`` with region chunks
        (``Chunk.space``) from the same model pass. A pod storing such a space takes these."""
        return {}

    @classmethod
    def vector_space_of(cls, params: BaseModel) -> tuple[int, str] | None:
        """(dimension, metric) of the vectors this executor produces, for encoders: the workspace's
        shards are built for it. Metric "cosine" (inner product of normalised vectors, higher is
        closer) or "l2" (Euclidean distance, lower is closer)."""
        return None

    def handle(self, request: Request) -> None:
        """Run the handler for ``request.kind`` on the request's live documents, if there is one."""
        name = self.handlers.get(request.kind)
        if name is None:
            return
        live = request.live_docs
        method = getattr(self, name)
        if _wants_request(method):
            returned = method(live, request)
        else:
            returned = method(live)
        if returned is not None:
            kept = {id(d) for d in returned}
            failed = [d for d in request.docs if d.error is not None]
            dropped = [d for d in live if id(d) not in kept]
            for d in dropped:
                d.fail(f"dropped by {type(self).__name__}", "filtered")
            request.docs = list(returned) + failed + dropped

    def __enter__(self) -> Executor:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_handler(cls: type, name: str, fn: Any) -> None:
    if not callable(fn) or isinstance(fn, (staticmethod, classmethod)):
        raise TypeError(f"{cls.__name__}.{name}: @requests goes on a plain method")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    extra = [p for p in params if p not in positional]
    if len(positional) not in (2, 3) or extra:
        raise TypeError(
            f"{cls.__name__}.{name}{inspect.signature(fn)}: a handler takes (self, docs) or (self, docs, request)"
        )


def _wants_request(method: Callable) -> bool:
    return len(inspect.signature(method).parameters) == 2


# --- resolving `uses:` -------------------------------------------------------------------------

BUILTINS: dict[str, str] = {
    "ImageReader": "lookalike.executors.loader",
    "ImageNormalizer": "lookalike.executors.crafters",
    "ImageEncoder": "lookalike.executors.encoders",
    "ColorHistogramEncoder": "lookalike.executors.histogram",
    "VectorIndexer": "lookalike.executors.indexers",
    "DocIndexer": "lookalike.executors.indexers",
    "BestChunkRanker": "lookalike.executors.rankers",
    "FaceDetector": "lookalike.executors.faces",
    "FaceEncoder": "lookalike.executors.faces",
    "_merge": "lookalike.executors.merge",
}
MERGE = "_merge"
# Old names that still load, so flows saved in workspaces keep working.
ALIASES = {"MinRanker": "BestChunkRanker"}


def is_builtin(name: str) -> bool:
    return name in BUILTINS or name in ALIASES


def builtin(name: str) -> type[Executor]:
    name = ALIASES.get(name, name)
    module = importlib.import_module(BUILTINS[name])
    cls = getattr(module, "Merge" if name == MERGE else name)
    assert issubclass(cls, Executor)
    return cls


def load_py_module(path: Path) -> dict[str, type[Executor]]:
    """Import a user's Python file and return the executors it defines, by class name."""
    if not path.is_file():
        raise ConfigError(f"py_modules: {path} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"lookalike_user_{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"py_modules: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - any error in user code is reported as config
            del sys.modules[module_name]
            raise ConfigError(f"py_modules: importing {path} failed: {type(e).__name__}: {e}") from e
    return {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, Executor) and obj is not Executor
    }
