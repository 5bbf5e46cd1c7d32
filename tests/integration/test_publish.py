"""`rollway publish` end to end: real SavedModels, a real store (local disk and
SeaweedFS S3 through the ``backend`` fixture) and a real Kafka broker (tansu)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from loader import layout
from loader.events import MODEL_PUBLISHED, decode_data
from loader.manifest import MANIFEST_NAME, decode
from loader.publish import publish_version
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from loader.storage import open_storage
from loader.verify import Verdict, verify_version
from tests.conftest import BAD_HALF_PLUS_TWO, HALF_PLUS_TWO, REPO
from tests.kafka_broker import TansuBroker
from tests.stores import Backend, local_and_s3_only

TIMEOUT = 180


def rollway(backend: Backend, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "functions.cli", *args],
        cwd=REPO, env=backend.subprocess_env(), capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "export" / "123"
    shutil.copytree(HALF_PLUS_TWO / "00000123", path)
    return path


def test_publish_then_verify_round_trip(backend: Backend, source: Path) -> None:
    result = rollway(backend, "publish", str(source), backend.version_uri("hp2"))
    assert result.returncode == 0, result.stderr
    version_uri = backend.version_uri("hp2/123")  # the directory's name is the version
    assert result.stdout.strip() == version_uri
    assert "published" in result.stderr
    report = verify_version(backend.storage, "hp2/123")
    assert report.verdict is Verdict.COMPLETE, report.problems
    m = decode(backend.storage.read_bytes(f"hp2/123/{MANIFEST_NAME}"))
    assert (m.model, m.version, m.created_by) == ("hp2", 123, "rollway publish")
    assert sorted(f.path for f in m.files) == sorted(
        p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()
    )
    signatures = {s.name for g in m.saved_model.meta_graphs for s in g.signatures}
    assert {"serving_default", "classify_x_to_y"} <= signatures
    checked = rollway(backend, "verify", version_uri)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --next reads a listing, which the contract suite checks on HDFS; the race for a
# number is what differs there, and test_concurrent_next_publishes covers it.
@local_and_s3_only
def test_next_picks_the_highest_version_plus_one(backend: Backend, source: Path) -> None:
    for version in ("3", "7"):
        result = rollway(backend, "publish", "--no-check", "--version", version,
                         str(source), backend.version_uri("m"))  # fmt: skip
        assert result.returncode == 0, result.stderr
    result = rollway(backend, "publish", "--next", "--no-check", "--json",
                     str(source), backend.version_uri("m"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert '"version": 8' in result.stdout
    assert layout.existing_versions(open_storage(backend.version_uri("m"))) == {3, 7, 8}


def test_concurrent_next_publishes_get_distinct_versions(backend: Backend, source: Path) -> None:
    storage = open_storage(backend.version_uri("race"))
    versions: list[int] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            versions.append(publish_version(source, storage, "race", None, workers=2).version)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not errors
    assert sorted(versions) == [1, 2, 3]


def test_existing_versions_need_force_and_staged_ones_are_never_replaced(
    backend: Backend, source: Path
) -> None:
    base = backend.version_uri("m")
    assert rollway(backend, "publish", "--no-check", str(source), base).returncode == 0
    backend.storage.write_bytes("m/123/stale.txt", b"from an older upload")

    refused = rollway(backend, "publish", "--no-check", str(source), base)
    assert refused.returncode == 3
    assert "already exists" in refused.stderr and "--force" in refused.stderr

    forced = rollway(backend, "publish", "--no-check", "--force", str(source), base)
    assert forced.returncode == 0, forced.stderr
    assert not backend.storage.exists("m/123/stale.txt")  # replaced exactly
    assert verify_version(backend.storage, "m/123").verdict is Verdict.COMPLETE

    backend.storage.write_bytes(f"m/{layout.staged_key(123)}", b"staged by the loader")
    staged = rollway(backend, "publish", "--no-check", "--force", str(source), base)
    assert staged.returncode == 3
    assert "staged" in staged.stderr


# A usage error: the store is never touched.
@local_and_s3_only
def test_a_directory_that_is_no_saved_model_is_refused(backend: Backend) -> None:
    result = rollway(backend, "publish", str(BAD_HALF_PLUS_TWO / "00000123"),
                     backend.version_uri("bad"))  # fmt: skip
    assert result.returncode == 2
    assert "does not load as a SavedModel" in result.stderr
    assert list(backend.storage.list("bad/")) == []


def test_many_small_files_and_a_multipart_file(backend: Backend, source: Path) -> None:
    """200 small assets and one 24 MiB file (an S3 multipart upload) round-trip."""
    small = source / "assets" / "vocab"
    small.mkdir()
    for i in range(200):
        (small / f"{i:03d}.txt").write_text(f"token {i}\n" * (i + 1))
    (source / "assets" / "embedding.bin").write_bytes(os.urandom(24 * 2**20))
    result = rollway(backend, "publish", "--no-check", "--progress", "always",
                     str(source), backend.version_uri("big"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "files" in result.stderr  # the progress bar, forced on for a non-terminal
    report = verify_version(backend.storage, "big/123", workers=4)
    assert report.verdict is Verdict.COMPLETE, report.problems
    assert report.files_checked == 204 + 1  # the model's 4 files, 201 assets
    assert backend.storage.stat("big/123/assets/embedding.bin").size == 24 * 2**20


# The event does not depend on the store.
@local_and_s3_only
def test_publish_announces_the_version_on_kafka(
    backend: Backend, source: Path, kafka: TansuBroker
) -> None:
    topic = f"model-publish-{uuid.uuid4().hex[:8]}"
    kafka.create_topics(topic)
    result = rollway(backend, "publish", "--no-check", "--kafka-bootstrap-servers",
                     kafka.bootstrap, "--topic", topic, str(source),
                     backend.version_uri("announced"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=10000,
    )  # fmt: skip
    try:
        records = list(consumer)
    finally:
        consumer.close()
    assert len(records) == 1
    record = records[0]
    headers = dict(record.headers)
    assert record.key == b"announced"
    assert headers["ce_type"] == MODEL_PUBLISHED.encode()
    assert headers["content-type"] == b"application/json"
    event = decode_data(record.value, ModelPublished())
    assert (event.model, event.version) == ("announced", 123)
    assert event.version_uri == backend.version_uri("announced/123")
    assert event.file_count == 4


# A Kafka failure: the store does not matter.
@local_and_s3_only
def test_an_unreachable_broker_is_a_clear_error_after_the_upload(
    backend: Backend, source: Path
) -> None:
    from functions.serving.process import free_port

    result = rollway(backend, "publish", "--no-check", "--kafka-bootstrap-servers",
                     f"127.0.0.1:{free_port()}", "--kafka-timeout-seconds", "2", str(source),
                     backend.version_uri("quiet"))  # fmt: skip
    assert result.returncode == 5
    assert "is published, but the ModelPublished event could not be sent" in result.stderr
    assert verify_version(backend.storage, "quiet/123").verdict is Verdict.COMPLETE
