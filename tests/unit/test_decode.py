"""loader.decode: deliveries -> decisions, as tables of cases (pure logic, no servers).

The MinIO notification and the KafkaSource delivery are the real examples in
../shared/events; every other case is derived from them or built with
loader.events, so the tests follow the wire formats rather than restate them.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loader import decode as decode_module
from loader.decode import (
    KAFKASOURCE_TYPE,
    MAX_EVENT_BYTES,
    Archive,
    Decision,
    DecodeConfig,
    Ignored,
    IncomingRecord,
    Published,
    Rejected,
    decode_http,
    decode_record,
)
from loader.decode_minio import ArchiveFormat
from loader.errors import ConfigError
from loader.events import (
    MODEL_PUBLISHED,
    VERSION_REJECTED,
    VERSION_STAGED,
    KafkaRecord,
    encode,
    encode_model_published,
)
from loader.schemas.rollway.v1.events_pb2 import ModelPublished, VersionStaged

EVENTS = Path(__file__).resolve().parents[3] / "shared" / "events"
MINIO_BYTES = (EVENTS / "minio_object_created.json").read_bytes()
MINIO: dict[str, Any] = json.loads(MINIO_BYTES)
MINIO_KEY = b"models/mnist/7/rollway-manifest.json"
MANIFEST = "rollway-manifest.json"
MINIO_ID = f"models/mnist/7/{MANIFEST}@1754D5802CCFEDA0"
CONFIG = DecodeConfig(roots=("s3://models", "s3://landing/models", "/srv/models"))
SHA = "ab" * 32
TOPIC = "model-publish"


def record(
    value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
) -> IncomingRecord:
    return IncomingRecord(key, value, headers or [], TOPIC, 2, 118)


def published(model: str = "mnist", version: int = 7, **fields: Any) -> Published:
    values: dict[str, Any] = {
        "version_uri": f"s3://models/{model}/{version}",
        "manifest_sha256": None,
        "event_id": MINIO_ID,
        "source_record": f"{TOPIC}/2/118",
        "archive": None,
    }
    return Published(model, version, **(values | fields))


def minio_record(name: str, encoded_key: str, bucket: str = "models") -> dict[str, Any]:
    """Records[0] of the example, for another event name and (URL-encoded) key."""
    item = copy.deepcopy(MINIO["Records"][0])
    item["eventName"] = name
    item["s3"]["bucket"]["name"] = bucket
    item["s3"]["object"]["key"] = encoded_key
    return dict(item)


def minio(
    encoded_key: str,
    name: str = "s3:ObjectCreated:Put",
    bucket: str = "models",
    key: bytes | None = None,
) -> IncomingRecord:
    """The example notification for another object, keyed as MinIO keys it."""
    full = f"{bucket}/{unquote_plus(encoded_key)}"
    document = MINIO | {"EventName": name, "Key": full}
    document["Records"] = [minio_record(name, encoded_key, bucket)]
    return record(json.dumps(document).encode(), full.encode() if key is None else key)


def our_event(uri: str = "s3://models/mnist/7", sha: str = SHA) -> KafkaRecord:
    """ModelPublished(mnist, 7) as ``rollway publish`` sends it."""
    event = ModelPublished(model="mnist", version=7, version_uri=uri, manifest_sha256=sha)
    event.published_at.FromDatetime(datetime.datetime(2026, 11, 20, tzinfo=datetime.timezone.utc))
    return encode_model_published(event, "//rollway/test")


def ce_id(kafka: KafkaRecord) -> str:
    return dict(kafka.headers)["ce_id"].decode()


def from_kafka(kafka: KafkaRecord) -> IncomingRecord:
    return record(kafka.value, kafka.key, kafka.headers)


def with_value(kafka: KafkaRecord, document: dict[str, Any]) -> IncomingRecord:
    return record(json.dumps(document).encode(), kafka.key, kafka.headers)


def with_header(kafka: KafkaRecord, name: str, value: bytes | None) -> IncomingRecord:
    headers = [(n, v) for n, v in kafka.headers if n != name]
    return record(kafka.value, kafka.key, headers + ([(name, value)] if value is not None else []))


def publish_json(**fields: Any) -> dict[str, Any]:
    return {"model": "mnist", "version": "7", "versionUri": "s3://models/mnist/7"} | fields


def http_example() -> dict[str, str]:
    """The headers of kafkasource_delivery.http (the body there is a placeholder)."""
    head = (EVENTS / "kafkasource_delivery.http").read_text().split("\n\n", 1)[0]
    pairs = (line.split(":", 1) for line in head.splitlines()[1:])
    return {name.strip(): value.strip() for name, value in pairs}


def kafkasource_wrap(kafka: KafkaRecord, partition: int = 0, offset: int = 9) -> dict[str, str]:
    """How a KafkaSource delivers a plain record: each Kafka header h as
    ce-kafkaheader<h lowercased, non-alphanumerics removed>."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"partition:{partition}/offset:{offset}",
        "ce-source": "/apis/v1/namespaces/models/kafkasources/model-publish#model-publish",
        "ce-type": KAFKASOURCE_TYPE,
        "ce-subject": f"partition:{partition}#{offset}",
        "ce-key": kafka.key.decode(),
        "ce-partitionkey": kafka.key.decode(),
    }
    for name, value in kafka.headers:
        headers["ce-kafkaheader" + re.sub("[^a-z0-9]", "", name.lower())] = value.decode()
        if name == "content-type":
            headers["content-type"] = value.decode()
    return headers


