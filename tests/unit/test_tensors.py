"""functions.serving.codecs.tensors: TensorProto <-> numpy, checked against TensorFlow."""

from __future__ import annotations

import os
import time
import tracemalloc
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from functions.serving.codecs.tensors import (
    ALLOWANCE,
    AMPLIFICATION,
    BY_ENUM,
    MAX_TENSOR_BYTES,
    STRING_ELEMENT_BYTES,
    Budget,
    dtype_name,
    from_ndarray,
    to_ndarray,
    to_ndarrays,
    wire_bytes,
)
from loader.errors import Code, InvalidArgument

WHAT = 'input "x"'


def _values(enum: int) -> np.ndarray:
    """A [2, 3] array of dtype ``enum`` with extreme and ordinary values."""
    dtype = BY_ENUM[enum].numpy
    if enum == 7:  # DT_STRING
        flat: list[Any] = [
            b"",
            b"a",
            b"hello world",
            "h\u00e9llo".encode(),
            b"\x00\xff",
            b"z" * 300,
        ]
        out = np.empty(6, dtype=object)
        out[:] = flat
        return out.reshape(2, 3)
    if dtype == np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    if dtype.kind == "c":
        real = np.array([0.0, 1.5, -2.25, 1e30, -1e-30, 3.0])
        return (real + 1j * real[::-1]).astype(dtype).reshape(2, 3)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array(
            [info.min, info.max, 0, 1, info.max // 3, info.min // 2], dtype=dtype
        ).reshape(2, 3)
    # floats: float16, bfloat16, float32, float64
    specials = [0.0, -0.0, 1.5, -2.0, np.inf, np.nan]
    return np.array(specials, dtype=np.float64).astype(dtype).reshape(2, 3)


ENUMS = sorted(BY_ENUM)
NAMES = [BY_ENUM[e].name for e in ENUMS]


def _proto() -> Any:
    return tensor_pb2.TensorProto()


def _make(dtype: int, dims: list[int], **fields: Any) -> Any:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    for size in dims:
        proto.tensor_shape.dim.add(size=size)
    for name, value in fields.items():
        if name == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, name).extend(value)
    return proto


def _assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if expected.dtype == object:
        assert actual.tolist() == expected.tolist()
    elif expected.dtype.kind in "fcV" or expected.dtype == ml_dtypes.bfloat16:
        # compare bits, so that NaN and -0.0 must survive too
        assert actual.tobytes() == expected.tobytes()
    else:
        np.testing.assert_array_equal(actual, expected)


def test_every_wire_dtype_is_covered() -> None:
    assert set(BY_ENUM) == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 17, 18, 19, 22, 23}
    assert BY_ENUM[14].numpy == np.dtype(ml_dtypes.bfloat16)
    assert BY_ENUM[19].numpy == np.float16


# --------------------------------------------------------------- round trip


@pytest.mark.parametrize("as_content", [False, True], ids=["fields", "content"])
@pytest.mark.parametrize("enum", ENUMS, ids=NAMES)
def test_round_trip(enum: int, as_content: bool) -> None:
    array = _values(enum)
    proto = from_ndarray(array, _proto(), as_content=as_content)
    assert proto.dtype == enum
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3]
    if as_content and enum != 7:
        assert proto.tensor_content
        assert not getattr(proto, BY_ENUM[enum].field)
    else:
        assert not proto.tensor_content
    _assert_same(to_ndarray(proto, WHAT), array)


@pytest.mark.parametrize("as_content", [False, True], ids=["fields", "content"])
@pytest.mark.parametrize("enum", ENUMS, ids=NAMES)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (1, 1, 1, 1)], ids=str)
def test_round_trip_shapes(enum: int, as_content: bool, shape: tuple[int, ...]) -> None:
    count = int(np.prod(shape))
    array = np.resize(_values(enum).reshape(-1), count).reshape(shape)
    if enum == 7:
        array = array.astype(object)
    proto = from_ndarray(array, _proto(), as_content=as_content)
    _assert_same(to_ndarray(proto, WHAT), array)


def test_strings_from_unicode_and_bytes_arrays() -> None:
    for array in (np.array(["a", "h\u00e9"]), np.array([b"a", b"h\xc3\xa9"])):
        proto = from_ndarray(array, _proto())
        assert proto.dtype == 7
        assert list(proto.string_val) == [b"a", b"h\xc3\xa9"]
        decoded = to_ndarray(proto, WHAT)
        assert decoded.dtype == object
        assert decoded.tolist() == [b"a", b"h\xc3\xa9"]


