"""`rollway publish` -> `rollway loader` -> assignment, with the real parts: the
loader as a subprocess, SeaweedFS S3 for the landing area and the serving store,
and tansu for the topics. One loader serves the whole module; each test uses
its own model names."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.devstack.seaweedfs import SeaweedFS
from loader.events import ASSIGNMENT_CHANGED, VERSION_REJECTED, encode_model_published
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from loader.storage import open_storage
from loader.verify import Verdict, verify_version
from tests.conftest import TEST_BUCKET
from tests.kafka_broker import TansuBroker
from tests.loader.harness import (
    Stack,
    Topics,
    Watcher,
    assignments_in,
    ce_type,
    rejections_in,
    subprocess_env,
)

pytestmark = pytest.mark.integration
SHARED_EVENTS = Path(__file__).resolve().parents[3] / "shared" / "events"


@pytest.fixture(scope="module")
def stack(
    seaweedfs: SeaweedFS, kafka: TansuBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    import uuid

    workdir = tmp_path_factory.mktemp("loader")
    stack = Stack(
        root=f"s3://{TEST_BUCKET}/e2e-{uuid.uuid4().hex[:8]}",
        kafka=kafka,
        topics=Topics.fresh(kafka),
        env=subprocess_env(seaweedfs.env()),
        workdir=workdir,
    )
    import os

    saved = {k: os.environ.get(k) for k in seaweedfs.env()}
    os.environ.update(seaweedfs.env())
    stack.start_loader()
    try:
        yield stack
    finally:
        stack.stop_loaders()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def assignments(stack: Stack) -> Iterator[Watcher]:
    watcher = Watcher(stack.kafka, stack.topics.assignments)
    yield watcher
    watcher.close()


@pytest.fixture
def dead_letters(stack: Stack) -> Iterator[Watcher]:
    watcher = Watcher(stack.kafka, stack.topics.dead_letter)
    yield watcher
    watcher.close()


def for_model(records: list[Any], model: str) -> list[Any]:
    return [a for a in assignments_in(records) if a.model == model]


def test_published_versions_are_staged_and_assigned(stack: Stack, assignments: Watcher) -> None:
    stack.publish("own", 1)
    seen = assignments.wait_for(lambda r: any(a.generation == 1 for a in for_model(r, "own")))
    first = for_model(seen, "own")[0]
    assert [v.version for v in first.versions] == [1]
    assert first.versions[0].version_uri == f"{stack.store_uri}/own/1"
    assert ce_type(seen[0]) == ASSIGNMENT_CHANGED
    assert seen[0].key == b"own"
    report = verify_version(stack.store(), "own/1")
    assert report.verdict is Verdict.COMPLETE

    stack.publish("own", 2)  # latest 1 by default: version 2 replaces 1
    seen = assignments.wait_for(lambda r: any(a.generation == 2 for a in for_model(r, "own")))
    second = next(a for a in for_model(seen, "own") if a.generation == 2)
    assert [v.version for v in second.versions] == [2]
    document = stack.document("own")
    assert document.current.generation == 2
    assert document.history[0].generation == 1


def test_a_minio_notification_counts_as_a_publish(stack: Stack, assignments: Watcher) -> None:
    stack.publish("minio", 7, announce=False)
    prefix = stack.root.removeprefix(f"s3://{TEST_BUCKET}/")
    key = f"{prefix}/landing/minio/7/rollway-manifest.json"
    notification = json.loads((SHARED_EVENTS / "minio_object_created.json").read_text())
    notification["Key"] = f"{TEST_BUCKET}/{key}"  # MinIO: <bucket>/<decoded object key>
    record = notification["Records"][0]["s3"]
    record["bucket"]["name"] = TEST_BUCKET
    record["object"]["key"] = key.replace("/", "%2F")
    stack.produce(json.dumps(notification).encode(), key=f"{TEST_BUCKET}/{key}".encode())
    seen = assignments.wait_for(lambda r: bool(for_model(r, "minio")))
    assert [v.version for v in for_model(seen, "minio")[0].versions] == [7]


def test_an_event_that_arrives_before_its_files_is_retried(
    stack: Stack, assignments: Watcher
) -> None:
    event = ModelPublished(model="late", version=3, version_uri=f"{stack.landing}/late/3")
    event.published_at.GetCurrentTime()
    record = encode_model_published(event, "//tests")
    stack.produce(record.value, record.key, record.headers)
    parked = "_rollway/pending/late/3.json"
    deadline = time.monotonic() + 60
    while not stack.store().exists(parked):  # the loader saw it INCOMPLETE and parked it
        assert time.monotonic() < deadline, stack.loader_log()
        time.sleep(0.2)
    stack.publish("late", 3, announce=False)  # the files arrive after the event
    seen = assignments.wait_for(lambda r: bool(for_model(r, "late")))
    assert [v.version for v in for_model(seen, "late")[0].versions] == [3]


def test_a_corrupt_version_is_dead_lettered_with_its_reason(
    stack: Stack, dead_letters: Watcher
) -> None:
    stack.publish("bad", 4, announce=False)
    landing = open_storage(stack.landing)
    key = "bad/4/variables/variables.data-00000-of-00001"
    data = bytearray(landing.read_bytes(key))
    data[0] ^= 0xFF
    landing.write_bytes(key, bytes(data))
    event = ModelPublished(model="bad", version=4, version_uri=f"{stack.landing}/bad/4")
    event.published_at.GetCurrentTime()
    record = encode_model_published(event, "//tests")
    stack.produce(record.value, record.key, record.headers)
    seen = dead_letters.wait_for(lambda r: any(x.model == "bad" for x in rejections_in(r)))
    rejected = next(x for x in rejections_in(seen) if x.model == "bad")
    assert rejected.verdict == "CORRUPT"
    assert "CHECKSUM_MISMATCH" in rejected.reason
    assert [p.kind for p in rejected.problems] == ["CHECKSUM_MISMATCH"]
    assert ce_type(seen[-1]) == VERSION_REJECTED
    assert not stack.store().exists("bad/4/rollway-manifest.json")


def test_hostile_events_are_dead_lettered_and_the_loader_stays_up(
    stack: Stack, dead_letters: Watcher, assignments: Watcher
) -> None:
    stack.produce(b"\x00 not json at all")
    outside = ModelPublished(
        model="evil", version=1, version_uri=f"s3://{TEST_BUCKET}/elsewhere/evil/1"
    )
    record = encode_model_published(outside, "//tests")
    stack.produce(record.value, record.key, record.headers)

    # The topic holds earlier tests' rejections too: wait for these two.
    def both(records: list[Any]) -> bool:
        reasons = " | ".join(x.reason for x in rejections_in(records))
        return "outside the roots" in reasons and "not JSON" in reasons

    dead_letters.wait_for(both)
    stack.publish("after", 1)  # and the loader still works
    assignments.wait_for(lambda r: bool(for_model(r, "after")))


def test_duplicate_events_are_harmless(stack: Stack, assignments: Watcher) -> None:
    result = stack.publish("dup", 1)
    assert result.returncode == 0
    assignments.wait_for(lambda r: bool(for_model(r, "dup")))
    event = ModelPublished(model="dup", version=1, version_uri=f"{stack.landing}/dup/1")
    record = encode_model_published(event, "//tests")
    for _ in range(2):  # a replay, twice
        stack.produce(record.value, record.key, record.headers)
    seen = assignments.wait_for(lambda r: len(for_model(r, "dup")) >= 3)
    assert {a.generation for a in for_model(seen, "dup")} == {1}  # re-sent, never re-made
    assert stack.document("dup").current.generation == 1
