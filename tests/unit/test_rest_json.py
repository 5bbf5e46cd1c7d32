"""TF Serving's REST JSON requests: functions.serving.codecs.json_text (parse_json,
dumps) and json_decode (parse_predict_body, decode_inputs).

Cases follow tensorflow_serving/util/json_tensor_test.cc where they apply; the
encoders and :classify/:regress bodies are in test_rest_json_encode.py.
"""

# ruff: noqa: E501  (tables of TF Serving's messages read best one case a line)

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np
import pytest

from functions.serving.codecs import json_tensor, tensors
from functions.serving.codecs.json_decode import (
    JsonFormat,
    PredictBody,
    decode_inputs,
    parse_predict_body,
)
from functions.serving.codecs.json_text import QUOTE_BYTES, clip, dumps, parse_json, value_to_string
from functions.serving.codecs.specs import TensorSpec
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


# ----------------------------------------------------------------------------- dumps


def test_dumps_plain_values() -> None:
    value = {"a": [1, 2.5, None, True, False, "x\u00e9", (0.1,)], "b": {"c": math.inf}}
    assert (
        dumps(value) == '{"a":[1,2.5,null,true,false,"x\u00e9",[0.1]],"b":{"c":Infinity}}'.encode()
    )
    assert dumps({"s": "\ud800"}) == b'{"s":"\\ud800"}'
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_errors_are_rollway_errors() -> None:
    with pytest.raises(RollwayError):
        parse_json(b"nope")


# ------------------------------------------------------ what errors quote of a body

QUOTE_LIMIT = QUOTE_BYTES + len("...")


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip("x" * QUOTE_BYTES) == "x" * QUOTE_BYTES
    assert clip("x" * (QUOTE_BYTES + 1)) == "x" * QUOTE_BYTES + "..."
    cut = clip("\u00e9" * QUOTE_BYTES)  # two bytes each: cut between characters
    assert cut == "\u00e9" * (QUOTE_BYTES // 2) + "..."
    assert len(clip("\u20ac" * 10**6).encode()) <= QUOTE_LIMIT


def test_value_to_string_quotes_a_huge_document_in_a_few_hundred_bytes() -> None:
    doc = {"instances": [0.5] * 2_000_000, "inputs": 1}
    started = time.monotonic()
    text = value_to_string(doc)
    assert time.monotonic() - started < 0.5  # only the quoted part is written
    assert text.startswith('{\n    "instances": [\n        0.5,') and text.endswith("...")
    assert len(text.encode()) <= QUOTE_LIMIT
    assert value_to_string({"a": [1]}) == '{\n    "a": [\n        1\n    ]\n}'


HUGE = 10_000_000  # bytes of request text in each error below


@pytest.mark.parametrize(
    ("body", "inputs", "fragment"),
    [
        ('{"instances": [1], "inputs": "' + "x" * HUGE + '"}', {"x": FLOAT}, "expecting only one of"),
        ('{"signature_name": 1, "pad": "' + "x" * HUGE + '"}', {"x": FLOAT}, "must be a string value"),
        ('{"inputs": "' + "x" * HUGE + '"}', {"x": FLOAT}, "is not of expected type: float"),
        ('{"inputs": {"b64": "' + "!" * HUGE + '"}}', {"x": INT32}, "is not of expected type: int32"),
        ('{"inputs": [{"b64": 1, "pad": "' + "x" * HUGE + '"}]}', {"x": STRING}, "not formatted correctly for base64"),
        ('{"instances": [{"' + "k" * HUGE + '": 1}]}', {"x": FLOAT}, "does not have named input"),
        ('{"instances": [{"x": "' + "x" * HUGE + '"}]}', {"x": STRING, "y": STRING}, "keys must be equal to"),
        ('{"instances": [[1], [' + "1," * (HUGE // 2) + "1]]}", {"x": FLOAT}, "Expecting tensor size"),
    ],
)  # fmt: skip
def test_errors_quote_at_most_a_few_hundred_bytes(
    body: str, inputs: dict[str, int], fragment: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        decode(body, **inputs)
    assert fragment in err.value.message
    assert len(err.value.message.encode()) < 4 * QUOTE_LIMIT + 300


def test_json_tensors_count_strings_at_their_real_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tensors, "MAX_TENSOR_BYTES", 2 * tensors.STRING_ELEMENT_BYTES - 1)
    with pytest.raises(InvalidArgument) as err:
        json_tensor.array([b"", b""], [2], STRING, 'input "x"')
    assert err.value.message == (
        'input "x": shape [2] of string needs 130 bytes, more than the 129-byte limit for one tensor'
    )
    assert json_tensor.array([b""], [1], STRING).tolist() == [b""]
