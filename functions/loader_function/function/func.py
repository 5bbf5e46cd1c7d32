"""The loader as a Knative function: the sink that a KafkaSource POSTs each
record of the publish topic to (binary-mode CloudEvents, see
``loader.decode.decode_http``), served by func-python's ASGI middleware.

The answer is the whole contract with the KafkaSource, which retries 5xx, 404,
408, 409 and 429 with backoff, then hands the delivery to its dead-letter sink,
and drops every other 4xx at once:

- 200: done for good: STAGED, UNCHANGED, IGNORED, or REJECTED once its
  VersionRejected is on the dead-letter topic. Every event an outcome implies
  is on Kafka (acks=all) before the answer goes out.
- 503: try again later: a version still INCOMPLETE (RETRY; it is parked in the
  store too), the store or Kafka unreachable, or the function not ready yet.
- 400 (no ce-specversion/ce-id/ce-source/ce-type, or not specversion 1.0) and
  415 (structured or batched CloudEvents): a request that can never succeed.
  405 for any method but POST.

``POST /dead-letter`` takes what the KafkaSource gave up on (its
``deadLetterSink``, with Knative's ``knativeerror*`` extensions) and sends a
VersionRejected that says why, so the dead-letter topic holds every version
that never made it. The body of the answer is a small JSON object:
``{"status": ..., "results": [{"outcome", "model", "version", "reason"}]}``.

Taking the request in and answering it is ``functions.func_asgi``, shared
with the rollout function. Pipeline work blocks (storage, Kafka), so it runs in worker threads
(``asyncio.to_thread``) and the health endpoints stay responsive. Stores and
Kafka are opened in a background thread, retried with backoff: ``ready()`` is
true once Kafka and the serving store answered, and a configuration error makes
``alive()`` false, so that Kubernetes restarts the container and shows why.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from functions import func_asgi, loader_cmd, settings
from functions.func_asgi import Answer
from functions.serving import logs
from loader import backoff, display, emit
from loader.consumer import FAILURES, record_outcome
from loader.decode import MAX_EVENT_BYTES, Decision, Rejected, decode_http
from loader.errors import ConfigError, InvalidArgument, RollwayError, Unavailable
from loader.pipeline import LoaderConfig, Outcome, Pipeline, Result

log = logging.getLogger("rollway.loader")

DEAD_LETTER_PATH = "/dead-letter"
MAX_REASON_CHARS = 500  # Knative keeps 1024 bytes of an answer as knativeerrordata
PROBE_PREFIX = "_rollway/readiness-probe/"  # listed, never written: absent is fine
MAX_OPEN_BACKOFF_SECONDS = 30.0
# Opening Kafka and the store again: exact delays (no jitter), since each
# failure is logged and ready() says why.
OPEN_RETRIES = backoff.Backoff(
    initial_seconds=1.0, max_seconds=MAX_OPEN_BACKOFF_SECONDS, jitter=False
)


@dataclass(frozen=True)
class Settings:
    loader: LoaderConfig
    bootstrap: str
    topics: emit.Topics
    log_format: str
    log_level: str
    metrics_port: int
    metrics_address: str


def settings_from(env: Mapping[str, str]) -> Settings:
    """The ROLLWAY_* variables of ``rollway loader`` (``loader_cmd.LoaderSettings``),
    read and validated once (``functions.settings.from_env``); ConfigError names
    the bad one. The consumer-only ones (topic, group, session timeout) have no
    effect here: the KafkaSource consumes."""
    args = settings.from_env(loader_cmd.LoaderSettings, env)
    try:
        loader_config, _, topics = loader_cmd.config_from(args)
    except ImportError as err:  # ModelServerConfig is tensorflow-serving-api's message
        raise ConfigError(
            f"ROLLWAY_MODEL_CONFIG needs the tensorflow-serving-api package ({err})"
        ) from None
    loader_config.decode_config()  # a bad root is a ConfigError now, not per event
    # The log format and level and the metrics port were checked by from_env.
    return Settings(
        loader_config, args.bootstrap_servers, topics, args.log_format, args.log_level,
        args.metrics_port, args.metrics_address,
    )  # fmt: skip


def new() -> LoaderFunction:
    """The instance func-python serves (the Knative python template's entry point)."""
    return LoaderFunction()


class LoaderFunction(func_asgi.Sink):
    """One per process; ``handle`` runs concurrently (Knative's containerConcurrency)
    and every pipeline step is idempotent, so concurrent or repeated deliveries
    of one version are harmless."""

    limit = MAX_EVENT_BYTES  # a larger body is dead-lettered unparsed

    def __init__(self) -> None:
        self.source = emit.source_name("loader")
        self._settings: Settings | None = None
        self._pipeline: Pipeline | None = None
        self._emitter: emit.KafkaEmitter | None = None
        self._ready = False
        self._why = "not started"  # why not ready, for /health/readiness
        self._broken = ""  # a configuration error: not alive
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # -- lifecycle (func-python calls these) ------------------------------------

    def start(self, cfg: Mapping[str, str]) -> None:
        """Reads the configuration and opens Kafka and the store in the background.
        Never raises: hypercorn would only log the error and serve on, unready."""
        try:
            settings = settings_from(cfg)
            logs.configure(settings.log_format, settings.log_level)
            if settings.metrics_port:
                from prometheus_client import start_http_server

                start_http_server(settings.metrics_port, settings.metrics_address)
        except (RollwayError, OSError) as err:
            self._broken = f"configuration: {getattr(err, 'message', err)}"
            log.error("rollway loader function cannot start: %s", self._broken)
            return
        self._settings = settings
        self._why = "opening Kafka and the store"
        threading.Thread(target=self._open, name="rollway-loader-open", daemon=True).start()

    def stop(self) -> None:
        """Flushes and closes the Kafka producer; deliveries still in hand are not
        acknowledged, so the KafkaSource sends them again (to another replica)."""
        self._stopping.set()
        with self._lock:
            emitter, self._emitter, self._ready = self._emitter, None, False
            self._why = "stopping"
        if emitter is not None:
            emitter.close()
        log.info("rollway loader function stopped")

    def alive(self) -> tuple[bool, str]:
        return (False, self._broken) if self._broken else (True, "alive")

    def ready(self) -> tuple[bool, str]:
        with self._lock:
            return (True, "ready") if self._ready else (False, f"not ready: {self._why}")

    def _open(self) -> None:
        delays = OPEN_RETRIES.delays()
        while not self._stopping.is_set() and not self._open_once():
            self._stopping.wait(next(delays))

    def _open_once(self) -> bool:
        """One attempt; True when done (ready, or broken for good)."""
        settings = self._settings
        assert settings is not None
        store = display.uri(settings.loader.store_uri)
        pipeline = self._pipeline
        if pipeline is None:
            try:
                pipeline = Pipeline(settings.loader)
            except InvalidArgument as err:  # ConfigError too: a bad URI or S3 setting
                self._broken = f"configuration: {err.message}"
                log.error("rollway loader function cannot start: %s", self._broken)
                return True
            except Exception as err:
                return self._unready(f"cannot open the store {store}: {display.error(err)}")
            with self._lock:
                self._pipeline = pipeline
        if self._emitter is None:
            try:
                emitter = emit.KafkaEmitter(settings.bootstrap)
            except Exception as err:
                kafka = settings.bootstrap
                return self._unready(f"Kafka at {kafka} is unreachable: {display.error(err)}")
            with self._lock:
                if self._stopping.is_set():
                    emitter.close()
                    return True
                self._emitter = emitter
        try:
            # A missing bucket or bad credentials fail here too, not only a dead endpoint.
            next(iter(pipeline.store.list(PROBE_PREFIX)), None)
        except Exception as err:
            return self._unready(f"the store {store} is unreachable: {display.error(err)}")
        with self._lock:
            self._ready, self._why = True, ""
        log.info("rollway loader function ready: store %s, Kafka %s", store, settings.bootstrap)
        return True

    def _unready(self, why: str) -> bool:
        with self._lock:
            self._why = why
        log.warning("rollway loader function not ready: %s", why)
        return False

    # -- requests -----------------------------------------------------------------

    async def answer(self, scope: func_asgi.Scope, delivery: func_asgi.Delivery) -> Answer:
        headers, body = delivery.headers, delivery.body
        dead_letter = str(scope.get("path", "/")).rstrip("/") == DEAD_LETTER_PATH
        try:
            answer = await asyncio.to_thread(self._deliver, headers, body, dead_letter)
        except Exception as err:  # nothing durable happened: the KafkaSource redelivers
            FAILURES.inc()
            reason = display.error(err)
            log.error(
                "delivery %s failed, answering 503: %s", display.quoted(headers["ce-id"]), reason
            )
            answer = Answer(503, {"status": "unavailable", "reason": reason})
        return answer

    def _deliver(self, headers: Mapping[str, str], body: bytes | None, dead_letter: bool) -> Answer:
        """Runs in a worker thread. Raises when nothing durable happened."""
        with self._lock:
            pipeline, emitter, settings = self._pipeline, self._emitter, self._settings
        if self._broken:
            raise Unavailable(f"the loader cannot start: {self._broken}")
        if pipeline is None or emitter is None or settings is None:
            raise Unavailable(f"the loader is not ready: {self._why}")
        if body is None:
            reason = f"the HTTP body is over MAX_EVENT_BYTES ({MAX_EVENT_BYTES} bytes); not parsed"
            decisions: list[Decision] = [
                Rejected(reason, source_record=display.name(headers["ce-id"]))
            ]
        else:
            decisions = decode_http(headers, body, pipeline.decode_config)
        results = []
        for decision in decisions:
            if dead_letter:
                result = self._abandoned(pipeline, decision, headers)
            else:
                result = pipeline.handle(decision)
            emitter.send(emit.records_for(result, settings.topics, self.source))
            record_outcome(result)
            results.append(result)
        return answer_for(results)

    @staticmethod
    def _abandoned(pipeline: Pipeline, decision: Decision, headers: Mapping[str, str]) -> Result:
        """A delivery the KafkaSource gave up on gets one last run: it may have
        been staged after all (an answer lost to a timeout). Still INCOMPLETE, it
        is rejected for good and no longer parked, since nothing would retry it."""
        log.warning("dead-lettered delivery %s; its last answer was %s",
                    display.quoted(headers["ce-id"]), last_answer(headers))  # fmt: skip
        result = pipeline.handle(decision)
        if result.outcome is not Outcome.RETRY:
            return result
        pipeline.parking.release(result.model, result.version)
        reason = f"{gave_up_reason(headers)}; the version is still INCOMPLETE: {result.reason}"
        return dataclasses.replace(result, outcome=Outcome.REJECTED, reason=reason, retry_at=None)


# -- answers and reasons (pure) -----------------------------------------------------


def answer_for(results: list[Result]) -> Answer:
    """503 if any version must be retried (the others are redone harmlessly), else 200."""
    retry = [r.retry_at for r in results if r.outcome is Outcome.RETRY]
    entries = []
    for result in results:
        entry: dict[str, Any] = {"outcome": result.outcome.value}
        if result.model:
            entry["model"] = result.model
        if result.version >= 0:
            entry["version"] = result.version
        if result.reason:
            entry["reason"] = display.text(result.reason)[:MAX_REASON_CHARS]
        if result.assignment is not None:
            entry["generation"] = result.assignment.generation
        entries.append(entry)
    if not retry:
        return Answer(200, {"status": "done", "results": entries})
    due = min((at for at in retry if at is not None), default=None)
    wait = max(1, round(due - time.time())) if due is not None else 5
    retry_after = ((b"retry-after", str(wait).encode()),)
    return Answer(503, {"status": "retry", "results": entries}, retry_after)


def gave_up_reason(headers: Mapping[str, str]) -> str:
    """Why a delivery reached the dead-letter route, from Knative's extensions."""
    code = headers.get("ce-knativeerrorcode", "")
    code = code if code.isdigit() and len(code) == 3 else "unknown"
    return f"the KafkaSource gave up on this delivery after its retries (last answer: HTTP {code})"


def last_answer(headers: Mapping[str, str]) -> str:
    """The failed delivery's last answer (knativeerrordata: at most 1024 bytes of
    its body, base64), for the log; shown and scrubbed, since anyone may send it."""
    data = headers.get("ce-knativeerrordata", "")
    try:
        text = base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        text = data
    return display.quoted(display.text(text), 300)
