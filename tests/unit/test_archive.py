"""loader/unpack.py and the digest handling of loader/archive.py: hostile archives
built in memory, unpacked into a temporary directory (no store, no TensorFlow)."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from loader.archive import archive_version, fetch_archive_digest, parse_digest, stage_archive
from loader.errors import DataLoss, InvalidArgument, NotFound
from loader.storage import open_storage
from loader.unpack import ArchiveRejected, Limits, _Unpacker, member_path, unpack

HEX = "ab" * 32
PB = b"not parsed by unpack, only found"
Member = tuple[str, bytes] | tarfile.TarInfo | zipfile.ZipInfo


def make_tar(path: Path, members: Sequence[Member]) -> Path:
    """A gzipped tar, or a plain one when ``path`` ends in ".tar"."""
    compressed = path.suffix != ".tar"
    with tarfile.open(path, "w:gz") if compressed else tarfile.open(path, "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                assert isinstance(member, tuple)
                info = tarfile.TarInfo(member[0])
                info.size, info.mtime = len(member[1]), 1_700_000_000
                tar.addfile(info, io.BytesIO(member[1]))
    return path


def make_zip(path: Path, members: Sequence[Member]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in members:
            if isinstance(member, zipfile.ZipInfo):
                zf.writestr(member, b"target")
            else:
                assert isinstance(member, tuple)
                zf.writestr(member[0], member[1])
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system, info.external_attr = 3, mode << 16
    return info


def run(tmp_path: Path, archive: Path, limits: Limits | None = None) -> Path:
    kind = "zip" if archive.suffix == ".zip" else "tar"
    return unpack(archive, kind, tmp_path / "out", limits or Limits(), archive.name).root


# --- digests and names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [f"{HEX}  7.tar.gz\n", f"{HEX} *7.tar.gz", f"{HEX}  dist/7.tar.gz\n", f"{HEX}\n", HEX,
     HEX.upper() + "\r\n"],
)  # fmt: skip
def test_digest_files_in_sha256sum_and_bare_formats(text: str) -> None:
    assert parse_digest(text.encode(), "7.tar.gz", "d") == HEX


@pytest.mark.parametrize(
    ("data", "why"),
    [(b"", "one line"), (HEX[:-1].encode(), "one line"), (f"{HEX} 7.tar.gz".encode(), "one line"),
     (f"{HEX}  7.tar.gz\n{HEX}  8.tar.gz\n".encode(), "one line"),
     (f"{HEX}  8.tar.gz".encode(), "is for '8.tar.gz', not '7.tar.gz'"),
     ("é".encode(), "not ASCII"), (b"sha256:" + HEX.encode(), "one line")],
)  # fmt: skip
def test_bad_digest_files_are_data_loss(data: bytes, why: str) -> None:
    with pytest.raises(DataLoss, match=why):
        parse_digest(data, "7.tar.gz", "s3://b/m/7.tar.gz.sha256")


def test_fetch_archive_digest(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path))
    with pytest.raises(NotFound, match="not published"):
        fetch_archive_digest(storage, "m/7.tar.gz.sha256")
    storage.write_bytes("m/7.tar.gz.sha256", f"{HEX}  7.tar.gz\n".encode())
    assert fetch_archive_digest(storage, "m/7.tar.gz.sha256") == HEX
    storage.write_bytes("m/8.tar.gz.sha256", b" " * 5000)
    with pytest.raises(DataLoss, match="over 4096 bytes"):
        fetch_archive_digest(storage, "m/8.tar.gz.sha256")


def test_stage_archive_refuses_bad_arguments_before_any_download(tmp_path: Path) -> None:
    landing, store = open_storage(str(tmp_path / "landing")), open_storage(str(tmp_path / "s"))
    with pytest.raises(InvalidArgument, match="not named like an archive"):
        stage_archive(landing, "m/7.rar", HEX, store, "m", 7)
    with pytest.raises(InvalidArgument, match="not 64 hex digits"):
        stage_archive(landing, "m/7.tgz", "abc", store, "m", 7)
    with pytest.raises(NotFound, match=r"7\.tgz\.sha256 does not exist"):
        stage_archive(landing, "m/7.tgz", None, store, "m", 7)
    landing.write_bytes("m/7.tgz.sha256", b"garbage\n")
    with pytest.raises(DataLoss, match="must hold one line"):
        stage_archive(landing, "m/7.tgz", None, store, "m", 7)
    assert list(store.list()) == []


@pytest.mark.parametrize(
    ("key", "version"),
    [("m/7.tar.gz", 7), ("7.tgz", 7), ("m/0012.tar", 12), ("m/3.zip", 3), ("m/x.zip", None),
     ("m/7.tar.bz2", None), ("m/7", None)],
)  # fmt: skip
def test_archive_version(key: str, version: int | None) -> None:
    assert archive_version(key) == version


@pytest.mark.parametrize(
    ("name", "path"),
    [("a/b", "a/b"), ("./a//b/", "a/b"), (".", ""), ("./", ""), ("a/./b", "a/b")],
)
def test_member_paths(name: str, path: str) -> None:
    assert member_path(name) == path


@pytest.mark.parametrize(
    ("name", "rule"),
    [("/etc/passwd", "absolute"), ("C:/x", "absolute"), ("../x", "'..'"), ("a/../../x", "'..'"),
     ("a\\b", "backslash"), ("a\0b", "NUL")],
)  # fmt: skip
def test_member_paths_that_break_a_rule(name: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        member_path(name)


# --- unpacking ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip"])
def test_a_plain_archive_and_a_wrapper_directory(tmp_path: Path, suffix: str) -> None:
    files: list[Member] = [("saved_model.pb", PB), ("variables/variables.index", b"i")]
    make = make_zip if suffix == ".zip" else make_tar
    plain = make(tmp_path / f"plain{suffix}", files)
    assert run(tmp_path / "a", plain) == tmp_path / "a" / "out"
    assert (tmp_path / "a" / "out" / "variables" / "variables.index").read_bytes() == b"i"
    wrapped = make(tmp_path / f"wrapped{suffix}", [(f"./7/{n}", d) for n, d in files])  # type: ignore[misc]
    assert run(tmp_path / "b", wrapped) == tmp_path / "b" / "out" / "7"


def test_mtime_of_the_newest_file_is_reported(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", [("saved_model.pb", PB)])
    found = unpack(archive, "tar", tmp_path / "out", Limits(), "a.tgz")
    assert (found.latest_mtime, found.members, found.unpacked_bytes) == (1.7e9, 1, len(PB))


@pytest.mark.parametrize(
    ("members", "member", "rule"),
    [
        ([("/etc/evil", b"x")], "/etc/evil", "absolute path"),
        ([("../evil", b"x")], "../evil", "'..' segment"),
        ([("a/../../evil", b"x")], "a/../../evil", "'..' segment"),
        ([tar_entry("link", tarfile.SYMTYPE, "/etc/passwd")], "link", "symbolic link"),
        ([tar_entry("up", tarfile.SYMTYPE, "../../..")], "up", "symbolic link"),
        ([("saved_model.pb", PB), tar_entry("hard", tarfile.LNKTYPE, "saved_model.pb")],
         "hard", "hard link"),
        ([tar_entry("tty", tarfile.CHRTYPE)], "tty", "device or FIFO"),
        ([tar_entry("disk", tarfile.BLKTYPE)], "disk", "device or FIFO"),
        ([tar_entry("pipe", tarfile.FIFOTYPE)], "pipe", "device or FIFO"),
        ([("saved_model.pb", PB), ("./saved_model.pb", b"again")], "./saved_model.pb",
         "may appear once"),
        ([("a", b"file"), ("a/b", b"under a file")], "a/b", "cannot be created"),
        ([(f"f{i}", b"") for i in range(6)], "f5", "at most 5 members"),
        ([("assets/readme.txt", b"no model")], "", "holds no SavedModel"),
        ([("a/saved_model.pb", PB), ("b/saved_model.pb", PB)], "", "holds no SavedModel"),
        ([("x/y/saved_model.pb", PB)], "", "holds no SavedModel"),
        ([("saved_model.pb", PB), ("rollway-manifest.json", b"{}")], "rollway-manifest.json",
         "written by the loader"),
    ],
)  # fmt: skip
def test_hostile_tar_members_are_rejected_by_name(
    tmp_path: Path, members: list[Member], member: str, rule: str
) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ArchiveRejected, match=rule) as raised:
        run(tmp_path, archive, Limits(max_members=5))
    assert raised.value.member == member
    assert (
        f"member {member!r}" in str(raised.value) if member else "bad.tar.gz" in str(raised.value)
    )
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize(
    ("members", "member", "rule"),
    [
        ([("/abs", b"x")], "/abs", "absolute path"),
        ([("../evil", b"x")], "../evil", "'..' segment"),
        ([zip_entry("link", stat.S_IFLNK | 0o777)], "link", "symbolic link"),
        ([zip_entry("fifo", stat.S_IFIFO | 0o644)], "fifo", "device or FIFO"),
        ([zip_entry("tty", stat.S_IFCHR | 0o644)], "tty", "device or FIFO"),
        ([(f"f{i}", b"") for i in range(7)], "f5", "at most 5 members"),
    ],
)
def test_hostile_zip_members_are_rejected_by_name(
    tmp_path: Path, members: list[Member], member: str, rule: str
) -> None:
    with pytest.raises(ArchiveRejected, match=rule) as raised:
        run(tmp_path, make_zip(tmp_path / "bad.zip", members), Limits(max_members=5))
    assert raised.value.member == member
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_a_small_bomb_is_stopped_at_the_unpacked_cap(tmp_path: Path, suffix: str) -> None:
    zeros = [("saved_model.pb", PB), ("variables/zeros", b"\0" * 4 * 2**20)]
    archive = (make_zip if suffix == ".zip" else make_tar)(tmp_path / f"bomb{suffix}", zeros)
    assert archive.stat().st_size < 50_000  # highly compressible
    with pytest.raises(ArchiveRejected, match=f"past the limit of {2**20} bytes") as raised:
        run(tmp_path, archive, Limits(max_unpacked_bytes=2**20))
    assert raised.value.member == "variables/zeros"


def test_bytes_are_counted_as_written_not_taken_from_headers(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    unpacker = _Unpacker(tmp_path / "out", Limits(max_unpacked_bytes=1000), "lying.tar")
    with pytest.raises(ArchiveRejected, match="past the limit of 1000 bytes"):
        unpacker.file("m", "m", io.BytesIO(b"x" * 5000), declared=10, mtime=0.0)


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_a_damaged_archive_is_data_loss(tmp_path: Path, suffix: str) -> None:
    files: list[Member] = [("saved_model.pb", PB * 1000)]
    archive = (make_zip if suffix == ".zip" else make_tar)(tmp_path / f"a{suffix}", files)
    data = bytearray(archive.read_bytes())
    if suffix == ".zip":
        data[60:70] = b"\xff" * 10  # inside the compressed data: a CRC or inflate error
    else:
        del data[len(data) // 2 :]  # truncated
    archive.write_bytes(bytes(data))
    with pytest.raises(DataLoss, match="is not a readable"):
        run(tmp_path, archive)


def test_not_an_archive_is_data_loss(tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"plain text, not a tar")
    with pytest.raises(DataLoss, match="not a readable tar archive"):
        run(tmp_path, tmp_path / "x.tar.gz")
