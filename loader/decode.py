"""Decode, the loader's first stage: one delivery -> what to do about it.

A pure policy: no I/O, no clock, and it never raises on its input. A delivery
is a Kafka record (``decode_record``) or a Knative KafkaSource HTTP POST
(``decode_http``, which turns it into the same record). The result is a
non-empty list of decisions, one per object event the delivery carries (only
a MinIO notification carries several):

- ``Published``: a version was published at ``version_uri``, below one of
  ``DecodeConfig.roots``. Nothing about its content is trusted yet: verify it.
- ``Ignored``: well formed, but not for the loader (another file, a removal,
  another rollway event). Commit and move on.
- ``Rejected``: malformed, unknown or hostile; ``reason`` names the problem.
  Retrying cannot help: dead-letter it (VersionRejected).

Record values understood:

1. rollway's ``ModelPublished`` (proto3 JSON, strict: unknown fields are
   rejected) with header ``ce_type: dev.rollway.model.published.v1``, or with no
   ``ce_type`` at all. Its record key, if any, must be the model name, and its
   ``version_uri`` must end in the version (``.../7``) or a version archive
   (``.../7.tar.gz``, ``.tgz``, ``.tar``, ``.zip``; ``manifest_sha256`` then is the
   archive's digest, and without one the digest file ``<archive>.sha256`` is).
2. MinIO bucket notifications (``loader.decode_minio``): the manifest of
   ``s3://<bucket>/<dirs>/<model>/<version>/`` or the digest file of the archive
   ``s3://<bucket>/<dirs>/<model>/<version>.<ext>`` was created.

Every URI must be absolute, of a scheme in the storage registry, free of
credentials, query, fragment, ``%``, ``\\``, control characters and empty,
``.`` or ``..`` segments, and equal to or below a root, segment by segment
(``s3://b/models-evil`` is not below ``s3://b/models``). Model names are
``[A-Za-z0-9._-]{1,255}`` but not ``.`` or ``..``; versions are digits up to
int64. A value over ``MAX_EVENT_BYTES`` is rejected before it is parsed. With no
roots configured every delivery is rejected (fail closed).

A ModelPublished CloudEvent is decoded by the cloudevents SDK
(``loader.events.from_kafka_headers``, or ``from_http_headers`` for one that a
KafkaSource forwards as itself), which checks its attributes as CloudEvents
1.0 says; this module adds rollway's rules on top (a printable id of at most
``MAX_ID_CHARS``, JSON data) and parses the data itself, strictly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cloudevents.core.base import BaseCloudEvent

from loader import display, proto_json
from loader.decisions import Archive, Decision, Ignored, Published, Rejected
from loader.decode_minio import (
    DIGEST_SUFFIX,
    ObjectEvent,
    archive_of,
    is_notification,
    object_events,
)
from loader.errors import ConfigError, InvalidArgument
from loader.events import (
    EVENT_TYPES,
    KAFKASOURCE_TYPE,
    MODEL_PUBLISHED,
    from_http_headers,
    from_kafka_headers,
    header,
    kafkasource_record,
)
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from loader.storage import BACKENDS, scheme_of
from loader.versions import parse_version

# The decisions (defined in loader.decisions) are part of this module's API.
__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_ID_CHARS",
    "Archive",
    "Decision",
    "DecodeConfig",
    "Ignored",
    "IncomingRecord",
    "Published",
    "Rejected",
    "decode_http",
    "decode_record",
]

MAX_EVENT_BYTES = 1024 * 1024  # for the value, and again for key plus headers
MAX_ID_CHARS = display.MAX_NAME_CHARS  # longer or unprintable ids are refused
_OTHER_ROLLWAY_TYPES = frozenset(EVENT_TYPES.values()) - {MODEL_PUBLISHED}
_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FORBIDDEN = re.compile(r"[\\%?#]")


@dataclass(frozen=True)
class IncomingRecord:
    """One delivery as a Kafka record. ``value`` None is a tombstone. ``origin``
    replaces ``topic/partition/offset`` as provenance when those are unknown."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    topic: str = ""
    partition: int = -1
    offset: int = -1
    origin: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", tuple(self.headers))  # hashable

    @property
    def source_record(self) -> str:
        if self.origin:
            return self.origin
        return f"{self.topic}/{self.partition}/{self.offset}" if self.topic else ""


