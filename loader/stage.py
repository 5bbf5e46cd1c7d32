"""Stage: make a verified version servable in the serving store, all at once.

``stage_version`` copies every file a verified manifest lists from where the
version was published to ``<store>/<model>/<version>/``, writes the manifest
there LAST, then creates ``<store>/<model>/_rollway/staged/<version>`` (the
marker the assign step reads) with create-if-absent.

Why the final prefix and not a temporary one renamed into place: S3 has no
rename (a "rename" copies every object again and deletes the old keys, which is
neither atomic nor free), and none is needed. Every reader (``verify_version``,
serving replicas) treats a version directory without its manifest as not
there, so the manifest is the commit point, as for ``rollway publish``. Each
file is written atomically and hashed while it streams (one read of the data),
so the manifest is only ever written over files proven equal to it.

Idempotent and crash-safe; call it again at any time (e.g. a redelivered record):
- the marker exists with the same manifest: nothing to do (``already_staged``);
- the marker exists with another manifest: ``AlreadyExists``, staged is final;
- our manifest is there and the listing matches it (a crash before the
  marker): only the marker is written, no file is rewritten under a commit;
- otherwise everything is redone: any other manifest is deleted, files are
  rewritten (atomically), files the manifest does not list are deleted, then
  the manifest, then the marker.
Concurrent stagers of one version are serialised by a claim (``loader.staged``),
taken with create-if-absent before the first byte moves: a stager with another
manifest is refused before it can overwrite anything; stagers with the same
manifest write the same bytes, so they may overlap harmlessly.

Links are never followed: a version with a symbolic link among its files is
never verified COMPLETE, a source directory holding one is refused (DataLoss)
before anything is copied, and the local backend refuses to read one
(``NotRegularFile``) should it appear after that.

In place (the source directory IS ``<store>/<model>/<version>``) nothing is
copied: the manifest is re-read to check it is still the one verified, and the
marker is created.

``manifest_sha256`` is the sha256 of the manifest's canonical encoding
(``manifest.encode``), the bytes written to the store; for a version published
by ``rollway publish`` it equals ModelPublished.manifest_sha256.
"""

from __future__ import annotations

import datetime
import hashlib
import posixpath
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import BinaryIO, cast

from loader import display, layout, manifest, staged
from loader.errors import DataLoss, FailedPrecondition, InvalidArgument
from loader.progress import Progress
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry, VersionManifest
from loader.staged import StagedInfo, staged_info, staged_versions
from loader.storage import Storage
from loader.verify import Verdict, VerificationReport

__all__ = [
    "StageResult",
    "StagedInfo",
    "same_location",
    "stage_manifest",
    "stage_version",
    "staged_info",
    "staged_versions",
]


@dataclass(frozen=True)
class StageResult:
    model: str
    version: int
    version_uri: str  # <store>/<model>/<version>
    manifest_sha256: str
    total_bytes: int
    copied_bytes: int  # 0 when in place or already staged
    already_staged: bool
    in_place: bool
    seconds: float


def stage_version(
    source: Storage,
    source_prefix: str,
    store: Storage,
    model: str,
    version: int,
    report: VerificationReport,
    *,
    workers: int = 8,
    progress: Progress | None = None,
) -> StageResult:
    """Stages the version ``report`` proved COMPLETE at ``source_prefix`` of ``source``.

    FailedPrecondition unless the report is COMPLETE with a manifest (a legacy
    version has none to commit with); InvalidArgument if the manifest names
    another model or version. See the module docstring for the rest.
    """
    if report.verdict is not Verdict.COMPLETE or report.manifest is None:
        why = "it has no manifest" if report.manifest is None else report.verdict.value
        raise FailedPrecondition(
            f"version {version} of model {model!r} at {source.join(source_prefix)} is not"
            f" verified COMPLETE with a manifest ({why}); only such a version can be staged"
        )
    document = report.manifest
    if (document.model, document.version) != (model, version):
        raise InvalidArgument(
            f"the manifest at {source.join(source_prefix)} is for model {document.model!r}"
            f" version {document.version}, not model {model!r} version {version}"
        )
    return stage_manifest(
        source, source_prefix, store, model, version, document, workers=workers, progress=progress
    )


