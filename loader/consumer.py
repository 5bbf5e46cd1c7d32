"""The loader as a Kafka consumer group member, on ``loader.group_consumer``.

Contract: a record's offset is committed only after its outcome is durable:
staged (and its events sent), dead-lettered, parked for retry, or ignored. A
record whose processing fails (the store or Kafka is down) is not committed;
it is delivered again after a backoff, so nothing is lost. Several loader
processes in one group share the partitions; a rebalance waits for the record
in work and commits it before its partition moves, and every step is
idempotent, so a record handed over mid-way anyway is harmless (UNCHANGED).

Parked versions are retried from the store, every ``tick_seconds``, by
whichever loader finds them due. ``stop`` (SIGTERM) lets the record in hand
finish, commits it, and leaves the group.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from loader import emit
from loader.decode import IncomingRecord, decode_record
from loader.group_consumer import GroupConfig, GroupConsumer
from loader.pipeline import Outcome, Pipeline, Result

log = logging.getLogger("rollway.loader")

EVENTS = Counter("rollway_loader_events", "Decisions taken by the loader, by outcome", ["outcome"])
VERIFY_SECONDS = Histogram("rollway_loader_verify_seconds", "Verifying one published version")
STAGE_SECONDS = Histogram("rollway_loader_stage_seconds", "Staging one verified version")
RETRIES_PENDING = Gauge("rollway_loader_retries_pending", "Versions parked for a retry")
FAILURES = Counter("rollway_loader_failures", "Records that failed and will be redelivered")


def record_outcome(result: Result) -> None:
    """Metrics and one structured log line per outcome."""
    EVENTS.labels(result.outcome.value).inc()
    if "verify_s" in result.timings:
        VERIFY_SECONDS.observe(result.timings["verify_s"])
    if "stage_s" in result.timings:
        STAGE_SECONDS.observe(result.timings["stage_s"])
    fields: dict[str, Any] = {
        "outcome": result.outcome.value, "model": result.model, "version": result.version,
        "version_uri": result.version_uri, "reason": result.reason, "cause": result.cause,
        "source_record": result.source_record,
        **{k: round(v, 3) for k, v in result.timings.items()},
    }  # fmt: skip
    if result.assignment is not None:
        fields["generation"] = result.assignment.generation
        fields["assignment_changed"] = result.assignment_changed
    if result.retry_at is not None:
        fields["retry_at"] = result.retry_at
    level = logging.WARNING if result.outcome is Outcome.REJECTED else logging.INFO
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v not in ("", None, -1))
    log.log(level, "outcome %s", text, extra={"fields": fields})


class LoaderConsumer:
    def __init__(
        self,
        pipeline: Pipeline,
        config: GroupConfig,
        emitter: Any,
        topics: emit.Topics,
        source: str,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.emitter = emitter
        self.topics = topics
        self.source = source
        self._group = GroupConsumer(
            "loader", replace(config, client_id=config.client_id or source), self.handle, log,
            tick=self.retry_parked,
        )  # fmt: skip

    def stop(self) -> None:
        """Lets the record in hand finish and commits it, then leaves the group."""
        self._group.stop()

    def process(self, record: IncomingRecord) -> list[Result]:
        """Decodes and handles one record, and sends what its outcomes imply.
        Raises when nothing durable happened (the caller redelivers)."""
        results = []
        for decision in decode_record(record, self.pipeline.decode_config):
            result = self.pipeline.handle(decision)
            self.emitter.send(emit.records_for(result, self.topics, self.source))
            record_outcome(result)
            results.append(result)
        return results

    def retry_parked(self) -> None:
        for result in self.pipeline.retry_due():
            self.emitter.send(emit.records_for(result, self.topics, self.source))
            record_outcome(result)
        RETRIES_PENDING.set(sum(1 for _ in self.pipeline.parking.all()))

    def handle(self, kafka_record: Any) -> None:
        """The group consumer's handler: raises when nothing durable happened."""
        record = IncomingRecord(
            key=kafka_record.key, value=kafka_record.value,
            headers=tuple(kafka_record.headers or ()),
            topic=kafka_record.topic, partition=kafka_record.partition,
            offset=kafka_record.offset,
        )  # fmt: skip
        try:
            self.process(record)
        except Exception:  # store or Kafka down: the group consumer redelivers it
            FAILURES.inc()
            raise

    def run(self) -> None:
        self._group.run()
