"""The whole pipeline on one machine: what ``make demo`` and ``rollway up`` run.

``LocalStack`` starts, as child processes on free 127.0.0.1 ports with their
logs under ``workdir``: SeaweedFS (bucket ``rollway``: publish into
``s3://rollway/landing/<model>``, the loader stages into ``s3://rollway/store``),
the tansu Kafka broker with rollway's three topics, ``rollway loader``, and one
``rollway serve`` replica in ``--follow=kafka`` mode. Each part is started by its
own method, in that order, so callers can report progress between them.

The replica is started last, and only once some model has an assignment:
``rollway serve --assignments`` with nothing assigned exits at startup (an
empty server is never ready), so ``start_serving`` needs a first generation.
The replica serves every model assigned when it starts; later generations of
those models roll out through the assignments topic without a restart.

Contract on exit (``stop``, also run by ``__exit__`` on an exception or Ctrl-C):
every child is stopped by PID with SIGTERM, then SIGKILL after a timeout; SIGINT
and SIGTERM are ignored meanwhile so a second Ctrl-C cannot leave orphans. Every
PID ever started is also written to ``<workdir>/pids.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from functions.devstack.seaweedfs import SeaweedFS
from functions.devstack.tansu import TansuBroker
from functions.serving.process import LOOPBACK, free_port
from loader import events
from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged

BUCKET = "rollway"
LANDING = f"s3://{BUCKET}/landing"
STORE = f"s3://{BUCKET}/store"
TOPICS = (events.PUBLISH_TOPIC, events.ASSIGNMENTS_TOPIC, events.DEAD_LETTER_TOPIC)
# Variables that would redirect a child's S3 client elsewhere; client_env drops them.
_FOREIGN_S3_VARS = (
    "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "S3_USE_HTTPS",
    "S3_VERIFY_SSL", "AWS_CA_BUNDLE", "AWS_DEFAULT_REGION", "AWS_PROFILE",
)  # fmt: skip


class StackError(RuntimeError):
    """A part of the stack did not start; the message names it and its log."""


class Child:
    """One child process in its own session (so a terminal's Ctrl-C reaches only
    the parent, which stops the children in order), output to ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name, self.args, self.log_path, self.env = name, list(args), log_path, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: int
    exit_code: int | None


