"""functions.rollout.plan: the pure policy from (Service, assignment,
strategy, readiness) to the desired Service, in tables of cases.
Every Service a plan produces is validated against the Knative Service CRD
(strict) and Knative's own traffic rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from functions.rollout import plan
from functions.rollout.service import (
    CANARY_PERCENT,
    GENERATION,
    PREVIOUS,
    STRATEGY,
    Kind,
    Readiness,
    Service,
    Strategy,
    service_from_template,
    strategy_of,
)
from loader.errors import FailedPrecondition, InvalidArgument
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from tests.rollout.helpers import (
    MODEL,
    NAMESPACE,
    new_service,
    pinned,
    schema_problems,
    served,
    template,
    traffic,
)

DEFAULT = Strategy()


def g(n: int) -> str:
    return f"mnist-g{n}"


def assignment(generation: int, model: str = MODEL) -> AssignmentChanged:
    return AssignmentChanged(model=model, generation=generation)


@dataclass(frozen=True)
class Step:
    do: str  # assign | promote | rollback | heal
    generation: int = 0  # assign: the generation; rollback: the one committed (0: none)
    expect: tuple[tuple[str, str, int], ...] = ()
    previous: str | None = None
    ready: tuple[str, ...] = ()  # revisions that became Ready before this step
    failed: tuple[str, ...] = ()  # revisions that failed before this step
    annotations: Mapping[str, str] = field(default_factory=dict)  # set before this step
    template: str = ""  # the template's revision after this step ("": not checked)


@dataclass(frozen=True)
class Scenario:
    id: str
    steps: tuple[Step, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    start: Callable[[], Service] = new_service


CANARY = {STRATEGY: "canary"}
MANUAL = {STRATEGY: "manual"}
S1 = ("stable", g(1), 100)
S2 = ("stable", g(2), 100)


def unmanaged() -> Service:
    """A Service people made: Knative's default traffic, revision mnist-00001 Ready."""
    service = new_service()
    service["spec"]["traffic"] = [{"latestRevision": True, "percent": 100}]
    service["spec"]["template"]["metadata"]["name"] = "mnist-00001"
    return service


SCENARIOS = [
    Scenario("first rollout", (Step("assign", 1, (S1,), template=g(1)),)),
    Scenario("first rollout, canary strategy: nothing to canary against",
             (Step("assign", 1, (S1,)),), CANARY),
    Scenario("first rollout, manual strategy", (Step("assign", 1, (S1,)),), MANUAL),
    Scenario("immediate: the new generation takes all", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S2,), g(1), ready=(g(1),), template=g(2)),
    )),
    Scenario("canary then promote", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("promote", expect=(S2,), previous=g(1), ready=(g(2),), template=g(2)),
    ), CANARY),
    Scenario("canary then rollback", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("rollback", expect=(S1,), template=g(2)),
        Step("assign", 2, (S1,)),  # the replayed event rolls nothing forward
    ), CANARY),
    Scenario("canary percent from the annotation", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 75), ("canary", g(2), 25)), ready=(g(1),)),
    ), {**CANARY, CANARY_PERCENT: "25"}),
    Scenario("a new generation during a canary replaces it; stable keeps its share", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("assign", 3, (("stable", g(1), 90), ("canary", g(3), 10)), ready=(g(2),),
             annotations={CANARY_PERCENT: "50"}, template=g(3)),
    ), CANARY),
    Scenario("a failed canary stays at 0 %", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("heal", expect=(S1,), failed=(g(2),)),
        Step("assign", 2, (S1,)),
        Step("assign", 3, (("stable", g(1), 90), ("canary", g(3), 10))),
    ), CANARY),
    Scenario("a failed new revision falls back to the previous one", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S2,), g(1), ready=(g(1),)),
        Step("heal", expect=(S1,), failed=(g(2),)),
        Step("assign", 3, (("stable", g(3), 100),), g(1)),
    )),
    Scenario("a failed first revision: the next generation takes all", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S2,), failed=(g(1),)),
    ), CANARY),
    Scenario("replayed and older generations change nothing", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S2,), g(1), ready=(g(1),)),
        Step("assign", 2, (S2,), g(1), ready=(g(2),), template=g(2)),
        Step("assign", 1, (S2,), g(1), template=g(2)),
    )),
    Scenario("manual: a 0 % candidate, promote, rollback twice", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S1, ("candidate", g(2), 0)), ready=(g(1),)),
        Step("promote", expect=(S2,), previous=g(1), ready=(g(2),)),
        Step("rollback", expect=(S1,), previous=g(2)),
        Step("rollback", expect=(S2,), previous=g(1)),
    ), MANUAL),
    Scenario("manual during a canary keeps the canary", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("assign", 3, (("stable", g(1), 90), ("canary", g(2), 10), ("candidate", g(3), 0)),
             ready=(g(2),), annotations=MANUAL),
        Step("promote", expect=(("stable", g(3), 100),), previous=g(1), ready=(g(3),)),
    ), CANARY),
    Scenario("a failed candidate is removed", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (S1, ("candidate", g(2), 0)), ready=(g(1),)),
        Step("heal", expect=(S1,), failed=(g(2),)),
    ), MANUAL),
    Scenario("rollback records the generation it committed", (
        Step("assign", 1, (S1,)),
        Step("assign", 2, (("stable", g(1), 90), ("canary", g(2), 10)), ready=(g(1),)),
        Step("rollback", 3, (S1,)),
        Step("assign", 3, (S1,), template=g(2)),
        Step("assign", 4, (("stable", g(1), 90), ("canary", g(4), 10)), template=g(4)),
    ), CANARY),
    Scenario("immediate on a Service people made", (
        Step("assign", 1, (S1,), "mnist-00001", ready=("mnist-00001",)),
        Step("rollback", expect=(("stable", "mnist-00001", 100),), previous=g(1)),
    ), start=unmanaged),
    Scenario("canary on a Service people made", (
        Step("assign", 1, (("stable", "mnist-00001", 90), ("canary", g(1), 10)),
             ready=("mnist-00001",)),
    ), CANARY, start=unmanaged),
]  # fmt: skip


