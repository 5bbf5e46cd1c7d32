"""The v2 gRPC messages <-> inference's types (api/v2/grpc_codec.py), the
service table (api/v2/grpc_api.py), and the generated messages themselves:
their own descriptor pool, and the same wire format as tritonclient's."""

from __future__ import annotations

import inspect
import struct
from typing import Any, cast

import numpy as np
import pytest
from google.protobuf import descriptor_pool

from functions.serving.api.v2 import grpc_codec
from functions.serving.api.v2.grpc_api import SERVICE, InferenceService, method_handlers
from functions.serving.api.v2.inference import (
    IndexEntry,
    InferResponse,
    ModelMetadata,
    OutputTensor,
    ServerMetadata,
    TensorMetadata,
    V2Api,
)
from functions.serving.api.v2.proto.inference import grpc_service_pb2 as pb
from functions.serving.metrics import ServingMetrics
from loader.errors import InvalidArgument, NotFound


def request_with(datatype: str, shape: list[int], field: str, values: list[Any]) -> Any:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="t", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(
    ("datatype", "field", "values", "dtype"),
    [
        ("BOOL", "bool_contents", [True, False], np.bool_),
        ("INT8", "int_contents", [-128, 127], np.int8),
        ("INT16", "int_contents", [-3, 4], np.int16),
        ("INT32", "int_contents", [-(2**31), 2**31 - 1], np.int32),
        ("INT64", "int64_contents", [-(2**63), 2**63 - 1], np.int64),
        ("UINT8", "uint_contents", [0, 255], np.uint8),
        ("UINT16", "uint_contents", [0, 65535], np.uint16),
        ("UINT32", "uint_contents", [0, 2**32 - 1], np.uint32),
        ("UINT64", "uint64_contents", [0, 2**64 - 1], np.uint64),
        ("FP32", "fp32_contents", [1.5, -2.0], np.float32),
        ("FP64", "fp64_contents", [1e300, -2.0], np.float64),
        ("BYTES", "bytes_contents", [b"a\x00", b""], np.object_),
    ],
)
def test_typed_contents_of_every_datatype(
    datatype: str, field: str, values: list[Any], dtype: Any
) -> None:
    decoded = grpc_codec.infer_request(request_with(datatype, [2], field, values))
    (tensor,) = decoded.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("t", datatype, (2,))
    assert tensor.array.dtype == np.dtype(dtype)
    assert tensor.array.tolist() == values


def test_int8_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="does not fit INT8"):
        grpc_codec.infer_request(request_with("INT8", [1], "int_contents", [128]))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("FP32", [1], "int_contents", [1]), "fp32_contents, but the request sets int_contents"),
        (("FP16", [1], "fp32_contents", [1.0]), "FP16 has no typed contents"),
        (("BF16", [1], "fp32_contents", [1.0]), "BF16 has no typed contents"),
        (("COMPLEX", [1], "fp32_contents", [1.0]), "unknown datatype 'COMPLEX'"),
        (("FP32", [2, 2], "fp32_contents", [1.0]), "1 values, but shape [2, 2] needs 4"),
        (("FP32", [-1], "fp32_contents", [1.0]), "negative dimension"),
        (("FP32", [2**62, 4], "fp32_contents", [1.0]), "needs 18446744073709551616"),
    ],
)  # fmt: skip
def test_bad_typed_contents(args: tuple[Any, ...], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        grpc_codec.infer_request(request_with(*args))
    assert words in info.value.message
    assert 'input "t"' in info.value.message


def raw_request(*inputs: tuple[str, str, list[int]], raw: list[bytes]) -> Any:
    request = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    return request


def test_raw_contents_one_per_input_in_order() -> None:
    text = struct.pack("<I", 2) + b"hi"
    request = raw_request(
        ("a", "FP16", [2]), ("b", "BYTES", [1]),
        raw=[np.array([1.5, 2.0], "<f2").tobytes(), text],
    )  # fmt: skip
    a, b = grpc_codec.infer_request(request).inputs
    assert a.array.dtype == np.float16 and a.array.tolist() == [1.5, 2.0]
    assert b.array.tolist() == [b"hi"]


@pytest.mark.parametrize("count", [1, 3])
def test_raw_contents_count_must_match_the_inputs(count: int) -> None:
    request = raw_request(("a", "FP32", [1]), ("b", "FP32", [1]), raw=[b"\0" * 4] * count)
    with pytest.raises(InvalidArgument, match=f"{count} raw_input_contents for 2 inputs"):
        grpc_codec.infer_request(request)


def test_raw_and_typed_contents_do_not_mix() -> None:
    request = raw_request(("a", "FP32", [1]), ("b", "FP32", [1]), raw=[b"\0" * 4, b"\0" * 4])
    request.inputs[1].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidArgument, match="mixes"):
        grpc_codec.infer_request(request)


def test_bytes_prefix_past_the_buffer() -> None:
    request = raw_request(("b", "BYTES", [1]), raw=[struct.pack("<I", 9) + b"abc"])
    with pytest.raises(InvalidArgument, match="declares 9 bytes, but only 3 remain"):
        grpc_codec.infer_request(request)


def test_request_fields_and_parameters() -> None:
    request = pb.ModelInferRequest(model_name="m", model_version="canary", id="r7")
    request.parameters["signature_name"].string_param = "scale"
    request.parameters["flag"].bool_param = True
    request.parameters["n"].int64_param = -3
    request.parameters["big"].uint64_param = 2**64 - 1
    request.parameters["ratio"].double_param = 0.25
    request.parameters["unset"].SetInParent()
    request.outputs.add(name="y").parameters["binary_data"].bool_param = True
    decoded = grpc_codec.infer_request(request)
    assert (decoded.model, decoded.version, decoded.id) == ("m", "canary", "r7")
    assert decoded.parameters == {
        "signature_name": "scale", "flag": True, "n": -3, "big": 2**64 - 1, "ratio": 0.25,
        "unset": None,
    }  # fmt: skip
    assert [(o.name, o.binary) for o in decoded.outputs] == [("y", None)]


