"""Publishing a SavedModel version: files first, manifest last.

``publish_version`` uploads every file of a local SavedModel directory to
``<model_base>/<version>/`` in parallel, hashing each file as it streams (one
read of the data), then writes ``rollway-manifest.json`` only after every
upload succeeded. Until then the version is INCOMPLETE to any verifier, so a
crash or a failed upload never produces a version that can be served.

Version numbers: an explicit ``version``, or the next one after the highest
existing or claimed version. ``--next`` claims its number with the store's
create-if-absent, so two trainers publishing at once never pick the same one.
An existing version is replaced only with ``force``; a version the loader has
staged is never replaced.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from loader import layout, manifest
from loader.errors import AlreadyExists, DataLoss, InvalidArgument
from loader.progress import HashingReader, Progress
from loader.schemas.rollway.v1.manifest_pb2 import FileEntry, VersionManifest
from loader.storage import Storage

CLAIMS_DIR = f"{layout.STATE_DIR}/claims"
MAX_CLAIM_ATTEMPTS = 100


@dataclass(frozen=True)
class PublishResult:
    model: str
    version: int
    version_uri: str
    manifest: VersionManifest
    manifest_sha256: str
    seconds: float

    @property
    def total_bytes(self) -> int:
        return int(self.manifest.total_bytes)


def next_version(existing: set[int]) -> int:
    """Pure: one above the highest version, or 1 for a model with none."""
    return max(existing, default=0) + 1


def claim_next_version(storage: Storage) -> int:
    """Picks and claims the next free version number (create-if-absent on a claim key)."""
    claimed = {
        int(info.key.rsplit("/", 1)[1])
        for info in storage.list(f"{CLAIMS_DIR}/")
        if info.key.rsplit("/", 1)[1].isdigit()
    }
    candidate = next_version(layout.existing_versions(storage) | claimed)
    for _ in range(MAX_CLAIM_ATTEMPTS):
        if storage.create_if_absent(f"{CLAIMS_DIR}/{candidate}", str(os.getpid()).encode()):
            return candidate
        candidate += 1
    raise AlreadyExists(f"could not claim a version number under {storage.uri}")


def check_replaceable(storage: Storage, model: str, version: int, force: bool) -> None:
    """Refuses to touch a staged version, and an existing one without ``force``."""
    if storage.exists(layout.staged_key(version)):
        raise AlreadyExists(
            f"version {version} of model {model!r} is already staged and is never overwritten;"
            " publish it as a new version"
        )
    existing = next(iter(storage.list(layout.version_prefix(version))), None)
    if existing is not None and not force:
        raise AlreadyExists(
            f"version {version} of model {model!r} already exists at"
            f" {storage.join(layout.version_prefix(version))}; pass --force to replace it"
        )


def publish_version(
    source: Path,
    storage: Storage,
    model: str,
    version: int | None,
    *,
    force: bool = False,
    workers: int = 8,
    created_by: str = "rollway publish",
    progress: Progress | None = None,
) -> PublishResult:
    started = time.monotonic()
    progress = progress or Progress()
    paths = manifest.local_files(source)
    summary = manifest.summarize_saved_model(source)  # refuses a directory with no SavedModel
    if version is None:
        version = claim_next_version(storage)
    else:
        check_replaceable(storage, model, version, force)
    prefix = layout.version_prefix(version)
    # A replaced version loses its manifest first: while its files change it is INCOMPLETE.
    storage.delete(layout.manifest_key(version))
    sizes = {rel: (source / rel).stat().st_size for rel in paths}
    progress.planned(len(paths), sum(sizes.values()))

    def upload(rel: str) -> FileEntry:
        with (source / rel).open("rb") as raw:
            reader = HashingReader(raw, progress)
            storage.write(prefix + rel, reader, sizes[rel])  # type: ignore[arg-type]
        if reader.bytes_read != sizes[rel]:
            raise DataLoss(
                f"{source / rel} changed size while it was uploaded"
                f" ({sizes[rel]} then {reader.bytes_read} bytes); publish again"
            )
        progress.file_done(rel)
        return FileEntry(path=rel, size=reader.bytes_read, sha256=reader.hexdigest())

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="rollway-publish") as pool:
        entries = list(pool.map(upload, paths))

    wanted = {prefix + rel for rel in paths} | {layout.manifest_key(version)}
    for stale in storage.list(prefix):  # left over from the version this one replaces
        if stale.key not in wanted:
            storage.delete(stale.key)

    document = VersionManifest(
        schema_version=manifest.SCHEMA_VERSION,
        model=model,
        version=version,
        files=entries,
        total_bytes=sum(e.size for e in entries),
        saved_model=summary,
        created_by=created_by,
    )
    document.created_at.FromDatetime(datetime.datetime.now(datetime.timezone.utc))
    problems = manifest.validate(document)
    if problems:
        raise InvalidArgument(f"cannot publish {source}: " + "; ".join(problems))
    data = manifest.encode(document)
    storage.write_bytes(layout.manifest_key(version), data)  # LAST: the version is complete
    return PublishResult(
        model=model,
        version=version,
        version_uri=storage.join(str(version)),
        manifest=document,
        manifest_sha256=hashlib.sha256(data).hexdigest(),
        seconds=time.monotonic() - started,
    )
