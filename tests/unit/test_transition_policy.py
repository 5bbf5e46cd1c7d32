"""functions/serving/core/policy.py: the availability-preserving transition
policy, as tables of cases (versions the manager holds, aspired set, labels)."""

from __future__ import annotations

import pytest

from functions.serving.core.lifecycle import VersionState
from functions.serving.core.policy import Transitions, VersionView, transitions

A = VersionView(VersionState.AVAILABLE)
LOADING = VersionView(VersionState.LOADING)
UNLOADED = VersionView(VersionState.END)
FAILED = VersionView(VersionState.END, failed=True)
FAILED_CHANGED = VersionView(VersionState.END, failed=True, changed=True)

CASES = [
    # (id, held versions, aspired, pinned by labels, expected)
    ("first load, newest first", {}, {1, 2}, set(), Transitions(load=(2, 1))),
    ("nothing to do", {1: A}, {1}, set(), Transitions()),
    ("new version loads before the old unloads", {1: A}, {2}, set(), Transitions(load=(2,))),
    ("old keeps serving while the new loads", {1: A, 2: LOADING}, {2}, set(), Transitions()),
    ("new AVAILABLE: old unloads", {1: A, 2: A}, {2}, set(), Transitions(unload=(1,))),
    ("new failed: old keeps serving", {1: A, 2: FAILED}, {2}, set(), Transitions()),
    ("failed and unchanged: not hammered", {2: FAILED}, {2}, set(), Transitions()),
    ("failed, content changed: loaded again", {2: FAILED_CHANGED}, {2}, set(),
     Transitions(load=(2,))),
    ("unloaded earlier, aspired again", {1: UNLOADED, 2: A}, {1, 2}, set(),
     Transitions(load=(1,))),
    ("model left the config: everything unloads", {1: A, 2: A}, set(), set(),
     Transitions(unload=(1, 2))),
    ("several unaspired, none aspired ready: the newest stays", {1: A, 2: A, 3: A, 4: LOADING},
     {4}, set(), Transitions(unload=(1, 2))),
    ("oldest first", {1: A, 2: A, 3: A}, {3}, set(), Transitions(unload=(1, 2))),
    ("a labelled version stays until the label moves", {1: A, 2: A}, {2}, {1}, Transitions()),
    ("a labelled version holds availability for the others", {1: A, 2: A, 3: LOADING}, {3},
     {1}, Transitions(unload=(2,))),
]  # fmt: skip


@pytest.mark.parametrize(
    ("held", "aspired", "pinned", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_transitions(
    held: dict[int, VersionView], aspired: set[int], pinned: set[int], expected: Transitions
) -> None:
    assert transitions(held, frozenset(aspired), frozenset(pinned)) == expected