def test_strings_ignore_as_content() -> None:
    array = _values(7)
    proto = from_ndarray(array, _proto(), as_content=True)
    assert not proto.tensor_content
    assert list(proto.string_val) == array.reshape(-1).tolist()


def test_non_contiguous_arrays() -> None:
    array = np.arange(12, dtype=np.int32).reshape(3, 4).T
    for as_content in (False, True):
        decoded = to_ndarray(from_ndarray(array, _proto(), as_content=as_content), WHAT)
        np.testing.assert_array_equal(decoded, array)


def test_from_ndarray_accepts_scalars_and_lists() -> None:
    proto = from_ndarray(np.float64(2.5), _proto())
    assert proto.dtype == 2
    assert list(proto.tensor_shape.dim) == []
    assert list(proto.double_val) == [2.5]
    proto = from_ndarray([[1, 2]], _proto())  # type: ignore[arg-type]
    assert proto.dtype == 9
    assert list(proto.int64_val) == [1, 2]


def test_typed_fields_are_tf_servings_defaults() -> None:
    assert list(from_ndarray(np.array([1.5], np.float32), _proto()).float_val) == [1.5]
    assert list(from_ndarray(np.array([7], np.int8), _proto()).int_val) == [7]
    assert list(from_ndarray(np.array([1 + 2j], np.complex64), _proto()).scomplex_val) == [1, 2]
    assert list(from_ndarray(np.array([1.0], np.float16), _proto()).half_val) == [0x3C00]
    bf16 = np.array([1.0], ml_dtypes.bfloat16)
    assert list(from_ndarray(bf16, _proto()).half_val) == [0x3F80]


def test_unsupported_output_dtype() -> None:
    with pytest.raises(InvalidArgument, match="cannot be sent as a TensorProto"):
        from_ndarray(np.array(["2020-01-01"], dtype="datetime64[D]"), _proto())


# ----------------------------------------------------- TensorFlow interop


@pytest.mark.parametrize("enum", ENUMS, ids=NAMES)
def test_decode_what_tensorflow_encodes(enum: int) -> None:
    array = _values(enum)
    for value in (array, array[:1, :1], array.reshape(-1)[0]):
        proto = tf.make_tensor_proto(value)
        assert proto.dtype == enum
        expected = np.asarray(value, dtype=BY_ENUM[enum].numpy)
        _assert_same(to_ndarray(proto, WHAT), expected)


@pytest.mark.parametrize("enum", [e for e in ENUMS if e != 7], ids=NAMES[:6] + NAMES[7:])
def test_decode_tensorflow_tensor_content(enum: int) -> None:
    array = _values(enum)
    proto = tf.make_tensor_proto(array)
    proto.ClearField(BY_ENUM[enum].field)
    proto.tensor_content = array.tobytes()
    _assert_same(to_ndarray(proto, WHAT), array)


@pytest.mark.parametrize("as_content", [False, True], ids=["fields", "content"])
@pytest.mark.parametrize("enum", ENUMS, ids=NAMES)
def test_tensorflow_decodes_what_we_encode(enum: int, as_content: bool) -> None:
    array = _values(enum)
    proto = from_ndarray(array, _proto(), as_content=as_content)
    decoded = tf.make_ndarray(proto)
    if enum == 7:
        assert decoded.tolist() == array.tolist()
    else:
        _assert_same(decoded, array)


@pytest.mark.parametrize("enum", ENUMS, ids=NAMES)
def test_tensorflow_broadcast_scalar_proto(enum: int) -> None:
    first = _values(enum).reshape(-1)[1]
    proto = tf.make_tensor_proto(first, shape=[2, 2])
    expected = tf.make_ndarray(proto)
    decoded = to_ndarray(proto, WHAT)
    assert decoded.shape == (2, 2)
    if enum == 7:
        assert decoded.tolist() == expected.tolist()
    else:
        _assert_same(decoded, expected.astype(BY_ENUM[enum].numpy))


# ------------------------------------------------------------------ padding


