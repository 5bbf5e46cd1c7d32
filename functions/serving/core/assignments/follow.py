"""Following newer assignment generations while serving (``--follow``).

Two sources feed one loop:

- ``poll`` reads each served model's assignment document every
  ``--follow_poll_seconds``;
- ``kafka`` reads the compacted assignments topic with ``loader.assignment_tail``:
  no consumer group, since every replica must see every event and must not
  commit offsets for the others (the loader's and the rollout's loop,
  ``loader.group_consumer``, is a group member's, so it does not fit here).
  The tail reads every partition from the beginning, so it sees the newest
  generation of each model even if it was sent before this replica started.

The loop keeps the newest generation seen per served model and hands it to
``Target.swap``. Older and duplicate generations are dropped (every event states
the whole desired state, so replays are harmless). Failures (the store or Kafka
down, a generation whose versions do not fetch or load) are logged, counted and
retried with backoff; the generation in force keeps serving meanwhile. One
thread does all of it, so swaps never overlap.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from functions.serving.core.assignments.settings import AssignmentSettings
from functions.serving.metrics import ServingMetrics
from loader import assignments, backoff
from loader.assignment_tail import AssignmentTail, BadRecord
from loader.errors import RollwayError
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.storage import Storage

log = logging.getLogger("rollway.serve.follow")

# A generation that failed to swap is tried again on this schedule, kept by
# ``apply_due`` per model from timestamps (one thread serves every model, so it
# never sleeps on one model's retry). No jitter: the log says when ("retry in 2s").
SWAP_RETRIES = backoff.Backoff(initial_seconds=1.0, max_seconds=60.0, jitter=False)
# Kafka unreachable or the topic missing: a fixed wait between consumer rounds,
# not a backoff; ``_failed`` logs each new error once, so the log stays quiet.
RETRY_INITIAL_SECONDS = SWAP_RETRIES.initial_seconds
KAFKA_POLL_MS = 500


class Target(Protocol):
    """What the loop drives: ``functions.serving.core.assignments.source.AssignedModels``."""

    @property
    def models(self) -> Sequence[str]: ...

    @property
    def store(self) -> Storage: ...

    def generation(self, model: str) -> int: ...

    def swap(self, new: AssignmentChanged) -> bool: ...


@dataclass
class _Pending:
    assignment: AssignmentChanged
    attempts: int = 0
    retry_at: float = 0.0


class Follower:
    def __init__(
        self, target: Target, options: AssignmentSettings, metrics: ServingMetrics
    ) -> None:
        self._target = target
        self._failures = metrics.follow_failures
        self._options = options
        self._models = frozenset(target.models)
        self._pending: dict[str, _Pending] = {}
        self._errors: dict[str, str] = {}  # the last error logged, per source
        self._stop = threading.Event()
        run = self._kafka if options.follow == "kafka" else self._poll
        self._thread = threading.Thread(target=run, name="rollway-follow", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    # ------------------------------------------------------------------ loop

    def offer(self, assignment: AssignmentChanged) -> None:
        """Keeps ``assignment`` if it is the newest generation yet of a served model."""
        model = assignment.model
        if model not in self._models:
            return
        pending = self._pending.get(model)
        newest = max(
            self._target.generation(model), pending.assignment.generation if pending else 0
        )
        if assignment.generation > newest:
            self._pending[model] = _Pending(assignment)

    def apply_due(self) -> None:
        now = time.monotonic()
        for model in sorted(self._pending):
            pending = self._pending[model]
            if pending.assignment.generation <= self._target.generation(model):
                del self._pending[model]
                continue
            if pending.retry_at > now:
                continue
            try:
                self._target.swap(pending.assignment)
                del self._pending[model]
                continue
            except RollwayError as err:
                message = err.message
            except Exception as err:  # a bug must not end following
                log.exception("swapping %s failed", model)
                message = f"{type(err).__name__}: {err}"
            pending.attempts += 1
            delay = SWAP_RETRIES.delay(pending.attempts)
            pending.retry_at = time.monotonic() + delay
            self._failures.labels(model).inc()
            log.error(
                "generation %d of model %s not applied (attempt %d; retry in %.0fs); generation "
                "%d keeps serving: %s",
                pending.assignment.generation, model, pending.attempts, delay,
                self._target.generation(model), message,
                extra={"fields": {"event": "assignment_swap_failed", "model": model,
                                  "generation": pending.assignment.generation,
                                  "attempt": pending.attempts, "reason": message}},
            )  # fmt: skip

    def _failed(self, source: str, model: str, message: str) -> None:
        """Counts every failure; logs it when it differs from the source's last one."""
        self._failures.labels(model).inc()
        if self._errors.get(source) != message:
            self._errors[source] = message
            log.error("%s (retrying)", message)

    def _recovered(self, source: str) -> None:
        if self._errors.pop(source, None) is not None:
            log.info("%s works again", source)

    # ------------------------------------------------------------------ poll

    def _poll(self) -> None:
        store = self._target.store
        while not self._stop.wait(self._options.follow_poll_seconds):
            for model in sorted(self._models):
                source = f"reading the assignment of {model} in {store.uri}"
                try:
                    document = assignments.read(store, model)
                except RollwayError as err:
                    self._failed(source, model, f"{source} failed: {err.message}")
                    continue
                except Exception as err:  # a bug must not end following
                    self._failed(source, model, f"{source} failed: {type(err).__name__}: {err}")
                    continue
                self._recovered(source)
                if document is not None:
                    self.offer(document.current)
            self.apply_due()

    # ----------------------------------------------------------------- kafka

    def _kafka(self) -> None:
        o = self._options
        source = f"consuming {o.topic} from {o.kafka_bootstrap_servers}"
        while not self._stop.is_set():
            try:
                self._consume(source)
            except Exception as err:  # kafka-python raises many types; retry them all
                self._failed(source, "", f"{source} failed: {type(err).__name__}: {err}")
                self._stop.wait(RETRY_INITIAL_SECONDS)
            self.apply_due()

    def _consume(self, source: str) -> None:
        o = self._options
        tail = AssignmentTail(
            o.kafka_bootstrap_servers, o.topic, client_id=f"rollway-serve-{socket.gethostname()}"
        )
        try:
            attached = False
            while not self._stop.is_set():
                if not attached:
                    attached = tail.attach()
                    if attached:
                        self._recovered(source)
                        log.info("following %s (%d partitions)", source, tail.partitions)
                    else:
                        self._failed(source, "", f"{source}: the topic does not exist yet")
                        self._stop.wait(RETRY_INITIAL_SECONDS)
                if attached:
                    for item in tail.poll(KAFKA_POLL_MS):
                        if isinstance(item, BadRecord):
                            self._failures.labels("").inc()
                            log.warning("ignoring record %s: %s", item.where, item.reason)
                        else:
                            self.offer(item)
                self.apply_due()
        finally:
            tail.close()


def start(target: Target, options: AssignmentSettings, metrics: ServingMetrics) -> Follower | None:
    """Starts following as ``--follow`` says; None for ``none`` or a pinned generation."""
    if options.follow == "none":
        return None
    if options.pin_generation:
        log.info(
            "--pin_generation=%d: serving that generation; --follow=%s is off",
            options.pin_generation, options.follow,
        )  # fmt: skip
        return None
    follower = Follower(target, options, metrics)
    follower.start()
    return follower
