"""The rollout as a Knative function: the sink that a KafkaSource on the
assignments topic POSTs each record to (binary-mode CloudEvents: the record's
own ``dev.rollway.assignment.changed.v1``, or ``dev.knative.kafka.event``
wrapping a plain record), served by func-python's ASGI middleware.

The answer is the whole contract with the KafkaSource, which retries 5xx, 404,
408, 409 and 429 with backoff, then hands the delivery to its dead-letter
sink, and drops every other 4xx at once:

- 200: done for good: every Service of the model rolled out, or nothing to do
  (another event type, a tombstone, a generation already taken, no Service),
  or refused for good (a bad annotation, a Service of another model; logged).
- 503: try again later: the Kubernetes API unreachable or the Service kept
  changing (``failed``), or the function not ready.
- 400: not a binary-mode CloudEvent, or a body that can never be an
  AssignmentChanged; 415 for structured or batched CloudEvents; 405 for any
  method but POST.

The body is ``{"status": ..., "reason": ..., "results": [{"service",
"outcome", "generation", "revision", "reason"}]}``. Kubernetes calls block, so
they run in a worker thread (``asyncio.to_thread``). Taking the request in
and answering it is ``functions.func_asgi``, shared with the loader function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

from functions import func_asgi, settings
from functions.func_asgi import Answer
from functions.rollout import apply, handler
from functions.rollout.settings import FunctionLogSettings, RolloutConfig, config_from_env
from functions.serving import logs
from loader.decode import MAX_EVENT_BYTES
from loader.errors import RollwayError

log = logging.getLogger("rollway.rollout")


def new() -> RolloutFunction:
    """The instance func-python serves (the Knative python template's entry point)."""
    return RolloutFunction()


class RolloutFunction(func_asgi.Sink):
    """One per process. Concurrent deliveries are safe (every write is a
    conditional patch, retried on conflict), but keep the KafkaSource's
    delivery ordered so that a model's generations arrive in order."""

    limit = MAX_EVENT_BYTES  # a larger body gets 400

    def __init__(self, api_factory: Callable[[], apply.ServicesApi] = apply.load_api) -> None:
        self._api_factory = api_factory
        self._api: apply.ServicesApi | None = None
        self._config: RolloutConfig | None = None
        self._broken = "not started"

    def start(self, cfg: Mapping[str, str]) -> None:
        """Reads the configuration and the Kubernetes credentials; never raises
        (hypercorn would only log it): a problem makes ``alive()`` false."""
        try:
            logging_ = settings.from_env(FunctionLogSettings, cfg)
            logs.configure(logging_.log_format, logging_.log_level)
            self._config = config_from_env(cfg)
            self._api = self._api_factory()
        except (RollwayError, OSError, ValueError) as err:
            self._broken = f"configuration: {getattr(err, 'message', err)}"
            log.error("rollway rollout function cannot start: %s", self._broken)
            return
        self._broken = ""
        log.info("rollway rollout function ready: namespace %s", self._config.namespace)

    def stop(self) -> None:
        log.info("rollway rollout function stopped")

    def alive(self) -> tuple[bool, str]:
        return (
            (False, self._broken) if self._broken.startswith("configuration") else (True, "alive")
        )

    def ready(self) -> tuple[bool, str]:
        return (False, f"not ready: {self._broken}") if self._broken else (True, "ready")

    async def answer(self, scope: func_asgi.Scope, delivery: func_asgi.Delivery) -> Answer:
        headers, body = delivery.headers, delivery.body
        if body is None:
            too_big = f"the body is over {MAX_EVENT_BYTES} bytes"
            return Answer(400, {"status": "invalid", "reason": too_big})
        try:
            return await asyncio.to_thread(self.deliver, headers, body)
        except Exception as err:  # nothing durable happened: the KafkaSource redelivers
            reason = getattr(err, "message", None) or f"{type(err).__name__}: {err}"
            log.error("delivery %s failed, answering 503: %s", headers["ce-id"][:200], reason)
            return Answer(503, {"status": "unavailable", "reason": reason[:500]})

    def deliver(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """Runs in a worker thread; raises when the delivery must be retried."""
        if self._api is None or self._config is None:
            raise RuntimeError(f"the rollout function is not ready: {self._broken}")
        decoded = handler.decode_http(headers, body)
        if isinstance(decoded, handler.Skip):
            status = "invalid" if decoded.malformed else "ignored"
            reply = {"status": status, "reason": decoded.reason}
            return Answer(400 if decoded.malformed else 200, reply)
        reports = handler.roll_out(self._api, self._config, decoded)
        return Answer(200, {"status": "done", "results": results(reports)})


def results(reports: Iterable[handler.Report]) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(r).items() if v not in ("", None)} for r in reports]
