"""Plan: the Knative Service that carries out one rollout step. Pure policy.

(current Service, assignment, strategy, revision readiness) -> the desired
Service, as a plain dict; no I/O and no clock, so it is tested with tables of
cases (``tests/rollout/test_plan.py``), and ``apply`` only moves dicts.

Contract of a Service that rollway manages (annotations: ``service.py``):

- **Revisions are named by generation.** Generation N of the assignment runs
  as revision ``<service>-g<N>``, whose container has ``ROLLWAY_PIN_GENERATION=N``
  (``rollway serve --pin_generation``): a revision keeps serving what it was
  checked with, and moving traffic between generations is moving it between
  revisions.
- **rollway owns ``spec.traffic``.** Every target is pinned by ``revisionName``
  (``latestRevision: false``) and tagged ``stable`` (the rest of the traffic),
  ``canary`` (a share) or ``candidate`` (0 %, reachable at its tag URL only).
  Knative programs a split only once all its targets are Ready, so the old
  split serves until a new revision is Ready.
- **A failed revision gets no traffic.** A revision whose Ready is False is
  dropped from the split (a canary's share goes back to ``stable``); a failed
  ``stable`` falls back to the previous revision, or, with none (a failed first
  rollout), to a newer one. Left in, a failed target would also keep Knative
  from programming any later split.

| step | stable | canary | candidate | rollback target after |
|---|---|---|---|---|
| first rollout (any strategy) | new | - | - | - |
| new generation, immediate | new | - | - | old stable |
| new generation, canary | kept | new (replaces a running canary, same share) | - | unchanged |
| new generation, manual | kept | kept | new | unchanged |
| promote | candidate, else canary | - | - | old stable |
| rollback with a canary or candidate | kept | - | - | unchanged |
| rollback without | previous | - | - | the revision left |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from functions.rollout.service import (
    GENERATION,
    MODEL,
    MODELS_ENV,
    PIN_ENV,
    PREVIOUS,
    Kind,
    Readiness,
    Service,
    Strategy,
    annotations_of,
    env_value,
    revision_name,
    revision_readiness,
    serving_container,
    set_env,
    watermark,
    without_status,
)
from loader.errors import FailedPrecondition, InvalidArgument

STABLE, CANARY, CANDIDATE = "stable", "canary", "candidate"

__all__ = ["Kind", "Readiness", "Split", "Strategy", "desired_service", "promote", "rollback"]


class AssignmentLike(Protocol):
    """What a plan needs of an ``AssignmentChanged``."""

    @property
    def model(self) -> str: ...
    @property
    def generation(self) -> int: ...


@dataclass(frozen=True)
class Split:
    """rollway's view of ``spec.traffic``, plus the rollback target."""

    stable: str | None = None
    canary: str | None = None
    percent: int = 0  # the canary's share
    candidate: str | None = None
    previous: str | None = None


def desired_service(
    current: Mapping[str, Any] | None,
    assignment: AssignmentLike,
    strategy: Strategy,
    *,
    template: Mapping[str, Any] | None = None,
    revision_status: Mapping[str, Readiness] | None = None,
) -> Service:
    """The Service after ``assignment`` is rolled out with ``strategy``.

    ``current`` is the Service as read; None when there is none, and then
    ``template`` (named by ``service.service_from_template``) is the base. An
    assignment not newer than the Service's ``rollway.dev/generation`` only
    heals. The first rollout (no revision to keep) sends 100 % to the new
    revision whatever the strategy. ``revision_status`` defaults to
    ``revision_readiness(current)``. InvalidArgument for a Service that serves
    another model, or several.
    """
    base = current if current is not None else template
    if base is None:
        raise FailedPrecondition(f"no Service for model {assignment.model} and no template")
    service = without_status(base)
    _check_model(service, assignment.model)
    if assignment.generation <= 0:
        raise InvalidArgument(f"generation {assignment.generation} of {assignment.model}")
    before = split_of(base)
    split = before
    if assignment.generation > watermark(service):
        revision = revision_name(service["metadata"]["name"], assignment.generation)
        template_ = service.setdefault("spec", {}).setdefault("template", {})
        template_.setdefault("metadata", {})["name"] = revision
        set_env(serving_container(service), PIN_ENV, str(assignment.generation))
        split = _advance(before, revision, strategy)
        service["metadata"].setdefault("annotations", {}).update(
            {GENERATION: str(assignment.generation), MODEL: assignment.model}
        )
    return _with_split(service, before, _heal(split, _readiness(current, revision_status)))


