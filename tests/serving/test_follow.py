"""functions.serving.core.assignments.follow's loop, with a fake target (pure logic, no I/O): the
newest generation wins, older and duplicate ones are dropped, failures back off."""

from __future__ import annotations

import types
from collections.abc import Sequence

import pytest

from functions.serving.core.assignments import follow
from functions.serving.core.assignments.settings import AssignmentSettings
from functions.serving.metrics import ServingMetrics
from loader.errors import LoadError
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.storage import Storage


class FakeTarget:
    def __init__(self, fail: int = 0) -> None:
        self.served = {"m": 3}
        self.swaps: list[int] = []
        self.fail = fail  # swaps that raise before one succeeds

    @property
    def models(self) -> Sequence[str]:
        return sorted(self.served)

    @property
    def store(self) -> Storage:
        raise AssertionError("not used")

    def generation(self, model: str) -> int:
        return self.served[model]

    def swap(self, new: AssignmentChanged) -> bool:
        self.swaps.append(new.generation)
        if self.fail:
            self.fail -= 1
            raise LoadError("does not load")
        self.served[new.model] = new.generation
        return True


def gen(n: int, model: str = "m") -> AssignmentChanged:
    return AssignmentChanged(model=model, generation=n)


def follower(target: FakeTarget) -> follow.Follower:
    return follow.Follower(
        target, AssignmentSettings(store="s3://b", follow="poll"), ServingMetrics()
    )


def test_only_the_newest_generation_of_a_served_model_is_applied() -> None:
    target = FakeTarget()
    loop = follower(target)
    for assignment in (gen(2), gen(3), gen(5), gen(4), gen(9, model="other"), gen(5)):
        loop.offer(assignment)
    loop.apply_due()
    assert target.swaps == [5]
    loop.offer(gen(5))  # a replay
    loop.apply_due()
    assert target.swaps == [5] and target.served == {"m": 5}


def test_a_failing_generation_backs_off_and_a_newer_one_replaces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    clock = types.SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr("functions.serving.core.assignments.follow.time", clock)
    target = FakeTarget(fail=2)
    loop = follower(target)
    loop.offer(gen(4))
    loop.apply_due()
    loop.apply_due()  # not due yet: 1 s backoff
    assert target.swaps == [4]
    now[0] += 1.0
    loop.apply_due()  # fails again: 2 s backoff
    now[0] += 1.0
    loop.apply_due()
    assert target.swaps == [4, 4] and target.served == {"m": 3}
    loop.offer(gen(6))  # newer: tried at once
    loop.apply_due()
    assert target.swaps == [4, 4, 6] and target.served == {"m": 6}
