"""loader/stage.py and loader/archive.py on a real store (local disk and SeaweedFS S3).

A version is published with ``publish_version`` into a "landing" location and
staged into a separate "store" location, both under the ``backend`` root, with
TF Serving's real half_plus_two SavedModel.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from loader import layout
from loader.archive import stage_archive
from loader.errors import AlreadyExists, DataLoss, FailedPrecondition
from loader.manifest import MANIFEST_NAME
from loader.publish import publish_version
from loader.stage import StageResult, stage_version, staged_versions
from loader.storage import Storage, open_storage
from loader.unpack import ArchiveRejected
from loader.verify import ProblemKind, Verdict, verify_version
from tests.conftest import HALF_PLUS_TWO
from tests.stores import Backend

MODEL, VERSION = "hp2", 123
DATA = "variables/variables.data-00000-of-00001"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "export" / str(VERSION)
    shutil.copytree(HALF_PLUS_TWO / "00000123", path)
    for item in path.rglob("*"):
        item.chmod(0o755 if item.is_dir() else 0o644)  # the test data is read-only
    return path


@pytest.fixture
def landing(backend: Backend) -> Storage:
    return open_storage(backend.version_uri("landing"))


@pytest.fixture
def store(backend: Backend) -> Storage:
    return open_storage(backend.version_uri("store"))


def publish(source: Path, where: Storage, force: bool = False) -> str:
    """Publishes ``source`` as hp2/123 under ``where``; returns the manifest's sha256."""
    base = open_storage(where.join(MODEL))
    return publish_version(source, base, MODEL, VERSION, force=force, workers=2).manifest_sha256


def stage(landing: Storage, store: Storage, prefix: str = f"{MODEL}/{VERSION}") -> StageResult:
    report = verify_version(landing, prefix, workers=2)
    assert report.verdict is Verdict.COMPLETE, report.problems
    return stage_version(landing, prefix, store, MODEL, VERSION, report, workers=2)


def assert_staged(store: Storage, sha: str) -> None:
    report = verify_version(store, f"{MODEL}/{VERSION}", expected_model=MODEL, expected_version=123)
    assert report.verdict is Verdict.COMPLETE, report.problems
    assert staged_versions(store, MODEL)[VERSION].manifest_sha256 == sha


def test_a_staged_copy_verifies_complete_and_is_marked(
    source: Path, landing: Storage, store: Storage
) -> None:
    sha = publish(source, landing)
    result = stage(landing, store)
    assert (result.model, result.version, result.manifest_sha256) == (MODEL, VERSION, sha)
    assert result.version_uri == store.join(f"{MODEL}/{VERSION}")
    assert result.copied_bytes == result.total_bytes > 12_000
    assert not (result.already_staged or result.in_place)
    assert_staged(store, sha)
    info = staged_versions(store, MODEL)[VERSION]
    assert info.source_uri == landing.join(f"{MODEL}/{VERSION}")
    assert info.source_sha256 is None and info.staged_at.tzinfo is not None
    assert store.exists(f"{MODEL}/{layout.staged_key(VERSION)}")


def test_restaging_the_same_manifest_is_a_no_op(
    source: Path, landing: Storage, store: Storage
) -> None:
    publish(source, landing)
    first = stage(landing, store)
    again = stage(landing, store)
    assert again.already_staged and again.copied_bytes == 0
    assert again.manifest_sha256 == first.manifest_sha256


def test_a_republish_with_another_manifest_is_rejected(
    source: Path, landing: Storage, store: Storage
) -> None:
    sha = publish(source, landing)
    stage(landing, store)
    (source / "assets" / "extra.txt").write_text("changed\n")
    other = publish(source, landing, force=True)
    with pytest.raises(AlreadyExists) as raised:
        stage(landing, store)
    assert f"staged with manifest {sha}" in str(raised.value)
    assert f"a re-publish with manifest {other}" in str(raised.value)
    assert_staged(store, sha)  # untouched


def test_in_place_staging_creates_only_the_marker(
    backend: Backend, source: Path, store: Storage
) -> None:
    sha = publish(source, store)
    before = {info.key for info in store.list()}
    # The source is named another way (rooted at the version itself): still the same place.
    version_dir = open_storage(backend.version_uri(f"store/{MODEL}/{VERSION}"))
    report = verify_version(version_dir, "", workers=2)
    result = stage_version(version_dir, "", store, MODEL, VERSION, report)
    assert result.in_place and result.copied_bytes == 0 and not result.already_staged
    marker = f"{MODEL}/{layout.staged_key(VERSION)}"
    assert {info.key for info in store.list()} == before | {marker}
    assert_staged(store, sha)
    with pytest.raises(AlreadyExists, match="staged"):  # publish never replaces it now
        publish(source, store, force=True)


