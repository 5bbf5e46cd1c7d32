"""What the TF Serving JSON decoders and encoder share.

Checks on a request body's top level (an object, a string ``signature_name``),
``{"b64": ...}`` objects (how JSON carries bytes), and the names TF Serving's
json_tensor.cc gives JSON types and DataTypes in its error texts. Every
failure is an :class:`InvalidArgument` with TF Serving's text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from functions.serving.codecs import tensors
from functions.serving.codecs.json_text import value_to_string
from loader.errors import InvalidArgument

B64 = "b64"
_SIGNATURE = "signature_name"


def json_type(value: Any) -> str:
    """rapidjson's name of the value's type, as TF Serving's errors say it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def dtype_string(dtype: int) -> str:
    """TensorFlow's DataTypeString: "float", "int32", "string", ..."""
    name = tensors.dtype_name(dtype)
    return name[3:].lower() if name.startswith("DT_") else name


def check_object(body: Any) -> dict[str, Any]:
    """``body`` itself if it is a JSON object."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"JSON Value: {value_to_string(body)} Is not object")
    return body


def signature_name(doc: dict[str, Any]) -> str:
    """The body's ``signature_name``; "" if absent."""
    name = doc.get(_SIGNATURE, "")
    if not isinstance(name, str):
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


def nonempty_array(doc: dict[str, Any], key: str, not_array: str, empty: str) -> list[Any]:
    """``doc[key]`` if it is a non-empty JSON array; otherwise InvalidArgument
    "JSON Value: <doc> " and ``not_array`` or ``empty`` (each API's own text)."""
    value = doc[key]
    if not isinstance(value, list):
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} {not_array}")
    if not value:
        raise InvalidArgument(f"JSON Value: {value_to_string(doc)} {empty}")
    return value


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def decode_b64(value: Any) -> bytes:
    """The bytes of a ``{"b64": ...}`` object (padding optional)."""
    if not is_b64(value):
        raise InvalidArgument(
            f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data"
        )
    text: str = value[B64]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidArgument("Unable to base64 decode") from err


def lossy(value: Any, target: str) -> InvalidArgument:
    """The error for a number that ``target`` ("float", ...) cannot hold exactly."""
    return InvalidArgument(
        f"Cannot convert JSON value: {value_to_string(value)} to {target} without loss of "
        "precision."
    )
