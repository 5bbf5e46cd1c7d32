"""HDFS backend: ``hdfs://namenode:port/path`` through pyarrow's HadoopFileSystem.

pyarrow talks to HDFS through libhdfs, a JNI library that starts a JVM inside
this process. Setup, on every machine that opens an hdfs:// URI:

- ``JAVA_HOME``: a JDK or JRE; libjvm.so is looked up under it.
- ``HADOOP_HOME``: a Hadoop install. libhdfs.so is loaded from
  ``$HADOOP_HOME/lib/native``, or from ``ARROW_LIBHDFS_DIR`` when that is set.
- ``CLASSPATH=$(hadoop classpath --glob)``: the Hadoop jars and the cluster's
  configuration directory (core-site.xml, hdfs-site.xml). libhdfs does not
  expand the wildcards of a plain ``hadoop classpath``, hence ``--glob``.
- Simple authentication: the user is ``HADOOP_USER_NAME``.
- Kerberos: run ``kinit`` first. The ticket cache named by ``KRB5CCNAME`` (a
  path, or ``FILE:path``) is passed to libhdfs as ``kerb_ticket``.
- An HA nameservice is ``hdfs://nameservice/path`` (no port): hdfs-site.xml on
  CLASSPATH resolves it.

Opening the URI only parses it, as for webhdfs:// and s3://: the client is
created on first use, so every failure comes from an operation. Before pyarrow
loads libhdfs the environment is checked, so a missing JAVA_HOME, libhdfs.so or
CLASSPATH is ``Unavailable`` with one line naming what is missing and how to
get it (or to use webhdfs://), not Java stack traces on stderr. Set them before
the first hdfs:// operation: pyarrow loads libhdfs once per process (a failure
sticks), and the JVM reads CLASSPATH once.

Guarantees, within what libhdfs offers:
- ``write`` streams to a hidden temporary file next to the target, then renames
  it into place: readers never see a partial file. Replacing an existing file
  is NOT atomic: libhdfs has only the old rename, which refuses to overwrite, so
  pyarrow deletes the target and renames again, and for that instant the key
  is absent (NotFound). rollway never replaces a file that readers depend on.
- ``create_if_absent`` is exclusive between rollway processes. libhdfs always
  opens for writing with overwrite=true, and pyarrow's move clobbers files, so
  creators serialise on a lock directory ``.<name>.rollway-lock`` taken by
  renaming a fresh directory onto it (atomic on the NameNode: exactly one
  rename creates it). The holder checks that the key is absent, renames its
  temporary file into place and removes the lock. A process killed while it
  holds the lock (a window of a few NameNode calls) leaves it behind: later
  creators of that key wait LOCK_WAIT_S, then fail with Unavailable naming the
  lock to delete. A plain ``write`` does not take the lock.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import errno
import io
import os
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

from loader import backoff, display
from loader.errors import InvalidArgument, NotFound, PermissionDenied, RollwayError, Unavailable
from loader.storage.base import CHUNK_BYTES, BodyReader, ObjectInfo, Storage, check_key

_TMP_MARK = ".rollway-tmp-"
_LOCK_MARK = ".rollway-lock"
LOCK_WAIT_S = 30.0
# Between tries of a held lock: its other waiters retry too (full jitter).
LOCK_RETRIES = backoff.Backoff(initial_seconds=0.01, max_seconds=0.5)
SETUP = (
    "libhdfs needs JAVA_HOME, HADOOP_HOME (or ARROW_LIBHDFS_DIR, the folder of"
    " libhdfs.so) and CLASSPATH=$(hadoop classpath --glob)"
)
_WEBHDFS_HINT = "or use webhdfs://NAMENODE:HTTP_PORT/PATH, which needs no JVM"
_LIBJVM_DIRS = ("lib/server", "jre/lib/amd64/server", "lib/amd64/server", "jre/lib/server")


def missing_setup(env: Mapping[str, str]) -> list[str]:
    """What ``env`` lacks for libhdfs to load and find Hadoop's classes, each
    with how to get it; empty when nothing is seen missing."""
    problems = []
    java = env.get("JAVA_HOME", "")
    if not java:
        problems.append(
            "JAVA_HOME is not set (a JRE's folder; Debian's openjdk-17-jre-headless has one)"
        )
    elif not any((Path(java) / d / "libjvm.so").is_file() for d in _LIBJVM_DIRS):
        problems.append(f"JAVA_HOME={java} holds no lib/server/libjvm.so")
    folder = env.get("ARROW_LIBHDFS_DIR") or (
        str(Path(env["HADOOP_HOME"], "lib", "native")) if env.get("HADOOP_HOME") else ""
    )
    if folder and not (Path(folder) / "libhdfs.so").is_file():
        problems.append(f"{folder} holds no libhdfs.so")
    elif not folder and ctypes.util.find_library("hdfs") is None:
        problems.append(
            "ARROW_LIBHDFS_DIR is not set (the folder of libhdfs.so;"
            " $HADOOP_HOME/lib/native in a Hadoop install)"
        )
    classpath = env.get("CLASSPATH", "")
    if not classpath:
        problems.append(
            "CLASSPATH is not set (the Hadoop client jars and configuration:"
            " CLASSPATH=$(hadoop classpath --glob))"
        )
    elif any(entry.endswith("*") for entry in classpath.split(os.pathsep)):
        problems.append("CLASSPATH has wildcards, which libhdfs does not expand: use --glob")
    return problems


LIST_ATTEMPTS = 5
# A walk that met a vanishing directory is repeated at once: nothing is to wait for.
RELIST = backoff.Backoff(initial_seconds=0.0, max_seconds=0.0)


def _keep_signals_from_the_jvm() -> None:
    """libhdfs starts a JVM inside this process, and a JVM takes SIGTERM and
    SIGINT over by default: the process would exit at once, without its drain.
    ``-Xrs`` in LIBHDFS_OPTS (the JVM's options, read when libhdfs first starts
    it) leaves the signals to the process."""
    options = os.environ.get("LIBHDFS_OPTS", "")
    if "-Xrs" not in options.split():
        os.environ["LIBHDFS_OPTS"] = f"{options} -Xrs".strip()


def _connector(host: str, port: int, uri: str) -> Callable[[], Any]:
    def connect() -> Any:
        problems = missing_setup(os.environ)
        if problems:
            raise Unavailable(
                f"cannot open {uri}: libhdfs needs a JVM: {'; '.join(problems)}; {_WEBHDFS_HINT}"
            )
        from pyarrow import fs as pafs

        _keep_signals_from_the_jvm()
        ticket = os.environ.get("KRB5CCNAME", "").removeprefix("FILE:") or None
        try:
            return pafs.HadoopFileSystem(
                host, port, user=os.environ.get("HADOOP_USER_NAME") or None, kerb_ticket=ticket
            )
        except OSError as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise Unavailable(f"cannot open {uri}: {reason}; {SETUP}; {_WEBHDFS_HINT}") from None

    return connect


def from_uri(uri: str) -> HdfsStorage:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise InvalidArgument(f"{display.uri(uri)!r} is not an hdfs://namenode[:port]/path URI")
    connect = _connector(parts.hostname, parts.port or 0, display.uri(uri))
    return HdfsStorage(connect, unquote(parts.path) or "/", display.uri(uri))


def map_error(err: Exception, uri: str) -> RollwayError:
    """pyarrow reports HDFS failures as OSErrors carrying the Java exception's errno."""
    code = getattr(err, "errno", None)
    if isinstance(err, FileNotFoundError) or code == errno.ENOENT:
        return NotFound(f"{uri} does not exist")
    if isinstance(err, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return PermissionDenied(
            f"HDFS denied access to {uri}; check HADOOP_USER_NAME or the Kerberos ticket"
        )
    if isinstance(err, RollwayError):
        return err
    detail = (str(err).splitlines() or [type(err).__name__])[0][:200]
    return Unavailable(f"HDFS failed on {uri}: {detail}")


class _RangeReader(BodyReader):
    """At most ``remaining`` bytes (all, if None) of a pyarrow file, errors mapped."""

    def __init__(self, file: Any, remaining: int | None, uri: str) -> None:
        self._file = file
        self._remaining = remaining
        self._uri = uri

    def read_some(self, want: int | None) -> bytes:
        if self._remaining is not None:
            want = self._remaining if want is None else min(want, self._remaining)
        try:
            data: bytes = self._file.read(want)
        except OSError as err:
            raise map_error(err, self._uri) from None
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def release(self) -> None:
        self._file.close()


class _Held(Exception):
    """Another creator holds the key's lock: try it again."""


class HdfsStorage(Storage):
    """Files under ``root`` of the pyarrow FileSystem that ``connect`` returns
    (HadoopFileSystem in production), called once, on first use."""

    def __init__(self, connect: Callable[[], Any], root: str, uri: str) -> None:
        self._connect = connect
        self._client: Any = None
        self._connecting = threading.Lock()
        self.root = "/" + root.strip("/")
        self.uri = uri.rstrip("/")

    @property
    def _fs(self) -> Any:
        if self._client is None:
            with self._connecting:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _path(self, key: str) -> str:
        if not key or key.endswith("/"):
            raise InvalidArgument(f"storage key {key!r} must name a file")
        return posixpath.join(self.root, check_key(key))

    def _file_info(self, path: str) -> Any | None:
        """The FileInfo of an existing path, else None. pyarrow's HDFS stat turns
        every failure (an unreachable NameNode too) into NotFound, so a miss is
        confirmed by listing the parent, which raises the real error."""
        from pyarrow import fs as pafs

        info = self._fs.get_file_info(path)
        if info.type != pafs.FileType.NotFound:
            return info
        self._fs.get_file_info(pafs.FileSelector(posixpath.dirname(path)))
        return None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        from pyarrow import fs as pafs

        check_key(prefix)
        directory = self.root
        if "/" in prefix:
            directory = posixpath.join(self.root, prefix.rsplit("/", 1)[0])
        selector = pafs.FileSelector(directory, recursive=True, allow_not_found=True)

        def walk() -> Any:
            try:
                return self._fs.get_file_info(selector)
            except OSError as err:
                raise map_error(err, self.join(prefix)) from None

        # allow_not_found covers the listed directory only: a directory below it
        # that vanishes mid-walk (another writer's temporary or lock directory)
        # fails the walk with NotFound, and listing again is right.
        what = f"listing {self.join(prefix)}"
        relist = backoff.retrying(RELIST, retry_on=NotFound, max_attempts=LIST_ATTEMPTS, what=what)
        infos = backoff.retry_call(walk, relist)
        found = []
        for info in infos:
            key = posixpath.relpath(info.path, self.root)
            hidden = any(_TMP_MARK in part or _LOCK_MARK in part for part in key.split("/"))
            if info.type == pafs.FileType.File and not hidden and key.startswith(prefix):
                found.append(ObjectInfo(key, info.size))
        yield from sorted(found, key=lambda item: item.key)

    def stat(self, key: str) -> ObjectInfo:
        from pyarrow import fs as pafs

        path = self._path(key)
        try:
            info = self._file_info(path)
        except OSError as err:
            raise map_error(err, self.join(key)) from None
        if info is None or info.type != pafs.FileType.File:
            raise NotFound(f"{self.join(key)} does not exist or is not a file")
        return ObjectInfo(key, info.size)

    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        path = self._path(key)
        if start < 0 or (length is not None and length < 0):
            raise InvalidArgument(f"invalid range start={start} length={length} for {key!r}")
        try:
            file = self._fs.open_input_file(path)
            if start >= file.size():  # HDFS refuses to seek past the end
                file.close()
                return io.BytesIO()
            if start:
                file.seek(start)
        except OSError as err:
            raise map_error(err, self.join(key)) from None
        return cast(BinaryIO, _RangeReader(file, length, self.join(key)))

    def _temp_for(self, path: str) -> str:
        directory, name = posixpath.split(path)
        return posixpath.join(directory, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")

    def _upload(self, temp: str, source: BinaryIO) -> None:
        with self._fs.open_output_stream(temp) as out:
            while chunk := source.read(CHUNK_BYTES):
                out.write(chunk)

    def _discard(self, path: str) -> None:
        if self._client is None:
            return  # never connected, so nothing was written
        with contextlib.suppress(OSError):  # already gone, or never written
            self._fs.delete_file(path)

    def write(self, key: str, source: BinaryIO, size: int | None = None) -> ObjectInfo:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            self._upload(temp, source)
            self._fs.move(temp, path)
        except OSError as err:
            self._discard(temp)
            raise map_error(err, self.join(key)) from None
        except BaseException:
            self._discard(temp)  # never publish a partial stream
            raise
        return self.stat(key)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temp = self._temp_for(path)
        directory, name = posixpath.split(path)
        lock = posixpath.join(directory, f".{name}{_LOCK_MARK}")
        try:
            self._upload(temp, io.BytesIO(data))
            for attempt in backoff.retrying(
                LOCK_RETRIES, retry_on=_Held, deadline_seconds=LOCK_WAIT_S,
                what=f"locking {self.join(key)}",
            ):  # fmt: skip
                with attempt:
                    if not self._try_lock(lock):
                        if self._file_info(path) is not None:
                            return False
                        raise _Held
                    try:
                        if self._file_info(path) is not None:
                            return False
                        self._fs.move(temp, path)  # absent, and we hold the lock: a plain rename
                        return True
                    finally:
                        self._unlock(lock)
            raise Unavailable(
                f"{self.join(key)}: lock {lock} held for {LOCK_WAIT_S:.0f}s; if no"
                " rollway process is creating this key, delete the lock"
            )
        except OSError as err:
            raise map_error(err, self.join(key)) from None
        finally:
            self._discard(temp)

    def _try_lock(self, lock: str) -> bool:
        """Renames a fresh directory holding an owner marker onto ``lock``. HDFS
        moves it *into* an existing lock instead, and POSIX refuses; either way
        the marker is not at ``lock/owner-<token>``, and this caller lost."""
        token = uuid.uuid4().hex
        candidate = f"{lock}{_TMP_MARK}{token}"
        marker = f"owner-{token}"
        self._fs.create_dir(candidate)
        self._fs.open_output_stream(posixpath.join(candidate, marker)).close()
        with contextlib.suppress(OSError):
            self._fs.move(candidate, lock)
        try:
            if self._file_info(posixpath.join(lock, marker)) is not None:
                return True
        except FileNotFoundError:
            pass  # no lock at all: the holder has just released it
        for leftover in (candidate, posixpath.join(lock, posixpath.basename(candidate))):
            with contextlib.suppress(OSError):  # gone with a released lock
                self._fs.delete_dir(leftover)
        return False

    def _unlock(self, lock: str) -> None:
        # Renamed away before it is deleted, so the lock is never seen empty:
        # POSIX would let a rename replace an empty directory.
        released = f"{lock}{_TMP_MARK}{uuid.uuid4().hex}"
        self._fs.move(lock, released)
        self._fs.delete_dir(released)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            self._fs.delete_file(path)
        except OSError as err:
            error = map_error(err, self.join(key))
            if isinstance(error, NotFound):
                return  # deleting is idempotent
            try:
                gone = self._file_info(path) is None
            except FileNotFoundError:
                gone = True  # its directory is gone too
            except OSError:
                gone = False
            if not gone:
                raise error from None
