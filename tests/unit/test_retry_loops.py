"""The give-up paths of the loops on loader/backoff.py that real servers rarely
reach: an assignment commit that keeps losing its race, S3's 409
ConditionalRequestConflict, a held HDFS lock and a walk that keeps meeting
vanishing directories. Fakes stand in for the stores (pure logic); the
policies are patched to zero waits, so nothing sleeps for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import botocore.exceptions as bce
import pytest
from pyarrow import fs as pafs

from loader import assignments
from loader.backoff import Backoff
from loader.errors import NotFound, PermissionDenied, Unavailable
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentDocument
from loader.storage import hdfs as hdfs_module
from loader.storage import open_storage
from loader.storage import s3 as s3_module
from loader.storage.hdfs import HdfsStorage
from loader.storage.s3 import S3Settings, S3Storage

NO_WAIT = Backoff(initial_seconds=0.0, max_seconds=0.0)


def first_generation(previous: AssignmentDocument | None) -> AssignmentDocument:
    document = AssignmentDocument()
    document.current.model = "m"
    document.current.generation = 1
    return document


def test_a_commit_that_keeps_losing_gives_up_after_its_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assignments, "LOST_RACES", NO_WAIT)
    store = open_storage(str(tmp_path))
    claims: list[str] = []

    def always_taken(key: str, data: bytes) -> bool:
        claims.append(key)
        return False

    monkeypatch.setattr(store, "create_if_absent", always_taken)
    with pytest.raises(Unavailable, match="3 concurrent writers won first"):
        assignments.commit(store, "m", first_generation, retries=2)
    assert len(claims) == 3


def test_a_commit_retries_until_its_claim_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assignments, "LOST_RACES", NO_WAIT)
    store = open_storage(str(tmp_path))
    create = store.create_if_absent
    lost = [True, True]

    def taken_twice(key: str, data: bytes) -> bool:
        return False if lost and lost.pop() else create(key, data)

    monkeypatch.setattr(store, "create_if_absent", taken_twice)
    committed = assignments.commit(store, "m", first_generation, retries=2)
    assert committed is not None and committed.current.generation == 1


def client_error(code: str, status: int) -> bce.ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return bce.ClientError(response, "PutObject")


class FakeS3:
    def __init__(self, *failures: bce.ClientError) -> None:
        self.failures = list(failures)
        self.puts = 0

    def put_object(self, **kw: Any) -> dict[str, str]:
        assert kw["IfNoneMatch"] == "*"
        self.puts += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"ETag": '"e"'}


def s3_store(fake: FakeS3, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    monkeypatch.setattr(s3_module, "CONDITIONAL_CONFLICTS", NO_WAIT)
    store = S3Storage("s3://bucket/p", S3Settings(endpoint_url="http://127.0.0.1:9", region="x"))
    store._client = fake
    return store


CONFLICT = client_error("ConditionalRequestConflict", 409)


def test_s3_conflicts_are_retried_until_the_write_lands(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeS3(CONFLICT, CONFLICT)
    assert s3_store(fake, monkeypatch).create_if_absent("k", b"x") is True
    assert fake.puts == 3


def test_s3_a_conflict_then_412_means_another_writer_won(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeS3(CONFLICT, client_error("PreconditionFailed", 412))
    assert s3_store(fake, monkeypatch).create_if_absent("k", b"x") is False
    assert fake.puts == 2


def test_s3_conflicts_give_up_after_five_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeS3(*[CONFLICT] * 9)
    with pytest.raises(Unavailable, match="kept conflicting on s3://bucket/p/k"):
        s3_store(fake, monkeypatch).create_if_absent("k", b"x")
    assert fake.puts == 5


def test_s3_other_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeS3(client_error("AccessDenied", 403))
    with pytest.raises(PermissionDenied):
        s3_store(fake, monkeypatch).create_if_absent("k", b"x")
    assert fake.puts == 1


class VanishingWalks:
    """A local pyarrow FileSystem whose recursive walks fail ``failures`` times
    as libhdfs fails them when a directory vanishes mid-walk."""

    def __init__(self, failures: int) -> None:
        self.inner = pafs.LocalFileSystem()
        self.failures = failures
        self.walks = 0

    def get_file_info(self, what: Any) -> Any:
        if isinstance(what, pafs.FileSelector):
            self.walks += 1
            if self.walks <= self.failures:
                raise FileNotFoundError("vanished mid-walk")
        return self.inner.get_file_info(what)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def hdfs_store(tmp_path: Path, fs: Any = None) -> HdfsStorage:
    local = fs if fs is not None else pafs.LocalFileSystem()
    return HdfsStorage(lambda: local, str(tmp_path), "hdfs://nn/x")


def test_hdfs_a_walk_meeting_vanishing_directories_is_repeated(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1")
    fs = VanishingWalks(failures=4)
    assert [info.key for info in hdfs_store(tmp_path, fs).list()] == ["a"]
    assert fs.walks == 5


def test_hdfs_a_walk_gives_up_after_its_attempts(tmp_path: Path) -> None:
    fs = VanishingWalks(failures=5)
    with pytest.raises(NotFound):
        list(hdfs_store(tmp_path, fs).list())
    assert fs.walks == hdfs_module.LIST_ATTEMPTS


def hold_lock(tmp_path: Path, key: str) -> None:
    """A lock left by a creator that died holding it (a directory with its owner marker)."""
    lock = tmp_path / f".{key}{hdfs_module._LOCK_MARK}"
    lock.mkdir()
    (lock / "owner-dead").write_bytes(b"")


def test_hdfs_a_held_lock_times_out_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdfs_module, "LOCK_RETRIES", NO_WAIT)
    monkeypatch.setattr(hdfs_module, "LOCK_WAIT_S", 0.05)
    hold_lock(tmp_path, "k")
    with pytest.raises(Unavailable, match="delete the lock"):
        hdfs_store(tmp_path).create_if_absent("k", b"x")
    assert not (tmp_path / "k").exists()


def test_hdfs_a_key_created_while_waiting_for_the_lock_is_not_created_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hdfs_module, "LOCK_RETRIES", NO_WAIT)
    hold_lock(tmp_path, "k")
    (tmp_path / "k").write_bytes(b"theirs")
    assert hdfs_store(tmp_path).create_if_absent("k", b"mine") is False
    assert (tmp_path / "k").read_bytes() == b"theirs"


def test_hdfs_create_if_absent_creates_once(tmp_path: Path) -> None:
    store = hdfs_store(tmp_path)
    assert store.create_if_absent("k", b"first") is True
    assert store.create_if_absent("k", b"second") is False
    assert (tmp_path / "k").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]  # no lock or temporary left
