"""Unpacking an untrusted tar or zip archive into a local directory, safely.

Nothing in the archive is trusted. Our own checks come first:
- members are counted, and the bytes actually written summed, while unpacking
  (headers can lie: a "zip bomb" declares little and inflates to much), against
  ``Limits.max_members`` and ``Limits.max_unpacked_bytes``;
- names must be relative, without '..', a backslash, NUL or a drive letter,
  and each may appear once;
- only regular files and directories are unpacked. Every link, symbolic or
  hard, is refused wherever it points (simpler and safer than resolving where it
  leads, and a SavedModel needs none), and so is every device, FIFO or other
  special member;
then, for tar, ``tarfile.data_filter`` (PEP 706) as a second line of defence.
Files are created with O_EXCL | O_NOFOLLOW, under directories this code made.

Errors: DataLoss when the archive cannot be read (truncated, bad compressed
data, failed CRC): its bytes are damaged. ``ArchiveRejected``, an
InvalidArgument naming the member and the rule, when a readable archive breaks
a rule: the publisher sent what the loader refuses by policy, nothing was
damaged in storage. Neither is retriable.
"""

from __future__ import annotations

import datetime
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from loader.errors import DataLoss, Internal, InvalidArgument
from loader.manifest import MANIFEST_NAME, MAX_FILES, SAVED_MODEL_FILES
from loader.storage import CHUNK_BYTES

# The defaults of the loader's --max-archive-bytes and --max-archive-members
# (the only ones: loader.pipeline and loader.archive use these). An archive is
# unpacked to the loader's temporary directory (an emptyDir in a pod), beside
# the downloaded archive, so the byte cap bounds the disk one archive may fill.
# The member cap counts directories too; a manifest may not list more than
# MAX_FILES files anyway.
DEFAULT_MAX_UNPACKED_BYTES = 32 * 2**30
DEFAULT_MAX_MEMBERS = MAX_FILES
_DRIVE = re.compile(r"[A-Za-z]:")
_LATEST_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last valid Timestamp

__all__ = ["ArchiveRejected", "Limits", "Unpacked", "member_path", "unpack"]


class ArchiveRejected(InvalidArgument):
    """A readable archive that breaks a rule; ``member`` is '' for the archive as a whole."""

    def __init__(self, archive: str, member: str, rule: str) -> None:
        self.member, self.rule = member, rule
        super().__init__(f"{archive}: member {member!r} {rule}" if member else f"{archive} {rule}")


@dataclass(frozen=True)
class Limits:
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES
    max_members: int = DEFAULT_MAX_MEMBERS


@dataclass(frozen=True)
class Unpacked:
    root: Path  # the SavedModel's directory: ``dest``, or its single wrapper directory
    members: int
    unpacked_bytes: int
    latest_mtime: float  # newest regular file's mtime (seconds), 0 if none


def unpack(path: Path, kind: str, dest: Path, limits: Limits, archive: str) -> Unpacked:
    """Unpacks ``path``, a ``kind`` ("tar", any compression, or "zip") archive,
    into ``dest`` (created here) and finds the SavedModel in it: at the root, or
    in the root's only entry if that is a directory (``7/``, ``model/``).
    ``archive`` names it in errors."""
    unpacker = _Unpacker(dest, limits, archive)
    dest.mkdir(parents=True)
    try:
        (unpacker.tar if kind == "tar" else unpacker.zip)(path)
    # gzip and bz2 raise OSError on bad data; our own writes raise no OSError.
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as err:
        raise DataLoss(f"{archive} is not a readable {kind} archive: {err}") from None
    except OSError as err:
        raise DataLoss(f"{archive} is not a readable {kind} archive: {err}") from None
    root, entries = dest, list(dest.iterdir())
    if not _has_saved_model(root) and len(entries) == 1 and entries[0].is_dir():
        root = entries[0]
    if not _has_saved_model(root):
        rule = "holds no SavedModel: no saved_model.pb or .pbtxt at its root or in one directory"
        raise ArchiveRejected(archive, "", rule)
    if (root / MANIFEST_NAME).exists():
        raise ArchiveRejected(archive, MANIFEST_NAME, "is written by the loader, not archived")
    return Unpacked(root, unpacker.members, unpacker.unpacked, unpacker.latest)


def member_path(name: str) -> str:
    """The relative path a member unpacks to ('' for the archive root itself);
    ValueError stating the rule ``name`` breaks."""
    if "\0" in name or "\\" in name:
        raise ValueError("has a NUL or a backslash in its name")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError("has an absolute path")
    parts = name.split("/")
    if ".." in parts:
        raise ValueError("has a '..' segment, which would escape the archive's tree")
    return "/".join(part for part in parts if part not in ("", "."))


