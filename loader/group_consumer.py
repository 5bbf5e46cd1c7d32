"""One Kafka consumer group member that commits a record only after its outcome
is durable: the loop the loader and the rollout share (kafka-python 3).

Contract:

- ``handle(record)`` runs on a worker thread, one record at a time, in
  partition order. It returns once the record's outcome is durable, and
  raises when nothing durable happened: the record is then delivered again
  (seek back) after ``failure_backoff_seconds``, so nothing is lost and the
  process never stops on a bad record or an unreachable store.
- While work runs, every assigned partition is paused and the poll thread
  keeps polling. So a long stage or a long retry never exceeds
  ``max_poll_interval_ms`` and never costs the member its place in the group.
- A rebalance that revokes the partition of the record in work waits for
  that record, up to ``revoke_wait_seconds`` (under the rebalance timeout,
  which is ``max_poll_interval_ms``), and commits it before the partition
  moves: the new owner starts after it, so a record handed over mid-rebalance
  is not handled twice at once. If the wait runs out, the record is handed
  over uncommitted and the new owner handles it again (handlers are
  idempotent: a version staged already is UNCHANGED).
- A commit refused because the group rebalanced (``CommitFailedError`` and
  its kin) is logged and the member carries on: the next poll rejoins, and
  the partition's new owner redelivers the record.
- ``tick()``, when given, runs on the worker every ``tick_seconds`` while no
  record is in work (the loader's parked retries, the rollout's resync).
- ``stop()`` lets the work in hand finish, commits it, and leaves the group.

Why kafka-python's asynchronous rebalance listener: its callbacks run on the
client's IO loop, which also drives heartbeats; a listener that blocked until
the work finished would stop heartbeats, and one that called the blocking
``commit()`` is refused by the client. The asynchronous listener awaits, so
the loop stays responsive while the revoke waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from kafka import AsyncConsumerRebalanceListener

# How often a revoke that waits for the record in work looks again, and how
# long a poll waits while work runs (how soon a finished record is committed).
_WAIT_STEP_SECONDS = 0.05
_POLL_WHILE_WORKING_MS = 100


@dataclass(frozen=True)
class GroupConfig:
    bootstrap: str  # host:port[,host:port...]
    topic: str
    group: str
    client_id: str = ""
    session_timeout_ms: int = 10_000
    # Also the rebalance timeout: how long the group waits for this member to
    # rejoin. The poll thread keeps polling while work runs, so work may last
    # longer than this; it bounds only how long a revoke waits for that work.
    max_poll_interval_ms: int = 300_000
    poll_timeout_ms: int = 500
    # How long the broker may hold a fetch open when there is nothing to read:
    # it bounds the latency from a record's arrival to its handling.
    fetch_max_wait_ms: int = 50
    failure_backoff_seconds: float = 2.0
    tick_seconds: float = 0.0  # 0: no tick

    @property
    def revoke_wait_seconds(self) -> float:
        """Under the rebalance timeout, with room left to commit and rejoin."""
        margin_ms = min(self.max_poll_interval_ms / 10, 5_000)
        return max(0.0, (self.max_poll_interval_ms - margin_ms) / 1e3)


@dataclass(eq=False)
class _Work:
    """A record (or a tick, with ``record`` None) running on the worker."""

    future: futures.Future[None]
    record: Any = None
    committed: bool = False  # by a revoke, before its partition moved

    def partition(self) -> Any:
        from kafka.structs import TopicPartition

        return TopicPartition(self.record.topic, self.record.partition)


class GroupConsumer:
    def __init__(
        self,
        name: str,
        config: GroupConfig,
        handle: Callable[[Any], None],
        log: logging.Logger,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """``name`` ("loader", "rollout") starts its log lines: ``<name>
        consuming <topic> as group <group>`` says the member is up (rollway up
        and the demo wait for it)."""
        self.name = name
        self.config = config
        self._handle = handle
        self._tick = tick
        self._log = log
        self._stopping = threading.Event()
        self._work: _Work | None = None
        self._paused_until = 0.0  # after a failure: monotonic time to resume
        self._next_tick = 0.0

    def stop(self) -> None:
        """Finishes the work in hand, commits it, leaves the group (any thread)."""
        self._stopping.set()

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    def run(self) -> None:
        from kafka import KafkaConsumer

        c = self.config
        consumer = KafkaConsumer(
            bootstrap_servers=c.bootstrap.split(","), group_id=c.group,
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=max(c.session_timeout_ms // 4, 100),
            max_poll_interval_ms=c.max_poll_interval_ms,
            # One record at a time: the rest stay in Kafka (or the client's
            # fetch buffer) until this one is durable.
            max_poll_records=1, client_id=c.client_id or "rollway",
            fetch_max_wait_ms=c.fetch_max_wait_ms, allow_auto_create_topics=False,
        )  # fmt: skip
        consumer.subscribe([c.topic], listener=_Listener(self, consumer))
        self._log.info("%s consuming %s as group %s", self.name, c.topic, c.group)
        pool = futures.ThreadPoolExecutor(1, thread_name_prefix=f"rollway-{self.name}-work")
        try:
            while not (self._stopping.is_set() and self._work is None):
                self._poll_once(consumer, pool)
        finally:
            pool.shutdown(wait=True)
            consumer.close(autocommit=False)
            self._log.info("%s stopped consuming %s", self.name, c.topic)

    # ---------------------------------------------------------------- internal

    def _poll_once(self, consumer: Any, pool: futures.ThreadPoolExecutor) -> None:
        waiting = self._work is not None or time.monotonic() < self._paused_until
        if waiting:
            # Kept paused across rebalances: a newly assigned partition too.
            consumer.pause(*consumer.assignment())
        else:
            consumer.resume(*consumer.paused())
        timeout = _POLL_WHILE_WORKING_MS if waiting else self.config.poll_timeout_ms
        batch = consumer.poll(timeout_ms=timeout)
        records = [r for rs in batch.values() for r in rs]
        if waiting or self._stopping.is_set():
            _put_back(consumer, records)  # polled before a pause took effect
        elif records:
            first, rest = records[0], records[1:]
            _put_back(consumer, rest)
            self._work = _Work(pool.submit(self._handle, first), first)
        if self._work is not None and self._work.future.done():
            self._finish(consumer, self._work)
            self._work = None
        if self._work is None and not self._stopping.is_set() and self._tick_due():
            self._work = _Work(pool.submit(self._run_tick))

    def _tick_due(self) -> bool:
        if self._tick is None or self.config.tick_seconds <= 0:
            return False
        if time.monotonic() < self._next_tick:
            return False
        self._next_tick = time.monotonic() + self.config.tick_seconds
        return True

    def _run_tick(self) -> None:
        assert self._tick is not None
        try:
            self._tick()
        except Exception as err:  # the store may be down: try at the next tick
            self._log.error("periodic work failed: %s", getattr(err, "message", err))

    def _finish(self, consumer: Any, work: _Work) -> None:
        if work.record is None:
            return  # a tick: nothing to commit
        record, error = work.record, work.future.exception()
        where = f"{record.topic}/{record.partition}@{record.offset}"
        if error is not None:
            self._log.error("record %s failed, will retry: %s", where,
                            getattr(error, "message", error))  # fmt: skip
            if work.partition() in consumer.assignment():
                consumer.seek(work.partition(), record.offset)
            self._paused_until = time.monotonic() + self.config.failure_backoff_seconds
            return
        if not work.committed:
            _commit(consumer, work, self._log)

    def _revoking(self, revoked: Iterable[Any]) -> _Work | None:
        """The work whose record is on a revoked partition, if any."""
        work = self._work
        if work is None or work.record is None or work.partition() not in set(revoked):
            return None
        return work


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on the client's IO loop; awaits, never blocks (see the module doc)."""

    def __init__(self, owner: GroupConsumer, consumer: Any) -> None:
        self._owner = owner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        log = self._owner._log
        log.info("partitions revoked: %s", _names(revoked))
        work = self._owner._revoking(revoked)
        if work is None:
            return
        deadline = time.monotonic() + self._owner.config.revoke_wait_seconds
        while not work.future.done() and time.monotonic() < deadline:
            await self._sleep(_WAIT_STEP_SECONDS)
        record = work.record
        where = f"{record.topic}/{record.partition}@{record.offset}"
        if not work.future.done():
            log.warning("record %s still in work when its partition moves: its new owner "
                        "will handle it again", where)  # fmt: skip
            return
        if work.future.exception() is not None:
            return  # not durable: the new owner delivers it again
        from kafka.structs import OffsetAndMetadata

        try:
            await self._consumer.commit_async(
                {work.partition(): OffsetAndMetadata(record.offset + 1, "", -1)}
            )
        except Exception as err:  # the group moved on: the new owner redelivers it
            log.warning("committing %s before the rebalance failed: %s", where, err)
            return
        work.committed = True
        log.info("record %s finished and committed before its partition moved", where)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        self._owner._log.info("partitions assigned: %s", _names(assigned))

    async def on_partitions_lost(self, lost: set[Any]) -> None:
        self._owner._log.warning("partitions lost (this member left the group): %s; "
                                 "their records will be delivered again", _names(lost))  # fmt: skip

    async def _sleep(self, seconds: float) -> None:
        # The IO loop's own sleep: kafka-python 3 has no public awaitable for
        # it, and time.sleep here would stop heartbeats (pinned in pyproject).
        await self._consumer._net.sleep(seconds)


def _commit(consumer: Any, work: _Work, log: logging.Logger) -> None:
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    record = work.record
    try:
        consumer.commit({work.partition(): OffsetAndMetadata(record.offset + 1, "", -1)})
    except KafkaError as err:  # CommitFailedError after a rebalance, and its kin
        log.warning("commit of %s/%d@%d refused (%s): the group rebalanced; its new owner "
                    "will deliver it again", record.topic, record.partition, record.offset,
                    err)  # fmt: skip


def _put_back(consumer: Any, records: list[Any]) -> None:
    """Seeks each partition back to the first of ``records`` polled on it."""
    from kafka.structs import TopicPartition

    first: dict[Any, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        first[tp] = min(first.get(tp, r.offset), r.offset)
    for tp, offset in first.items():
        if tp in consumer.assignment():
            consumer.seek(tp, offset)


def _names(partitions: Iterable[Any]) -> str:
    return ", ".join(sorted(f"{p.topic}/{p.partition}" for p in partitions)) or "none"
