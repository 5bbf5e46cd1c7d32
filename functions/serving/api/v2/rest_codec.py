"""The v2 REST infer body, with the binary tensor data extension, to and from
:class:`InferRequest` / :class:`InferResponse`.

A body is JSON, or (``Inference-Header-Content-Length: N``) N bytes of JSON
followed by the binary data of every input whose ``parameters`` carry
``binary_data_size``, in input order, with nothing left over. Binary inputs
are views of the body (``v2_tensors.from_raw``), JSON ``data`` is decoded by
``v2_tensors.from_values``; both match the declared shape exactly, so what a
request decodes to is bounded by its size (at most about 20 times it: an
empty JSON string or a BYTES element's 4-byte prefix decoded as a Python
bytes object in an object array), well inside ``tensors.Budget``'s 64.

An output goes as binary data when its own ``parameters.binary_data`` says
so, else when the request's ``parameters.binary_data_output`` does; binary
outputs follow the JSON in output order, each with its ``binary_data_size``,
and the response's ``Inference-Header-Content-Length`` is the JSON's length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from functions.serving.api.v2.inference import (
    InferRequest,
    InferResponse,
    InputTensor,
    RequestedOutput,
)
from functions.serving.codecs import json_text, v2_tensors
from loader.errors import InvalidArgument

HEADER_LENGTH = b"inference-header-content-length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"


def parse_infer(model: str, version: str, body: bytes, header_length: bytes | None) -> InferRequest:
    """The request of ``POST /v2/models/{model}[/versions/{version}]/infer``."""
    text, binary = _split(body, header_length)
    doc = json_text.parse_json(text)
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument('"id" must be a string')
    parameters = _object(doc.get("parameters", {}), '"parameters"')
    if not isinstance(parameters.get(BINARY_DATA_OUTPUT, False), bool):
        raise InvalidArgument(f'parameter "{BINARY_DATA_OUTPUT}" must be a boolean')
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidArgument('"inputs" must be a non-empty list of tensors')
    inputs, offset = [], 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _input(index, raw, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data follow the inputs' "
            f"{BINARY_DATA_SIZE} ({offset} bytes in all)"
        )
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise InvalidArgument('"outputs" must be a list')
    outputs = [_output(index, raw) for index, raw in enumerate(raw_outputs)]
    return InferRequest(model, version, request_id, parameters, inputs, outputs)


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.decode("latin-1").strip()
    if not text.isascii() or not text.isdigit():
        raise InvalidArgument(
            f"Inference-Header-Content-Length {json_text.clip(text)!r} is not a number"
        )
    length = int(text)
    if length > len(body):
        raise InvalidArgument(
            f"Inference-Header-Content-Length is {length}, more than the {len(body)}-byte body"
        )
    return body[:length], memoryview(body)[length:]


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return value


def _input(index: int, raw: Any, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    raw = _object(raw, f"inputs[{index}]")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f'inputs[{index}] needs a "name" string')
    if not isinstance(datatype, str):
        raise InvalidArgument(f'input "{name}" needs a "datatype" string')
    if not isinstance(shape, list):
        raise InvalidArgument(f'input "{name}" needs a "shape" list')
    parameters = _object(raw.get("parameters", {}), f'input "{name}" "parameters"')
    size = parameters.get(BINARY_DATA_SIZE)
    if size is None:
        if "data" not in raw:
            raise InvalidArgument(f'input "{name}" has neither "data" nor {BINARY_DATA_SIZE}')
        array = v2_tensors.from_values(name, datatype, shape, raw["data"])
    else:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgument(f'input "{name}": {BINARY_DATA_SIZE} must be a count of bytes')
        if "data" in raw:
            raise InvalidArgument(f'input "{name}" has both "data" and {BINARY_DATA_SIZE}')
        if size > len(binary) - offset:
            raise InvalidArgument(
                f'input "{name}": {BINARY_DATA_SIZE} {size} runs past the binary data '
                f"({len(binary) - offset} bytes left)"
            )
        array = v2_tensors.from_raw(name, datatype, shape, binary[offset : offset + size])
        offset += size
    return InputTensor(name, datatype, tuple(shape), array), offset


def _output(index: int, raw: Any) -> RequestedOutput:
    raw = _object(raw, f"outputs[{index}]")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f'outputs[{index}] needs a "name" string')
    parameters = _object(raw.get("parameters", {}), f'output "{name}" "parameters"')
    if parameters.get("classification"):
        raise InvalidArgument(f'output "{name}": the classification extension is not supported')
    binary = parameters.get(BINARY_DATA)
    if binary is not None and not isinstance(binary, bool):
        raise InvalidArgument(f'output "{name}": {BINARY_DATA} must be a boolean')
    return RequestedOutput(name, binary)


def encode_infer(request: InferRequest, response: InferResponse) -> tuple[bytes, int | None]:
    """The response body, and the JSON's length when binary outputs follow it."""
    default = bool(request.parameters.get(BINARY_DATA_OUTPUT, False))
    asked: Mapping[str, bool | None] = {o.name: o.binary for o in request.outputs}
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in response.outputs:
        entry: dict[str, Any] = {
            "name": out.name,
            "datatype": out.datatype,
            "shape": list(out.shape),
        }
        binary = asked.get(out.name)
        if binary if binary is not None else default:
            raw = v2_tensors.to_raw(out.array)
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            chunks.append(raw)
        else:
            try:
                entry["data"] = v2_tensors.to_values(out.array)
            except InvalidArgument as err:
                raise InvalidArgument(f'output "{out.name}": {err.message}') from err
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = dict(response.parameters)
    doc["outputs"] = outputs
    text = json.dumps(doc, separators=(",", ":")).encode()
    if not chunks:
        return text, None
    return b"".join([text, *chunks]), len(text)
