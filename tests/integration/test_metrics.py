"""--monitoring_config_file: TF Serving's Prometheus metrics on the REST port,
scraped and parsed with prometheus-client's text parser."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.serving.process import free_port
from tests.conftest import HALF_PLUS_TWO, TESTDATA, ServerFactory


def scrape(
    port: int, path: str = "/monitoring/prometheus/metrics"
) -> dict[str, dict[tuple, float]]:
    """Samples by name and sorted labels, as prometheus-client's parser names them
    (it adds ``_total`` to counter samples; the wire text has none, as TF Serving's)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert "_total" not in text
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def test_prometheus_metrics(serve: ServerFactory) -> None:
    port = free_port()
    server = serve(
        ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", f"--rest_api_port={port}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp2"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(3):
            stub.Predict(request, timeout=10)
        bad = predict_pb2.PredictRequest()
        bad.CopyFrom(request)
        bad.model_spec.signature_name = "nope"
        with pytest.raises(grpc.RpcError):
            stub.Predict(bad, timeout=10)
    rest = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/hp2:predict",
        data=json.dumps({"instances": [[1.0]]}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(rest, timeout=10) as reply:
        assert reply.status == 200

    samples = scrape(port)
    count = samples[":tensorflow:serving:request_count_total"]
    assert count[(("model_name", "hp2"), ("status", "OK"))] == 4
    assert count[(("model_name", "hp2"), ("status", "FAILED_PRECONDITION"))] == 1
    grpc_key = (("API", "Predict"), ("entrypoint", "GRPC"), ("model_name", "hp2"))
    assert samples[":tensorflow:serving:request_latency_count"][grpc_key] == 3
    rest_key = (("API", "predict"), ("entrypoint", "REST"), ("model_name", "hp2"))
    assert samples[":tensorflow:serving:request_latency_count"][rest_key] == 1
    runtime_key = (("API", "Predict"), ("model_name", "hp2"), ("runtime", "TF1"))
    assert samples[":tensorflow:serving:runtime_latency_count"][runtime_key] == 4
    buckets = samples[":tensorflow:serving:request_latency_bucket"]
    assert any(dict(k).get("le") == "+Inf" for k in buckets)
    version_dir = str(HALF_PLUS_TWO / "00000123")
    loads = samples[":tensorflow:cc:saved_model:load_attempt_count_total"]
    assert loads[(("model_path", version_dir), ("status", "success"))] == 1
    state = samples["rollway_serving_model_version_state"]
    assert state[(("model_name", "hp2"), ("version", "123"))] == 30


def test_prometheus_needs_the_rest_port(serve: ServerFactory) -> None:
    server = serve(
        ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"],
        wait=False,
    )  # fmt: skip
    assert server.wait_exit(timeout=120) == 1
    assert "set --rest_api_port" in server.log()


def test_custom_path_and_disabled(serve: ServerFactory, tmp_path: Path) -> None:
    config = tmp_path / "monitoring.config"
    config.write_text('prometheus_config { enable: true path: "/metrics" }\n')
    port = free_port()
    serve(["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", f"--rest_api_port={port}",
           f"--monitoring_config_file={config}"])  # fmt: skip
    assert "rollway_serving_model_version_state" in scrape(port, "/metrics")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics", timeout=10)
    assert info.value.code == 400
