"""Conversions between ``tensorflow.TensorProto`` and numpy arrays.

Decoding validates before it allocates: a request cannot make the server
build a tensor larger than :data:`MAX_TENSOR_BYTES`, and every malformed
proto is an :class:`InvalidArgument` that names the tensor. Encoding follows
TF Serving's default (typed ``*_val`` fields, as clients that read
``outputs["y"].float_val`` expect); ``tensor_content`` encoding is opt-in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from loader.errors import InvalidArgument

# One decoded tensor may not exceed this many bytes (TF Serving's gRPC limit
# is int32 max for a whole message; this bounds what a small message can
# ask us to allocate through broadcasting a single value).
MAX_TENSOR_BYTES = 2**31 - 1
# numpy supports 64 dimensions, and TensorFlow crashes converting string
# arrays of rank above 32; no real model takes such inputs.
MAX_RANK = 32


@dataclass(frozen=True)
class DType:
    """A TensorFlow DataType that rollway can carry over the wire."""

    enum: int
    name: str
    numpy: np.dtype[Any]
    field: str


def _dt(enum: int, name: str, np_type: Any, field: str) -> DType:
    return DType(enum, name, np.dtype(np_type), field)


# Numbers are tensorflow/core/framework/types.proto's DataType values.
_DTYPES = [
    _dt(1, "DT_FLOAT", np.float32, "float_val"),
    _dt(2, "DT_DOUBLE", np.float64, "double_val"),
    _dt(3, "DT_INT32", np.int32, "int_val"),
    _dt(4, "DT_UINT8", np.uint8, "int_val"),
    _dt(5, "DT_INT16", np.int16, "int_val"),
    _dt(6, "DT_INT8", np.int8, "int_val"),
    _dt(7, "DT_STRING", np.object_, "string_val"),
    _dt(8, "DT_COMPLEX64", np.complex64, "scomplex_val"),
    _dt(9, "DT_INT64", np.int64, "int64_val"),
    _dt(10, "DT_BOOL", np.bool_, "bool_val"),
    _dt(14, "DT_BFLOAT16", ml_dtypes.bfloat16, "half_val"),
    _dt(17, "DT_UINT16", np.uint16, "int_val"),
    _dt(18, "DT_COMPLEX128", np.complex128, "dcomplex_val"),
    _dt(19, "DT_HALF", np.float16, "half_val"),
    _dt(22, "DT_UINT32", np.uint32, "uint32_val"),
    _dt(23, "DT_UINT64", np.uint64, "uint64_val"),
]
BY_ENUM: dict[int, DType] = {d.enum: d for d in _DTYPES}
_BY_NUMPY: dict[np.dtype[Any], DType] = {d.numpy: d for d in _DTYPES}
_DT_NAMES = {
    0: "DT_INVALID", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32", 15: "DT_QINT16",
    16: "DT_QUINT16", 20: "DT_RESOURCE", 21: "DT_VARIANT",
}  # fmt: skip


def dtype_enum(dtype: np.dtype[Any]) -> int:
    """The DataType of a numpy dtype; DT_INVALID (0) for one rollway cannot carry."""
    known = _BY_NUMPY.get(dtype)
    return known.enum if known else 0


def dtype_name(enum: int) -> str:
    known = BY_ENUM.get(enum)
    return known.name if known else _DT_NAMES.get(enum, f"DataType({enum})")


def _shape_of(proto: Any, what: str) -> tuple[int, ...]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise InvalidArgument(f"{what}: tensor_shape has unknown_rank set; a tensor needs a shape")
    if len(shape.dim) > MAX_RANK:
        raise InvalidArgument(
            f"{what}: tensor_shape has rank {len(shape.dim)}; rollway accepts at most {MAX_RANK}"
        )
    dims = tuple(int(d.size) for d in shape.dim)
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"{what}: tensor_shape {list(dims)} has a negative dimension")
    return dims


def _num_elements(dims: tuple[int, ...], itemsize: int, what: str) -> int:
    count = 1
    for d in dims:
        count *= d
        if count * max(itemsize, 1) > MAX_TENSOR_BYTES:
            raise InvalidArgument(
                f"{what}: tensor_shape {list(dims)} is larger than the "
                f"{MAX_TENSOR_BYTES}-byte limit for one tensor"
            )
    return count


def to_ndarray(proto: Any, what: str) -> npt.NDArray[Any]:
    """Decodes a TensorProto; ``what`` names it in errors (e.g. 'input "x"')."""
    dtype = BY_ENUM.get(int(proto.dtype))
    if dtype is None:
        raise InvalidArgument(f"{what}: dtype {dtype_name(int(proto.dtype))} is not supported")
    dims = _shape_of(proto, what)
    itemsize = 8 if dtype.field == "string_val" else dtype.numpy.itemsize
    count = _num_elements(dims, itemsize, what)
    content = proto.tensor_content  # each read of a bytes field copies it: read once
    if content:
        return _from_content(content, dtype, dims, count, what)
    return _from_fields(proto, dtype, dims, count, what)


def _from_content(
    content: bytes, dtype: DType, dims: tuple[int, ...], count: int, what: str
) -> npt.NDArray[Any]:
    if dtype.field == "string_val":
        raise InvalidArgument(f"{what}: DT_STRING tensors cannot use tensor_content")
    expected = count * dtype.numpy.itemsize
    if len(content) != expected:
        raise InvalidArgument(
            f"{what}: tensor_content has {len(content)} bytes, but shape "
            f"{list(dims)} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(content, dtype=dtype.numpy).reshape(dims)


def _from_fields(
    proto: Any, dtype: DType, dims: tuple[int, ...], count: int, what: str
) -> npt.NDArray[Any]:
    raw = getattr(proto, dtype.field)
    values: npt.NDArray[Any]
    if dtype.field in ("scomplex_val", "dcomplex_val"):
        if len(raw) % 2:
            raise InvalidArgument(f"{what}: {dtype.field} needs (real, imag) pairs")
        pairs = np.asarray(raw, dtype=np.float64).reshape(-1, 2)
        values = (pairs[:, 0] + 1j * pairs[:, 1]).astype(dtype.numpy)
    elif dtype.field == "half_val":
        values = np.asarray(raw, dtype=np.uint16).view(dtype.numpy)
    elif dtype.field == "string_val":
        values = np.empty(len(raw), dtype=object)
        values[:] = list(raw)
    else:
        values = _typed(raw, dtype, what)
    given = values.shape[0]
    if given >= count:
        # As TensorFlow's Tensor::FromProto: values beyond the shape are ignored.
        return values[:count].reshape(dims)
    # ... and a short list is padded with its last value (or zeros).
    out = np.empty(count, dtype=dtype.numpy)
    out[:given] = values
    out[given:] = values[-1] if given else (b"" if dtype.field == "string_val" else 0)
    return out.reshape(dims)


# The element type of each numeric repeated field. numpy converts a whole
# field to it in C (about 6 us for 100,000 floats, against 3.7 ms through a
# Python list); fields this short or shorter go through ``np.fromiter``,
# which costs less per call. Narrower integer types (int8, int16, uint8,
# uint16 travel in int_val) are range-checked on the converted array.
_FIELD_NUMPY: dict[str, np.dtype[Any]] = {
    "float_val": np.dtype(np.float32),
    "double_val": np.dtype(np.float64),
    "int_val": np.dtype(np.int32),
    "int64_val": np.dtype(np.int64),
    "bool_val": np.dtype(np.bool_),
    "uint32_val": np.dtype(np.uint32),
    "uint64_val": np.dtype(np.uint64),
}
_SHORT_FIELD = 16


def _typed(raw: Any, dtype: DType, what: str) -> npt.NDArray[Any]:
    wide = _FIELD_NUMPY[dtype.field]
    n = len(raw)
    values = np.fromiter(raw, wide, count=n) if n <= _SHORT_FIELD else np.asarray(raw, wide)
    if values.dtype == dtype.numpy:
        return values
    limits = np.iinfo(dtype.numpy)
    if n and (values.min() < limits.min or values.max() > limits.max):
        raise InvalidArgument(f"{what}: a value in {dtype.field} does not fit {dtype.name}")
    return values.astype(dtype.numpy)


# Fields whose values are fixed-width little-endian floats on the wire (complex
# ones as (real, imag) pairs), and their field numbers in tensor.proto. They
# are written as one packed record parsed by ``MergeFromString``: the same
# message as ``extend`` builds (about 28 us for 100,000 floats, against 3 ms
# through a Python list); fields of up to ``_SHORT_FIELD`` values, where a
# list costs less, still go through one.
_PACKED_FLOATS: dict[str, tuple[int, np.dtype[Any]]] = {
    "float_val": (5, np.dtype("<f4")),
    "double_val": (6, np.dtype("<f8")),
    "scomplex_val": (9, np.dtype("<f4")),
    "dcomplex_val": (12, np.dtype("<f8")),
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _put_packed(proto: Any, flat: npt.NDArray[Any], field: str) -> None:
    number, wire = _PACKED_FLOATS[field]
    data = np.ascontiguousarray(flat)
    if data.dtype.kind == "c":
        data = data.view(data.real.dtype)  # interleaved (real, imag)
    data = data.astype(wire, copy=False)
    if data.size:
        header = _varint(number << 3 | 2) + _varint(data.nbytes)
        proto.MergeFromString(b"".join((header, data.data.cast("B"))))


def _put_fields(proto: Any, array: npt.NDArray[Any], dtype: DType) -> None:
    flat = array.reshape(-1)
    if dtype.field in _PACKED_FLOATS and flat.size > _SHORT_FIELD:
        _put_packed(proto, flat, dtype.field)
        return
    field = getattr(proto, dtype.field)
    if dtype.field in ("scomplex_val", "dcomplex_val"):
        field.extend(np.stack([flat.real, flat.imag], axis=1).reshape(-1).tolist())
    elif dtype.field == "half_val":
        field.extend(flat.view(np.uint16).tolist())
    elif dtype.field == "string_val":
        field.extend(_as_bytes(v) for v in flat)
    else:
        field.extend(flat.tolist())


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def from_ndarray(array: npt.NDArray[Any], proto: Any, *, as_content: bool = False) -> Any:
    """Encodes ``array`` into the empty TensorProto ``proto`` and returns it."""
    array = np.asarray(array)
    dtype = _BY_NUMPY.get(array.dtype)
    if dtype is None and array.dtype.kind in ("S", "U"):
        dtype = BY_ENUM[7]
    if dtype is None:
        raise InvalidArgument(f"output dtype {array.dtype} cannot be sent as a TensorProto")
    proto.dtype = dtype.enum
    add_dim: Callable[..., Any] = proto.tensor_shape.dim.add
    for size in array.shape:
        add_dim(size=size)
    if as_content and dtype.field != "string_val":
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    else:
        _put_fields(proto, array, dtype)
    return proto