@pytest.mark.parametrize("kind", ["input", "output"])
@pytest.mark.parametrize("parameter", grpc_codec.UNSUPPORTED_TENSOR_PARAMETERS)
def test_unsupported_tensor_parameters_are_refused(kind: str, parameter: str) -> None:
    request = raw_request(("a", "FP32", [1]), raw=[b"\0" * 4])
    tensor = request.inputs[0] if kind == "input" else request.outputs.add(name="y")
    tensor.parameters[parameter].string_param = "x"
    with pytest.raises(InvalidArgument, match=f'{kind} ".": parameter "{parameter}"'):
        grpc_codec.infer_request(request)


def test_response_is_always_raw() -> None:
    response = InferResponse(
        "m", "3", "r1",
        [
            OutputTensor("y", "FP32", (2, 1), np.array([[1.0], [2.0]], np.float32)),
            OutputTensor("s", "BYTES", (2,), np.array([b"ab", b""], dtype=object)),
            OutputTensor("h", "FP16", (1,), np.array([0.5], np.float16)),
        ],
        {"flag": True, "n": 2, "big": 2**64 - 1, "ratio": 0.5, "text": "t"},
    )  # fmt: skip
    message = grpc_codec.infer_response(response)
    assert (message.model_name, message.model_version, message.id) == ("m", "3", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("y", "FP32", [2, 1]), ("s", "BYTES", [2]), ("h", "FP16", [1]),
    ]  # fmt: skip
    assert not any(o.HasField("contents") for o in message.outputs)
    assert list(message.raw_output_contents) == [
        np.array([1.0, 2.0], "<f4").tobytes(),
        struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0),
        np.array([0.5], "<f2").tobytes(),
    ]
    assert grpc_codec.parameters(message.parameters) == response.parameters
    assert message.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"


def test_metadata_and_index() -> None:
    server = grpc_codec.server_metadata(ServerMetadata("rollway", "1.2", ("a", "b")))
    assert (server.name, server.version, list(server.extensions)) == ("rollway", "1.2", ["a", "b"])
    model = grpc_codec.model_metadata(
        ModelMetadata(
            "m", ["1", "2"], "tensorflow_savedmodel",
            [TensorMetadata("x", "FP32", (-1, 2))], [TensorMetadata("y", "BYTES", (-1,))],
        )
    )  # fmt: skip
    assert (model.name, list(model.versions), model.platform) == (
        "m", ["1", "2"], "tensorflow_savedmodel",
    )  # fmt: skip
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("x", "FP32", [-1, 2])]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [("y", "BYTES", [-1])]
    index = grpc_codec.repository_index(
        [IndexEntry("m", "1", "READY", ""), IndexEntry("n", "", "UNAVAILABLE", "why")]
    )
    assert [(e.name, e.version, e.state, e.reason) for e in index.models] == [
        ("m", "1", "READY", ""), ("n", "", "UNAVAILABLE", "why"),
    ]  # fmt: skip


def test_only_the_unnamed_repository() -> None:
    grpc_codec.check_repository("")
    with pytest.raises(NotFound, match="no model repository named 'models'"):
        grpc_codec.check_repository("models")


def test_every_rpc_of_the_proto_has_a_handler() -> None:
    service = InferenceService(cast(V2Api, object()), ServingMetrics(), cast(Any, None))
    handlers = method_handlers(service)
    assert set(handlers) == {m.name for m in SERVICE.methods}
    assert SERVICE.full_name == "inference.GRPCInferenceService"
    # The repository's load and unload block until models load: synchronous
    # handlers, which grpc.aio runs on the server's executor, not its loop.
    blocking = {n for n, h in handlers.items() if not inspect.iscoroutinefunction(h.unary_unary)}
    assert blocking == {"RepositoryModelLoad", "RepositoryModelUnload"}


def test_messages_live_in_a_pool_of_their_own() -> None:
    """tritonclient, KServe and MLServer register the same inference.* names in
    protobuf's default pool; ours must not clash with them in one process."""
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest.x")


def _fields(message: Any, prefix: str = "") -> dict[str, Any]:
    path = prefix + message.name
    out: dict[str, Any] = {
        f"{path}.{f.name}": (f.number, f.type, f.message_type and f.message_type.full_name)
        for f in message.fields
    }
    out.update({f"{path}|{o.name}": sorted(f.name for f in o.fields) for o in message.oneofs})
    for nested in message.nested_types:
        out.update(_fields(nested, path + "."))
    return out


def test_same_wire_format_as_tritonclient() -> None:
    """Every message and RPC of ours is Triton's: same names, numbers and types."""
    from tritonclient.grpc import service_pb2

    for name, message in pb.DESCRIPTOR.message_types_by_name.items():
        theirs = _fields(service_pb2.DESCRIPTOR.message_types_by_name[name])
        ours = _fields(message)
        assert {k: theirs.get(k) for k in ours} == ours, name
    triton_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in SERVICE.methods:
        twin = triton_service.methods_by_name[method.name]
        assert (twin.input_type.full_name, twin.output_type.full_name) == (
            method.input_type.full_name, method.output_type.full_name,
        )  # fmt: skip
