"""loader.proto_json: the one strict JSON -> proto decoder (events, assignments, manifests)."""

from __future__ import annotations

import pytest

from loader import proto_json
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged, AssignmentDocument


def problems(data: bytes) -> list[str]:
    with pytest.raises(proto_json.ProtoJsonError) as info:
        proto_json.decode(data, AssignmentChanged())
    return info.value.problems


def test_a_valid_document_decodes_with_map_keys_as_data() -> None:
    data = b'{"model": "m", "generation": "3", "labels": {"stable": "1", "model": "2"}}'
    decoded = proto_json.decode(data, AssignmentChanged())
    assert (decoded.model, decoded.generation, dict(decoded.labels)) == (
        "m",
        3,
        {"stable": 1, "model": 2},
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{", "is not JSON: "),
        (b"\xff{}", "is not JSON: "),  # UTF-8 only
        ('{"model": "m"}'.encode("utf-16"), "is not JSON: "),  # no encoding sniffing
        (b"[1]", "is not a JSON object but list"),
        (b'{"model": "a", "model": "b"}', "is not JSON: duplicate key 'model'"),
        (b'{"generation": NaN}', "is not JSON: 'NaN is not a JSON number'"),
        (b"[" * 100_000, "is not JSON: nested too deeply"),
        (b'{"generation": "x"}', "does not match its schema: "),
    ],
)
def test_what_is_refused(data: bytes, expected: str) -> None:
    (problem,) = problems(data)
    assert problem.startswith(expected), problem


def test_every_unknown_field_is_listed_nested_ones_too() -> None:
    data = b'{"current": {"model": "m", "versions": [{"version": 1, "mode": 1}]}, "x": 1, "y": 2}'
    with pytest.raises(proto_json.ProtoJsonError) as info:
        proto_json.decode(data, AssignmentDocument())
    assert info.value.problems == [
        "does not match its schema: unknown field current.versions[0].'mode'",
        "does not match its schema: unknown field 'x'",
        "does not match its schema: unknown field 'y'",
    ]


def test_unknown_fields_can_be_collected_with_other_problems() -> None:
    unknown: list[str] = []
    document = proto_json.load_object(b'{"model": "m", "extra": true}')
    decoded = proto_json.to_message(document, AssignmentChanged(), unknown)
    assert decoded.model == "m"
    assert unknown == ["does not match its schema: unknown field 'extra'"]
