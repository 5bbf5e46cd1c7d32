"""functions.rollout.apply: get -> plan -> conditional patch, retried on 409
Conflict (bounded), and creation from the template. A fake CustomObjectsApi
(tests/rollout/fake_api.py) plays the API server: a unit test of the retry
logic; test_cluster.py runs the same code against a real one."""

from __future__ import annotations

from typing import Any

import pytest

from functions.rollout import apply, plan
from functions.rollout.apply import ApplyOutcome, merge_patch, service_patch
from functions.rollout.handler import roll_out
from functions.rollout.service import Service, Strategy
from functions.rollout.settings import RolloutConfig
from loader.errors import InvalidArgument, PermissionDenied, Unavailable
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from tests.rollout.fake_api import FakeApiError, FakeServices
from tests.rollout.helpers import NAMESPACE, new_service, pinned, schema_problems, template, traffic


def assign(generation: int) -> apply.Compute:
    def compute(current: Service | None) -> Service | None:
        event = AssignmentChanged(model="mnist", generation=generation)
        return plan.desired_service(current, event, Strategy())

    return compute


def no_sleep(sleeps: list[float]) -> Any:
    return sleeps.append


def cluster_with_mnist() -> FakeServices:
    api = FakeServices()
    api.put(NAMESPACE, new_service())
    return api


def test_a_conflict_on_patch_is_retried_on_the_fresh_service() -> None:
    api = cluster_with_mnist()

    def another_writer(fake: FakeServices) -> None:  # e.g. an operator's kubectl annotate
        service = fake.objects[(NAMESPACE, "mnist")]
        service["metadata"]["annotations"]["team"] = "vision"
        fake.put(NAMESPACE, service)

    api.before_write.append(another_writer)
    sleeps: list[float] = []
    applied = apply.apply(api, NAMESPACE, "mnist", assign(1), sleep=no_sleep(sleeps))
    assert applied.outcome is ApplyOutcome.PATCHED
    assert applied.attempts == 2
    assert api.calls == ["get", "patch", "get", "patch"]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 1.0
    stored = api.objects[(NAMESPACE, "mnist")]
    assert stored["metadata"]["annotations"]["team"] == "vision"  # the other write is kept
    assert traffic(stored) == [("stable", "mnist-g1", 100)]
    assert pinned(stored) == ("mnist-g1", "1")
    assert schema_problems(stored) == []


def test_conflicts_are_bounded_and_retriable() -> None:
    api = cluster_with_mnist()
    for _ in range(3):
        api.before_write.append(
            lambda fake: fake.put(NAMESPACE, fake.objects[(NAMESPACE, "mnist")])
        )
    sleeps: list[float] = []
    with pytest.raises(Unavailable, match="kept changing: gave up after 3 attempts") as caught:
        apply.apply(api, NAMESPACE, "mnist", assign(1), attempts=3, sleep=no_sleep(sleeps))
    assert caught.value.retriable
    assert api.calls == ["get", "patch"] * 3
    assert len(sleeps) == 2  # no wait after the last attempt: the caller backs off itself


def test_an_unchanged_service_is_not_written() -> None:
    api = cluster_with_mnist()
    assert apply.apply(api, NAMESPACE, "mnist", assign(1)).outcome is ApplyOutcome.PATCHED
    again = apply.apply(api, NAMESPACE, "mnist", assign(1))
    assert again.outcome is ApplyOutcome.UNCHANGED
    assert api.calls == ["get", "patch", "get"]


def test_a_missing_service_is_left_alone_unless_creation_is_on() -> None:
    api = FakeServices()
    applied = apply.apply(api, NAMESPACE, "mnist", assign(1))
    assert applied.outcome is ApplyOutcome.ABSENT and api.calls == ["get"]


def test_instance_creation_from_the_template() -> None:
    """Opt-in: the Service is made from infra/base/serving-grpc.yaml, named after the model."""
    api = FakeServices()
    config = RolloutConfig(NAMESPACE, create=True, template=template())
    reports = roll_out(api, config, AssignmentChanged(model="iris", generation=4))
    assert [(r.service, r.outcome, r.revision) for r in reports] == [("iris", "created", "iris-g4")]
    created = api.objects[(NAMESPACE, "iris")]
    assert schema_problems(created) == []
    assert created["metadata"]["namespace"] == NAMESPACE
    assert created["metadata"]["annotations"]["rollway.dev/model"] == "iris"
    assert traffic(created) == [("stable", "iris-g4", 100)]
    assert pinned(created) == ("iris-g4", "4")
    container = created["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ROLLWAY_MODELS", "value": "iris"} in container["env"]
    # The template's sizing and probes come along unchanged.
    assert (
        container["resources"]
        == template()["spec"]["template"]["spec"]["containers"][0]["resources"]
    )