@dataclass(frozen=True)
class _Location:
    scheme: str  # registry key, with "" (a plain path) read as "file"
    host: str
    segments: tuple[str, ...]

    def within(self, root: _Location) -> bool:
        depth = len(root.segments)
        return (self.scheme, self.host) == (root.scheme, root.host) and (
            self.segments[:depth] == root.segments
        )


@dataclass(frozen=True)
class DecodeConfig:
    """``roots``: store URIs that versions may be published under. ConfigError
    names a root that is not a valid URI; an empty tuple rejects everything."""

    roots: tuple[str, ...]
    _locations: tuple[_Location, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", tuple(self.roots))
        locations = []
        for index, root in enumerate(self.roots):
            location = _locate(root)
            if isinstance(location, str):
                raise ConfigError(f"DecodeConfig.roots[{index}] {display.uri(root)!r}: {location}")
            locations.append(location)
        object.__setattr__(self, "_locations", tuple(locations))


def decode_record(record: IncomingRecord, config: DecodeConfig) -> list[Decision]:
    return _decode(record, config, lambda: from_kafka_headers(record.headers, record.value or b""))


def _decode(
    record: IncomingRecord, config: DecodeConfig, read_event: Callable[[], BaseCloudEvent]
) -> list[Decision]:
    """``decode_record``, with ``read_event`` decoding the record's CloudEvent by
    the binding it came in (called only after the size checks)."""
    source = display.name(record.source_record)
    if not config.roots:
        reason = "no store roots are configured (DecodeConfig.roots is empty): rejecting all"
        return [Rejected(reason, source_record=source)]
    if record.value is None:
        return [Ignored("a tombstone (a record with no value)")]
    if len(record.value) > MAX_EVENT_BYTES:
        reason = f"event value is {len(record.value)} bytes, over MAX_EVENT_BYTES"
        return [Rejected(f"{reason} ({MAX_EVENT_BYTES}); not parsed", source_record=source)]
    size = len(record.key or b"") + sum(len(n) + len(v or b"") for n, v in record.headers)
    if size > MAX_EVENT_BYTES:
        reason = f"record key and headers are {size} bytes, over MAX_EVENT_BYTES"
        return [Rejected(reason, source_record=source)]
    ce_type = _header(record, "ce_type")
    if ce_type is not None:
        return [_cloud_event(ce_type, record, config, source, read_event)]
    document = _parse_json(record.value)
    if isinstance(document, str):
        return [Rejected(f"event {document}", source_record=source)]
    if is_notification(document):
        return [_from_minio(e, config, source) for e in object_events(document, _key(record))]
    decision = _from_model_published(document, record, config, source, "")
    if isinstance(decision, Rejected):
        reason = "event has no ce_type, is no MinIO notification, and as a ModelPublished: "
        return [dataclasses.replace(decision, reason=reason + decision.reason)]
    return [decision]


def decode_http(headers: Mapping[str, str], body: bytes, config: DecodeConfig) -> list[Decision]:
    """A binary-mode CloudEvent POSTed by a KafkaSource: a plain record wrapped as
    ``dev.knative.kafka.event``, or a record that was a CloudEvent, as itself.

    Either way the SDK's HTTP binding decodes the CloudEvent; a wrapped record
    is then taken out of it (``events.kafkasource_record``) and decoded as
    Kafka records are. A record that comes as itself gets the checks of
    ``decode_record`` (sizes, type) before the SDK reads it."""
    lower = {str(name).lower(): str(value) for name, value in headers.items()}
    if "ce-type" not in lower:
        return [Rejected("HTTP delivery has no ce-type header (a binary-mode CloudEvent)")]
    size = sum(len(name) + len(value) for name, value in lower.items())
    if size > MAX_EVENT_BYTES:
        return [Rejected(f"HTTP headers are {size} bytes, over MAX_EVENT_BYTES; not parsed")]
    if lower["ce-type"] != KAFKASOURCE_TYPE:
        # Its ce_* twin, for decode_record's checks and provenance; the SDK's
        # HTTP binding decodes the event itself.
        pairs = [("ce_" + n[3:], value) for n, value in lower.items() if n.startswith("ce-")]
        if "content-type" in lower:
            pairs.append(("content-type", lower["content-type"]))
        twin = IncomingRecord(None, body, [(name, _bytes(value)) for name, value in pairs])
        return _decode(twin, config, lambda: from_http_headers(lower, body))
    try:
        delivery = from_http_headers(lower, body)
    except InvalidArgument as err:
        return [Rejected(f"KafkaSource delivery is {err.message}")]
    key, record_headers = kafkasource_record(delivery)
    record = IncomingRecord(key, body, record_headers, origin=delivery.get_id())
    return decode_record(record, config)


def _cloud_event(
    ce_type: str,
    record: IncomingRecord,
    config: DecodeConfig,
    source: str,
    read_event: Callable[[], BaseCloudEvent],
) -> Decision:
    if ce_type in _OTHER_ROLLWAY_TYPES:
        return Ignored(f"a {ce_type} event is not for the loader")
    if ce_type != MODEL_PUBLISHED:
        return Rejected(
            f"unknown CloudEvent type (ce_type) {display.quoted(ce_type)}", source_record=source
        )
    try:
        event = read_event()  # specversion 1.0, an id, a source, valid attributes
    except InvalidArgument as err:
        raw_id = _header(record, "ce_id") or ""
        return Rejected(err.message, source_record=source, event_id=display.name(raw_id))
    event_id = event.get_id()
    content_type = (event.get_datacontenttype() or "application/json").split(";")[0]
    problem = ""
    if len(event_id) > MAX_ID_CHARS or not event_id.isprintable():
        problem = f"CloudEvent ce_id {display.quoted(event_id)} is too long or not printable"
    elif content_type.strip().lower() != "application/json":
        problem = f"content-type {display.quoted(content_type)} is not application/json"
    document = "" if problem else _parse_json(record.value or b"")
    if isinstance(document, str):
        reason = problem or f"ModelPublished event {document}"
        return Rejected(reason, source_record=source, event_id=display.name(event_id))
    return _from_model_published(document, record, config, source, event_id)


def _from_model_published(
    document: dict[str, Any], record: IncomingRecord, config: DecodeConfig, source: str, ce_id: str
) -> Decision:
    try:
        event = proto_json.to_message(document, ModelPublished())
    except proto_json.ProtoJsonError as err:
        reason = f"ModelPublished {err}"
        return Rejected(reason, source_record=source, event_id=display.name(ce_id))
    event_id = ce_id or "sha256:" + hashlib.sha256(record.value or b"").hexdigest()
    sha, uri = event.manifest_sha256, event.version_uri.removesuffix("/")
    problem = _model_published_problem(event, _key(record), config)
    if problem is not None:
        return Rejected(
            problem,
            model=event.model if _name_problem("model", event.model) is None else "",
            version=max(event.version, -1),
            version_uri=display.uri(uri) if len(uri) <= MAX_ID_CHARS and uri.isprintable() else "",
            source_record=source,
            event_id=display.name(event_id),
        )
    packed = archive_of(uri.rpartition("/")[2])
    if packed is None:
        return Published(event.model, event.version, uri, sha or None, event_id, source)
    archive = Archive(uri, None if sha else uri + DIGEST_SUFFIX, sha or None, packed[1])
    return Published(event.model, event.version, uri, None, event_id, source, archive)


def _model_published_problem(
    event: ModelPublished, key: str | None, config: DecodeConfig
) -> str | None:
    if not event.model or not event.version_uri:
        return "ModelPublished needs a model and a version_uri"
    if (problem := _name_problem("model", event.model)) is not None:
        return problem
    if event.version < 0:
        return f"version {event.version} is negative"
    if key is not None and key != event.model:
        return f"record key {display.quoted(key)} is not the model name {event.model!r}"
    if event.manifest_sha256 and not _SHA256.fullmatch(event.manifest_sha256):
        digest = display.quoted(event.manifest_sha256)
        return f"manifest_sha256 {digest} is not 64 lowercase hex digits"
    if min(event.total_bytes, event.file_count) < 0:
        return "total_bytes or file_count is negative"
    if (problem := _uri_problem(event.version_uri, config)) is not None:
        return problem
    leaf = event.version_uri.removesuffix("/").rpartition("/")[2]
    stem, _ = archive_of(leaf) or (leaf, None)
    if parse_version(stem) != event.version:
        return f"version_uri ends in {display.quoted(leaf)}, not in version {event.version}"
    return None


def _from_minio(
    event: ObjectEvent | Ignored | Rejected, config: DecodeConfig, source: str
) -> Decision:
    if isinstance(event, Ignored):
        return event
    if isinstance(event, Rejected):
        return dataclasses.replace(event, source_record=source)
    uri = f"s3://{event.bucket}/{event.path}"
    version = parse_version(event.version)
    problem = _name_problem("bucket", event.bucket) or _name_problem("model", event.model)
    if event.key.startswith("/"):
        problem = "the object key is absolute (starts with '/')"
    elif problem is None and version is None:
        limit = (
            "over 2**63-1" if event.version.isascii() and event.version.isdigit() else "not digits"
        )
        problem = f"version {display.quoted(event.version)} is {limit}"
    problem = problem or _uri_problem(uri, config)
    if problem is not None or version is None:
        return Rejected(
            f"object {display.quoted(f's3://{event.bucket}/{event.key}')}: {problem}",
            model=event.model if _name_problem("model", event.model) is None else "",
            version=-1 if version is None else version,
            source_record=source,
            event_id=display.name(event.event_id),
        )
    archive = None
    if event.archive_format is not None:
        archive = Archive(uri, f"s3://{event.bucket}/{event.key}", None, event.archive_format)
    return Published(event.model, version, uri, None, display.name(event.event_id), source, archive)


def _locate(uri: str) -> _Location | str:
    """``uri`` as scheme, host and path segments, or why it cannot be accepted."""
    if not uri.isprintable():
        return "URI holds a NUL, control or other unprintable character"
    if (bad := _FORBIDDEN.search(uri)) is not None:
        return f"{bad.group()!r} is not allowed in a URI (nor '\\', '%', '?', '#')"
    try:
        scheme, parts = scheme_of(uri), urlsplit(uri)
        _ = parts.port  # raises on a port that is not a number
    except InvalidArgument as err:
        return err.message
    except ValueError as err:
        return f"URI does not parse: {err}"
    if scheme not in BACKENDS:
        return f"URI scheme {display.quoted(scheme)} is not in the storage registry"
    if scheme:
        host, path = parts.netloc.lower(), parts.path
        if "@" in host:
            return "URI holds credentials (user info)"
        if scheme == "file" and host in ("", "localhost"):
            host = ""
        elif not host:
            return f"{scheme}:// URI names no bucket or host"
    else:
        host, path = "", uri
    if not path.startswith("/") and (path or not scheme):
        return "path is not absolute"
    path = path[1:].removesuffix("/")
    segments = tuple(path.split("/")) if path else ()
    if any(part in ("", ".", "..") for part in segments):
        return "path has an empty, '.' or '..' segment"
    return _Location(scheme or "file", host, segments)


def _uri_problem(uri: str, config: DecodeConfig) -> str | None:
    location = _locate(uri)
    if isinstance(location, str):
        return f"version_uri {display.quoted(display.uri(uri))}: {location}"
    if not location.segments:
        return f"version_uri {display.quoted(display.uri(uri))} names no version"
    if not any(location.within(root) for root in config._locations):
        shown = display.quoted(display.uri(uri))
        return f"version_uri {shown} is outside the roots {list(config.roots)}"
    return None


def _name_problem(what: str, name: str) -> str | None:
    if _NAME.fullmatch(name) and name not in (".", ".."):
        return None
    return f"{what} name {display.quoted(name)} is not 1-255 of [A-Za-z0-9._-] (nor '.' or '..')"


def _parse_json(value: bytes) -> dict[str, Any] | str:
    """The JSON object in ``value``, or why it is not one (as "is not ...")."""
    try:
        return proto_json.load_object(value)
    except proto_json.ProtoJsonError as err:
        return str(err)


def _header(record: IncomingRecord, name: str) -> str | None:
    return header(list(record.headers), name)  # the last one wins


def _key(record: IncomingRecord) -> str | None:
    return None if record.key is None else record.key.decode("utf-8", "replace")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "replace")