@pytest.mark.parametrize(
    ("enum", "fields", "expected"),
    [
        (1, {"float_val": [2.5]}, np.array([2.5, 2.5, 2.5], np.float32)),
        (1, {"float_val": [1.0, 2.0]}, np.array([1.0, 2.0, 2.0], np.float32)),
        (1, {}, np.zeros(3, np.float32)),
        (3, {"int_val": [7]}, np.array([7, 7, 7], np.int32)),
        (3, {}, np.zeros(3, np.int32)),
        (6, {"int_val": [-3]}, np.array([-3, -3, -3], np.int8)),
        (9, {}, np.zeros(3, np.int64)),
        (10, {"bool_val": [True]}, np.array([True, True, True])),
        (10, {}, np.zeros(3, np.bool_)),
        (19, {"half_val": [0x3C00]}, np.ones(3, np.float16)),
        (14, {}, np.zeros(3, ml_dtypes.bfloat16)),
        (8, {"scomplex_val": [1.0, -1.0]}, np.full(3, 1 - 1j, np.complex64)),
        (18, {}, np.zeros(3, np.complex128)),
        (23, {"uint64_val": [2**64 - 1]}, np.full(3, 2**64 - 1, np.uint64)),
    ],
)
def test_padding(enum: int, fields: dict[str, list[Any]], expected: np.ndarray) -> None:
    proto = _make(enum, [3], **fields)
    _assert_same(to_ndarray(proto, WHAT), expected)
    _assert_same(tf.make_ndarray(proto), expected)


def test_string_padding() -> None:
    assert to_ndarray(_make(7, [3], string_val=[b"ab"]), WHAT).tolist() == [b"ab"] * 3
    assert to_ndarray(_make(7, [2, 2], string_val=[]), WHAT).tolist() == [[b"", b""]] * 2


def test_padding_keeps_the_shape() -> None:
    decoded = to_ndarray(_make(1, [2, 3], float_val=[1.0, 2.0]), WHAT)
    np.testing.assert_array_equal(decoded, [[1, 2, 2], [2, 2, 2]])


def test_scalar_without_values_is_zero() -> None:
    decoded = to_ndarray(_make(2, []), WHAT)
    assert decoded.shape == ()
    assert decoded == 0.0


# ------------------------------------------------------------------- errors


