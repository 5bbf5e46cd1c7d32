"""WebHDFS backend: ``webhdfs://namenode:port/path`` (HTTP) and ``webhdfss://`` (TLS).

The WebHDFS REST API through ``requests``: no JVM, no Hadoop install. The port
is the NameNode's HTTP port (9870, or 9871 for TLS, when the URI has none).
Reads and writes are redirected by the NameNode to a DataNode, which must be
reachable under the name the NameNode gives for it.

Authentication, read once when the URI is opened:
- ``WEBHDFS_DELEGATION_TOKEN``: a delegation token (``hdfs fetchdt``, or the
  GETDELEGATIONTOKEN operation), sent as the ``delegation`` parameter. It takes
  precedence. It rides in URLs, so rollway never puts a URL in a message or a
  log, and scrubs the token from server messages. urllib3 prints request lines
  at DEBUG, so rollway's logging keeps it at INFO even at ``--log-level debug``
  and masks the token besides (``functions/serving/logs.py``).
- else ``HADOOP_USER_NAME``: the ``user.name`` of simple (pseudo) authentication.
Kerberos SPNEGO is not supported; use a delegation token. For TLS, requests
honours ``REQUESTS_CA_BUNDLE``.

Guarantees:
- ``write`` uploads to a hidden temporary file next to the target, then RENAMEs
  it with ``renameoptions=OVERWRITE`` (the NameNode's rename2): the file is
  replaced atomically and readers never see a partial one.
- ``create_if_absent`` uploads to a temporary file and RENAMEs it with
  ``renameoptions=NONE``: the NameNode refuses atomically when the key exists
  (FileAlreadyExistsException), so exactly one concurrent creator wins and the
  file appears complete. (CREATE with overwrite=false is exclusive too, but
  shows the file while its bytes are still arriving.) HttpFS gateways ignore
  renameoptions and use the old rename, which also refuses to overwrite:
  create_if_absent keeps its guarantee there, and ``write`` falls back to
  delete-then-rename, which is not atomic.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, cast
from urllib.parse import quote, unquote, urlsplit

import requests

from loader import display, errors
from loader.storage.base import BodyReader, ObjectInfo, Storage, check_key

_TMP_MARK = ".rollway-tmp-"
TIMEOUT = (10, 120)  # seconds: connect, and between bytes
_BY_EXCEPTION: dict[str, type[errors.RollwayError]] = {
    "FileNotFoundException": errors.NotFound,
    "AccessControlException": errors.PermissionDenied,
    "SecurityException": errors.Unauthenticated,
    "AuthenticationException": errors.Unauthenticated,
    "InvalidToken": errors.Unauthenticated,
    "FileAlreadyExistsException": errors.AlreadyExists,
    "StandbyException": errors.Unavailable,
    "RetriableException": errors.Unavailable,
    "SafeModeException": errors.Unavailable,
    "IllegalArgumentException": errors.InvalidArgument,
    "InvalidPathException": errors.InvalidArgument,
    "UnsupportedOperationException": errors.Internal,
}


@dataclass(frozen=True)
class WebHdfsAuth:
    user: str | None = None
    delegation_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebHdfsAuth:
        return cls(
            user=env.get("HADOOP_USER_NAME") or None,
            delegation_token=env.get("WEBHDFS_DELEGATION_TOKEN") or None,
        )

    def params(self) -> dict[str, str]:
        if self.delegation_token:
            return {"delegation": self.delegation_token}
        return {"user.name": self.user} if self.user else {}


def from_uri(uri: str) -> WebHdfsStorage:
    return WebHdfsStorage(uri, WebHdfsAuth.from_env(os.environ))


class _Response(BodyReader):
    """The body of a streamed OPEN, as a binary file; transport errors are mapped."""

    def __init__(self, response: requests.Response, uri: str) -> None:
        self._response = response
        self._uri = uri

    def read_some(self, want: int | None) -> bytes:
        try:
            data: bytes = self._response.raw.read(want)
        except Exception as err:  # urllib3's errors: the connection broke mid-body
            raise errors.Unavailable(f"reading {self._uri} failed: {type(err).__name__}") from None
        return data

    def release(self) -> None:
        self._response.close()


class WebHdfsStorage(Storage):
    def __init__(self, uri: str, auth: WebHdfsAuth) -> None:
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme not in ("webhdfs", "webhdfss") or not parts.hostname:
            raise errors.InvalidArgument(
                f"{display.uri(uri)!r} is not a webhdfs://host:port/path URI"
            )
        tls = scheme == "webhdfss"
        port = parts.port or (9871 if tls else 9870)
        self.endpoint = f"{'https' if tls else 'http'}://{parts.hostname}:{port}"
        self.root = "/" + unquote(parts.path).strip("/")
        self.uri = f"{scheme}://{parts.hostname}:{port}{self.root}".rstrip("/")
        self._auth = auth
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _path(self, key: str) -> str:
        if not key or key.endswith("/"):
            raise errors.InvalidArgument(f"storage key {key!r} must name a file")
        return posixpath.join(self.root, check_key(key))

    def _call(self, method: str, path: str, op: str, key: str, **params: str) -> requests.Response:
        """One operation on the NameNode, following its redirect for GET; raises
        the mapped error unless the reply is a success."""
        url = f"{self.endpoint}/webhdfs/v1{quote(path)}"
        query = {"op": op, **self._auth.params(), **params}
        try:
            response = self._session.request(
                method, url, params=query, timeout=TIMEOUT, stream=op == "OPEN",
                allow_redirects=method == "GET",
            )  # fmt: skip
        except requests.RequestException as err:
            raise self._unreachable(err, key) from None
        if response.status_code >= 400:
            raise self._error(response, key)
        return response

    def _unreachable(self, err: Exception, key: str) -> errors.RollwayError:
        # Never str(err): requests puts the URL, and so any token, in it.
        return errors.Unavailable(
            f"cannot reach WebHDFS at {self.endpoint} for {self.join(key)}: {type(err).__name__}"
        )

    def _error(self, response: requests.Response, key: str) -> errors.RollwayError:
        """Maps a RemoteException (or a bare HTTP status) into the error tree."""
        uri = self.join(key)
        try:
            remote = response.json().get("RemoteException", {})
        except ValueError:
            remote = {}
        response.close()
        name = str(remote.get("exception", ""))
        message = str(remote.get("message", ""))[:300]
        token = self._auth.delegation_token
        if token:
            message = message.replace(token, "<redacted>")
        detail = f"{name}: {message}" if name else f"HTTP {response.status_code}"
        status = response.status_code
        cls = _BY_EXCEPTION.get(name)
        if cls is None:
            if status == 401:
                cls = errors.Unauthenticated
            elif status == 404:
                cls = errors.NotFound
            elif status == 403 and not name:
                cls = errors.PermissionDenied
            else:  # other Java IOExceptions are mostly DataNode trouble: retry
                cls = errors.Unavailable if name or status >= 500 else errors.Internal
        return cls(f"WebHDFS failed on {uri}: {detail}")

    def _walk(self, directory: str) -> Iterator[tuple[str, int]]:
        """(path, length) of every file under ``directory``; nothing if absent."""
        try:
            where = "" if directory == self.root else posixpath.relpath(directory, self.root)
            reply = self._call("GET", directory, "LISTSTATUS", where)
        except errors.NotFound:
            return
        for status in reply.json()["FileStatuses"]["FileStatus"]:
            path = posixpath.join(directory, status["pathSuffix"]).rstrip("/")
            if status["type"] == "DIRECTORY":
                yield from self._walk(path)
            elif status["type"] == "FILE":
                yield path, int(status["length"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        check_key(prefix)
        directory = self.root
        if "/" in prefix:
            directory = posixpath.join(self.root, prefix.rsplit("/", 1)[0])
        found = []
        for path, length in self._walk(directory):
            key = posixpath.relpath(path, self.root)
            if key.startswith(prefix) and not any(_TMP_MARK in p for p in key.split("/")):
                found.append(ObjectInfo(key, length))
        yield from sorted(found, key=lambda info: info.key)

    def stat(self, key: str) -> ObjectInfo:
        status = self._call("GET", self._path(key), "GETFILESTATUS", key).json()["FileStatus"]
        if status["type"] != "FILE":
            raise errors.NotFound(f"{self.join(key)} is not a file")
        return ObjectInfo(key, int(status["length"]))

    def open_read(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        path = self._path(key)
        if start < 0 or (length is not None and length < 0):
            raise errors.InvalidArgument(f"invalid range start={start} length={length} for {key!r}")
        params: dict[str, str] = {}
        # HDFS refuses offsets past the end, where the contract wants b"".
        if (start or length == 0) and (length == 0 or start >= self.stat(key).size):
            return io.BytesIO()  # stat() raised NotFound if the file is absent
        if start or length is not None:
            params["offset"] = str(start)
            if length is not None:
                params["length"] = str(length)
        response = self._call("GET", path, "OPEN", key, **params)
        return cast(BinaryIO, _Response(response, self.join(key)))

    def _upload(self, path: str, key: str, source: BinaryIO) -> None:
        """CREATE in two steps: the NameNode names a DataNode, which takes the bytes."""
        reply = self._call("PUT", path, "CREATE", key, overwrite="true")
        location = reply.headers.get("Location") or reply.json().get("Location")
        if not location:
            raise errors.Internal(f"WebHDFS gave no DataNode location to write {self.join(key)}")
        try:
            written = self._session.put(
                location, data=source, timeout=TIMEOUT,
                headers={"Content-Type": "application/octet-stream"},
            )  # fmt: skip
        except requests.RequestException as err:
            raise self._unreachable(err, key) from None
        if written.status_code >= 400:
            raise self._error(written, key)

    def _rename(self, temp: str, path: str, key: str, options: str) -> bool:
        reply = self._call("PUT", temp, "RENAME", key, destination=path, renameoptions=options)
        # rename2 answers with an empty body; the old rename (HttpFS) with a boolean.
        return not reply.content or bool(reply.json().get("boolean"))

    def _temp_for(self, path: str) -> str:
        directory, name = posixpath.split(path)
        return posixpath.join(directory, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")

    def _discard(self, path: str) -> None:
        # Best effort: a leftover temporary file is hidden from list().
        with contextlib.suppress(errors.RollwayError):
            self._call("DELETE", path, "DELETE", posixpath.relpath(path, self.root))

    def write(self, key: str, source: BinaryIO, size: int | None = None) -> ObjectInfo:
        path = self._path(key)
        temp = self._temp_for(path)
        try:
            self._upload(temp, key, source)
            if not self._rename(temp, path, key, "OVERWRITE"):
                self.delete(key)  # an HttpFS gateway: the old rename will not overwrite
                if not self._rename(temp, path, key, "OVERWRITE"):
                    raise errors.Unavailable(f"WebHDFS could not rename into {self.join(key)}")
        except BaseException:
            self._discard(temp)
            raise
        return self.stat(key)

    def create_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        temp = self._temp_for(path)
        created = False
        try:
            self._upload(temp, key, io.BytesIO(data))
            created = self._rename(temp, path, key, "NONE")
        except errors.AlreadyExists:
            pass
        finally:
            if not created:
                self._discard(temp)
        return created

    def delete(self, key: str) -> None:
        # {"boolean": false} when absent: deleting is idempotent.
        self._call("DELETE", self._path(key), "DELETE", key, recursive="false")

    def close(self) -> None:
        self._session.close()