# --- MinIO notifications -------------------------------------------------------------------


def test_minio_example_is_published() -> None:
    decisions = decode_record(record(MINIO_BYTES, MINIO_KEY), CONFIG)
    assert decisions == [published()]


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        (minio("mnist%2F7%2Fvariables%2Fvariables.index"), Ignored),
        (minio("mnist%2F7%2Fsaved_model.pb"), Ignored),
        (minio("mnist%2F7%2Frollway-manifest.json", "s3:ObjectRemoved:Delete"), Ignored),
        (minio("mnist%2F7%2Frollway-manifest.json", "s3:ObjectAccessed:Get"), Ignored),
        (minio("mnist%2F7.tar.gz"), Ignored),  # the archive: its digest file comes after it
        (minio("mnist%2Fnotes.tar.gz.sha256"), Ignored),  # not "<version>.<ext>.sha256"
        (
            minio("mnist%2F7%2Frollway-manifest.json", "s3:ObjectCreated:CompleteMultipartUpload"),
            published(),
        ),
        (
            minio("team+a%2Fmnist%2F7%2Frollway-manifest.json"),
            published(
                version_uri="s3://models/team a/mnist/7",
                event_id="models/team a/mnist/7/rollway-manifest.json@1754D5802CCFEDA0",
            ),
        ),
        (
            minio("models%2Fvision%2Fmnist%2F00007%2Frollway-manifest.json", bucket="landing"),
            published(
                version_uri="s3://landing/models/vision/mnist/00007",
                event_id=f"landing/models/vision/mnist/00007/{MANIFEST}@1754D5802CCFEDA0",
            ),
        ),
    ],
    ids=[
        "other-file",
        "saved-model-pb",
        "object-removed",
        "object-accessed",
        "archive-before-digest",
        "non-version-digest",
        "multipart",
        "plus-and-percent-decoded",
        "nested-dirs-leading-zeros",
    ],
)
def test_minio_cases(delivery: IncomingRecord, expected: Decision | type[Ignored]) -> None:
    [decision] = decode_record(delivery, CONFIG)
    if expected is Ignored:
        assert isinstance(decision, Ignored), decision
    else:
        assert decision == expected


