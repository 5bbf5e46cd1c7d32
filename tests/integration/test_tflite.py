"""--prefer_tflite_model against a real `rollway serve`: version directories
holding model.tflite (converted here, with and without signature defs), called
through TF Serving's gRPC stubs and its REST API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from functions.serving.process import ServerProcess, free_port
from tests.conftest import ServerFactory
from tests.integration.helpers import model_config, server_config, write_config
from tests.models import export_affine

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
PAIR = [
    tf.TensorSpec([None, 2], tf.float32, name="a"),
    tf.TensorSpec([None, 2], tf.float32, name="b"),
]


@tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])  # type: ignore[untyped-decorator]
def affine(x: Any) -> Any:
    return {"y": 0.5 * x + 2.0}


@tf.function(input_signature=PAIR)  # type: ignore[untyped-decorator]
def sum_prod(a: Any, b: Any) -> Any:
    return {"sum": a + b, "prod": a * b}


@tf.function(input_signature=[PAIR[0]])  # type: ignore[untyped-decorator]
def double(a: Any) -> Any:
    return {"doubled": 2.0 * a}


def bare(function: Any) -> bytes:
    """No signature defs: a concrete function without its trackable object."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    return bytes(converter.convert())


def from_saved_model(directory: Path, functions: dict[str, Any]) -> bytes:
    """The converter's signature defs, one per SavedModel signature."""
    signatures = {key: function.get_concrete_function() for key, function in functions.items()}
    tf.saved_model.save(tf.Module(), str(directory), signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(directory), signature_keys=[*functions]
    )
    return bytes(converter.convert())


def version_dir(base: Path, content: bytes) -> Path:
    version = base / "1"
    version.mkdir(parents=True, exist_ok=True)
    (version / "model.tflite").write_bytes(content)
    return base


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite")
    mixed = root / "mixed"
    export_affine(mixed, 1, scale=3.0, offset=1.0)  # its SavedModel answers 3x + 1
    return {
        "lite_sig": version_dir(
            root / "lite_sig",
            from_saved_model(root / "sm", {"serving_default": sum_prod, "double": double}),
        ),
        "lite_bare": version_dir(root / "lite_bare", bare(affine)),
        "mixed": version_dir(mixed, bare(affine)),  # its model.tflite answers 0.5x + 2
    }


def config_file(path: Path, bases: dict[str, Path]) -> Path:
    return write_config(path, server_config(*(model_config(k, v) for k, v in bases.items())))


class Served:
    def __init__(self, server: ServerProcess, rest_port: int) -> None:
        self.server, self.rest = server, f"http://127.0.0.1:{rest_port}"
        self.channel = grpc.insecure_channel(server.address)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def predict(
        self, model: str, inputs: dict[str, np.ndarray], signature: str = ""
    ) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self.stub.Predict(request, timeout=TIMEOUT)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def signature_defs(self, model: str) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = model
        request.metadata_field.append("signature_def")
        response = self.stub.GetModelMetadata(request, timeout=TIMEOUT)
        defs = get_model_metadata_pb2.SignatureDefMap()
        assert response.metadata["signature_def"].Unpack(defs)
        return defs.signature_def

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.rest + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def lite(
    serve_module: ServerFactory, bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    config = config_file(tmp_path_factory.mktemp("config") / "models.config", bases)
    port = free_port()
    server = serve_module(
        [f"--model_config_file={config}", f"--rest_api_port={port}",
         "--prefer_tflite_model=true", "--num_tflite_pools=2",
         "--num_tflite_interpreters_per_pool=2"]
    )  # fmt: skip
    served = Served(server, port)
    yield served
    served.channel.close()


def rows(n: int, width: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)


# ------------------------------------------------------------------- gRPC


@pytest.mark.parametrize("batch", [1, 3, 7, 600])  # 600 rows: split into 250-row chunks
def test_predict_with_signature_defs(lite: Served, batch: int) -> None:
    a, b = rows(batch, 2), rows(batch, 2, start=1.0)
    out = lite.predict("lite_sig", {"a": a, "b": b})
    assert set(out) == {"sum", "prod"}
    np.testing.assert_allclose(out["sum"], a + b)
    np.testing.assert_allclose(out["prod"], a * b)
    doubled = lite.predict("lite_sig", {"a": a}, signature="double")
    np.testing.assert_allclose(doubled["doubled"], 2 * a)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_predict_without_signature_defs(lite: Served, batch: int) -> None:
    x = rows(batch, 1)
    out = lite.predict("lite_bare", {"x": x})
    assert list(out) == ["Identity"]  # TF Serving's generated signature: tensor names
    np.testing.assert_allclose(out["Identity"], 0.5 * x + 2.0)


def test_model_tflite_is_preferred_over_the_saved_model(lite: Served) -> None:
    out = lite.predict("mixed", {"x": np.array([[1.0]], np.float32)})
    assert out == {"Identity": pytest.approx(np.array([[2.5]], np.float32))}


def test_metadata_with_signature_defs(lite: Served) -> None:
    defs = lite.signature_defs("lite_sig")
    assert set(defs) == {"serving_default", "double"}
    default = defs["serving_default"]
    assert default.method_name == "tensorflow/serving/predict"
    assert (set(default.inputs), set(default.outputs)) == ({"a", "b"}, {"sum", "prod"})
    info = default.inputs["a"]
    assert info.name == "serving_default_a:0"
    assert info.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in info.tensor_shape.dim] == [-1, 2]
    assert set(defs["double"].outputs) == {"doubled"}


