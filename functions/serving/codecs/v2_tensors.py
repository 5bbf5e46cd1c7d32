"""Open Inference Protocol (v2) tensors <-> numpy arrays.

The v2 datatypes are the names in :data:`DATATYPES`; each maps to one
TensorFlow DataType (``tensors.BY_ENUM``, whose numbers are types.proto's)
and one numpy dtype. Two wire forms are decoded:

* :func:`from_raw`: little-endian bytes, as the binary tensor data extension
  and gRPC's ``raw_input_contents`` carry them; BYTES elements each as a
  4-byte little-endian length and that many bytes.
* :func:`from_values`: a flat sequence of typed values (gRPC's typed
  ``contents``, JSON ``data``, nested lists flattened here).

Decoding validates before it allocates: the element count a shape declares
must match the data exactly (a numeric tensor's byte size, a BYTES tensor's
elements, a value list's length), so a request can make the server allocate
only in proportion to what it sent (a decoded BYTES element costs
``tensors.STRING_ELEMENT_BYTES`` plus its length, at least 4 bytes on the
wire). Every error is an :class:`InvalidArgument` naming the input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from functions.serving.codecs.tensors import BY_ENUM, MAX_RANK, dtype_name
from loader.errors import InvalidArgument

# v2 datatype -> the DataType name it stands for (its number from tensors.BY_ENUM).
_TF_NAMES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BF16": "DT_BFLOAT16",
    "BYTES": "DT_STRING",
}
_ENUM_BY_TF_NAME = {d.name: d.enum for d in BY_ENUM.values()}
# v2 datatype -> numpy dtype (BYTES: an object array of ``bytes``).
DATATYPES: dict[str, np.dtype[Any]] = {
    v2: BY_ENUM[_ENUM_BY_TF_NAME[tf]].numpy for v2, tf in _TF_NAMES.items()
}
# v2 datatype -> TensorFlow DataType number.
TF_DTYPES: dict[str, int] = {v2: _ENUM_BY_TF_NAME[tf] for v2, tf in _TF_NAMES.items()}
_BY_TF_DTYPE = {enum: v2 for v2, enum in TF_DTYPES.items()}
_BY_NUMPY = {dtype: v2 for v2, dtype in DATATYPES.items()}

BYTES = "BYTES"
_PREFIX = struct.Struct("<I")


def datatype_of_tf(dtype: int) -> str:
    """The v2 datatype of a TensorFlow DataType number (DT_STRING: BYTES)."""
    v2 = _BY_TF_DTYPE.get(dtype)
    if v2 is None:
        raise InvalidArgument(f"dtype {dtype_name(dtype)} has no Open Inference Protocol datatype")
    return v2


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The v2 datatype of an array (object, bytes and str arrays: BYTES)."""
    if array.dtype.kind in ("O", "S", "U"):
        return BYTES
    v2 = _BY_NUMPY.get(array.dtype.newbyteorder("="))  # a big-endian array too
    if v2 is None:
        raise InvalidArgument(f"dtype {array.dtype} has no Open Inference Protocol datatype")
    return v2


def _numpy_of(name: str, datatype: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(
            f'input "{name}": unknown datatype {str(datatype)[:40]!r}; expected one of '
            f"{', '.join(DATATYPES)}"
        )
    return dtype


def element_count(name: str, shape: Sequence[int]) -> int:
    """The element count of a v2 shape, checked: integers, none negative, rank
    at most ``tensors.MAX_RANK``."""
    if len(shape) > MAX_RANK:
        raise InvalidArgument(
            f'input "{name}": shape has rank {len(shape)}; rollway accepts at most {MAX_RANK}'
        )
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise InvalidArgument(f'input "{name}": shape {list(shape)} is not a list of integers')
        if dim < 0:
            raise InvalidArgument(f'input "{name}": shape {list(shape)} has a negative dimension')
    return math.prod(shape)


def from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview
) -> npt.NDArray[Any]:
    """Decodes little-endian ``raw`` bytes. Numeric arrays share ``raw``'s
    memory and are read-only; BYTES arrays are object arrays of ``bytes``."""
    dtype = _numpy_of(name, datatype)
    count = element_count(name, shape)
    data = memoryview(raw).cast("B")
    if datatype == BYTES:
        return _bytes_from_raw(name, shape, count, data)
    expected = count * dtype.itemsize
    if data.nbytes != expected:
        raise InvalidArgument(
            f'input "{name}": {data.nbytes} bytes of data, but shape {list(shape)} of '
            f"{datatype} needs {expected}"
        )
    if datatype == "BOOL":
        octets = np.frombuffer(data, dtype=np.uint8)
        if octets.size and octets.max() > 1:
            raise InvalidArgument(f'input "{name}": a BOOL element is neither 0 nor 1')
        array = octets.view(np.bool_).reshape(shape)
    else:
        array = np.frombuffer(data, dtype=dtype.newbyteorder("<")).reshape(shape)
    array.flags.writeable = False  # a view of the request's buffer
    return array


