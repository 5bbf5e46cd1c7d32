"""functions.serving.rest_json: TF Serving's REST JSON formats.

Cases follow tensorflow_serving/util/json_tensor_test.cc where they apply.
"""

# ruff: noqa: E501  (tables of TF Serving's messages read best one case a line)

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from functions.serving.rest_json import (
    JsonFloat,
    JsonFormat,
    PredictBody,
    decode_inputs,
    dumps,
    encode_classification,
    encode_outputs,
    encode_regression,
    parse_examples_body,
    parse_json,
    parse_predict_body,
)
from functions.serving.servable import TensorSpec
from loader.errors import Code, InvalidArgument, RollwayError, Unimplemented

FLOAT, DOUBLE, INT32, UINT8, INT16, INT8, STRING = 1, 2, 3, 4, 5, 6, 7
COMPLEX64, INT64, BOOL, BFLOAT16, UINT16, HALF, UINT32, UINT64 = 8, 9, 10, 14, 17, 19, 22, 23


def spec(dtype: int) -> TensorSpec:
    return TensorSpec(dtype, None)


def decode(body: str, **inputs: int) -> dict[str, np.ndarray]:
    predict = parse_predict_body(parse_json(body.encode()))
    return decode_inputs(predict, {k: spec(v) for k, v in inputs.items()})


