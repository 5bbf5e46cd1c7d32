"""--enable_batching against a real server: results equal unbatched answers,
requests really are merged, and TF Serving's batching_config.txt loads."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.serving.process import free_port
from tests.conftest import HALF_PLUS_TWO, TESTDATA, ServerFactory
from tests.models import export_affine


def predict(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, model: str, x: np.ndarray
) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return tf.make_ndarray(stub.Predict(request, timeout=30).outputs["y"])


def runtime_calls(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == ":tensorflow:serving:runtime_latency_count":
                return sample.value
    return 0.0


def test_batched_results_equal_unbatched(serve: ServerFactory, tmp_path: Path) -> None:
    base = tmp_path / "affine"
    export_affine(base, 1, scale=3.0, offset=-1.0)
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 20000 }\n")
    port = free_port()
    server = serve(
        ["--model_name=m", f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={params}", f"--rest_api_port={port}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(int(rng.integers(1, 4)), 1)).astype(np.float32) for _ in range(48)]
    results: list[np.ndarray | None] = [None] * len(inputs)
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def worker(indexes: list[int]) -> None:
            for i in indexes:
                results[i] = predict(stub, "m", inputs[i])

        threads = [
            threading.Thread(target=worker, args=(list(range(k, 48, 12)),)) for k in range(12)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    for x, y in zip(inputs, results, strict=True):
        assert y is not None
        np.testing.assert_allclose(y, x * 3.0 - 1.0, rtol=1e-6)
    assert runtime_calls(port) < len(inputs)  # requests were merged into batches


def test_tf_serving_batching_config(serve: ServerFactory) -> None:
    server = serve(
        ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", "--enable_batching",
         f"--batching_parameters_file={TESTDATA / 'batching_config.txt'}"]
    )  # fmt: skip
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        y = predict(stub, "hp2", np.array([[1.0], [2.0], [5.0]], dtype=np.float32))
    np.testing.assert_array_equal(y, [[2.5], [3.0], [4.5]])


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Scrape:
    """(sample name, labels) -> value; the parser names counters with ``_total``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics") as r:
        text = r.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_full_queue_answers_unavailable_and_queueing_is_measured(
    serve: ServerFactory, tmp_path: Path
) -> None:
    """Queue room is max_enqueued_batches * max_batch_size = 8 rows. Two requests
    of 6 rows arrive within the 1 s batch timeout: whichever comes second cannot
    fit and is refused with TF Serving's code and message, while the other still
    gets its exact answer."""
    base = tmp_path / "affine"
    export_affine(base, 1, scale=2.0)
    params = tmp_path / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000000 }\n"
        "max_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n"
    )
    port = free_port()
    server = serve(
        ["--model_name=m", f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={params}", f"--rest_api_port={port}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip
    xs = [np.arange(6, dtype=np.float32).reshape(6, 1) + k for k in (0, 100)]
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        futures = []
        for x in xs:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "m"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            futures.append(stub.Predict.future(request, timeout=30))
        answered, refused = [], []
        for x, future in zip(xs, futures, strict=True):
            try:
                answered.append((x, tf.make_ndarray(future.result().outputs["y"])))
            except grpc.RpcError as err:
                refused.append(err)
    assert len(answered) == 1 and len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.UNAVAILABLE
    assert "batch scheduling queue to which this task was submitted is full" in (
        refused[0].details() or ""
    )
    ((x, y),) = answered
    np.testing.assert_array_equal(y, x * 2.0)
    samples = scrape(port)
    requests = ":tensorflow:serving:request_count_total"
    assert metric(samples, requests, model_name="m", status="UNAVAILABLE") >= 1
    assert metric(samples, requests, model_name="m", status="OK") >= 1
    queuing = ":tensorflow:serving:batching_session:queuing_latency"
    assert metric(samples, f"{queuing}_count", thread_pool_name="batch_threads") >= 1
    # The first request waited out the 1 s batch timeout (microseconds).
    assert metric(samples, f"{queuing}_sum", thread_pool_name="batch_threads") >= 0.5e6
    runs = ":tensorflow:serving:batching_session:wrapped_run_count_total"
    assert metric(samples, runs) >= 1


def test_variable_length_inputs_are_padded_like_tf_serving(
    serve: ServerFactory, tmp_path: Path
) -> None:
    base = tmp_path / "ragged"
    export_affine(base, 1, scale=2.0, shape=(None, None))
    params = tmp_path / "batching.config"
    params.write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500000 }\n"
        "pad_variable_length_inputs: true\n"
    )
    server = serve(
        ["--model_name=m", f"--model_base_path={base}", "--enable_batching",
         f"--batching_parameters_file={params}"]
    )  # fmt: skip
    short = np.array([[5.0]], np.float32)
    long = np.array([[1.0, 2.0, 3.0]], np.float32)
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        results: dict[str, np.ndarray] = {}
        threads = [
            threading.Thread(target=lambda k=k, x=x: results.__setitem__(k, predict(stub, "m", x)))
            for k, x in (("short", short), ("long", long))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    np.testing.assert_array_equal(results["long"], long * 2.0)
    # Merged with the longer request: padded with its own first element, as TF Serving does.
    np.testing.assert_array_equal(results["short"], [[10.0, 10.0, 10.0]])
