"""loader.group_consumer's decisions, on a stand-in for kafka-python's consumer
(the loop against a real broker: tests/loader/test_faults.py, tests/rollout)."""

from __future__ import annotations

import logging
from collections import namedtuple
from concurrent import futures
from typing import Any

import pytest
from kafka.errors import CommitFailedError
from kafka.structs import TopicPartition

from loader.group_consumer import GroupConfig, GroupConsumer, _commit, _put_back, _Work

Record = namedtuple("Record", "topic partition offset")
LOG = logging.getLogger("tests.group_consumer")


class Consumer:
    """Records seeks and commits; ``refuse`` makes commit() raise as after a rebalance."""

    def __init__(self, assigned: set[TopicPartition], refuse: bool = False) -> None:
        self.assigned, self.refuse = assigned, refuse
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, Any]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        if self.refuse:
            raise CommitFailedError()
        self.commits.append(offsets)


def done(error: BaseException | None = None) -> futures.Future[None]:
    future: futures.Future[None] = futures.Future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    return future


TP = TopicPartition("t", 0)


def test_a_refused_commit_is_logged_and_the_loop_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = Consumer({TP}, refuse=True)
    with caplog.at_level(logging.WARNING):
        _commit(consumer, _Work(done(), Record("t", 0, 7)), LOG)
    assert "commit of t/0@7 refused" in caplog.text
    assert "new owner will deliver it again" in caplog.text


def test_a_finished_record_commits_the_next_offset() -> None:
    consumer = Consumer({TP})
    group = GroupConsumer("loader", GroupConfig("b:9092", "t", "g"), lambda _: None, LOG)
    group._finish(consumer, _Work(done(), Record("t", 0, 7)))
    ((offsets),) = consumer.commits
    assert offsets[TP].offset == 8


def test_a_failed_record_is_sought_back_and_not_committed() -> None:
    consumer = Consumer({TP})
    group = GroupConsumer("loader", GroupConfig("b:9092", "t", "g"), lambda _: None, LOG)
    group._finish(consumer, _Work(done(OSError("store down")), Record("t", 0, 7)))
    assert consumer.seeks == [(TP, 7)]
    assert consumer.commits == []
    assert group._paused_until > 0


def test_a_record_committed_by_the_revoke_is_not_committed_again() -> None:
    consumer = Consumer({TP})
    group = GroupConsumer("loader", GroupConfig("b:9092", "t", "g"), lambda _: None, LOG)
    group._finish(consumer, _Work(done(), Record("t", 0, 7), committed=True))
    assert consumer.commits == []


def test_records_polled_while_working_are_put_back_at_their_first_offset() -> None:
    other = TopicPartition("t", 1)
    consumer = Consumer({TP, other})
    _put_back(consumer, [Record("t", 0, 5), Record("t", 0, 4), Record("t", 1, 9)])
    assert sorted(consumer.seeks) == [(TP, 4), (other, 9)]


def test_a_record_of_a_partition_no_longer_assigned_is_left_alone() -> None:
    consumer = Consumer(set())
    _put_back(consumer, [Record("t", 0, 5)])
    assert consumer.seeks == []


@pytest.mark.parametrize(
    ("max_poll_interval_ms", "expected"), [(300_000, 295.0), (8_000, 7.2), (0, 0.0)]
)
def test_a_revoke_waits_under_the_rebalance_timeout(
    max_poll_interval_ms: int, expected: float
) -> None:
    config = GroupConfig("b:9092", "t", "g", max_poll_interval_ms=max_poll_interval_ms)
    assert config.revoke_wait_seconds == pytest.approx(expected)
