"""functions.rollout.handler and .settings: decoding deliveries (pure, in
tables), rolling one assignment out to each Service of its model, and the
configuration. The Kubernetes API is the fake of fake_api.py."""

from __future__ import annotations

from typing import Any

import pytest

from functions.rollout import handler
from functions.rollout.service import Kind, Strategy
from functions.rollout.settings import RolloutConfig, config_from, parse_services, services_for
from loader import events
from loader.errors import ConfigError, InvalidArgument, Unavailable
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from tests.rollout.fake_api import FakeApiError, FakeServices
from tests.rollout.helpers import NAMESPACE, new_service, schema_problems, traffic

EVENT = AssignmentChanged(model="mnist", generation=3)
RECORD = events.encode(EVENT, source="//rollway/test")
VALUE = RECORD.value

RECORDS: list[tuple[str, bytes | None, list[tuple[str, bytes]], bytes | None, str]] = [
    ("rollway's CloudEvent", VALUE, RECORD.headers, RECORD.key, "mnist@3"),
    ("a bare value", VALUE, [], None, "mnist@3"),
    ("a tombstone", None, [], b"mnist", "skip: a tombstone"),
    ("another rollway event", VALUE, [("ce_type", events.MODEL_PUBLISHED.encode())], None,
     "skip: a 'dev.rollway.model.published.v1' event is not for the rollout"),
    ("not JSON", b"{", [], None, "malformed: AssignmentChanged event is not JSON"),
    ("unknown fields", b'{"model": "m", "generation": 1, "extra": 1}', [], None,
     "malformed: AssignmentChanged event does not match its schema"),
    ("no generation", b'{"model": "m"}', [], None, "malformed: AssignmentChanged needs a model"),
    ("a key that is another model", VALUE, [], b"iris",
     "malformed: record key b'iris' is not the model mnist"),
    ("over 1 MiB", b" " * (1024 * 1024 + 1), [], None, "malformed: the value is over"),
    # A binary-mode CloudEvent is the SDK's to validate, as the loader's are.
    ("a CloudEvent 0.3", VALUE, [*RECORD.headers, ("ce_specversion", b"0.3")], None,
     "malformed: not a valid CloudEvent (ce_specversion"),
    ("a CloudEvent with no id", VALUE, [h for h in RECORD.headers if h[0] != "ce_id"], None,
     "malformed: not a valid CloudEvent (ce_id"),
]  # fmt: skip


def shown(decoded: AssignmentChanged | handler.Skip) -> str:
    if isinstance(decoded, handler.Skip):
        return f"{'malformed' if decoded.malformed else 'skip'}: {decoded.reason}"
    return f"{decoded.model}@{decoded.generation}"


@pytest.mark.parametrize(("name", "value", "headers", "key", "expected"), RECORDS,
                         ids=[r[0] for r in RECORDS])  # fmt: skip
def test_decode_record(
    name: str, value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None,
    expected: str,
) -> None:  # fmt: skip
    assert shown(handler.decode_record(value, headers, key)).startswith(expected)


KAFKASOURCE = {"ce-specversion": "1.0", "ce-id": "partition:0/offset:7", "ce-source": "/kafka"}
DELIVERIES: list[tuple[str, dict[str, str], bytes, str]] = [
    ("the record's own CloudEvent", {**KAFKASOURCE, "ce-type": events.ASSIGNMENT_CHANGED}, VALUE,
     "mnist@3"),
    ("a wrapped plain record", {**KAFKASOURCE, "ce-type": "dev.knative.kafka.event",
                                "ce-key": "mnist"}, VALUE, "mnist@3"),
    ("a wrapped rollway record", {**KAFKASOURCE, "ce-type": "dev.knative.kafka.event",
                                  "ce-kafkaheadercetype": events.ASSIGNMENT_CHANGED}, VALUE,
     "mnist@3"),
    ("a wrapped record of another type", {**KAFKASOURCE, "ce-type": "dev.knative.kafka.event",
                                          "ce-kafkaheadercetype": events.MODEL_PUBLISHED},
     VALUE, "skip:"),
    ("another type", {**KAFKASOURCE, "ce-type": events.MODEL_PUBLISHED},
     events.encode(ModelPublished(model="m", version=1), "//t").value, "skip:"),
    ("no ce-type", KAFKASOURCE, VALUE, "malformed: no ce-type"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "headers", "body", "expected"), DELIVERIES,
                         ids=[d[0] for d in DELIVERIES])  # fmt: skip
def test_decode_http(name: str, headers: dict[str, str], body: bytes, expected: str) -> None:
    assert shown(handler.decode_http(headers, body)).startswith(expected)


def config(**kw: Any) -> RolloutConfig:
    return RolloutConfig(NAMESPACE, **kw)