def _invalid(proto: Any, *fragments: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        to_ndarray(proto, WHAT)
    err = info.value
    assert err.code is Code.INVALID_ARGUMENT
    assert err.message.startswith(WHAT + ": ")
    for fragment in fragments:
        assert fragment in err.message
    return err


@pytest.mark.parametrize(
    ("enum", "name"),
    [
        (0, "DT_INVALID"),
        (20, "DT_RESOURCE"),
        (21, "DT_VARIANT"),
        (11, "DT_QINT8"),
        (99, "DataType(99)"),
    ],
)
def test_unsupported_dtypes(enum: int, name: str) -> None:
    proto = _make(enum, [1], float_val=[1.0])
    _invalid(proto, f"dtype {name} is not supported")
    assert dtype_name(enum) == name


def test_dtype_names() -> None:
    assert dtype_name(1) == "DT_FLOAT"
    assert dtype_name(14) == "DT_BFLOAT16"
    assert dtype_name(7) == "DT_STRING"


@pytest.mark.parametrize(
    ("enum", "dims", "fields"),
    [
        (1, [2], {"float_val": [1.0, 2.0, 3.0]}),
        (1, [], {"float_val": [1.0, 2.0]}),
        (1, [0], {"float_val": [1.0]}),
        (9, [1, 1], {"int64_val": [1, 2]}),
        (7, [1], {"string_val": [b"a", b"b"]}),
        (8, [1], {"scomplex_val": [1.0, 2.0, 3.0, 4.0]}),
        (10, [2], {"bool_val": [True, False, True]}),
    ],
)
def test_values_beyond_the_shape_are_ignored(
    enum: int, dims: list[int], fields: dict[str, list[Any]]
) -> None:
    """As TensorFlow's Tensor::FromProto (and so TF Serving) does."""
    proto = _make(enum, dims, **fields)
    ours = to_ndarray(proto, 'input "x"')
    theirs = tf.io.parse_tensor(proto.SerializeToString(), ours.dtype if enum != 7 else tf.string)
    assert ours.shape == tuple(dims)
    np.testing.assert_array_equal(ours, theirs.numpy())


def test_complex_needs_pairs() -> None:
    _invalid(_make(8, [2], scomplex_val=[1.0, 2.0, 3.0]), "(real, imag) pairs")


@pytest.mark.parametrize(
    ("enum", "dims", "content", "needs"),
    [
        (1, [2], b"\x00" * 7, 8),
        (1, [2], b"\x00" * 9, 8),
        (2, [1], b"\x00" * 4, 8),
        (9, [2, 2], b"", 32),
        (6, [3], b"\x01", 3),
    ],
)
def test_tensor_content_of_the_wrong_length(
    enum: int, dims: list[int], content: bytes, needs: int
) -> None:
    if content:
        proto = _make(enum, dims, tensor_content=content)
        _invalid(proto, f"tensor_content has {len(content)} bytes", f"needs {needs}")
    else:  # empty content means "use the typed fields": all zeros
        np.testing.assert_array_equal(to_ndarray(_make(enum, dims), WHAT), np.zeros(dims))


def test_string_tensor_content_is_refused() -> None:
    _invalid(_make(7, [1], tensor_content=b"abc"), "DT_STRING tensors cannot use tensor_content")


@pytest.mark.parametrize("dims", [[-1], [2, -1], [-5, 3]])
def test_negative_dimension(dims: list[int]) -> None:
    _invalid(_make(1, dims, float_val=[1.0]), "negative dimension")


def test_unknown_rank() -> None:
    proto = _make(1, [], float_val=[1.0])
    proto.tensor_shape.unknown_rank = True
    _invalid(proto, "unknown_rank")


@pytest.mark.parametrize(
    ("enum", "dims", "fields"),
    [
        (1, [2**20, 2**20], {"float_val": [1.0]}),
        (1, [2**62, 2**62], {}),
        (9, [2**28], {"int64_val": [1]}),
        (4, [2**31], {"int_val": [1]}),
        (7, [2**28], {"string_val": [b"x"]}),
        (10, [2**16, 2**16, 2**16], {"bool_val": [True]}),
        (18, [2**27], {"dcomplex_val": [1.0, 2.0]}),
        (1, [2**30], {"tensor_content": b"\x00" * 4}),
    ],
)
def test_huge_shapes_fail_fast_without_allocating(
    enum: int, dims: list[int], fields: dict[str, Any]
) -> None:
    proto = _make(enum, dims, **fields)
    tracemalloc.start()
    started = time.monotonic()
    try:
        _invalid(proto, f"{MAX_TENSOR_BYTES}-byte limit")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert peak < 1 << 20


def test_max_tensor_bytes() -> None:
    assert MAX_TENSOR_BYTES == 2**31 - 1


@pytest.mark.parametrize(
    ("enum", "field", "value"),
    [
        (6, "int_val", 128),
        (6, "int_val", 300),
        (6, "int_val", -129),
        (4, "int_val", -1),
        (4, "int_val", 256),
        (5, "int_val", 40000),
        (17, "int_val", 70000),
        (17, "int_val", -1),
    ],
    ids=[
        "int8-128",
        "int8-300",
        "int8-neg129",
        "uint8-neg1",
        "uint8-256",
        "int16",
        "uint16",
        "uint16-neg",
    ],
)
def test_int_value_out_of_range(enum: int, field: str, value: int) -> None:
    _invalid(_make(enum, [1], **{field: [value]}), f"a value in {field} does not fit")


@pytest.mark.parametrize(
    ("enum", "value"),
    [(6, 127), (6, -128), (4, 255), (4, 0), (5, -32768), (17, 65535)],
)
def test_int_values_at_the_limits_fit(enum: int, value: int) -> None:
    decoded = to_ndarray(_make(enum, [1], int_val=[value]), WHAT)
    assert decoded.dtype == BY_ENUM[enum].numpy
    assert decoded.tolist() == [value]


def test_errors_name_the_tensor() -> None:
    with pytest.raises(InvalidArgument, match=r'^output "scores": .*negative'):
        to_ndarray(_make(1, [-1]), 'output "scores"')


@pytest.mark.parametrize("dtype", [1, 7])
def test_rank_above_the_limit_is_rejected(dtype: int) -> None:
    """TensorFlow crashes on string arrays of rank > 32; numpy stops at 64."""
    from functions.serving.codecs.tensors import MAX_RANK

    ok = _make(dtype, [1] * MAX_RANK)
    assert to_ndarray(ok, 'input "x"').ndim == MAX_RANK
    _invalid(_make(dtype, [1] * (MAX_RANK + 1)), "rank 33")


@pytest.mark.parametrize("enum", [6, 4, 5, 17])
@pytest.mark.parametrize("size", [1, 1000])
def test_long_int_fields_are_range_checked_too(enum: int, size: int) -> None:
    """Short and long fields take different conversions; both check the range."""
    limits = np.iinfo(BY_ENUM[enum].numpy)
    fits = [int(limits.min), int(limits.max)] * size
    decoded = to_ndarray(_make(enum, [len(fits)], int_val=fits), WHAT)
    assert decoded.dtype == BY_ENUM[enum].numpy and decoded.tolist() == fits
    _invalid(_make(enum, [size + 1], int_val=[0] * size + [int(limits.max) + 1]), "does not fit")
    _invalid(_make(enum, [size + 1], int_val=[int(limits.min) - 1] + [0] * size), "does not fit")


@pytest.mark.parametrize("enum", [1, 2, 3, 9, 10, 22, 23, 8, 18])
@pytest.mark.parametrize("size", [3, 5000])
def test_long_typed_fields_round_trip(enum: int, size: int) -> None:
    rng = np.random.default_rng(size)
    dtype = BY_ENUM[enum].numpy
    if dtype.kind == "c":
        array = (rng.normal(size=size) + 1j * rng.normal(size=size)).astype(dtype)
    elif dtype.kind == "b":
        array = rng.integers(0, 2, size=size).astype(dtype)
    else:
        array = (rng.normal(size=size) * 1000).astype(dtype)
    proto = from_ndarray(array.reshape(1, size), tensor_pb2.TensorProto())
    assert not proto.tensor_content
    assert np.array_equal(to_ndarray(proto, WHAT), array.reshape(1, size))
    assert np.array_equal(tf.make_ndarray(proto), array.reshape(1, size))


@pytest.mark.parametrize("enum", [1, 2, 8, 18])
def test_packed_float_fields_build_the_same_message_as_extend(enum: int) -> None:
    """Float fields are written as one packed record; the message is what
    ``extend`` builds, for contiguous, strided and empty arrays alike."""
    info = BY_ENUM[enum]
    base = np.arange(200, dtype=np.float64).reshape(5, 40)
    base = base + 1j * base if info.numpy.kind == "c" else base
    for array in (
        base.astype(info.numpy),
        base.astype(info.numpy)[:, ::3],
        np.zeros((0, 2), info.numpy),
    ):
        expected = tensor_pb2.TensorProto(dtype=enum)
        for size in array.shape:
            expected.tensor_shape.dim.add(size=size)
        flat = array.reshape(-1)
        if info.numpy.kind == "c":
            getattr(expected, info.field).extend(
                np.stack([flat.real, flat.imag], 1).ravel().tolist()
            )
        else:
            getattr(expected, info.field).extend(flat.tolist())
        got = from_ndarray(array, tensor_pb2.TensorProto())
        assert got == expected
        assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
            deterministic=True
        )


