"""rollway's events as CloudEvents on Kafka (binary content mode).

A record's value is the proto3 JSON of the message; its CloudEvent attributes
travel as ``ce_*`` headers and its key is the model name, so every event of a
model lands on one partition, in order. This is the format a Knative
KafkaSource forwards unchanged, and what plain Kafka consumers can read with
no CloudEvents library. Encoding and decoding are pure functions.

CloudEvents are encoded and decoded by the cloudevents SDK, in both its Kafka
binding (``ce_*`` headers) and its HTTP binding (``ce-*`` headers,
percent-decoded as that binding says). Kept by hand is only what the SDK
cannot know: how a KafkaSource wraps a plain record (``kafkasource_record``).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import (
    BaseCloudEventException,
    CloudEventValidationError,
    MissingRequiredAttributeError,
)
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format
from google.protobuf.message import Message

from loader import display, proto_json
from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.schemas.rollway.v1.events_pb2 import ModelPublished, VersionRejected, VersionStaged

PUBLISH_TOPIC = "model-publish"
ASSIGNMENTS_TOPIC = "model-assignments"  # compacted, keyed by model
DEAD_LETTER_TOPIC = "model-publish-dlq"
CONTENT_TYPE = "application/json"
KAFKASOURCE_TYPE = "dev.knative.kafka.event"  # a plain record, wrapped by a KafkaSource

MODEL_PUBLISHED = "dev.rollway.model.published.v1"
VERSION_STAGED = "dev.rollway.version.staged.v1"
VERSION_REJECTED = "dev.rollway.version.rejected.v1"
ASSIGNMENT_CHANGED = "dev.rollway.assignment.changed.v1"

# CloudEvent type of each message.
EVENT_TYPES: dict[type[Message], str] = {
    ModelPublished: MODEL_PUBLISHED,
    VersionStaged: VERSION_STAGED,
    VersionRejected: VERSION_REJECTED,
    AssignmentChanged: ASSIGNMENT_CHANGED,
}

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class KafkaRecord:
    """What a producer sends: key, value and headers, as kafka-python takes them."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(
    message: Message, source: str, subject: str = "", time: datetime.datetime | None = None
) -> KafkaRecord:
    """``message`` (one of EVENT_TYPES) as a binary-mode CloudEvent keyed by its
    ``model``. ``source`` is the CloudEvent source, e.g. ``//rollway/loader/<host>``."""
    model: str = getattr(message, "model", "")
    attributes: dict[str, Any] = {
        "type": EVENT_TYPES[type(message)],
        "source": source,
        "datacontenttype": CONTENT_TYPE,
        "time": time or datetime.datetime.now(datetime.timezone.utc),
    }
    if subject:
        attributes["subject"] = subject
    cloud_event = CloudEvent(attributes=attributes, data=json_format.MessageToDict(message))
    record = ce_kafka.to_binary_event(cloud_event)
    return KafkaRecord(model.encode(), record.value, sorted(record.headers.items()))


def encode_model_published(event: ModelPublished, source: str) -> KafkaRecord:
    return encode(
        event,
        source,
        subject=f"{event.model}/{event.version}",
        time=event.published_at.ToDatetime(tzinfo=datetime.timezone.utc),
    )


def decode_data(value: bytes, message: M) -> M:
    """Fills ``message`` from a record value (proto3 JSON); InvalidArgument names the problem."""
    try:
        return proto_json.decode(value, message)
    except proto_json.ProtoJsonError as err:
        raise InvalidArgument(f"{type(message).__name__} event {err}") from None


