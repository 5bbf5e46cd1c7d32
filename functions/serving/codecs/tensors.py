"""Conversions between ``tensorflow.TensorProto`` and numpy arrays.

Decoding validates before it allocates: a request cannot make the server
build a tensor larger than :data:`MAX_TENSOR_BYTES`, nor decode more than a
:class:`Budget` lets a request of its size (``AMPLIFICATION`` times its bytes
plus ``ALLOWANCE``); every malformed proto is an :class:`InvalidArgument`
that names the tensor. Encoding follows
TF Serving's default (typed ``*_val`` fields, as clients that read
``outputs["y"].float_val`` expect); ``tensor_content`` encoding is opt-in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from loader.errors import InvalidArgument

# One decoded tensor may not exceed this many bytes (TF Serving's gRPC limit
# is int32 max for a whole message).
MAX_TENSOR_BYTES = 2**31 - 1
# What a request of B bytes may make the server allocate for the tensors it
# decodes: AMPLIFICATION * B + ALLOWANCE bytes, all its tensors together. 64:
# the densest honest encodings cost about 33x (an empty string is 2 bytes on
# the wire and STRING_ELEMENT_BYTES decoded; a small int64 1 byte and 8), so
# no request that spells out its values is refused. ALLOWANCE: broadcasting
# one value (TensorFlow's FromProto pads a short value list with its last
# value) may still fill a 64 MiB tensor, 16 Mi floats, from a tiny message.
AMPLIFICATION = 64
ALLOWANCE = 64 * 2**20
# One DT_STRING element decoded: its pointer in the numpy object array (8), a
# Python bytes object (33 plus its length), TensorFlow's tstring when it is fed
# (24, plus a copy of the bytes past 22).
STRING_ELEMENT_BYTES = 8 + 33 + 24
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
# The DataTypes rollway does not carry, named in errors (tests/unit/test_dtype_table.py
# checks both tables against TensorFlow's types_pb2).
_DT_NAMES = {
    0: "DT_INVALID", 11: "DT_QINT8", 12: "DT_QUINT8", 13: "DT_QINT32", 15: "DT_QINT16",
    16: "DT_QUINT16", 20: "DT_RESOURCE", 21: "DT_VARIANT", 24: "DT_FLOAT8_E5M2",
    25: "DT_FLOAT8_E4M3FN", 26: "DT_FLOAT8_E4M3FNUZ", 27: "DT_FLOAT8_E4M3B11FNUZ",
    28: "DT_FLOAT8_E5M2FNUZ", 29: "DT_INT4", 30: "DT_UINT4", 31: "DT_INT2", 32: "DT_UINT2",
    33: "DT_FLOAT4_E2M1FN",
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


def element_bytes(dtype: np.dtype[Any]) -> int:
    """What one element of ``dtype`` costs decoded (a string at its real cost)."""
    return STRING_ELEMENT_BYTES if dtype.kind == "O" else dtype.itemsize


def _num_elements(dims: tuple[int, ...], dtype: DType, what: str) -> int:
    """The element count, once the shape is known to fit :data:`MAX_TENSOR_BYTES`.

    A shape with a zero dimension holds nothing, but numpy still multiplies the
    other dimensions (``ValueError: array is too big`` past its index type), and
    no model takes [0, 2**62]: those are bounded as if the zeros were ones.
    """
    count = math.prod(dims)
    extent = math.prod(d for d in dims if d)
    size = extent * element_bytes(dtype.numpy)
    if size > MAX_TENSOR_BYTES:
        needs = "needs" if count else "has no elements, but its other dimensions need"
        raise InvalidArgument(
            f"{what}: tensor_shape {list(dims)} of {dtype.name} {needs} {size} bytes, more "
            f"than the {MAX_TENSOR_BYTES}-byte limit for one tensor"
        )
    return count


class Budget:
    """What decoding one request may still allocate: ``AMPLIFICATION`` times the
    request's size in bytes plus ``ALLOWANCE``, for all its tensors together.
    Decoders charge a tensor before they allocate it."""

    def __init__(self, request_bytes: int) -> None:
        self.request_bytes = request_bytes
        self.limit = AMPLIFICATION * request_bytes + ALLOWANCE
        self.used = 0

    def charge(self, nbytes: int, what: str, shape: Any, dtype: str) -> None:
        if self.used + nbytes > self.limit:
            others = f" besides the {self.used} bytes decoded before it" if self.used else ""
            raise InvalidArgument(
                f"{what}: tensor_shape {list(shape)} of {dtype} needs {nbytes} bytes decoded"
                f"{others}, more than the {self.limit}-byte limit for a request whose values "
                f"take {self.request_bytes} bytes ({AMPLIFICATION} x that + "
                f"{ALLOWANCE // 2**20} MiB)"
            )
        self.used += nbytes


# The fewest bytes one value of each field takes on the wire (a varint 1, a
# string its tag and length): a cheap lower bound of a tensor's encoded size
# (upb's ByteSize() would serialize the whole message to measure it).
_MIN_WIRE_BYTES = {
    "float_val": 4, "double_val": 8, "scomplex_val": 4, "dcomplex_val": 8, "string_val": 2,
    "int_val": 1, "int64_val": 1, "bool_val": 1, "half_val": 1, "uint32_val": 1, "uint64_val": 1,
}  # fmt: skip


def wire_bytes(proto: Any) -> int:
    """At most the encoded size of a TensorProto's typed values (the budget's B).

    ``tensor_content`` is left out (reading it copies it): it decodes to exactly
    its own size, so it needs no budget.
    """
    dtype = BY_ENUM.get(int(proto.dtype))
    return len(getattr(proto, dtype.field)) * _MIN_WIRE_BYTES[dtype.field] if dtype else 0


def to_ndarrays(protos: Mapping[str, Any]) -> dict[str, npt.NDArray[Any]]:
    """A request's named input tensors, decoded under one :class:`Budget` whose
    B is the least their typed values take on the wire."""
    budget = Budget(sum(wire_bytes(t) for t in protos.values()))
    return {name: to_ndarray(t, f'input "{name}"', budget) for name, t in protos.items()}


def to_ndarray(proto: Any, what: str, budget: Budget | None = None) -> npt.NDArray[Any]:
    """Decodes a TensorProto; ``what`` names it in errors (e.g. 'input "x"').

    ``budget``: the request's, shared by its tensors; by default the tensor's own.
    """
    dtype = BY_ENUM.get(int(proto.dtype))
    if dtype is None:
        raise InvalidArgument(f"{what}: dtype {dtype_name(int(proto.dtype))} is not supported")
    dims = _shape_of(proto, what)
    count = _num_elements(dims, dtype, what)
    content = proto.tensor_content  # each read of a bytes field copies it: read once
    if content:
        return _from_content(content, dtype, dims, count, what)
    if budget is None:
        budget = Budget(wire_bytes(proto))
    budget.charge(_decoded_bytes(proto, dtype, count), what, dims, dtype.name)
    return _from_fields(proto, dtype, dims, count, what)


def _decoded_bytes(proto: Any, dtype: DType, count: int) -> int:
    if dtype.field != "string_val":
        return count * dtype.numpy.itemsize
    # Strings that pad a short list share one bytes object in numpy, but
    # TensorFlow copies it into each element's tstring.
    given = len(proto.string_val)
    padding = len(proto.string_val[-1]) * (count - given) if 0 < given < count else 0
    return count * STRING_ELEMENT_BYTES + padding


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