def test_a_service_created_meanwhile_is_patched_instead() -> None:
    api = FakeServices()
    api.before_write.append(lambda fake: fake.put(NAMESPACE, new_service()))
    applied = apply.apply(
        api, NAMESPACE, "mnist", lambda current: assign(1)(current or new_service()), create=True,
        sleep=lambda _: None,
    )  # fmt: skip
    assert applied.outcome is ApplyOutcome.PATCHED
    assert api.calls == ["get", "create", "get", "patch"]


def test_a_service_deleted_after_the_get_is_read_again() -> None:
    api = cluster_with_mnist()
    api.before_write.append(lambda fake: fake.objects.clear())
    applied = apply.apply(api, NAMESPACE, "mnist", assign(1), sleep=lambda _: None)
    assert applied.outcome is ApplyOutcome.ABSENT
    assert api.calls == ["get", "patch", "get"]


ERRORS = [
    (FakeApiError(403, "Forbidden", 'cannot patch resource "services"'), PermissionDenied,
     "rbac.yaml"),
    (FakeApiError(422, "Unprocessable", "Saw the following changes without a name change"),
     InvalidArgument, "without a name change"),
    (FakeApiError(500, "Internal Server Error"), Unavailable, "500"),
    (FakeApiError(429, "Too Many Requests"), Unavailable, "429"),
]  # fmt: skip


@pytest.mark.parametrize(("failure", "error", "match"), ERRORS, ids=[e[0].reason for e in ERRORS])
def test_api_errors_are_mapped_once(
    failure: FakeApiError, error: type[Exception], match: str
) -> None:
    api = cluster_with_mnist()
    api.failures["patch"] = [failure]
    with pytest.raises(error, match=match):
        apply.apply(api, NAMESPACE, "mnist", assign(1), sleep=lambda _: None)
    assert api.calls == ["get", "patch"]  # never retried


def test_a_plan_breaking_knatives_rules_is_not_written() -> None:
    api = cluster_with_mnist()

    def broken(current: Service | None) -> Service:
        assert current is not None
        current["spec"]["traffic"] = [{"revisionName": "mnist-g1", "percent": 50}]
        return current

    with pytest.raises(InvalidArgument, match="add up to 100"):
        apply.apply(api, NAMESPACE, "mnist", broken)
    assert api.calls == ["get"]


MERGE_PATCHES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("equal", {"a": 1, "b": {"c": [1]}}, {"a": 1, "b": {"c": [1]}}, {}),
    ("a value changes", {"a": 1}, {"a": 2}, {"a": 2}),
    ("a key goes: null", {"a": 1, "b": 2}, {"a": 1}, {"b": None}),
    ("nested objects merge", {"m": {"x": 1, "y": 2}}, {"m": {"x": 1, "y": 3}}, {"m": {"y": 3}}),
    ("lists are replaced whole", {"l": [{"n": 1}, {"n": 2}]}, {"l": [{"n": 1}]}, {"l": [{"n": 1}]}),
    ("a key appears", {}, {"a": {"b": 1}}, {"a": {"b": 1}}),
]


@pytest.mark.parametrize(("name", "before", "after", "patch"), MERGE_PATCHES,
                         ids=[m[0] for m in MERGE_PATCHES])  # fmt: skip
def test_merge_patch(
    name: str, before: dict[str, Any], after: dict[str, Any], patch: dict[str, Any]
) -> None:
    from tests.rollout.fake_api import merge

    assert merge_patch(before, after) == patch
    assert merge(before, patch) == after


def test_the_patch_is_conditional_and_touches_only_what_rollway_writes() -> None:
    current = FakeServices().put(NAMESPACE, new_service())
    current["status"] = {"latestReadyRevisionName": "x"}
    desired = assign(1)(current)
    assert desired is not None
    patch = service_patch(current, desired)
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    assert set(patch) == {"metadata", "spec"}
    assert set(patch["spec"]) == {"template", "traffic"}
    assert service_patch(current, current) is None


def test_status_of_reads_the_real_client_exception() -> None:
    exceptions = pytest.importorskip("kubernetes.client.exceptions")
    assert apply.status_of(exceptions.ApiException(status=409, reason="Conflict")) == 409
    assert apply.status_of(ValueError()) is None