def decode_assignment_record(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> AssignmentChanged | None:
    """An AssignmentChanged from a record of the assignments topic, as the
    rollout and following replicas read them; None when the record is not one
    (a tombstone, another event type). A binary-mode CloudEvent (a
    ``ce_specversion`` header) is decoded and validated by the SDK; a record
    with no CloudEvent headers, or only ``ce_type`` (which older producers
    sent), is the bare proto3 JSON value. InvalidArgument names what is wrong."""
    if value is None:
        return None
    listed = [(name, raw or b"") for name, raw in headers]
    ce_type = header(listed, "ce_type")
    if ce_type is not None and ce_type != ASSIGNMENT_CHANGED:
        return None
    if header(listed, "ce_specversion") is not None:
        from_kafka_headers(headers, value)
    return decode_data(value, AssignmentChanged())


def header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    """A Kafka header's value as text (the last one wins, as in CloudEvents)."""
    value = None
    for key, raw in headers:
        if key == name:
            value = raw.decode("utf-8", "replace")
    return value


# -- decoding with the SDK ------------------------------------------------------------

# What the SDK raises on a delivery it cannot read: its validation errors, and
# UnicodeDecodeError and dateutil's ParserError (ValueError) from header values.
_SDK_ERRORS = (BaseCloudEventException, ValueError, TypeError, OverflowError)
# A header is handed to the SDK only if it can name an attribute (CloudEvents
# 1.0: lowercase letters and digits) or is the content type. Others, such as a
# stray "ce-content-type", were never read and stay ignored, as before.
_ATTRIBUTE = re.compile(r"[a-z0-9]+")
_KAFKAHEADER = "kafkaheader"  # extension prefix of a wrapped record's headers
# KafkaSource squashes Kafka header names ("ce_type" -> "cetype"); undo it for ours.
_SQUASHED = {
    **{f"ce{a}": f"ce_{a}" for a in ("specversion", "id", "source", "type", "subject", "time")},
    "contenttype": "content-type",
}


class _RawData(JSONFormat):
    """The SDK's JSON format, except that binary-mode data stays the raw bytes:
    rollway parses values itself, more strictly than the SDK (duplicate keys,
    NaN, nesting depth: ``loader.decode``), and only after its size checks."""

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes:
        return body


_RAW_DATA = _RawData()


def _strict_v1(attributes: dict[str, Any], data: Any) -> BaseCloudEvent:
    """The SDK's CloudEvents 1.0 event, without its defaults for a missing
    specversion or id: a delivery must carry both (a made-up id would make
    every redelivery a new event)."""
    for name in ("specversion", "id"):
        if name not in attributes:
            raise MissingRequiredAttributeError(name)
    return CloudEvent(attributes, data)


def from_kafka_headers(headers: Sequence[tuple[str, bytes | None]], value: bytes) -> BaseCloudEvent:
    """The binary-mode CloudEvent 1.0 of a Kafka record, decoded and validated by
    the SDK; its data is ``value`` unparsed. Header names count as they are
    (like ``header``) and the last of a name wins. Only attribute headers go to
    the SDK (``_ATTRIBUTE``), since it decodes every header it is given as
    UTF-8. Raises InvalidArgument naming the attribute as its header; never
    anything else."""
    wanted = {name: raw or b"" for name, raw in headers if _is_attribute(name, ce_kafka.CE_PREFIX)}
    # The record key is the caller's to judge, not a partitionkey extension.
    message = ce_kafka.KafkaMessage(headers=wanted, key=None, value=value)
    try:
        return ce_kafka.from_binary(message, _RAW_DATA, _strict_v1)
    except _SDK_ERRORS as err:
        raise InvalidArgument(_problem(err, ce_kafka.CE_PREFIX)) from None


def from_http_headers(headers: Mapping[str, str], body: bytes) -> BaseCloudEvent:
    """The binary-mode CloudEvent 1.0 of an HTTP request (``ce-*`` headers,
    percent-decoded; ``content-type``), decoded and validated by the SDK; its
    data is ``body`` unparsed. Raises InvalidArgument naming the attribute as
    its header; never anything else."""
    wanted = {
        name: value
        for name, value in headers.items()
        if _is_attribute(name.lower(), ce_http.CE_PREFIX)
    }
    message = ce_http.HTTPMessage(headers=wanted, body=body)
    try:
        return ce_http.from_binary(message, _RAW_DATA, _strict_v1)
    except _SDK_ERRORS as err:
        raise InvalidArgument(_problem(err, ce_http.CE_PREFIX)) from None


def kafkasource_record(delivery: BaseCloudEvent) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The record a KafkaSource wrapped as ``dev.knative.kafka.event``: its key
    (the ``key`` extension, else ``partitionkey``) and its headers, which come
    as ``kafkaheader<name>`` extensions with the name lowercased and stripped of
    all but letters and digits; ``_SQUASHED`` gives our CloudEvent headers their
    names back, and the delivery's content type is the record's. The SDK knows
    nothing of this convention: it is Knative's."""
    headers = []
    for name, value in delivery.get_attributes().items():
        if name.startswith(_KAFKAHEADER):
            squashed = name[len(_KAFKAHEADER) :]
            headers.append((_SQUASHED.get(squashed, squashed), _bytes(str(value))))
    content_type = delivery.get_datacontenttype()
    if content_type is not None:  # the delivery's, which is the record's: it wins
        headers.append(("content-type", _bytes(content_type)))
    key = delivery.get_extension("key")
    if key is None:
        key = delivery.get_extension("partitionkey")
    return (None if key is None else _bytes(str(key))), headers


def _is_attribute(name: str, prefix: str) -> bool:
    if name == "content-type":
        return True
    return name.startswith(prefix) and _ATTRIBUTE.fullmatch(name[len(prefix) :]) is not None


def _problem(err: Exception, prefix: str) -> str:
    if isinstance(err, CloudEventValidationError):
        parts = [
            f"{prefix}{name}: {', '.join(str(e) for e in errors)}"
            for name, errors in err.errors.items()
        ]
    elif isinstance(err, MissingRequiredAttributeError):
        parts = [f"{prefix}{err.attribute_name}: {err}"]
    else:
        parts = [f"{type(err).__name__}: {err}"]
    text = "; ".join(parts)
    # Attribute names and values come from the sender: quoted unless plain.
    shown_text = text if len(text) <= 300 and text.isprintable() else display.quoted(text, 300)
    return f"not a valid CloudEvent ({shown_text})"


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "replace")
