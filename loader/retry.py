"""Retrying versions that are still arriving (INCOMPLETE), durably.

TF Serving gives up on a half-copied version silently. The loader instead
parks it: a small record in the serving store,
``_rollway/pending/<model>/<version>.json``, says when it was first seen, how
many attempts failed and when to try next. Parking is durable, so the Kafka
consumer can commit the record's offset, and any loader process may pick the
version up again later. After ``deadline`` from the first attempt the version
is rejected for good.

``next_attempt`` is the pure schedule; ``Parking`` holds the records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from loader.backoff import Backoff
from loader.errors import NotFound
from loader.storage import Storage

PENDING_DIR = "_rollway/pending"


@dataclass(frozen=True)
class RetryPolicy:
    """When a parked version is tried again: ``backoff`` without jitter, since
    ``next_at`` is a durable schedule, stored and reported as computed; loaders
    that retry one record together are harmless (see ``Parking``)."""

    initial_seconds: float = 5.0
    max_seconds: float = 300.0
    multiplier: float = 2.0
    deadline_seconds: float = 1800.0  # 30 min; then the version is rejected

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.initial_seconds, self.max_seconds, self.multiplier, jitter=False)


@dataclass(frozen=True)
class Pending:
    """One parked version. ``event`` is the decoded event (a JSON object) to replay."""

    model: str
    version: int
    first_seen: float  # unix time of the first attempt
    attempts: int
    next_at: float  # unix time of the next attempt
    reason: str  # why the last attempt did not stage it
    event: dict[str, object]


def next_attempt(policy: RetryPolicy, first_seen: float, attempts: int, now: float) -> float | None:
    """When to try again after ``attempts`` failed attempts, or None once the
    deadline has passed (the caller then rejects the version). Pure."""
    if now - first_seen >= policy.deadline_seconds:
        return None
    return min(now + policy.backoff.delay(attempts), first_seen + policy.deadline_seconds)


def pending_key(model: str, version: int) -> str:
    return f"{PENDING_DIR}/{model}/{version}.json"


class Parking:
    """The pending records in a store. Writes are whole-object replaces, so a
    record is always readable; two loaders updating one record at worst both
    retry once, which is harmless because every step is idempotent."""

    def __init__(self, store: Storage) -> None:
        self.store = store

    def get(self, model: str, version: int) -> Pending | None:
        try:
            data = self.store.read_bytes(pending_key(model, version), limit=1 << 20)
        except NotFound:
            return None
        return _decode(data)

    def park(self, pending: Pending) -> None:
        self.store.write_bytes(
            pending_key(pending.model, pending.version),
            json.dumps(asdict(pending), sort_keys=True).encode(),
        )

    def release(self, model: str, version: int) -> None:
        self.store.delete(pending_key(model, version))

    def all(self) -> Iterator[Pending]:
        for info in self.store.list(f"{PENDING_DIR}/"):
            try:
                yield _decode(self.store.read_bytes(info.key, limit=1 << 20))
            except (NotFound, ValueError, TypeError, KeyError):
                continue  # released meanwhile, or damaged: nothing to replay

    def due(self, now: float) -> list[Pending]:
        return sorted((p for p in self.all() if p.next_at <= now), key=lambda p: p.next_at)


def _decode(data: bytes) -> Pending:
    fields = json.loads(data)
    return Pending(
        model=str(fields["model"]),
        version=int(fields["version"]),
        first_seen=float(fields["first_seen"]),
        attempts=int(fields["attempts"]),
        next_at=float(fields["next_at"]),
        reason=str(fields["reason"]),
        event=dict(fields["event"]),
    )
