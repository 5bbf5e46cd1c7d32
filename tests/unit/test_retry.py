"""loader/retry.py: the backoff policy (pure) and parked records on local disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.retry import Parking, Pending, RetryPolicy, next_attempt
from loader.storage import open_storage

POLICY = RetryPolicy(initial_seconds=5, max_seconds=60, multiplier=2, deadline_seconds=300)


@pytest.mark.parametrize(
    ("attempts", "now", "expected"),
    [
        (1, 0.0, 5.0),  # first failure: the initial delay
        (2, 10.0, 20.0),
        (3, 10.0, 30.0),
        (5, 10.0, 70.0),  # 5 * 2**4 = 80, capped at 60
        (9, 280.0, 300.0),  # never past the deadline
        (9, 300.0, None),  # the deadline has passed: reject
        (1, 1000.0, None),
    ],
)
def test_backoff(attempts: int, now: float, expected: float | None) -> None:
    assert next_attempt(POLICY, first_seen=0.0, attempts=attempts, now=now) == expected


def test_parking_round_trip_and_due(tmp_path: Path) -> None:
    parking = Parking(open_storage(str(tmp_path)))
    early = Pending("m", 1, 0.0, 1, 10.0, "manifest not written yet", {"model": "m"})
    late = Pending("m", 2, 0.0, 1, 99.0, "file missing", {"model": "m"})
    parking.park(late)
    parking.park(early)
    assert parking.get("m", 1) == early
    assert parking.get("m", 3) is None
    assert parking.due(now=50.0) == [early]
    assert [p.version for p in parking.due(now=100.0)] == [1, 2]
    parking.release("m", 1)
    parking.release("m", 1)  # idempotent
    assert parking.due(now=100.0) == [late]


def test_damaged_records_are_skipped(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path))
    store.write_bytes("_rollway/pending/m/1.json", b"not json")
    assert list(Parking(store).all()) == []


def test_records_missing_fields_are_skipped(tmp_path: Path) -> None:
    store = open_storage(str(tmp_path))
    store.write_bytes("_rollway/pending/m/1.json", b'{"model": "m"}')
    assert list(Parking(store).all()) == []
