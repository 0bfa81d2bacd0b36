"""Pods from container images: ``uses: docker://IMAGE`` (or ``podman://IMAGE``).

The image runs `lookalike executor serve` (see the repository's Dockerfile: its entrypoint serves on
port 8000 inside the container, and its command names the executor). A pod starts one container a
replica, detached, with that port mapped to a free loopback port here, the pod's ``with:`` in
``LOOKALIKE_EXECUTOR_WITH`` and its ``env:``; waits until ``/readyz`` answers (``timeout_ready``),
failing at once with the container's last output if it exits; then calls it like any executor
service. The flow stops and removes its containers when it closes, on error too. Containers are not
started with ``--rm``, so one that crashes keeps its logs until then. Each is labelled
``lookalike.flow=<id>``, so that ones left by a killed process can be found (``docker ps --filter
label=lookalike.flow``).

The engine is ``LOOKALIKE_CONTAINER_ENGINE`` if set, else the first of docker and podman on PATH
(``podman://`` prefers podman).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any

from lookalike.errors import ClusterError, ConfigError
from lookalike.executors.service import need_httpx

SCHEMES = ("docker://", "podman://")
CONTAINER_PORT = 8000  # where the image's `lookalike executor serve` listens, inside the container
ENGINE_TIMEOUT_S = 60.0  # one engine command
RUN_TIMEOUT_S = 900.0  # `run -d`, which pulls the image first if it is not here


def is_container(uses: str | None) -> bool:
    return uses is not None and uses.startswith(SCHEMES)


def engine_for(uses: str, pod: str, chosen: str | None = None) -> str:
    """The container engine executable: ``chosen`` (LOOKALIKE_CONTAINER_ENGINE), else docker or
    podman on PATH."""
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise ConfigError(f"pod {pod}: LOOKALIKE_CONTAINER_ENGINE={chosen!r} is not an executable")
        return found
    order = ("podman", "docker") if uses.startswith("podman://") else ("docker", "podman")
    for name in order:
        found = shutil.which(name)
        if found is not None:
            return found
    raise ConfigError(
        f"pod {pod}: uses {uses} needs a container engine: install docker or podman, or set LOOKALIKE_CONTAINER_ENGINE"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Container:
    """One running container of a pod's image, serving its executor on ``address``."""

    def __init__(self, engine: str, image: str, pod: str, name: str):
        self.engine, self.image, self.pod, self.name = engine, image, pod, name
        self.port = _free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.running = False

    def _run(self, *args: str, check: bool = True, timeout: float = ENGINE_TIMEOUT_S) -> subprocess.CompletedProcess:
        what = f"`{os.path.basename(self.engine)} {args[0]}`"
        try:
            done = subprocess.run(
                [self.engine, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:  # not its command line: it holds the pod's env values
            raise ClusterError(f"pod {self.pod}: {what} of {self.image} took over {timeout:g}s") from e
        except OSError as e:
            raise ClusterError(f"pod {self.pod}: {what} failed: {e.strerror or e}") from e
        if check and done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(
                f"pod {self.pod}: `{os.path.basename(self.engine)} {args[0]}` of {self.image} failed "
                f"(exit {done.returncode}): {last[0]}"
            )
        return done

    def start(self, with_: dict[str, Any], env: dict[str, str], label: str, timeout_ready: float) -> None:
        need_httpx()  # before anything runs: the readiness poll and the pod's calls need it
        args = ["run", "-d", "--name", self.name, "--label", f"lookalike.flow={label}"]
        args += ["-p", f"127.0.0.1:{self.port}:{CONTAINER_PORT}"]
        for key, value in {**env, "LOOKALIKE_EXECUTOR_WITH": json.dumps(with_)}.items():
            args += ["-e", f"{key}={value}"]
        self.running = True  # from here on it is stopped and removed by name, whatever happens
        self._run(*args, "--", self.image, timeout=RUN_TIMEOUT_S)
        self._wait_ready(timeout_ready)

    def _wait_ready(self, timeout: float) -> None:
        httpx = need_httpx()

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.address}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            status = self._run("inspect", "-f", "{{.State.Status}}", self.name, check=False).stdout.strip()
            if status in ("exited", "dead"):
                raise ClusterError(
                    f"pod {self.pod}: the container from {self.image} exited before it was ready; "
                    f"its last output: {self._tail()}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"pod {self.pod}: the container from {self.image} was not ready within {timeout:g}s "
                    f"(raise the pod's timeout_ready if it needs longer); its last output: {self._tail()}"
                )
            time.sleep(0.2)

    def _tail(self) -> str:
        try:
            logs = self._run("logs", "--tail", "5", self.name, check=False)
        except ClusterError:
            return "none (the engine did not answer)"
        return " | ".join((logs.stdout + logs.stderr).strip().splitlines()[-3:])[:400] or "none"

    def stop(self) -> None:
        """Stop and remove it (by name: also one whose `run` was interrupted)."""
        if not self.running:
            return
        self.running = False
        self._run("stop", "-t", "10", self.name, check=False)
        self._run("rm", "-f", self.name, check=False)


class ContainerSet:
    """The containers a flow started; stopped together (the flow closes, or fails to build)."""

    def __init__(self, engine: str | None = None) -> None:
        self.engine = engine  # the chosen engine (LOOKALIKE_CONTAINER_ENGINE), else found on PATH
        self.label = uuid.uuid4().hex[:12]
        self.containers: list[Container] = []

    def start(
        self, pod: str, uses: str, replicas: int, with_: dict[str, Any], env: dict[str, str], timeout_ready: float
    ) -> list[str]:
        """Start ``replicas`` containers of ``uses``'s image for pod ``pod``; their addresses."""
        engine = engine_for(uses, pod, self.engine)
        image = uses.split("://", 1)[1]
        started = []
        for replica in range(replicas):
            container = Container(engine, image, pod, f"lookalike-{self.label}-{pod}-{replica}")
            self.containers.append(container)
            container.start(with_, env, self.label, timeout_ready)
            started.append(container.address)
        return started

    def stop(self) -> None:
        """Stop every container; the first failure is raised once all were tried."""
        errors: list[ClusterError] = []
        for container in self.containers:
            try:
                container.stop()
            except ClusterError as e:
                errors.append(e)
        self.containers = []
        if errors:
            raise errors[0]
