"""The Open Inference Protocol's gRPC service of a real `rollway serve`, driven
by ``tritonclient.grpc`` (and, for requests no client library builds, by the
stub and messages tritonclient ships, Triton's own grpc_service.proto).

One module-scoped server serves, from a ModelServerConfig file: TF Serving's
half_plus_two, its two-version copy (versions 123 and 124, labels stable and
canary), and a SavedModel with several signatures (FP32, FP64, INT64 and
BYTES tensors). Its answers are checked against TF Serving's Predict on the
same server, and every malformed request against its status code.
"""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from functions.serving.process import ServerProcess, free_port
from tests.conftest import HALF_PLUS_TWO, TESTDATA, TWO_VERSIONS, ServerFactory
from tests.integration import kserve_client
from tests.integration.helpers import model_config, predict_request, server_config, write_config
from tests.models import export_multi

pytestmark = pytest.mark.integration

RPC_TIMEOUT = 30.0
X = np.array([[1.0], [2.0], [5.0]], np.float32)
Y = np.array([[2.5], [3.0], [4.5]], np.float32)
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    base = tmp_path_factory.mktemp("models")
    export_multi(base / "multi", 1)
    config = write_config(
        tmp_path_factory.mktemp("config") / "models.config",
        server_config(
            model_config("half_plus_two", HALF_PLUS_TWO),
            model_config("two_versions", TWO_VERSIONS, "all {}", {"stable": 123, "canary": 124}),
            model_config("multi", base / "multi"),
        ),
    )
    return serve_module(
        [f"--model_config_file={config}", f"--rest_api_port={free_port()}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Any]:
    opened = triton.InferenceServerClient(server.address)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[Any]:
    """Triton's stub, for requests tritonclient's InferInput will not build."""
    with grpc.insecure_channel(server.address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def x_input(values: np.ndarray = X, name: str = "x", datatype: str = "FP32") -> Any:
    tensor = triton.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


def tf_serving_predict(
    server: ServerProcess, model: str, version: int | None = None, x: np.ndarray = X
) -> Any:
    """y of TF Serving's Predict for ``x`` on the same server."""
    request = predict_request(model, version)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=RPC_TIMEOUT)
    return tf.make_ndarray(response.outputs["y"])


def status_of(call: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    """(status, message) of a tritonclient call that must fail."""
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return str(info.value.status()), str(info.value.message())


def rpc_error(stub: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=RPC_TIMEOUT)
    return info.value


def raw_request(
    model: str, inputs: list[tuple[str, str, list[int]]], raw: list[bytes]
) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw)
    return request


def prefixed(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# ---------------------------------------------------------------- health and metadata


def test_health(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("half_plus_two")
    assert client.is_model_ready("two_versions", "123")
    assert client.is_model_ready("two_versions", "canary")
    assert not client.is_model_ready("two_versions", "7")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata(client: Any) -> None:
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "rollway"
    assert "model_repository" in metadata["extensions"]


def test_model_metadata(client: Any) -> None:
    metadata = client.get_model_metadata("half_plus_two")
    assert metadata.name == "half_plus_two"
    assert list(metadata.versions) == ["123"]
    assert metadata.platform == "tensorflow_savedmodel"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("y", "FP32", [-1, 1])
    ]
    assert list(client.get_model_metadata("two_versions").versions) == ["123", "124"]
    multi = client.get_model_metadata("multi")
    assert [(t.name, t.datatype) for t in multi.inputs] == [("a", "FP32"), ("b", "FP32")]


def test_metadata_of_unknown_model_or_version_is_not_found(client: Any) -> None:
    assert status_of(client.get_model_metadata, "no_such_model")[0] == str(NOT_FOUND)
    assert status_of(client.get_model_metadata, "two_versions", "7")[0] == str(NOT_FOUND)
    assert status_of(client.get_model_metadata, "two_versions", "nolabel")[0] == str(NOT_FOUND)


# ---------------------------------------------------------------- infer


def test_infer_fp32_matches_tf_serving_predict(server: ServerProcess, client: Any) -> None:
    result = client.infer(
        "half_plus_two", [x_input()], request_id="req-1",
        outputs=[triton.InferRequestedOutput("y")],
    )  # fmt: skip
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == (
        "half_plus_two", "123", "req-1"
    )  # fmt: skip
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("y", "FP32", [3, 1])
    ]
    assert len(response.raw_output_contents) == 1
    y = result.as_numpy("y")
    np.testing.assert_array_equal(y, Y)
    np.testing.assert_array_equal(y, tf_serving_predict(server, "half_plus_two"))


@pytest.mark.parametrize(
    ("version", "served"),
    [("", "124"), ("123", "123"), ("124", "124"), ("stable", "123"), ("canary", "124")],
)
def test_version_addressing(server: ServerProcess, client: Any, version: str, served: str) -> None:
    result = client.infer("two_versions", [x_input()], model_version=version)
    assert result.get_response().model_version == served
    expected = tf_serving_predict(server, "two_versions", int(served))
    np.testing.assert_array_equal(result.as_numpy("y"), expected)


def test_infer_with_typed_contents(stub: Any) -> None:
    """Typed contents in, raw contents out, whatever the request used."""
    request = service_pb2.ModelInferRequest(model_name="half_plus_two", id="typed")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[3, 1])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 5.0])
    response = stub.ModelInfer(request, timeout=RPC_TIMEOUT)
    assert response.id == "typed"
    assert not response.outputs[0].HasField("contents")
    y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 1)
    np.testing.assert_array_equal(y, Y)