def stage_manifest(
    source: Storage,
    source_prefix: str,
    store: Storage,
    model: str,
    version: int,
    document: VersionManifest,
    *,
    source_uri: str | None = None,
    source_sha256: str | None = None,
    workers: int = 8,
    progress: Progress | None = None,
) -> StageResult:
    """Stages the files ``document`` lists under ``source_prefix``. The copy is
    checked against ``document`` as it streams, so a caller that vouches for a
    wrong manifest gets DataLoss, not a bad version. ``source_uri`` (default: the
    source directory) and ``source_sha256`` are recorded in the marker."""
    started = time.monotonic()
    _check_name(model, version)
    data = manifest.encode(document)
    sha = hashlib.sha256(data).hexdigest()
    src = f"{source_prefix.strip('/')}/" if source_prefix.strip("/") else ""
    base = f"{model}/{version}/"
    now = datetime.datetime.now(datetime.timezone.utc)
    marker = staged.StagedInfo(
        version, sha, source_uri or source.join(src.rstrip("/")), now, source_sha256
    )

    def result(copied: int, already: bool, in_place: bool) -> StageResult:
        return StageResult(
            model, version, store.join(base.rstrip("/")), sha, int(document.total_bytes),
            copied, already, in_place, time.monotonic() - started,
        )  # fmt: skip

    in_place, copied = same_location(source, src, store, base), 0
    if staged.check_staged(store, model, version, sha, marker.source_uri):
        return result(0, True, in_place)
    committed = base + manifest.MANIFEST_NAME
    if in_place:
        _check_unchanged(source, src + manifest.MANIFEST_NAME, data)
    else:
        linked = source.links(src)
        if linked:
            raise DataLoss(
                f"{source.join(linked[0])} is a symbolic link: a version's files must be"
                " regular files inside it, and links are never followed; nothing was staged"
            )
        staged.claim(store, model, version, sha, marker.source_uri)
        if not _committed(store, base, document, data):
            copied = _copy_all(source, src, store, base, list(document.files), workers, progress)
            wanted = {base + entry.path for entry in document.files} | {committed}
            for stale in store.list(base):  # left by a crashed attempt or an older upload
                if stale.key not in wanted:
                    store.delete(stale.key)
            store.write_bytes(committed, data)  # LAST: the commit point
    key = f"{model}/{layout.staged_key(version)}"
    if not store.create_if_absent(key, staged.marker_bytes(marker)):
        staged.check_staged(store, model, version, sha, marker.source_uri)  # lost a race
    return result(copied, False, in_place)


def same_location(a: Storage, a_key: str, b: Storage, b_key: str) -> bool:
    """Whether two (storage, key) pairs name one place: same backend type and
    endpoint, and equal URIs after redaction and path normalisation. It errs
    towards "different", which only costs a copy onto itself."""
    return _location(a, a_key) == _location(b, b_key)


def _location(storage: Storage, key: str) -> tuple[str, str, str]:
    uri = display.uri(storage.join(key.strip("/")))
    scheme, sep, rest = uri.partition("://")
    path = posixpath.normpath("/" + rest if sep else rest).lstrip("/") if rest else ""
    endpoint = str(getattr(storage, "endpoint", ""))
    return type(storage).__name__, endpoint, f"{scheme}{sep}{path}"


def _check_name(model: str, version: int) -> None:
    if not model or "/" in model or model in (".", "..") or model == layout.STATE_DIR:
        raise InvalidArgument(f"model name {model!r} cannot name a directory of the store")
    if version < 0:
        raise InvalidArgument(f"version {version} of model {model!r} is negative")