def heal(
    current: Mapping[str, Any], revision_status: Mapping[str, Readiness] | None = None
) -> Service:
    """``current`` with its failed revisions taken out of the traffic; nothing else."""
    before = split_of(current)
    healed = _heal(before, _readiness(current, revision_status))
    return _with_split(without_status(current), before, healed)


def promote(
    current: Mapping[str, Any], revision_status: Mapping[str, Readiness] | None = None
) -> Service:
    """100 % to the candidate (or else the canary), tagged ``stable``; the old
    stable becomes the rollback target. FailedPrecondition when there is none,
    or it failed, or it is not Ready yet."""
    readiness = _readiness(current, revision_status)
    before = split_of(current)
    target = before.candidate or before.canary
    name = current.get("metadata", {}).get("name", "?")
    if target is None:
        raise FailedPrecondition(f"Service {name} has no canary or candidate revision to promote")
    state = readiness.get(target, Readiness.UNKNOWN)
    if state in (Readiness.FAILED, Readiness.PENDING):
        why = "failed (Ready=False)" if state is Readiness.FAILED else "is not Ready yet"
        raise FailedPrecondition(f"revision {target} of Service {name} {why}: not promoting it")
    after = _heal(Split(target, previous=before.stable), readiness)
    return _with_split(without_status(current), before, after)


def rollback_target(
    current: Mapping[str, Any], revision_status: Mapping[str, Readiness] | None = None
) -> str:
    """Where a rollback sends all traffic: the stable revision while a canary or
    candidate runs, else the previous stable one. FailedPrecondition if none."""
    split = _heal(split_of(current), _readiness(current, revision_status))
    if split.stable is not None and (split.canary or split.candidate):
        return split.stable
    if split.previous is not None:
        return split.previous
    name = current.get("metadata", {}).get("name", "?")
    raise FailedPrecondition(
        f"Service {name} has no canary and no previous revision to roll back to"
    )


def rollback(
    current: Mapping[str, Any],
    revision_status: Mapping[str, Readiness] | None = None,
    *,
    generation: int | None = None,
) -> Service:
    """All traffic to ``rollback_target``; canary and candidate removed. Without a
    canary the revision left becomes the rollback target, so a second rollback
    returns. ``generation`` (the assignment generation the rollback committed) is
    recorded as taken, so that its AssignmentChanged does not roll forward again."""
    readiness = _readiness(current, revision_status)
    target = rollback_target(current, readiness)
    before = split_of(current)
    healed = _heal(before, readiness)
    previous = healed.previous if target == healed.stable else healed.stable
    service = without_status(current)
    if generation is not None and generation > watermark(service):
        service["metadata"].setdefault("annotations", {})[GENERATION] = str(generation)
    return _with_split(service, before, _heal(Split(target, previous=previous), readiness))