class LocalStack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = self.rest_port = 0  # chosen once SeaweedFS and tansu hold theirs
        self.s3: SeaweedFS | None = None
        self.kafka: TansuBroker | None = None
        self.loader: Child | None = None
        self.serving: Child | None = None
        self._pids: dict[str, list[int]] = {}
        self._lock = threading.Lock()  # start_serving may run on a watcher thread
        self._stopped = False

    # ------------------------------------------------------------ endpoints

    @property
    def bootstrap(self) -> str:
        assert self.kafka is not None, "start_infra() comes first"
        return self.kafka.bootstrap

    def client_env(self) -> dict[str, str]:
        """What a rollway client needs: the S3 credentials and endpoint, and Kafka."""
        assert self.s3 is not None, "start_infra() comes first"
        return {**self.s3.env(), "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap}

    def export_env(self) -> None:
        """Points this process's own S3 and Kafka clients at the stack."""
        for name in _FOREIGN_S3_VARS:
            os.environ.pop(name, None)
        os.environ.update(self.client_env())

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_S3_VARS}
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        return {**env, **self.client_env(), "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}

    def pids(self) -> dict[str, list[int]]:
        """Every PID started, by part (a restarted replica adds one)."""
        return {name: list(pids) for name, pids in self._pids.items()}

    def _record(self, name: str, pid: int) -> None:
        self._pids.setdefault(name, []).append(pid)
        (self.workdir / "pids.json").write_text(json.dumps(self._pids, indent=1))

    # ---------------------------------------------------------------- start

    def start_infra(self) -> None:
        """SeaweedFS with the bucket, then tansu with the topics; both ready."""
        self.s3 = SeaweedFS(self.workdir / "seaweedfs")
        self.s3.workdir.mkdir(parents=True, exist_ok=True)
        self.s3.start()
        assert self.s3.proc is not None
        self._record("weed", self.s3.proc.pid)
        self.s3.create_bucket(BUCKET)
        self.kafka = TansuBroker(self.workdir / "tansu.log")
        self._record("tansu", self.kafka.process.pid)
        self.kafka.create_topics(*TOPICS)
        self.grpc_port, self.rest_port = free_port(), free_port()

    def start_loader(self, timeout: float = 60.0) -> None:
        """``rollway loader``; started once its consumer runs (it reads the publish
        topic from the earliest offset, so events sent before it joins are kept)."""
        args = [
            sys.executable, "-m", "functions.cli", "loader",
            "--bootstrap-servers", self.bootstrap, "--topic", events.PUBLISH_TOPIC,
            "--group", "rollway-loader", "--store", STORE, "--source-roots", LANDING,
            "--assignments-topic", events.ASSIGNMENTS_TOPIC,
            "--dead-letter-topic", events.DEAD_LETTER_TOPIC,
            "--retry-initial-seconds", "0.5", "--retry-max-seconds", "2",
            "--retry-deadline-seconds", "60", "--session-timeout-ms", "6000",
            "--metrics-address", LOOPBACK, "--log-format", "json",
        ]  # fmt: skip
        self.loader = Child("loader", args, self.workdir / "loader.log", self.child_env()).start()
        self._record("loader", self.loader.pid)
        deadline = time.monotonic() + timeout
        while '"loader consuming' not in self.loader.log_tail():
            if not self.loader.running() or time.monotonic() > deadline:
                raise StackError(f"the loader did not start:\n{self.loader.log_tail()}")
            time.sleep(0.1)

    def serve_args(self) -> list[str]:
        return [
            sys.executable, "-m", "functions.cli", "serve",
            f"--assignments={STORE}", "--follow=kafka",
            f"--kafka_bootstrap_servers={self.bootstrap}",
            f"--assignments_topic={events.ASSIGNMENTS_TOPIC}",
            f"--cache_dir={self.workdir / 'cache'}", f"--bind_address={LOOPBACK}",
            f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}",
            "--assignment_timeout_seconds=120", "--log_format=json",
        ]  # fmt: skip

    def start_serving(self, timeout: float = 120.0) -> None:
        """Starts (or restarts) the replica and waits until gRPC health says SERVING.
        Some model must have an assignment already (see the module docstring)."""
        with self._lock:  # not held while waiting: stop() must never wait on a start
            if self._stopped:
                raise StackError("the stack is stopping")
            if self.serving is not None:
                self.serving.stop()
            log = self.workdir / "serve.log"
            serving = Child("serve", self.serve_args(), log, self.child_env()).start()
            self.serving = serving
            self._record("serve", serving.pid)
        wait_serving(serving, f"{LOOPBACK}:{self.grpc_port}", timeout)

    # ----------------------------------------------------------------- stop

    def stop(self) -> list[Stopped]:
        """Stops every child by PID: the loader and the replica first (so they never
        see the broker or the store vanish mid-record), then tansu and SeaweedFS;
        the two of each wave in parallel (tansu alone takes ~5 s to drain)."""
        with _signals_ignored(), self._lock:
            self._stopped = True
            apps = [(c.name, c.proc, c.stop) for c in (self.serving, self.loader) if c and c.proc]
            infra: list[tuple[str, subprocess.Popen[bytes], Callable[[], object]]] = []
            if self.kafka is not None:
                infra.append(("tansu", self.kafka.process, self.kafka.stop))
            if self.s3 is not None and self.s3.proc is not None:
                infra.append(("weed", self.s3.proc, self.s3.stop))
            stopped = _stop_all(apps) + _stop_all(infra)
            self.serving = self.loader = None
            self.kafka, self.s3 = None, None
        return stopped

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _stop_all(
    parts: Sequence[tuple[str, subprocess.Popen[bytes], Callable[[], object]]],
) -> list[Stopped]:
    """Runs each part's stop in parallel; a part whose stop failed is SIGKILLed."""

    def run(stop: Callable[[], object]) -> None:
        with suppress(Exception):  # checked below: nothing survives
            stop()

    threads = [threading.Thread(target=run, args=(stop,)) for _, _, stop in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _, proc, _ in parts:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return [Stopped(name, proc.pid, proc.returncode) for name, proc, _ in parts]


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so that
    ``with LocalStack(...)`` unwinds and stops every child. Set explicitly: a
    shell that starts a process in the background leaves SIGINT ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored meanwhile (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def wait_serving(child: Child, address: str, timeout: float) -> None:
    """Until the model-aware gRPC health check says SERVING; StackError with the log
    if the process exits first or the time runs out."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not child.running():
                raise StackError(f"{child.name} exited before serving:\n{child.log_tail()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise StackError(f"{child.name} not SERVING after {timeout:g}s:\n{child.log_tail()}")


class AssignmentWatcher:
    """Reads the assignments topic from the beginning with no consumer group (as a
    following replica does), decoding every AssignmentChanged."""

    def __init__(self, bootstrap: str, topic: str = events.ASSIGNMENTS_TOPIC) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.seen: list[AssignmentChanged] = []
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        partitions = self._consumer.partitions_for_topic(topic) or {0}
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)

    def poll(self, timeout_ms: int = 500) -> list[AssignmentChanged]:
        """The AssignmentChanged events that arrived since the last poll."""
        new: list[AssignmentChanged] = []
        batches: dict[Any, list[Any]] = self._consumer.poll(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                kind = events.header(list(record.headers or ()), "ce_type")
                if record.value is None or kind not in (None, events.ASSIGNMENT_CHANGED):
                    continue
                try:
                    new.append(events.decode_data(record.value, AssignmentChanged()))
                except InvalidArgument:
                    continue  # not ours to judge here; a replica logs and counts these
        self.seen += new
        return new

    def wait_for(self, model: str, generation: int, timeout: float) -> AssignmentChanged:
        """The first event of ``model`` with at least ``generation``; TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if event.model == model and event.generation >= generation:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no AssignmentChanged for {model} generation {generation} within {timeout:g}s"
                )
            self.poll()

    def close(self) -> None:
        self._consumer.close()
