"""Shared by the rollout tests: a Service made from the real template, and a
stand-in for what Knative writes into a Service's status after a change."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from functions.rollout import apply
from functions.rollout.service import Service, generation_of, service_from_template
from tests.infra.validation import validate_resource

NAMESPACE = "rollway"
MODEL = "mnist"
SERVICE = "mnist"


def template() -> Service:
    return apply.load_template(apply.DEFAULT_TEMPLATE)


def new_service(name: str = SERVICE, model: str = MODEL, **annotations: str) -> Service:
    """A Service as the template makes it, before its first rollout."""
    service = service_from_template(template(), name, model, NAMESPACE)
    service["metadata"]["annotations"].update(annotations)
    return service


def served(
    service: Mapping[str, Any],
    *,
    ready: Iterable[str] = (),
    failed: Iterable[str] = (),
    resource_version: str = "1",
) -> Service:
    """``service`` as the API server returns it once Knative has looked at it:
    its template's revision is the latest created (Ready, failed, or else still
    starting), the newest revision of ``ready`` the latest ready, and
    ``status.traffic`` the targets that are Ready (Knative programs no other)."""
    result = copy.deepcopy(dict(service))
    result["metadata"]["resourceVersion"] = resource_version
    name = result["metadata"]["name"]
    ready_set, failed_set = set(ready), set(failed)
    created = result["spec"]["template"]["metadata"].get("name")
    status: dict[str, Any] = {"observedGeneration": 1}
    if created:
        status["latestCreatedRevisionName"] = created
        state = "True" if created in ready_set else "False" if created in failed_set else "Unknown"
        status["conditions"] = [
            {"type": "ConfigurationsReady", "status": state},
            {"type": "Ready", "status": state},
        ]
    if ready_set:
        status["latestReadyRevisionName"] = max(
            ready_set, key=lambda r: (generation_of(name, r) or 0, r)
        )
    status["traffic"] = [
        {k: v for k, v in t.items() if k != "latestRevision"}
        for t in result["spec"].get("traffic") or ()
        if t.get("revisionName") in ready_set
    ]
    result["status"] = status
    return result


def traffic(service: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(tag, revision, percent) of each target, in order."""
    return [
        (t.get("tag", ""), t.get("revisionName", "latest"), t["percent"])
        for t in service["spec"].get("traffic") or ()
    ]


def pinned(service: Mapping[str, Any]) -> tuple[str, str]:
    """The template's revision name and ROLLWAY_PIN_GENERATION."""
    container = service["spec"]["template"]["spec"]["containers"][0]
    pin = next(
        e.get("value", "") for e in container["env"] if e["name"] == "ROLLWAY_PIN_GENERATION"
    )
    return service["spec"]["template"]["metadata"].get("name", ""), pin


def schema_problems(service: Mapping[str, Any]) -> list[str]:
    """Strict CRD schema problems, plus Knative's own rules (plan.check_service)."""
    from functions.rollout.service import check_service

    return validate_resource(dict(service)) + check_service(service)
