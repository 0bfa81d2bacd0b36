"""Requests as bytes, for executors that run as services: JSON for the structure, raw bytes for
arrays and blobs, never arrays as JSON lists and never pickle (a service must not run what a
peer sends it).

A frame is ``MAGIC``, the JSON header's length (4 bytes, big-endian), the header, then the
buffers back to back. In the header a buffer is ``{"$buf": i, "dtype": ..., "shape": [...]}`` (an
array) or ``{"$buf": i}`` (bytes), with the buffers' sizes in ``"buffers"``; the dataclasses of
:mod:`lookalike.document` are ``{"$t": name, ...fields}`` and tuples ``{"$tuple": [...]}``. Only
those classes can be made from a frame.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from typing import Any

import numpy as np

from lookalike.document import Chunk, Document, Match, Request, Result, StagedWrites
from lookalike.errors import BadInput

MAGIC = b"LKW2"  # 2: chunks carry their vector space (Chunk.space)
CONTENT_TYPE = "application/x-lookalike-request"
_TYPES: dict[str, type] = {c.__name__: c for c in (Request, Document, Chunk, Match, Result, StagedWrites)}
_DTYPES = {"float32", "float16", "float64", "uint8", "uint16", "int64", "int32", "bool"}
MAX_HEADER_BYTES = 64 << 20  # a header is ids, paths, tags and results: far less than this


def encode(request: Request) -> bytes:
    buffers: list[bytes | memoryview] = []
    sent: dict[int, int] = {}  # id(array) -> its buffer: an array referenced twice travels once
    keep: list[Any] = []  # the arrays behind ``sent``, alive until the frame is built

    def walk(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            if id(value) not in sent:
                array = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))  # native order
                keep.append(array)
                buffers.append(array.tobytes() if array.size == 0 else array.data.cast("B"))
                sent[id(value)] = len(buffers) - 1
            return {"$buf": sent[id(value)], "dtype": value.dtype.name, "shape": list(value.shape)}
        if isinstance(value, (bytes, bytearray)):
            buffers.append(bytes(value))
            return {"$buf": len(buffers) - 1}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out = {"$t": type(value).__name__}
            for f in dataclasses.fields(value):
                out[f.name] = walk(getattr(value, f.name))
            return out
        if isinstance(value, tuple):
            return {"$tuple": [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {k: walk(v) for k, v in value.items()}
            return {"$items": [[walk(k), walk(v)] for k, v in value.items()]}  # keys such as (doc id, slot)
        if isinstance(value, np.generic):
            return value.item()
        return value

    header = walk(request)
    header["buffers"] = [len(b) if isinstance(b, bytes) else b.nbytes for b in buffers]
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return b"".join([MAGIC, struct.pack(">I", len(head)), head, *buffers])


def decode(frame: bytes | memoryview) -> Request:
    """The request in ``frame``; BadInput (naming what is wrong) for anything that is not one."""
    view = memoryview(frame)
    header, offsets = _split(view)
    try:
        request = _Rebuilder(view, offsets).walk(header)
    except (TypeError, ValueError, IndexError, AttributeError, OverflowError, RecursionError) as e:
        raise BadInput(f"a request frame that does not describe a request: {e}", "bad frame") from e
    if not isinstance(request, Request):
        raise BadInput("a request frame that does not describe a request", "bad frame")
    return request


def _split(view: memoryview) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """A frame's parsed header and its buffers' (offset, size), each checked against the frame."""
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise BadInput("not a lookalike request frame", "bad frame")
    (size,) = struct.unpack(">I", view[4:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(view):
        raise BadInput(f"a request frame whose header length ({size} bytes) does not fit it", "bad frame")
    try:
        header = json.loads(bytes(view[8 : 8 + size]), parse_constant=_no_constants)
        if not isinstance(header, dict):
            raise ValueError("the header is not an object")
        sizes = header.pop("buffers")
        if not isinstance(sizes, list) or not all(type(n) is int and n >= 0 for n in sizes):
            raise ValueError("buffer sizes must be whole numbers of bytes")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise BadInput(f"a request frame with a broken header: {e}", "bad frame") from e
    offsets, at = [], 8 + size
    for n in sizes:
        offsets.append((at, n))
        at += n
    if at != len(view):
        raise BadInput(f"a request frame of {len(view)} bytes whose header describes {at}", "bad frame")
    return header, offsets


class _Rebuilder:
    """Makes objects of a parsed header. Each buffer becomes one object, however often the header
    refers to it, as :func:`encode` sent an array referenced twice once."""

    def __init__(self, view: memoryview, offsets: list[tuple[int, int]]):
        self.view = view
        self.offsets = offsets
        self.made: dict[int, Any] = {}  # buffer index -> what it became

    def walk(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "$buf" in value:
            return self._buffer(value)
        if "$tuple" in value:
            return tuple(self.walk(v) for v in value["$tuple"])
        if "$items" in value:
            return {self.walk(k): self.walk(v) for k, v in value["$items"]}
        if "$t" in value:
            cls = _TYPES.get(value["$t"])
            if cls is None:
                raise BadInput(f"a {value['$t']!r} in a request frame", "bad frame")
            return cls(**{k: self.walk(v) for k, v in value.items() if k != "$t"})
        return {k: self.walk(v) for k, v in value.items()}

    def _buffer(self, value: dict[str, Any]) -> Any:
        index = value["$buf"]
        if type(index) is not int or not 0 <= index < len(self.offsets):
            raise ValueError(f"no buffer {index!r}")
        if index in self.made:
            return self.made[index]
        start, n = self.offsets[index]
        raw = self.view[start : start + n]
        if "dtype" not in value:
            self.made[index] = bytes(raw)
        elif value["dtype"] not in _DTYPES:
            raise BadInput(f"an array of dtype {value['dtype']!r} in a request frame", "bad frame")
        else:
            self.made[index] = np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).copy()
        return self.made[index]


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a number a request carries")
