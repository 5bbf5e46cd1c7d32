"""Run ``rollway serve`` as a child process: used by ``make demo``, the
integration tests and the benchmarks.

Readiness is the model-aware gRPC health check, polled until SERVING or until
the process exits; there is no fixed sleep. Stopping sends SIGTERM, then
SIGKILL after a timeout, always by PID.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Started(abc.ABC):
    """Something ``with`` starts (``start()`` returns it) and always stops: a
    server process, or a test cluster of them."""

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def stop(self) -> object: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def stopped_on_failure(stop: Callable[[], object]) -> Iterator[None]:
    """Around a start's spawning and waiting: any failure, an interrupt included,
    calls ``stop`` before it propagates, so no half-started process is left."""
    try:
        yield
    except BaseException:
        stop()
        raise


def await_serving(address: str, timeout: float, exited: Callable[[], bool]) -> bool | None:
    """Polls the gRPC health check at ``address``: True once it says SERVING,
    False as soon as ``exited()`` (the process is gone), None after ``timeout``."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if exited():
                return False
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    return None


class ServerProcess(Started):
    """``rollway serve`` on a free loopback port, stdout/stderr to ``log_path``."""

    def __init__(self, args: Sequence[str], log_path: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.log_path = log_path
        self.args = [
            sys.executable, "-m", "functions.cli", "serve",
            f"--port={self.port}", f"--bind_address={LOOPBACK}", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_serving(self, timeout: float = 120.0) -> None:
        """Blocks until health reports SERVING; raises with the log if it never does."""
        assert self.proc is not None
        proc = self.proc
        serving = await_serving(self.address, timeout, lambda: proc.poll() is not None)
        if serving is False:
            raise RuntimeError(
                f"server exited with {proc.returncode} before serving:\n{self.log()}"
            )
        if serving is None:
            raise TimeoutError(f"server not SERVING after {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float = 120.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
