"""Batching benchmark: ``--enable_batching`` off vs on, on a compute-bound MLP,
driven by h2load (C load, never Python clients) at 32 gRPC connections.

Run with ``make bench`` (or ``python -m tests.bench.bench_batching``). In one
run it builds the MLP SavedModel (a few 2048-wide dense layers, so one row
costs milliseconds), measures the raw TensorFlow call (the SignatureDef run
as a Session callable, one caller: what rollway's runner calls) at one row
and at a full batch, then starts ``rollway serve`` without and with
batching and drives each with the same request. Writes
``tests/bench/results/batching.json`` and ``batching.md``. Targets (reported,
never asserted in ``make test``): at 32 clients, batched throughput >= 3x
unbatched, and batched p99 <= unbatched p99.

The batching parameters, and why:

* ``max_batch_size`` 32 = the number of clients: every waiting request fits one
  batch, and a batch of 32 rows costs little more than one row here (each
  layer's weights are read once per run whatever the rows).
* ``batch_timeout_micros`` 2000: below one row's cost, so a lone request waits
  less than a run takes; under load batches fill (to whatever has queued while
  the previous batch ran) long before it.
* ``num_batch_threads`` 1: a run already uses every core (TensorFlow's
  intra-op pool); a second concurrent run would halve each run's cores and
  split the queue into half-sized batches.
* ``max_enqueued_batches`` 4: room for 4x the clients, so no request is
  refused at steady load, yet a burst cannot queue unbounded work.
* ``allowed_batch_sizes`` 4, 8, 16, 32: a few sizes, so TensorFlow sees few
  shapes (oneDNN primitives are cached per shape), padding at most 2x of a
  cheap dimension.

Both servers get ``--grpc_max_threads`` 64 (default 4 per CPU: 8 here): a
request waiting in the batcher holds an executor thread, so with 8 threads no
batch could exceed 8 rows, whatever the clients. The unbatched server gets
the same flag, so the two differ in ``--enable_batching`` only. The mean batch
size (requests / wrapped runs, from the server's own metrics) is reported.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from tests.bench.loadgen import Load, ensure_tools, h2load_grpc

RESULTS = Path(__file__).resolve().parent / "results"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MODEL = "mlp"
FEATURES = 512
WIDTH = 2048
LAYERS = 7
CLIENTS = 32
PARAMETERS = {
    "max_batch_size": 32,
    "batch_timeout_micros": 2000,
    "num_batch_threads": 1,
    "max_enqueued_batches": 4,
}
ALLOWED_BATCH_SIZES = (4, 8, 16, 32)
GRPC_MAX_THREADS = 64
MONITORING = "/monitoring/prometheus/metrics"
TARGET_SPEEDUP = 3.0
MIN_ONE_ROW_MS = 2.0  # the model must be compute-bound: one row costs at least this


def export_wide_mlp(base: Path, version: int = 1) -> Path:
    """``LAYERS`` ReLU dense layers of ``WIDTH`` units over ``FEATURES`` inputs,
    and a 10-unit output ("logits"); seeded weights (about 26M parameters, 105 MB: one row
    reads every weight once, so it costs milliseconds)."""
    import tensorflow as tf

    rng = tf.random.Generator.from_seed(7)

    class MLP(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            sizes = [FEATURES] + [WIDTH] * LAYERS
            self.weights = [
                tf.Variable(rng.normal([a, b]) * (2.0 / a) ** 0.5)
                for a, b in itertools.pairwise(sizes)
            ]
            self.biases = [tf.Variable(tf.zeros([b])) for b in sizes[1:]]
            self.out = tf.Variable(rng.normal([WIDTH, 10]) * 0.02)

        @tf.function(input_signature=[tf.TensorSpec([None, FEATURES], tf.float32, name="x")])  # type: ignore[misc]
        def serve(self, x: Any) -> dict[str, Any]:
            for w, b in zip(self.weights, self.biases, strict=True):
                x = tf.nn.relu(tf.matmul(x, w) + b)
            return {"logits": tf.matmul(x, self.out)}

    module = MLP()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def raw_call_ms(version_dir: Path, x: np.ndarray, seconds: float = 3.0) -> dict[str, float]:
    """The SignatureDef as a Session callable (rollway's runner), one caller."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    signature = meta_graph.signature_def["serving_default"]
    call = session._make_callable_from_options(
        config_pb2.CallableOptions(
            feed=[signature.inputs["x"].name], fetch=[signature.outputs["logits"].name]
        )
    )
    for _ in range(20):
        call(x)
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call(x)
        latencies.append((time.perf_counter() - start) * 1000.0)
    session.close()
    return {"p50_ms": statistics.median(latencies), "min_ms": min(latencies)}


def request_bytes(x: np.ndarray) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from functions.serving.codecs import tensors

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    tensors.from_ndarray(x, request.inputs["x"])
    data: bytes = request.SerializeToString()
    return data


def verify_one(address: str, payload: bytes) -> None:
    """h2load cannot see grpc-status: check that one real call succeeds."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(predict_pb2.PredictRequest.FromString(payload), timeout=30)
    if list(reply.outputs["logits"].tensor_shape.dim[i].size for i in range(2)) != [1, 10]:
        raise RuntimeError(f"unexpected Predict reply: {reply}")


def parameters_text() -> str:
    lines = [f"{k} {{ value: {v} }}" for k, v in PARAMETERS.items()]
    lines += [f"allowed_batch_sizes: {s}" for s in ALLOWED_BATCH_SIZES]
    return "\n".join(lines) + "\n"


def counters(port: int) -> dict[str, float]:
    """The server's request and wrapped-run counts (summed over labels)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{MONITORING}", timeout=10) as reply:
        text = reply.read().decode()
    totals = {"requests": 0.0, "runs": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(":tensorflow:serving:request_count"):
                totals["requests"] += sample.value
            elif sample.name.startswith(":tensorflow:serving:batching_session:wrapped_run_count"):
                totals["runs"] += sample.value
    return totals


def serve_and_load(
    base: Path, payload: bytes, batching: bool, seconds: float, tmp: Path
) -> tuple[Load, float | None]:
    """One server's load; and with batching, its mean batch size under it."""
    from functions.serving.process import LOOPBACK, ServerProcess, free_port

    monitoring = tmp / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{MONITORING}" }}\n')
    rest = free_port()
    flags = [
        f"--model_name={MODEL}", f"--model_base_path={base}",
        f"--grpc_max_threads={GRPC_MAX_THREADS}",
        f"--rest_api_port={rest}", f"--monitoring_config_file={monitoring}",
    ]  # fmt: skip
    if batching:
        params = tmp / "batching.config"
        params.write_text(parameters_text())
        flags += ["--enable_batching", f"--batching_parameters_file={params}"]
    name = "on" if batching else "off"
    with ServerProcess(flags, tmp / f"server-{name}.log") as server:
        server.wait_serving()
        verify_one(server.address, payload)
        print(f"[{MODEL}] batching={name} connections={CLIENTS} {seconds:g}s", flush=True)
        before = counters(rest)
        load = h2load_grpc(LOOPBACK, server.port, PREDICT, payload, CLIENTS, seconds)
        after = counters(rest)
    runs = after["runs"] - before["runs"]
    return load, (after["requests"] - before["requests"]) / runs if runs else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    ensure_tools()
    x = np.random.default_rng(0).normal(size=(1, FEATURES)).astype(np.float32)
    payload = request_bytes(x)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        version = export_wide_mlp(tmp / MODEL)
        raw_one = raw_call_ms(version, x)
        raw_batch = raw_call_ms(version, np.repeat(x, PARAMETERS["max_batch_size"], axis=0))
        print(f"raw one row {raw_one['p50_ms']:.2f} ms, 32 rows {raw_batch['p50_ms']:.2f} ms")
        off, _ = serve_and_load(tmp / MODEL, payload, False, args.seconds, tmp)
        on, mean_batch = serve_and_load(tmp / MODEL, payload, True, args.seconds, tmp)
    speedup = on.requests_per_second / off.requests_per_second if off.requests_per_second else 0.0
    checks = {
        f"raw_one_row_at_least_{MIN_ONE_ROW_MS:g}ms": (
            raw_one["p50_ms"] >= MIN_ONE_ROW_MS,
            f"{raw_one['p50_ms']:.2f} ms",
        ),
        f"throughput_batched_at_least_{TARGET_SPEEDUP:g}x": (
            speedup >= TARGET_SPEEDUP,
            f"{speedup:.2f}x",
        ),
        "p99_batched_at_most_unbatched": (
            on.p99_ms <= off.p99_ms,
            f"{on.p99_ms:.2f} ms vs {off.p99_ms:.2f} ms",
        ),
    }
    lines = [
        "# Batching benchmark", "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {platform.machine()} · {os.cpu_count()} CPUs, "
        f"shared by h2load and the server · model: {LAYERS} ReLU layers of {WIDTH} over "
        f"{FEATURES} features · {CLIENTS} h2load connections, 1 stream each, "
        f"{args.seconds:g} s after 1 s warm-up · batching: "
        + ", ".join(f"{k} {v}" for k, v in PARAMETERS.items())
        + f", allowed_batch_sizes {list(ALLOWED_BATCH_SIZES)} · both servers "
        f"--grpc_max_threads={GRPC_MAX_THREADS}.", "",
        f"Raw TensorFlow call (Session callable, one caller): one row p50 "
        f"{raw_one['p50_ms']:.2f} ms; {PARAMETERS['max_batch_size']} rows p50 "
        f"{raw_batch['p50_ms']:.2f} ms.", "",
        "| batching | req/s | p50 ms | p99 ms | requests | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name, load in (("off", off), ("on", on)):
        lines.append(
            f"| {name} | {load.requests_per_second:,.1f} | {load.p50_ms:.2f} | "
            f"{load.p99_ms:.2f} | {load.requests} | {load.errors} |"
        )
    lines += [
        "",
        f"Ratio batched/unbatched: throughput {speedup:.2f}x, p50 "
        f"{on.p50_ms / off.p50_ms if off.p50_ms else 0:.2f}x, p99 "
        f"{on.p99_ms / off.p99_ms if off.p99_ms else 0:.2f}x. Mean batch size under load: "
        f"{mean_batch or 0:.1f} rows (requests / wrapped runs, warm-up included).",
        "",
        "| check | result | measured |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {'PASS' if ok else 'FAIL'} | {v} |" for k, (ok, v) in checks.items()]
    result = {
        "model": {"features": FEATURES, "width": WIDTH, "layers": LAYERS},
        "clients": CLIENTS,
        "seconds": args.seconds,
        "batching_parameters": {**PARAMETERS, "allowed_batch_sizes": list(ALLOWED_BATCH_SIZES)},
        "raw_one_row_ms": raw_one,
        "raw_full_batch_ms": raw_batch,
        "unbatched": asdict(off),
        "batched": asdict(on),
        "batched_mean_batch_size": mean_batch,
        "grpc_max_threads": GRPC_MAX_THREADS,
        "ratio_batched_unbatched": {
            "requests_per_second": speedup,
            "p50": on.p50_ms / off.p50_ms if off.p50_ms else None,
            "p99": on.p99_ms / off.p99_ms if off.p99_ms else None,
        },
        "checks": checks,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batching.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "batching.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
