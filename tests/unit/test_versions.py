"""loader.versions: version names, discovery on disk, content fingerprints."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loader.versions import (
    MAX_VERSION,
    VersionId,
    content_fingerprint,
    parse_version,
    scan_versions,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", 1),
        ("0", 0),
        ("00000123", 123),
        ("007", 7),
        ("1234567890", 1234567890),
        (str(2**63 - 1), 2**63 - 1),
        ("0" * 30 + "5", 5),
        ("-1", None),
        ("+1", None),
        ("1a", None),
        ("a1", None),
        ("v1", None),
        ("", None),
        (" 1", None),
        ("1 ", None),
        ("1\n", None),
        ("1.0", None),
        ("1e3", None),
        ("0x10", None),
        ("1_000", None),
        ("\u0661", None),  # ARABIC-INDIC DIGIT ONE: int() accepts it, TF Serving does not
        ("\uff11", None),  # FULLWIDTH DIGIT ONE
        (str(2**63), None),
        (str(2**64), None),
        ("saved_model.pb", None),
    ],
)
def test_parse_version(name: str, expected: int | None) -> None:
    assert parse_version(name) == expected


def test_max_version_is_int64_max() -> None:
    assert MAX_VERSION == 2**63 - 1


def test_version_id_is_an_ordered_value() -> None:
    assert str(VersionId("m", 3)) == "m:3"
    assert VersionId("m", 3) == VersionId("m", 3)
    assert sorted([VersionId("m", 10), VersionId("a", 5), VersionId("m", 2)]) == [
        VersionId("a", 5),
        VersionId("m", 2),
        VersionId("m", 10),
    ]


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_scan_versions_finds_numeric_directories(tmp_path: Path) -> None:
    for name in ("1", "2", "00000123", "0"):
        (tmp_path / name).mkdir()
    for name in ("latest", "v3", "4a", "-5", "1.5", ".6", "tmp-7"):
        (tmp_path / name).mkdir()
    _touch(tmp_path / "8")  # a file named like a number is not a version
    _touch(tmp_path / "9.txt")
    _touch(tmp_path / "saved_model.pb")
    found = scan_versions(tmp_path)
    assert found == {
        0: tmp_path / "0",
        1: tmp_path / "1",
        2: tmp_path / "2",
        123: tmp_path / "00000123",
    }
    assert all(isinstance(p, Path) for p in found.values())


def test_scan_versions_accepts_str_paths(tmp_path: Path) -> None:
    (tmp_path / "3").mkdir()
    assert scan_versions(str(tmp_path)) == {3: tmp_path / "3"}


def test_scan_versions_same_number_twice_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "007").mkdir()
    (tmp_path / "07").mkdir()
    assert scan_versions(tmp_path) == {7: tmp_path / "007"}


def test_scan_versions_skips_a_numeric_file_before_a_numeric_dir(tmp_path: Path) -> None:
    _touch(tmp_path / "05")  # a file, sorted first
    (tmp_path / "5").mkdir()
    assert scan_versions(tmp_path) == {5: tmp_path / "5"}


def test_scan_versions_ignores_too_large_numbers(tmp_path: Path) -> None:
    (tmp_path / str(2**63)).mkdir()
    (tmp_path / "1").mkdir()
    assert scan_versions(tmp_path) == {1: tmp_path / "1"}


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_scan_versions_without_versions_is_empty(tmp_path: Path, kind: str) -> None:
    base = tmp_path / "base"
    if kind == "file":
        _touch(base)
    elif kind == "empty":
        base.mkdir()
    assert scan_versions(base) == {}


def test_scan_versions_follows_directory_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    (base / "4").symlink_to(real, target_is_directory=True)
    (base / "5").symlink_to(tmp_path / "nowhere")  # dangling: not a version
    assert scan_versions(base) == {4: base / "4"}


# ------------------------------------------------------------- fingerprints


def _set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model" / "1"
    _touch(root / "saved_model.pb", b"graph")
    _touch(root / "variables" / "variables.index", b"index")
    _touch(root / "variables" / "variables.data-00000-of-00001", b"data")
    for path in root.rglob("*"):
        if path.is_file():
            _set_mtime(path, 1_600_000_000_000_000_000)
    return root


def test_fingerprint_is_stable(version_dir: Path) -> None:
    first = content_fingerprint(version_dir)
    assert content_fingerprint(version_dir) == first
    assert content_fingerprint(str(version_dir)) == first
    assert len(first) == 64
    int(first, 16)


def test_fingerprint_ignores_reads_and_empty_directories(version_dir: Path) -> None:
    first = content_fingerprint(version_dir)
    (version_dir / "saved_model.pb").read_bytes()
    (version_dir / "assets").mkdir()
    assert content_fingerprint(version_dir) == first


def test_fingerprint_does_not_depend_on_location(version_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(version_dir, tmp_path / "elsewhere" / "1")  # copy2 keeps mtimes
    assert content_fingerprint(copy) == content_fingerprint(version_dir)


def test_fingerprint_changes_when_a_file_is_added(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    _touch(version_dir / "assets" / "vocab.txt", b"")
    assert content_fingerprint(version_dir) != before


def test_fingerprint_changes_when_a_file_is_removed(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    (version_dir / "variables" / "variables.index").unlink()
    assert content_fingerprint(version_dir) != before


def test_fingerprint_changes_when_a_file_is_renamed(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    (version_dir / "saved_model.pb").rename(version_dir / "saved_model.pbtxt")
    assert content_fingerprint(version_dir) != before


def test_fingerprint_changes_when_a_file_grows(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    path = version_dir / "variables" / "variables.data-00000-of-00001"
    path.write_bytes(b"more data")
    _set_mtime(path, 1_600_000_000_000_000_000)  # same mtime: the size alone changed
    assert content_fingerprint(version_dir) != before


def test_fingerprint_changes_when_a_file_is_rewritten_in_place(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    path = version_dir / "saved_model.pb"
    path.write_bytes(b"GRAPH")  # same size
    _set_mtime(path, 1_600_000_000_000_000_001)
    assert content_fingerprint(version_dir) != before


def test_fingerprint_changes_when_a_file_is_touched(version_dir: Path) -> None:
    before = content_fingerprint(version_dir)
    _set_mtime(version_dir / "variables" / "variables.index", 1_700_000_000_000_000_000)
    assert content_fingerprint(version_dir) != before


def test_fingerprint_of_missing_directory_is_that_of_an_empty_one(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert content_fingerprint(tmp_path / "missing") == content_fingerprint(tmp_path / "empty")