def run(step: Step, current: Service) -> Service:
    if step.do == "assign":
        return plan.desired_service(
            current, assignment(step.generation), strategy_of(current, DEFAULT)
        )
    if step.do == "promote":
        return plan.promote(current)
    if step.do == "rollback":
        return plan.rollback(current, generation=step.generation or None)
    return plan.heal(current)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    service = scenario.start()
    service["metadata"]["annotations"].update(scenario.annotations)
    ready: set[str] = set()
    failed: set[str] = set()
    taken = 0
    for number, step in enumerate(scenario.steps, 1):
        ready.update(step.ready)
        failed.update(step.failed)
        service["metadata"]["annotations"].update(step.annotations)
        current = served(service, ready=ready, failed=failed, resource_version=str(number))
        service = run(step, current)
        where = f"step {number} ({step.do} {step.generation})"
        assert schema_problems(service) == [], where
        assert traffic(service) == list(step.expect), where
        assert service["metadata"]["annotations"].get(PREVIOUS) == step.previous, where
        assert "status" not in service
        if step.template:
            assert pinned(service) == (step.template, step.template.rsplit("-g", 1)[1]), where
        # A replayed event changes nothing, whatever happened since.
        taken = max(taken, step.generation if step.do == "assign" else 0)
        again = run(Step("assign", taken), served(service, ready=ready, failed=failed))
        assert traffic(again) == traffic(service), where


def test_a_new_generation_pins_the_revision_and_records_it() -> None:
    service = plan.desired_service(served(new_service()), assignment(7), DEFAULT)
    assert pinned(service) == (g(7), "7")
    assert service["metadata"]["annotations"][GENERATION] == "7"
    assert service["metadata"]["annotations"]["rollway.dev/model"] == MODEL
    assert traffic(service) == [("stable", g(7), 100)]
    assert all(t["latestRevision"] is False for t in service["spec"]["traffic"])
    assert schema_problems(service) == []


