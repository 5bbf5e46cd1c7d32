"""The rollout as a Kafka consumer group member (kafka-python), on the
compacted assignments topic.

Contract, as the loader's (``loader/consumer.py``): a record's offset is
committed only once its rollout is durable in the API server (or there was
nothing to do, or it was refused for good). A retriable failure (the API
unreachable) seeks back to the record and retries after a backoff, so nothing
is lost; replays are harmless because a Service ignores generations it has
taken (``rollway.dev/generation``). The topic is compacted and read from the
earliest offset by a new group, so a first start rolls out each model's newest
generation. Several processes in one group share the partitions (a model is
one key, so one partition, so one process at a time).

Every ``resync_seconds`` the Services this process rolled out are read again
and failed revisions taken out of their traffic (``plan.heal``): Knative marks
a revision failed minutes after the rollout, and nobody else would notice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from functions.rollout import apply, handler
from functions.rollout.settings import RolloutConfig
from loader.errors import RollwayError

log = logging.getLogger("rollway.rollout")


@dataclass(frozen=True)
class ConsumerConfig:
    bootstrap: str
    topic: str
    group: str = "rollway-rollout"
    session_timeout_ms: int = 10000
    poll_timeout_ms: int = 500
    failure_backoff_seconds: float = 2.0
    resync_seconds: float = 60.0  # 0: never


class RolloutConsumer:
    def __init__(
        self,
        api: apply.ServicesApi,
        rollout: RolloutConfig,
        config: ConsumerConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.rollout = rollout
        self.config = config
        self.sleep = sleep
        self.stopping = threading.Event()
        self.touched: set[str] = set()  # Services to resync

    def stop(self) -> None:
        self.stopping.set()

    def process(
        self, value: bytes | None, headers: Sequence[tuple[str, bytes]], key: bytes | None
    ) -> list[handler.Report]:
        """Rolls out one record; raises when it must be delivered again."""
        decoded = handler.decode_record(value, headers, key)
        if isinstance(decoded, handler.Skip):
            level = logging.WARNING if decoded.malformed else logging.DEBUG
            log.log(level, "record skipped: %s", decoded.reason)
            return []
        reports = handler.roll_out(self.api, self.rollout, decoded, sleep=self.sleep)
        self.touched.update(r.service for r in reports if r.outcome in ("created", "patched"))
        return reports

    def resync(self) -> None:
        for name in sorted(self.touched):
            try:
                applied = handler.heal_service(self.api, self.rollout.namespace, name)
            except RollwayError as err:
                log.warning("resync of Service %s failed: %s", name, err.message)
                continue
            if applied.outcome is apply.Outcome.PATCHED:
                log.warning("Service %s: failed revisions taken out of its traffic", name)
            elif applied.outcome is apply.Outcome.ABSENT:
                self.touched.discard(name)

    def run(self) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import OffsetAndMetadata, TopicPartition

        c = self.config
        consumer = KafkaConsumer(
            c.topic, bootstrap_servers=c.bootstrap.split(","), group_id=c.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.session_timeout_ms // 4,
            max_poll_records=16, allow_auto_create_topics=False,
        )  # fmt: skip
        next_resync = time.monotonic() + c.resync_seconds
        log.info("rollout consuming %s as group %s, namespace %s",
                 c.topic, c.group, self.rollout.namespace)  # fmt: skip
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=c.poll_timeout_ms)
                for partition, records in batch.items():
                    for record in records:
                        if self.stopping.is_set():
                            break
                        try:
                            self.process(record.value, tuple(record.headers or ()), record.key)
                        except Exception as err:  # the API is down: redeliver, never crash
                            log.error("record %s/%d@%d failed, will retry: %s", record.topic,
                                      record.partition, record.offset,
                                      getattr(err, "message", err))  # fmt: skip
                            consumer.seek(partition, record.offset)
                            self.stopping.wait(c.failure_backoff_seconds)
                            break
                        tp = TopicPartition(partition.topic, partition.partition)
                        consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "", -1)})
                if c.resync_seconds > 0 and time.monotonic() >= next_resync:
                    next_resync = time.monotonic() + c.resync_seconds
                    self.resync()
        finally:
            consumer.close(autocommit=False)
            log.info("rollout stopped")
