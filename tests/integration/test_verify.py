"""loader/verify.py and `rollway verify` on real SavedModels written through a real Storage.

The store is behind ONE fixture, ``backend`` (tests/stores.py): each test writes
and damages versions only through its ``Storage``, so the same cases run on
local disk and on S3 (real SeaweedFS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import tensorflow as tf

from functions import verify_cmd
from loader import manifest
from loader.errors import Unavailable
from loader.manifest import MANIFEST_NAME
from loader.progress import Progress
from loader.schemas.rollway.v1 import manifest_pb2
from loader.storage import ObjectInfo, Storage, open_storage
from loader.verify import METHOD_LEGACY, ProblemKind, Verdict, verify_version
from tests.conftest import HALF_PLUS_TWO, REPO
from tests.stores import Backend, local_and_s3_only

K = ProblemKind
SHARD_1 = "variables/variables.data-00001-of-00003"


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF2 SavedModel whose variables are split into three checkpoint shards."""

    class Model(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = (tf.Variable(tf.fill([300], float(i))) for i in range(3))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": x + self.a[0] + self.b[0] + self.c[0]}

    model, path = Model(), tmp_path_factory.mktemp("sharded") / "7"
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=1500)
    options = tf.saved_model.SaveOptions(experimental_sharding_callback=policy)
    tf.saved_model.save(
        model, str(path), signatures={"serving_default": model.serve}, options=options
    )
    assert (path / SHARD_1).is_file()
    return path


def upload(backend: Backend, source: Path, prefix: str, with_manifest: bool = True) -> None:
    """Publishes as `rollway publish` does: every file first, the manifest last."""
    model, version = prefix.split("/")
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        with path.open("rb") as reader:
            backend.storage.write(f"{prefix}/{path.relative_to(source).as_posix()}", reader)
    if with_manifest:
        m = manifest.manifest_for_directory(source, model, int(version), "tests", workers=2)
        write_manifest(backend, prefix, m)


def write_manifest(backend: Backend, prefix: str, m: manifest_pb2.VersionManifest) -> None:
    backend.storage.write_bytes(f"{prefix}/{MANIFEST_NAME}", manifest.encode(m))


def hashes_only(directory: Path, model: str, version: int) -> manifest_pb2.VersionManifest:
    """A manifest that matches the files exactly, for files that are no SavedModel."""
    files = manifest.file_entries(directory)
    return manifest_pb2.VersionManifest(
        schema_version=manifest.SCHEMA_VERSION,
        model=model,
        version=version,
        files=files,
        total_bytes=sum(f.size for f in files),
    )


@pytest.fixture
def half(backend: Backend) -> str:
    upload(backend, HALF_PLUS_TWO / "00000123", "half/123")
    return "half/123"


def kinds(report: Any) -> list[tuple[ProblemKind, str]]:
    return [(p.kind, p.path) for p in report.problems]


def test_complete_version(backend: Backend, half: str) -> None:
    seen: list[int] = []
    report = verify_version(backend.storage, half, workers=3, progress=seen.append)
    assert report.verdict is Verdict.COMPLETE, report.problems
    assert (report.method, report.problems, report.files_checked) == ("manifest", (), 4)
    assert report.bytes_hashed == sum(seen) == report.manifest.total_bytes  # type: ignore[union-attr]
    assert report.seconds >= 0


def test_complete_sharded_version_reports_progress(backend: Backend, sharded: Path) -> None:
    upload(backend, sharded, "sharded/7")

    class Counting(Progress):
        def __init__(self) -> None:
            self.plan, self.nbytes, self.done = (0, 0), 0, 0

        def planned(self, files: int, total_bytes: int) -> None:
            self.plan = (files, total_bytes)

        def advance(self, nbytes: int) -> None:
            self.nbytes += nbytes

        def file_done(self, path: str) -> None:
            self.done += 1

    counting = Counting()
    report = verify_version(backend.storage, "sharded/7", workers=1, progress=counting)
    assert report.verdict is Verdict.COMPLETE, report.problems
    assert counting.plan == (report.files_checked, report.bytes_hashed) == (6, counting.nbytes)
    assert counting.done == 6