def test_minio_multi_record_gives_a_decision_per_record() -> None:
    document = copy.deepcopy(MINIO)
    document["Records"] = [
        minio_record("s3:ObjectCreated:Put", "mnist%2F7%2Frollway-manifest.json"),
        minio_record("s3:ObjectCreated:Put", "mnist%2F7%2Fvariables%2Fvariables.index"),
        minio_record("s3:ObjectCreated:Put", "resnet%2F3%2Frollway-manifest.json"),
        minio_record("s3:ObjectRemoved:Delete", "resnet%2F2%2Frollway-manifest.json"),
        minio_record("s3:ObjectCreated:Put", "resnet%2F3.zip.sha256"),
    ]
    decisions = decode_record(record(json.dumps(document).encode(), MINIO_KEY), CONFIG)
    resnet = "models/resnet/3"
    assert [type(d) for d in decisions] == [Published, Ignored, Published, Ignored, Published]
    assert decisions[0] == published()
    assert decisions[2] == published(
        "resnet", 3, event_id=f"{resnet}/rollway-manifest.json@1754D5802CCFEDA0"
    )
    assert decisions[4] == published(
        "resnet",
        3,
        version_uri=f"s3://{resnet}.zip",
        event_id=f"{resnet}.zip.sha256@1754D5802CCFEDA0",
        archive=Archive(f"s3://{resnet}.zip", f"s3://{resnet}.zip.sha256", None, "zip"),
    )


def test_minio_irrelevant_records_are_ignored_before_anything_else_is_read() -> None:
    # No bucket, no sequencer, a key that disagrees: none of it is looked at.
    item = {"eventName": "s3:ObjectCreated:Put", "s3": {"object": {"key": "mnist%2F7%2Fa.bin"}}}
    document = {"EventName": "s3:ObjectCreated:Put", "Records": [item] * 10_000}
    decisions = decode_record(record(json.dumps(document).encode(), b"elsewhere"), CONFIG)
    assert len(decisions) == 10_000
    assert all(isinstance(d, Ignored) for d in decisions)


# --- KafkaSource HTTP deliveries -----------------------------------------------------------


def test_kafkasource_example_delivery() -> None:
    headers = http_example()
    assert headers["ce-type"] == KAFKASOURCE_TYPE
    decisions = decode_http(headers, MINIO_BYTES, CONFIG)
    assert decisions == [published(source_record="partition:2/offset:118")]


def test_kafkasource_delivery_of_our_own_event() -> None:
    kafka = our_event()
    headers = kafkasource_wrap(kafka)
    assert headers["ce-kafkaheadercetype"] == MODEL_PUBLISHED
    expected = published(
        manifest_sha256=SHA, event_id=ce_id(kafka), source_record="partition:0/offset:9"
    )
    assert decode_http(headers, kafka.value, CONFIG) == [expected]


def test_kafkasource_forwards_a_cloudevent_as_itself() -> None:
    kafka = our_event()
    headers = {"ce-" + n.removeprefix("ce_"): v.decode() for n, v in kafka.headers}
    headers = {n.title() if n == "content-type" else n: v for n, v in headers.items()}
    expected = published(manifest_sha256=SHA, event_id=ce_id(kafka), source_record="")
    assert decode_http(headers, kafka.value, CONFIG) == [expected]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"content-type": "application/json"}, "no ce-type"),
        ({"ce-type": "com.example.thing", "ce-id": "1", "ce-specversion": "1.0"}, "unknown"),
        (http_example() | {"ce-key": "models/other/7/rollway-manifest.json"}, "record key"),
    ],
    ids=["not-a-cloudevent", "unknown-type", "key-mismatch"],
)
def test_kafkasource_rejections(headers: dict[str, str], reason: str) -> None:
    [decision] = decode_http(headers, MINIO_BYTES, CONFIG)
    assert isinstance(decision, Rejected)
    assert reason in decision.reason


# --- rollway's own events ------------------------------------------------------------------


def test_our_event_round_trips() -> None:
    kafka = our_event()
    expected = published(manifest_sha256=SHA, event_id=ce_id(kafka))
    assert decode_record(from_kafka(kafka), CONFIG) == [expected]


def test_our_event_without_cloudevent_headers() -> None:
    value = json.dumps(publish_json(manifestSha256=SHA)).encode()
    event_id = "sha256:" + hashlib.sha256(value).hexdigest()
    expected = published(manifest_sha256=SHA, event_id=event_id)
    assert decode_record(record(value, b"mnist"), CONFIG) == [expected]
    assert decode_record(record(value), CONFIG) == [expected]  # no key: nothing to disagree


