"""CloudEvents decoded by the SDK (loader.events.from_kafka_headers and
from_http_headers) and the one convention kept by hand, the KafkaSource's
wrapping of a plain record (kafkasource_record): each binding, structured mode
(refused, as before), and what both the loader (loader.decode) and the rollout
(functions.rollout.handler) make of them. Pure: no servers."""

from __future__ import annotations

import contextlib
import datetime
import json

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from functions import func_asgi
from functions.rollout import handler
from loader import events
from loader.decode import DecodeConfig, IncomingRecord, Published, Rejected, decode_http
from loader.decode import decode_record as decode_loader_record
from loader.errors import InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.schemas.rollway.v1.events_pb2 import ModelPublished

CONFIG = DecodeConfig(roots=("s3://models",))
PUBLISHED = events.encode_model_published(
    ModelPublished(model="mnist", version=7, version_uri="s3://models/mnist/7"), "//rollway/test"
)
HEADERS = dict(PUBLISHED.headers)
ASSIGNED = events.encode(AssignmentChanged(model="mnist", generation=3), "//rollway/test")
OUTER = {
    "ce-specversion": "1.0",
    "ce-id": "partition:0/offset:9",
    "ce-source": "/apis/v1/namespaces/models/kafkasources/model-publish#model-publish",
    "ce-type": events.KAFKASOURCE_TYPE,
    "ce-time": "2026-11-20T08:55:07.439Z",
}


def without(headers: dict[str, bytes], name: str) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in headers.items() if n != name]


def squashed(kafka_headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """How a KafkaSource passes a record's headers on: ce-kafkaheader<name
    lowercased, all but letters and digits removed>."""
    out = {}
    for name, value in kafka_headers:
        out["ce-kafkaheader" + "".join(c for c in name.lower() if c.isalnum())] = value.decode()
    return out


# -- the Kafka binding --------------------------------------------------------------


def test_a_binary_record_is_decoded_by_the_sdk_and_its_data_stays_raw() -> None:
    event = events.from_kafka_headers(PUBLISHED.headers, PUBLISHED.value)
    assert event.get_type() == events.MODEL_PUBLISHED
    assert event.get_source() == "//rollway/test"
    assert event.get_id() == HEADERS["ce_id"].decode()
    assert event.get_subject() == "mnist/7"
    assert event.get_time() == datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == PUBLISHED.value  # parsed by rollway, strictly, not by the SDK
    assert event.get_extension("partitionkey") is None  # the key is the caller's to judge


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (without(HEADERS, "ce_specversion"), "ce_specversion"),  # the SDK would default it
        (without(HEADERS, "ce_id"), "ce_id"),  # the SDK would make one up
        (without(HEADERS, "ce_source"), "ce_source"),
        ([*HEADERS.items(), ("ce_specversion", b"0.3")], "ce_specversion"),
        ([*HEADERS.items(), ("ce_time", b"yesterday")], "ValueError"),
        ([*HEADERS.items(), ("ce_id", b"\xff")], "UnicodeDecodeError"),
        ([*HEADERS.items(), ("ce_subject", b"")], "ce_subject"),
    ],
    ids=["no-specversion", "no-id", "no-source", "v0.3", "bad-time", "not-utf8", "empty-subject"],
)
def test_an_invalid_binary_record_names_its_header(
    headers: list[tuple[str, bytes]], named: str
) -> None:
    with pytest.raises(InvalidArgument, match="not a valid CloudEvent") as raised:
        events.from_kafka_headers(headers, PUBLISHED.value)
    assert named in raised.value.message


def test_headers_that_are_no_attribute_are_not_handed_to_the_sdk() -> None:
    extra = [("traceparent", b"\xff\xfe"), ("ce_content-type", b"x"), ("ce_x_y", b"z")]
    event = events.from_kafka_headers([*PUBLISHED.headers, *extra], PUBLISHED.value)
    assert event.get_id() == HEADERS["ce_id"].decode()


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(
        st.tuples(
            st.sampled_from(["ce_id", "ce_type", "ce_time", "ce_source", "ce_specversion"])
            | st.text(max_size=12),
            st.sampled_from([b"1.0", b"2026-11-20T00:00:00Z"]) | st.binary(max_size=20),
        ),
        max_size=8,
    )
)
def test_the_sdk_decoders_raise_nothing_but_invalid_argument(
    headers: list[tuple[str, bytes]],
) -> None:
    for decode in (
        lambda: events.from_kafka_headers(headers, b"{}"),
        lambda: events.from_http_headers(
            {name.replace("_", "-"): value.decode("latin-1") for name, value in headers}, b"{}"
        ),
    ):
        with contextlib.suppress(InvalidArgument):
            decode()


def test_the_loader_rejects_a_published_record_with_no_source() -> None:
    record = IncomingRecord(b"mnist", PUBLISHED.value, without(HEADERS, "ce_source"), "t", 0, 1)
    [decision] = decode_loader_record(record, CONFIG)
    assert isinstance(decision, Rejected)
    assert "ce_source" in decision.reason
    assert decision.event_id == HEADERS["ce_id"].decode()