def test_no_manifest_is_incomplete(backend: Backend) -> None:
    upload(backend, HALF_PLUS_TWO / "00000123", "half/123", with_manifest=False)
    report = verify_version(backend.storage, "half/123")
    assert report.verdict is Verdict.INCOMPLETE
    assert kinds(report) == [(K.MANIFEST_MISSING, "")]
    assert "manifest not written yet" in report.problems[0].detail


def test_missing_listed_file_is_incomplete(backend: Backend, half: str) -> None:
    backend.storage.delete(f"{half}/assets/foo.txt")
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.INCOMPLETE
    assert kinds(report) == [(K.FILE_MISSING, "assets/foo.txt")]


def test_missing_listed_shard_is_incomplete(backend: Backend, sharded: Path) -> None:
    upload(backend, sharded, "sharded/7")
    backend.storage.delete(f"sharded/7/{SHARD_1}")
    report = verify_version(backend.storage, "sharded/7")
    assert report.verdict is Verdict.INCOMPLETE
    assert kinds(report) == [(K.FILE_MISSING, SHARD_1)]


def test_shard_missing_from_the_manifest_too_is_corrupt(
    backend: Backend, sharded: Path, tmp_path: Path
) -> None:
    upload(backend, sharded, "sharded/7", with_manifest=False)
    backend.storage.delete(f"sharded/7/{SHARD_1}")
    m = manifest.manifest_for_directory(sharded, "sharded", 7, "tests")
    del m.files[[f.path for f in m.files].index(SHARD_1)]
    m.total_bytes = sum(f.size for f in m.files)
    write_manifest(backend, "sharded/7", m)
    report = verify_version(backend.storage, "sharded/7")
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.MISSING_SHARD, SHARD_1)]


def test_truncated_file_is_corrupt(backend: Backend, half: str) -> None:
    key = f"{half}/saved_model.pb"
    backend.storage.write_bytes(key, backend.storage.read_bytes(key)[:-100])
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.SIZE_MISMATCH, "saved_model.pb")]
    assert "truncated" in report.problems[0].detail
    assert report.files_checked == 4 and report.bytes_hashed < report.manifest.total_bytes  # type: ignore[union-attr]


def test_wrong_checksum_is_corrupt(backend: Backend, half: str) -> None:
    key = f"{half}/variables/variables.index"
    data = bytearray(backend.storage.read_bytes(key))
    data[10] ^= 0xFF
    backend.storage.write_bytes(key, bytes(data))
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.CHECKSUM_MISMATCH, "variables/variables.index")]


def test_unlisted_file_is_corrupt(backend: Backend, half: str) -> None:
    backend.storage.write_bytes(f"{half}/variables/stray.tmp", b"left over")
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.UNLISTED_FILE, "variables/stray.tmp")]


def test_zero_byte_file_is_corrupt(backend: Backend, half: str) -> None:
    backend.storage.write_bytes(f"{half}/variables/variables.data-00000-of-00001", b"")
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.SIZE_MISMATCH, "variables/variables.data-00000-of-00001")]
    assert report.problems[0].detail.startswith("empty")


def test_empty_saved_model_published_as_such_is_corrupt(backend: Backend, tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "variables").mkdir(parents=True)
    (source / "saved_model.pb").write_bytes(b"")  # parses as an empty SavedModel
    (source / "variables" / "variables.index").write_bytes(b"index")
    (source / "variables" / "variables.data-00000-of-00001").write_bytes(b"data")
    upload(backend, source, "empty/1", with_manifest=False)
    write_manifest(backend, "empty/1", hashes_only(source, "empty", 1))
    report = verify_version(backend.storage, "empty/1")
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.EMPTY_FILE, "saved_model.pb")]


def test_dotdot_in_manifest_is_corrupt(backend: Backend, half: str) -> None:
    document = json.loads(backend.storage.read_bytes(f"{half}/{MANIFEST_NAME}"))
    document["files"][0]["path"] = "../../etc/passwd"
    backend.storage.write_bytes(f"{half}/{MANIFEST_NAME}", json.dumps(document).encode())
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.MANIFEST_INVALID, MANIFEST_NAME)]
    assert "'..' segment" in report.problems[0].detail and report.manifest is None


