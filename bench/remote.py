"""The remote hop: one batch of 16 images through the encoder pod in-process, and through the same
encoder served by `lookalike executor serve` on loopback, as a ratio.

    .venv/bin/python -m bench.remote [--rounds 30] [--json]

The 16 inputs are real photos (tuxpaint, fetched once) preprocessed as the flow does. Rounds
alternate in-process and remote, so both see the same machine; each side's encoder has the
machine's cores as its threads (the service's by default, the in-process one told so). Also
timed: encoding and decoding the request frame alone, and its size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.net import free_port
from lookalike.datasets import fetch
from lookalike.document import Chunk, Document, Request
from lookalike.executors.base import ExecutorContext
from lookalike.executors.encoders import ImageEncoder
from lookalike.executors.service import fetch_handshake, remote_executor
from lookalike.images import load_tensor
from lookalike.models.encoder import available_cores
from lookalike.wire import decode, encode

BATCH = 16


def _request(tensors: list) -> Request:
    docs = []
    for i, tensor in enumerate(tensors):
        doc = Document(id=f"d{i}", uri=f"/bench/{i}.png")
        doc.chunks = [Chunk(kind="whole", tensor=tensor)]
        docs.append(doc)
    return Request("index", docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    photos = sorted(fetch("tuxpaint").images)[:BATCH]
    tensors = [load_tensor(str(p), 224) for p in photos]
    local = ImageEncoder(context=ExecutorContext(threads=available_cores()))
    local.open()
    port = free_port()
    lookalike = str(Path(sys.executable).parent / "lookalike")
    service = subprocess.Popen(
        [lookalike, "executor", "serve", "ImageEncoder", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        address = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                info = fetch_handshake("encoder", address)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        remote_cls = remote_executor("encoder", info, [address], timeout=120)
        remote = remote_cls(remote_cls.Params(), ExecutorContext())
        remote.open()
        for executor in (local, remote):  # warm: sessions loaded, the first batch run
            executor.handle(_request(tensors))
        times: dict[str, list[float]] = {"in_process": [], "remote": []}
        for _ in range(args.rounds):
            for name, executor in (("in_process", local), ("remote", remote)):
                request = _request(tensors)
                t = time.perf_counter()
                executor.handle(request)
                times[name].append(time.perf_counter() - t)
                assert all(c.embedding is not None for d in request.docs for c in d.chunks)
        frame = encode(_request(tensors))
        t = time.perf_counter()
        for _ in range(20):
            decode(encode(_request(tensors)))
        codec_ms = (time.perf_counter() - t) / 20 * 1000
        remote.close()
    finally:
        service.terminate()
        service.wait(30)
        local.close()
    p50 = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "batch": BATCH,
        "rounds": args.rounds,
        "in_process_ms": p50["in_process"],
        "remote_ms": p50["remote"],
        "ratio": p50["remote"] / p50["in_process"],
        "overhead_ms": p50["remote"] - p50["in_process"],
        "frame_mb": len(frame) / 2**20,
        "encode_decode_ms": codec_ms,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['machine']}; batch {BATCH} real photos, p50 of {args.rounds} alternating rounds\n"
        f"in-process {p50['in_process']:.1f} ms, remote on loopback {p50['remote']:.1f} ms: "
        f"{result['ratio']:.3f}x (+{result['overhead_ms']:.1f} ms a batch); request frame "
        f"{result['frame_mb']:.1f} MB, encode+decode {codec_ms:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
