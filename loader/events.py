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

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.v1.event import CloudEvent
from google.protobuf import json_format

from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.events_pb2 import ModelPublished

PUBLISH_TOPIC = "model-publish"
MODEL_PUBLISHED = "dev.rollway.model.published.v1"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class KafkaRecord:
    """What a producer sends: key, value and headers, as kafka-python takes them."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_model_published(event: ModelPublished, source: str) -> KafkaRecord:
    """``source`` is the CloudEvent source, e.g. ``//rollway/publish/<host>``."""
    cloud_event = CloudEvent(
        attributes={
            "type": MODEL_PUBLISHED,
            "source": source,
            "subject": f"{event.model}/{event.version}",
            "time": event.published_at.ToDatetime(tzinfo=datetime.timezone.utc),
            "datacontenttype": CONTENT_TYPE,
        },
        data=json_format.MessageToDict(event),
    )
    message = ce_kafka.to_binary_event(cloud_event)
    return KafkaRecord(
        key=event.model.encode(),
        value=message.value,
        headers=sorted(message.headers.items()),
    )


def decode_model_published(value: bytes) -> ModelPublished:
    """The ModelPublished in a record value; InvalidArgument names what is wrong."""
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgument(f"ModelPublished event is not JSON: {err}") from None
    event = ModelPublished()
    try:
        json_format.ParseDict(document, event)
    except json_format.ParseError as err:
        raise InvalidArgument(f"ModelPublished event does not match its schema: {err}") from None
    if not event.model or not event.version_uri or event.version < 0:
        raise InvalidArgument(
            "ModelPublished event needs a model, a version >= 0 and a version_uri"
        )
    return event