@pytest.mark.parametrize("damage", [b"\xff" * 20, b"grown" * 10], ids=["same-size", "grown"])
def test_a_source_damaged_after_verification_is_data_loss(
    source: Path, landing: Storage, store: Storage, damage: bytes
) -> None:
    publish(source, landing)
    report = verify_version(landing, f"{MODEL}/{VERSION}", workers=2)
    original = landing.read_bytes(f"{MODEL}/{VERSION}/{DATA}")
    landing.write_bytes(f"{MODEL}/{VERSION}/{DATA}", damage)
    with pytest.raises(DataLoss, match="changed after verification") as raised:
        stage_version(landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report, workers=2)
    assert DATA in str(raised.value)
    assert not store.exists(f"{MODEL}/{VERSION}/{MANIFEST_NAME}")
    assert staged_versions(store, MODEL) == {}
    check = verify_version(store, f"{MODEL}/{VERSION}")
    assert check.verdict is Verdict.INCOMPLETE
    # Repaired, the same call finishes the job.
    landing.write_bytes(f"{MODEL}/{VERSION}/{DATA}", original)
    result = stage_version(landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report)
    assert_staged(store, result.manifest_sha256)


@pytest.mark.parametrize(
    ("cut", "extra", "found"), [(1, b"!", "has sha256"), (0, b"!", "holds more bytes")]
)
def test_a_large_file_is_copied_and_checked_as_it_streams(
    source: Path, landing: Storage, store: Storage, cut: int, extra: bytes, found: str
) -> None:
    """20 MiB: an S3 multipart upload, fed by the checking reader, which stops it
    as soon as the source holds more than the manifest lists."""
    big = bytes(range(256)) * (20 * 2**12)
    (source / "assets" / "big.bin").write_bytes(big)
    publish(source, landing)
    report = verify_version(landing, f"{MODEL}/{VERSION}", workers=2)
    landing.write_bytes(f"{MODEL}/{VERSION}/assets/big.bin", big[: len(big) - cut] + extra)
    with pytest.raises(DataLoss, match=rf"big\.bin {found}.*changed after verification"):
        stage_version(landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report, workers=2)
    assert not store.exists(f"{MODEL}/{VERSION}/{MANIFEST_NAME}")
    landing.write_bytes(f"{MODEL}/{VERSION}/assets/big.bin", big)
    result = stage_version(landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report)
    assert result.copied_bytes == result.total_bytes > len(big)
    assert_staged(store, result.manifest_sha256)


def test_a_crashed_copy_is_finished_by_staging_again(
    source: Path, landing: Storage, store: Storage
) -> None:
    sha = publish(source, landing)
    base = f"{MODEL}/{VERSION}"
    store.write_bytes(f"{base}/saved_model.pb", b"half a file")  # partial copies
    store.write_bytes(f"{base}/{DATA}", b"")
    store.write_bytes(f"{base}/assets/stray.bin", b"not in the manifest")
    assert verify_version(store, base).verdict is Verdict.INCOMPLETE  # no manifest: not there
    stage(landing, store)
    assert_staged(store, sha)
    assert not store.exists(f"{base}/assets/stray.bin")

    # A crash after the manifest but before the marker: staging again adds the marker.
    store.delete(f"{MODEL}/{layout.staged_key(VERSION)}")
    result = stage(landing, store)
    assert not result.already_staged and result.copied_bytes == 0
    assert_staged(store, sha)

    # The same, with a file gone since the commit: it is copied again.
    store.delete(f"{MODEL}/{layout.staged_key(VERSION)}")
    store.delete(f"{base}/{DATA}")
    assert stage(landing, store).copied_bytes == result.total_bytes
    assert_staged(store, sha)


