"""rollway's one JSON -> proto decoder, strict, for everything that crosses a
process boundary as proto3 JSON: events, assignment documents, manifests.

Strict means that two readers can never disagree on what a document says:

* the bytes are UTF-8 JSON holding one object;
* no key appears twice in an object (parsers disagree on which one wins);
* no ``NaN``/``Infinity`` (not JSON numbers);
* nesting is bounded by Python's recursion limit (``RecursionError`` becomes a
  problem, not a crash);
* every key names a field of the message: unknown fields are refused, all of
  them listed (``json_format`` stops at the first), rollway's nested messages
  included; then ``json_format.ParseDict`` checks types and values.

``ProtoJsonError.problems`` lists what is wrong; ``str()`` joins them. Each
problem starts with a phrase ("is not JSON: ...", "is not a JSON object but
list", "does not match its schema: ...") that the caller puts after the name
of what it decoded, and maps to its own error (``DataLoss`` for stored data,
``InvalidArgument`` for events, a dead letter for records).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from loader import display

M = TypeVar("M", bound=Message)

_OUR_PACKAGE = "rollway.v1"  # nested messages whose unknown keys are listed one by one


class ProtoJsonError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_object(data: bytes | str) -> dict[str, Any]:
    """The JSON object in ``data``; ``ProtoJsonError`` says why it is not one."""
    duplicates: list[str] = []
    try:
        text = (
            data.decode("utf-8") if isinstance(data, bytes) else data
        )  # UTF-8 only, no BOM sniffing
        document = json.loads(
            text, object_pairs_hook=_unique(duplicates), parse_constant=_no_constant
        )
    except RecursionError:
        raise ProtoJsonError(["is not JSON: nested too deeply"]) from None
    except ValueError as err:  # also UnicodeDecodeError and _no_constant's
        raise ProtoJsonError([f"is not JSON: {display.quoted(str(err), 300)}"]) from None
    if duplicates:
        raise ProtoJsonError([f"is not JSON: duplicate key {key!r}" for key in duplicates])
    if not isinstance(document, dict):
        raise ProtoJsonError([f"is not a JSON object but {type(document).__name__}"])
    return document


def to_message(document: dict[str, Any], message: M, unknown: list[str] | None = None) -> M:
    """Fills ``message`` from a decoded JSON object; ``ProtoJsonError`` lists
    every unknown field, or the first type or value ``json_format`` refuses.

    With ``unknown``, the unknown-field problems are appended there instead
    of raised (and those fields skipped), for a caller that reports them
    together with its own checks of the message; it must still refuse it."""
    found: list[str] = []
    _unknown_fields(document, message.DESCRIPTOR, "", found)
    problems = [f"does not match its schema: {problem}" for problem in found]
    if problems and unknown is None:
        raise ProtoJsonError(problems)
    if unknown is not None:
        unknown += problems
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=bool(problems))
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as err:
        raise ProtoJsonError(
            [f"does not match its schema: {display.quoted(str(err), 300)}"]
        ) from None
    return message


def decode(data: bytes | str, message: M) -> M:
    """``to_message(load_object(data), message)``."""
    return to_message(load_object(data), message)


def _unique(duplicates: list[str]) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document = dict(pairs)
        if len(document) != len(pairs):
            keys = [key for key, _ in pairs]
            duplicates.extend(sorted({k for k in keys if keys.count(k) > 1} - set(duplicates)))
        return document

    return hook


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _unknown_fields(value: Any, message: Any, where: str, out: list[str]) -> None:
    if not isinstance(value, dict):
        return
    fields = {f.name: f for f in message.fields} | {f.json_name: f for f in message.fields}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            out.append(f"unknown field {where}{key!r}")
        elif field.message_type is not None and field.message_type.file.package == _OUR_PACKAGE:
            if field.message_type.GetOptions().map_entry:
                continue  # a map's keys are data, not field names
            items = item if isinstance(item, list) else [item]
            for index, element in enumerate(items):
                suffix = f"[{index}]" if isinstance(item, list) else ""
                _unknown_fields(element, field.message_type, f"{where}{key}{suffix}.", out)
