"""TF Serving's REST JSON results and :classify/:regress bodies:
functions.serving.codecs.json_encode and json_examples.

Cases follow tensorflow_serving/util/json_tensor_test.cc where they apply.
"""

# ruff: noqa: E501  (tables of TF Serving's messages read best one case a line)

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from functions.serving.codecs.json_decode import JsonFormat, PredictBody, decode_inputs
from functions.serving.codecs.json_encode import (
    encode_classification,
    encode_outputs,
    encode_regression,
)
from functions.serving.codecs.json_examples import parse_examples_body
from functions.serving.codecs.json_text import JsonFloat, dumps, parse_json
from functions.serving.dataplane.types import Class
from loader.errors import InvalidArgument
from tests.unit.test_rest_json import FLOAT, STRING, assert_same, spec, strings

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
    f32 = lambda v: float(np.float32(v))  # noqa: E731 - scores are float32, as in TF Serving
    result = (
        (Class("car", f32(0.2)), Class("bike", f32(0.7)), Class("bus", f32(0.1))),
        (Class("car", f32(0.7)), Class("bike", f32(0.1))),
    )
    assert dumps(encode_classification(result)) == (
        b'{"results":[[["car",0.2],["bike",0.7],["bus",0.1]],[["car",0.7],["bike",0.1]]]}'
    )
    assert encode_classification(((Class("", 3.0),),)) == {"results": [[["", 3.0]]]}
    with pytest.raises(InvalidArgument, match="Cannot convert empty ClassificationResults to JSON"):
        encode_classification(())


def test_encode_regression() -> None:
    result = tuple(float(np.float32(v)) for v in (0.2, math.inf, 1.0, -math.inf, math.nan, 3))
    assert dumps(encode_regression(result)) == (b'{"results":[0.2,Infinity,1.0,-Infinity,NaN,3.0]}')
    with pytest.raises(InvalidArgument, match="Cannot convert empty RegressionResults to JSON"):
        encode_regression(())
