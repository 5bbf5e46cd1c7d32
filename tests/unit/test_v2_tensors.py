"""The v2 tensor codec: every datatype both ways, and every malformed input an
InvalidArgument naming the input, refused before anything is allocated."""

from __future__ import annotations

import struct
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from functions.serving.codecs import v2_tensors as v2
from loader.errors import InvalidArgument

NUMERIC = [
    ("BOOL", [True, False, True, True]),
    ("UINT8", [0, 1, 200, 255]),
    ("UINT16", [0, 1, 2, 65535]),
    ("UINT32", [0, 1, 2, 2**32 - 1]),
    ("UINT64", [0, 1, 2, 2**64 - 1]),
    ("INT8", [-128, -1, 0, 127]),
    ("INT16", [-(2**15), -1, 0, 2**15 - 1]),
    ("INT32", [-(2**31), -1, 0, 2**31 - 1]),
    ("INT64", [-(2**63), -1, 0, 2**63 - 1]),
    ("FP16", [0.5, -1.0, 2.0, 65504.0]),
    ("FP32", [0.5, -1.0, 2.25, 3.0]),
    ("FP64", [0.1, -1.0, 1e300, 3.0]),
    ("BF16", [0.5, -1.0, 2.0, 3.0]),
]


def test_datatypes_map_to_tensorflow_and_numpy() -> None:
    assert set(v2.DATATYPES) == {name for name, _ in NUMERIC} | {"BYTES"}
    assert v2.DATATYPES["BF16"] == np.dtype(ml_dtypes.bfloat16)
    assert v2.DATATYPES["BYTES"] == np.dtype(object)
    assert v2.datatype_of_tf(1) == "FP32"
    assert v2.datatype_of_tf(7) == "BYTES"
    assert v2.datatype_of_tf(14) == "BF16"
    assert v2.datatype_of_tf(19) == "FP16"
    for name, number in v2.TF_DTYPES.items():
        assert v2.datatype_of_tf(number) == name


@pytest.mark.parametrize("dtype", [8, 18, 20, 21, 0])
def test_datatype_of_tf_refuses_types_v2_lacks(dtype: int) -> None:
    with pytest.raises(InvalidArgument, match="DT_"):
        v2.datatype_of_tf(dtype)


def test_datatype_of_arrays() -> None:
    assert v2.datatype_of(np.zeros(2, np.float32)) == "FP32"
    assert v2.datatype_of(np.array([b"a"], dtype=object)) == "BYTES"
    assert v2.datatype_of(np.array(["a"])) == "BYTES"
    assert v2.datatype_of(np.array([b"a"])) == "BYTES"
    with pytest.raises(InvalidArgument, match="complex64"):
        v2.datatype_of(np.zeros(1, np.complex64))


@pytest.mark.parametrize(("datatype", "values"), NUMERIC)
def test_numeric_round_trips(datatype: str, values: list[Any]) -> None:
    array = v2.from_values("x", datatype, [2, 2], values)
    assert array.dtype == v2.DATATYPES[datatype]
    assert array.shape == (2, 2)
    assert v2.to_values(array) == values
    raw = v2.to_raw(array)
    assert len(raw) == 4 * array.dtype.itemsize
    back = v2.from_raw("x", datatype, (2, 2), raw)
    np.testing.assert_array_equal(back, array)
    assert back.dtype == array.dtype


def test_raw_is_little_endian() -> None:
    assert v2.to_raw(np.array([1], np.int32)) == b"\x01\0\0\0"
    assert v2.to_raw(np.array([1], dtype=">i4")) == b"\x01\0\0\0"
    assert v2.from_raw("x", "INT32", [1], b"\x01\0\0\0")[0] == 1
    assert v2.from_raw("x", "FP16", [1], np.float16(1.5).tobytes())[0] == 1.5


def test_bytes_round_trip_with_length_prefixes() -> None:
    array = np.array([b"", b"ab", "caf\u00e9".encode(), b"\xff"], dtype=object).reshape(2, 2)
    raw = v2.to_raw(array)
    assert raw[:8] == struct.pack("<I", 0) + struct.pack("<I", 2)
    back = v2.from_raw("x", "BYTES", [2, 2], raw)
    assert back.dtype == object and back.tolist() == array.tolist()
    assert v2.to_values(back, bytes_as_text=False) == [b"", b"ab", "caf\u00e9".encode(), b"\xff"]
    with pytest.raises(InvalidArgument, match="binary_data"):
        v2.to_values(back)
    assert v2.to_values(back[:1]) == ["", "ab"]


def test_bytes_from_strings_and_bytes() -> None:
    array = v2.from_values("x", "BYTES", [3], ["a", b"b", "\u00e9"])
    assert array.tolist() == [b"a", b"b", "\u00e9".encode()]
    assert v2.to_raw(np.array(["ab"])) == b"\x02\0\0\0ab"


