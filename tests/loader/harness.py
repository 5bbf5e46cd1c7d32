"""A loader under test: landing and store prefixes on the real SeaweedFS, topics
on the real tansu broker, and ``rollway loader`` as a subprocess (or the
pipeline in-process), with helpers to publish and to read what it emitted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from loader import assignments
from loader.events import decode_data, header
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.schemas.rollway.v1.events_pb2 import VersionRejected
from loader.storage import Storage, open_storage
from tests.conftest import HALF_PLUS_TWO, REPO
from tests.kafka_broker import TansuBroker

TIMEOUT = 60.0


@dataclass
class Topics:
    publish: str
    assignments: str
    dead_letter: str

    @classmethod
    def fresh(cls, kafka: TansuBroker, partitions: int = 1) -> Topics:
        """New topics; the publish topic gets ``partitions``, the others one each."""
        tag = uuid.uuid4().hex[:8]
        topics = cls(f"publish-{tag}", f"assignments-{tag}", f"dead-{tag}")
        kafka.create_topics(topics.publish, partitions=partitions)
        kafka.create_topics(topics.assignments, topics.dead_letter)
        return topics


@dataclass
class Watcher:
    """Reads a topic from the beginning, keeping every record seen."""

    kafka: TansuBroker
    topic: str
    records: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.consumer = KafkaConsumer(
            self.topic, bootstrap_servers=self.kafka.bootstrap, auto_offset_reset="earliest",
            consumer_timeout_ms=200, enable_auto_commit=False,
        )  # fmt: skip

    def poll(self) -> list[Any]:
        self.records.extend(self.consumer)
        return self.records

    def wait_for(self, check: Callable[[list[Any]], bool], timeout: float = TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check(self.poll()):
                return self.records
        raise AssertionError(f"timed out on {self.topic}; saw {len(self.records)} records")

    def close(self) -> None:
        self.consumer.close()


def assignments_in(records: list[Any]) -> list[AssignmentChanged]:
    return [decode_data(r.value, AssignmentChanged()) for r in records]


def rejections_in(records: list[Any]) -> list[VersionRejected]:
    return [decode_data(r.value, VersionRejected()) for r in records]


def ce_type(record: Any) -> str | None:
    return header(list(record.headers), "ce_type")


@dataclass
class Stack:
    root: str  # s3://bucket/t-xxxx
    kafka: TansuBroker
    topics: Topics
    env: dict[str, str]
    workdir: Path
    loaders: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def landing(self) -> str:
        return f"{self.root}/landing"

    @property
    def store_uri(self) -> str:
        return f"{self.root}/store"

    def store(self) -> Storage:
        return open_storage(self.store_uri)

    def loader_args(self, group: str = "loader") -> list[str]:
        return [
            sys.executable, "-m", "functions.cli", "loader",
            "--bootstrap-servers", self.kafka.bootstrap, "--topic", self.topics.publish,
            "--group", f"{group}-{self.topics.publish}", "--store", self.store_uri,
            "--source-roots", self.landing,
            "--assignments-topic", self.topics.assignments,
            "--dead-letter-topic", self.topics.dead_letter,
            "--retry-initial-seconds", "0.5", "--retry-max-seconds", "1",
            "--retry-deadline-seconds", "30", "--session-timeout-ms", "6000",
            "--log-format", "json",
        ]  # fmt: skip

    def start_loader(
        self, group: str = "loader", extra: Sequence[str] = (), env: Mapping[str, str] = {}
    ) -> subprocess.Popen[bytes]:
        """``extra`` flags and ``env`` variables are added to the usual ones."""
        log = (self.workdir / f"loader-{len(self.loaders)}.log").open("wb")
        process = subprocess.Popen(
            [*self.loader_args(group), *extra], cwd=REPO, env={**self.env, **env}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.loaders.append(process)
        return process

    def stop_loaders(self) -> None:
        for process in self.loaders:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.loaders:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def loader_log(self, index: int = 0) -> str:
        return (self.workdir / f"loader-{index}.log").read_text(errors="replace")

    def source(self, name: str = "hp2", version: int = 1) -> Path:
        path = self.workdir / "src" / name / str(version)
        if not path.exists():
            shutil.copytree(HALF_PLUS_TWO / "00000123", path)
        return path

    def publish(
        self, model: str, version: int, *extra: str, announce: bool = True
    ) -> subprocess.CompletedProcess[str]:
        kafka = ["--kafka-bootstrap-servers", self.kafka.bootstrap] if announce else []
        result = subprocess.run(
            [sys.executable, "-m", "functions.cli", "publish", "--no-check",
             "--version", str(version), *kafka, "--topic", self.topics.publish, *extra,
             str(self.source(model, version)), f"{self.landing}/{model}"],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result

    def produce(self, value: bytes, key: bytes | None = None, headers: Any = None) -> None:
        producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all")
        try:
            producer.send(self.topics.publish, key=key, value=value, headers=headers or []).get(30)
        finally:
            producer.close(10)

    def document(self, model: str) -> Any:
        return assignments.read(self.store(), model)


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra, "TF_CPP_MIN_LOG_LEVEL": "3"}