def test_metadata_without_signature_defs(lite: Served) -> None:
    defs = lite.signature_defs("lite_bare")
    assert set(defs) == {"serving_default"}
    sig_def = defs["serving_default"]
    assert (set(sig_def.inputs), set(sig_def.outputs)) == ({"x"}, {"Identity"})
    info = sig_def.inputs["x"]
    assert (info.name, info.dtype) == ("x", tf.float32.as_datatype_enum)
    assert [d.size for d in info.tensor_shape.dim] == [1, 1]  # TF Serving reports the dims


def test_a_request_tflite_cannot_run_is_invalid_argument(lite: Served) -> None:
    for _ in range(3):  # each time on an interpreter given back to the pool
        with pytest.raises(grpc.RpcError) as info:
            lite.predict("lite_sig", {"a": rows(3, 2), "b": rows(3, 3)})
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = info.value.details() or ""
        assert "failed to prepare" in details
        assert "Traceback" not in details and ".cc:" not in details
    out = lite.predict("lite_sig", {"a": rows(3, 2), "b": rows(3, 2)})
    np.testing.assert_allclose(out["sum"], 2 * rows(3, 2))


def test_concurrent_requests(lite: Served) -> None:
    def call(i: int) -> bool:
        a = rows(1 + i % 7, 2, start=float(i))
        out = lite.predict("lite_sig", {"a": a, "b": a})
        return bool(np.allclose(out["prod"], a * a))

    with ThreadPoolExecutor(8) as threads:
        assert all(threads.map(call, range(160)))


# ------------------------------------------------------------------- REST


def test_rest_predict(lite: Served) -> None:
    assert lite.post(
        "/v1/models/lite_sig:predict", {"instances": [{"a": [1.0, 2.0], "b": [3.0, 4.0]}]}
    ) == (200, {"predictions": [{"sum": [4.0, 6.0], "prod": [3.0, 8.0]}]})
    assert lite.post(
        "/v1/models/lite_sig:predict", {"signature_name": "double", "inputs": [[1.0, 2.0]]}
    ) == (200, {"outputs": [[2.0, 4.0]]})
    assert lite.post("/v1/models/lite_bare:predict", {"instances": [[1.0], [2.0]]}) == (
        200,
        {"predictions": [[2.5], [3.0]]},
    )
    status, body = lite.post(
        "/v1/models/lite_sig:predict", {"inputs": {"a": [[1.0, 2.0]], "b": [[1.0, 2.0, 3.0]]}}
    )
    assert status == 400 and "failed to prepare" in body["error"]


# ------------------------------------------------------ without the flag


def test_without_the_flag_the_saved_model_is_served(
    serve: ServerFactory, bases: dict[str, Path], tmp_path: Path
) -> None:
    config = config_file(tmp_path / "models.config", {"mixed": bases["mixed"]})
    served = Served(serve([f"--model_config_file={config}"]), free_port())
    try:
        out = served.predict("mixed", {"x": np.array([[1.0]], np.float32)})
        assert out == {"y": pytest.approx(np.array([[4.0]], np.float32))}
        assert set(served.signature_defs("mixed")["serving_default"].outputs) == {"y"}
    finally:
        served.channel.close()