def test_concurrent_stagers_of_one_version_both_succeed(
    source: Path, landing: Storage, store: Storage
) -> None:
    sha = publish(source, landing)
    report = verify_version(landing, f"{MODEL}/{VERSION}")
    results: list[StageResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            args = (landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report)
            results.append(stage_version(*args, workers=2))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(results) == 2
    assert_staged(store, sha)


def test_only_a_complete_report_can_be_staged(
    source: Path, landing: Storage, store: Storage
) -> None:
    publish(source, landing)
    landing.delete(f"{MODEL}/{VERSION}/{MANIFEST_NAME}")
    report = verify_version(landing, f"{MODEL}/{VERSION}")
    assert report.problems[0].kind is ProblemKind.MANIFEST_MISSING
    with pytest.raises(FailedPrecondition, match="not verified COMPLETE"):
        stage_version(landing, f"{MODEL}/{VERSION}", store, MODEL, VERSION, report)
    assert list(store.list()) == []


def test_staged_markers_are_read_strictly(source: Path, landing: Storage, store: Storage) -> None:
    publish(source, landing)
    sha = stage(landing, store).manifest_sha256
    store.write_bytes(f"{MODEL}/{layout.STATE_DIR}/staged/README", b"not a version")
    assert list(staged_versions(store, MODEL)) == [VERSION]
    store.write_bytes(f"{MODEL}/{layout.staged_key(7)}", b"staged by hand")
    with pytest.raises(DataLoss, match="is not a rollway marker"):
        staged_versions(store, MODEL)
    store.delete(f"{MODEL}/{layout.staged_key(7)}")
    assert staged_versions(store, MODEL)[VERSION].manifest_sha256 == sha


# --- archives -----------------------------------------------------------------------


def archive_bytes(source: Path, kind: str, wrapper: str = "") -> bytes:
    buffer = io.BytesIO()
    files = sorted(p for p in source.rglob("*") if p.is_file())
    names = [f"{wrapper}{p.relative_to(source).as_posix()}" for p in files]
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path, name in zip(files, names, strict=True):
                zf.write(path, name)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if kind == "tar.gz" else "w") as tar:
            for path, name in zip(files, names, strict=True):
                tar.add(path, name)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "wrapper", "digest_format"),
    [("tar.gz", "", "sha256sum"), ("tar", "model/", "bare"), ("zip", "123/", "sha256sum")],
)
def test_an_archive_is_staged_like_a_published_version(
    source: Path, landing: Storage, store: Storage, kind: str, wrapper: str, digest_format: str
) -> None:
    data = archive_bytes(source, kind, wrapper)
    key = f"{MODEL}/{VERSION}.{kind}"
    landing.write_bytes(key, data)
    digest = hashlib.sha256(data).hexdigest()
    line = f"{digest}  {VERSION}.{kind}\n" if digest_format == "sha256sum" else digest
    landing.write_bytes(f"{key}.sha256", line.encode())  # LAST, as a publisher would

    result = stage_archive(landing, key, None, store, MODEL, VERSION, workers=2)
    assert result.copied_bytes == result.total_bytes and not result.already_staged
    assert_staged(store, result.manifest_sha256)
    info = staged_versions(store, MODEL)[VERSION]
    assert (info.source_uri, info.source_sha256) == (landing.join(key), digest)
    staged_files = {i.key for i in store.list(f"{MODEL}/{VERSION}/")}
    assert f"{MODEL}/{VERSION}/saved_model.pb" in staged_files  # the wrapper is gone

    landing.delete(key)  # the same digest again is decided without a download
    again = stage_archive(landing, key, digest, store, MODEL, VERSION)
    assert again.already_staged and again.manifest_sha256 == result.manifest_sha256


def test_an_archive_that_does_not_match_its_digest_is_data_loss(
    source: Path, landing: Storage, store: Storage
) -> None:
    data = archive_bytes(source, "tar.gz")
    landing.write_bytes(f"{MODEL}/{VERSION}.tar.gz", data)
    wrong = hashlib.sha256(data + b"x").hexdigest()
    with pytest.raises(DataLoss, match=f"but its digest is {wrong}"):
        stage_archive(landing, f"{MODEL}/{VERSION}.tar.gz", wrong, store, MODEL, VERSION)
    assert list(store.list()) == []


def test_a_hostile_archive_is_rejected_before_the_store_is_touched(
    source: Path, landing: Storage, store: Storage
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(source / "saved_model.pb", "saved_model.pb")
        link = tarfile.TarInfo("variables")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    data = buffer.getvalue()
    landing.write_bytes(f"{MODEL}/{VERSION}.tar.gz", data)
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(ArchiveRejected, match="'variables' is a symbolic link to '/etc'"):
        stage_archive(landing, f"{MODEL}/{VERSION}.tar.gz", digest, store, MODEL, VERSION)
    assert list(store.list()) == []