def test_manifest_not_json_is_corrupt(backend: Backend, half: str) -> None:
    backend.storage.write_bytes(f"{half}/{MANIFEST_NAME}", b"<html>proxy error</html>")
    report = verify_version(backend.storage, half)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [(K.MANIFEST_INVALID, MANIFEST_NAME)]


def test_every_problem_is_reported(backend: Backend, half: str) -> None:
    storage = backend.storage
    storage.delete(f"{half}/assets/foo.txt")
    storage.write_bytes(f"{half}/saved_model.pb", b"short")
    index = storage.read_bytes(f"{half}/variables/variables.index")
    storage.write_bytes(f"{half}/variables/variables.index", bytes(reversed(index)))
    storage.write_bytes(f"{half}/notes.txt", b"unlisted")
    report = verify_version(storage, half, expected_version=124)
    assert report.verdict is Verdict.CORRUPT
    assert kinds(report) == [
        (K.FILE_MISSING, "assets/foo.txt"),
        (K.UNLISTED_FILE, "notes.txt"),
        (K.MANIFEST_MISMATCH, MANIFEST_NAME),
        (K.SIZE_MISMATCH, "saved_model.pb"),
        (K.CHECKSUM_MISMATCH, "variables/variables.index"),
    ]


def test_legacy_layout_settles(backend: Backend) -> None:
    upload(backend, HALF_PLUS_TWO / "00000123", "half/123", with_manifest=False)
    report = verify_version(backend.storage, "half/123", allow_legacy=True, settle_seconds=0.2)
    assert report.verdict is Verdict.COMPLETE, report.problems
    assert (report.method, report.files_checked, report.bytes_hashed) == (METHOD_LEGACY, 4, 0)
    assert report.seconds >= 0.2


def test_legacy_layout_still_changing_is_incomplete(backend: Backend) -> None:
    upload(backend, HALF_PLUS_TWO / "00000123", "half/123", with_manifest=False)

    def another_file_arrives(seconds: float) -> None:
        assert seconds == 5.0
        backend.storage.write_bytes("half/123/assets/late.txt", b"late")

    report = verify_version(
        backend.storage,
        "half/123",
        allow_legacy=True,
        settle_seconds=5.0,
        sleep=another_file_arrives,
    )
    assert report.verdict is Verdict.INCOMPLETE
    assert kinds(report) == [(K.NOT_SETTLED, "")]
    assert "assets/late.txt" in report.problems[0].detail


def test_legacy_layout_without_saved_model_is_corrupt(backend: Backend) -> None:
    backend.storage.write_bytes("half/5/variables/variables.index", b"")
    report = verify_version(backend.storage, "half/5", allow_legacy=True, settle_seconds=0)
    assert report.verdict is Verdict.CORRUPT
    assert set(kinds(report)) == {
        (K.NO_SAVED_MODEL, "saved_model.pb"),
        (K.MISSING_SHARD, "variables/"),
        (K.EMPTY_FILE, "variables/variables.index"),
    }


class FlakyStorage(Storage):
    """The real storage, except that reading one key fails as an unreachable store would."""

    def __init__(self, inner: Storage, failing: str) -> None:
        self.inner, self.failing, self.uri = inner, failing, inner.uri

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def stat(self, key: str) -> ObjectInfo:
        return self.inner.stat(key)

    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        if key == self.failing:
            raise Unavailable(f"{self.join(key)}: connection reset")
        return self.inner.open_read(key, start, length)

    def write(self, key: str, source: BinaryIO, size: int | None = None) -> ObjectInfo:
        return self.inner.write(key, source, size)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        return self.inner.create_if_absent(key, data)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_store_errors_propagate(backend: Backend, half: str) -> None:
    flaky = FlakyStorage(backend.storage, f"{half}/variables/variables.index")
    with pytest.raises(Unavailable, match="connection reset"):
        verify_version(flaky, half, workers=2)


def test_trial_load_downloads_from_a_remote_store(backend: Backend, half: str) -> None:
    remote = FlakyStorage(open_storage(backend.version_uri(half)), failing="")
    report = verify_version(remote)
    assert verify_cmd.trial_load(remote, report, ("serve",)) == []
    (failed,) = verify_cmd.trial_load(remote, report, ("gpu",))
    assert failed.kind is K.LOAD_FAILED and "could not be found" in failed.detail


