"""Watching the assignments topic: the demo and ``rollway up`` wait on a
model's new generation through it."""

from __future__ import annotations

import time

from loader import events
from loader.assignment_tail import AssignmentTail
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged


class AssignmentWatcher:
    """Every AssignmentChanged on the topic, from the beginning, as a following
    replica reads them (``loader.assignment_tail``)."""

    def __init__(self, bootstrap: str, topic: str = events.ASSIGNMENTS_TOPIC) -> None:
        self.seen: list[AssignmentChanged] = []
        self._tail = AssignmentTail(bootstrap, topic, client_id="rollway-watch")
        self._tail.attach(missing_ok=True)

    def poll(self, timeout_ms: int = 500) -> list[AssignmentChanged]:
        """The AssignmentChanged events that arrived since the last poll (records
        that do not decode are not ours to judge here; a replica logs and counts them)."""
        new = [e for e in self._tail.poll(timeout_ms) if isinstance(e, AssignmentChanged)]
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
        self._tail.close()