@pytest.mark.parametrize(
    ("uri", "version_uri"),
    [
        ("s3://models/mnist/7/", "s3://models/mnist/7"),
        ("/srv/models/mnist/7", "/srv/models/mnist/7"),
        ("file:///srv/models/mnist/7", "file:///srv/models/mnist/7"),
        ("s3://landing/models/mnist/7", "s3://landing/models/mnist/7"),
        ("S3://landing/models/mnist/7", "S3://landing/models/mnist/7"),
    ],
)
def test_accepted_version_uris(uri: str, version_uri: str) -> None:
    kafka = our_event(uri=uri)
    expected = published(version_uri=version_uri, manifest_sha256=SHA, event_id=ce_id(kafka))
    assert decode_record(from_kafka(kafka), CONFIG) == [expected]


def test_other_rollway_events_are_ignored() -> None:
    staged = encode(VersionStaged(model="mnist", version=7), "//rollway/loader")
    [decision] = decode_record(from_kafka(staged), CONFIG)
    assert isinstance(decision, Ignored)
    assert VERSION_STAGED in decision.reason
    rejected = with_header(our_event(), "ce_type", VERSION_REJECTED.encode())
    assert isinstance(decode_record(rejected, CONFIG)[0], Ignored)


def test_tombstone_is_ignored() -> None:
    assert decode_record(record(None, b"mnist"), CONFIG) == [
        Ignored("a tombstone (a record with no value)")
    ]


# --- archives ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digest", "archive", "archive_format"),
    [
        ("7.tar.gz.sha256", "7.tar.gz", "tar.gz"),
        ("7.tgz.sha256", "7.tgz", "tar.gz"),
        ("7.tar.sha256", "7.tar", "tar"),
        ("7.zip.sha256", "7.zip", "zip"),
    ],
)
def test_archive_digest_file(digest: str, archive: str, archive_format: ArchiveFormat) -> None:
    uri = f"s3://models/mnist/{archive}"
    expected = published(
        version_uri=uri,
        event_id=f"models/mnist/{digest}@1754D5802CCFEDA0",
        archive=Archive(uri, f"s3://models/mnist/{digest}", None, archive_format),
    )
    assert decode_record(minio(f"mnist%2F{digest}"), CONFIG) == [expected]


@pytest.mark.parametrize(
    ("sha", "archive"),
    [
        (SHA, Archive("s3://models/mnist/7.tar.gz", None, SHA, "tar.gz")),
        (
            "",
            Archive(
                "s3://models/mnist/7.tar.gz", "s3://models/mnist/7.tar.gz.sha256", None, "tar.gz"
            ),
        ),
    ],
    ids=["digest-in-event", "digest-file"],
)
def test_archive_model_published(sha: str, archive: Archive) -> None:
    kafka = our_event(uri="s3://models/mnist/7.tar.gz", sha=sha)
    expected = published(version_uri=archive.uri, event_id=ce_id(kafka), archive=archive)
    assert decode_record(from_kafka(kafka), CONFIG) == [expected]


# --- rejections: every hostile or malformed case names its problem --------------------------

PUBLISHED = our_event()
LONG = "m" * 256


