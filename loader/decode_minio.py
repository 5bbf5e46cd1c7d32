"""MinIO bucket notifications, read into the object events the loader acts on.

This module knows the notification format and the storage layout; it does not
judge names, paths or roots (``loader.decode`` does). A notification is the
JSON value MinIO publishes to Kafka for ``mc event add ... --event put``:
``{"EventName": ..., "Key": "<bucket>/<key>", "Records": [...]}``, with the
record key ``<bucket>/<key>``. ``Records[i].s3.object.key`` is URL-encoded
(``%2F`` for ``/``, ``+`` for a space); the top-level ``Key`` is not.

``object_events`` gives one entry per Record, in order (the last two are
``loader.decisions``' types, as ``loader.decode`` returns them):

- ``ObjectEvent``: an ``s3:ObjectCreated:*`` on ``<dirs>/<model>/<version>/rollway-manifest.json``
  (a version directory is complete) or on ``<dirs>/<model>/<version>.<ext>.sha256``
  (an archive is complete: its digest file is written after it);
- ``Ignored``: well formed, but no such object (another file, a removal). Decided
  from the event name and the key's last segment alone, because most records
  of a publish are for the version's other files;
- ``Rejected``: a record the loader would act on, but cannot read (only its
  ``reason`` is set; ``loader.decode`` adds the source record).

When some record is acted on, the record key and ``Key`` must each name one of
the notification's objects as ``<bucket>/<key>``; if not, the whole
notification is one ``Rejected``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from loader import display
from loader.decisions import ArchiveFormat, Ignored, Rejected
from loader.manifest import MANIFEST_NAME

# Archive name suffix -> format. A digest file is "<archive name>.sha256".
ARCHIVE_SUFFIXES: tuple[tuple[str, ArchiveFormat], ...] = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar", "tar"),
    (".zip", "zip"),
)
DIGEST_SUFFIX = ".sha256"
CREATED = "s3:ObjectCreated:"


@dataclass(frozen=True)
class ObjectEvent:
    """A manifest or archive digest was created. ``path`` is the bucket-relative
    version directory (a manifest) or archive (a digest); ``version`` is the
    raw name (digits, unchecked for size)."""

    bucket: str
    key: str  # URL-decoded object key
    model: str
    version: str
    path: str
    archive_format: ArchiveFormat | None
    event_id: str  # "<bucket>/<key>@<sequencer or eTag>"


def is_notification(document: dict[str, Any]) -> bool:
    return "Records" in document or "EventName" in document


def archive_of(name: str) -> tuple[str, ArchiveFormat] | None:
    """(stem, format) if ``name`` is an archive's name, e.g. ``7.tar.gz`` -> ("7", "tar.gz")."""
    for suffix, archive_format in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], archive_format
    return None


def object_events(
    document: dict[str, Any], record_key: str | None
) -> list[ObjectEvent | Ignored | Rejected]:
    records = document.get("Records")
    if not isinstance(records, list) or not records:
        return [Rejected("MinIO notification has no Records list")]
    events = [_event(index, record) for index, record in enumerate(records)]
    if any(isinstance(event, ObjectEvent) for event in events):
        problem = _key_problem(document, records, record_key)
        if problem:
            return [Rejected(problem)]
    return events


def _event(index: int, record: Any) -> ObjectEvent | Ignored | Rejected:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        return Rejected(f"{where} is not a JSON object")
    name = record.get("eventName")
    if not isinstance(name, str):
        return Rejected(f"{where} has no eventName")
    if not name.startswith(CREATED):
        return Ignored(f"{display.quoted(name)} is not an object creation")
    s3 = _object(record.get("s3"))
    raw_key = _object(s3.get("object")).get("key")
    if not isinstance(raw_key, str):
        return Rejected(f"{where} has no s3.object.key")
    key = unquote_plus(raw_key)
    parent, _, leaf = key.rpartition("/")
    if leaf == MANIFEST_NAME:
        version_dir, _, version = parent.rpartition("/")
        model = version_dir.rpartition("/")[2]
        path, archive_format = parent, None
    else:
        archive = archive_of(leaf[: -len(DIGEST_SUFFIX)]) if leaf.endswith(DIGEST_SUFFIX) else None
        if archive is None:
            return Ignored(f"{display.quoted(key)} is not a version manifest or an archive digest")
        version, archive_format = archive
        if not (version.isascii() and version.isdigit()):
            # ".sha256" is a common name; only "<version>.<ext>.sha256" is ours.
            return Ignored(f"{display.quoted(key)} is not the digest of a version archive")
        model, path = parent.rpartition("/")[2], key[: -len(DIGEST_SUFFIX)]
    bucket = _object(s3.get("bucket")).get("name")
    if not isinstance(bucket, str) or not bucket:
        return Rejected(f"{where} has no s3.bucket.name")
    if not version or not model:
        return Rejected(
            f"object key {display.quoted(key)} names no <model>/<version> in the bucket"
        )
    obj = _object(s3.get("object"))
    tag = obj.get("sequencer") or obj.get("eTag")
    event_id = f"{bucket}/{key}@{tag}" if isinstance(tag, str) else f"{bucket}/{key}"
    return ObjectEvent(bucket, key, model, version, path, archive_format, event_id)


def _key_problem(document: dict[str, Any], records: list[Any], record_key: str | None) -> str:
    names = set()
    for record in records:
        s3 = _object(_object(record).get("s3"))
        bucket, key = _object(s3.get("bucket")).get("name"), _object(s3.get("object")).get("key")
        if isinstance(bucket, str) and isinstance(key, str):
            names.add(f"{bucket}/{unquote_plus(key)}")
    top = document.get("Key")
    if top is not None and not isinstance(top, str):
        return "MinIO notification Key is not a string"
    if record_key is not None and top is not None and record_key != top:
        key, notified = display.quoted(record_key), display.quoted(top)
        return f"record key {key} is not the notification's Key {notified}"
    for label, value in (("record key", record_key), ("notification Key", top)):
        if value is not None and value not in names:
            shown = display.quoted(value)
            return f"{label} {shown} does not name any of its Records as <bucket>/<key>"
    return ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
