"""Local filesystem backend: plain paths and ``file://`` URIs.

Writes go to a hidden temporary file in the target directory and are renamed
into place, so a reader never sees a partial file. ``create_if_absent`` uses
``link(2)``, which fails atomically when the target exists, even across
processes sharing the filesystem (NFS included).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from loader.errors import InvalidArgument, NotFound, PermissionDenied
from loader.storage.base import CHUNK_BYTES, ObjectInfo, Storage, check_key

# In-flight writes are named ".<name>.rollway-tmp-<uuid>"; list() hides them.
_TMP_MARK = ".rollway-tmp-"


def from_uri(uri: str) -> LocalStorage:
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidArgument(f"file:// URI {uri!r} names a remote host; use a local path")
        return LocalStorage(Path(unquote(parts.path)))
    return LocalStorage(Path(uri))


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
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in filenames:
                if _TMP_MARK in name:
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # deleted mid-walk
                        found.append(ObjectInfo(key, full.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{path} does not exist") from None
        except PermissionError as err:
            raise PermissionDenied(f"cannot stat {path}: {err.strerror}") from None
        if not path.is_file():
            raise NotFound(f"{path} is not a file")
        return ObjectInfo(key, st.st_size)

    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        path = self._path(key)
        try:
            file = path.open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{path} does not exist") from None
        except PermissionError as err:
            raise PermissionDenied(f"cannot read {path}: {err.strerror}") from None
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