_SPECIAL = "is a device or FIFO: only regular files and directories are unpacked"


class _Unpacker:
    def __init__(self, dest: Path, limits: Limits, archive: str) -> None:
        self.dest, self.limits, self.archive = dest, limits, archive
        self.members = self.unpacked = 0
        self.seen: set[str] = set()
        self.latest = 0.0

    def reject(self, member: str, rule: str) -> ArchiveRejected:
        return ArchiveRejected(self.archive, member, rule)

    def tar(self, path: Path) -> None:
        # Stream mode: members are read one at a time, and none is kept in memory.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name, rel = member.name, self.admit(member.name)
                if member.issym() or member.islnk():
                    what = "symbolic" if member.issym() else "hard"
                    rule = f"is a {what} link to {member.linkname!r}: links are refused"
                    raise self.reject(name, rule + " wherever they point")
                if member.ischr() or member.isblk() or member.isfifo():
                    raise self.reject(name, _SPECIAL)
                if not (member.isreg() or member.isdir()):
                    raise self.reject(name, f"has the unsupported tar type {member.type!r}")
                try:
                    tarfile.data_filter(member, str(self.dest))
                except tarfile.FilterError as err:
                    raise self.reject(name, f"is refused by tarfile's data filter: {err}") from None
                if rel and member.isdir():
                    self.directory(name, rel)
                elif rel and (reader := tar.extractfile(member)) is not None:
                    self.file(name, rel, reader, member.size, float(member.mtime))

    def zip(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()  # the central directory is read whole by zipfile
            if len(infos) > self.limits.max_members:
                raise self.reject(infos[self.limits.max_members].filename, self.too_many())
            for info in infos:
                name, rel = info.filename, self.admit(info.filename)
                mode = info.external_attr >> 16  # Unix mode bits, 0 from other systems
                if stat.S_ISLNK(mode):
                    raise self.reject(name, "is a symbolic link: links are refused")
                if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise self.reject(name, _SPECIAL)
                if info.flag_bits & 0x1:
                    raise self.reject(name, "is encrypted")
                if rel and info.is_dir():
                    self.directory(name, rel)
                elif rel:
                    try:
                        with archive.open(info) as reader:
                            self.file(name, rel, reader, info.file_size, _zip_mtime(info))
                    except NotImplementedError as err:  # e.g. an unsupported compression
                        raise self.reject(name, f"cannot be unpacked: {err}") from None

    def too_many(self) -> str:
        return f"is one too many: an archive may hold at most {self.limits.max_members} members"

    def admit(self, name: str) -> str:
        self.members += 1
        if self.members > self.limits.max_members:
            raise self.reject(name, self.too_many())
        try:
            rel = member_path(name)
        except ValueError as err:
            raise self.reject(name, str(err)) from None
        if rel and rel in self.seen:
            raise self.reject(name, f"names {rel!r} again: each path may appear once")
        self.seen.add(rel)
        return rel

    def directory(self, name: str, rel: str) -> None:
        try:
            (self.dest / rel).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self.reject(name, f"cannot be created: {err.strerror}") from None

    def file(self, name: str, rel: str, reader: IO[bytes], declared: int, mtime: float) -> None:
        over = f"unpacks past the limit of {self.limits.max_unpacked_bytes} bytes in all"
        if self.unpacked + declared > self.limits.max_unpacked_bytes:
            raise self.reject(name, over)  # the header says so; the count below decides
        path = self.dest / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            out = os.fdopen(os.open(path, flags, 0o644), "wb")
        except OSError as err:  # e.g. a file where a directory must be
            raise self.reject(name, f"cannot be created: {err.strerror}") from None
        with out:
            while chunk := reader.read(CHUNK_BYTES):
                self.unpacked += len(chunk)
                if self.unpacked > self.limits.max_unpacked_bytes:
                    raise self.reject(name, over)
                try:
                    out.write(chunk)
                except OSError as err:  # the local disk, not the archive
                    raise Internal(f"cannot unpack {self.archive} to {path}: {err}") from None
        self.latest = max(self.latest, min(max(mtime, 0.0), _LATEST_SECONDS))


def _has_saved_model(path: Path) -> bool:
    return any((path / name).is_file() for name in SAVED_MODEL_FILES)


def _zip_mtime(info: zipfile.ZipInfo) -> float:
    try:
        return datetime.datetime(*info.date_time, tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return 0.0
