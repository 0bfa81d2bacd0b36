"""A real two-node Ray cluster on 127.0.0.1, for the tests and the benchmarks.

Two `ray start --block` processes (a head and a second node, one CPU each unless told, the
dashboard off, usage stats disabled), each in its own process group: stopping one kills that
group, never another Ray on the machine (`ray stop` would end them all). Ray advertises the
machine's own address whatever it is told, so use it only where :func:`only_loopback` holds (a
network namespace made with `unshare -n`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.net import free_port


def only_loopback() -> bool:
    """Is loopback the only network interface here (a namespace made with `unshare -n`)?"""
    return [name for _, name in socket.if_nameindex()] == ["lo"]  # (sysfs may show the host's)


RAY = str(Path(sys.executable).parent / "ray")
# Node death is noticed within ~2 s instead of Ray's default ~30 s, so a lost node's actors come
# back quickly. Only the head reads these.
FAST_HEALTH_CHECKS = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "4",
}


class Cluster:
    """A head and (with ``nodes=2``) one more node on 127.0.0.1, ``cpus`` each."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        self.nodes, self.cpus = nodes, cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths live under it and must stay within the 107-byte limit.
        self.temp = tempfile.mkdtemp(prefix="lkray-", dir="/tmp")
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            [RAY, "start", "--block", "--num-cpus", str(self.cpus), "--disable-usage-stats", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped by it, never by `ray stop`
        )

    def start(self) -> None:
        head_args = ["--head", "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", self.temp]
        self.head = self._start(head_args, {**self.env, **FAST_HEALTH_CHECKS})
        self._wait_for_port()
        if self.nodes > 1:
            self.add_worker()

    def add_worker(self) -> None:
        self.worker = self._start(["--address", self.address], self.env)
        deadline = time.monotonic() + 90
        while len(self.alive_nodes()) < 2:
            assert time.monotonic() < deadline, "the second Ray node did not join within 90 s"
            time.sleep(0.5)
        # Alive is not yet placeable: until the cluster counts the node's CPUs, pods dealt to it
        # would be placed on the head instead.
        while self.cluster_cpus() < 2 * self.cpus:
            assert time.monotonic() < deadline, "the second Ray node's resources were not counted within 90 s"
            time.sleep(0.5)

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start within 90 s"
                assert self.head is not None and self.head.poll() is None, "the Ray head exited"
                time.sleep(0.3)

    def alive_nodes(self) -> list[str]:
        """Node ids of the live nodes (asked of the cluster by a short-lived driver)."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout else []

    def cluster_cpus(self) -> float:
        """The CPUs the cluster counts, over its live nodes (asked by a short-lived driver)."""
        code = (
            "import ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "print(ray.cluster_resources().get('CPU', 0))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        return float(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 and done.stdout else 0.0

    def kill_worker(self) -> None:
        """SIGKILL the second node: its raylet, object store and every worker process on it."""
        assert self.worker is not None
        _kill_group(self.worker)
        self.worker = None

    def stop(self) -> None:
        for proc in (self.worker, self.head):
            if proc is not None:
                _kill_group(proc)
        # Some of Ray's daemons (the GCS server, a raylet) start sessions of their own and outlive
        # the group; they are ours by the temp dir only this cluster uses.
        for pid in _pids_mentioning(self.temp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (this cluster's unique temp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found
