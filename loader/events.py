"""rollway's events as CloudEvents on Kafka (binary content mode).

A record's value is the proto3 JSON of the message; its CloudEvent attributes
travel as ``ce_*`` headers and its key is the model name, so every event of a
model lands on one partition, in order. This is the format a Knative
KafkaSource forwards unchanged, and what plain Kafka consumers can read with
no CloudEvents library. Encoding and decoding are pure functions.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format
from google.protobuf.message import Message

from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.schemas.rollway.v1.events_pb2 import ModelPublished, VersionRejected, VersionStaged

PUBLISH_TOPIC = "model-publish"
ASSIGNMENTS_TOPIC = "model-assignments"  # compacted, keyed by model
DEAD_LETTER_TOPIC = "model-publish-dlq"
CONTENT_TYPE = "application/json"

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
    name = type(message).__name__
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgument(f"{name} event is not JSON: {err}") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{name} event is not a JSON object")
    try:
        json_format.ParseDict(document, message)
    except json_format.ParseError as err:
        raise InvalidArgument(f"{name} event does not match its schema: {err}") from None
    return message


def header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    """A Kafka header's value as text (the last one wins, as in CloudEvents)."""
    value = None
    for key, raw in headers:
        if key == name:
            value = raw.decode("utf-8", "replace")
    return value
