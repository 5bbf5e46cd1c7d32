"""Loading one version with retries: TF Serving's LoaderHarness.

``--max_num_load_retries`` retries after the first attempt, waiting
``--load_retry_interval_micros`` between attempts, and stopping as soon as the
version is no longer wanted (unaspired, superseded, or the server closing).
A wait ends early when the version's content changes (its fingerprint, checked
every ``CHANGE_POLL_SECONDS``): a version caught half-copied is loaded again as
soon as the copy completes, not when the retry timer fires.
A loader that raises something outside the error tree is a bug: it is logged
with its traceback and reported as a LoadError, never allowed to kill the
loading thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from loader.errors import LoadError, RollwayError
from loader.versions import VersionId

log = logging.getLogger("functions.serving.core.manager")

S = TypeVar("S")

# How often a pending retry checks whether the version's content changed. A
# local fingerprint is a stat walk of the version directory; a remote one is
# the listing of the newest scan, so this costs no storage call.
CHANGE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LoadRetries:
    """``--max_num_load_retries`` and ``--load_retry_interval_micros``."""

    max_retries: int = 5
    interval_seconds: float = 60.0


@dataclass(frozen=True)
class LoadOutcome(Generic[S]):
    servable: S | None
    error: RollwayError
    fingerprint: str | None  # of the content the last attempt read


def load_with_retries(
    load: Callable[[], S],
    version_id: VersionId,
    retry: LoadRetries,
    wanted: Callable[[], bool],
    fingerprint: Callable[[], str],
    closed: threading.Event,
) -> LoadOutcome[S]:
    """Attempts ``load`` until it succeeds, retries run out, or ``wanted()`` is False."""
    error: RollwayError = LoadError("load cancelled: the version is no longer aspired")
    seen: str | None = None
    for attempt in range(retry.max_retries + 1):
        if not wanted():
            break
        seen = fingerprint()
        try:
            return LoadOutcome(load(), error, seen)
        except RollwayError as err:
            error = err
        except Exception as err:  # a loader bug must not kill the pool thread
            log.exception("unexpected error loading %s", version_id)
            error = LoadError(f"{type(err).__name__}: {err}")
        log.warning(
            "loading %s failed (attempt %d of %d): %s",
            version_id, attempt + 1, retry.max_retries + 1, error.message,
        )  # fmt: skip
        waits = attempt < retry.max_retries and retry.interval_seconds > 0
        if waits and _wait_for_retry(retry.interval_seconds, fingerprint, seen, closed):
            log.info("%s changed on storage; retrying now", version_id)
    return LoadOutcome(None, error, seen)


def _wait_for_retry(
    seconds: float, fingerprint: Callable[[], str], seen: str, closed: threading.Event
) -> bool:
    """Waits ``seconds``, or less: True when the content changed from ``seen``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if closed.wait(min(CHANGE_POLL_SECONDS, left)):
            return False
        if fingerprint() != seen:
            return True
    return False
