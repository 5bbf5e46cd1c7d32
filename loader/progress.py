"""Progress of long transfers (publish, verify, fetch), reported to a listener.

The library only calls these hooks; how progress is shown (a rich bar on a
terminal, log lines in a pod) is the caller's choice. ``advance`` and
``file_done`` are called from worker threads, so listeners must be thread-safe.
"""

from __future__ import annotations

import threading
from typing import BinaryIO

__all__ = ["HashingReader", "Progress"]


class Progress:
    """Ignores everything; subclass what you need."""

    def planned(self, files: int, total_bytes: int) -> None:
        """Called once, before any bytes move."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes were moved (or hashed)."""

    def file_done(self, path: str) -> None:
        """One file finished."""


class HashingReader:
    """Wraps a binary reader: hashes and counts what is read through it, and
    reports it to ``progress``. Reading it once yields the file's sha256, so an
    upload needs no separate hashing pass over the data."""

    def __init__(self, raw: BinaryIO, progress: Progress | None = None) -> None:
        import hashlib

        self._raw = raw
        self._digest = hashlib.sha256()
        self._progress = progress
        self._lock = threading.Lock()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            with self._lock:
                self._digest.update(data)
                self.bytes_read += len(data)
            if self._progress is not None:
                self._progress.advance(len(data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Not seekable: a consumer that seeks would hash bytes twice or skip some.
        return False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._raw.close()
