"""Classify, Regress and MultiInference over gRPC, and warmup replay, against a
real `rollway serve` and TF Serving's own half_plus_two model."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.conftest import HALF_PLUS_TWO, ServerFactory
from tests.integration.helpers import model_config, server_config, write_config
from tests.models import export_affine, export_multi

TIMEOUT = 10


def example(**features: float) -> Any:
    proto = tf.train.Example()
    for name, value in features.items():
        proto.features.feature[name].float_list.value.append(value)
    return proto


def classify_request(signature: str = "classify_x_to_y", *xs: float, model: str = "hp2") -> Any:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for x in xs or (2.0,):
        request.input.example_list.examples.append(example(x=x))
    return request


def regress_request(signature: str = "regress_x_to_y", *xs: float, model: str = "hp2") -> Any:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for x in xs or (2.0,):
        request.input.example_list.examples.append(example(x=x))
    return request


def multi_request(*tasks: tuple[str, str], model: str = "hp2", x: float = 2.0) -> Any:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = model
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.append(example(x=x))
    return request


CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def stub(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("examples")
    export_multi(root / "multi", 1)
    path = write_config(
        root / "models.config",
        server_config(
            model_config("hp2", HALF_PLUS_TWO),
            model_config("multi", root / "multi"),
        ),
    )
    server = serve_module([f"--model_config_file={path}"])
    with grpc.insecure_channel(server.address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)
    return info.value


def test_classify_half_plus_two(stub: Any) -> None:
    response = stub.Classify(classify_request(), timeout=TIMEOUT)
    classes = response.result.classifications[0].classes
    assert [(c.label, c.score) for c in classes] == [("", 3.0)]
    assert response.model_spec.name == "hp2"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "classify_x_to_y"


def test_classify_a_batch(stub: Any) -> None:
    response = stub.Classify(classify_request("classify_x_to_y", 0.0, 2.0, 4.0), timeout=TIMEOUT)
    scores = [c.classes[0].score for c in response.result.classifications]
    assert scores == [2.0, 3.0, 4.0]


def test_regress_half_plus_two(stub: Any) -> None:
    response = stub.Regress(regress_request(), timeout=TIMEOUT)
    assert [r.value for r in response.result.regressions] == [3.0]
    assert response.model_spec.signature_name == "regress_x_to_y"
    assert response.model_spec.version.value == 123


def test_multi_inference_classify_and_regress(stub: Any) -> None:
    request = multi_request(("classify_x_to_y", CLASSIFY), ("regress_x_to_y", REGRESS))
    response = stub.MultiInference(request, timeout=TIMEOUT)
    assert len(response.results) == 2
    first, second = response.results
    assert first.classification_result.classifications[0].classes[0].score == 3.0
    assert first.model_spec.signature_name == "classify_x_to_y"
    assert second.regression_result.regressions[0].value == 3.0
    assert second.model_spec.signature_name == "regress_x_to_y"


def test_context_is_merged_under_each_example(stub: Any) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "hp2"
    request.model_spec.signature_name = "regress_x_to_y"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(x=2.0))
    listed.examples.append(tf.train.Example())  # takes x from the context
    listed.examples.append(example(x=4.0))  # its own x wins
    response = stub.Regress(request, timeout=TIMEOUT)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]


@pytest.mark.parametrize(
    ("method", "request_", "code", "fragment"),
    [
        (
            "Classify",
            classification_pb2.ClassificationRequest(),
            "INVALID_ARGUMENT",
            "Missing ModelSpec",
        ),
        (
            "Classify",
            classify_request(model="nope"),
            "NOT_FOUND",
            "Servable not found for request: Latest(nope)",
        ),
        (
            "Classify",
            classify_request("nope"),
            "FAILED_PRECONDITION",
            'Serving signature key "nope" not found.',
        ),
        (
            "Classify",
            classify_request("serving_default", model="multi"),
            "INVALID_ARGUMENT",
            "Expected one input Tensor",
        ),
        (
            "Classify",
            classify_request("regress_x_to_y"),
            "INVALID_ARGUMENT",
            'neither a "classes" nor a "scores"',
        ),
        ("Regress", regress_request("classify_x_to_y"), "INVALID_ARGUMENT", 'no "outputs" output'),
        (
            "MultiInference",
            inference_pb2.MultiInferenceRequest(),
            "INVALID_ARGUMENT",
            "at least one task",
        ),
        (
            "MultiInference",
            multi_request(("regress_x_to_y", REGRESS), ("regress_x_to_y", REGRESS)),
            "INVALID_ARGUMENT",
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            "MultiInference",
            multi_request(("regress_x_to_y", "tensorflow/serving/predict")),
            "INVALID_ARGUMENT",
            "Unsupported signature method_name",
        ),
    ],
)
def test_errors(stub: Any, method: str, request_: Any, code: str, fragment: str) -> None:
    err = rpc_error(getattr(stub, method), request_)
    assert err.code() == getattr(grpc.StatusCode, code), err.details()
    assert fragment in (err.details() or "")


def test_empty_input_is_invalid(stub: Any) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "hp2"
    request.model_spec.signature_name = "regress_x_to_y"
    err = rpc_error(stub.Regress, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Input is empty."


def test_multi_inference_needs_one_model(stub: Any) -> None:
    request = multi_request(("regress_x_to_y", REGRESS))
    task = request.tasks.add()
    task.model_spec.name = "multi"
    task.model_spec.signature_name = "scale"
    task.method_name = REGRESS
    err = rpc_error(stub.MultiInference, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "same model name" in (err.details() or "")


def test_method_name_check(serve: ServerFactory) -> None:
    server = serve(
        [
            "--model_name=hp2",
            f"--model_base_path={HALF_PLUS_TWO}",
            "--enable_signature_method_name_check=true",
        ]
    )
    with grpc.insecure_channel(server.address) as channel:
        checked = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        err = rpc_error(checked.Classify, classify_request("regress_x_to_y"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            "Expected classification signature method_name to be tensorflow/serving/classify"
            in (err.details() or "")
        )
        assert (
            checked.Regress(regress_request(), timeout=TIMEOUT).result.regressions[0].value == 3.0
        )


# ----------------------------------------------------------------------------- warmup


def write_warmup(version_dir: Path, logs: list[Any]) -> Path:
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path


def predict_log(x: float = 1.0, input_name: str = "x") -> Any:
    entry = prediction_log_pb2.PredictionLog()
    request = entry.predict_log.request
    request.model_spec.name = "m"
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
    return entry


def half_plus_two_copy(tmp_path: Path) -> Path:
    base = tmp_path / "hp2"
    shutil.copytree(HALF_PLUS_TWO, base)
    return base


def version_state(address: str, model: str) -> int:
    with grpc.insecure_channel(address) as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request)
        return int(reply.model_version_status[0].state)


def test_warmup_replays_every_log_type(serve: ServerFactory, tmp_path: Path) -> None:
    base = half_plus_two_copy(tmp_path)
    logs = [predict_log()]
    for kind, request in (
        ("classify_log", classify_request()),
        ("regress_log", regress_request()),
        ("multi_inference_log", multi_request(("classify_x_to_y", CLASSIFY))),
    ):
        entry = prediction_log_pb2.PredictionLog()
        getattr(entry, kind).request.CopyFrom(request)
        logs.append(entry)
    write_warmup(base / "00000123", logs)
    server = serve(["--model_name=hp2", f"--model_base_path={base}",
                    "--num_request_iterations_for_warmup=3"])  # fmt: skip
    assert version_state(server.address, "hp2") == 30  # AVAILABLE
    assert "warmed up hp2:123: 12 request(s)" in server.log()
    with grpc.insecure_channel(server.address) as channel:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "hp2"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        assert list(reply.outputs["y"].float_val) == [3.0]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"this is not a TFRecord file", "is not a valid TFRecord file"),
        ([predict_log(input_name="nope")], "warmup record 0 (predict_log)"),
        ([predict_log()] * 1001, "has more than 1000 records"),
    ],
)
def test_bad_warmup_fails_the_load(
    serve: ServerFactory, tmp_path: Path, content: Any, fragment: str
) -> None:
    base = tmp_path / "affine"
    version = export_affine(base, 1)
    if isinstance(content, bytes):
        path = version / "assets.extra" / "tf_serving_warmup_requests"
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    else:
        write_warmup(version, content)
    server = serve(["--model_name=m", f"--model_base_path={base}"], wait=False)
    assert server.wait_exit(timeout=120) == 1
    log = server.log()
    assert "Failed to start server" in log
    assert "m:1" in log
    assert fragment in log


def test_warmup_can_be_turned_off(serve: ServerFactory, tmp_path: Path) -> None:
    base = tmp_path / "affine"
    write_warmup(export_affine(base, 1), [predict_log(input_name="nope")])
    server = serve(["--model_name=m", f"--model_base_path={base}", "--enable_model_warmup=false"])
    assert version_state(server.address, "m") == 30
