"""Symbolic links in a local version: never followed, and the version is CORRUPT.

Real versions are published to local disk with the loader's own publish, then
one listed file (or directory) is swapped for a link to identical bytes:
`rollway verify` (a real process) says CORRUPT and exits 4, stage refuses, the
file-system serving path fails the load with DATA_LOSS, and fetch removes a
link planted in its cache instead of writing through it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from functions import verify_cmd
from functions.serving.core.repository import RepositoryOptions, VersionRepository
from loader import manifest
from loader.errors import Code, DataLoss, FailedPrecondition, LoadError
from loader.fetch import fetch_version
from loader.publish import publish_version
from loader.stage import stage_manifest, stage_version
from loader.storage import open_storage
from loader.storage.base import NotRegularFile
from loader.verify import ProblemKind, Verdict, verify_version
from tests.conftest import HALF_PLUS_TWO, REPO

INDEX = "variables/variables.index"
NOTE = b"the same bytes twice\n"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """``<tmp>/models/half/123``: half_plus_two plus two identical assets, published."""
    source = tmp_path / "source"
    shutil.copytree(HALF_PLUS_TWO / "00000123", source)
    (source / "assets").mkdir(exist_ok=True)
    for name in ("a.txt", "b.txt"):
        (source / "assets" / name).write_bytes(NOTE)
    models = tmp_path / "models"
    publish_version(source, open_storage(str(models / "half")), "half", 123)
    return models


def version(base: Path) -> Path:
    return base / "half" / "123"


def link_to_outside(base: Path) -> None:
    """``variables/variables.index`` becomes a link to an identical copy outside."""
    index = version(base) / INDEX
    outside = base.parent / "outside.index"
    shutil.copyfile(index, outside)
    index.unlink()
    index.symlink_to(outside)


def link_inside(base: Path) -> None:
    """``assets/b.txt`` becomes a link to ``assets/a.txt``, which holds the same bytes."""
    b = version(base) / "assets" / "b.txt"
    b.unlink()
    b.symlink_to("a.txt")


def link_directory(base: Path) -> None:
    """``variables/`` moves out, and a link to it takes its place."""
    variables = version(base) / "variables"
    outside = base.parent / "outside-variables"
    shutil.move(variables, outside)
    variables.symlink_to(outside, target_is_directory=True)


CASES = {
    "file link to an identical file outside": (link_to_outside, INDEX),
    "file link to an identical file inside": (link_inside, "assets/b.txt"),
    "directory link": (link_directory, INDEX),
}


def rollway_verify(uri: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "functions.cli", "verify", str(uri), *args]
    return subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_an_intact_version_is_complete(base: Path) -> None:
    assert verify_version(open_storage(str(version(base)))).verdict is Verdict.COMPLETE


@pytest.mark.parametrize("case", CASES)
def test_rollway_verify_says_corrupt_and_names_the_link(base: Path, case: str) -> None:
    damage, path = CASES[case]
    damage(base)
    human = rollway_verify(version(base))
    assert human.returncode == verify_cmd.EXIT_CODES[Verdict.CORRUPT] == 4, human.stderr
    assert f"{version(base)}: CORRUPT" in human.stdout
    assert f"  NOT_REGULAR_FILE {path}: " in human.stdout and "symbolic link" in human.stdout

    document = json.loads(rollway_verify(version(base), "--json").stdout)
    assert document["verdict"] == "CORRUPT"
    found = [p for p in document["problems"] if p["path"] == path]
    assert found and found[0]["kind"] == "NOT_REGULAR_FILE", document["problems"]
    assert "symbolic link" in found[0]["detail"]


@pytest.mark.parametrize("case", CASES)
def test_stage_refuses(base: Path, tmp_path: Path, case: str) -> None:
    source = open_storage(str(base))
    document = verify_version(source, "half/123").manifest
    assert document is not None
    CASES[case][0](base)
    store = open_storage(str(tmp_path / "store"))
    report = verify_version(source, "half/123", expected_model="half", expected_version=123)
    assert report.verdict is Verdict.CORRUPT
    assert ProblemKind.NOT_REGULAR_FILE in {p.kind for p in report.problems}
    with pytest.raises(FailedPrecondition, match="CORRUPT"):
        stage_version(source, "half/123", store, "half", 123, report)
    # A caller that vouches for the manifest still never reads through the link.
    with pytest.raises(DataLoss, match="symbolic link"):
        stage_manifest(source, "half/123", store, "half", 123, document, workers=1)
    assert not store.exists(f"half/123/{manifest.MANIFEST_NAME}")


@pytest.mark.parametrize("case", CASES)
def test_the_file_system_source_does_not_load_it(base: Path, case: str) -> None:
    CASES[case][0](base)
    repository = VersionRepository("half", str(base / "half"), RepositoryOptions())
    scan = repository.scan()
    assert 123 in scan.found, scan  # found, so that its load fails and says why
    with pytest.raises(LoadError) as failed:
        repository.materialize(scan.found[123])
    assert failed.value.code is Code.DATA_LOSS
    assert "CORRUPT" in str(failed.value) and "NOT_REGULAR_FILE" in str(failed.value)


def test_a_link_as_the_manifest_is_corrupt(base: Path, tmp_path: Path) -> None:
    committed = version(base) / manifest.MANIFEST_NAME
    outside = tmp_path / "manifest-elsewhere.json"
    shutil.copyfile(committed, outside)
    committed.unlink()
    committed.symlink_to(outside)
    report = verify_version(open_storage(str(version(base))))
    assert report.verdict is Verdict.CORRUPT
    assert [(p.kind, p.path) for p in report.problems] == [
        (ProblemKind.NOT_REGULAR_FILE, manifest.MANIFEST_NAME)
    ]
    repository = VersionRepository("half", str(base / "half"), RepositoryOptions())
    scan = repository.scan()
    with pytest.raises(LoadError) as failed:
        repository.materialize(scan.found[123])
    assert failed.value.code is Code.DATA_LOSS


def test_the_local_backend_lists_links_and_never_reads_one(base: Path, tmp_path: Path) -> None:
    link_directory(base)
    link_inside(base)
    storage = open_storage(str(version(base)))
    listed = {info.key: info for info in storage.list()}
    assert listed["variables"].link and listed["assets/b.txt"].link
    assert not listed["assets/a.txt"].link and INDEX not in listed  # not descended into
    assert storage.stat("assets/b.txt").link
    with pytest.raises(NotRegularFile, match="symbolic link"):
        storage.open_read("assets/b.txt")
    fifo = version(base) / "assets" / "fifo"
    os.mkfifo(fifo)
    opened: list[BaseException] = []

    def read_fifo() -> None:  # a FIFO must be refused, not block the reader
        try:
            storage.open_read("assets/fifo")
        except BaseException as err:
            opened.append(err)

    reader = threading.Thread(target=read_fifo, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive() and isinstance(opened[0], NotRegularFile)


def test_fetch_replaces_a_link_in_its_cache_without_writing_through_it(
    base: Path, tmp_path: Path
) -> None:
    store = open_storage(str(base))
    target = tmp_path / "cache" / "half" / "123"
    (target / "variables").mkdir(parents=True)
    decoy = tmp_path / "decoy.index"
    shutil.copyfile(version(base) / INDEX, decoy)  # identical bytes: reuse would pass the hash
    (target / INDEX).symlink_to(decoy)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "assets").symlink_to(elsewhere, target_is_directory=True)
    result = fetch_version(store, "half", 123, tmp_path / "cache", workers=2)
    assert result.files_reused == 0
    for path in (target / INDEX, target / "assets"):
        assert not path.is_symlink()
    assert (target / "assets" / "a.txt").read_bytes() == NOTE
    assert list(elsewhere.iterdir()) == [] and decoy.is_file()
