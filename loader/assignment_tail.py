"""Reading every AssignmentChanged on the assignments topic, with no consumer group.

A serving replica following new generations (``rollway serve --follow=kafka``)
and the demo's watcher must each see every event, and must not commit offsets
for anyone else, so they do not join a group (the loader and the rollout do:
``loader.group_consumer``). ``AssignmentTail`` assigns itself every partition
of the compacted topic and reads from the beginning, so it sees the newest
generation of each model even if it was sent before it started; then it keeps
reading. Every event states a model's whole desired state, so a replay is
harmless and nothing is committed.

Records are read by ``events.decode_assignment_record`` (the rollout's reading too).
Tombstones and records of other event types are skipped; a record that claims
to be an AssignmentChanged and does not decode is returned as ``BadRecord``
for the caller to log and count (it is not this module's to judge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loader import events
from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged

# A new generation should reach a replica promptly: the broker may hold an
# empty fetch this long (kafka-python's default is 500 ms).
FETCH_MAX_WAIT_MS = 50


@dataclass(frozen=True)
class BadRecord:
    where: str  # topic/partition@offset
    reason: str


class AssignmentTail:
    def __init__(self, bootstrap: str, topic: str, client_id: str = "rollway") -> None:
        """Connects (kafka-python raises if no broker answers); reads nothing yet."""
        from kafka import KafkaConsumer

        self.topic = topic
        self.partitions = 0
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","), group_id=None, enable_auto_commit=False,
            client_id=client_id, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            allow_auto_create_topics=False,
        )  # fmt: skip

    def attach(self, missing_ok: bool = False) -> bool:
        """Assigns every partition of the topic and seeks to its beginning; False
        while the topic does not exist, unless ``missing_ok`` (then partition 0,
        which the topic's first record creates)."""
        from kafka import TopicPartition

        found = self._consumer.partitions_for_topic(self.topic) or ({0} if missing_ok else set())
        if not found:
            return False
        assigned = [TopicPartition(self.topic, p) for p in sorted(found)]
        self._consumer.assign(assigned)
        self._consumer.seek_to_beginning(*assigned)
        self.partitions = len(assigned)
        return True

    def poll(self, timeout_ms: int) -> list[AssignmentChanged | BadRecord]:
        """What arrived since the last poll, in order per partition (after ``attach``)."""
        out: list[AssignmentChanged | BadRecord] = []
        batches: dict[Any, list[Any]] = self._consumer.poll(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                try:
                    decoded = events.decode_assignment_record(record.value, record.headers or ())
                except InvalidArgument as err:
                    where = f"{record.topic}/{record.partition}@{record.offset}"
                    out.append(BadRecord(where, err.message))
                    continue
                if decoded is not None:  # else a tombstone, or another event type
                    out.append(decoded)
        return out

    def close(self) -> None:
        self._consumer.close()
