"""VersionRepository: one model's base path, on any store the registry knows.

The file-system source keeps one repository per model. It opens the base path
through ``open_storage``, so a local path, ``file://``, ``s3://``, ``hdfs://``
and ``webhdfs://`` take the same code. :meth:`VersionRepository.scan` says
which versions are there; :meth:`VersionRepository.materialize` turns one into
a local directory that TensorFlow can load.

One completeness rule, on every scheme:

* a version with ``rollway-manifest.json`` is *found* only once its listing
  matches the manifest (every listed file there, with its size; checked from
  the listing, nothing hashed), and it *loads* only once every file hashes to
  the manifest's sha256. Until it is found, TF Serving's "latest" keeps serving
  the previous version; a version that fails verification fails its load
  (DATA_LOSS when CORRUPT) and is tried again when its files change;
* a version without one (TF Serving's plain layout) is found as it is, as TF
  Serving finds it, and loaded again when its files change; with
  ``require_manifest`` it waits for its manifest instead.

Making a version loadable:

* local, no manifest: the directory itself, never copied;
* local, manifest: verified in place; a COMPLETE result is remembered per
  content fingerprint, so a version is hashed once. A listed file that is a
  symbolic link (or under a linked directory) makes it CORRUPT, as for
  ``rollway verify`` and the loader: links are never followed;
* remote, manifest: fetched into ``<cache>/<model>/<version>``, each file hashed
  while it streams and renamed into place only if it matches; intact cached
  files are reused, unlisted ones removed, the manifest written LAST;
* remote, no manifest: every listed file downloaded the same way (no digest to
  check); a marker written last records the listing, so an unchanged version
  is not fetched twice.

Requests per scan: local, one readdir of the base path, a stat per version and
a walk (stat only) of each version that has a manifest; remote, one recursive
listing of the base path (S3: a ListObjectsV2 per 1,000 keys; HDFS and
WebHDFS: a directory listing per directory), plus one read of the manifest of
each version whose listing changed since the last scan (none when nothing did).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from functions.serving.core.listing import (
    Scan,
    cache_name,
    group_versions,
    listing_fingerprint,
    load_error,
    wait_reason,
)
from functions.serving.core.version_ref import VersionRef
from loader import display
from loader.errors import Code, InvalidArgument, LoadError, NotFound
from loader.fetch import local_sha256, remove_links
from loader.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, ManifestError, decode, path_problems
from loader.progress import HashingReader
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry
from loader.storage import BACKENDS, CHUNK_BYTES, ObjectInfo, open_storage, scheme_of
from loader.storage.base import NotRegularFile
from loader.storage.local import LocalStorage
from loader.verify import (
    Problem,
    ProblemKind,
    Verdict,
    listing_problems,
    verify_version,
)
from loader.versions import content_fingerprint, parse_version, scan_versions

FILE_WORKERS = 4  # files of one version fetched or hashed at once
# In a cached copy of a version without manifest: the listing fingerprint it holds.
FETCHED_MARKER = ".rollway-fetched"


def scheme_problem(uri: str) -> str:
    """Why no storage backend can read ``uri``; '' when one can."""
    try:
        scheme = scheme_of(uri)
    except InvalidArgument as err:
        return err.message
    if scheme in BACKENDS:
        return ""
    known = ", ".join(sorted(f"{s}://" for s in BACKENDS if s))
    return (
        f"no storage backend reads the URI scheme {scheme}:// of {display.uri(uri)!r}; "
        f"use a local path or one of {known}"
    )


class CacheDir:
    """``--cache_dir``: that directory, or (when empty) a new one under $TMPDIR,
    made on first use and deleted by :meth:`close`. Thread-safe."""

    def __init__(self, option: str = "") -> None:
        self._mine = not option
        self._path = None if self._mine else Path(os.path.abspath(option))
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        with self._lock:
            if self._path is None:
                self._path = Path(os.path.abspath(tempfile.mkdtemp(prefix="rollway-cache-")))
            return self._path

    def made(self) -> Path | None:
        """The directory if it exists by now; never creates it."""
        with self._lock:
            return self._path

    def close(self) -> None:
        with self._lock:
            if self._mine and self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                self._path = None


@dataclass(frozen=True)
class RepositoryOptions:
    #: Where remote versions are fetched; None: remote base paths cannot be served.
    cache: CacheDir | None = None
    #: A version without a manifest waits for one (``--require_manifest``).
    require_manifest: bool = False
    #: False where every local version with a manifest was verified just before
    #: (the assigned cache, written by ``loader.fetch``): it is loaded in place.
    verify_local_manifests: bool = True


class VersionRepository:
    """One model's base path. Thread-safe: scans run on the poll thread,
    materialize on the load threads."""

    def __init__(self, model: str, base_path: str, options: RepositoryOptions) -> None:
        self.model = model
        self.base_path = base_path
        self.location = display.uri(base_path)
        self._options = options
        self._storage = open_storage(base_path)
        self._local = self._storage.root if isinstance(self._storage, LocalStorage) else None
        self._root = str(self._local) if self._local is not None else self._storage.uri
        self._lock = threading.Lock()
        self._decided: dict[int, tuple[str, str]] = {}  # version -> (fingerprint, wait reason)
        self._verified: dict[int, str] = {}  # version -> fingerprint it verified COMPLETE at

    def scan(self) -> Scan:
        """The versions there now; raises RollwayError when the store cannot be read."""
        # Each version, and its files when the listing has them already (else listed on need).
        refs: list[tuple[VersionRef, Mapping[str, ObjectInfo] | None]] = []
        if self._local is not None:
            if not self._local.is_dir():
                return Scan(missing=True)
            for number, path in scan_versions(self._local).items():
                ref = VersionRef.local(number, path, (path / MANIFEST_NAME).is_file())
                if ref.has_manifest:  # listing-derived decisions are cached by it
                    ref = replace(ref, fingerprint=content_fingerprint(path))
                refs.append((ref, None))
        else:
            listing = list(self._storage.list())
            if not listing:
                return Scan(missing=True)
            for number, listed in group_versions(listing).items():
                ref = VersionRef(
                    number, self._storage.join(listed.name), listed.name, self._root,
                    MANIFEST_NAME in listed.files, listing_fingerprint(listed.files),
                )  # fmt: skip
                refs.append((ref, listed.files))
        found: dict[int, VersionRef] = {}
        waiting: dict[int, tuple[VersionRef, str]] = {}
        for ref, files in refs:
            reason = self._wait_reason(ref, files)
            if reason:
                waiting[ref.version] = (ref, reason)
            else:
                found[ref.version] = ref
        with self._lock:
            present = {ref.version for ref, _ in refs}
            self._decided = {v: d for v, d in self._decided.items() if v in present}
            self._verified = {v: f for v, f in self._verified.items() if v in present}
        return Scan(found, waiting)

    def _wait_reason(self, ref: VersionRef, files: Mapping[str, ObjectInfo] | None) -> str:
        if not ref.has_manifest:
            if self._options.require_manifest:
                return f"no {MANIFEST_NAME} yet, and --require_manifest is set"
            return ""
        with self._lock:
            known = self._decided.get(ref.version)
        if known is not None and known[0] == ref.fingerprint:
            return known[1]
        listing = files if files is not None else self._files(ref.name)
        try:
            manifest = decode(self._read_manifest(ref, listing))
        except NotFound:
            reason = "its manifest disappeared while being read"
        except (ManifestError, NotRegularFile):
            reason = ""  # CORRUPT: its load fails, saying why
        else:
            reason = wait_reason(listing_problems(manifest, listing, expected_version=ref.version))
        with self._lock:
            self._decided[ref.version] = (ref.fingerprint, reason)
        return reason

    def _files(self, name: str) -> dict[str, ObjectInfo]:
        """The files of version directory ``name``, by path relative to it."""
        prefix = f"{name}/"
        return {
            info.key[len(prefix) :]: info
            for info in self._storage.list(prefix)
            if info.key.startswith(prefix) and not info.key.endswith("/")
        }

    def _read_manifest(self, ref: VersionRef, listing: Mapping[str, ObjectInfo]) -> bytes:
        info = listing.get(MANIFEST_NAME)
        if info is None:
            raise NotFound(f"{ref.location}/{MANIFEST_NAME} does not exist")
        if info.size > MAX_MANIFEST_BYTES:
            raise ManifestError([f"{info.size} bytes, over the {MAX_MANIFEST_BYTES} limit"])
        key = f"{ref.name}/{MANIFEST_NAME}"
        with self._storage.open_read(key, 0, MAX_MANIFEST_BYTES + 1) as reader:
            return reader.read()

    # ------------------------------------------------------------ materialize

    def materialize(self, ref: VersionRef) -> Path:
        """A local directory holding ``ref``'s files, proven against its manifest
        when it has one. Raises LoadError: DATA_LOSS when the files contradict
        the manifest, UNAVAILABLE when the version is not (any more) complete;
        or the store's own error."""
        if ref.base != self._root:
            raise LoadError(
                f"{ref.location} is not under the base path {self.location} of model "
                f"{self.model} any more",
                Code.UNAVAILABLE,
            )
        try:
            if self._local is not None:
                return self._verified_in_place(ref)
            return self._fetched(ref)
        except OSError as err:  # local disk: permissions, a full cache
            raise LoadError(f"{ref.location}: {err}", Code.INTERNAL) from err

    def _verified_in_place(self, ref: VersionRef) -> Path:
        assert ref.path is not None
        if not ref.has_manifest or not self._options.verify_local_manifests:
            return ref.path
        fingerprint = content_fingerprint(ref.path)
        with self._lock:
            if self._verified.get(ref.version) == fingerprint:
                return ref.path
        report = verify_version(
            self._storage, ref.name, workers=FILE_WORKERS, expected_version=ref.version
        )
        if report.verdict is not Verdict.COMPLETE:
            raise load_error(ref.location, report.problems)
        with self._lock:
            self._verified[ref.version] = fingerprint
        return ref.path

    def _fetched(self, ref: VersionRef) -> Path:
        if self._options.cache is None:
            raise LoadError(f"{ref.location}: no cache directory to fetch it into", Code.INTERNAL)
        target = self._options.cache.path / cache_name(self.model) / str(ref.version)
        files = self._files(ref.name)  # afresh: it may have changed since the scan
        if MANIFEST_NAME in files:
            self._fetch_verified(ref, files, target)
        elif self._options.require_manifest or not files:
            what = f"has no {MANIFEST_NAME} any more" if files else "has no files any more"
            raise LoadError(f"{ref.location} {what}", Code.UNAVAILABLE)
        else:
            self._mirror(ref, files, target)
        return target

    def _fetch_verified(
        self, ref: VersionRef, files: Mapping[str, ObjectInfo], target: Path
    ) -> None:
        data = self._read_manifest(ref, files)
        try:
            manifest = decode(data)
        except ManifestError as err:
            raise LoadError(f"{ref.location} is CORRUPT: {err.message}", Code.DATA_LOSS) from err
        problems = listing_problems(manifest, files, expected_version=ref.version)
        if problems:
            raise load_error(ref.location, problems)
        target.mkdir(parents=True, exist_ok=True)
        for stale in (MANIFEST_NAME, FETCHED_MARKER):  # incomplete until the manifest is back
            (target / stale).unlink(missing_ok=True)
        remove_links(target)  # never reuse or write through a link

        def one(entry: FileEntry) -> Problem | None:
            path = target / entry.path
            reusable = path.is_file() and path.stat().st_size == entry.size
            if reusable and local_sha256(path) == (entry.size, entry.sha256):
                return None  # intact in the cache
            try:
                return self._download(f"{ref.name}/{entry.path}", path, entry)
            except NotFound:
                detail = "listed in the manifest but disappeared while being fetched"
                return Problem(ProblemKind.FILE_MISSING, entry.path, detail)

        with ThreadPoolExecutor(FILE_WORKERS, thread_name_prefix="rollway-fetch") as pool:
            found = [p for p in pool.map(one, manifest.files) if p is not None]
        if found:
            raise load_error(ref.location, found)
        _remove_unlisted(target, {entry.path for entry in manifest.files})
        (target / MANIFEST_NAME).write_bytes(data)  # LAST: the cached copy is complete

    def _mirror(self, ref: VersionRef, files: Mapping[str, ObjectInfo], target: Path) -> None:
        """Copies a version without manifest, unless the cache holds this listing."""
        files = {path: info for path, info in files.items() if path != FETCHED_MARKER}
        unsafe = sorted(path for path in files if path_problems(path))
        if unsafe:
            raise LoadError(f"{ref.location} lists unsafe paths: {unsafe}", Code.DATA_LOSS)
        fingerprint = listing_fingerprint(files)
        marker = target / FETCHED_MARKER
        remove_links(target)  # never reuse or write through a link
        if (
            marker.is_file()
            and marker.read_text() == fingerprint
            and all(
                (target / p).is_file() and (target / p).stat().st_size == i.size
                for p, i in files.items()
            )
        ):
            return
        target.mkdir(parents=True, exist_ok=True)
        marker.unlink(missing_ok=True)

        def one(path: str) -> None:
            try:
                self._download(f"{ref.name}/{path}", target / path, None)
            except NotFound as err:
                raise LoadError(
                    f"{ref.location}/{path} disappeared while being fetched", Code.UNAVAILABLE
                ) from err

        with ThreadPoolExecutor(FILE_WORKERS, thread_name_prefix="rollway-fetch") as pool:
            list(pool.map(one, sorted(files)))
        _remove_unlisted(target, set(files))
        marker.write_text(fingerprint)  # LAST

    def _download(self, key: str, path: Path, entry: FileEntry | None) -> Problem | None:
        """Streams ``key`` into ``path`` through a temporary file, hashing it; with
        ``entry``, renames it into place only if it matches (else the problem)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.fetch-{uuid.uuid4().hex}")
        try:
            with self._storage.open_read(key) as raw, temp.open("wb") as out:
                reader = HashingReader(raw)
                while chunk := reader.read(CHUNK_BYTES):
                    out.write(chunk)
            if entry is not None and reader.bytes_read != entry.size:
                detail = (
                    f"changed while being fetched: {reader.bytes_read} bytes read, "
                    f"the manifest lists {entry.size}"
                )
                return Problem(ProblemKind.SIZE_MISMATCH, entry.path, detail)
            if entry is not None and reader.hexdigest() != entry.sha256:
                detail = f"sha256 is {reader.hexdigest()}, the manifest lists {entry.sha256}"
                return Problem(ProblemKind.CHECKSUM_MISMATCH, entry.path, detail)
            os.replace(temp, path)
            return None
        finally:
            temp.unlink(missing_ok=True)

    def prune(self, keep: Iterable[int]) -> None:
        """Deletes the cached copies of this model's versions but ``keep``."""
        cache = self._options.cache.made() if self._options.cache is not None else None
        if self._local is not None or cache is None:
            return
        base = cache / cache_name(self.model)
        wanted = set(keep)
        for entry in os.scandir(base) if base.is_dir() else ():
            number = parse_version(entry.name)
            if number is not None and number not in wanted and entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)

    def close(self) -> None:
        self._storage.close()


def _remove_unlisted(target: Path, listed: set[str]) -> None:
    for path in sorted(target.rglob("*"), reverse=True):  # files first, then empty dirs
        rel = path.relative_to(target).as_posix()
        if path.is_file() and rel not in listed and rel != FETCHED_MARKER:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