# -- the HTTP binding ---------------------------------------------------------------


def forwarded(kafka: events.KafkaRecord) -> dict[str, str]:
    """A CloudEvent record that a KafkaSource POSTs as itself (HTTP binary mode)."""
    message = ce_http.to_binary_event(
        ce_kafka.from_binary(
            ce_kafka.KafkaMessage(dict(kafka.headers), None, kafka.value), JSONFormat()
        )
    )
    return message.headers


def test_an_http_delivery_is_decoded_by_the_sdk_percent_decoding_its_values() -> None:
    headers = {**forwarded(PUBLISHED), "ce-subject": "team%20a/mnist/7", "Content-Type": "a/b"}
    event = events.from_http_headers(headers, b"raw")
    assert event.get_subject() == "team a/mnist/7"
    assert event.get_datacontenttype() == "a/b"
    assert event.get_data() == b"raw"


def test_a_forwarded_cloud_event_is_published_by_the_loader() -> None:
    [decision] = decode_http(forwarded(PUBLISHED), PUBLISHED.value, CONFIG)
    assert isinstance(decision, Published), decision
    assert decision.event_id == HEADERS["ce_id"].decode()


def test_the_rollout_refuses_a_forwarded_cloud_event_the_sdk_refuses() -> None:
    headers = {**forwarded(ASSIGNED), "ce-time": "not a time"}
    decoded = handler.decode_http(headers, ASSIGNED.value)
    assert isinstance(decoded, handler.Skip)
    assert decoded.malformed
    assert "not a valid CloudEvent" in decoded.reason
    assert isinstance(handler.decode_http(forwarded(ASSIGNED), ASSIGNED.value), AssignmentChanged)


# -- structured mode: refused, as before --------------------------------------------


def structured(kafka: events.KafkaRecord) -> tuple[dict[str, str], bytes]:
    event = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(dict(kafka.headers), None, kafka.value), JSONFormat()
    )
    message = ce_http.to_structured_event(event)
    return message.headers, message.body


def test_a_structured_delivery_is_refused_with_415() -> None:
    headers, body = structured(PUBLISHED)
    assert json.loads(body)["type"] == events.MODEL_PUBLISHED
    refused = func_asgi.not_a_cloud_event(headers | {"ce-specversion": "1.0"})
    assert refused is not None
    assert refused[0] == 415


def test_a_structured_record_is_no_model_published() -> None:
    headers, body = structured(PUBLISHED)
    record = IncomingRecord(
        b"mnist", body, [(n, v.encode()) for n, v in headers.items()], "t", 0, 1
    )
    [decision] = decode_loader_record(record, CONFIG)
    assert isinstance(decision, Rejected)
    assert "no ce_type" in decision.reason
    with pytest.raises(
        InvalidArgument, match="ce_specversion"
    ):  # and the SDK's binary decoder agrees
        events.from_kafka_headers(record.headers, body)


# -- KafkaSource: a plain record wrapped, its header names squashed ----------------


def test_a_wrapped_record_comes_out_with_its_key_and_header_names() -> None:
    headers = {**OUTER, "ce-key": "mnist", **squashed(PUBLISHED.headers)}
    key, record_headers = events.kafkasource_record(events.from_http_headers(headers, b""))
    assert key == b"mnist"
    assert dict(record_headers) == HEADERS


def test_without_a_key_extension_the_partitionkey_is_the_key() -> None:
    delivery = events.from_http_headers({**OUTER, "ce-partitionkey": "mnist"}, b"")
    assert events.kafkasource_record(delivery) == (b"mnist", [])


def test_both_functions_unwrap_a_record_alike() -> None:
    loader = decode_http(
        {**OUTER, "ce-partitionkey": "mnist", **squashed(PUBLISHED.headers)},
        PUBLISHED.value,
        CONFIG,
    )
    assert [type(d) for d in loader] == [Published]
    assert isinstance(loader[0], Published)
    assert loader[0].source_record == OUTER["ce-id"]
    rollout = handler.decode_http(
        {**OUTER, "ce-partitionkey": "iris", **squashed(ASSIGNED.headers)}, ASSIGNED.value
    )
    assert isinstance(rollout, handler.Skip)  # the key names another model
    assert "iris" in rollout.reason


def test_a_wrapped_delivery_the_sdk_refuses_is_rejected() -> None:
    headers = {**OUTER, "ce-source": "", **squashed(PUBLISHED.headers)}
    [decision] = decode_http(headers, PUBLISHED.value, CONFIG)
    assert isinstance(decision, Rejected)
    assert decision.reason.startswith("KafkaSource delivery is not a valid CloudEvent")
    assert "ce-source" in decision.reason
    decoded = handler.decode_http(headers, ASSIGNED.value)
    assert isinstance(decoded, handler.Skip)
    assert decoded.malformed


def test_an_unwrapped_sdk_event_round_trips_through_the_squash() -> None:
    event = CloudEvent({"type": "t", "source": "/s", "id": "1", "kafkaheadercetype": "x"})
    assert events.kafkasource_record(event) == (None, [("ce_type", b"x")])