def split_of(service: Mapping[str, Any]) -> Split:
    """The split a Service's ``spec.traffic`` states. On a Service rollway does
    not manage yet, the revision with the most traffic is ``stable`` (a
    ``latestRevision`` target resolved through the status)."""
    status = service.get("status") or {}
    latest = next(
        (t.get("revisionName") for t in status.get("traffic") or () if t.get("latestRevision")),
        status.get("latestReadyRevisionName"),
    )
    targets = service.get("spec", {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
    tagged: dict[str, tuple[str, int]] = {}
    untagged: list[tuple[int, str]] = []
    for target in targets:
        revision = target.get("revisionName") or (latest if target.get("latestRevision") else None)
        percent = min(max(int(target.get("percent") or 0), 0), 100)
        if not revision:
            continue
        if target.get("tag") in (STABLE, CANARY, CANDIDATE):
            tagged.setdefault(target["tag"], (revision, percent))
        else:
            untagged.append((percent, revision))
    stable = tagged[STABLE][0] if STABLE in tagged else max(untagged, default=(0, None))[1]
    canary, percent = tagged.get(CANARY, (None, 0))
    candidate = tagged.get(CANDIDATE, (None, 0))[0]
    if stable is None or canary == stable:
        canary, percent = None, 0
    previous = annotations_of(service).get(PREVIOUS) or None
    return Split(stable, canary, percent, None if candidate == stable else candidate, previous)


def traffic_of(split: Split) -> list[dict[str, Any]]:
    """``spec.traffic`` for a split that has a stable revision."""
    if split.stable is None:
        raise FailedPrecondition("a split without a stable revision cannot be routed")
    shares = [(split.stable, 100 - split.percent, STABLE)]
    shares += [(split.canary, split.percent, CANARY)] if split.canary else []
    shares += [(split.candidate, 0, CANDIDATE)] if split.candidate else []
    return [
        {"revisionName": revision, "percent": percent, "tag": tag, "latestRevision": False}
        for revision, percent, tag in shares
    ]


def _advance(split: Split, revision: str, strategy: Strategy) -> Split:
    if split.stable is None or split.stable == revision:  # the first rollout
        return Split(revision, previous=split.previous)
    if strategy.kind is Kind.IMMEDIATE:
        return Split(revision, previous=split.stable)
    if strategy.kind is Kind.CANARY:  # a running canary is replaced; stable keeps its share
        percent = split.percent if split.canary else strategy.canary_percent
        return Split(split.stable, revision, percent, None, split.previous)
    return replace(split, candidate=revision)


def _heal(split: Split, readiness: Mapping[str, Readiness]) -> Split:
    def failed(revision: str | None) -> bool:
        return revision is not None and readiness.get(revision) is Readiness.FAILED

    if failed(split.canary):
        split = replace(split, canary=None, percent=0)
    if failed(split.candidate):
        split = replace(split, candidate=None)
    if failed(split.previous):
        split = replace(split, previous=None)
    if failed(split.stable):
        # Back to the previous revision; with none, a newer revision beats a
        # stable that never served (a failed first rollout).
        if split.previous is not None:
            split = replace(split, stable=split.previous, previous=None)
        elif fallback := split.candidate or split.canary:
            split = Split(fallback)
    return split


def _with_split(service: Service, before: Split, after: Split) -> Service:
    """Writes ``after`` into ``service``. The traffic of a Service rollway never
    managed is left as Knative defaulted it while the split is unchanged."""
    notes = service["metadata"].setdefault("annotations", {})
    if after.previous and after.previous != after.stable:
        notes[PREVIOUS] = after.previous
    else:
        notes.pop(PREVIOUS, None)
    if after.stable is not None and (after != before or GENERATION in notes):
        service.setdefault("spec", {})["traffic"] = traffic_of(after)
    return service


def _check_model(service: Mapping[str, Any], model: str) -> None:
    name = service["metadata"]["name"]
    recorded = annotations_of(service).get(MODEL)
    if recorded and recorded != model:
        raise InvalidArgument(f"Service {name} serves model {recorded}, not {model}")
    served = env_value(serving_container(service), MODELS_ENV) or ""
    models = [m.strip() for m in served.split(",") if m.strip()]
    if models and models != [model]:
        raise InvalidArgument(
            f"Service {name} has {MODELS_ENV}={served}: a revision pinned to a "
            f"generation of {model} must serve {model} only"
        )


def _readiness(
    current: Mapping[str, Any] | None, given: Mapping[str, Readiness] | None
) -> Mapping[str, Readiness]:
    if given is not None:
        return given
    return revision_readiness(current) if current is not None else {}