def test_nested_values_are_flattened_row_major() -> None:
    array = v2.from_values("x", "INT32", [2, 3], [[1, 2, 3], [4, 5, 6]])
    assert array.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert v2.from_values("x", "FP32", [2, 1], [[1], [2]]).tolist() == [[1.0], [2.0]]
    assert v2.from_values("x", "FP32", [], [7]).shape == ()
    assert v2.from_values("x", "FP32", [0, 3], []).shape == (0, 3)


@pytest.mark.parametrize(
    ("datatype", "shape", "values", "match"),
    [
        ("FP32", [2], [1.0, "a"], "FP32 data holds a string"),
        ("FP32", [1], [True], "holds a boolean"),
        ("FP32", [1], [None], "holds null"),
        ("FP32", [1], [{"a": 1}], "holds an object"),
        ("INT32", [1], [1.5], "INT32 data holds a floating-point number"),
        ("INT8", [1], [128], "value 128 does not fit INT8"),
        ("UINT8", [1], [-1], "value -1 does not fit UINT8"),
        ("UINT64", [1], [2**64], "does not fit UINT64"),
        ("BOOL", [1], [1], "BOOL data holds an integer"),
        ("BYTES", [1], [1], "BYTES data holds an integer"),
        ("FP32", [3], [1.0, 2.0], "2 values, but shape \\[3\\] needs 3"),
        ("FP32", [1], [1.0, 2.0], "2 values, but shape \\[1\\] needs 1"),
        ("FP32", [2**40, 2**40], [1.0], "needs 1208925819614629174706176"),
        ("FP32", [-1], [], "negative dimension"),
        ("FP32", [1.5], [1.0], "not a list of integers"),
        ("FP32", ["1"], [1.0], "not a list of integers"),
        ("FP32", [True], [1.0], "not a list of integers"),
        ("FP32", [1] * 33, [1.0], "rank 33"),
        ("FP33", [1], [1.0], "unknown datatype 'FP33'"),
        ("FP32", [1], "1", "must be a list"),
        ("FP32", [1], [[[[[1.0]]]]], None),
    ],
)
def test_bad_values(datatype: str, shape: list[Any], values: Any, match: str | None) -> None:
    if match is None:  # nesting alone is fine
        assert v2.from_values("x", datatype, shape, values).tolist() == [1.0]
        return
    with pytest.raises(InvalidArgument, match=match) as caught:
        v2.from_values("x", datatype, shape, values)
    assert caught.value.message.startswith('input "x": ')


def test_values_nested_too_deep() -> None:
    values: Any = [1.0]
    for _ in range(40):
        values = [values]
    with pytest.raises(InvalidArgument, match="nested more than 32"):
        v2.from_values("x", "FP32", [1], values)


def _prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "match"),
    [
        ("FP32", [3], b"\0" * 8, "8 bytes of data, but shape \\[3\\] of FP32 needs 12"),
        ("FP32", [1], b"\0" * 8, "needs 4"),
        ("FP32", [2**62, 2**62], b"\0" * 4, "needs 85070591730234615865843651857942052864"),
        ("INT64", [-2], b"", "negative dimension"),
        ("BOOL", [2], b"\x01\x02", "neither 0 nor 1"),
        ("BYTES", [1], struct.pack("<I", 9) + b"ab", "element 0 declares 9 bytes, but only 2"),
        ("BYTES", [1], struct.pack("<I", 2**32 - 1), "declares 4294967295 bytes"),
        ("BYTES", [2], _prefixed(b"ab") + b"\0\0", "ends before element 1"),
        ("BYTES", [1], _prefixed(b"ab") + b"x", "1 bytes of data left"),
        ("BYTES", [2**40], b"\0" * 8, "needs 1099511627776 elements"),
        ("BYTES", [3], b"\0\0", "at least 4 bytes"),
        ("XX", [1], b"", "unknown datatype"),
    ],
)
def test_bad_raw(datatype: str, shape: list[int], raw: bytes, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match) as caught:
        v2.from_raw("in0", datatype, shape, raw)
    assert caught.value.message.startswith('input "in0": ')


def test_raw_accepts_memoryviews_without_copying() -> None:
    body = bytearray(b"head" + np.array([1.0, 2.0], np.float32).tobytes())
    array = v2.from_raw("x", "FP32", [2], memoryview(body)[4:])
    assert array.tolist() == [1.0, 2.0]
    assert not array.flags.writeable
    assert v2.from_raw("x", "BYTES", [1], memoryview(_prefixed(b"z"))).tolist() == [b"z"]


def test_half_precision_values_are_python_floats() -> None:
    values = v2.to_values(np.array([1.5], dtype=ml_dtypes.bfloat16))
    assert values == [1.5] and type(values[0]) is float
