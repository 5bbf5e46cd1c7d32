"""Versions published as one archive: ``<base>/<model>/<version>.tar.gz``.

A trainer may upload a version as one ``.tar.gz``, ``.tgz``, ``.tar`` or ``.zip``
and then, LAST, ``<archive>.sha256`` (``sha256sum`` output, or the bare hex
digest): the digest file is the archive's commit point, as the manifest is a
directory's. ``stage_archive`` downloads the archive to a local temporary file
while hashing it (one chunk in memory), compares the digest, unpacks it into a
temporary directory, builds the manifest from what was unpacked, and stages
that like a published version (``stage.stage_manifest``: upload checked against
the manifest, manifest last, staged marker).

Unpacking is ``loader.unpack``: it trusts nothing in the archive (member
count and unpacked bytes capped as they are written, no absolute or '..'
names, no links, devices or FIFOs) and names the member and the rule broken.

Errors: DataLoss when bytes are not what they claim: the digest differs (the
archive is CORRUPT), the archive is unreadable, the digest file does not parse.
``ArchiveRejected`` (InvalidArgument) when a readable archive breaks a rule.

A manifest built from an archive is deterministic (``created_at`` is the newest
member's mtime, ``created_by`` names the archive and its digest), so staging
the same archive again finds the same manifest: idempotence and crash recovery
are those of ``stage_manifest``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from loader import manifest, stage
from loader.errors import AlreadyExists, DataLoss, InvalidArgument, NotFound
from loader.progress import Progress
from loader.stage import StageResult
from loader.storage import CHUNK_BYTES, Storage, open_storage
from loader.unpack import (
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_UNPACKED_BYTES,
    ArchiveRejected,
    Limits,
    unpack,
)
from loader.versions import parse_version

ARCHIVE_FORMATS = {".tar.gz": "tar", ".tgz": "tar", ".tar": "tar", ".zip": "zip"}
DIGEST_SUFFIX = ".sha256"
MAX_DIGEST_BYTES = 4096

_HEX = re.compile(r"[0-9a-fA-F]{64}")
_DIGEST_LINE = re.compile(r"([0-9a-fA-F]{64})(?: [ *](.+))?")

__all__ = [
    "ARCHIVE_FORMATS",
    "ArchiveRejected",
    "archive_version",
    "fetch_archive_digest",
    "parse_digest",
    "stage_archive",
]


def archive_version(key: str) -> int | None:
    """The version an archive's name stands for (``7.tar.gz`` -> 7), or None."""
    name = key.rsplit("/", 1)[-1]
    for suffix in ARCHIVE_FORMATS:
        if name.endswith(suffix):
            return parse_version(name[: -len(suffix)])
    return None


def parse_digest(data: bytes, archive_name: str | None, where: str) -> str:
    """The lowercase sha256 in a digest file: one line, ``<hex>  <name>`` or
    ``<hex> *<name>`` (sha256sum) or ``<hex>``. The name, if any, must end in
    ``archive_name``. DataLoss otherwise: the stored file is not what it claims."""
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise DataLoss(f"digest file {where} is not ASCII text") from None
    match = _DIGEST_LINE.fullmatch(lines[0].rstrip()) if len(lines) == 1 else None
    if match is None:
        raise DataLoss(
            f"digest file {where} must hold one line, '<sha256>  <file name>' as sha256sum"
            f" writes it or the bare 64-digit hex digest; it holds {data[:100]!r}"
        )
    name = match.group(2)
    if name is not None and archive_name and name.rsplit("/", 1)[-1] != archive_name:
        raise DataLoss(f"digest file {where} is for {name!r}, not {archive_name!r}")
    return match.group(1).lower()