def _rejections() -> list[tuple[str, IncomingRecord, str]]:
    def uri(value: str) -> IncomingRecord:
        return from_kafka(our_event(uri=value))

    def doc(**fields: Any) -> IncomingRecord:
        return with_value(PUBLISHED, publish_json(**fields))

    return [
        ("not-json", record(b"not json"), "not JSON"),
        ("empty", record(b""), "not JSON"),
        ("not-utf8", record(b'{"a": "\xff"}'), "not JSON"),
        ("array", record(b"[1, 2]"), "not a JSON object"),
        ("deep", record(b"[" * 100_000), "nested too deeply"),
        ("nan", doc(version=float("nan")), "NaN"),
        (
            "dup-key",
            record(b'{"model": "mnist", "model": "evil"}', headers=PUBLISHED.headers),
            "duplicate",
        ),
        ("neither", record(b'{"hello": "world"}'), "no ce_type"),
        ("headerless-no-uri", record(b'{"model": "mnist"}'), "needs a model and a version_uri"),
        (
            "unknown-type",
            with_header(PUBLISHED, "ce_type", b"com.example.other"),
            "unknown CloudEvent type",
        ),
        (
            "bad-type-bytes",
            with_header(PUBLISHED, "ce_type", b"\xff\xfe"),
            "unknown CloudEvent type",
        ),
        ("no-specversion", with_header(PUBLISHED, "ce_specversion", None), "specversion"),
        ("no-id", with_header(PUBLISHED, "ce_id", None), "ce_id"),
        ("control-id", with_header(PUBLISHED, "ce_id", b"a\nb"), "ce_id"),
        (
            "protobuf",
            with_header(PUBLISHED, "content-type", b"application/protobuf"),
            "content-type",
        ),
        ("unknown-field", doc(evil=1), "schema"),
        ("version-text", doc(version="seven"), "version"),
        ("version-float", doc(version=7.5), "version"),
        ("version-int64", doc(version="99999999999999999999"), "version"),
        ("version-negative", doc(version="-1"), "version -1 is negative"),
        ("model-slash", doc(model="mn/ist"), "model name"),
        ("model-dotdot", doc(model=".."), "model name"),
        ("model-dot", doc(model="."), "model name"),
        ("model-empty", doc(model=""), "model"),
        ("model-nul", doc(model="mnist\x00"), "model name"),
        ("model-long", doc(model=LONG), "model name"),
        (
            "key-mismatch",
            record(PUBLISHED.value, b"resnet", PUBLISHED.headers),
            "record key 'resnet'",
        ),
        ("bad-sha", doc(manifestSha256="XYZ"), "manifest_sha256"),
        ("negative-bytes", doc(totalBytes="-5"), "negative"),
        ("dotdot-uri", uri("s3://models/mnist/../../etc/7"), "'..'"),
        ("dot-uri", uri("s3://models/./mnist/7"), "'.'"),
        ("empty-segment", uri("s3://models//mnist/7"), "empty"),
        ("relative-path", uri("models/mnist/7"), "not absolute"),
        ("control-uri", uri("s3://models/mn\x01ist/7"), "control"),
        ("nul-uri", uri("/srv/models/mnist\x00/7"), "NUL"),
        ("backslash-uri", uri("/srv/models\\..\\etc/7"), "'\\\\'"),
        ("percent-uri", uri("file:///srv/models/%2e%2e/7"), "'%'"),
        ("query-uri", uri("s3://models/mnist/7?versionId=1"), "'?'"),
        ("scheme-gs", uri("gs://models/mnist/7"), "storage registry"),
        ("scheme-http", uri("http://models/mnist/7"), "storage registry"),
        ("no-bucket", uri("s3:///mnist/7"), "no bucket"),
        ("credentials", uri("s3://AKIA:secret@models/mnist/7"), "credentials"),
        ("other-bucket", uri("s3://other/mnist/7"), "outside the roots"),
        ("prefix-sibling", uri("s3://landing/models-evil/mnist/7"), "outside the roots"),
        ("local-sibling", uri("/srv/models-evil/mnist/7"), "outside the roots"),
        ("local-escape", uri("/srv/models/../../etc/7"), "'..'"),
        ("remote-file", uri("file://elsewhere/srv/models/mnist/7"), "outside the roots"),
        ("bucket-only", uri("s3://models"), "names no version"),
        ("wrong-version-dir", uri("s3://models/mnist/8"), "not in version 7"),
        ("version-dir-name", uri("s3://models/mnist/latest"), "not in version 7"),
        ("minio-dotdot", minio("mnist%2F..%2F7%2Frollway-manifest.json"), "model name '..'"),
        ("minio-dotdot-up", minio("..%2Fmnist%2F7%2Frollway-manifest.json"), "'..'"),
        ("minio-absolute", minio("%2Fmnist%2F7%2Frollway-manifest.json"), "absolute"),
        ("minio-empty", minio("a%2F%2Fmnist%2F7%2Frollway-manifest.json"), "empty"),
        ("minio-control", minio("a%01b%2Fmnist%2F7%2Frollway-manifest.json"), "control"),
        ("minio-nul-model", minio("mnist%00%2F7%2Frollway-manifest.json"), "model name"),
        (
            "minio-version",
            minio("mnist%2Flatest%2Frollway-manifest.json"),
            "version 'latest' is not digits",
        ),
        ("minio-int64", minio(f"mnist%2F{2**63}%2Frollway-manifest.json"), "is over 2**63-1"),
        ("minio-int64-archive", minio(f"mnist%2F{2**63}.tar.gz.sha256"), "is over 2**63-1"),
        ("minio-no-model", minio("7%2Frollway-manifest.json"), "no <model>/<version>"),
        ("minio-at-root", minio("rollway-manifest.json"), "no <model>/<version>"),
        (
            "minio-bucket",
            minio("mnist%2F7%2Frollway-manifest.json", bucket="evil"),
            "outside the roots",
        ),
        (
            "minio-bucket-name",
            minio("mnist%2F7%2Frollway-manifest.json", bucket="a:b@c"),
            "bucket name",
        ),
        ("minio-key", minio("mnist%2F7%2Frollway-manifest.json", key=b"models/x"), "record key"),
        (
            "minio-records",
            record(b'{"EventName": "s3:ObjectCreated:Put", "Records": 3}'),
            "Records",
        ),
        ("minio-record", record(b'{"Records": [7]}'), "Records[0] is not a JSON object"),
        ("minio-no-name", record(b'{"Records": [{}]}'), "eventName"),
        (
            "minio-no-key",
            record(b'{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {}}]}'),
            "s3.object.key",
        ),
    ]


