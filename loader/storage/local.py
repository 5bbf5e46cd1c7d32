"""Local filesystem backend: plain paths and ``file://`` URIs.

Writes go to a hidden temporary file in the target directory and are renamed
into place, so a reader never sees a partial file. ``create_if_absent`` uses
``link(2)``, which fails atomically when the target exists, even across
processes sharing the filesystem (NFS included).

Symbolic links below the root are never followed (the root itself, and the
directory a ``list`` prefix names, may be links: TF Serving's version
directories often are). ``list`` reports each link, to a file or a
directory, as ``ObjectInfo(key, 0, link=True)`` without descending into it,
and ``open_read`` refuses a link, device, FIFO or socket with
``NotRegularFile``: a version's files must be regular files inside it, so
that what was verified is what is staged and served.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
import stat as stat_
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from loader.errors import InvalidArgument, NotFound, PermissionDenied
from loader.storage.base import CHUNK_BYTES, NotRegularFile, ObjectInfo, Storage, check_key

# In-flight writes are named ".<name>.rollway-tmp-<uuid>"; list() hides them.
_TMP_MARK = ".rollway-tmp-"


def from_uri(uri: str) -> LocalStorage:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(f"file:// URI {uri!r} names a remote host; use a local path")
        return LocalStorage(Path(unquote(parts.path)))
    return LocalStorage(Path(uri))


_LINK_RULE = (
    "is a symbolic link: a version's files must be regular files inside it,"
    " and links are never followed"
)


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    if stat_.S_ISLNK(st.st_mode):
        return ObjectInfo(key, 0, link=True)
    return ObjectInfo(key, st.st_size)


class _RangeReader(io.RawIOBase):
    """At most ``remaining`` bytes of ``file``, from its current position."""

    def __init__(self, file: BinaryIO, remaining: int) -> None:
        self._file = file
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer)[: self._remaining]
        count = self._file.readinto(view)  # type: ignore[attr-defined]
        self._remaining -= count
        return int(count)

    def close(self) -> None:
        self._file.close()
        super().close()


class LocalStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key) if key else self.root

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_key(prefix)
        # Walk only the deepest directory the prefix names, then filter.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self._path(directory)
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):  # followlinks=False
            links = [name for name in dirnames if os.path.islink(os.path.join(dirpath, name))]
            dirnames[:] = sorted(name for name in dirnames if name not in links)
            for name in (*filenames, *links):
                if _TMP_MARK in name:
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # deleted mid-walk
                        found.append(_info(key, full.lstat()))
        yield from sorted(found, key=lambda info: info.key)

    def links(self, prefix: str = "") -> tuple[str, ...]:
        return tuple(info.key for info in self.list(prefix) if info.link)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except PermissionError as err:
            raise PermissionDenied(f"cannot stat {path}: {err.strerror}") from None
        if not (stat_.S_ISREG(st.st_mode) or stat_.S_ISLNK(st.st_mode)):
            raise NotFound(f"{path} is not a file")
        return _info(key, st)

    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        path = self._path(key)
        # O_NOFOLLOW: a link is refused, not read; O_NONBLOCK: a FIFO cannot hang the open.
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{path} does not exist") from None
        except PermissionError as err:
            raise PermissionDenied(f"cannot read {path}: {err.strerror}") from None
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
                raise NotRegularFile(f"{path} {_LINK_RULE}") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat_.S_ISREG(mode):
            os.close(fd)
            if stat_.S_ISDIR(mode):
                raise NotFound(f"{path} is a directory, not a file")
            raise NotRegularFile(f"{path} is a device, FIFO or socket, not a regular file")
        os.set_blocking(fd, True)
        file = os.fdopen(fd, "rb")
        if start:
            file.seek(start)
        if length is None:
            return file
        return io.BufferedReader(_RangeReader(file, length), CHUNK_BYTES)

    def _temp_for(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")

    def write(self, key: str, source: BinaryIO, size: int | None = None) -> ObjectInfo:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            with temp.open("wb") as out:
                shutil.copyfileobj(source, out, CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, path)
        except PermissionError as err:
            raise PermissionDenied(f"cannot write {path}: {err.strerror}") from None
        finally:
            temp.unlink(missing_ok=True)
        return ObjectInfo(key, path.stat().st_size)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            with temp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.link(temp, path)
        except FileExistsError:
            return False
        except PermissionError as err:
            raise PermissionDenied(f"cannot create {path}: {err.strerror}") from None
        finally:
            temp.unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except PermissionError as err:
            raise PermissionDenied(f"cannot delete {path}: {err.strerror}") from None
