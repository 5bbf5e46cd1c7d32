"""The storage contract every backend implements.

A ``Storage`` is rooted at a URI (``s3://bucket/models``, ``/srv/models``,
``hdfs://nn:8020/models``). Every ``path`` argument is a '/'-separated key
*relative to that root*; it never starts with '/' and never contains '..'
(``check_key`` enforces this before a backend sees it). Directories are not
objects: ``list`` returns files only, recursively, sorted by key. A backend
with symbolic links (local disk) never follows one below its root: ``list``
reports each link, to a file or a directory, as one ``ObjectInfo`` with
``link=True``, and ``open_read`` refuses it (``DataLoss``).

Errors are from ``loader.errors``:
- a missing object is ``NotFound``;
- bad credentials are ``Unauthenticated`` / ``PermissionDenied``;
- an unreachable or throttling store is ``Unavailable`` (retriable);
- anything else the backend cannot classify is ``Internal``.
Messages name the URI and the key, never a credential.
"""

from __future__ import annotations

import abc
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from loader.errors import DataLoss, InvalidArgument

# Streaming reads and writes move data in chunks of this size: large enough to
# amortise per-call overhead, small enough that memory stays bounded.
CHUNK_BYTES = 8 * 1024 * 1024


class NotRegularFile(DataLoss):
    """A key that names a symbolic link, device, FIFO or socket (local disk):
    what a version holds there is no file, and it is never followed or read."""


class BodyReader(io.RawIOBase, abc.ABC):
    """An object's body as a readable binary file (what ``Storage.open``
    returns): a backend says how to read some bytes and how to let go of its
    response; buffering, ``readinto`` and closing are the same for all."""

    @abc.abstractmethod
    def read_some(self, want: int | None) -> bytes:
        """Up to ``want`` bytes (the rest when None; b"" at the end); the
        backend's errors mapped to ``RollwayError``."""

    @abc.abstractmethod
    def release(self) -> None:
        """Closes the backend's response or file."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self.read_some(None if size is None or size < 0 else size)

    def readall(self) -> bytes:
        return self.read_some(None)

    def readinto(self, buffer: Any) -> int:
        data = self.read_some(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.release()
        super().close()


@dataclass(frozen=True)
class ObjectInfo:
    """One stored file. ``key`` is relative to the storage root."""

    key: str
    size: int
    etag: str | None = None
    link: bool = False  # a symbolic link (local disk only), never followed; size is 0


class Storage(abc.ABC):
    """A file store rooted at ``uri``. Implementations must be thread-safe."""

    #: Root URI, with any credentials removed: safe to log.
    uri: str

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every file whose key starts with ``prefix`` (a directory prefix ends in '/'),
        recursively, sorted by key. An absent prefix yields nothing."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size (and ETag where the backend has one) of one file; ``NotFound`` if absent."""

    @abc.abstractmethod
    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        """A streaming reader over ``length`` bytes from ``start`` (to the end if None).
        The caller closes it. ``NotFound`` if absent."""

    @abc.abstractmethod
    def write(self, key: str, source: BinaryIO, size: int | None = None) -> ObjectInfo:
        """Streams ``source`` to ``key``, replacing any existing file. The file
        appears whole or not at all (temp-and-rename, or a single PUT/multipart
        completion), so readers never see a partial object."""

    @abc.abstractmethod
    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Atomically creates ``key`` holding ``data`` unless it exists.
        Returns True if this call created it, False if it was already there.
        This is the primitive staging and assignments build on."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Removes one file. Deleting an absent file is not an error."""

    def links(self, prefix: str = "") -> tuple[str, ...]:
        """Keys under ``prefix`` that are symbolic links (never followed), sorted.
        Only local disk has links; other backends answer () without a request."""
        return ()

    def read_bytes(self, key: str, limit: int | None = None) -> bytes:
        """The whole file; with ``limit``, refuses (InvalidArgument) files larger than it."""
        if limit is not None:
            size = self.stat(key).size
            if size > limit:
                raise InvalidArgument(
                    f"{self.join(key)} is {size} bytes, larger than the limit of {limit}"
                )
        with self.open_read(key) as reader:
            return reader.read()

    def write_bytes(self, key: str, data: bytes) -> ObjectInfo:
        import io

        return self.write(key, io.BytesIO(data), len(data))

    def exists(self, key: str) -> bool:
        from loader.errors import NotFound

        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def join(self, key: str) -> str:
        """The full URI of ``key``, for messages and events."""
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Releases connections; the default holds none."""


def check_key(key: str) -> str:
    """Validates a relative key; returns it unchanged. Absolute keys, '..' or
    empty segments are InvalidArgument: they could escape the root."""
    if key.startswith("/") or "\\" in key:
        raise InvalidArgument(f"storage key {key!r} must be relative and use '/'")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts[:-1]) or parts[-1] in (".", ".."):
        raise InvalidArgument(f"storage key {key!r} contains an empty, '.' or '..' segment")
    return key