def rollway(backend: Backend, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **backend.env, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "functions.cli", "verify", *args]
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_exit_codes_and_output(backend: Backend, half: str) -> None:
    uri = backend.version_uri(half)
    ok = rollway(backend, uri)
    assert ok.returncode == 0, ok.stderr
    assert f"{uri}: COMPLETE" in ok.stdout and "problems: 0" in ok.stdout
    assert "checked 4 file(s)" in ok.stdout

    result = rollway(backend, uri, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["verdict"] == "COMPLETE" and document["method"] == "manifest"
    assert (document["model"], document["version"], document["loaded"]) == ("half", 123, None)
    assert document["files_checked"] == 4 and document["bytes_hashed"] > 0

    backend.storage.write_bytes(f"{half}/extra.bin", b"x")
    corrupt = rollway(backend, uri, "--json", "--workers", "2")
    assert corrupt.returncode == 4, corrupt.stderr
    problems = json.loads(corrupt.stdout)["problems"]
    assert problems == [
        {"kind": "UNLISTED_FILE", "path": "extra.bin", "detail": problems[0]["detail"]}
    ]
    human = rollway(backend, uri)
    assert human.returncode == 4 and "  UNLISTED_FILE extra.bin: 1 bytes" in human.stdout

    backend.storage.delete(f"{half}/{MANIFEST_NAME}")
    incomplete = rollway(backend, uri)
    assert incomplete.returncode == 3, incomplete.stderr
    assert "INCOMPLETE" in incomplete.stdout and "manifest not written yet" in incomplete.stdout


def test_cli_legacy(backend: Backend) -> None:
    upload(backend, HALF_PLUS_TWO / "00000123", "half/123", with_manifest=False)
    uri = backend.version_uri("half/123")
    result = rollway(backend, uri, "--allow-legacy", "--settle-seconds", "0.1")
    assert result.returncode == 0, result.stderr
    assert "method: legacy-settled" in result.stdout and "NOT verified" in result.stdout


# TensorFlow's trial load; its download from HDFS is test_trial_load_downloads_from_a_remote_store.
@local_and_s3_only
def test_cli_load(backend: Backend, half: str, tmp_path: Path) -> None:
    good = rollway(backend, backend.version_uri(half), "--load", "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["loaded"] is True

    broken = tmp_path / "broken"
    broken.mkdir()
    for source in (HALF_PLUS_TWO / "00000123").rglob("*"):
        target = broken / source.relative_to(HALF_PLUS_TWO / "00000123")
        target.mkdir(exist_ok=True) if source.is_dir() else target.write_bytes(source.read_bytes())
    (broken / "saved_model.pb").write_bytes(b"\x0a\x05\xff\xff garbage, but the manifest agrees")
    upload(backend, broken, "broken/9", with_manifest=False)
    write_manifest(backend, "broken/9", hashes_only(broken, "broken", 9))

    plain = rollway(backend, backend.version_uri("broken/9"))
    assert plain.returncode == 0, plain.stdout  # bytes are as published
    loaded = rollway(backend, backend.version_uri("broken/9"), "--load", "--json")
    assert loaded.returncode == 4, loaded.stderr
    document = json.loads(loaded.stdout)
    assert document["verdict"] == "CORRUPT" and document["loaded"] is False
    (problem,) = document["problems"]
    assert problem["kind"] == "LOAD_FAILED" and "parse" in problem["detail"]


# Usage errors: the store is never touched.
@local_and_s3_only
def test_cli_usage_and_storage_errors(backend: Backend) -> None:
    scheme = rollway(backend, "gs://bucket/models/half/1")
    assert scheme.returncode == 2
    assert (
        "unsupported storage URI scheme 'gs'" in scheme.stderr and "Traceback" not in scheme.stderr
    )
    bad_flag = rollway(backend, backend.version_uri("half/1"), "--workers", "0")
    assert bad_flag.returncode == 2 and "--workers" in bad_flag.stderr
    assert rollway(backend, "--help").returncode == 0
    secret = rollway(backend, "webhdfs://user:s3cret@127.0.0.1:1/models/half/1")
    assert secret.returncode == 1, secret.stderr
    assert "s3cret" not in secret.stderr + secret.stdout and "Traceback" not in secret.stderr