def test_infer_bytes_with_signature_parameter(client: Any) -> None:
    text = np.array([b"ab", b"xyz", b""], dtype=np.object_)
    result = client.infer(
        "multi", [x_input(text, "text", "BYTES")], parameters={"signature_name": "strings"}
    )
    outputs = {o.name: o.datatype for o in result.get_response().outputs}
    assert outputs == {"upper": "BYTES", "length": "INT32", "text_bytes": "BYTES"}
    assert list(result.as_numpy("upper")) == [b"AB", b"XYZ", b""]
    assert list(result.as_numpy("text_bytes")) == list(text)
    np.testing.assert_array_equal(result.as_numpy("length"), np.array([2, 3, 0], np.int32))


def test_infer_bytes_as_typed_contents(stub: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="multi")
    request.parameters["signature_name"].string_param = "strings"
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.extend([b"a\x00b", b"\xff"])
    request.outputs.add(name="text_bytes")
    response = stub.ModelInfer(request, timeout=RPC_TIMEOUT)
    assert [o.name for o in response.outputs] == ["text_bytes"]
    assert response.raw_output_contents[0] == prefixed(b"a\x00b", b"\xff")


def test_infer_fp64_and_int64_outputs(client: Any) -> None:
    x = np.array([1.5, -2.0], np.float64)
    result = client.infer(
        "multi", [x_input(x, "x", "FP64")], parameters={"signature_name": "scale"}
    )
    np.testing.assert_array_equal(result.as_numpy("doubled"), x * 2)
    np.testing.assert_array_equal(result.as_numpy("as_int"), np.array([1, -2], np.int64))


def test_output_selection(client: Any) -> None:
    a = x_input(np.array([[1.0, 2.0]], np.float32), "a")
    b = x_input(np.array([[3.0, 4.0]], np.float32), "b")
    result = client.infer("multi", [a, b], outputs=[triton.InferRequestedOutput("product")])
    assert [o.name for o in result.get_response().outputs] == ["product"]
    np.testing.assert_array_equal(result.as_numpy("product"), [[3.0, 8.0]])
    assert result.as_numpy("sum") is None


