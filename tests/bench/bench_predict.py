"""Predict benchmark: raw in-process signature call vs rollway over gRPC.

Run with ``make bench``. For each model (TF Serving's half_plus_two, and an
MLP of about one million parameters) it measures, in one run:

1. the raw TensorFlow call: the loaded SavedModel's signature function called
   in-process (numpy in, numpy out), one caller; and the raw Session callable
   (the MetaGraph in a Session, fed by the SignatureDef's tensor names: what
   rollway's runner calls), one caller;
2. rollway gRPC Predict with one client: p50, p99, p99.9 latency;
3. rollway gRPC Predict with 8 concurrent clients (8 processes): throughput
   and p99.9 latency.

Client and server share the machine's CPUs. Results go to
``tests/bench/results/predict.json`` and ``predict.md``. Targets (checked and
reported here, never in ``make test``): gRPC p50 <= 4x the raw call; >= 1,500
predictions/s for half_plus_two with 8 clients; p99.9 <= 10 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"
TARGET_RATIO = 4.0
TARGET_QPS = 1500.0
TARGET_P999_MS = 10.0


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def summarize(latencies: list[float]) -> dict[str, float]:
    ms = [x * 1000.0 for x in latencies]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "p99_9_ms": percentile(ms, 99.9),
        "mean_ms": statistics.fmean(ms),
    }


def raw_call(version_dir: Path, x: np.ndarray, input_name: str, n: int) -> dict[str, float]:
    import tensorflow as tf

    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    for _ in range(50):
        fn(**{input_name: x})
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        outputs = fn(**{input_name: x})
        {k: v.numpy() for k, v in outputs.items()}
        latencies.append(time.perf_counter() - start)
    return summarize(latencies)


def raw_session_call(version_dir: Path, x: np.ndarray, input_name: str, n: int) -> dict[str, float]:
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version_dir))
    signature = meta_graph.signature_def["serving_default"]
    fetches = [t.name for t in signature.outputs.values()]
    call = session._make_callable_from_options(
        config_pb2.CallableOptions(feed=[signature.inputs[input_name].name], fetch=fetches)
    )
    for _ in range(50):
        call(x)
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        call(x)
        latencies.append(time.perf_counter() - start)
    return summarize(latencies)


def _request(model: str, input_name: str, x: np.ndarray) -> bytes:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(x))
    data: bytes = request.SerializeToString()
    return data


def grpc_sequential(address: str, payload: bytes, n: int) -> dict[str, float]:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest.FromString(payload)
    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for _ in range(100):
            stub.Predict(request, timeout=10)
        latencies = []
        for _ in range(n):
            start = time.perf_counter()
            stub.Predict(request, timeout=10)
            latencies.append(time.perf_counter() - start)
    return summarize(latencies)


def rest_sequential(port: int, model: str, x: np.ndarray, n: int) -> dict[str, float]:
    """POST :predict (row format) on one persistent HTTP/1.1 connection."""
    import http.client

    body = json.dumps({"instances": x.tolist()}).encode()
    headers = {"Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call() -> None:
        connection.request("POST", f"/v1/models/{model}:predict", body, headers)
        reply = connection.getresponse()
        reply.read()
        if reply.status != 200:
            raise RuntimeError(f"REST predict answered {reply.status}")

    for _ in range(100):
        call()
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    connection.close()
    return summarize(latencies)


def grpc_concurrent(
    address: str, payload: bytes, clients: int, seconds: float, threads_per_process: int = 1
) -> dict[str, Any]:
    """``clients`` concurrent callers (processes of ``threads_per_process`` threads,
    each with its own channel) hammer the server for ``seconds``, starting together."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    processes = max(1, clients // threads_per_process)
    procs = [
        ctx.Process(
            target=_client,
            args=(address, payload, ready, go, deadline, results, clients // processes),
        )
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)  # each client imported, connected and warmed up
    deadline.value = time.time() + seconds
    go.set()
    collected = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    latencies = [x for lat, _ in collected for x in lat]
    summary: dict[str, Any] = summarize(latencies)
    summary.update(
        clients=clients,
        seconds=seconds,
        errors=sum(e for _, e in collected),
        predictions_per_s=len(latencies) / seconds,
    )
    return summary


def _client(
    address: str, payload: bytes, ready: Any, go: Any, deadline: Any, results: Any, threads: int
) -> None:
    """One client process: ``threads`` callers Predict in a loop from ``go`` until ``deadline``."""
    import threading

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest.FromString(payload)
    latencies: list[float] = []
    errors = [0]

    def loop(stub: Any) -> None:
        go.wait()
        mine = []
        while time.time() < deadline.value:
            t0 = time.perf_counter()
            try:
                stub.Predict(request, timeout=10)
                mine.append(time.perf_counter() - t0)
            except grpc.RpcError:
                errors[0] += 1
        latencies.extend(mine)

    channels = [grpc.insecure_channel(address) for _ in range(threads)]
    stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
    for stub in stubs:
        for _ in range(5):
            stub.Predict(request, timeout=30)
    workers = [threading.Thread(target=loop, args=(stub,)) for stub in stubs]
    for worker in workers:
        worker.start()
    ready.put(True)
    for worker in workers:
        worker.join()
    for channel in channels:
        channel.close()
    results.put((latencies, errors[0]))


@contextlib.contextmanager
def _cpus(cpus: set[int] | None) -> Iterator[None]:
    """Runs the block (and processes it starts) on ``cpus``; None leaves it alone."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def layouts() -> dict[str, tuple[set[int] | None, set[int] | None]]:
    """CPU placement: (server CPUs, client CPUs).

    ``shared``: the scheduler places everything. ``pinned``: the server on CPU
    0, the clients (and the raw call) on CPU 1, so no process migrates between
    cores mid-request; on 2 cores that alone is worth ~200us per gRPC call.
    """
    result: dict[str, tuple[set[int] | None, set[int] | None]] = {"shared": (None, None)}
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        result["pinned"] = ({first}, {second})
    return result


def bench_model(
    name: str,
    base: Path,
    version: int,
    input_name: str,
    x: np.ndarray,
    args: argparse.Namespace,
    layout: str,
) -> dict[str, Any]:
    from functions.serving.process import ServerProcess, free_port
    from loader.versions import scan_versions

    server_cpus, client_cpus = layouts()[layout]
    print(f"[{name}, {layout}] raw in-process call ...", flush=True)
    with _cpus(client_cpus):
        raw = raw_call(scan_versions(base)[version], x, input_name, args.requests)
        raw_session = raw_session_call(scan_versions(base)[version], x, input_name, args.requests)
    payload = _request(name, input_name, x)
    with tempfile.TemporaryDirectory() as tmp:
        rest_port = free_port()
        server = ServerProcess(
            [
                f"--model_name={name}",
                f"--model_base_path={base}",
                f"--rest_api_port={rest_port}",
                *args.server_flag,
            ],
            Path(tmp) / "server.log",
        )
        with _cpus(server_cpus):
            server.start()
        try:
            server.wait_serving()
            with _cpus(client_cpus):
                print(f"[{name}, {layout}] gRPC, 1 client ...", flush=True)
                single = grpc_sequential(server.address, payload, args.requests)
                print(f"[{name}, {layout}] REST, 1 client ...", flush=True)
                rest = rest_sequential(rest_port, name, x, args.requests)
                print(f"[{name}, {layout}] gRPC, {args.clients} clients ...", flush=True)
                concurrent = grpc_concurrent(server.address, payload, args.clients, args.seconds)
        finally:
            server.stop()
    ratio = single["p50_ms"] / raw["p50_ms"]
    checks = {
        "p50_vs_raw_at_most_4x": ratio <= TARGET_RATIO,
        "p99_9_single_at_most_10ms": single["p99_9_ms"] <= TARGET_P999_MS,
        "p99_9_concurrent_at_most_10ms": concurrent["p99_9_ms"] <= TARGET_P999_MS,
    }
    if name == "half_plus_two":
        checks["at_least_1500_per_s_with_8_clients"] = concurrent["predictions_per_s"] >= TARGET_QPS
    return {
        "model": name,
        "layout": layout,
        "batch": list(x.shape),
        "raw": raw,
        "raw_session": raw_session,
        "grpc_single": single,
        "rest_single": rest,
        "grpc_concurrent": concurrent,
        "p50_ratio_grpc_vs_raw": ratio,
        "p50_ratio_grpc_vs_raw_session": single["p50_ms"] / raw_session["p50_ms"],
        "checks": checks,
    }


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Predict benchmark",
        "",
        f"{meta['when']} · {meta['cpus']} CPUs · {meta['machine']} · Python {meta['python']} · "
        f"TensorFlow {meta['tensorflow']}. Client and server share the CPUs.",
        "",
        "Layouts: `shared` lets the scheduler place client and server processes;",
        "`pinned` puts the server on one CPU and the clients (and the raw call) on the other.",
        "",
        "| model | layout | path | p50 ms | p99 ms | p99.9 ms | predictions/s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        c = r["grpc_concurrent"]
        for label, s, qps in (
            ("raw in-process call", r["raw"], 1000.0 / r["raw"]["mean_ms"]),
            ("raw Session callable", r["raw_session"], 1000.0 / r["raw_session"]["mean_ms"]),
            ("gRPC, 1 client", r["grpc_single"], 1000.0 / r["grpc_single"]["mean_ms"]),
            ("REST, 1 client", r["rest_single"], 1000.0 / r["rest_single"]["mean_ms"]),
            (f"gRPC, {c['clients']} clients", c, c["predictions_per_s"]),
        ):
            lines.append(
                f"| {r['model']} | {r['layout']} | {label} | {s['p50_ms']:.3f} | "
                f"{s['p99_ms']:.3f} | {s['p99_9_ms']:.3f} | {qps:,.0f} |"
            )
    lines += ["", "| model | layout | check | result |", "|---|---|---|---|"]
    for r in results:
        where = f"| {r['model']} | {r['layout']} "
        lines.append(f"{where}| gRPC p50 / raw p50 | {r['p50_ratio_grpc_vs_raw']:.2f}x |")
        lines.append(
            f"{where}| gRPC p50 / raw Session callable p50 | "
            f"{r['p50_ratio_grpc_vs_raw_session']:.2f}x |"
        )
        for check, ok in r["checks"].items():
            lines.append(f"{where}| {check} | {'PASS' if ok else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="sequential requests per path")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="duration of the concurrent run"
    )
    parser.add_argument(
        "--server-flag", action="append", default=[], help="extra rollway serve flag"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import tensorflow as tf

    from tests.models import export_mlp

    half_plus_two = SHARED / "saved_model_half_plus_two_cpu"
    one = np.array([[1.0]], dtype=np.float32)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        mlp = Path(tmp) / "mlp"
        export_mlp(mlp, 1)
        features = np.random.default_rng(0).normal(size=(1, 256)).astype(np.float32)
        for layout in layouts():
            results.append(bench_model("half_plus_two", half_plus_two, 123, "x", one, args, layout))
            results.append(bench_model("mlp_1m", mlp, 1, "x", features, args, layout))
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "server_flags": args.server_flag,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "predict.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    table = markdown(results, meta)
    (args.out / "predict.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