def fetch_archive_digest(storage: Storage, digest_key: str) -> str:
    """The digest in ``digest_key`` (see ``parse_digest``). NotFound while it is not
    written: an archive counts as published only once its digest follows it."""
    where = storage.join(digest_key)
    try:
        with storage.open_read(digest_key, 0, MAX_DIGEST_BYTES + 1) as reader:
            data = reader.read()
    except NotFound:
        raise NotFound(f"{where} does not exist (yet): the archive is not published") from None
    if len(data) > MAX_DIGEST_BYTES:
        raise DataLoss(f"digest file {where} is over {MAX_DIGEST_BYTES} bytes")
    name = digest_key.rsplit("/", 1)[-1]
    archive = name[: -len(DIGEST_SUFFIX)] if name.endswith(DIGEST_SUFFIX) else None
    return parse_digest(data, archive, where)


def stage_archive(
    source: Storage,
    archive_key: str,
    expected_sha256: str | None,
    store: Storage,
    model: str,
    version: int,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    workers: int = 8,
    progress: Progress | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> StageResult:
    """Stages the archive ``archive_key`` of ``source`` as ``<store>/<model>/<version>/``.

    ``expected_sha256`` None reads it from ``<archive_key>.sha256``. A version
    already staged from an archive with this digest is a no-op decided before
    any download; one staged from anything else is AlreadyExists. Temporary
    files (the archive, then what it unpacks to) go under ``work_dir``.
    """
    started = time.monotonic()
    uri, name = source.join(archive_key), archive_key.rsplit("/", 1)[-1]
    kind = next((k for suffix, k in ARCHIVE_FORMATS.items() if name.endswith(suffix)), None)
    if kind is None:
        raise InvalidArgument(f"{uri} is not named like an archive ({', '.join(ARCHIVE_FORMATS)})")
    if expected_sha256 is None:
        expected = fetch_archive_digest(source, archive_key + DIGEST_SUFFIX)
    elif _HEX.fullmatch(expected_sha256):
        expected = expected_sha256.lower()
    else:
        raise InvalidArgument(f"expected sha256 {expected_sha256!r} is not 64 hex digits")
    done = _already_staged(store, model, version, expected, uri)
    if done is not None:
        return replace(done, seconds=time.monotonic() - started)
    with tempfile.TemporaryDirectory(prefix="rollway-archive-", dir=work_dir) as tmp:
        local, unpacked = Path(tmp) / "archive", Path(tmp) / "unpacked"
        size, actual = _download(source, archive_key, local)
        if actual != expected:
            raise DataLoss(
                f"{uri} ({size} bytes) has sha256 {actual}, but its digest is {expected}:"
                " the archive is damaged or is not the one published"
            )
        found = unpack(local, kind, unpacked, Limits(max_unpacked_bytes, max_members), uri)
        local.unlink()  # free the disk before the upload
        try:
            document = manifest.manifest_for_directory(
                found.root,
                model,
                version,
                created_by=f"rollway stage-archive {name} sha256:{expected}",
                workers=workers,
                now=datetime.datetime.fromtimestamp(found.latest_mtime, datetime.timezone.utc),
            )
        except DataLoss as err:  # a saved_model.pb that does not parse; name the archive
            raise DataLoss(f"{uri}: {err.message}") from None
        result = stage.stage_manifest(
            open_storage(str(found.root)), "", store, model, version, document,
            source_uri=uri, source_sha256=expected, workers=workers, progress=progress,
        )  # fmt: skip
    return replace(result, seconds=time.monotonic() - started)


def _already_staged(
    store: Storage, model: str, version: int, digest: str, uri: str
) -> StageResult | None:
    info = stage.staged_info(store, model, version)
    if info is None:
        return None
    if info.source_sha256 != digest:
        raise AlreadyExists(
            f"version {version} of model {model!r} is staged with manifest {info.manifest_sha256}"
            f" (from {info.source_uri}); a re-publish as {uri} (sha256 {digest}) is rejected:"
            " publish it as a new version"
        )
    key = f"{model}/{version}/{manifest.MANIFEST_NAME}"
    total = manifest.decode(store.read_bytes(key, manifest.MAX_MANIFEST_BYTES)).total_bytes
    version_uri = store.join(f"{model}/{version}")
    return StageResult(
        model, version, version_uri, info.manifest_sha256, total, 0, True, False, 0.0
    )


def _download(source: Storage, key: str, dest: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with source.open_read(key) as reader, dest.open("wb") as out:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return size, digest.hexdigest()
