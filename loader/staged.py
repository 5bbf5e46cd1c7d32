"""The staged record of a version: what the assign step reads, and the claim
that serialises stagers.

    <store>/<model>/_rollway/staged/<version>   the marker: created once, with
        create-if-absent, after the staged copy's manifest is written; JSON
        {version, manifestSha256, sourceUri, stagedAt, sourceSha256?}
    <store>/<model>/_rollway/staging/<version>  the claim: created before the
        first byte is copied; JSON {manifestSha256, sourceUri}

A version number, once claimed or staged with a manifest, stays with that
manifest: another one is AlreadyExists. Unreadable records are DataLoss, never
skipped: a record is the only proof that a version was staged.
"""

from __future__ import annotations

import datetime
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from loader import layout
from loader.errors import AlreadyExists, DataLoss, NotFound
from loader.storage import Storage
from loader.versions import parse_version

STAGING_DIR = f"{layout.STATE_DIR}/staging"
MAX_MARKER_BYTES = 64 * 1024

__all__ = ["StagedInfo", "check_staged", "claim", "marker_bytes", "staged_info", "staged_versions"]


@dataclass(frozen=True)
class StagedInfo:
    """One staged marker: which manifest was staged, from where, and when."""

    version: int
    manifest_sha256: str
    source_uri: str
    staged_at: datetime.datetime
    source_sha256: str | None = None  # the archive's digest, for a version staged from one


def staged_info(store: Storage, model: str, version: int) -> StagedInfo | None:
    """The marker of one version, or None when it is not staged. DataLoss if unreadable."""
    key = f"{model}/{layout.staged_key(version)}"
    data = read_or_none(store, key, MAX_MARKER_BYTES)
    return None if data is None else parse_marker(data, version, store.join(key))


def staged_versions(store: Storage, model: str, workers: int = 8) -> dict[int, StagedInfo]:
    """Every staged version of ``model`` in ``store``, by number (for the assign step).
    Keys under the staged directory that are not version numbers are ignored."""
    prefix = f"{model}/{layout.STATE_DIR}/staged/"
    numbers = [
        number
        for info in store.list(prefix)
        if (number := parse_version(info.key[len(prefix) :])) is not None
    ]
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="rollway-staged") as pool:
        infos = list(pool.map(lambda number: staged_info(store, model, number), numbers))
    return {info.version: info for info in infos if info is not None}


def check_staged(store: Storage, model: str, version: int, sha: str, source_uri: str) -> bool:
    """True if the version is staged with manifest ``sha``; AlreadyExists if with another."""
    info = staged_info(store, model, version)
    if info is None:
        return False
    if info.manifest_sha256 != sha:
        raise AlreadyExists(
            f"version {version} of model {model!r} is staged with manifest"
            f" {info.manifest_sha256} (from {info.source_uri}); a re-publish with manifest"
            f" {sha} (from {source_uri}) is rejected: publish it as a new version"
        )
    return True


def claim(store: Storage, model: str, version: int, sha: str, source_uri: str) -> None:
    """Claims ``version`` for manifest ``sha`` (or finds it claimed for it already);
    AlreadyExists if another manifest holds the claim."""
    key = f"{model}/{STAGING_DIR}/{version}"
    document = json.dumps({"manifestSha256": sha, "sourceUri": source_uri}).encode()
    if store.create_if_absent(key, document):
        return
    try:
        held = json.loads(store.read_bytes(key, MAX_MARKER_BYTES))["manifestSha256"]
    except (ValueError, KeyError, TypeError):
        raise DataLoss(f"staging claim {store.join(key)} is not a rollway claim") from None
    if held != sha:
        raise AlreadyExists(
            f"version {version} of model {model!r} is being (or was) staged with manifest"
            f" {held}; a re-publish with manifest {sha} (from {source_uri}) is rejected:"
            " publish it as a new version"
        )


def read_or_none(storage: Storage, key: str, limit: int) -> bytes | None:
    try:
        return storage.read_bytes(key, limit)
    except NotFound:
        return None


def marker_bytes(info: StagedInfo) -> bytes:
    document: dict[str, Any] = {
        "version": str(info.version),
        "manifestSha256": info.manifest_sha256,
        "sourceUri": info.source_uri,
        "stagedAt": info.staged_at.isoformat(timespec="milliseconds"),
    }
    if info.source_sha256 is not None:
        document["sourceSha256"] = info.source_sha256
    return (json.dumps(document, indent=2) + "\n").encode()


def parse_marker(data: bytes, version: int, where: str) -> StagedInfo:
    try:
        document = json.loads(data.decode("utf-8"))
        optional = document.get("sourceSha256")
        info = StagedInfo(
            version=int(document["version"]),
            manifest_sha256=str(document["manifestSha256"]),
            source_uri=str(document["sourceUri"]),
            staged_at=datetime.datetime.fromisoformat(document["stagedAt"]),
            source_sha256=None if optional is None else str(optional),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataLoss(f"staged marker {where} is not a rollway marker: {err!r}") from None
    if info.version != version or len(info.manifest_sha256) != 64 or info.staged_at.tzinfo is None:
        raise DataLoss(f"staged marker {where} does not describe version {version}")
    return info
