"""Handler: one ``AssignmentChanged`` -> each Service of its model rolled out.

Shared by ``rollway rollout run`` (a Kafka consumer, ``consumer.py``) and the
Knative function (``functions/rollout_function``). Decoding is pure and never
raises on its input; ``roll_out`` does the I/O, through ``apply``.

One report per Service, with its outcome:

- ``created``, ``patched``: the Service now carries the assignment's generation;
- ``unchanged``: nothing to do (a replayed or older generation);
- ``absent``: there is no such Service and creation is off: the model is not
  rolled out in this namespace;
- ``refused``: the plan or the API refused it (a bad annotation, a Service of
  another model, forbidden): retrying cannot help, the event is done;
- ``failed``: retriable (the API unreachable, conflicts that outlasted the
  attempts). ``roll_out`` raises after trying every Service, so that the caller
  delivers the event again; every step is idempotent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from functions.rollout import apply, plan
from functions.rollout.service import Service, service_from_template, strategy_of
from functions.rollout.settings import RolloutConfig, services_for
from loader.decode import MAX_EVENT_BYTES
from loader.errors import InvalidArgument, RollwayError
from loader.events import (
    ASSIGNMENT_CHANGED,
    KAFKASOURCE_TYPE,
    decode_assignment_record,
    from_http_headers,
    header,
    kafkasource_record,
)
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged

log = logging.getLogger("rollway.rollout")

OUTCOMES = Counter("rollway_rollout_outcomes", "Services rolled out, by outcome", ["outcome"])


@dataclass(frozen=True)
class Skip:
    """A delivery that is no AssignmentChanged to roll out. ``malformed``: it
    never can be (as opposed to another event type, or a tombstone)."""

    reason: str
    malformed: bool = False


@dataclass(frozen=True)
class Report:
    model: str
    generation: int
    service: str
    outcome: str
    reason: str = ""
    revision: str = ""  # the Service's latest revision template after the step


def decode_record(
    value: bytes | None, headers: Sequence[tuple[str, bytes]] = (), key: bytes | None = None
) -> AssignmentChanged | Skip:
    """A record of the assignments topic, keyed by model: a binary-mode
    CloudEvent (validated by the SDK) or a bare proto3 JSON value, as
    ``events.decode_assignment_record`` reads them for every consumer."""
    if value is None:
        return Skip("a tombstone")
    ce_type = header(list(headers), "ce_type")
    if ce_type is not None and ce_type != ASSIGNMENT_CHANGED:
        return Skip(f"a {ce_type[:100]!r} event is not for the rollout")
    if len(value) > MAX_EVENT_BYTES:
        return Skip(f"the value is over {MAX_EVENT_BYTES} bytes", malformed=True)
    try:
        assignment = decode_assignment_record(value, headers)
    except InvalidArgument as err:
        return Skip(err.message, malformed=True)
    assert assignment is not None  # tombstones and other types are skipped above
    if not assignment.model or assignment.generation <= 0:
        return Skip("AssignmentChanged needs a model and a generation > 0", malformed=True)
    if key is not None and key.decode("utf-8", "replace") != assignment.model:
        return Skip(f"record key {key[:100]!r} is not the model {assignment.model}", malformed=True)
    return assignment


def decode_http(headers: Mapping[str, str], body: bytes) -> AssignmentChanged | Skip:
    """A KafkaSource delivery: the record's own CloudEvent (ce-type
    ``dev.rollway.assignment.changed.v1``), or a plain record wrapped as
    ``dev.knative.kafka.event`` (the record's key and headers then come as
    extensions: ``events.kafkasource_record``). The SDK's HTTP binding decodes
    and validates the delivery; another event type is skipped before that."""
    lower = {str(name).lower(): str(value) for name, value in headers.items()}
    ce_type = lower.get("ce-type")
    if ce_type is None:
        return Skip("no ce-type header (a binary-mode CloudEvent)", malformed=True)
    if ce_type not in (KAFKASOURCE_TYPE, ASSIGNMENT_CHANGED):
        return decode_record(body, [("ce_type", ce_type.encode())])
    try:
        delivery = from_http_headers(lower, body)
    except InvalidArgument as err:
        return Skip(err.message, malformed=True)
    if ce_type != KAFKASOURCE_TYPE:
        return decode_record(body, [("ce_type", ce_type.encode())])
    key, record_headers = kafkasource_record(delivery)
    return decode_record(body, record_headers, key)


def roll_out(
    api: apply.ServicesApi,
    config: RolloutConfig,
    assignment: AssignmentChanged,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Report]:
    """Plans and applies ``assignment`` on each Service of its model (reports
    above); raises the first retriable error after trying them all."""
    model, generation = assignment.model, assignment.generation
    try:
        names = services_for(model, config)
    except InvalidArgument as err:
        return [_record(Report(model, generation, "", "refused", err.message))]
    reports: list[Report] = []
    retry: RollwayError | None = None
    for name in names:

        def compute(current: Service | None, name: str = name) -> Service | None:
            template = None
            if current is None and config.template is not None:
                template = service_from_template(config.template, name, model, config.namespace)
            strategy = strategy_of(current if current is not None else template, config.strategy)
            return plan.desired_service(current, assignment, strategy, template=template)

        create = config.create and config.template is not None
        try:
            applied = apply.apply(api, config.namespace, name, compute, create=create, sleep=sleep)
        except RollwayError as err:
            outcome = "failed" if err.retriable else "refused"
            retry = retry or (err if err.retriable else None)
            reports.append(_record(Report(model, generation, name, outcome, err.message)))
            continue
        revision = _revision(applied.service)
        reports.append(
            _record(Report(model, generation, name, applied.outcome.value, "", revision))
        )
    if retry is not None:
        raise retry
    return reports


def heal_service(api: apply.ServicesApi, namespace: str, name: str) -> apply.Applied:
    """Takes the Service's failed revisions out of its traffic, if any."""
    return apply.apply(api, namespace, name, lambda s: None if s is None else plan.heal(s))


def _revision(service: Mapping[str, Any] | None) -> str:
    spec = (service or {}).get("spec") or {}
    name = ((spec.get("template") or {}).get("metadata") or {}).get("name")
    return str(name or "")


def _record(report: Report) -> Report:
    OUTCOMES.labels(report.outcome).inc()
    fields = {k: v for k, v in vars(report).items() if v not in ("", None)}
    level = logging.WARNING if report.outcome in ("refused", "failed") else logging.INFO
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    log.log(level, "rollout %s", text, extra={"fields": fields})
    return report
