"""What the REST port's ASGI applications share: their base
(:class:`RestApp`), reading a body under the size limit, and running a
blocking call inline or on a bounded pool.

One :class:`CallRunner` serves every application on the port (TF Serving's
REST API and the Open Inference Protocol's ``/v2``), so
``--rest_api_num_threads`` and the backlog bound the port, not each API.
Its contract, as TF Serving's REST API documents it
(``functions.serving.api.tfserving.rest_api``):

* **Pool.** At most ``BACKLOG_PER_THREAD`` times the threads are admitted
  (running or queued); more get 503 UNAVAILABLE at once. A call not answered
  ``timeout_seconds`` after it was submitted gets 504; one still queued then
  never starts (TensorFlow cannot stop one that runs).
* **Inline.** The call runs on the event loop (no hand-off, no GIL contention
  with a pool; one call at a time). It cannot be interrupted: the timeout is
  checked when it ends, and one that overran answers 504.
* **Bodies.** A Content-Length over the limit gets 413 before any of the
  body is read; a chunked body is cut with 413 at the limit.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

from functions.serving.api.http_errors import error_body, http_status
from functions.serving.api.http_server import Receive, Scope, Send
from functions.serving.metrics import ServingMetrics
from loader.errors import Code, DeadlineExceeded, InvalidArgument, RollwayError, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
Headers = list[tuple[bytes, bytes]]

# Admitted requests (running and queued) per --rest_api_num_threads thread.
BACKLOG_PER_THREAD = 16  # 128 requests on 2 CPUs: more than a client pool or a proxy keeps open


class TooLarge(RollwayError):
    """HTTP's 413: no canonical code says "too large" (the app answers 413 itself)."""

    code = Code.RESOURCE_EXHAUSTED


class ClientGone(Exception):
    """The client disconnected (or timed out) before its body was in."""


class CallRunner:
    """Runs the REST port's blocking calls: inline, or on one bounded pool."""

    def __init__(self, workers: int, timeout_seconds: float, inline: bool = False) -> None:
        self.timeout_seconds = timeout_seconds
        self.inline = inline
        self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix="rollway-rest")
        self._backlog = _Backlog(BACKLOG_PER_THREAD * workers, workers)

    def close(self) -> None:
        """Stops the pool (idempotent: every application on the port may call it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, call: Callable[[], T]) -> T:
        """``call()``'s result within the timeout, inline or on the pool if admitted."""
        if self.inline:
            return self._run_inline(call)
        if not self._backlog.admit():
            raise Unavailable(
                f"Too many REST requests in flight ({self._backlog.limit} running or queued "
                f"for {self._backlog.threads} threads, --rest_api_num_threads); retry later"
            )
        future = self._pool.submit(call)
        future.add_done_callback(self._backlog.release)  # also when cancelled unstarted
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_seconds)
        except asyncio.TimeoutError as err:
            future.cancel()  # still queued: never starts; running: TensorFlow cannot stop
            raise self._timed_out() from err

    def _run_inline(self, call: Callable[[], T]) -> T:
        started = time.monotonic()
        result = call()
        if time.monotonic() - started > self.timeout_seconds:
            raise self._timed_out()  # its result dropped, as a client that timed out would
        return result

    def _timed_out(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"Request timed out after {self.timeout_seconds * 1000:.0f} ms")


class RestApp(abc.ABC):
    """What the port's ASGI applications have in common: HTTP scopes only
    (any other is a ValueError), the port's one ``runner`` and ``metrics``,
    and ``close()``, which stops the runner (the ``Dispatcher`` calls it on
    every application at shutdown). A subclass answers in ``handle``."""

    def __init__(self, runner: CallRunner, metrics: ServingMetrics) -> None:
        self._runner = runner
        self._metrics = metrics

    def close(self) -> None:
        self._runner.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"{type(self).__name__} serves HTTP only, not {scope['type']}")
        await self.handle(scope["method"], scope["path"], scope, receive, send)

    @abc.abstractmethod
    async def handle(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answers one HTTP request, ``method`` on ``path``, with ``send``."""


class _Backlog:
    """Counts admitted requests (running and queued on the pool) up to ``limit``."""

    def __init__(self, limit: int, threads: int) -> None:
        self.limit = limit
        self.threads = threads
        self._admitted = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.limit:
                return False
            self._admitted += 1
            return True

    def release(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (else :class:`TooLarge`);
    :class:`ClientGone` when the client left first."""
    declared = header(scope, b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as err:
            raise InvalidArgument("Content-Length is not a number") from err
        if size > limit:
            raise TooLarge(_too_large(f"{size} bytes", limit))
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        body += message.get("body", b"")
        if len(body) > limit:
            raise TooLarge(_too_large(f"more than {limit} bytes", limit))
        more = message.get("more_body", False)
    return bytes(body)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _too_large(size: str, limit: int) -> str:
    return (
        f"Request body of {size} is larger than the {limit}-byte limit "
        "(--rest_api_max_request_bytes)"
    )


def error_answer(err: Exception, method: str, path: str) -> tuple[int, bytes]:
    """An application's answer to ``err``: ``{"error": ...}`` with 413 for
    :class:`TooLarge`, the error tree's status for a RollwayError, else 500
    (logged with its traceback: a bug)."""
    if isinstance(err, TooLarge):  # HTTP's own status; no canonical code says "too large"
        answer = 413, error_body(err.message)
    elif isinstance(err, RollwayError):
        answer = http_status(err.code), error_body(err.message)
    else:
        log.exception("unexpected error in %s %s", method, path, exc_info=err)
        answer = 500, error_body(f"internal error: {type(err).__name__}: {err}")
    # A pool call's future holds err, whose traceback holds the frames that hold
    # the future, the body and the parsed JSON: a cycle that only a full garbage
    # collection would free. Drop the traceback to break it.
    err.__traceback__ = None
    return answer


async def respond(send: Send, status: int, headers: Headers, payload: bytes) -> None:
    headers = [*headers, (b"Content-Length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
