"""loader.assign: the pure policy from staged versions, config and intents to an assignment."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pytest

from loader.assign import (
    OperatorIntents,
    StagedVersion,
    assign,
    known_versions,
    next_generation,
    policy_update,
    reassign,
    rollback_intents,
    with_current,
)
from loader.errors import FailedPrecondition, InvalidArgument
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged, AssignmentDocument

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
LATEST2 = VersionPolicy.latest(2)


def sv(version: int, digest: str = "d") -> StagedVersion:
    return StagedVersion(version, f"s3://store/m/{version}", f"{digest}{version}")


def staged(*versions: int) -> dict[int, StagedVersion]:
    return {v: sv(v) for v in versions}


def spec(policy: VersionPolicy = LATEST2, labels: Mapping[str, int] | None = None) -> ModelSpec:
    return ModelSpec("m", "s3://store/m", policy, dict(labels or {}))


def generation(
    number: int, versions: Iterable[int], labels: Mapping[str, int] | None = None
) -> AssignmentChanged:
    return next_generation(
        AssignmentChanged(generation=number - 1), "m", [sv(v) for v in versions], labels or {}
    )


def served(assignment: AssignmentChanged | None) -> tuple[list[int], dict[str, int]] | None:
    if assignment is None:
        return None
    return [v.version for v in assignment.versions], dict(assignment.labels)


@dataclass(frozen=True)
class Case:
    id: str
    staged: dict[int, StagedVersion]
    spec: ModelSpec | None
    previous: AssignmentChanged | None = None
    intents: OperatorIntents = field(default_factory=OperatorIntents)
    want: tuple[list[int], dict[str, int]] | None = None


CASES = [
    Case("not in config: latest 1", staged(1, 3, 2), None, want=([3], {})),
    Case("latest 2", staged(1, 2, 3), spec(), want=([2, 3], {})),
    Case("all", staged(1, 2, 3), spec(VersionPolicy.all()), want=([1, 2, 3], {})),
    Case("specific: present ones", staged(1, 2), spec(VersionPolicy.specific([2, 9])),
         want=([2], {})),
    Case("specific: none present yet", staged(1), spec(VersionPolicy.specific([9]))),
    Case("nothing staged", {}, spec()),
    Case("late arrival does not displace newer", staged(3, 6, 7), spec(),
         previous=generation(4, [6, 7]), want=None),
    Case("late arrival, first assignment", staged(7, 3, 6), spec(), want=([6, 7], {})),
    Case("newer arrival moves latest", staged(3, 6, 7, 8), spec(),
         previous=generation(4, [6, 7]), want=([7, 8], {})),
    Case("idempotent", staged(1, 2), spec(labels={"stable": 2}),
         previous=generation(3, [1, 2], {"stable": 2})),
    Case("label change is a change", staged(1, 2), spec(labels={"stable": 1}),
         previous=generation(3, [1, 2], {"stable": 2}), want=([1, 2], {"stable": 1})),
    Case("config labels", staged(1, 2), spec(labels={"stable": 1, "canary": 2}),
         want=([1, 2], {"stable": 1, "canary": 2})),
    Case("pins ignore the policy", staged(1, 2, 3), spec(),
         intents=OperatorIntents(frozenset({1, 3})), want=([1, 3], {})),
    Case("pins of unstaged versions are not served", staged(1, 2), spec(),
         intents=OperatorIntents(frozenset({2, 5})), want=([2], {})),
    Case("pins, none staged: previous stays", staged(1), spec(),
         intents=OperatorIntents(frozenset({5}))),
    Case("operator label wins over config", staged(1, 2), spec(labels={"stable": 1}),
         intents=OperatorIntents(label_overrides={"stable": 2, "canary": 2}),
         want=([1, 2], {"stable": 2, "canary": 2})),
    Case("removed label stays off", staged(1, 2), spec(labels={"stable": 1, "canary": 2}),
         intents=OperatorIntents(removed_labels=frozenset({"canary"})),
         want=([1, 2], {"stable": 1})),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_assign(case: Case) -> None:
    result = assign("m", case.staged, case.spec, case.previous, intents=case.intents)
    assert served(result) == case.want


def test_generation_increments_and_stamps() -> None:
    first = assign("m", staged(1), None, None, cause="evt-1", changed_at=NOW)
    assert first is not None and first.generation == 1
    assert first.model == "m" and first.cause == "evt-1"
    assert first.changed_at.ToDatetime(tzinfo=datetime.timezone.utc) == NOW
    assert first.versions[0].version_uri == "s3://store/m/1"
    assert first.versions[0].manifest_sha256 == "d1"
    second = assign("m", staged(1, 2), None, first)
    assert second is not None and second.generation == 2
    assert not second.HasField("changed_at")  # pure: no clock unless given


def test_a_restaged_digest_is_a_change() -> None:
    previous = generation(5, [1])
    result = assign("m", {1: sv(1, digest="other")}, None, previous)
    assert result is not None and result.generation == 6
    assert result.versions[0].manifest_sha256 == "other1"


@pytest.mark.parametrize(
    ("labels", "intents", "named", "by"),
    [
        ({"stable": 1}, OperatorIntents(), "'stable'", "the model config"),
        ({}, OperatorIntents(label_overrides={"canary": 9}), "'canary'", "rollway label"),
        ({"a": 3, "b": 1}, OperatorIntents(), "'b'", "the model config"),
    ],
)
def test_a_label_to_a_version_not_served_is_refused(
    labels: dict[str, int], intents: OperatorIntents, named: str, by: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        assign("m", staged(1, 2, 3), spec(labels=labels), None, intents=intents)
    assert named in caught.value.message and by in caught.value.message


@pytest.mark.parametrize(
    ("model", "stage", "config", "previous"),
    [
        ("m", {1: sv(2)}, None, None),
        ("other", staged(1), spec(), None),
        ("m", staged(1), None, AssignmentChanged(model="x", generation=1)),
    ],
)
def test_inconsistent_inputs_are_invalid(
    model: str,
    stage: dict[int, StagedVersion],
    config: ModelSpec | None,
    previous: AssignmentChanged | None,
) -> None:
    with pytest.raises(InvalidArgument):
        assign(model, stage, config, previous)


def test_intents_merge_and_round_trip() -> None:
    intents = OperatorIntents(frozenset({3}), {"a": 1}, frozenset({"b"}))
    changed = intents.with_labels({"b": 2}, remove=["a"])
    assert changed == OperatorIntents(frozenset({3}), {"b": 2}, frozenset({"a"}))
    assert changed.owns("a") and changed.owns("b") and not changed.owns("c")
    with pytest.raises(InvalidArgument):
        intents.with_labels({"x": 1}, remove=["x"])
    document = AssignmentDocument()
    changed.with_pins([]).write_to(document)
    assert OperatorIntents.from_document(document) == changed.with_pins([])
    assert OperatorIntents.from_document(None) == OperatorIntents()


def document(
    *generations: AssignmentChanged, intents: OperatorIntents | None = None
) -> AssignmentDocument:
    """A document whose current is the first generation given, history the rest."""
    result = with_current(None, generations[0], intents)
    result.history.extend(generations[1:])
    return result


def test_reassign_labels_and_pins() -> None:
    doc = document(generation(2, [2, 3], {"stable": 2}), generation(1, [1, 2]))
    labelled = reassign(doc, OperatorIntents(label_overrides={"canary": 3}), cause="op")
    assert labelled is not None and labelled.current.generation == 3
    assert served(labelled.current) == ([2, 3], {"stable": 2, "canary": 3})
    assert dict(labelled.label_overrides) == {"canary": 3}
    # Versions from history may be pinned; a label that would dangle is refused.
    with pytest.raises(FailedPrecondition, match="'stable'"):
        reassign(doc, OperatorIntents(frozenset({1})))
    pinned = reassign(doc, OperatorIntents(frozenset({1, 2})))
    assert pinned is not None and served(pinned.current) == ([1, 2], {"stable": 2})
    assert pinned.current.versions[0].version_uri == "s3://store/m/1"
    # Nothing asked changes: no generation.
    assert reassign(doc, OperatorIntents()) is None


def test_clearing_a_pin_is_a_generation_that_keeps_versions() -> None:
    doc = document(generation(4, [1]), intents=OperatorIntents(frozenset({1})))
    cleared = reassign(doc, OperatorIntents(), cause="rollway pin by op")
    assert cleared is not None and cleared.current.generation == 5
    assert served(cleared.current) == ([1], {}) and not cleared.pinned_versions
    # The loader's next assignment applies the policy again.
    update = policy_update("m", staged(1, 2, 3), spec())
    after = update(cleared)
    assert after is not None and served(after.current) == ([2, 3], {})


def test_rollback_pins_history_0_and_survives_the_loader() -> None:
    good, bad = generation(1, [1], {"stable": 1}), generation(2, [2], {"stable": 2, "new": 2})
    doc = document(bad, good, intents=OperatorIntents(label_overrides={"new": 2}))
    intents = rollback_intents(doc)
    assert intents == OperatorIntents(frozenset({1}), {"stable": 1}, frozenset({"new"}))
    rolled = reassign(doc, intents, known=known_versions(doc, first=good), cause="rollback")
    assert rolled is not None and rolled.current.generation == 3
    assert served(rolled.current) == ([1], {"stable": 1})
    # A replayed publish event of the bad version (and a newer one) changes nothing.
    config = spec(VersionPolicy.latest(1), labels={"stable": 2})
    assert policy_update("m", staged(1, 2, 3), config)(rolled) is None
    with pytest.raises(FailedPrecondition, match="no earlier generation"):
        rollback_intents(document(good))


def test_policy_update_keeps_intents() -> None:
    first = policy_update("m", staged(1), None, cause="e1", changed_at=NOW)(None)
    assert first is not None and first.current.generation == 1 and not first.history
    first.label_overrides["canary"] = 1
    second = policy_update("m", staged(1, 2), spec(), cause="e2")(first)
    assert second is not None and served(second.current) == ([1, 2], {"canary": 1})
    assert dict(second.label_overrides) == {"canary": 1}
    assert policy_update("m", staged(1, 2), spec())(second) is None
