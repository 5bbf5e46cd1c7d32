"""loader/backoff.py: the policy's waits (pure, with an injected random source)
and the retry loops tenacity drives, with a fake sleep: no real waiting, no
timing assertions."""

from __future__ import annotations

import itertools
import logging

import pytest

from loader import backoff
from loader.backoff import Backoff
from loader.errors import NotFound, Unavailable

POLICY = Backoff(initial_seconds=0.5, max_seconds=4.0)


class Flaky:
    """Fails with ``error`` ``failures`` times, then returns ``result``."""

    def __init__(self, failures: int, error: BaseException, result: str = "done") -> None:
        self.failures = failures
        self.error = error
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (5000, 4.0)],
)
def test_the_ceiling_doubles_up_to_the_cap(attempt: int, ceiling: float) -> None:
    assert POLICY.ceiling(attempt) == ceiling


def test_full_jitter_draws_below_the_ceiling() -> None:
    assert POLICY.delay(3, rand=lambda: 0.0) == 0.0
    assert POLICY.delay(3, rand=lambda: 0.25) == 0.5
    assert POLICY.delay(3, rand=lambda: 0.999) == pytest.approx(1.998)


def test_without_jitter_the_wait_is_the_ceiling() -> None:
    exact = Backoff(initial_seconds=1.0, max_seconds=60.0, jitter=False)
    assert list(itertools.islice(exact.delays(rand=lambda: 0.0), 8)) == [
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0,
    ]  # fmt: skip


def test_a_huge_attempt_count_does_not_overflow() -> None:
    assert Backoff(1.0, 60.0, multiplier=2.0).ceiling(10**6) == 60.0
    assert Backoff(1, 60, multiplier=2).ceiling(10**4) == 60.0  # ints from a flag table


def test_the_tenacity_wait_is_the_same_policy() -> None:
    sleeps: list[float] = []
    calls = Flaky(3, KeyError("x"))
    backoff.retry_call(calls, backoff.retrying(POLICY, retry_on=KeyError, max_attempts=5,
                                               sleep=sleeps.append, rand=lambda: 0.5))  # fmt: skip
    assert sleeps == [0.25, 0.5, 1.0]


def test_retry_call_returns_after_retriable_failures() -> None:
    sleeps: list[float] = []
    calls = Flaky(2, NotFound("gone"))
    attempts = backoff.retrying(POLICY, retry_on=NotFound, max_attempts=3, sleep=sleeps.append)
    assert backoff.retry_call(calls, attempts) == "done"
    assert calls.calls == 3
    assert len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)


@pytest.mark.parametrize(
    ("error", "calls", "sleeps"),
    [
        (NotFound("still gone"), 3, 2),  # retriable: the last one, with no wait after it
        (Unavailable("down"), 1, 0),  # not in retry_on: at once
    ],
)
def test_retry_call_raises_the_last_error_as_it_was(
    error: Exception, calls: int, sleeps: int
) -> None:
    waits: list[float] = []
    flaky = Flaky(9, error)
    attempts = backoff.retrying(POLICY, retry_on=NotFound, max_attempts=3, sleep=waits.append)
    with pytest.raises(type(error)) as raised:
        backoff.retry_call(flaky, attempts)
    assert raised.value is error
    assert (flaky.calls, len(waits)) == (calls, sleeps)


def test_the_loop_form_numbers_attempts_and_falls_through_on_giving_up() -> None:
    seen = []
    sleeps: list[float] = []
    for attempt in backoff.retrying(POLICY, retry_on=KeyError, max_attempts=3, sleep=sleeps.append):
        with attempt:
            seen.append(attempt.retry_state.attempt_number)
            raise KeyError("lost")
    assert seen == [1, 2, 3] and len(sleeps) == 2


def test_the_loop_form_returns_from_the_body() -> None:
    def first_win() -> int:
        for attempt in backoff.retrying(POLICY, retry_on=KeyError, max_attempts=3,
                                        sleep=lambda _: None):  # fmt: skip
            with attempt:
                if attempt.retry_state.attempt_number < 2:
                    raise KeyError("lost")
                return attempt.retry_state.attempt_number
        raise AssertionError("gave up")

    assert first_win() == 2


def test_the_loop_form_propagates_other_errors() -> None:
    with pytest.raises(ValueError, match="bug"):
        for attempt in backoff.retrying(POLICY, retry_on=KeyError, max_attempts=3):
            with attempt:
                raise ValueError("bug")


def test_a_deadline_stops_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """tenacity measures the deadline on time.monotonic: a fake clock that the
    fake sleep advances."""
    now = [1000.0]
    monkeypatch.setattr("tenacity.time.monotonic", lambda: now[0])

    def sleep(seconds: float) -> None:
        now[0] += seconds

    calls = Flaky(99, KeyError("held"))
    exact = Backoff(initial_seconds=1.0, max_seconds=1.0, jitter=False)
    attempts = backoff.retrying(exact, retry_on=KeyError, deadline_seconds=3.5, sleep=sleep)
    with pytest.raises(KeyError):
        backoff.retry_call(calls, attempts)
    assert calls.calls == 5  # at 0, 1, 2, 3 and 4 s: the deadline has passed after the fifth


def test_a_loop_must_end() -> None:
    with pytest.raises(ValueError, match="max_attempts or deadline_seconds"):
        backoff.retrying(POLICY, retry_on=KeyError)
    with pytest.raises(ValueError, match="at least 1"):
        backoff.retrying(POLICY, retry_on=KeyError, max_attempts=0)


def test_each_retry_is_logged_at_debug_in_one_format(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="loader.backoff")
    calls = Flaky(2, NotFound("gs://b/k does not exist"))
    attempts = backoff.retrying(
        POLICY, retry_on=(NotFound, KeyError), max_attempts=3, what="listing gs://b",
        sleep=lambda _: None, rand=lambda: 0.5,
    )  # fmt: skip
    backoff.retry_call(calls, attempts)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "listing gs://b: attempt 1 failed (gs://b/k does not exist); "
                        "retrying in 0.250s"),
        (logging.DEBUG, "listing gs://b: attempt 2 failed (gs://b/k does not exist); "
                        "retrying in 0.500s"),
    ]  # fmt: skip


def test_errors_outside_the_tree_are_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="loader.backoff")
    calls = Flaky(1, KeyError("s3://user:secret@host"))
    attempts = backoff.retrying(POLICY, retry_on=KeyError, max_attempts=2, sleep=lambda _: None)
    backoff.retry_call(calls, attempts)
    assert "secret" not in caplog.text and "(KeyError)" in caplog.text