@pytest.mark.parametrize(
    ("delivery", "reason"),
    [case[1:] for case in _rejections()],
    ids=[case[0] for case in _rejections()],
)
def test_rejected(delivery: IncomingRecord, reason: str) -> None:
    [decision] = decode_record(delivery, CONFIG)
    assert isinstance(decision, Rejected), decision
    assert reason in decision.reason
    assert decision.source_record == f"{TOPIC}/2/118"
    assert "secret" not in repr(decision)


def test_minio_top_level_key_must_match() -> None:
    document = MINIO | {"Key": "models/resnet/1/rollway-manifest.json"}
    [decision] = decode_record(record(json.dumps(document).encode()), CONFIG)
    assert isinstance(decision, Rejected)
    assert "notification Key" in decision.reason


def test_rejection_names_what_it_can() -> None:
    kafka = our_event(uri="s3://other/mnist/7")
    [decision] = decode_record(from_kafka(kafka), CONFIG)
    assert decision == Rejected(
        decision.reason if isinstance(decision, Rejected) else "",
        model="mnist",
        version=7,
        version_uri="s3://other/mnist/7",
        source_record=f"{TOPIC}/2/118",
        event_id=ce_id(kafka),
    )
    [decision] = decode_record(with_value(kafka, publish_json(model="a/b", version="-3")), CONFIG)
    assert isinstance(decision, Rejected)
    assert (decision.model, decision.version) == ("", -1)  # not valid: not repeated


def test_oversized_value_is_rejected_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(value: bytes) -> Any:
        raise AssertionError("parsed an oversized event")

    monkeypatch.setattr(decode_module, "_parse_json", never)
    value = b"{" + b" " * MAX_EVENT_BYTES + b"}"
    [decision] = decode_record(record(value, b"mnist", PUBLISHED.headers), CONFIG)
    assert isinstance(decision, Rejected)
    assert "MAX_EVENT_BYTES" in decision.reason
    [decision] = decode_record(record(b"{}", b"k" * (MAX_EVENT_BYTES + 1)), CONFIG)
    assert isinstance(decision, Rejected)
    assert "headers" in decision.reason


def test_no_roots_rejects_everything() -> None:
    [decision] = decode_record(record(MINIO_BYTES, MINIO_KEY), DecodeConfig(roots=()))
    assert isinstance(decision, Rejected)
    assert "no store roots" in decision.reason


@pytest.mark.parametrize(
    ("root", "problem"),
    [
        ("", "not absolute"),
        ("models", "not absolute"),
        ("s3://models/../x", "'..'"),
        ("gs://models", "storage registry"),
        ("s3://key:secret@models", "credentials"),
    ],
)
def test_bad_roots_fail_at_startup(root: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="roots\\[1\\]") as raised:
        DecodeConfig(roots=("s3://models", root))
    assert problem in str(raised.value)
    assert "secret" not in str(raised.value)