def _bytes_from_raw(
    name: str, shape: Sequence[int], count: int, data: memoryview
) -> npt.NDArray[Any]:
    # Every element takes at least its 4-byte prefix: refuse a count the
    # buffer cannot hold before allocating an array of that many.
    if count * _PREFIX.size > data.nbytes:
        raise InvalidArgument(
            f'input "{name}": shape {list(shape)} of BYTES needs {count} elements of at least '
            f"{_PREFIX.size} bytes each, but the data has {data.nbytes} bytes"
        )
    out = np.empty(count, dtype=object)
    offset, end = 0, data.nbytes
    for i in range(count):
        if offset + _PREFIX.size > end:
            raise InvalidArgument(
                f'input "{name}": BYTES data ends before element {i} of {count} '
                f"(shape {list(shape)})"
            )
        (length,) = _PREFIX.unpack_from(data, offset)
        offset += _PREFIX.size
        if length > end - offset:
            raise InvalidArgument(
                f'input "{name}": BYTES element {i} declares {length} bytes, but only '
                f"{end - offset} remain in the data"
            )
        out[i] = bytes(data[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidArgument(
            f'input "{name}": {end - offset} bytes of data left after the {count} BYTES '
            f"elements of shape {list(shape)}"
        )
    return out.reshape(shape)


# The Python types a value of each kind of datatype may have (bool is not an
# int here, nor an int a bool).
_FLOATS = {"FP16", "FP32", "FP64", "BF16"}
_BOOL = "BOOL"


def from_values(
    name: str, datatype: str, shape: Sequence[int], values: Sequence[Any]
) -> npt.NDArray[Any]:
    """Decodes typed values in row-major order. Nested lists (JSON ``data``
    written as rows) are flattened here, so ``[[1, 2], [3, 4]]`` and
    ``[1, 2, 3, 4]`` are the same data; their nesting is not checked against
    the shape, only the count. Number types are checked: FP* take JSON numbers
    (ints and floats), INT*/UINT* integers in range, BOOL booleans, BYTES
    strings (encoded as UTF-8) or bytes."""
    dtype = _numpy_of(name, datatype)
    count = element_count(name, shape)
    flat = _flatten(name, values)
    if len(flat) != count:
        raise InvalidArgument(
            f'input "{name}": {len(flat)} values, but shape {list(shape)} needs {count}'
        )
    kinds = set(map(type, flat))
    if datatype == BYTES:
        return _bytes_from_values(name, shape, flat, kinds)
    if datatype == _BOOL:
        _check_kinds(name, datatype, kinds, lambda t: issubclass(t, (bool, np.bool_)))
    elif datatype in _FLOATS:
        _check_kinds(name, datatype, kinds, _is_number)
    else:
        _check_kinds(name, datatype, kinds, _is_integer)
        if flat:
            limits = np.iinfo(dtype)
            low, high = min(flat), max(flat)
            if low < limits.min or high > limits.max:
                bad = low if low < limits.min else high
                raise InvalidArgument(f'input "{name}": value {bad} does not fit {datatype}')
    try:
        if datatype in ("FP16", "BF16"):  # via float64: numpy cannot parse into bfloat16
            array = np.asarray(flat, dtype=np.float64).astype(dtype)
        else:
            array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as err:
        raise InvalidArgument(f'input "{name}": values are not {datatype}: {err}') from err
    return array.reshape(shape)


def _is_number(kind: type) -> bool:
    return issubclass(kind, (int, float, np.integer, np.floating)) and not issubclass(
        kind, (bool, np.bool_)
    )


def _is_integer(kind: type) -> bool:
    return issubclass(kind, (int, np.integer)) and not issubclass(kind, (bool, np.bool_))


def _check_kinds(name: str, datatype: str, kinds: Iterable[type], ok: Any) -> None:
    for kind in kinds:
        if not ok(kind):
            raise InvalidArgument(f'input "{name}": {datatype} data holds {_json_kind(kind)}')


def _json_kind(kind: type) -> str:
    if issubclass(kind, (bool, np.bool_)):
        return "a boolean"
    if issubclass(kind, (str, bytes)):
        return "a string"
    if issubclass(kind, (int, np.integer)):
        return "an integer"
    if issubclass(kind, (float, np.floating)):
        return "a floating-point number"
    if issubclass(kind, dict):
        return "an object"
    return "null" if kind is type(None) else f"a {kind.__name__}"


def _flatten(name: str, values: Sequence[Any]) -> list[Any]:
    """Row-major flattening of nested lists, at most ``MAX_RANK`` deep (each
    level's check is one ``set(map(type, ...))``, in C)."""
    if not isinstance(values, (list, tuple)):
        if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
            raise InvalidArgument(f'input "{name}": data must be a list of values')
        return list(values)  # a protobuf repeated field
    flat: list[Any] = list(values)
    for _ in range(MAX_RANK):
        if not _NESTED & set(map(type, flat)):
            return flat
        nested: list[Any] = []
        for v in flat:
            if type(v) in _NESTED:
                nested.extend(v)
            else:
                nested.append(v)
        flat = nested
    if _NESTED & set(map(type, flat)):
        raise InvalidArgument(f'input "{name}": data is nested more than {MAX_RANK} deep')
    return flat


_NESTED = frozenset({list, tuple})


def _bytes_from_values(
    name: str, shape: Sequence[int], flat: list[Any], kinds: set[type]
) -> npt.NDArray[Any]:
    _check_kinds(name, BYTES, kinds, lambda t: issubclass(t, (str, bytes)))
    out = np.empty(len(flat), dtype=object)
    out[:] = [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
    return out.reshape(shape)


def to_raw(array: npt.NDArray[Any]) -> bytes:
    """``array``'s elements, row-major and little-endian; BYTES elements (bytes
    or str, the latter encoded as UTF-8) each after its 4-byte length."""
    array = np.asarray(array)
    if datatype_of(array) == BYTES:
        parts: list[bytes] = []
        for value in array.reshape(-1):
            data = value.encode() if isinstance(value, str) else bytes(value)
            parts += (_PREFIX.pack(len(data)), data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def to_values(array: npt.NDArray[Any], *, bytes_as_text: bool = True) -> list[Any]:
    """``array``'s elements as a flat row-major list of Python values: numbers,
    booleans (FP16 and BF16 as floats); BYTES elements as ``str`` when
    ``bytes_as_text`` (JSON), else as ``bytes`` (gRPC's ``bytes_contents``).

    A BYTES element that is not valid UTF-8 cannot be written as a JSON
    string: with ``bytes_as_text`` it raises InvalidArgument, telling the
    client to ask for that output as binary data (which carries any bytes).
    """
    array = np.asarray(array)
    flat = array.reshape(-1)
    if datatype_of(array) != BYTES:
        if array.dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)):
            flat = flat.astype(np.float32)
        values: list[Any] = flat.tolist()
        return values
    raw = [v.encode() if isinstance(v, str) else bytes(v) for v in flat]
    if not bytes_as_text:
        return raw
    try:
        return [v.decode() for v in raw]
    except UnicodeDecodeError as err:
        raise InvalidArgument(
            "a BYTES output element is not valid UTF-8, so JSON cannot carry it; ask for "
            'the output with "parameters": {"binary_data": true}'
        ) from err