def test_packed_field_numbers_are_tensor_protos() -> None:
    from functions.serving.codecs.tensors import _PACKED_FLOATS

    fields = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name
    for name, (number, _) in _PACKED_FLOATS.items():
        assert fields[name].number == number


def test_packed_float_output_into_a_response_map_entry() -> None:
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    array = np.linspace(0, 1, 300, dtype=np.float32).reshape(3, 100)
    from_ndarray(array, response.outputs["y"])
    again = predict_pb2.PredictResponse.FromString(response.SerializeToString())
    assert np.array_equal(to_ndarray(again.outputs["y"], WHAT), array)
    assert len(again.outputs["y"].float_val) == 300


# ------------------------------------------------- bounded memory per request


@pytest.mark.parametrize(
    "dims", [[2, 0, 2**62], [0, 2**62], [1, 0, 2**62], [0, 2**63 - 1], [2**40, 0, 2**40]]
)
def test_zero_size_shapes_with_huge_dimensions_are_refused(dims: list[int]) -> None:
    """numpy cannot build them ("array is too big"); no model takes them."""
    proto = _make(1, dims, float_val=[1.0])
    tracemalloc.start()
    try:
        err = _invalid(proto, "has no elements", f"{MAX_TENSOR_BYTES}-byte limit", str(dims[-1]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert "DT_FLOAT" in err.message


@pytest.mark.parametrize("dims", [[0], [0, 1000], [3, 0, 2**20], [0, 2**28]])
def test_zero_size_shapes_of_sane_dimensions_decode(dims: list[int]) -> None:
    decoded = to_ndarray(_make(1, dims, float_val=[1.0]), WHAT)
    assert decoded.shape == tuple(dims) and decoded.size == 0


def test_strings_count_at_their_real_cost_against_the_tensor_limit() -> None:
    # 134217727 pointers are 1 GiB - 8, but TensorFlow's tstrings add 24 bytes each.
    _invalid(_make(7, [134217727], string_val=[b""]), f"{MAX_TENSOR_BYTES}-byte limit")


def _budget_error(proto: Any) -> InvalidArgument:
    tracemalloc.start()
    started = time.monotonic()
    try:
        err = _invalid(
            proto,
            f"{AMPLIFICATION} x that + 64 MiB",
            "-byte limit for a request whose values take ",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert peak < 1 << 20
    return err


def test_broadcasting_one_string_is_bounded_by_the_request_size() -> None:
    err = _budget_error(_make(7, [2_000_000], string_val=[b""]))
    assert "tensor_shape [2000000] of DT_STRING needs 130000000 bytes" in err.message
    assert (
        f"{ALLOWANCE + AMPLIFICATION * 2}-byte limit for a request whose values take 2 bytes"
        in err.message
    )


def test_padding_strings_counts_each_copy() -> None:
    """TensorFlow copies the padding value into every element's tstring."""
    _budget_error(_make(7, [100_000], string_val=[b"x" * 1000]))
    assert to_ndarray(_make(7, [100_000], string_val=[b"x" * 10]), WHAT).shape == (100_000,)


def test_broadcasting_numbers_is_bounded_by_the_request_size() -> None:
    elements = ALLOWANCE // 4 + AMPLIFICATION  # float_val: one value, at least 4 bytes
    assert to_ndarray(_make(1, [elements], float_val=[1.0]), WHAT).shape == (elements,)
    err = _budget_error(_make(1, [elements + 1], float_val=[1.0]))
    assert f"needs {4 * (elements + 1)} bytes" in err.message
    _budget_error(_make(9, [ALLOWANCE // 8 + 1], int64_val=[]))


def test_values_spelled_out_always_fit_the_budget() -> None:
    """The densest encodings (an empty string is 2 bytes on the wire, a small
    int64 1) decode to well under AMPLIFICATION times their size."""
    count = 2_000_000
    strings = _make(7, [count], string_val=[b""] * count)
    assert to_ndarray(strings, WHAT).shape == (count,)
    ints = _make(9, [count * 2], int64_val=[0] * (count * 2))
    assert to_ndarray(ints, WHAT).shape == (count * 2,)
    assert wire_bytes(strings) <= strings.ByteSize() and wire_bytes(ints) <= ints.ByteSize()


def test_tensor_content_needs_no_budget() -> None:
    """It decodes to exactly its own bytes: nothing to amplify."""
    content = np.zeros(ALLOWANCE // 4 + 1, np.float32).tobytes()
    decoded = to_ndarray(_make(1, [ALLOWANCE // 4 + 1], tensor_content=content), WHAT)
    assert decoded.nbytes == len(content)


def test_a_request_shares_one_budget() -> None:
    half = ALLOWANCE // 8 + 2**10  # two broadcast float tensors, each just over 32 MiB
    protos = {"a": _make(1, [half], float_val=[1.0]), "b": _make(1, [half], float_val=[2.0])}
    assert to_ndarray(protos["a"], 'input "a"').shape == (half,)
    with pytest.raises(InvalidArgument) as info:
        to_ndarrays(protos)
    assert info.value.message.startswith('input "b": ')
    assert f"besides the {4 * half} bytes decoded before it" in info.value.message
    protos["b"] = _make(1, [2], float_val=[2.0])
    decoded = to_ndarrays(protos)
    assert decoded["a"].shape == (half,) and decoded["b"].tolist() == [2.0, 2.0]


def test_budget_accumulates() -> None:
    budget = Budget(10)
    assert budget.limit == AMPLIFICATION * 10 + ALLOWANCE
    budget.charge(budget.limit - 1, WHAT, [1], "DT_FLOAT")
    budget.charge(1, WHAT, [1], "DT_FLOAT")
    with pytest.raises(InvalidArgument, match="besides the"):
        budget.charge(1, WHAT, [1], "DT_FLOAT")
    assert STRING_ELEMENT_BYTES == 65
