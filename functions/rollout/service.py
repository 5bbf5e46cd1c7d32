"""The Knative Service as rollway reads and writes it: annotations, strategy,
revision readiness, the template of a new Service, and the Knative rules that
the CRD schema does not express. Pure functions on plain dicts.

Metadata annotations of a managed Service (``rollway.dev/...``):

| annotation | owner | meaning |
|---|---|---|
| ``strategy`` | operator | ``immediate`` (default), ``canary`` or ``manual`` |
| ``canary-percent`` | operator | the canary's share, 1..99 (default 10) |
| ``generation`` | rollway | the newest assignment generation taken (older events: no-op) |
| ``previous-revision`` | rollway | where a rollback goes when no canary runs |
| ``model`` | rollway | the model the Service serves (a mapping mistake is refused) |
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loader.errors import InvalidArgument

API_VERSION = "serving.knative.dev/v1"
KIND = "Service"
PIN_ENV = "ROLLWAY_PIN_GENERATION"
MODELS_ENV = "ROLLWAY_MODELS"
STRATEGY = "rollway.dev/strategy"
CANARY_PERCENT = "rollway.dev/canary-percent"
GENERATION = "rollway.dev/generation"
PREVIOUS = "rollway.dev/previous-revision"
MODEL = "rollway.dev/model"
GROUP_LABEL = "rollway.dev/model-group"
DEFAULT_CANARY_PERCENT = 10
DNS_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_SERVER_FIELDS = ("resourceVersion", "uid", "generation", "creationTimestamp", "managedFields")

Service = dict[str, Any]


class Kind(enum.Enum):
    IMMEDIATE = "immediate"  # the new revision takes 100 %
    CANARY = "canary"  # the new revision takes a share, ``stable`` the rest
    MANUAL = "manual"  # the new revision is a 0 % ``candidate``; traffic unchanged


@dataclass(frozen=True)
class Strategy:
    kind: Kind = Kind.IMMEDIATE
    canary_percent: int = DEFAULT_CANARY_PERCENT

    def __post_init__(self) -> None:
        if not 1 <= self.canary_percent <= 99:
            raise InvalidArgument(f"canary percent must be 1..99, not {self.canary_percent}")


class Readiness(enum.Enum):
    READY = "Ready"
    PENDING = "Pending"  # created, not Ready yet
    FAILED = "Failed"  # Ready=False
    UNKNOWN = "Unknown"  # not named by the status


def strategy_of(service: Mapping[str, Any] | None, default: Strategy) -> Strategy:
    """The Service's strategy from its annotations, ``default`` where unset.
    InvalidArgument names the annotation whose value is bad."""
    notes = annotations_of(service or {})
    text = notes.get(STRATEGY, default.kind.value)
    try:
        kind = Kind(text)
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise InvalidArgument(f"annotation {STRATEGY}={text!r}: expected {kinds}") from None
    percent = notes.get(CANARY_PERCENT, str(default.canary_percent))
    if not percent.isdigit() or not 1 <= int(percent) <= 99:
        raise InvalidArgument(f"annotation {CANARY_PERCENT}={percent!r}: expected 1..99")
    return Strategy(kind, int(percent))


def revision_readiness(service: Mapping[str, Any]) -> dict[str, Readiness]:
    """What a Service's status tells about its revisions (rollway may not read
    Revisions): the targets of ``status.traffic`` and the latest ready revision
    are Ready; a latest created one that is not ready is FAILED when
    ConfigurationsReady is False, else PENDING."""
    status = service.get("status") or {}
    found: dict[str, Readiness] = {}
    for target in status.get("traffic") or ():
        if target.get("revisionName"):
            found[target["revisionName"]] = Readiness.READY
    ready, created = status.get("latestReadyRevisionName"), status.get("latestCreatedRevisionName")
    if ready:
        found[ready] = Readiness.READY
    if created and created != ready:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
        failed = conditions.get("ConfigurationsReady") == "False"
        found[created] = Readiness.FAILED if failed else Readiness.PENDING
    return found


def revision_name(service: str, generation: int) -> str:
    """``<service>-g<generation>``: Knative wants a revision name to start with
    ``<service>-`` and be a DNS label."""
    name = f"{service}-g{generation}"
    if not DNS_LABEL.fullmatch(name):
        raise InvalidArgument(f"revision name {name!r} is not a DNS label of at most 63 characters")
    return name


def generation_of(service: str, revision: str) -> int | None:
    """N for a revision ``<service>-g<N>`` that rollway named, else None."""
    match = re.fullmatch(re.escape(service) + r"-g([0-9]{1,18})", revision)
    return int(match.group(1)) if match else None


def watermark(service: Mapping[str, Any]) -> int:
    """The ``rollway.dev/generation`` annotation: 0 on a Service never rolled out."""
    text = annotations_of(service).get(GENERATION, "0")
    if not text.isdigit():
        raise InvalidArgument(f"annotation {GENERATION}={text!r} is not a generation number")
    return int(text)


def service_from_template(
    template: Mapping[str, Any], name: str, model: str, namespace: str = ""
) -> Service:
    """A new Service for ``model`` from a model group's template (e.g.
    ``infra/base/serving-grpc.yaml``): named ``name``, serving ``model`` only,
    labelled as a model group of its own; traffic and revision name are the
    plan's to set."""
    if template.get("apiVersion") != API_VERSION or template.get("kind") != KIND:
        raise InvalidArgument(f"the template is not a Knative Service ({API_VERSION} {KIND})")
    if not DNS_LABEL.fullmatch(name):
        raise InvalidArgument(f"Service name {name!r} is not a DNS label of at most 63 characters")
    service = without_status(template)
    metadata = service["metadata"]
    for field in (*_SERVER_FIELDS, "namespace"):
        metadata.pop(field, None)
    metadata["name"] = name
    if namespace:
        metadata["namespace"] = namespace
    metadata.setdefault("annotations", {})[MODEL] = model
    spec = service.setdefault("spec", {})
    spec.pop("traffic", None)
    template_metadata = spec.setdefault("template", {}).setdefault("metadata", {})
    template_metadata.pop("name", None)
    for labels in (metadata.setdefault("labels", {}), template_metadata.setdefault("labels", {})):
        labels[GROUP_LABEL] = name
    set_env(serving_container(service), MODELS_ENV, model)
    return service


