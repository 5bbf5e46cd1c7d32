"""`rollway models|label|pin|rollback` as subprocesses, on a real store (local disk and
SeaweedFS S3) and a real Kafka broker (tansu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from loader import assignments
from loader.assign import StagedVersion, policy_update
from loader.events import ASSIGNMENT_CHANGED, decode_data
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged, AssignmentDocument
from loader.storage import Storage, open_storage
from tests.conftest import REPO
from tests.kafka_broker import TansuBroker
from tests.stores import Backend, local_and_s3_only

pytestmark = pytest.mark.integration
TIMEOUT = 120
# These run on local disk and S3 only: the commands are thin over loader.assignments,
# whose protocol test_assignments runs on HDFS too, and on hdfs:// every command
# would start a JVM (about a minute for this module on both HDFS schemes).


def rollway(env: dict[str, str], store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "functions.cli", *args, "--store", store],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip


def stage(storage: Storage, model: str, newest: int) -> AssignmentDocument | None:
    """What the loader does once versions 1..newest are staged: latest 2, stable=3."""
    config = ModelSpec(model, f"/store/{model}", VersionPolicy.latest(2), {"stable": 3})
    staged = {v: StagedVersion(v, f"/store/{model}/{v}", f"sha-{v}") for v in range(1, newest + 1)}
    update = policy_update(model, staged, config, cause=f"publish {newest}")
    return assignments.commit(storage, model, update)


def prepare(storage: Storage, model: str = "m", generations: int = 2) -> None:
    """Generation 1 serves versions 2,3 and generation 2 versions 3,4."""
    for newest in range(3, 3 + generations):
        assert stage(storage, model, newest) is not None


def status(backend: Backend, model: str = "m") -> dict[str, Any]:
    result = rollway(backend.subprocess_env(), backend.uri, "models", "status", model, "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert all(word in line for word in words), line


@local_and_s3_only
def test_list_and_status(backend: Backend) -> None:
    prepare(backend.storage)
    prepare(backend.storage, "other", generations=1)
    env = backend.subprocess_env()
    listed = rollway(env, backend.uri, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["m", "other"]
    got = status(backend)
    assert (got["model"], got["generation"], got["labels"]) == ("m", 2, {"stable": 3})
    assert got["versions"] == [
        {"version": v, "version_uri": f"/store/m/{v}", "manifest_sha256": f"sha-{v}"}
        for v in (3, 4)
    ]
    assert got["cause"] == "publish 4" and got["pinned_versions"] == []
    assert [(h["generation"], h["versions"]) for h in got["history"]] == [(1, [2, 3])]
    human = rollway(env, backend.uri, "models", "status", "m")
    assert human.returncode == 0 and "generation 2" in human.stdout and "stable=3" in human.stdout
    refused(rollway(env, backend.uri, "models", "status", "nope"), "nope", "no assignment")


@local_and_s3_only
def test_label_and_a_label_to_a_missing_version(backend: Backend) -> None:
    prepare(backend.storage)
    env = backend.subprocess_env()
    ok = rollway(env, backend.uri, "label", "m", "canary=4", "stable=4")
    assert ok.returncode == 0, ok.stderr
    got = status(backend)
    assert got["generation"] == 3 and got["labels"] == {"canary": 4, "stable": 4}
    assert got["label_overrides"] == {"canary": 4, "stable": 4}
    assert got["cause"].startswith("rollway label by ")
    refused(rollway(env, backend.uri, "label", "m", "canary=9"), "'canary'", "version 9")
    refused(rollway(env, backend.uri, "label", "m", "--remove", "nope"), "'nope'")
    usage = rollway(env, backend.uri, "label", "m", "canary=x")  # argparse: usage, then error
    assert usage.returncode == 2 and "expected LABEL=VERSION" in usage.stderr.splitlines()[-1]
    removed = rollway(env, backend.uri, "label", "m", "--remove", "canary", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["labels"] == {"stable": 4}
    assert status(backend)["generation"] == 4  # the refused requests wrote nothing


@local_and_s3_only
def test_pin_then_clear(backend: Backend) -> None:
    prepare(backend.storage)
    env = backend.subprocess_env()
    refused(rollway(env, backend.uri, "pin", "m", "--versions", "4"), "'stable'", "version 3")
    refused(rollway(env, backend.uri, "pin", "m", "--versions", "3,7"), "version 7")
    pinned = rollway(env, backend.uri, "pin", "m", "--versions", "2,3")  # 2 is in history
    assert pinned.returncode == 0, pinned.stderr
    got = status(backend)
    assert [v["version"] for v in got["versions"]] == [2, 3]
    assert got["pinned_versions"] == [2, 3] and got["generation"] == 3
    # The loader keeps the pin: a new staged version changes nothing.
    assert stage(backend.storage, "m", 5) is None
    assert status(backend)["generation"] == 3
    cleared = rollway(env, backend.uri, "pin", "m", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    got = status(backend)
    assert got["pinned_versions"] == [] and got["generation"] == 4
    assert [v["version"] for v in got["versions"]] == [2, 3]
    again = rollway(env, backend.uri, "pin", "m", "--clear")
    assert again.returncode == 0 and "unchanged" in again.stderr


@local_and_s3_only
def test_rollback(backend: Backend) -> None:
    prepare(backend.storage)
    prepare(backend.storage, "fresh", generations=1)
    env = backend.subprocess_env()
    back = rollway(env, backend.uri, "rollback", "m", "--json")
    assert back.returncode == 0, back.stderr
    got = json.loads(back.stdout)
    assert [v["version"] for v in got["versions"]] == [2, 3] and got["labels"] == {"stable": 3}
    assert got["generation"] == 3 and got["pinned_versions"] == [2, 3]
    assert got["history"][0]["generation"] == 2
    refused(rollway(env, backend.uri, "rollback", "fresh"), "no earlier generation")
    refused(rollway(env, backend.uri, "rollback", "ghost"), "ghost", "no assignment")


def test_a_write_announces_assignment_changed_on_kafka(tmp_path: Path, kafka: TansuBroker) -> None:
    store = str(tmp_path / "store")
    prepare(open_storage(store))
    topic = f"model-assignments-{uuid.uuid4().hex[:8]}"
    kafka.create_topics(topic)
    result = rollway(
        {**os.environ, "ROLLWAY_ASSIGNMENTS_TOPIC": topic}, store,
        "label", "m", "canary=4", "--kafka-bootstrap-servers", kafka.bootstrap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )  # fmt: skip
    try:
        record = next(iter(consumer))
    finally:
        consumer.close()
    assert record.key == b"m"
    assert dict(record.headers)["ce_type"] == ASSIGNMENT_CHANGED.encode()
    event = decode_data(record.value, AssignmentChanged())
    assert (event.model, event.generation, dict(event.labels)) == (
        "m",
        3,
        {"canary": 4, "stable": 3},
    )
