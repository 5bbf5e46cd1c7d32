"""JSON text read and written as TF Serving's rapidjson reads and writes it.

:func:`parse_json` turns a request body into Python's ``json`` values and
:func:`dumps` turns the encoders' values back into text; neither knows about
tensors. How rapidjson's document model maps onto those values:

* A JSON integer is an integer only when it fits int64 or uint64; a larger one
  is a double, as rapidjson parses it. ``1.0`` is a double, ``1`` an integer:
  ``DT_INT32`` rejects ``1.0`` and a tf.Example feature becomes ``float_list``
  or ``int64_list`` by that distinction, value by value.
* Floats are written as TF Serving's ``WriteDecimal`` writes them: six
  significant digits (``printf("%g")``) when that round-trips to the same
  float32/float64, else ``max_digits10`` digits, with ``.0`` appended to a
  whole number that is not in exponent notation; ``NaN``, ``Infinity`` and
  ``-Infinity`` for non-finite values. :class:`JsonFloat` carries that text to
  :func:`dumps`.

Errors are :class:`InvalidArgument` with TF Serving's texts
(``JSON Parse error: ... at offset: N``), so clients that match on them keep
working; :func:`value_to_string` quotes a JSON value in such texts, and
:func:`clip` anything else taken from a request: an error quotes at most
``QUOTE_BYTES`` of it, never a whole body.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from loader.errors import InvalidArgument

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
FLT_MAX = float(np.finfo(np.float32).max)
# The most an error message quotes of a request (then "..."): enough to show
# what was wrong, never the whole of a 100 MB body.
QUOTE_BYTES = 200
_ELLIPSIS = "..."


class JsonFloat(float):
    """A float with the exact text TF Serving writes for it (see :func:`dumps`).

    Its value is that text parsed as a double, so ``JsonFloat`` from float32
    0.1 equals ``0.1``.
    """

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        value = float(text.replace("Infinity", "inf"))
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


# --------------------------------------------------------------------------
# Parsing


_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}


def _parse_int(text: str) -> int | float:
    value = int(text)
    if INT64_MIN <= value <= UINT64_MAX:
        return value
    return _parse_float(text)  # rapidjson stores a larger integer as a double


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("Number too big to be stored in double.")
    return value


def parse_json(body: bytes) -> Any:
    """Parses a request body as TF Serving does (NaN and +/-Infinity allowed);
    the top level must be an object."""
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            f"JSON Parse error: Invalid encoding in string (the body is not valid UTF-8) "
            f"at offset: {err.start}"
        ) from err
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidArgument(f"JSON Parse error: The document is empty. at offset: {len(body)}")
    try:
        doc = json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as err:
        message = next(
            (text for prefix, text in _RAPIDJSON_MESSAGES.items() if err.msg.startswith(prefix)),
            err.msg,
        )
        if err.msg.startswith("Expecting ',' delimiter"):
            message = "Missing a comma or ']' after an array element or '}' after an object member."
        offset = len(text[: err.pos].encode("utf-8", "surrogatepass"))
        raise InvalidArgument(f"JSON Parse error: {message} at offset: {offset}") from err
    except ValueError as err:  # a number out of range
        raise InvalidArgument(f"JSON Parse error: {err}") from err
    except RecursionError as err:
        raise InvalidArgument("JSON Parse error: the document is nested too deeply") from err
    if not isinstance(doc, dict):
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} Is not object")
    return doc


def clip(text: str, limit: int = QUOTE_BYTES) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes and "..." if longer: the one way an
    error quotes part of a request."""
    head = text[: limit + 1]  # every character is at least one byte
    data = head.encode("utf-8", "surrogatepass")
    if len(head) == len(text) and len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore") + _ELLIPSIS


def value_to_string(value: Any) -> str:
    """TF Serving's JsonValueToString, rapidjson's PrettyWriter output (4-space
    indents), clipped to ``QUOTE_BYTES``; a lone double is written as a float
    when it is in float range, as TF Serving does. Only what is quoted is
    written: a huge document costs no more than a small one."""
    if type(value) is float:
        if -FLT_MAX <= value <= FLT_MAX:
            return format_float32(value)
        return _format_double(value)
    parts: list[str] = []
    size = 0
    for chunk in _PRETTY.iterencode(value):
        parts.append(chunk)
        size += len(chunk)
        if size > QUOTE_BYTES:
            break
    return clip("".join(parts))


_PRETTY = json.JSONEncoder(indent=4, ensure_ascii=False)


# --------------------------------------------------------------------------
# Floats as TF Serving writes them (WriteDecimal)


def _finish(text: str) -> str:
    if "." not in text and "e" not in text:
        return text + ".0"
    return text


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def format_float32(value: float) -> str:
    """``value`` (a float32 widened to a double) as TF Serving writes a float."""
    if not math.isfinite(value):
        return _non_finite(value)
    text = f"{value:.6g}"
    if np.float32(float(text)) != np.float32(value):
        text = f"{value:.9g}"
    return _finish(text)


def _format_double(value: float) -> str:
    if not math.isfinite(value):
        return _non_finite(value)
    text = f"{value:.6g}"
    if float(text) != value:
        text = f"{value:.17g}"
    return _finish(text)


def float_texts(flat: npt.NDArray[Any]) -> list[JsonFloat]:
    """WriteDecimal for every element of a 1-D float32/float64 array."""
    values: list[float] = flat.tolist()
    short = [f"{v:.6g}" for v in values]
    if not short:
        return []
    parsed = np.array(short, dtype=np.float64)
    wide = flat.dtype == np.float64
    if not wide:
        parsed = parsed.astype(np.float32)
    same = (parsed == flat) | np.isnan(flat)
    digits = 17 if wide else 9
    out: list[JsonFloat] = []
    for value, text, ok in zip(values, short, same.tolist(), strict=True):
        if not math.isfinite(value):
            out.append(JsonFloat(_non_finite(value)))
        else:
            out.append(JsonFloat(_finish(text if ok else f"{value:.{digits}g}")))
    return out


# --------------------------------------------------------------------------
# Writing


def dumps(value: Any) -> bytes:
    """Compact JSON of what the encoders return (JsonFloat texts kept verbatim)."""
    parts: list[str] = []
    _write(value, parts.append, ascii_only=False)
    text = "".join(parts)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte: \u-escape strings
        parts = []
        _write(value, parts.append, ascii_only=True)
        return "".join(parts).encode("utf-8", "surrogateescape")


def _write(value: Any, emit: Callable[[str], Any], ascii_only: bool) -> None:
    kind = type(value)
    if kind is JsonFloat:
        emit(value.text)
    elif kind is str:
        emit(json.dumps(value, ensure_ascii=ascii_only))
    elif kind is list or kind is tuple:
        emit("[")
        for index, item in enumerate(value):
            if index:
                emit(",")
            _write(item, emit, ascii_only)
        emit("]")
    elif kind is dict:
        emit("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                emit(",")
            emit(json.dumps(str(key), ensure_ascii=ascii_only))
            emit(":")
            _write(item, emit, ascii_only)
        emit("}")
    elif value is None:
        emit("null")
    elif value is True:
        emit("true")
    elif value is False:
        emit("false")
    elif isinstance(value, int):
        emit(str(int(value)))
    elif isinstance(value, float):
        emit(_format_double(float(value)))
    elif isinstance(value, JsonFloat):
        emit(value.text)
    else:
        raise TypeError(f"cannot write {kind.__name__} as JSON")
