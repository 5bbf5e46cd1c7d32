"""The v2 gRPC messages (``proto/inference/grpc_service_pb2``, Triton's
definition) <-> the protocol-neutral types of ``inference``.

A request's tensors come either all as typed ``contents`` or all as
``raw_input_contents`` (one entry per input, in the order of ``inputs``);
a request that mixes them is an InvalidArgument, as in Triton. Typed contents
must sit in the field of their datatype (``CONTENTS_FIELDS``); FP16 and BF16
have none and travel only raw. Responses always carry ``raw_output_contents``:
``tritonclient.grpc``'s ``as_numpy`` reads only those, and KServe's client
reads them too. Decoding and its bounds are ``codecs.v2_tensors``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from google.protobuf.message import Message

from functions.serving.api.v2.inference import (
    IndexEntry,
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    RequestedOutput,
    ServerMetadata,
)
from functions.serving.api.v2.proto.inference import grpc_service_pb2 as pb
from functions.serving.codecs import v2_tensors
from loader.errors import InvalidArgument, NotFound

# Each v2 datatype's field of InferTensorContents (FP16 and BF16 have none).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Tensor parameters of Triton's that ask for what rollway does not do; a
# request naming one is refused rather than answered as if it were not there.
UNSUPPORTED_TENSOR_PARAMETERS = ("shared_memory_region", "classification")
_INT64_MAX = 2**63 - 1


def parameters(values: Mapping[str, Message]) -> dict[str, Any]:
    """An ``InferParameter`` or ``ModelRepositoryParameter`` map as Python
    values (bool, int, float, str, bytes); a parameter with no value is None."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = None if choice is None else getattr(value, choice)
    return out


def fill_parameters(
    target: MutableMapping[str, pb.InferParameter], values: Mapping[str, Any]
) -> None:
    """The inverse of :func:`parameters` for a response; any other type as its str()."""
    for key, value in values.items():
        parameter = target[key]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                parameter.uint64_param = value
            else:
                parameter.int64_param = value
        elif isinstance(value, float):
            parameter.double_param = value
        else:
            parameter.string_param = str(value)


def infer_request(request: pb.ModelInferRequest) -> InferRequest:
    """Decodes a ModelInferRequest; InvalidArgument names what is wrong."""
    raw = request.raw_input_contents
    if raw:
        if any(tensor.HasField("contents") for tensor in request.inputs):
            raise InvalidArgument(
                "the request mixes raw_input_contents and typed contents; send every input one way"
            )
        if len(raw) != len(request.inputs):
            raise InvalidArgument(
                f"the request has {len(raw)} raw_input_contents for {len(request.inputs)} "
                "inputs; send one per input, in the order of inputs"
            )
        inputs = [_input(tensor, data) for tensor, data in zip(request.inputs, raw, strict=True)]
    else:
        inputs = [_input(tensor, None) for tensor in request.inputs]
    outputs = []
    for output in request.outputs:
        _refuse_tensor_parameters("output", output.name, output.parameters)
        outputs.append(RequestedOutput(output.name))
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        id=request.id,
        parameters=parameters(request.parameters),
        inputs=inputs,
        outputs=outputs,
    )


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> InputTensor:
    name, datatype, shape = tensor.name, tensor.datatype, tuple(tensor.shape)
    _refuse_tensor_parameters("input", name, tensor.parameters)
    if raw is not None:
        array = v2_tensors.from_raw(name, datatype, shape, raw)
        return InputTensor(name, datatype, shape, array)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        if datatype in v2_tensors.DATATYPES:
            raise InvalidArgument(
                f'input "{name}": {datatype} has no typed contents; send it in raw_input_contents'
            )
        raise InvalidArgument(
            f'input "{name}": unknown datatype {datatype[:40]!r}; expected one of '
            f"{', '.join(v2_tensors.DATATYPES)}"
        )
    others = [f.name for f, _ in tensor.contents.ListFields() if f.name != field]
    if others:
        raise InvalidArgument(
            f'input "{name}": {datatype} data goes in contents.{field}, but the request '
            f"sets {', '.join(others)}"
        )
    array = v2_tensors.from_values(name, datatype, shape, getattr(tensor.contents, field))
    return InputTensor(name, datatype, shape, array)


def _refuse_tensor_parameters(kind: str, name: str, values: Mapping[str, Any]) -> None:
    for key in UNSUPPORTED_TENSOR_PARAMETERS:
        if key in values:
            raise InvalidArgument(f'{kind} "{name}": parameter "{key}" is not supported')


def infer_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    fill_parameters(message.parameters, response.parameters)
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        message.raw_output_contents.append(v2_tensors.to_raw(output.array))
    return message


def server_metadata(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=metadata.extensions
    )


def model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    message = pb.ModelMetadataResponse(
        name=metadata.name, versions=metadata.versions, platform=metadata.platform
    )
    for tensors, into in ((metadata.inputs, message.inputs), (metadata.outputs, message.outputs)):
        for tensor in tensors:
            into.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
    return message


def repository_index(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    message = pb.RepositoryIndexResponse()
    for entry in entries:
        message.models.add(
            name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
        )
    return message


def check_repository(repository_name: str) -> None:
    """rollway has one model repository, which has no name: "" (every
    repository, as Triton reads it) names it, any other name none."""
    if repository_name:
        raise NotFound(f"no model repository named {repository_name[:64]!r}; rollway has one, ''")
