"""Watching the assignments topic: the demo and ``rollway up`` wait on a
model's new generation through it."""

from __future__ import annotations

import time
from typing import Any

from loader import events
from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged


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
