"""``rollway rollout run``'s consumer against a real Kafka broker (tansu), with
the Kubernetes API faked (fake_api.py): records are rolled out in order,
replays change nothing, what is no AssignmentChanged is skipped, and a failed
record is delivered again, not lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaProducer

from functions.rollout.consumer import RolloutConsumer
from functions.rollout.settings import RolloutConfig
from loader import events
from loader.group_consumer import GroupConfig
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from tests.kafka_broker import TansuBroker
from tests.rollout.fake_api import FakeApiError, FakeServices
from tests.rollout.helpers import NAMESPACE, new_service, traffic

pytestmark = pytest.mark.integration


def send(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in records:
            headers = [("ce_type", events.ASSIGNMENT_CHANGED.encode())] if value else []
            producer.send(topic, key=key, value=value, headers=headers).get(30)
    finally:
        producer.close(10)


def assignment(generation: int) -> bytes:
    return events.encode(AssignmentChanged(model="mnist", generation=generation), "//t").value


@pytest.fixture
def running(kafka: TansuBroker) -> Iterator[Callable[[FakeServices], tuple[str, RolloutConsumer]]]:
    started: list[tuple[RolloutConsumer, threading.Thread]] = []

    def start(api: FakeServices) -> tuple[str, RolloutConsumer]:
        topic = f"model-assignments-{uuid.uuid4().hex[:8]}"
        kafka.create_topics(topic)
        config = GroupConfig(kafka.bootstrap, topic, f"rollout-{topic}",
                             session_timeout_ms=6000, failure_backoff_seconds=0.1)  # fmt: skip
        consumer = RolloutConsumer(api, RolloutConfig(NAMESPACE), config, sleep=lambda _: None)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread))
        return topic, consumer

    yield start
    for consumer, thread in started:
        consumer.stop()
        thread.join(30)
        assert not thread.is_alive()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def generation_of(api: FakeServices) -> str:
    return str(api.objects[(NAMESPACE, "mnist")]["metadata"]["annotations"].get(
        "rollway.dev/generation", ""))  # fmt: skip


def test_records_are_rolled_out_in_order_and_replays_change_nothing(
    kafka: TansuBroker, running: Callable[[FakeServices], tuple[str, RolloutConsumer]]
) -> None:
    api = FakeServices()
    api.put(NAMESPACE, new_service(**{"rollway.dev/strategy": "canary"}))
    topic, consumer = running(api)
    send(kafka.bootstrap, topic, [
        (b"mnist", assignment(1)), (b"mnist", b"not json"), (b"mnist", None),
        (b"mnist", assignment(2)), (b"mnist", assignment(1)), (b"mnist", assignment(2)),
    ])  # fmt: skip
    wait_until(lambda: api.calls.count("get") >= 4)
    assert generation_of(api) == "2"
    stored = api.objects[(NAMESPACE, "mnist")]
    assert traffic(stored) == [("stable", "mnist-g1", 90), ("canary", "mnist-g2", 10)]
    assert api.calls.count("patch") == 2  # the replays of 1 and 2 wrote nothing
    assert consumer.touched == {"mnist"}


def test_a_failed_record_is_delivered_again(
    kafka: TansuBroker, running: Callable[[FakeServices], tuple[str, RolloutConsumer]]
) -> None:
    api = FakeServices()
    api.put(NAMESPACE, new_service())
    api.failures["patch"] = [FakeApiError(503, "Service Unavailable")] * 2
    topic, _ = running(api)
    send(kafka.bootstrap, topic, [(b"mnist", assignment(1))])
    wait_until(lambda: generation_of(api) == "1")
    assert api.calls.count("patch") == 3
    assert traffic(api.objects[(NAMESPACE, "mnist")]) == [("stable", "mnist-g1", 100)]