def check_service(service: Mapping[str, Any]) -> list[str]:
    """Knative's admission rules that the CRD schema does not state, for the
    fields rollway writes; [] if none is broken. (A cluster checks them all.)"""
    name = (service.get("metadata") or {}).get("name", "")
    problems = [] if DNS_LABEL.fullmatch(name) else [f"name {name!r} is not a DNS label"]
    spec = service.get("spec") or {}
    revision = ((spec.get("template") or {}).get("metadata") or {}).get("name")
    if revision is not None and not (
        revision.startswith(f"{name}-") and DNS_LABEL.fullmatch(revision)
    ):
        problems.append(f"revision name {revision!r} must be a DNS label starting with {name}-")
    traffic = spec.get("traffic")
    if traffic is None:
        return problems
    tags = [t["tag"] for t in traffic if t.get("tag")]
    if len(set(tags)) != len(tags):
        problems.append(f"traffic tags are not unique: {tags}")
    for tag in tags:
        if not DNS_LABEL.fullmatch(tag):
            problems.append(f"traffic tag {tag!r} is not a DNS label")
    for index, target in enumerate(traffic):
        pinned, latest = bool(target.get("revisionName")), target.get("latestRevision")
        if pinned == bool(latest):
            problems.append(f"traffic[{index}] needs revisionName or latestRevision: true")
        if not 0 <= target.get("percent", 0) <= 100:
            problems.append(f"traffic[{index}].percent is not 0..100")
        if "url" in target:
            problems.append(f"traffic[{index}].url is for the status only")
    if traffic and sum(t.get("percent", 0) for t in traffic) != 100:
        problems.append("traffic percents do not add up to 100")
    return problems


def serving_container(service: Mapping[str, Any]) -> dict[str, Any]:
    """The container with ``ROLLWAY_PIN_GENERATION``, else the first one."""
    containers = service.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if not containers:
        raise InvalidArgument(f"Service {service['metadata']['name']} has no container")
    chosen: dict[str, Any] = containers[0]
    for container in containers:
        if any(e.get("name") == PIN_ENV for e in container.get("env") or ()):
            chosen = container
            break
    return chosen


def env_value(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or ():
        if item.get("name") == name:
            value: str | None = item.get("value")
            return value
    return None


def set_env(container: dict[str, Any], name: str, value: str) -> None:
    env = container.setdefault("env", [])
    entry = {"name": name, "value": value}
    for index, item in enumerate(env):
        if item.get("name") == name:
            env[index] = entry  # a valueFrom is replaced too
            return
    env.append(entry)


def annotations_of(service: Mapping[str, Any]) -> dict[str, str]:
    return dict((service.get("metadata") or {}).get("annotations") or {})


def without_status(service: Mapping[str, Any]) -> Service:
    """A deep copy without ``status``, which is the server's."""
    copied = copy.deepcopy(dict(service))
    copied.pop("status", None)
    copied.setdefault("metadata", {})
    return copied
