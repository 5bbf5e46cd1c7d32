"""Retrying with exponential backoff: rollway's one policy, driven by tenacity.

A ``Backoff`` gives the wait after failed attempt n (1 for the first failure):
its *ceiling* is ``min(max_seconds, initial_seconds * multiplier ** (n - 1))``,
and with ``jitter`` the wait is drawn uniformly from [0, ceiling]: FULL JITTER,
the only jitter in rollway. Full, not equal jitter: the loops that jitter are
optimistic-concurrency races (writers of one assignment, one Knative Service,
one S3 key, one HDFS lock), where spreading retries over the whole interval
ends the race soonest with the fewest calls (AWS's "Exponential Backoff And
Jitter" measured both); equal jitter's floor of half the ceiling only adds
latency there. Schedules that are recorded or shown (a parked version's
``next_at``, follow's "retry in 2s", a function opening its connections) turn
jitter off, so they stay exact.

Two ways to use a policy:

- ``retrying(...)`` / ``retry_call(...)``: tenacity drives a loop that retries
  one operation, stops after ``max_attempts`` and/or ``deadline_seconds``,
  sleeps through the ``sleep`` given (tests pass a fake), and logs each retry
  at DEBUG in one format. No wait follows the last attempt.
- ``delay(n)`` / ``delays()``: for loops that schedule themselves from
  timestamps or wait on an event between rounds, which tenacity cannot drive.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import tenacity

T = TypeVar("T")
Random = Callable[[], float]  # uniform in [0, 1), as random.random
Sleep = Callable[[float], None]
Errors = type[BaseException] | tuple[type[BaseException], ...]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float
    max_seconds: float
    multiplier: float = 2.0
    jitter: bool = True  # full jitter; off for exact schedules

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt ``attempt`` (1-based); never
        raises OverflowError, however many attempts failed."""
        try:
            grown = self.initial_seconds * self.multiplier ** max(0, attempt - 1)
        except OverflowError:
            return float(self.max_seconds)
        return float(min(self.max_seconds, grown))

    def delay(self, attempt: int, rand: Random = random.random) -> float:
        """The wait after failed attempt ``attempt``: the ceiling, or with
        jitter a uniform draw below it from ``rand``."""
        ceiling = self.ceiling(attempt)
        return ceiling * rand() if self.jitter else ceiling

    def delays(self, rand: Random = random.random) -> Iterator[float]:
        """The waits after failed attempts 1, 2, 3, ... (endless)."""
        return (self.delay(attempt, rand) for attempt in itertools.count(1))

    def wait(self, rand: Random = random.random) -> tenacity.wait.wait_base:
        """This policy as a tenacity wait strategy."""
        return _Wait(self, rand)


class _Wait(tenacity.wait.wait_base):
    def __init__(self, backoff: Backoff, rand: Random) -> None:
        self._backoff = backoff
        self._rand = rand

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self._backoff.delay(retry_state.attempt_number, self._rand)


def retrying(
    backoff: Backoff,
    *,
    retry_on: Errors,
    max_attempts: int | None = None,
    deadline_seconds: float | None = None,
    what: str = "",
    sleep: Sleep = time.sleep,
    rand: Random = random.random,
) -> tenacity.Retrying:
    """Attempts of one operation, for ``for attempt in retrying(...): with attempt: ...``.

    The body returns on success and raises one of ``retry_on`` to be tried
    again; any other exception propagates at once. When the attempts or the
    deadline (counted from the first attempt) run out, the loop ends without
    raising: the code after it is the give-up path, and raises what the caller
    wants. ``what`` names the operation in the DEBUG line of each retry.
    """
    stops: list[tenacity.stop.stop_base] = []
    if max_attempts is not None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        stops.append(tenacity.stop_after_attempt(max_attempts))
    if deadline_seconds is not None:
        stops.append(tenacity.stop_after_delay(deadline_seconds))
    if not stops:
        raise ValueError("a retry loop needs max_attempts or deadline_seconds")
    return tenacity.Retrying(
        wait=backoff.wait(rand),
        stop=tenacity.stop_any(*stops),
        retry=tenacity.retry_if_exception_type(retry_on),
        sleep=sleep,
        before_sleep=_logger(what or "operation"),
        # Giving up ends the iteration instead of raising tenacity's RetryError.
        retry_error_callback=_give_up,
    )


def retry_call(fn: Callable[[], T], attempts: tenacity.Retrying) -> T:
    """``fn()`` under ``attempts`` (from ``retrying``); when they run out, the
    last error is raised as it was."""
    result: T = attempts.copy(reraise=True, retry_error_callback=None)(fn)
    return result


def _give_up(retry_state: tenacity.RetryCallState) -> None:
    return None


def _logger(what: str) -> Callable[[tenacity.RetryCallState], None]:
    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        if not _log.isEnabledFor(logging.DEBUG):
            return
        error = retry_state.outcome.exception() if retry_state.outcome else None
        # RollwayError.message is what may be shown; other errors only by type.
        reason = getattr(error, "message", None) or type(error).__name__
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        _log.debug("%s: attempt %d failed (%s); retrying in %.3fs",
                   what, retry_state.attempt_number, reason, wait)  # fmt: skip

    return log_retry
