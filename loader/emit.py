"""What the loader tells the world about each result, and sending it to Kafka.

``records_for`` is pure: a pipeline ``Result`` becomes the Kafka records to
send, in order:
- STAGED: ``VersionStaged`` on the publish topic's neighbour ``staged_topic``
  (if configured), then the model's ``AssignmentChanged`` on the compacted
  assignments topic;
- UNCHANGED: the current ``AssignmentChanged`` again. It states the whole
  desired state, so a duplicate is harmless, and it heals a crash that
  happened after the assignment was written but before it was sent;
- REJECTED: ``VersionRejected`` on the dead-letter topic;
- RETRY, IGNORED: nothing.
"""

from __future__ import annotations

import datetime
import socket
from dataclasses import dataclass
from typing import Any

from loader import events
from loader.events import KafkaRecord
from loader.pipeline import Outcome, Result
from loader.schemas.rollway.v1.events_pb2 import Problem, VersionRejected, VersionStaged


@dataclass(frozen=True)
class Topics:
    assignments: str = events.ASSIGNMENTS_TOPIC
    dead_letter: str = events.DEAD_LETTER_TOPIC
    staged: str = ""  # VersionStaged is optional: "" sends none


def source_name(component: str) -> str:
    """The CloudEvent source of this process, e.g. ``//rollway/loader/<host>``."""
    return f"//rollway/{component}/{socket.gethostname()}"


def records_for(result: Result, topics: Topics, source: str) -> list[tuple[str, KafkaRecord]]:
    now = datetime.datetime.now(datetime.timezone.utc)
    out: list[tuple[str, KafkaRecord]] = []
    if result.outcome is Outcome.REJECTED:
        rejected = VersionRejected(
            model=result.model,
            version=max(result.version, 0),
            version_uri=result.version_uri,
            reason=result.reason,
            verdict=result.verdict.value if result.verdict is not None else "",
            problems=[Problem(kind=p.kind.name, path=p.path, detail=p.detail)
                      for p in result.problems],
            cause=result.cause,
            source_record=result.source_record,
        )  # fmt: skip
        rejected.rejected_at.FromDatetime(now)
        out.append((topics.dead_letter, events.encode(rejected, source, _subject(result))))
    if result.outcome is Outcome.STAGED and topics.staged and result.staged is not None:
        staged = VersionStaged(
            model=result.model,
            version=result.version,
            version_uri=result.staged.version_uri,
            source_uri=result.version_uri,
            manifest_sha256=result.staged.manifest_sha256,
            total_bytes=result.staged.total_bytes,
            cause=result.cause,
        )
        staged.staged_at.FromDatetime(now)
        out.append((topics.staged, events.encode(staged, source, _subject(result))))
    if result.outcome in (Outcome.STAGED, Outcome.UNCHANGED) and result.assignment is not None:
        subject = f"{result.assignment.model}@{result.assignment.generation}"
        out.append((topics.assignments, events.encode(result.assignment, source, subject)))
    return out


def _subject(result: Result) -> str:
    return f"{result.model}/{result.version}" if result.model else ""


class KafkaEmitter:
    """Sends records with kafka-python, waiting for the broker's acks (acks=all):
    ``send`` returns only once every record is durable, or raises.

    Idempotent production is off: duplicates are harmless here by design (every
    event states whole state), and an idempotent producer whose id the broker
    forgot (a broker restart) stays in a permanent error state. For the same
    reason a failed send discards the producer; the next send builds a new one."""

    def __init__(self, bootstrap: str, timeout_s: float = 30.0) -> None:
        self._bootstrap = bootstrap
        self._timeout = timeout_s
        self._producer: Any = None
        self._connect()

    def _connect(self) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            bootstrap_servers=self._bootstrap.split(","), acks="all", retries=5,
            enable_idempotence=False, request_timeout_ms=int(self._timeout * 1000),
            max_block_ms=int(self._timeout * 1000),
        )  # fmt: skip

    def send(self, records: list[tuple[str, KafkaRecord]]) -> None:
        if not records:
            return
        if self._producer is None:
            self._connect()
        try:
            futures = [
                self._producer.send(topic, key=r.key, value=r.value, headers=r.headers)
                for topic, r in records
            ]
            for future in futures:
                future.get(self._timeout)
        except Exception:
            producer, self._producer = self._producer, None
            producer.close(0)
            raise

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(self._timeout)