def test_creation_from_the_template_is_planned_with_no_current_service() -> None:
    made = service_from_template(template(), "iris", "iris", NAMESPACE)
    service = plan.desired_service(None, assignment(3, "iris"), DEFAULT, template=made)
    assert service["metadata"]["name"] == "iris"
    assert service["metadata"]["namespace"] == NAMESPACE
    assert service["metadata"]["labels"]["rollway.dev/model-group"] == "iris"
    env = {
        e["name"]: e.get("value")
        for e in service["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["ROLLWAY_MODELS"] == "iris"
    assert env["ROLLWAY_PIN_GENERATION"] == "3"
    assert traffic(service) == [("stable", "iris-g3", 100)]
    assert schema_problems(made) == [] and schema_problems(service) == []


def test_given_revision_status_wins_over_the_services_status() -> None:
    current = served(
        plan.desired_service(
            served(plan.desired_service(served(new_service(**CANARY)), assignment(1), DEFAULT)),
            assignment(2),
            Strategy(Kind.CANARY),
        ),
        ready=(g(1), g(2)),
    )
    failed = plan.heal(current, {g(2): Readiness.FAILED})
    assert traffic(failed) == [S1]
    assert traffic(plan.heal(current)) == [("stable", g(1), 90), ("canary", g(2), 10)]
    with pytest.raises(FailedPrecondition, match="failed"):
        plan.promote(current, {g(2): Readiness.FAILED})
    assert schema_problems(failed) == []


def canary_running(ready: tuple[str, ...] = (g(1),)) -> Service:
    first = plan.desired_service(served(new_service()), assignment(1), DEFAULT)
    second = plan.desired_service(
        served(first, ready=(g(1),)), assignment(2), Strategy(Kind.CANARY)
    )
    return served(second, ready=ready)


def with_annotation(key: str, value: str) -> Service:
    return served(new_service(**{key: value}))


def with_models(models: str) -> Service:
    service = new_service()
    container = service["spec"]["template"]["spec"]["containers"][0]
    next(e for e in container["env"] if e["name"] == "ROLLWAY_MODELS")["value"] = models
    return served(service)


ERRORS: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    ("promote with no canary", lambda: plan.promote(served(new_service())),
     FailedPrecondition, "no canary or candidate"),
    ("promote a canary not Ready yet", lambda: plan.promote(canary_running()),
     FailedPrecondition, "is not Ready yet"),
    ("promote a failed canary",
     lambda: plan.promote(canary_running(), {g(2): Readiness.FAILED}), FailedPrecondition,
     "failed"),
    ("rollback with nothing before", lambda: plan.rollback(served(new_service())),
     FailedPrecondition, "no canary and no previous revision"),
    ("a Service of another model", lambda: plan.desired_service(
        with_annotation("rollway.dev/model", "iris"), assignment(1), DEFAULT),
     InvalidArgument, "serves model iris"),
    ("a Service of several models", lambda: plan.desired_service(
        with_models("mnist,iris"), assignment(1), DEFAULT), InvalidArgument, "mnist only"),
    ("an unknown strategy", lambda: strategy_of(with_annotation(STRATEGY, "blue-green"), DEFAULT),
     InvalidArgument, "rollway.dev/strategy='blue-green'"),
    ("a canary of 0 %", lambda: strategy_of(with_annotation(CANARY_PERCENT, "0"), DEFAULT),
     InvalidArgument, "canary-percent='0'"),
    ("a canary of 100 %", lambda: strategy_of(with_annotation(CANARY_PERCENT, "100"), DEFAULT),
     InvalidArgument, "1..99"),
    ("a canary of ten", lambda: strategy_of(with_annotation(CANARY_PERCENT, "ten"), DEFAULT),
     InvalidArgument, "1..99"),
    ("a bad generation annotation", lambda: plan.desired_service(
        with_annotation(GENERATION, "x"), assignment(1), DEFAULT), InvalidArgument, "generation"),
    ("a revision name over 63 characters", lambda: plan.desired_service(
        served(new_service("m" * 60)), assignment(12345), DEFAULT), InvalidArgument, "DNS label"),
    ("no Service and no template", lambda: plan.desired_service(None, assignment(1), DEFAULT),
     FailedPrecondition, "no template"),
    ("generation 0", lambda: plan.desired_service(served(new_service()), assignment(0), DEFAULT),
     InvalidArgument, "generation 0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "call", "error", "match"), ERRORS, ids=[e[0] for e in ERRORS])
def test_refusals(name: str, call: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_a_human_edited_canary_share_is_kept_by_the_next_canary() -> None:
    current = canary_running(ready=(g(1), g(2)))
    current["spec"]["traffic"][0]["percent"] = 70
    current["spec"]["traffic"][1]["percent"] = 30
    after = plan.desired_service(current, assignment(3), Strategy(Kind.CANARY))
    assert traffic(after) == [("stable", g(1), 70), ("canary", g(3), 30)]
    assert schema_problems(after) == []
