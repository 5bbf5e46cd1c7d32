"""The rollout as a Kafka consumer group member (kafka-python), on the
compacted assignments topic.

Contract, as the loader's (both run on ``loader.group_consumer``): a record's
offset is committed only once its rollout is durable in the API server (or
there was nothing to do, or it was refused for good). A retriable failure (the
API unreachable) delivers the record again after a backoff, so nothing is
lost; replays are harmless because a Service ignores generations it has
taken (``rollway.dev/generation``). The topic is compacted and read from the
earliest offset by a new group, so a first start rolls out each model's newest
generation. Several processes in one group share the partitions (a model is
one key, so one partition, so one process at a time).

Every ``tick_seconds`` the Services this process rolled out are read again
and failed revisions taken out of their traffic (``plan.heal``): Knative marks
a revision failed minutes after the rollout, and nobody else would notice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from functions.rollout import apply, handler
from functions.rollout.settings import RolloutConfig
from loader.errors import RollwayError
from loader.group_consumer import GroupConfig, GroupConsumer

log = logging.getLogger("rollway.rollout")


class RolloutConsumer:
    def __init__(
        self,
        api: apply.ServicesApi,
        rollout: RolloutConfig,
        config: GroupConfig,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.rollout = rollout
        self.config = config
        self.sleep = sleep
        self.touched: set[str] = set()  # Services to resync
        self._group = GroupConsumer("rollout", config, self.handle, log, tick=self.resync)

    def stop(self) -> None:
        """Lets the record in hand finish and commits it, then leaves the group."""
        self._group.stop()

    def handle(self, record: Any) -> None:
        """The group consumer's handler: raises when it must be delivered again."""
        self.process(record.value, tuple(record.headers or ()), record.key)

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
            if applied.outcome is apply.ApplyOutcome.PATCHED:
                log.warning("Service %s: failed revisions taken out of its traffic", name)
            elif applied.outcome is apply.ApplyOutcome.ABSENT:
                self.touched.discard(name)

    def run(self) -> None:
        log.info("rollout into namespace %s", self.rollout.namespace)
        self._group.run()