def test_requests_are_counted_with_the_v2_entrypoint(server: ServerProcess, client: Any) -> None:
    client.infer("half_plus_two", [x_input()])
    port = next(a.split("=", 1)[1] for a in server.args if a.startswith("--rest_api_port="))
    url = f"http://127.0.0.1:{port}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    labels = ('API="infer"', 'entrypoint="V2_GRPC"', 'model_name="half_plus_two"')
    counts = [
        line for line in text.splitlines()
        if line.startswith(":tensorflow:serving:request_latency_count{")
        and all(label in line for label in labels)
    ]  # fmt: skip
    assert counts, text[-2000:]


KSERVE_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(address):
    client = InferenceGRPCClient(address, timeout=30)
    out = {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
           "model_ready": await client.is_model_ready("half_plus_two"),
           "missing_ready": await client.is_model_ready("nope")}
    x = np.array([[0.1], [-7.25], [12345.678]], np.float32)
    for version in ("", "123", "canary"):
        tensor = InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        request = InferRequest("two_versions", [tensor], request_id="k1", model_version=version)
        response = await client.infer(request)
        y = response.outputs[0].as_numpy()
        out[version] = {"id": response.id, "version": response.model_version,
                        "y": y.tolist(), "dtype": str(y.dtype)}
    text = InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"ab", b"xyz"], dtype=object))
    response = await client.infer(
        InferRequest("multi", [text], parameters={"signature_name": "strings"})
    )
    out["strings"] = {o.name: o.as_numpy().tolist() for o in response.outputs}
    try:
        await client.infer(InferRequest("nope", [tensor]))
        out["missing"] = "answered"
    except Exception as err:
        out["missing"] = str(getattr(err, "code", lambda: err)())
    await client.close()
    print(json.dumps(out, default=lambda v: v.decode()))

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def kserve() -> kserve_client.RunScript:
    return kserve_client.runner()


def test_kserve_grpc_client(server: ServerProcess, kserve: kserve_client.RunScript) -> None:
    out = kserve(KSERVE_SCRIPT, server.address)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["missing_ready"] is False
    x = np.array([[0.1], [-7.25], [12345.678]], np.float32)
    for version, served in (("", "124"), ("123", "123"), ("canary", "124")):
        expected = tf_serving_predict(server, "two_versions", int(served), x).tolist()
        assert out[version] == {"id": "k1", "version": served, "y": expected, "dtype": "float32"}
    assert out["strings"] == {
        "upper": ["AB", "XYZ"], "length": [2, 3], "text_bytes": ["ab", "xyz"]
    }  # fmt: skip
    assert out["missing"] == str(NOT_FOUND)


def test_concurrent_infer_on_the_executor(serve: ServerFactory) -> None:
    """--inline_inference=false: ModelInfer runs on the server's executor;
    concurrent requests each get their own answer."""
    server = serve(
        [f"--model_base_path={TWO_VERSIONS}", "--model_name=hp", "--inline_inference=false"]
    )
    client = triton.InferenceServerClient(server.address)

    def infer(i: int) -> tuple[str, Any]:
        x = np.full((2, 1), float(i), np.float32)
        result = client.infer("hp", [x_input(x)], request_id=str(i))
        return result.get_response().id, result.as_numpy("y")

    try:
        with futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(infer, range(32)))
    finally:
        client.close()
    expected = tf_serving_predict(server, "hp", x=np.arange(32, dtype=np.float32).reshape(32, 1))
    for i, (request_id, y) in enumerate(answers):
        assert request_id == str(i)
        np.testing.assert_array_equal(y, np.repeat(expected[i : i + 1], 2, axis=0))


# ---------------------------------------------------------------- bad input


def test_unknown_model_or_version_is_not_found(client: Any) -> None:
    for model, version in (("no_such_model", ""), ("two_versions", "7"), ("two_versions", "nope")):
        status, message = status_of(client.infer, model, [x_input()], model_version=version)
        assert status == str(NOT_FOUND), message


