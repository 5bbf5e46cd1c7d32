"""functions.rollout.service: strategy annotations, revision readiness from a
Service's status, and the Knative rules the CRD schema does not state."""

from __future__ import annotations

from typing import Any

import pytest

from functions.rollout.service import (
    CANARY_PERCENT,
    STRATEGY,
    Kind,
    Readiness,
    Service,
    Strategy,
    check_service,
    revision_readiness,
    strategy_of,
)
from tests.infra.validation import validate_resource
from tests.rollout.helpers import new_service, served

DEFAULT = Strategy()


STRATEGIES = [
    ({}, DEFAULT, Strategy()),
    ({}, Strategy(Kind.CANARY, 20), Strategy(Kind.CANARY, 20)),
    ({STRATEGY: "canary"}, DEFAULT, Strategy(Kind.CANARY, 10)),
    ({STRATEGY: "canary", CANARY_PERCENT: "5"}, DEFAULT, Strategy(Kind.CANARY, 5)),
    ({STRATEGY: "manual"}, Strategy(Kind.CANARY, 30), Strategy(Kind.MANUAL, 30)),
    ({STRATEGY: "immediate"}, Strategy(Kind.CANARY), Strategy(Kind.IMMEDIATE)),
]


@pytest.mark.parametrize(("notes", "default", "expected"), STRATEGIES)
def test_strategy_of(notes: dict[str, str], default: Strategy, expected: Strategy) -> None:
    assert strategy_of(served(new_service(**notes)), default) == expected


READINESS: list[tuple[str, dict[str, Any], dict[str, Readiness]]] = [
    ("nothing yet", {}, {}),
    ("latest ready", {"latestReadyRevisionName": "a", "latestCreatedRevisionName": "a"},
     {"a": Readiness.READY}),
    ("a new one starting", {"latestReadyRevisionName": "a", "latestCreatedRevisionName": "b",
                            "conditions": [{"type": "ConfigurationsReady", "status": "Unknown"}]},
     {"a": Readiness.READY, "b": Readiness.PENDING}),
    ("a new one failed", {"latestReadyRevisionName": "a", "latestCreatedRevisionName": "b",
                          "conditions": [{"type": "ConfigurationsReady", "status": "False"}]},
     {"a": Readiness.READY, "b": Readiness.FAILED}),
    ("traffic targets are Ready", {"traffic": [{"revisionName": "c", "percent": 100}]},
     {"c": Readiness.READY}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "status", "expected"), READINESS, ids=[r[0] for r in READINESS])
def test_revision_readiness(
    name: str, status: dict[str, Any], expected: dict[str, Readiness]
) -> None:
    assert revision_readiness({"status": status}) == expected


def routed(traffic_: list[dict[str, Any]], revision: str = "mnist-g1") -> Service:
    service = new_service()
    service["spec"]["template"]["metadata"]["name"] = revision
    service["spec"]["traffic"] = traffic_
    return service


KNATIVE_RULES: list[tuple[str, Service, str]] = [
    ("percents not adding up", routed([{"revisionName": "a", "percent": 90}]), "add up to 100"),
    ("a duplicate tag", routed([{"revisionName": "a", "percent": 50, "tag": "x"},
                                {"revisionName": "b", "percent": 50, "tag": "x"}]), "not unique"),
    ("both revisionName and latestRevision",
     routed([{"revisionName": "a", "percent": 100, "latestRevision": True}]), "needs revisionName"),
    ("a url in the spec", routed([{"revisionName": "a", "percent": 100, "url": "http://a"}]),
     "status only"),
    ("a revision not named after the Service", routed([], revision="other-g1"), "starting with"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "service", "match"), KNATIVE_RULES, ids=[k[0] for k in KNATIVE_RULES]
)
def test_check_service_finds_what_the_schema_does_not(
    name: str, service: Service, match: str
) -> None:
    assert validate_resource(service) == []
    assert any(match in problem for problem in check_service(service))
