"""One JSON value to one tensor of a given DataType, as TF Serving's
FillTensorProto (``tensorflow_serving/util/json_tensor.cc``) fills one.

:func:`values` checks that a value is a dense nest of lists (the shape is read
off the first element at each level) and converts every leaf to the DataType:
a ``1.0`` is rejected for ``DT_INT32``, and a number the type cannot hold
exactly is an error, never a rounded or wrapped value; ``{"b64": ...}``
carries ``DT_STRING`` bytes. :func:`array` builds the numpy array. Failures
are :class:`InvalidArgument` with TF Serving's texts, or :class:`Unimplemented`
for a DataType JSON cannot carry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving.codecs import tensors
from functions.serving.codecs.json_text import (
    FLT_MAX,
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    value_to_string,
)
from functions.serving.codecs.json_values import decode_b64, dtype_string, json_type, lossy
from loader.errors import InvalidArgument, Unimplemented

_INT32_MIN, _INT32_MAX, _UINT32_MAX = -(2**31), 2**31 - 1, 2**32 - 1
_FLOAT_MAX_INT = 2**24 - 1  # largest integer TF Serving accepts for DT_FLOAT
_DOUBLE_MAX_INT = 2**53 - 1  # ... and for DT_DOUBLE

# types.proto's numbers, from the codecs' table: tensorflow.core.framework's
# types_pb2 would make importing this module load all of TensorFlow.
_ENUM = {d.name: d.enum for d in tensors.BY_ENUM.values()}
DT_FLOAT, DT_DOUBLE, DT_HALF = _ENUM["DT_FLOAT"], _ENUM["DT_DOUBLE"], _ENUM["DT_HALF"]
DT_INT8, DT_INT16, DT_INT32 = _ENUM["DT_INT8"], _ENUM["DT_INT16"], _ENUM["DT_INT32"]
DT_INT64, DT_UINT8, DT_UINT32 = _ENUM["DT_INT64"], _ENUM["DT_UINT8"], _ENUM["DT_UINT32"]
DT_UINT64, DT_BOOL, DT_STRING = _ENUM["DT_UINT64"], _ENUM["DT_BOOL"], _ENUM["DT_STRING"]


# --------------------------------------------------------------------------
# One JSON value to one DataType


def _type_error(value: Any, dtype: int) -> InvalidArgument:
    return InvalidArgument(
        f"JSON Value: {value_to_string(value)} Type: {json_type(value)} is not of expected "
        f"type: {dtype_string(dtype)}"
    )


def _to_float(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        if -FLT_MAX <= value <= FLT_MAX or not math.isfinite(value):
            return value
        raise lossy(value, "float")
    if kind is int:
        if abs(value) <= _FLOAT_MAX_INT:
            return value
        raise lossy(value, "float")
    raise _type_error(value, DT_FLOAT)


def _to_double(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return value
    if kind is int:
        if abs(value) <= _DOUBLE_MAX_INT:
            return value
        raise lossy(value, "double")
    raise _type_error(value, DT_DOUBLE)


def _int_converter(dtype: int, low: int, high: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is int and low <= value <= high:
            return value
        raise _type_error(value, dtype)

    return convert


def _to_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    raise _type_error(value, DT_BOOL)


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    raise _type_error(value, DT_STRING)


_CONVERTERS: dict[int, Callable[[Any], Any]] = {
    DT_FLOAT: _to_float,
    DT_DOUBLE: _to_double,
    # TF Serving takes any int32 for the narrower types and lets TensorFlow wrap
    # it; rollway rejects a value the type cannot hold, as for gRPC requests.
    DT_INT32: _int_converter(DT_INT32, _INT32_MIN, _INT32_MAX),
    DT_INT16: _int_converter(DT_INT16, -(2**15), 2**15 - 1),
    DT_INT8: _int_converter(DT_INT8, -(2**7), 2**7 - 1),
    DT_UINT8: _int_converter(DT_UINT8, 0, 2**8 - 1),
    DT_INT64: _int_converter(DT_INT64, INT64_MIN, INT64_MAX),
    DT_UINT32: _int_converter(DT_UINT32, 0, _UINT32_MAX),
    DT_UINT64: _int_converter(DT_UINT64, 0, UINT64_MAX),
    DT_BOOL: _to_bool,
    DT_STRING: _to_string,
}


def _convert(value: Any, dtype: int) -> Any:
    if isinstance(value, dict):
        if dtype == DT_STRING:
            return decode_b64(value)
        raise _type_error(value, dtype)
    convert = _CONVERTERS.get(dtype)
    if convert is None:
        raise Unimplemented(
            f"Conversion of JSON Value: {value_to_string(value)} to type: {dtype_string(dtype)}"
        )
    return convert(value)


# --------------------------------------------------------------------------
# One JSON value (a dense nest of lists) to one tensor


def _dense_shape(value: Any) -> list[int]:
    """The shape read off the first element at each level, as TF Serving does."""
    shape: list[int] = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    """TF Serving's FillTensorProto: checks that ``value`` is dense with ``shape``
    and appends its converted values to ``out`` in row-major order."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise InvalidArgument(
                f"JSON Value: {value_to_string(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_convert(value, dtype))
        return
    if level >= rank:
        raise InvalidArgument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise InvalidArgument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    if level == rank - 1 and not any(isinstance(v, list) for v in value):
        convert = _CONVERTERS.get(dtype)
        if convert is not None and dtype != DT_STRING:
            out.extend(map(convert, value))  # a dict is a type error here too
        else:
            out.extend(_convert(v, dtype) for v in value)
        return
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def values(value: Any, dtype: int) -> tuple[list[int], list[Any]]:
    """The shape of ``value`` and its leaves converted to ``dtype``, row-major."""
    shape = _dense_shape(value)
    if len(shape) > tensors.MAX_RANK:
        raise InvalidArgument(
            f"JSON value has {len(shape)} dimensions; rollway accepts at most {tensors.MAX_RANK}"
        )
    out: list[Any] = []
    _fill(value, 0, shape, dtype, out)
    return shape, out


def array(
    flat: list[Any], shape: list[int], dtype: int, what: str = "JSON value"
) -> npt.NDArray[Any]:
    """``flat`` (as :func:`values` returns it) as a ``dtype`` array of ``shape``;
    DT_STRING as an object array of bytes.

    JSON cannot broadcast: every element is written out in the body, so the
    body's size bounds what it decodes to (no :class:`tensors.Budget` needed);
    one tensor still may not exceed :data:`tensors.MAX_TENSOR_BYTES`, strings
    counted at their real cost.
    """
    numpy_type = tensors.BY_ENUM[dtype].numpy
    size = len(flat) * tensors.element_bytes(numpy_type)
    if size > tensors.MAX_TENSOR_BYTES:
        raise InvalidArgument(
            f"{what}: shape {shape} of {dtype_string(dtype)} needs {size} bytes, more than the "
            f"{tensors.MAX_TENSOR_BYTES}-byte limit for one tensor"
        )
    if dtype == DT_STRING:
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    return np.array(flat, dtype=numpy_type).reshape(shape)
