"""The v2 REST infer body with the binary tensor data extension, both ways
(the server's answers to real clients are tests/integration/test_v2_rest.py)."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from functions.serving.api.v2.inference import InferResponse, OutputTensor
from functions.serving.api.v2.rest_codec import encode_infer, parse_infer
from loader.errors import InvalidArgument


def _binary(doc: dict[str, Any], data: bytes) -> tuple[bytes, bytes]:
    text = json.dumps(doc).encode()
    return text + data, str(len(text)).encode()


def test_json_and_binary_inputs_in_order() -> None:
    doc = {
        "id": "r1",
        "parameters": {"signature_name": "s", "binary_data_output": True},
        "inputs": [
            {"name": "a", "datatype": "INT32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [[1.5, 2.5]]},
            {"name": "c", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    body, length = _binary(doc, np.array([7, -1], "<i4").tobytes() + struct.pack("<I", 2) + b"hi")
    request = parse_infer("m", "3", body, length)
    assert (request.model, request.version, request.id) == ("m", "3", "r1")
    assert request.parameters["signature_name"] == "s"
    a, b, c = request.inputs
    assert (a.name, a.shape, a.array.tolist()) == ("a", (2,), [7, -1])
    assert (b.shape, b.array.tolist()) == ((1, 2), [[1.5, 2.5]])
    assert c.array.tolist() == [b"hi"]
    assert [(o.name, o.binary) for o in request.outputs] == [("y", False), ("z", None)]


@pytest.mark.parametrize(
    ("doc", "data", "length", "match"),
    [
        ({"inputs": []}, b"", None, "non-empty list"),
        ({"inputs": [1]}, b"", None, "must be a JSON object"),
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, b"", None, '"name"'),
        ({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}, b"", None, '"datatype"'),
        ({"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}, b"", None, '"shape"'),
        ({"id": 3, "inputs": []}, b"", None, '"id" must be a string'),
        ({"parameters": [], "inputs": []}, b"", None, '"parameters" must be a JSON object'),
        ({"parameters": {"binary_data_output": 1}, "inputs": []}, b"", None, "boolean"),
        ({"outputs": {}, "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
         b"", None, '"outputs" must be a list'),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
          "outputs": [{"name": "y", "parameters": {"classification": 2}}]}, b"", None,
         "classification"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
          "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}, b"", None, "boolean"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1],
                      "parameters": {"binary_data_size": 4}}]}, b"\0" * 4, "auto", "both"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                      "parameters": {"binary_data_size": -4}}]}, b"", "auto", "count of bytes"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                      "parameters": {"binary_data_size": True}}]}, b"", "auto", "count of bytes"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                      "parameters": {"binary_data_size": 4}}]}, b"\0\0", "auto", "runs past"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}, b"", b"-1",
         "not a number"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}, b"", b"999",
         "more than the"),
    ],
)  # fmt: skip
def test_bad_bodies(doc: dict[str, Any], data: bytes, length: Any, match: str) -> None:
    body, auto = _binary(doc, data)
    with pytest.raises(InvalidArgument, match=match):
        parse_infer("m", "", body, auto if length == "auto" else length)


def _response(*outputs: OutputTensor) -> InferResponse:
    return InferResponse("m", "3", "r1", outputs, {})


def _out(name: str, array: np.ndarray, datatype: str) -> OutputTensor:
    return OutputTensor(name, datatype, array.shape, array)


def test_outputs_binary_by_output_else_by_request() -> None:
    doc = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    request = parse_infer("m", "", json.dumps(doc).encode(), None)
    y = np.array([[1.5, 2.0]], np.float32)
    z = np.array([b"ab", b""], dtype=object)
    body, length = encode_infer(request, _response(_out("y", y, "FP32"), _out("z", z, "BYTES")))
    assert length is not None
    head = json.loads(body[:length])
    assert head == {
        "model_name": "m",
        "model_version": "3",
        "id": "r1",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {
                "name": "z",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": 10},
            },
        ],
    }
    assert body[length:] == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)


def test_all_json_has_no_header_length() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    request = parse_infer("m", "", json.dumps(doc).encode(), None)
    body, length = encode_infer(request, _response(_out("y", np.array([True]), "BOOL")))
    assert length is None
    assert json.loads(body)["outputs"][0]["data"] == [True]


def test_a_bytes_output_json_cannot_carry_names_the_output() -> None:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}
    request = parse_infer("m", "", json.dumps(doc).encode(), None)
    out = _out("t", np.array([b"\xff"], dtype=object), "BYTES")
    with pytest.raises(InvalidArgument, match=r'output "t": .*binary_data'):
        encode_infer(request, _response(out))
