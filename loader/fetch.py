"""Fetch: a staged version from the serving store into a local cache, verified.

``fetch_version`` makes ``<cache>/<model>/<version>/`` hold exactly the files
the version's manifest lists, each proven against its size and sha256:

- the manifest is read from the store (and, when the caller knows the digest
  the assignment promised, checked against it);
- a file already in the cache is reused if it hashes right, and fetched again
  if not (a corrupt or truncated cache file is never served);
- a fetched file streams into a temporary file while it is hashed, and is
  renamed into place only if it matches (one read, bounded memory);
- files the manifest does not list are removed, and the manifest is written
  into the cache directory LAST: a cache directory with a manifest is complete.

A link is never followed: any symbolic link under the cache directory is
removed before a file is reused or written there, so neither a reused file
nor a fetched one can live outside it. Files are handled in parallel. The
cache directory is this process's own (an emptyDir in a pod), so no locking
between processes is needed.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from loader import layout, manifest
from loader.errors import DataLoss
from loader.progress import HashingReader, Progress
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry
from loader.storage import CHUNK_BYTES, Storage


@dataclass(frozen=True)
class FetchResult:
    model: str
    version: int
    path: Path
    manifest_sha256: str
    total_bytes: int
    bytes_fetched: int
    files_fetched: int
    files_reused: int
    seconds: float


def local_sha256(path: Path) -> tuple[int, str]:
    with path.open("rb") as reader:
        return manifest.sha256_stream(reader)


def remove_links(directory: Path) -> None:
    """Deletes every symbolic link under ``directory`` (never following one), so
    that what is reused or written there stays inside it."""
    for dirpath, dirnames, filenames in os.walk(directory):  # followlinks=False
        for name in (*dirnames, *filenames):
            if os.path.islink(full := os.path.join(dirpath, name)):
                os.unlink(full)


def fetch_version(
    store: Storage,
    model: str,
    version: int,
    cache_dir: Path,
    *,
    expected_manifest_sha256: str = "",
    workers: int = 8,
    progress: Progress | None = None,
) -> FetchResult:
    started = time.monotonic()
    progress = progress or Progress()
    data = store.read_bytes(f"{model}/{layout.manifest_key(version)}", manifest.MAX_MANIFEST_BYTES)
    digest = hashlib.sha256(data).hexdigest()
    where = store.join(f"{model}/{version}")
    if expected_manifest_sha256 and digest != expected_manifest_sha256:
        raise DataLoss(
            f"the manifest of {where} has sha256 {digest}, but the assignment names "
            f"{expected_manifest_sha256}: the store does not hold the assigned version"
        )
    document = manifest.decode(data)
    if (document.model, document.version) != (model, version):
        raise DataLoss(
            f"the manifest of {where} is for {document.model!r} version {document.version}"
        )
    target = cache_dir / model / str(version)
    target.mkdir(parents=True, exist_ok=True)
    (target / manifest.MANIFEST_NAME).unlink(missing_ok=True)  # incomplete until rewritten
    remove_links(target)
    progress.planned(len(document.files), int(document.total_bytes))

    def one(entry: FileEntry) -> int:
        path = target / entry.path
        reusable = path.is_file() and path.stat().st_size == entry.size
        if reusable and local_sha256(path) == (entry.size, entry.sha256):
            progress.advance(entry.size)
            progress.file_done(entry.path)
            return 0
        _download(store, f"{model}/{version}/{entry.path}", path, entry, where, progress)
        progress.file_done(entry.path)
        return entry.size

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="rollway-fetch") as pool:
        fetched = list(pool.map(one, document.files))
    listed = {entry.path for entry in document.files}
    for path in sorted(target.rglob("*"), reverse=True):  # files first, then empty dirs
        rel = path.relative_to(target).as_posix()
        if path.is_file() and rel not in listed:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    (target / manifest.MANIFEST_NAME).write_bytes(data)  # LAST: the cache copy is complete
    return FetchResult(
        model=model,
        version=version,
        path=target,
        manifest_sha256=digest,
        total_bytes=int(document.total_bytes),
        bytes_fetched=sum(fetched),
        files_fetched=sum(1 for n in fetched if n),
        files_reused=sum(1 for n in fetched if not n),
        seconds=time.monotonic() - started,
    )


def _download(
    store: Storage, key: str, path: Path, entry: FileEntry, where: str, progress: Progress
) -> None:
    if manifest.path_problems(entry.path):  # decode() refuses these; never leave the cache
        raise DataLoss(f"{where}: unsafe path {entry.path!r} in the manifest")
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.fetch-{uuid.uuid4().hex}")
    try:
        with store.open_read(key) as raw, temp.open("wb") as out:
            reader = HashingReader(raw, progress)
            while chunk := reader.read(CHUNK_BYTES):
                out.write(chunk)
        if (reader.bytes_read, reader.hexdigest()) != (entry.size, entry.sha256):
            raise DataLoss(
                f"{where}/{entry.path} in the store is {reader.bytes_read} bytes with sha256 "
                f"{reader.hexdigest()}; its manifest says {entry.size} bytes, {entry.sha256}"
            )
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