def strings(*values: bytes) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    if got.dtype == object:
        assert got.tolist() == want.tolist()
    else:
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- parse_json


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "The document is empty"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a": }', "Invalid value. at offset: 6"),
        (b'{"a" 1}', "Missing a colon"),
        (b"{} []", "must not be followed by other values"),
        (b'{"a": "x', "Missing a closing quotation mark"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"[1, 2]", "JSON Value: [\n    1,\n    2\n] Is not object"),
        (b'"x"', 'JSON Value: "x" Is not object'),
        (b'{"a": 1e999}', "Number too big"),
        (b"[" * 100000 + b"]" * 100000, "JSON Parse error"),
    ],
)
def test_parse_json_errors(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_json(body)
    assert fragment in err.value.message


def test_parse_json_values() -> None:
    doc = parse_json(b'\xef\xbb\xbf{"a": [NaN, Infinity, -Infinity, 1, 1.0, 18446744073709551616]}')
    a = doc["a"]
    assert math.isnan(a[0]) and a[1] == math.inf and a[2] == -math.inf
    assert type(a[3]) is int and type(a[4]) is float
    assert type(a[5]) is float  # beyond uint64: a double, as rapidjson parses it
    assert parse_json(b'{"a": 18446744073709551615}')["a"] == 2**64 - 1


# ----------------------------------------------------------------------------- parse_predict_body


@pytest.mark.parametrize(
    ("body", "want"),
    [
        ({"instances": [1]}, PredictBody("", JsonFormat.ROW, [1])),
        (
            {"signature_name": "s", "inputs": {"a": 1}},
            PredictBody("s", JsonFormat.COLUMNAR, {"a": 1}),
        ),
        ({"inputs": []}, PredictBody("", JsonFormat.COLUMNAR, [])),
    ],
)
def test_parse_predict_body(body: Any, want: PredictBody) -> None:
    assert parse_predict_body(body) == want


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"signature_name": 5, "instances": [1]}, "'signature_name' key must be a string value."),
        (
            {"instances": [1], "inputs": [1]},
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
        ),
        ({"instances": {"a": 1}}, "Excepting 'instances' to be an list/array"),
        ({"instances": []}, "No values in 'instances' array"),
        ({"signature_name": "x"}, "Missing 'inputs' or 'instances' key"),
        ([1], "Is not object"),
    ],
)
def test_parse_predict_body_errors(body: Any, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_predict_body(body)
    assert fragment in err.value.message


def test_parse_predict_body_quotes_the_document() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_predict_body({"instances": []})
    assert err.value.message == (
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"
    )


# ----------------------------------------------------------------------------- decode_inputs

DECODE_CASES: list[tuple[str, str, dict[str, int], dict[str, np.ndarray]]] = [
    (
        "SingleUnnamedTensor",
        '{"instances": [[1,2],[3,4],[5,6]]}',
        {"default": INT32},
        {"default": np.array([[1, 2], [3, 4], [5, 6]], np.int32)},
    ),
    (
        "MixedInputForFloatTensor",
        '{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}',
        {"default": FLOAT},
        {"default": np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32)},
    ),
    (
        "MixedInputForDoubleTensor",
        '{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}',
        {"default": DOUBLE},
        {"default": np.array([1, 2, 3, 4, 0.662, 0, 0], np.float64)},
    ),
    (
        "SingleUnnamedTensorWithSignature",
        '{"signature_name": "predict_images", "instances": [[1,2]]}',
        {"default": INT32},
        {"default": np.array([[1, 2]], np.int32)},
    ),
    (
        "SingleUnnamedTensorBase64Scalars",
        '{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}',
        {"default": STRING},
        {"default": strings(b"hello", b"world")},
    ),
    (
        "SingleUnnamedTensorBase64Lists",
        '{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}',
        {"default": STRING},
        {"default": strings(b"hello", b"world").reshape(2, 1)},
    ),
    (
        "SingleNamedTensorBase64",
        '{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}',
        {"default": STRING},
        {"default": strings(b"hello", b"world").reshape(1, 2, 1)},
    ),
    (
        "MultipleNamedTensor",
        """{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
             "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
             "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
        {"int_tensor": INT32, "str_tensor": STRING, "float_tensor": FLOAT, "dbl_tensor": DOUBLE},
        {
            "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
            "str_tensor": strings(b"foo", b"bar", b"baz", b"bat").reshape(2, 2),
            "float_tensor": np.array([[1, np.nan], [2, np.inf]], np.float32),
            "dbl_tensor": np.array([[np.nan], [2]], np.float64),
        },
    ),
    (
        "SingleUnnamedTensorColumnarFormat",
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}',
        {"int_tensor": INT32},
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
    ),
    (
        "SingleUnnamedTensorColumnarFormat, no name",
        '{"inputs": [[[1,2],[3,4],[5,6]]]}',
        {"int_tensor": INT32},
        {"int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32)},
    ),
    (
        "MultipleNamedTensorColumnarFormat",
        """{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"],
            "bin_tensor": { "b64" : "aGVsbG8=" }}}""",
        {"int_tensor": INT32, "str_tensor": STRING, "bin_tensor": STRING},
        {
            "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]]], np.int32),
            "str_tensor": strings(b"foo", b"bar"),
            "bin_tensor": strings(b"hello").reshape(()),
        },
    ),
    (
        "columnar extra keys are ignored, as TF Serving",
        '{"inputs": {"a": 1, "zzz": "ignored"}}',
        {"a": INT64},
        {"a": np.array(1, np.int64)},
    ),
    (
        "columnar b64 value for a single input",
        '{"inputs": {"b64": "aGk"}}',
        {"x": STRING},
        {"x": strings(b"hi").reshape(())},
    ),
    (
        "row scalars",
        '{"instances": [true, false]}',
        {"x": BOOL},
        {"x": np.array([True, False])},
    ),
    (
        "row empty lists",
        '{"instances": [[], []]}',
        {"x": FLOAT},
        {"x": np.zeros((2, 0), np.float32)},
    ),
    (
        "unicode strings become UTF-8",
        '{"instances": ["h\\u00e9", "\u00e9"]}',
        {"x": STRING},
        {"x": strings("h\u00e9".encode(), "\u00e9".encode())},
    ),
    (
        "integer types at their limits",
        """{"instances": [{"i8": -128, "u8": 255, "i16": 32767, "i64": -9223372036854775808,
            "u32": 4294967295, "u64": 18446744073709551615, "f": 16777215, "d": -9007199254740991}]}""",
        {
            "i8": INT8,
            "u8": UINT8,
            "i16": INT16,
            "i64": INT64,
            "u32": UINT32,
            "u64": UINT64,
            "f": FLOAT,
            "d": DOUBLE,
        },
        {
            "i8": np.array([-128], np.int8),
            "u8": np.array([255], np.uint8),
            "i16": np.array([32767], np.int16),
            "i64": np.array([-(2**63)], np.int64),
            "u32": np.array([2**32 - 1], np.uint32),
            "u64": np.array([2**64 - 1], np.uint64),
            "f": np.array([16777215], np.float32),
            "d": np.array([-(2**53) + 1], np.float64),
        },
    ),
    (
        "floats: NaN, infinities, beyond-uint64 integers as doubles",
        '{"inputs": [NaN, -Infinity, 1e300, 18446744073709551616]}',
        {"x": DOUBLE},
        {"x": np.array([np.nan, -np.inf, 1e300, 2.0**64])},
    ),
]


@pytest.mark.parametrize(
    ("body", "inputs", "want"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES]
)
def test_decode_inputs(body: str, inputs: dict[str, int], want: dict[str, np.ndarray]) -> None:
    got = decode(body, **inputs)
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        assert_same(got[name], array)


DECODE_ERRORS: list[tuple[str, dict[str, int], str]] = [
    # json_tensor_test.cc: SingleUnnamedTensorErrors
    ('{"instances": [[1,2],[3,4],[5,6,7]]}', {"default": INT32}, "Expecting tensor size"),
    ('{"instances": [[1,2],[3,4],[[5,6]]]}', {"default": INT32}, "Expecting shape"),
    ('{"instances": [1, [1]]}', {"default": INT32}, "Expecting shape"),
    ('{"instances": [[1,2],["a", "b"]]}', {"default": INT32}, "not of expected type"),
    ('{"instances": [1.7976931348623157e308]}', {"default": FLOAT}, "loss of precision"),
    ('{"instances": [16777217]}', {"default": FLOAT}, "loss of precision"),
    ('{"instances": [9007199254740993]}', {"default": DOUBLE}, "loss of precision"),
    # MultipleNamedTensorErrors
    (
        '{"instances": [{"i": [[1,2],[3,4],[5,6]], "s": ["foo", "bar"]},'
        ' {"i": [[[7,8],[9,0],[1,2]]], "s": ["baz", "bat"]}]}',
        {"i": INT32, "s": STRING},
        "Expecting shape",
    ),
    (
        '{"instances": [{"i": [[1,2],[3,4],[5,6],[7,8]], "s": ["foo", "bar"]},'
        ' {"i": [[7,8],[9,0],[1,2]], "s": ["baz", "bat"]}]}',
        {"i": INT32, "s": STRING},
        "Expecting tensor size",
    ),
    (
        '{"instances": [{"i": [1], "s": ["foo"]}, [1, 20, 30]]}',
        {"i": INT32, "s": STRING},
        "Expecting object but got list at item 1 of input list",
    ),
    (
        '{"instances": [["baz", "bar"], {"s": ["baz", "bat"]}]}',
        {"s": STRING},
        "Expecting value/list but got object at item 1 of input list",
    ),
    # exact messages
    (
        '{"instances": [[1,2],["a", "b"]]}',
        {"x": INT32},
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
        'JSON Value: "a" Type: String is not of expected type: int32',
    ),
    (
        '{"instances": [{"x": 1, "y": 2}]}',
        {"x": INT32},
        "Failed to process element: 0 key: y of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: y",
    ),
    (
        '{"instances": [{"x": 1}]}',
        {"x": INT32, "y": INT32},
        "Failed to process element: 0 of 'instances' list. JSON object: {\n"
        '    "x": 1\n} keys must be equal to: x,y',
    ),
    (
        '{"instances": [1, 2]}',
        {"x": INT32, "y": INT32},
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map",
    ),
    ('{"instances": [[1,2],[3,4,5]]}', {"x": INT32}, "Expecting tensor size: 2 but got: 3"),
    ('{"instances": [[1,2],[[3,4]]]}', {"x": INT32}, "Expecting shape [2] but got: [1,2]"),
    (
        '{"instances": [[[1,2],[3]]]}',
        {"x": INT32},
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
    ),
    (
        '{"instances": [[[1,2],3]]}',
        {"x": INT32},
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
    ),
    (
        '{"instances": [[1,[2]]]}',
        {"x": INT32},
        "Encountered list at unexpected level: 1 expected < 1",
    ),
    (
        '{"instances": [1.5]}',
        {"x": INT32},
        "JSON Value: 1.5 Type: Number is not of expected type: int32",
    ),
    ('{"instances": [1]}', {"x": STRING}, "JSON Value: 1 Type: Number is not of expected type: string"),
    ('{"instances": [1]}', {"x": BOOL}, "Type: Number is not of expected type: bool"),
    ('{"instances": [true]}', {"x": FLOAT}, "JSON Value: true Type: True is not of expected type: float"),
    ('{"instances": [null]}', {"x": INT64}, "JSON Value: null Type: Null is not of expected type: int64"),
    ('{"instances": [2147483648]}', {"x": INT32}, "is not of expected type: int32"),
    ('{"instances": [-1]}', {"x": UINT32}, "is not of expected type: uint32"),
    ('{"instances": [-1]}', {"x": UINT64}, "is not of expected type: uint64"),
    ('{"instances": [9223372036854775808]}', {"x": INT64}, "is not of expected type: int64"),
    ('{"instances": [300]}', {"x": INT8}, "JSON Value: 300 Type: Number is not of expected type: int8"),
    ('{"instances": [256]}', {"x": UINT8}, "is not of expected type: uint8"),
    ('{"instances": [16777216]}', {"x": FLOAT}, "Cannot convert JSON value: 16777216 to float without loss of precision."),
    ('{"instances": [1e39]}', {"x": FLOAT}, "to float without loss of precision"),
    ('{"instances": [{"b64": "aGk="}]}', {"x": INT32}, "Type: Object is not of expected type: int32"),
    ('{"instances": [[{"b64": 1}]]}', {"x": STRING}, "not formatted correctly for base64 data"),
    ('{"instances": [[{"b64": "a", "c": "d"}]]}', {"x": STRING}, "not formatted correctly for base64 data"),
    ('{"instances": [{"b64": "!!!!"}]}', {"x": STRING}, "Unable to base64 decode"),
    ('{"instances": [1]}', {"x": HALF}, "Error: UNIMPLEMENTED: Conversion of JSON Value: 1 to type: half"),
    # columnar
    (
        '{"inputs": [1]}',
        {"x": INT32, "y": INT32},
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map",
    ),
    ('{"inputs": {"x": [1]}}', {"x": INT32, "y": INT32}, "Missing named input: y in 'inputs' object."),
    ('{"inputs": {"x": [[1], [2, 3]]}}', {"x": INT32}, "Encountered list at unexpected size: 2"),
    ('{"inputs": {"x": ["a"]}}', {"x": FLOAT}, 'JSON Value: "a" Type: String is not of expected type: float'),
    ('{"inputs": [0.5]}', {"x": UINT64}, "JSON Value: 0.5 Type: Number is not of expected type: uint64"),
    ('{"inputs": ' + "[" * 40 + "1" + "]" * 40 + "}", {"x": INT32}, "at most 32"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "inputs", "fragment"), DECODE_ERRORS)
def test_decode_inputs_errors(body: str, inputs: dict[str, int], fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode(body, **inputs)
    assert fragment in err.value.message


def test_decode_columnar_unimplemented_dtype() -> None:
    with pytest.raises(Unimplemented) as err:
        decode('{"inputs": [1.5]}', x=BFLOAT16)
    assert err.value.message == "Conversion of JSON Value: 1.5 to type: bfloat16"
    assert err.value.code is Code.UNIMPLEMENTED


def test_decode_no_inputs() -> None:
    with pytest.raises(InvalidArgument, match="Failed to get input map for signature: DEFAULT"):
        decode_inputs(PredictBody("", JsonFormat.ROW, [1]), {})
    with pytest.raises(InvalidArgument, match="for signature: sig"):
        decode_inputs(PredictBody("sig", JsonFormat.COLUMNAR, 1), {})


def test_decode_large_float_input_is_float32() -> None:
    values = np.arange(10000, dtype=np.float32).reshape(100, 100) / 7
    body = json.dumps({"instances": values.tolist()})
    got = decode(body, x=FLOAT)["x"]
    assert_same(got, values)


# ----------------------------------------------------------------------------- encode_outputs


def _bytes(*values: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return strings(*values).reshape(shape)


INT_2x3x2 = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
ENCODE_CASES: list[tuple[str, dict[str, np.ndarray], JsonFormat, str | bytes]] = [
    (
        "FromJsonSingleTensor row",
        {"int_tensor": INT_2x3x2},
        JsonFormat.ROW,
        '{"predictions":[[[1,2],[3,4],[5,6]],[[7,8],[9,0],[1,2]]]}',
    ),
    (
        "FromJsonSingleTensor columnar",
        {"int_tensor": INT_2x3x2},
        JsonFormat.COLUMNAR,
        '{"outputs":[[[1,2],[3,4],[5,6]],[[7,8],[9,0],[1,2]]]}',
    ),
    (
        "FromJsonSingleScalarTensor",
        {"int_tensor": np.array([1, 2, 3, 4, 5], np.int32)},
        JsonFormat.ROW,
        '{"predictions":[1,2,3,4,5]}',
    ),
    (
        "FromJsonSingleBytesTensor",
        {"str_tensor_bytes": _bytes(b"hello", b"world", b"tf", b"serving", shape=(2, 2))},
        JsonFormat.ROW,
        '{"predictions":[[{"b64":"aGVsbG8="},{"b64":"d29ybGQ="}],'
        '[{"b64":"dGY="},{"b64":"c2VydmluZw=="}]]}',
    ),
    (
        "FromJsonSingleFloatTensorSixDigitPrecision",
        {
            "float_tensor": np.array(
                [[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32
            )
        },
        JsonFormat.ROW,
        '{"predictions":[[9e+06,999999.0,0.5],[0.0003,3e-05,555557.5]]}',
    ),
    (
        "FromJsonSingleFloatTensorNonFinite",
        {"float_tensor": np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)},
        JsonFormat.ROW,
        '{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}',
    ),
    (
        "float32 and float64 precision",
        {
            "f": np.array([0.1, 1 / 3, 123456789, -0.0], np.float32),
            "d": np.array([0.1, 1 / 3, 123456789, 1e-7]),
        },
        JsonFormat.COLUMNAR,
        '{"outputs":{"d":[0.1,0.33333333333333331,123456789.0,1e-07],'
        '"f":[0.1,0.333333343,123456792.0,-0.0]}}',
    ),
    (
        "FromJsonMultipleNamedTensors row",
        {
            "int_tensor": INT_2x3x2,
            "str_tensor": _bytes(b"foo", b"bar", b"baz", b"bat", shape=(2, 2)),
            "float_tensor": np.array([[1.0], [2.0]], np.float32),
            "double_scalar_tensor": np.array([8.0, 9.0]),
            "str_tensor_bytes": _bytes(b"hello", b"world", b"tf", b"serving", shape=(2, 2)),
        },
        JsonFormat.ROW,
        '{"predictions":['
        '{"double_scalar_tensor":8.0,"float_tensor":[1.0],"int_tensor":[[1,2],[3,4],[5,6]],'
        '"str_tensor":["foo","bar"],"str_tensor_bytes":[{"b64":"aGVsbG8="},{"b64":"d29ybGQ="}]},'
        '{"double_scalar_tensor":9.0,"float_tensor":[2.0],"int_tensor":[[7,8],[9,0],[1,2]],'
        '"str_tensor":["baz","bat"],"str_tensor_bytes":[{"b64":"dGY="},{"b64":"c2VydmluZw=="}]}]}',
    ),
    (
        "FromJsonMultipleNamedTensors columnar",
        {
            "double_scalar_tensor": np.array([8.0, 9.0]),
            "str_tensor_bytes": _bytes(b"hello", b"world", shape=(2,)),
        },
        JsonFormat.COLUMNAR,
        '{"outputs":{"double_scalar_tensor":[8.0,9.0],'
        '"str_tensor_bytes":[{"b64":"aGVsbG8="},{"b64":"d29ybGQ="}]}}',
    ),
    (
        "FromJsonSingleZeroBatchTensor",
        {"int_tensor": np.zeros((0, 2), np.int32)},
        JsonFormat.ROW,
        '{"predictions":[]}',
    ),
    (
        "FromJsonMultipleZeroBatchTensors",
        {"s": np.empty((0, 1, 2), object), "f": np.zeros((0, 3, 4), np.float32)},
        JsonFormat.ROW,
        '{"predictions":[]}',
    ),
    (
        "columnar scalar, bools, unsigned, int64",
        {"x": np.array(True)},
        JsonFormat.COLUMNAR,
        '{"outputs":true}',
    ),
    (
        "wide integers",
        {"a": np.array([2**64 - 1], np.uint64), "b": np.array([-(2**63)], np.int64)},
        JsonFormat.ROW,
        '{"predictions":[{"a":18446744073709551615,"b":-9223372036854775808}]}',
    ),
    (
        "half as float",
        {"h": np.array([0.1, 65504], np.float16)},
        JsonFormat.ROW,
        '{"predictions":[0.0999755859,65504.0]}',
    ),
    (
        "strings are written raw, UTF-8 or not, with JSON escapes",
        {"s": _bytes("\u00e9".encode(), b"\xff\x00", b'"\\\n', shape=(3,))},
        JsonFormat.ROW,
        b'{"predictions":["\xc3\xa9","\xff\\u0000","\\"\\\\\\n"]}',
    ),
    (
        "numpy S and U arrays",
        {"a": np.array([b"x"]), "b_bytes": np.array(["y"])},
        JsonFormat.ROW,
        '{"predictions":[{"a":"x","b_bytes":{"b64":"eQ=="}}]}',
    ),
    (
        "non-string named _bytes is plain",
        {"n_bytes": np.array([1], np.int32)},
        JsonFormat.ROW,
        '{"predictions":[1]}',
    ),
    (
        "zero-size unsupported dtype writes nothing",
        {"c": np.zeros((0,), np.complex64)},
        JsonFormat.ROW,
        '{"predictions":[]}',
    ),
]


@pytest.mark.parametrize(
    ("outputs", "fmt", "want"), [c[1:] for c in ENCODE_CASES], ids=[c[0] for c in ENCODE_CASES]
)
def test_encode_outputs(outputs: dict[str, np.ndarray], fmt: JsonFormat, want: str | bytes) -> None:
    expected = want if isinstance(want, bytes) else want.encode()
    assert dumps(encode_outputs(outputs, fmt)) == expected


def test_encode_outputs_values_compare_as_floats() -> None:
    out = encode_outputs({"x": np.array([0.1, np.nan], np.float32)}, JsonFormat.ROW)
    first, second = out["predictions"]
    assert isinstance(first, JsonFloat) and first == 0.1 and first.text == "0.1"
    assert math.isnan(second) and second.text == "NaN"
    # Plain json can write them too (as doubles).
    assert json.loads(json.dumps(out))["predictions"][0] == 0.1


@pytest.mark.parametrize(
    ("outputs", "fmt", "fragment"),
    [
        ({}, JsonFormat.ROW, "Cannot convert empty tensor map to JSON"),
        ({}, JsonFormat.COLUMNAR, "Cannot convert empty tensor map to JSON"),
        (
            {"tensor": np.array([1 + 2j], np.complex64)},
            JsonFormat.ROW,
            "Failed to write JSON value for tensor type: complex64",
        ),
        (
            {"tensor": np.array([1], np.uint16)},
            JsonFormat.COLUMNAR,
            "Failed to write JSON value for tensor type: uint16",
        ),
        ({"tensor": np.array(1, np.int32)}, JsonFormat.ROW, "Tensor name: tensor has no shape information "),
        (
            {"a": np.zeros((2, 3), np.int32), "b": np.empty((1, 3), object)},
            JsonFormat.ROW,
            "Tensor name: b has inconsistent batch size: 1 expecting: 2",
        ),
        (
            {"a": np.zeros((0, 2), np.int32), "b": np.empty((1, 2), object)},
            JsonFormat.ROW,
            "inconsistent batch size",
        ),
    ],
)  # fmt: skip
def test_encode_outputs_errors(
    outputs: dict[str, np.ndarray], fmt: JsonFormat, fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        encode_outputs(outputs, fmt)
    assert fragment in err.value.message


def test_dumps_plain_values() -> None:
    value = {"a": [1, 2.5, None, True, False, "x\u00e9", (0.1,)], "b": {"c": math.inf}}
    assert (
        dumps(value) == '{"a":[1,2.5,null,true,false,"x\u00e9",[0.1]],"b":{"c":Infinity}}'.encode()
    )
    assert dumps({"s": "\ud800"}) == b'{"s":"\\ud800"}'
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_round_trip_through_parse_json() -> None:
    arrays = {"f": np.array([[0.1, np.nan], [-np.inf, 3]], np.float32), "s": strings(b"a", b"b")}
    body = dumps(encode_outputs(arrays, JsonFormat.COLUMNAR))
    back = parse_json(body)["outputs"]
    got = decode_inputs(
        PredictBody("", JsonFormat.COLUMNAR, back), {"f": spec(FLOAT), "s": spec(STRING)}
    )
    assert_same(got["f"], arrays["f"])
    assert_same(got["s"], arrays["s"])


# ----------------------------------------------------------------------------- classify/regress


def _features(example: Any) -> dict[str, tuple[str, list[Any]]]:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_parse_examples_no_context() -> None:
    name, request_input = parse_examples_body(
        parse_json(b"""{"examples": [
            {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
            {"names": ["baz"], "ratings": 6.0}]}""")
    )
    assert name == ""
    assert request_input.WhichOneof("kind") == "example_list"
    first, second = request_input.example_list.examples
    assert _features(first) == {
        "names": ("bytes_list", [b"foo", b"bar"]),
        "ratings": ("float_list", [8.0, 9.0]),
        "age": ("int64_list", [20]),
    }
    assert _features(second) == {
        "names": ("bytes_list", [b"baz"]),
        "ratings": ("float_list", [6.0]),
    }


def test_parse_examples_with_context_and_signature() -> None:
    name, request_input = parse_examples_body(
        parse_json(b"""{
          "signature_name": "custom_signture",
          "context": {"query": "pizza", "location": ["sfo"]},
          "examples": [
            {"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
            {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
            {"names": "bar", "ratings": -Infinity, "empty": []}]}""")
    )
    assert name == "custom_signture"
    listed = request_input.example_list_with_context
    assert _features(listed.context) == {
        "query": ("bytes_list", [b"pizza"]),
        "location": ("bytes_list", [b"sfo"]),
    }
    one, two, three = (_features(e) for e in listed.examples)
    kind, ratings = one["ratings"]
    assert kind == "float_list" and ratings[:2] == [8.0, 9.0]
    assert math.isnan(ratings[2]) and ratings[3] == math.inf
    assert two == {
        "names": ("bytes_list", [b"baz", b"hello"]),
        "ratings": ("float_list", [6.0]),
        "intboolmix": ("int64_list", [1, 1, 0]),
    }
    assert three == {
        "names": ("bytes_list", [b"bar"]),
        "ratings": ("float_list", [-math.inf]),
        "empty": (None, []),
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"signature_name": ["hello"], "examples": [{"names": ["foo"]}]}', "'signature_name' key must be a string"),
        ('{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object but got JSON Array"),
        ('{"examples": {"names": ["foo", "bar"]}}', "Expecting 'examples' value to be an list/array"),
        ('{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object"),
        ('{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
        ('{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
        ('{"examples": [{"names": [10.0, 10]}]}', "feature: names expecting type: float"),
        ('{"examples": [{"names": ["a", true]}]}', "feature: names expecting type: bytes"),
        ('{"examples": [{"names": [1, "a"]}]}', "feature: names expecting type: int64"),
        ('{"examples": [{"names": [1, {"b64": "!"}]}]}', "feature: names expecting type: int64"),
        ('{"examples": [{"names": [{"b64": "!"}]}]}', "Unable to base64 decode"),
        ('{"examples": [{"names": [10, {"test": 10}]}]}', "names has element with unexpected JSON type: Object"),
        ('{"examples": [{"names": [[10], 20]}]}', "names has element with unexpected JSON type: Array"),
        ('{"examples": [{"names": [20, 18446744073709551603]}]}', "Feature: names has uint64 element. Only int64 is supported."),
        ('{"examples": [{"names": 1.7976931348623157e308}]}', "to float without loss of precision"),
        ('{"signature_name": "s"}', "When method is classify, key 'examples' is expected and was not found"),
        ('{"examples": []}', "'examples' value is an empty array"),
    ],
)  # fmt: skip
def test_parse_examples_errors(body: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_examples_body(parse_json(body.encode()))
    assert fragment in err.value.message


def test_parse_examples_body_not_object() -> None:
    with pytest.raises(InvalidArgument, match="Is not object"):
        parse_examples_body([])


def test_encode_classification() -> None:
    from tensorflow_serving.apis import classification_pb2

    result = classification_pb2.ClassificationResult()
    for row in ([("car", 0.2), ("bike", 0.7), ("bus", 0.1)], [("car", 0.7), ("bike", 0.1)]):
        item = result.classifications.add()
        for label, score in row:
            item.classes.add(label=label, score=score)
    assert dumps(encode_classification(result)) == (
        b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],[["car",0.7],["bike",0.1]]]}'
    )
    unlabeled = classification_pb2.ClassificationResult()
    unlabeled.classifications.add().classes.add(score=3)
    assert encode_classification(unlabeled) == {"results": [[["", 3.0]]]}
    with pytest.raises(InvalidArgument, match="Cannot convert empty ClassificationResults to JSON"):
        encode_classification(classification_pb2.ClassificationResult())


def test_encode_regression() -> None:
    from tensorflow_serving.apis import regression_pb2

    result = regression_pb2.RegressionResult()
    for value in (0.2, math.inf, 1.0, -math.inf, math.nan, 3):
        result.regressions.add(value=value)
    assert dumps(encode_regression(result)) == (b'{"results":[0.2,Infinity,1.0,-Infinity,NaN,3.0]}')
    with pytest.raises(InvalidArgument, match="Cannot convert empty RegressionResults to JSON"):
        encode_regression(regression_pb2.RegressionResult())


def test_errors_are_rollway_errors() -> None:
    with pytest.raises(RollwayError):
        parse_json(b"nope")