def _committed(store: Storage, base: str, document: VersionManifest, data: bytes) -> bool:
    """Whether an earlier attempt committed this very copy (and crashed before the
    marker): the manifest is ours and the listing matches it, so only the marker
    is missing. Any other manifest there is deleted first: the copy must not
    change files under a committed manifest."""
    key = base + manifest.MANIFEST_NAME
    stored = staged.read_or_none(store, key, manifest.MAX_MANIFEST_BYTES)
    wanted = {entry.path: entry.size for entry in document.files}
    wanted[manifest.MANIFEST_NAME] = len(data)
    if stored == data and {i.key[len(base) :]: i.size for i in store.list(base)} == wanted:
        return True
    if stored is not None:
        store.delete(key)
    return False


def _check_unchanged(source: Storage, key: str, data: bytes) -> None:
    """In place there is no copy to check, so at least the manifest must be the one verified."""
    stored = staged.read_or_none(source, key, manifest.MAX_MANIFEST_BYTES)
    try:
        same = stored is not None and manifest.encode(manifest.decode(stored)) == data
    except DataLoss:
        same = False
    if not same:
        raise FailedPrecondition(
            f"{source.join(key)} changed after the version was verified; verify it again"
        )


class _Stopped(Exception):
    """Another copy failed; this one gives up (never surfaces)."""


class _CheckedReader:
    """Passes a source file through, hashing it; DataLoss as soon as it holds more
    bytes than ``entry`` lists, or at its end when fewer. ``check`` compares the sha256."""

    def __init__(
        self, raw: BinaryIO, entry: FileEntry, uri: str, stop: threading.Event, sink: Progress
    ) -> None:
        self._raw, self._entry, self._uri, self._stop, self._sink = raw, entry, uri, stop, sink
        self._digest = hashlib.sha256()
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise _Stopped
        data = self._raw.read(size)
        self._digest.update(data)
        self.bytes_read += len(data)
        if self.bytes_read > self._entry.size or (not data and size != 0 and self.short()):
            raise self._loss(f"holds {'more' if data else self.bytes_read} bytes")
        if data:
            self._sink.advance(len(data))
        return data

    def short(self) -> bool:
        return self.bytes_read < self._entry.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False  # a consumer that seeks would hash bytes twice

    def check(self) -> None:
        if self.short():
            raise self._loss(f"holds {self.bytes_read} bytes")
        if (sha := self._digest.hexdigest()) != self._entry.sha256:
            raise self._loss(f"has sha256 {sha}")

    def _loss(self, what: str) -> DataLoss:
        return DataLoss(
            f"{self._uri} {what}, but the manifest lists {self._entry.size} bytes with sha256"
            f" {self._entry.sha256}: it changed after verification; nothing was committed"
        )

    def close(self) -> None:
        self._raw.close()


def _copy_all(
    source: Storage,
    src: str,
    store: Storage,
    base: str,
    entries: list[FileEntry],
    workers: int,
    progress: Progress | None,
) -> int:
    """Copies ``entries`` in parallel, largest first; one chunk of memory per worker
    (the backends stream). The first failure stops the rest and is raised."""
    sink = progress or Progress()
    sink.planned(len(entries), sum(entry.size for entry in entries))
    stop = threading.Event()

    def copy(entry: FileEntry) -> int:
        with source.open_read(src + entry.path) as raw:
            reader = _CheckedReader(raw, entry, source.join(src + entry.path), stop, sink)
            store.write(base + entry.path, cast(BinaryIO, reader), entry.size)
        try:
            reader.check()
        except DataLoss:
            store.delete(base + entry.path)  # not needed for safety (no manifest), but tidy
            raise
        sink.file_done(entry.path)
        return entry.size

    ordered = sorted(entries, key=lambda entry: (-entry.size, entry.path))
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="rollway-stage") as pool:
        futures = [pool.submit(copy, entry) for entry in ordered]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        errors = [err for f in done if (err := f.exception()) and not isinstance(err, _Stopped)]
        if errors:
            stop.set()
            for future in futures:
                future.cancel()
    if errors:
        raise errors[0]
    return sum(future.result() for future in futures)
