"""functions.serving.core.repository: listings to versions, completeness, fingerprints;
and a repository on real local disk (the remote schemes run against real stores
in tests/integration/test_remote_base_path.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from functions.serving.core import repository
from functions.serving.core.listing import (
    Scan,
    cache_name,
    group_versions,
    listing_fingerprint,
    load_error,
    reported,
    wait_reason,
)
from functions.serving.core.repository import (
    CacheDir,
    RepositoryOptions,
    VersionRepository,
    scheme_problem,
)
from functions.serving.core.version_ref import VersionRef
from loader.errors import Code, LoadError
from loader.publish import publish_version
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry, VersionManifest
from loader.storage import ObjectInfo, open_storage
from loader.verify import Problem, ProblemKind, listing_problems
from tests.conftest import HALF_PLUS_TWO

SHARD = "variables/variables.data-00000-of-00001"


def info(key: str, size: int = 1, etag: str | None = None) -> ObjectInfo:
    return ObjectInfo(key, size, etag)


# ------------------------------------------------------------------- listings


def test_group_versions_takes_numeric_directories_only() -> None:
    listing = [
        info("1/saved_model.pb"),
        info("1/variables/variables.index"),
        info("12/saved_model.pb"),
        info("_rollway/staged/3"),  # staging records are no version
        info("latest/saved_model.pb"),
        info("7"),  # a file named like a version is no directory
        info("99999999999999999999/saved_model.pb"),  # above int64
    ]
    found = group_versions(listing)
    assert sorted(found) == [1, 12]
    assert found[1].name == "1"
    assert sorted(found[1].files) == ["saved_model.pb", "variables/variables.index"]


def test_group_versions_ignores_directory_markers() -> None:
    found = group_versions([info("3/", 0), info("4/", 0), info("4/saved_model.pb")])
    assert list(found) == [4]
    assert list(found[4].files) == ["saved_model.pb"]


def test_group_versions_same_number_twice_takes_the_lexically_first() -> None:
    found = group_versions([info("7/a"), info("007/b"), info("07/c")])
    assert found[7].name == "007"
    assert list(found[7].files) == ["b"]


def test_listing_fingerprint_changes_with_paths_sizes_and_etags() -> None:
    base = {"a": info("1/a", 3, "e1"), "b": info("1/b", 4)}
    fingerprint = listing_fingerprint(base)
    assert listing_fingerprint(dict(reversed(base.items()))) == fingerprint
    assert listing_fingerprint({**base, "a": info("1/a", 5, "e1")}) != fingerprint
    assert listing_fingerprint({**base, "a": info("1/a", 3, "e2")}) != fingerprint
    assert listing_fingerprint({**base, "c": info("1/c")}) != fingerprint
    assert listing_fingerprint({"a": base["a"]}) != fingerprint


# --------------------------------------------------------------- completeness


def test_a_listing_that_matches_its_manifest_does_not_wait() -> None:
    manifest = VersionManifest(
        model="m", version=1, files=[FileEntry(path="saved_model.pb", size=5, sha256="0" * 64)]
    )
    problems = listing_problems(manifest, {"saved_model.pb": info("x", 5)}, expected_version=1)
    assert problems == []
    assert wait_reason(problems) == ""


@pytest.mark.parametrize(
    ("stored", "kind"),
    [({}, ProblemKind.FILE_MISSING), ({"saved_model.pb": 3}, ProblemKind.SIZE_MISMATCH)],
)
def test_a_missing_or_resized_file_waits(stored: dict[str, int], kind: ProblemKind) -> None:
    manifest = VersionManifest(
        model="m", version=1, files=[FileEntry(path="saved_model.pb", size=5, sha256="0" * 64)]
    )
    listing = {path: info(path, size) for path, size in stored.items()}
    problems = listing_problems(manifest, listing, expected_version=1)
    assert [p.kind for p in problems] == [kind]
    assert "saved_model.pb" in wait_reason(problems)


def test_problems_a_publisher_cannot_cause_do_not_wait() -> None:
    """They fail the load instead (DATA_LOSS), so GetModelStatus says why."""
    manifest = VersionManifest(
        model="m", version=2, files=[FileEntry(path="saved_model.pb", size=5, sha256="0" * 64)]
    )
    listing = {"saved_model.pb": info("x", 5), "stray": info("y", 1)}
    problems = listing_problems(manifest, listing, expected_version=1)
    kinds = {p.kind for p in problems}
    assert kinds == {ProblemKind.MANIFEST_MISMATCH, ProblemKind.UNLISTED_FILE}
    assert wait_reason(problems) == ""
    error = load_error("s3://b/m/1", problems)
    assert error.code is Code.DATA_LOSS
    assert error.message.startswith("s3://b/m/1 is CORRUPT: ")


def test_an_incomplete_version_fails_its_load_as_unavailable() -> None:
    problem = Problem(ProblemKind.FILE_MISSING, "saved_model.pb", "not there")
    error = load_error("/m/1", [problem])
    assert error.code is Code.UNAVAILABLE
    assert error.message == "/m/1 is INCOMPLETE: FILE_MISSING saved_model.pb: not there"


def ref(version: int) -> VersionRef:
    return VersionRef(version, f"s3://b/m/{version}", str(version), "s3://b/m", True, "f")


def test_reported_keeps_a_waiting_version_that_serves() -> None:
    scan = Scan(found={3: ref(3)}, waiting={2: (ref(2), "x"), 4: (ref(4), "y")})
    assert reported(scan, available=[2]) == {3: ref(3), 2: ref(2)}
    assert reported(scan, available=[]) == {3: ref(3)}


def test_cache_name_is_one_safe_directory_name() -> None:
    assert cache_name("half_plus_two") == "half_plus_two"
    assert cache_name("resnet-50.v2") == "resnet-50.v2"
    for unsafe in ("..", ".hidden", "a/b", "", "x" * 300):
        name = cache_name(unsafe)
        assert "/" not in name and not name.startswith(".") and len(name) < 100
    assert cache_name("a/b") != cache_name("a_b")


@pytest.mark.parametrize(
    "uri",
    ["/srv/models/m", "file:///srv/m", "s3://b/m", "hdfs://nn:8020/m", "webhdfs://nn:9870/m"],
)
def test_every_registered_scheme_is_readable(uri: str) -> None:
    assert scheme_problem(uri) == ""


def test_an_unknown_scheme_is_named() -> None:
    problem = scheme_problem("foo://x/m")
    assert "foo://" in problem and "s3://" in problem


# ------------------------------------------------------- local disk, for real


def published(base: Path, version: int) -> Path:
    source = base.parent / f"src-{version}"
    shutil.copytree(HALF_PLUS_TWO / "00000123", source)
    publish_version(source, open_storage(str(base)), "m", version, workers=2)
    return base / str(version)


def plain(base: Path, version: int) -> Path:
    target = base / str(version)
    shutil.copytree(HALF_PLUS_TWO / "00000123", target)
    return target


def test_a_missing_local_base_path_is_missing(tmp_path: Path) -> None:
    repo = VersionRepository("m", str(tmp_path / "nope"), RepositoryOptions())
    assert repo.scan().missing


def test_a_local_version_without_manifest_loads_in_place(tmp_path: Path) -> None:
    path = plain(tmp_path / "m", 1)
    repo = VersionRepository("m", str(tmp_path / "m"), RepositoryOptions())
    scan = repo.scan()
    assert list(scan.found) == [1] and not scan.waiting
    assert repo.materialize(scan.found[1]) == path


def test_require_manifest_makes_a_plain_version_wait(tmp_path: Path) -> None:
    plain(tmp_path / "m", 1)
    repo = VersionRepository("m", str(tmp_path / "m"), RepositoryOptions(require_manifest=True))
    scan = repo.scan()
    assert not scan.found
    assert "--require_manifest" in scan.waiting[1][1]


def test_a_local_version_with_manifest_is_verified_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = published(tmp_path / "m", 1)
    calls: list[Any] = []
    real = repository.verify_version

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(repository, "verify_version", counting)
    repo = VersionRepository("m", str(tmp_path / "m"), RepositoryOptions())
    found = repo.scan().found
    assert found[1].has_manifest
    assert repo.materialize(found[1]) == path
    assert repo.materialize(repo.scan().found[1]) == path
    assert len(calls) == 1


def test_a_local_version_missing_a_listed_file_waits(tmp_path: Path) -> None:
    path = published(tmp_path / "m", 1)
    (path / SHARD).unlink()
    repo = VersionRepository("m", str(tmp_path / "m"), RepositoryOptions())
    scan = repo.scan()
    assert not scan.found
    assert f"FILE_MISSING {SHARD}" in scan.waiting[1][1]


def test_a_corrupt_local_version_fails_with_data_loss(tmp_path: Path) -> None:
    path = published(tmp_path / "m", 1)
    data = bytearray((path / SHARD).read_bytes())
    data[0] ^= 0xFF  # same size: only hashing can tell
    (path / SHARD).write_bytes(bytes(data))
    repo = VersionRepository("m", str(tmp_path / "m"), RepositoryOptions())
    found = repo.scan().found
    with pytest.raises(LoadError) as caught:
        repo.materialize(found[1])
    assert caught.value.code is Code.DATA_LOSS
    assert f"CHECKSUM_MISMATCH {SHARD}" in caught.value.message


def test_the_assigned_cache_is_not_verified_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = published(tmp_path / "m", 1)
    monkeypatch.setattr(repository, "verify_version", None)  # calling it would fail
    options = RepositoryOptions(verify_local_manifests=False)
    repo = VersionRepository("m", str(tmp_path / "m"), options)
    assert repo.materialize(repo.scan().found[1]) == path


def test_a_ref_from_another_base_path_is_refused(tmp_path: Path) -> None:
    plain(tmp_path / "a", 1)
    plain(tmp_path / "b", 1)
    a = VersionRepository("m", str(tmp_path / "a"), RepositoryOptions())
    b = VersionRepository("m", str(tmp_path / "b"), RepositoryOptions())
    with pytest.raises(LoadError, match="not under the base path"):
        b.materialize(a.scan().found[1])


def test_cache_dir_made_on_first_use_and_deleted(tmp_path: Path) -> None:
    mine = CacheDir()
    assert mine.made() is None
    made = mine.path
    assert made.is_dir() and mine.made() == made
    mine.close()
    assert not made.exists()
    given = CacheDir(str(tmp_path / "cache"))
    (given.path / "m").mkdir(parents=True)
    given.close()  # a directory the user named is never deleted
    assert (tmp_path / "cache" / "m").is_dir()
