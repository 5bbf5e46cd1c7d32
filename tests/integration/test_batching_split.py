"""enable_large_batch_splitting against a real ``rollway serve``: a batching
file with TF Serving's fields 8 and 9 loads, and a Predict larger than
max_execution_batch_size is split, run in pieces and joined back: the answer
is exactly the unbatched one."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.serving.process import free_port
from tests.conftest import TESTDATA, ServerFactory
from tests.models import export_affine

SPLITTING = (
    "max_batch_size { value: 16 }\n"
    "batch_timeout_micros { value: 1000 }\n"
    "enable_large_batch_splitting { value: true }\n"
    "max_execution_batch_size { value: 4 }\n"
    "allowed_batch_sizes: [2, 4, 16]\n"
)


def predict(stub: prediction_service_pb2_grpc.PredictionServiceStub, x: np.ndarray) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return stub.Predict(request, timeout=30)


def wrapped_runs(port: int) -> float:
    """TF Serving's count of batched runs of the wrapped session."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(":tensorflow:serving:batching_session:wrapped_run_count"):
                return sample.value
    return 0.0


def test_a_request_above_the_execution_size_is_split_and_answered_exactly(
    serve: ServerFactory, tmp_path: Path
) -> None:
    base = tmp_path / "affine"
    export_affine(base, 1, scale=3.0, offset=-1.0)
    params = tmp_path / "batching.config"
    params.write_text(SPLITTING)
    port = free_port()
    server = serve(
        ["--model_name=m", f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={params}", f"--rest_api_port={port}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip
    x = np.arange(10, dtype=np.float32).reshape(10, 1) / 7.0
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        before = wrapped_runs(port)
        y = tf.make_ndarray(predict(stub, x).outputs["y"])
        assert wrapped_runs(port) - before == 3  # 4 + 4 + 2 rows
        np.testing.assert_array_equal(y, x * np.float32(3.0) - np.float32(1.0))
        assert y.shape == (10, 1)
        one = tf.make_ndarray(predict(stub, x[3:4]).outputs["y"])
        np.testing.assert_array_equal(one, y[3:4])
        with pytest.raises(grpc.RpcError) as info:
            predict(stub, np.ones((17, 1), np.float32))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Task size 17 is larger than maximum input batch size 16" in str(info.value.details())