def test_roll_out_reaches_every_service_of_the_model() -> None:
    api = FakeServices()
    for name in ("models-mnist", "models-mnist-rest"):
        api.put(NAMESPACE, new_service(name))
    mapped = config(services={"mnist": ("models-mnist", "models-mnist-rest")})
    reports = handler.roll_out(api, mapped, EVENT)
    assert [(r.service, r.outcome, r.revision) for r in reports] == [
        ("models-mnist", "patched", "models-mnist-g3"),
        ("models-mnist-rest", "patched", "models-mnist-rest-g3"),
    ]
    for name in ("models-mnist", "models-mnist-rest"):
        stored = api.objects[(NAMESPACE, name)]
        assert traffic(stored) == [("stable", f"{name}-g3", 100)]
        assert schema_problems(stored) == []
    again = handler.roll_out(api, mapped, EVENT)
    assert [r.outcome for r in again] == ["unchanged", "unchanged"]


def test_a_refusal_is_reported_and_the_other_services_still_roll_out() -> None:
    api = FakeServices()
    api.put(NAMESPACE, new_service("a", **{"rollway.dev/strategy": "blue-green"}))
    api.put(NAMESPACE, new_service("b"))
    reports = handler.roll_out(api, config(services={"mnist": ("a", "b", "c")}), EVENT)
    assert [(r.service, r.outcome) for r in reports] == [
        ("a", "refused"), ("b", "patched"), ("c", "absent"),
    ]  # fmt: skip
    assert "blue-green" in reports[0].reason


def test_a_retriable_failure_raises_after_trying_every_service() -> None:
    api = FakeServices()
    api.put(NAMESPACE, new_service("a"))
    api.put(NAMESPACE, new_service("b"))
    api.failures["get"] = [FakeApiError(503, "Service Unavailable")]
    with pytest.raises(Unavailable, match="503"):
        handler.roll_out(api, config(services={"mnist": ("a", "b")}), EVENT)
    assert traffic(api.objects[(NAMESPACE, "b")]) == [("stable", "b-g3", 100)]


def test_a_model_that_cannot_name_a_service_is_refused() -> None:
    event = AssignmentChanged(model="half_plus_two", generation=1)
    reports = handler.roll_out(FakeServices(), config(), event)
    assert [r.outcome for r in reports] == ["refused"]
    assert "--service half_plus_two=SERVICE" in reports[0].reason


def test_heal_service_takes_a_failed_canary_out() -> None:
    api = FakeServices()
    service = new_service(**{"rollway.dev/strategy": "canary"})
    api.put(NAMESPACE, service)
    handler.roll_out(api, config(), AssignmentChanged(model="mnist", generation=1))
    handler.roll_out(api, config(), AssignmentChanged(model="mnist", generation=2))
    stored = api.objects[(NAMESPACE, "mnist")]
    assert traffic(stored) == [("stable", "mnist-g1", 90), ("canary", "mnist-g2", 10)]
    stored["status"] = {
        "latestCreatedRevisionName": "mnist-g2",
        "latestReadyRevisionName": "mnist-g1",
        "conditions": [{"type": "ConfigurationsReady", "status": "False"}],
    }
    assert handler.heal_service(api, NAMESPACE, "mnist").outcome.value == "patched"
    assert traffic(api.objects[(NAMESPACE, "mnist")]) == [("stable", "mnist-g1", 100)]


SETTINGS: list[tuple[dict[str, str], str]] = [
    ({"strategy": "blue"}, "--strategy (or ROLLWAY_ROLLOUT_STRATEGY) must be immediate"),
    ({"canary-percent": "0"}, "--canary-percent (or ROLLWAY_ROLLOUT_CANARY_PERCENT) must be 1..99"),
    ({"create-services": "maybe"}, "--create-services (or ROLLWAY_ROLLOUT_CREATE) must be true"),
    ({"service": "mnist"}, "--service (or ROLLWAY_ROLLOUT_SERVICES) expected MODEL=SERVICE"),
    ({"service": "m=Bad_Name"}, "is not a Service name"),
    ({"namespace": "Not/A/Namespace"}, "is not a namespace name"),
    ({"create-services": "true", "template": "/nonexistent.yaml"}, "cannot read the Service"),
]  # fmt: skip


@pytest.mark.parametrize(("values", "message"), SETTINGS)
def test_bad_settings_name_the_flag(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_from({"namespace": "rollway", **values})


def test_settings() -> None:
    made = config_from(
        {"namespace": "rollway", "strategy": "canary", "canary_percent": "20",
         "service": "mnist=models-mnist,models-mnist-rest; iris=iris"},
        ["half_plus_two=hp2"],
    )  # fmt: skip
    assert made.strategy == Strategy(Kind.CANARY, 20)
    assert not made.create and made.template is None
    assert services_for("mnist", made) == ("models-mnist", "models-mnist-rest")
    assert services_for("half_plus_two", made) == ("hp2",)
    assert services_for("resnet", made) == ("resnet",)
    created = config_from({"namespace": "rollway", "create-services": "true"})
    assert created.create and created.template is not None
    with pytest.raises(InvalidArgument):
        parse_services(["=x"])