BAD_REQUESTS = {
    # datatype
    "wrong datatype for the model": (
        [("x", "INT32", [3, 1])], [np.array([1, 2, 5], "<i4").tobytes()], "does not match",
    ),
    "unknown datatype": ([("x", "FP128", [1, 1])], [b"\0" * 16], "unknown datatype"),
    # shape
    "data shorter than the shape": ([("x", "FP32", [3, 1])], [b"\0" * 8], "needs 12"),
    "data longer than the shape": ([("x", "FP32", [1, 1])], [b"\0" * 8], "needs 4"),
    "shape the signature refuses": ([("x", "FP32", [3])], [b"\0" * 12], "does not match"),
    "negative dimension": ([("x", "FP32", [-1, 1])], [b"\0" * 4], "negative"),
    "huge shape, tiny data": ([("x", "FP32", [2**40, 1])], [b"\0" * 4], "needs"),
    "huge BYTES shape, tiny data": ([("text", "BYTES", [2**40])], [b"\0" * 4], "at least"),
    # raw contents
    "more raw contents than inputs": ([("x", "FP32", [1, 1])], [b"\0" * 4] * 2, "one per input"),
    "fewer raw contents than inputs": (
        [("a", "FP32", [1, 2]), ("b", "FP32", [1, 2])], [b"\0" * 8], "one per input",
    ),
    "BYTES length prefix past the buffer": (
        [("text", "BYTES", [1])], [struct.pack("<I", 100) + b"ab"], "declares 100 bytes",
    ),
    "BYTES data cut inside a prefix": (
        [("text", "BYTES", [2])], [prefixed(b"a") + b"\1\0\0"], "ends before element 1",
    ),
    # names
    "unknown input": ([("nope", "FP32", [1, 1])], [b"\0" * 4], "nope"),
}  # fmt: skip
MODEL_OF = {"x": "half_plus_two", "a": "multi", "text": "multi", "nope": "half_plus_two"}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_raw_input_is_invalid_argument(stub: Any, case: str) -> None:
    inputs, raw, words = BAD_REQUESTS[case]
    request = raw_request(MODEL_OF[inputs[0][0]], inputs, raw)
    if inputs[0][0] == "text":
        request.parameters["signature_name"].string_param = "strings"
    err = rpc_error(stub, request)
    assert err.code() == INVALID, err.details()
    assert words in err.details()


def typed_request(datatype: str, shape: list[int], field: str, values: list[Any]) -> Any:
    request = service_pb2.ModelInferRequest(model_name="half_plus_two")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(
    ("request_args", "words"),
    [
        (("FP32", [3, 1], "fp32_contents", [1.0, 2.0]), "2 values, but shape [3, 1] needs 3"),
        (("FP32", [1, 1], "int_contents", [1]), "goes in contents.fp32_contents"),
        (("FP16", [1, 1], "fp32_contents", [1.0]), "send it in raw_input_contents"),
        (("FP32", [-2, 1], "fp32_contents", [1.0]), "negative"),
        (("FP32", [2**40, 1], "fp32_contents", [1.0]), "needs"),
    ],
    ids=["count", "wrong-field", "fp16", "negative", "huge"],
)
def test_bad_typed_contents_are_invalid_argument(
    stub: Any, request_args: tuple[Any, ...], words: str
) -> None:
    err = rpc_error(stub, typed_request(*request_args))
    assert err.code() == INVALID, err.details()
    assert words in err.details()


