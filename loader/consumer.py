"""The loader as a Kafka consumer group member (kafka-python).

Contract: a record's offset is committed only after its outcome is durable:
staged (and its events sent), dead-lettered, parked for retry, or ignored. A
record whose processing fails (the store or Kafka is down) is not committed;
the consumer seeks back to it and retries after a backoff, so nothing is lost.
Several loader processes in one group share the partitions; a record is
handled by one of them at a time, and every step is idempotent, so a
rebalance that hands a record to another process mid-way is harmless.

Parked versions are retried from the store by whichever loader finds them due.
``stop`` (SIGTERM) lets the record in hand finish, commits it, and leaves the
group; a record not finished is redelivered to the group.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from loader import emit
from loader.decode import IncomingRecord, decode_record
from loader.pipeline import Outcome, Pipeline, Result

log = logging.getLogger("rollway.loader")

EVENTS = Counter("rollway_loader_events", "Decisions taken by the loader, by outcome", ["outcome"])
VERIFY_SECONDS = Histogram("rollway_loader_verify_seconds", "Verifying one published version")
STAGE_SECONDS = Histogram("rollway_loader_stage_seconds", "Staging one verified version")
RETRIES_PENDING = Gauge("rollway_loader_retries_pending", "Versions parked for a retry")
FAILURES = Counter("rollway_loader_failures", "Records that failed and will be redelivered")


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap: str
    topic: str
    group: str = "rollway-loader"
    session_timeout_ms: int = 10000
    poll_timeout_ms: int = 500
    # How long the broker may hold a fetch open when there is nothing to read: it
    # bounds the publish-to-assignment latency (kafka-python's default is 500 ms).
    fetch_max_wait_ms: int = 50
    retry_scan_seconds: float = 5.0  # how often parked versions are checked
    failure_backoff_seconds: float = 2.0


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
        config: ConsumerConfig,
        emitter: Any,
        topics: emit.Topics,
        source: str,
    ) -> None:
        self.pipeline = pipeline
        self.config = config
        self.emitter = emitter
        self.topics = topics
        self.source = source
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

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

    def run(self) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import OffsetAndMetadata, TopicPartition

        c = self.config
        consumer = KafkaConsumer(
            c.topic, bootstrap_servers=c.bootstrap.split(","), group_id=c.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.session_timeout_ms // 4,
            max_poll_records=16, client_id=self.source,
            fetch_max_wait_ms=c.fetch_max_wait_ms, allow_auto_create_topics=False,
        )  # fmt: skip
        next_scan = 0.0
        log.info("loader consuming %s as group %s", c.topic, c.group)
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=c.poll_timeout_ms)
                for partition, records in batch.items():
                    for kafka_record in records:
                        if self.stopping.is_set():
                            break
                        record = IncomingRecord(
                            key=kafka_record.key, value=kafka_record.value,
                            headers=tuple(kafka_record.headers or ()),
                            topic=kafka_record.topic, partition=kafka_record.partition,
                            offset=kafka_record.offset,
                        )  # fmt: skip
                        try:
                            self.process(record)
                        except Exception as err:  # store or Kafka down: redeliver, never crash
                            FAILURES.inc()
                            log.error("record %s failed, will retry: %s", record.source_record,
                                      getattr(err, "message", err))  # fmt: skip
                            consumer.seek(partition, kafka_record.offset)
                            self.stopping.wait(c.failure_backoff_seconds)
                            break
                        tp = TopicPartition(partition.topic, partition.partition)
                        consumer.commit({tp: OffsetAndMetadata(kafka_record.offset + 1, "", -1)})
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + c.retry_scan_seconds
                    try:
                        self.retry_parked()
                    except Exception as err:  # the store may be down: try at the next scan
                        log.error("retrying parked versions failed: %s", err)
        finally:
            consumer.close(autocommit=False)
            log.info("loader stopped")
