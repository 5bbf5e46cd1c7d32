"""The pure parts of loader/verify.py: the verdict policy and the SavedModel layout rules."""

from __future__ import annotations

import pytest

from loader.verify import SEVERITY, Problem, ProblemKind, Verdict, decide, structure_problems

K = ProblemKind


def problems(*kinds: ProblemKind) -> list[Problem]:
    return [Problem(kind, f"file{i}", "detail") for i, kind in enumerate(kinds)]


DECIDE = [
    ((), Verdict.COMPLETE),
    ((K.MANIFEST_MISSING,), Verdict.INCOMPLETE),
    ((K.FILE_MISSING,), Verdict.INCOMPLETE),
    ((K.FILE_MISSING, K.FILE_MISSING), Verdict.INCOMPLETE),
    ((K.NOT_SETTLED,), Verdict.INCOMPLETE),
    ((K.MANIFEST_INVALID,), Verdict.CORRUPT),
    ((K.MANIFEST_MISMATCH,), Verdict.CORRUPT),
    # The manifest is written last: a short file under it will never grow.
    ((K.SIZE_MISMATCH,), Verdict.CORRUPT),
    ((K.CHECKSUM_MISMATCH,), Verdict.CORRUPT),
    ((K.UNLISTED_FILE,), Verdict.CORRUPT),
    ((K.NOT_REGULAR_FILE,), Verdict.CORRUPT),
    ((K.NO_SAVED_MODEL,), Verdict.CORRUPT),
    ((K.MISSING_INDEX,), Verdict.CORRUPT),
    ((K.MISSING_SHARD,), Verdict.CORRUPT),
    ((K.INCONSISTENT_SHARDS,), Verdict.CORRUPT),
    ((K.EMPTY_FILE,), Verdict.CORRUPT),
    ((K.LOAD_FAILED,), Verdict.CORRUPT),
    # Corrupt wins over still-arriving, whatever the order.
    ((K.FILE_MISSING, K.SIZE_MISMATCH), Verdict.CORRUPT),
    ((K.CHECKSUM_MISMATCH, K.FILE_MISSING), Verdict.CORRUPT),
    ((K.FILE_MISSING, K.NOT_SETTLED, K.UNLISTED_FILE), Verdict.CORRUPT),
]


@pytest.mark.parametrize(("kinds", "verdict"), DECIDE, ids=[str(i) for i in range(len(DECIDE))])
def test_decide(kinds: tuple[ProblemKind, ...], verdict: Verdict) -> None:
    assert decide(problems(*kinds)) is verdict
    assert decide(iter(problems(*kinds))) is verdict  # any iterable, consumed once


def test_every_kind_has_a_severity_and_a_table_row() -> None:
    assert set(SEVERITY) == set(ProblemKind)
    assert set(SEVERITY.values()) == {Verdict.INCOMPLETE, Verdict.CORRUPT}
    single = {kinds[0] for kinds, _ in DECIDE if len(kinds) == 1}
    assert single == set(ProblemKind)


def test_problem_is_a_frozen_value() -> None:
    problem = Problem(K.FILE_MISSING, "a/b", "gone")
    assert problem == Problem(K.FILE_MISSING, "a/b", "gone")
    assert str(problem) == "FILE_MISSING a/b: gone"
    assert str(Problem(K.MANIFEST_MISSING, "", "x")) == "MANIFEST_MISSING .: x"
    with pytest.raises(AttributeError):
        problem.path = "c"  # type: ignore[misc]


PB, INDEX = "saved_model.pb", "variables/variables.index"


def shard(i: int, n: int) -> str:
    return f"variables/variables.data-{i:05d}-of-{n:05d}"


STRUCTURE = [
    ("complete", [PB, INDEX, shard(0, 1), "assets/foo.txt"], []),
    ("pbtxt", ["saved_model.pbtxt", INDEX, shard(0, 1)], []),
    ("no variables at all", [PB], []),
    ("three shards", [PB, INDEX, shard(0, 3), shard(1, 3), shard(2, 3)], []),
    ("no saved model", [INDEX, shard(0, 1)], [(K.NO_SAVED_MODEL, PB)]),
    ("nothing", [], [(K.NO_SAVED_MODEL, PB)]),
    (
        "middle shard missing",
        [PB, INDEX, shard(0, 3), shard(2, 3)],
        [(K.MISSING_SHARD, shard(1, 3))],
    ),
    ("index but no shard", [PB, INDEX], [(K.MISSING_SHARD, "variables/")]),
    ("shards without index", [PB, shard(0, 1)], [(K.MISSING_INDEX, INDEX)]),
    (
        "counts disagree",
        [PB, INDEX, shard(0, 1), shard(0, 2), shard(1, 2)],
        [(K.INCONSISTENT_SHARDS, "variables/")],
    ),
    (
        "shard beyond count",
        [PB, INDEX, shard(0, 1), shard(1, 1)],
        [(K.INCONSISTENT_SHARDS, shard(1, 1))],
    ),
]


@pytest.mark.parametrize(
    ("paths", "expected"), [c[1:] for c in STRUCTURE], ids=[c[0] for c in STRUCTURE]
)
def test_structure(paths: list[str], expected: list[tuple[ProblemKind, str]]) -> None:
    assert [(p.kind, p.path) for p in structure_problems(paths)] == expected