def test_mixing_raw_and_typed_contents_is_invalid_argument(stub: Any) -> None:
    request = raw_request("multi", [("a", "FP32", [1, 2])], [b"\0" * 8])
    request.inputs.add(name="b", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(
        [1.0, 2.0]
    )
    err = rpc_error(stub, request)
    assert err.code() == INVALID
    assert "mixes" in err.details()


def test_unknown_output_and_unsupported_parameters(stub: Any) -> None:
    request = raw_request("half_plus_two", [("x", "FP32", [1, 1])], [b"\0" * 4])
    request.outputs.add(name="nope")
    assert rpc_error(stub, request).code() == INVALID
    request = raw_request("half_plus_two", [("x", "FP32", [1, 1])], [b"\0" * 4])
    request.inputs[0].parameters["shared_memory_region"].string_param = "region"
    err = rpc_error(stub, request)
    assert err.code() == INVALID
    assert "shared_memory_region" in err.details()
    request = raw_request("half_plus_two", [("x", "FP32", [1, 1])], [b"\0" * 4])
    request.parameters["signature_name"].int64_param = 3
    assert rpc_error(stub, request).code() == INVALID


def test_server_is_healthy_after_bad_requests(server: ServerProcess, client: Any) -> None:
    assert server.proc is not None and server.proc.poll() is None
    assert client.is_server_live() and client.is_server_ready()
    np.testing.assert_array_equal(client.infer("half_plus_two", [x_input()]).as_numpy("y"), Y)
    assert "Traceback" not in server.log()


# ---------------------------------------------------------------- the repository extension


def test_repository_index(client: Any) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    entries = {(m["name"], m.get("version", "")): m["state"] for m in index}
    assert entries[("half_plus_two", "123")] == "READY"
    assert entries[("two_versions", "123")] == "READY"
    assert entries[("two_versions", "124")] == "READY"
    assert entries[("multi", "1")] == "READY"


def test_repository_refuses_configs_files_and_unknown_repositories(client: Any, stub: Any) -> None:
    status, message = status_of(client.load_model, "half_plus_two", config='{"backend": "x"}')
    assert status == str(INVALID), message
    status, message = status_of(
        client.load_model, "half_plus_two", files={"file:1/saved_model.pb": b"x"}
    )
    assert status == str(INVALID), message
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryIndex(
            service_pb2.RepositoryIndexRequest(repository_name="elsewhere"), timeout=RPC_TIMEOUT
        )
    assert info.value.code() == NOT_FOUND


def test_rpcs_left_out_are_unimplemented(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelConfig(service_pb2.ModelConfigRequest(name="half_plus_two"), timeout=RPC_TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unload_then_load(client: Any, stub: Any) -> None:
    """Changes the served models (with --model_config_file, as
    HandleReloadConfigRequest would), and back."""
    stub.RepositoryModelUnload(
        service_pb2.RepositoryModelUnloadRequest(model_name="multi"), timeout=RPC_TIMEOUT
    )
    assert not client.is_model_ready("multi")
    assert status_of(client.get_model_metadata, "multi")[0] == str(NOT_FOUND)
    index = client.get_model_repository_index(as_json=True)["models"]
    assert "READY" not in {m.get("state") for m in index if m["name"] == "multi"}
    stub.RepositoryModelLoad(
        service_pb2.RepositoryModelLoadRequest(model_name="multi"), timeout=RPC_TIMEOUT
    )
    assert client.is_model_ready("multi")
    assert status_of(client.load_model, "never_configured")[0] == str(NOT_FOUND)


def test_tritonclient_unload_then_load(client: Any) -> None:
    """tritonclient's unload_model always sends the parameter unload_dependents."""
    client.unload_model("multi")
    assert not client.is_model_ready("multi")
    client.load_model("multi")
    assert client.is_model_ready("multi")


def test_assignments_refuse_load_and_unload(serve: ServerFactory, tmp_path: Path) -> None:
    """With --assignments the store says what is served: FAILED_PRECONDITION."""
    from tests.serving.test_assigned import Store

    store = Store(str(tmp_path / "store-root"))
    store.stage("hp2", 1, HALF_PLUS_TWO / "00000123")
    store.assign("hp2", [1])
    server = serve([f"--assignments={store.uri}", f"--cache_dir={tmp_path / 'cache'}"])
    client = triton.InferenceServerClient(server.address)
    try:
        for change in (client.load_model, client.unload_model):
            status, message = status_of(change, "hp2")
            assert status == str(grpc.StatusCode.FAILED_PRECONDITION), message
            assert "change assignments instead" in message
        index = client.get_model_repository_index(as_json=True)["models"]
        assert index == [{"name": "hp2", "version": "1", "state": "READY"}]
        assert client.is_model_ready("hp2")
    finally:
        client.close()
