"""loader.policy: the pure version policy, as tables of cases."""

from __future__ import annotations

import pytest

from loader.errors import ConfigError
from loader.policy import PolicyKind, VersionPolicy, aspired_versions


@pytest.mark.parametrize(
    ("found", "policy", "expected"),
    [
        # latest N
        ({1, 2, 3}, VersionPolicy.latest(1), {3}),
        ({1, 2, 3}, VersionPolicy.latest(2), {2, 3}),
        ({3, 1, 2}, VersionPolicy.latest(2), {2, 3}),
        ({1, 2}, VersionPolicy.latest(5), {1, 2}),
        ({7}, VersionPolicy.latest(1), {7}),
        ({0}, VersionPolicy.latest(1), {0}),
        ({1, 10, 9}, VersionPolicy.latest(1), {10}),  # numeric, not lexical order
        (set(), VersionPolicy.latest(1), set()),
        (set(), VersionPolicy.latest(3), set()),
        ({5, 6}, VersionPolicy(), {6}),  # the default is latest 1
        # all
        ({1, 2, 3}, VersionPolicy.all(), {1, 2, 3}),
        ({4}, VersionPolicy.all(), {4}),
        (set(), VersionPolicy.all(), set()),
        # specific
        ({1, 2, 3}, VersionPolicy.specific([2]), {2}),
        ({1, 2, 3}, VersionPolicy.specific([1, 3]), {1, 3}),
        ({1, 2, 3}, VersionPolicy.specific([9]), set()),
        ({1, 2, 3}, VersionPolicy.specific([3, 4]), {3}),
        ({1, 2}, VersionPolicy.specific([1, 2, 3, 4]), {1, 2}),
        (set(), VersionPolicy.specific([1]), set()),
    ],
    ids=[
        "latest1",
        "latest2",
        "latest2-unordered",
        "latest-more-than-found",
        "latest1-single",
        "latest1-version-zero",
        "latest1-numeric-order",
        "latest1-empty",
        "latest3-empty",
        "default-policy",
        "all",
        "all-single",
        "all-empty",
        "specific-one-present",
        "specific-two-present",
        "specific-absent",
        "specific-partial",
        "specific-superset",
        "specific-empty-found",
    ],
)
def test_aspired_versions(found: set[int], policy: VersionPolicy, expected: set[int]) -> None:
    result = aspired_versions(found, policy)
    assert result == frozenset(expected)
    assert isinstance(result, frozenset)


def test_aspired_versions_accepts_any_iterable() -> None:
    assert aspired_versions(iter([3, 1, 2]), VersionPolicy.latest(2)) == {2, 3}
    assert aspired_versions({1: "a", 2: "b"}, VersionPolicy.all()) == {1, 2}


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: VersionPolicy.latest(0), "num_versions must be at least 1"),
        (lambda: VersionPolicy.latest(-1), "num_versions must be at least 1"),
        (lambda: VersionPolicy(PolicyKind.LATEST, num_versions=0), "got 0"),
        (lambda: VersionPolicy.specific([]), "specific.versions must name at least one"),
        (lambda: VersionPolicy(PolicyKind.SPECIFIC), "specific.versions must name at least one"),
    ],
    ids=["latest0", "latest-negative", "latest0-ctor", "specific-empty", "specific-ctor"],
)
def test_invalid_policies_raise_config_error(make, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make()


@pytest.mark.parametrize(
    ("policy", "kind", "num_versions", "versions", "description"),
    [
        (VersionPolicy(), PolicyKind.LATEST, 1, frozenset(), "latest 1"),
        (VersionPolicy.latest(3), PolicyKind.LATEST, 3, frozenset(), "latest 3"),
        (VersionPolicy.all(), PolicyKind.ALL, 1, frozenset(), "all"),
        (VersionPolicy.specific([3, 1]), PolicyKind.SPECIFIC, 1, frozenset({1, 3}), "specific 1,3"),
    ],
)
def test_constructors_and_describe(
    policy: VersionPolicy,
    kind: PolicyKind,
    num_versions: int,
    versions: frozenset[int],
    description: str,
) -> None:
    assert policy.kind is kind
    assert policy.num_versions == num_versions
    assert policy.versions == versions
    assert policy.describe() == description


def test_policies_are_frozen_values() -> None:
    assert VersionPolicy.specific([1, 2]) == VersionPolicy.specific([2, 1])
    assert hash(VersionPolicy.latest(2)) == hash(VersionPolicy.latest(2))
    with pytest.raises(AttributeError):
        VersionPolicy().num_versions = 2  # type: ignore[misc]