def test_decisions_and_records_are_hashable_values() -> None:
    decisions = decode_record(record(MINIO_BYTES, MINIO_KEY), CONFIG)
    decisions += decode_record(record(b"nope"), CONFIG)
    decisions += decode_record(minio("mnist%2F7.tar.sha256"), CONFIG)
    assert len({*decisions, *decisions}) == 3
    assert hash(record(b"x", None, [("a", b"b")])) == hash(record(b"x", None, [("a", b"b")]))


# --- property: no input makes decoding raise --------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "mnist%2F7%2Frollway-manifest.json",
        "mnist%2F7.tar.gz.sha256",
        "a%2F..%2F7%2Frollway-manifest.json",
        "%2F%00%2F7.zip.sha256",
        "x",
    ]
) | st.text(max_size=40)
_minio_record = st.fixed_dictionaries(
    {
        "eventName": st.sampled_from(["s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete"]) | _json,
        "s3": st.fixed_dictionaries(
            {
                "bucket": st.fixed_dictionaries({"name": st.sampled_from(["models", ""]) | _json}),
                "object": st.fixed_dictionaries(
                    {"key": _keys | _json, "sequencer": _json, "eTag": _json}
                ),
            }
        )
        | _json,
    }
)
_documents = (
    st.fixed_dictionaries(
        {"Key": _json | st.text(), "Records": st.lists(_minio_record, max_size=3)}
    )
    | st.fixed_dictionaries(
        {"model": _json, "version": _json, "versionUri": _json | st.text(max_size=40)}
    )
    | _json
)
_values = st.binary(max_size=200) | _documents.map(lambda d: json.dumps(d).encode())
_header_names = st.sampled_from(["ce_type", "ce_id", "ce_specversion", "content-type"]) | st.text()
_header_values = (
    st.sampled_from([MODEL_PUBLISHED.encode(), b"1.0", b"application/json"]) | st.binary()
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_values | st.none(),
    key=st.none() | st.binary(max_size=50) | st.just(MINIO_KEY) | st.just(b"mnist"),
    headers=st.lists(st.tuples(_header_names, _header_values), max_size=5),
)
def test_decode_record_never_raises(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    _assert_decisions(
        lambda: decode_record(IncomingRecord(key, value, headers, TOPIC, 0, 1), CONFIG)
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=_values,
    headers=st.dictionaries(
        st.sampled_from(["ce-type", "ce-id", "ce-key", "ce-kafkaheadercetype", "content-type"])
        | st.text(),
        st.sampled_from([KAFKASOURCE_TYPE, MODEL_PUBLISHED, "1.0", "mnist"]) | st.text(),
        max_size=6,
    ),
)
def test_decode_http_never_raises(body: bytes, headers: dict[str, str]) -> None:
    _assert_decisions(lambda: decode_http(headers, body, CONFIG))


def _assert_decisions(call: Callable[[], list[Decision]]) -> None:
    decisions = call()
    assert isinstance(decisions, list)
    assert decisions
    for decision in decisions:
        assert isinstance(decision, Published | Ignored | Rejected)
        hash(decision)


_ROOTS = ("s3://models/", "s3://landing/models/", "/srv/models/", "file:///srv/models/")
_prefixes = st.sampled_from(
    [*_ROOTS, "", "s3://landing/models-evil/", "s3://a:b@models/", "s3://models:x/", "S3://[/"]
)
_segments = st.sampled_from(["mnist", "..", ".", "", "a b", "%2e%2e", "[", "\\", "\x00", "?", "#"])


@settings(max_examples=300, deadline=None)
@given(
    prefix=_prefixes,
    segments=st.lists(_segments | st.text(max_size=3), max_size=4),
    last=st.sampled_from(["7", "7/", "07", "7.tar.gz", "7//", "8"]),
)
def test_published_uris_stay_below_a_root(prefix: str, segments: list[str], last: str) -> None:
    uri = prefix + "/".join([*segments, last])
    [decision] = decode_record(from_kafka(our_event(uri=uri)), CONFIG)
    if isinstance(decision, Published):
        uri = decision.version_uri
        assert uri.lower().startswith(_ROOTS)
        path = uri.split("://", 1)[-1]
        assert posixpath.normpath(path) == path  # no '.', '..' or empty segment
        assert set(path) & set("\\%?#\x00") == set()
        assert decision.version == 7
