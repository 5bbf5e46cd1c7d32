"""Serving comparison: rollway beside KServe, a naive server and the transport limit.

Run with ``make bench`` or ``python -m tests.bench.bench_serving_compare
[--seconds S] [--only rollway,kserve,...]``. Every server is a real process on
free 127.0.0.1 ports, started one at a time (never two at once), serving TF
Serving's ``half_plus_two`` SavedModel, one row ([[1.0]]) per request:

``raw``       the in-process call of the signature, no server (the floor of the TF cost)
``aio``       a ``grpc.aio`` Predict answering a constant, without TensorFlow
              (the Python transport limit): ``baselines/aio_constant_server.py``
``naive``     grpcio's synchronous server + ``tf.saved_model.load``: ``baselines/naive_server.py``
``kserve``    KServe's ModelServer (PyPI ``kserve`` in its own venv under
              ``~/.cache/rollway/bench-kserve-venv``): ``baselines/kserve_model.py``;
              REST v1 and gRPC Open Inference Protocol v2 ModelInfer
``rollway``   ``rollway serve``, one worker
``rollway2``  ``rollway serve --workers 2`` (a row "not available" if the server rejects it)
``rollway_caller``, ``rollway2_caller``  the same with ``--tensorflow_inter_op_parallelism=-1``
              (TensorFlow runs each call's ops in the calling thread: the small-model tuning)

Load comes from h2load (gRPC) and wrk (REST) at 8 and 32 connections
(``tests/bench/loadgen.py``), ``--seconds`` each. h2load cannot see
``grpc-status``, so one real request through a Python client checks each
server's answer first; a server that answers wrongly is reported, not
measured. Results: ``tests/bench/results/serving_compare.{json,md,png}``; with
``--only``, the rows not rerun are kept from the previous JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[2]
BASELINES = Path(__file__).resolve().parent / "baselines"
TESTDATA = REPO.parent / "shared" / "testdata" / "tf_serving"  # tests/conftest.py's
MODEL = "half_plus_two"
MODEL_BASE = TESTDATA / "saved_model_half_plus_two_cpu"
MODEL_VERSION_DIR = MODEL_BASE / "00000123"
KSERVE_VENV = Path.home() / ".cache" / "rollway" / "bench-kserve-venv"
LOOPBACK = "127.0.0.1"
CONNECTIONS = (8, 32)
EXPECTED = 2.5  # half_plus_two(1.0)
PREDICT = "/tensorflow.serving.PredictionService/Predict"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
REST_BODY = json.dumps(
    {"instances": [[1.0]]}
).encode()  # the same body for TF Serving and KServe v1
# Open Inference Protocol (v2) REST: the same x = [[1.0]], for rollway and KServe.
REST_V2_BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
).encode()
STARTUP_TIMEOUT_S = 180.0

SERVERS: dict[str, str] = {
    "raw": "raw TensorFlow call (in-process)",
    "aio": "grpc.aio constant server (no TF)",
    "naive": "naive grpcio + TF server",
    "kserve": "KServe ModelServer",
    "rollway": "rollway serve, 1 worker",
    "rollway2": "rollway serve, 2 workers",
    "rollway_caller": "rollway serve, 1 worker, --tensorflow_inter_op_parallelism=-1",
    "rollway2_caller": "rollway serve, 2 workers, --tensorflow_inter_op_parallelism=-1",
}
# TensorFlow's "run the ops in the caller's thread" (ConfigProto's negative
# inter-op parallelism): the tuning for small models (README, Performance).
CALLER_THREAD = ("--tensorflow_inter_op_parallelism=-1",)


# ------------------------------------------------------------ targets (pure)


@dataclass(frozen=True)
class Target:
    """One ratio against a baseline: ``value`` (None when a side is missing) vs ``threshold``."""

    name: str
    value: float | None
    op: str  # ">=" or "<="
    threshold: float

    @property
    def status(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.value >= self.threshold if self.op == ">=" else self.value <= self.threshold
        return "met" if met else "missed"


def load_at(rows: Mapping[str, Any], server: str, protocol: str, connections: int) -> Any:
    """The measurement dict of ``server`` (``protocol`` at ``connections``), or None."""
    row = rows.get(server) or {}
    found = (row.get(protocol) or {}).get(str(connections))
    return found if found and found.get("requests_per_second") else None


def _ratio(a: Any, b: Any, key: str = "requests_per_second") -> float | None:
    if a is None or b is None or not b[key]:
        return None
    return float(a[key]) / float(b[key])


def targets(rows: Mapping[str, Any]) -> list[Target]:
    """The targets of rollway against KServe and the transport limit, at 32
    connections: with the default flags, then the gRPC ones again with
    --tensorflow_inter_op_parallelism=-1."""
    names = ("rollway", "rollway2", "rollway_caller", "rollway2_caller", "kserve", "aio")
    g = {name: load_at(rows, name, "grpc", 32) for name in names}
    rest = {name: load_at(rows, name, "rest", 32) for name in ("rollway", "kserve")}
    ks_grpc, ks_rest = g["kserve"], rest["kserve"]
    found = [
        Target("1 worker REST@32 / KServe REST@32", _ratio(rest["rollway"], ks_rest), ">=", 2.0),
        Target(
            "1 worker REST@32 p99 / KServe REST@32 p99",
            _ratio(rest["rollway"], ks_rest, "p99_ms"), "<=", 1.0,
        ),
    ]  # fmt: skip
    for suffix, tag in (("", ""), ("_caller", " (inter_op -1)")):
        one, two = g["rollway" + suffix], g["rollway2" + suffix]
        found[len(found) :] = [
            Target(f"1 worker gRPC@32 / KServe gRPC@32{tag}", _ratio(one, ks_grpc), ">=", 2.5),
            Target(f"2 workers gRPC@32 / KServe gRPC@32{tag}", _ratio(two, ks_grpc), ">=", 4.0),
            Target(f"2 workers gRPC@32 / aio constant@32{tag}", _ratio(two, g["aio"]), ">=", 0.55),
        ]
    return found + v2_ratios(rows)


# ----------------------------------------------------------- markdown (pure)


def _cell(row: Mapping[str, Any], protocol: str, connections: int) -> str:
    if protocol not in row:
        return "—"
    found = (row.get(protocol) or {}).get(str(connections))
    if not found:
        return "—"
    cell = f"{found['requests_per_second']:,.0f} (p99 {found['p99_ms']:.2f} ms)"
    return cell + (f", {found['errors']} errors" if found.get("errors") else "")


def _notes(key: str, row: Mapping[str, Any]) -> str:
    notes = []
    if key == "raw" and "raw" in row:
        raw = row["raw"]
        notes.append(
            f"Session callable (what rollway runs): {raw['session_us_per_call']:.1f} µs per call, "
            f"{raw['session_calls_per_s']:,.0f} calls/s; signature function (what the naive "
            f"server and KServe call): {raw['us_per_call']:.1f} µs, "
            f"{raw['calls_per_s']:,.0f} calls/s"
        )
    notes.extend(f"{what}: {short(error)}" for what, error in (row.get("errors") or {}).items())
    if row.get("not_available"):
        notes.append(f"not available: {short(row['not_available'])}")
    return "; ".join(notes).replace("|", "\\|")


def short(error: str, chars: int = 240) -> str:
    """An error's last line (a traceback's exception), for a table cell; the JSON keeps it all."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= chars else last[: chars - 1] + "…"


def markdown(document: Mapping[str, Any]) -> str:
    meta, rows = document["meta"], document["rows"]
    versions = meta["versions"]
    lines = [
        "# Serving comparison: rollway, KServe, a naive server and the transport limit",
        "",
        f"{meta['date']} · {meta['cpus']} CPUs · {meta['machine']} · Python {meta['python']} · "
        f"TensorFlow {versions.get('tensorflow')} · grpcio {versions.get('grpcio')} · "
        f"KServe {versions.get('kserve') or 'n/a'} · {meta['seconds']:g} s per measurement"
        + (f" · load average {meta['loadavg']:.2f} at the start." if "loadavg" in meta else "."),
        "",
        f"Model `{MODEL}`, one row per request. gRPC load from h2load (TF Serving Predict; "
        'KServe: v2 ModelInfer), REST from wrk (`{"instances": [[1.0]]}`: TF Serving\'s '
        "row format, and KServe v1's). Load generator and server share the CPUs, one server "
        "at a time. Cells: requests/s (p99 latency).",
        "",
        "| server | gRPC @8 | gRPC @32 | REST @8 | REST @32 | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key, label in SERVERS.items():
        if key not in rows:
            continue
        row = rows[key]
        cells = [_cell(row, p, c) for p in ("grpc", "rest") for c in CONNECTIONS]
        lines.append(f"| {label} | {' | '.join(cells)} | {_notes(key, row)} |")
    lines += [
        "", "## Open Inference Protocol (v2)", "",
        "The same model and load generators: gRPC `ModelInfer` with typed contents (the request "
        "KServe's probe sends), REST `POST /v2/models/half_plus_two/infer` with JSON tensors. "
        "KServe's gRPC row is its only gRPC API, v2.", "",
        "| server | gRPC v2 @8 | gRPC v2 @32 | REST v2 @8 | REST v2 @32 |",
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for key in V2_SERVERS:
        if key in rows:
            row = rows[key]
            cells = [_cell(row, v2_protocol(key, p), c) for p in V2_PROTOCOLS for c in CONNECTIONS]
            lines.append(f"| {SERVERS[key]} | {' | '.join(cells)} |")
    lines += ["", "## Targets", "", "| ratio | value | target | result |", "|---|---:|---:|---|"]
    for t in document["targets"]:
        target = Target(t["name"], t["value"], t["op"], t["threshold"])
        value = "—" if target.value is None else f"{target.value:.2f}x"
        lines.append(
            f"| {target.name} | {value} | {target.op} {target.threshold:g}x | {target.status} |"
        )
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    return "\n".join(lines) + "\n"


V2_SERVERS = ("kserve", "rollway", "rollway2")
V2_PROTOCOLS = ("grpc_v2", "rest_v2")


def v2_protocol(key: str, protocol: str) -> str:
    """Where a row keeps ``protocol``: KServe's only gRPC API is v2, kept as ``grpc``."""
    return "grpc" if (key, protocol) == ("kserve", "grpc_v2") else protocol


def v2_ratios(rows: Mapping[str, Any]) -> list[Target]:
    """rollway's v2 against KServe's v2 at 32 connections. Issue 16 sets no
    figure; the target is what a user replacing KServe expects: no slower."""
    found = []
    for protocol, name in (("grpc_v2", "gRPC"), ("rest_v2", "REST")):
        ks = load_at(rows, "kserve", v2_protocol("kserve", protocol), 32)
        for key, label in (("rollway", "1 worker"), ("rollway2", "2 workers")):
            value = _ratio(load_at(rows, key, protocol, 32), ks)
            found.append(Target(f"{label} v2 {name}@32 / KServe v2 {name}@32", value, ">=", 1.0))
    return found


def merge_rows(previous: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict[str, Any]:
    """``previous`` rows overwritten by the ``fresh`` ones, in the order of SERVERS."""
    merged = {**previous, **fresh}
    return {key: merged[key] for key in SERVERS if key in merged}


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(SERVERS)
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SERVERS]
    if unknown:
        raise ValueError(
            f"--only: unknown server(s) {', '.join(unknown)}; known: {', '.join(SERVERS)}"
        )
    return [name for name in SERVERS if name in chosen]


# ------------------------------------------------------------------ processes


def child_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", **extra)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, by PID."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def child(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env or child_env()), cwd=REPO
        )
    try:
        yield proc
    finally:
        stop(proc)


def tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> None:
    """Polls ``ready`` until it returns True; raises with the log if the process exits first."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before ready: {tail(log)}")
        try:
            if ready():
                return
        except Exception as err:  # not up yet
            last = repr(err)
        time.sleep(0.1)
    raise TimeoutError(f"not ready after {timeout:.0f}s ({last}): {tail(log)}")


def free_port() -> int:
    from functions.serving.process import free_port as pick

    return pick()


# -------------------------------------------------------------- requests, checks


def predict_request() -> bytes:
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], dtype=np.float32)))
    data: bytes = request.SerializeToString()
    return data


def constant_response() -> bytes:
    """What half_plus_two answers for [[1.0]]: y = [[2.5]]."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = MODEL
    response.model_spec.version.value = 123
    response.model_spec.signature_name = "serving_default"
    response.outputs["y"].CopyFrom(tf.make_tensor_proto(np.array([[EXPECTED]], dtype=np.float32)))
    data: bytes = response.SerializeToString()
    return data


def check_predict(port: int, request: bytes, timeout: float = 10.0) -> None:
    """One gRPC Predict with grpcio; raises unless y == [2.5]."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        reply = stub.Predict(
            predict_pb2.PredictRequest.FromString(request), timeout=timeout, wait_for_ready=True
        )
    y = tf.make_ndarray(reply.outputs["y"]).ravel().tolist() if "y" in reply.outputs else None
    if y != [EXPECTED]:
        raise RuntimeError(f"gRPC Predict answered y={y} (outputs {list(reply.outputs)})")


def predicts(port: int, request: bytes) -> bool:
    check_predict(port, request, timeout=2.0)
    return True


def check_rest(url: str) -> None:
    """One REST predict with urllib; raises unless predictions == [[2.5]]."""
    request = urllib.request.Request(
        url, data=REST_BODY, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
    if body.get("predictions") != [[EXPECTED]]:
        raise RuntimeError(f"REST predict answered {body}")


def model_infer_request() -> bytes:
    """The ModelInferRequest KServe's probe sends (x = [[1.0]], typed contents)."""
    from functions.serving.api.v2.proto.inference import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
    tensor.contents.fp32_contents.append(1.0)
    return request.SerializeToString()


def check_model_infer(port: int, request: bytes, timeout: float = 10.0) -> None:
    """One v2 gRPC ModelInfer with grpcio; raises unless y == [2.5] in raw_output_contents."""
    import grpc
    import numpy as np

    from functions.serving.api.v2.proto.inference import grpc_service_pb2 as pb

    with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
        call = channel.unary_unary(
            MODEL_INFER,
            request_serializer=None,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        reply = call(request, timeout=timeout, wait_for_ready=True)
    y = (
        np.frombuffer(reply.raw_output_contents[0], "<f4").tolist()
        if reply.raw_output_contents
        else None
    )
    if y != [EXPECTED]:
        raise RuntimeError(f"ModelInfer answered {y} (outputs {[o.name for o in reply.outputs]})")


def check_rest_v2(url: str) -> None:
    """One v2 REST infer with urllib; raises unless the one output's data == [2.5]."""
    request = urllib.request.Request(
        url, data=REST_V2_BODY, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
    data = [o.get("data") for o in body.get("outputs", [])]
    if data != [[EXPECTED]]:
        raise RuntimeError(f"v2 infer answered {body}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)


# ------------------------------------------------------------------ measuring


def measure_grpc(port: int, method: str, message: bytes, seconds: float) -> dict[str, Any]:
    from tests.bench.loadgen import h2load_grpc

    out = {}
    for connections in CONNECTIONS:
        print(f"    gRPC, {connections} connections ...", flush=True)
        load = h2load_grpc(LOOPBACK, port, method, message, connections, seconds)
        out[str(connections)] = asdict(load)
    return out


def measure_rest(url: str, seconds: float, body: bytes = REST_BODY) -> dict[str, Any]:
    from tests.bench.loadgen import wrk_post

    out = {}
    for connections in CONNECTIONS:
        print(f"    REST, {connections} connections ...", flush=True)
        out[str(connections)] = asdict(wrk_post(url, body, connections, seconds))
    return out


def checked(
    row: dict[str, Any], protocol: str, check: Callable[[], None], run: Callable[[], Any]
) -> None:
    """Measures ``protocol`` only if ``check`` (one real request) passes; errors go in the row."""
    try:
        check()
    except Exception as err:
        row.setdefault("errors", {})[protocol] = f"answer check failed: {err}"
        row[protocol] = None
        return
    try:
        row[protocol] = run()
    except Exception as err:
        row.setdefault("errors", {})[protocol] = f"load failed: {err}"
        row[protocol] = None


def bench_raw(calls: int = 3000) -> dict[str, Any]:
    import numpy as np

    from tests.bench.bench_predict import raw_call, raw_session_call

    x = np.array([[1.0]], dtype=np.float32)
    fn = raw_call(MODEL_VERSION_DIR, x, "x", calls)
    session = raw_session_call(MODEL_VERSION_DIR, x, "x", calls)
    return {
        "raw": {
            "us_per_call": fn["mean_ms"] * 1000.0,
            "p50_us": fn["p50_ms"] * 1000.0,
            "p99_us": fn["p99_ms"] * 1000.0,
            "calls_per_s": 1000.0 / fn["mean_ms"],
            "session_us_per_call": session["mean_ms"] * 1000.0,
            "session_calls_per_s": 1000.0 / session["mean_ms"],
            "calls": calls,
        }
    }


def bench_aio(work: Path, seconds: float) -> dict[str, Any]:
    response = work / "constant-response.bin"
    response.write_bytes(constant_response())
    return _bench_grpc_baseline(work, seconds, "aio_constant_server", f"--response={response}")


def bench_naive(work: Path, seconds: float) -> dict[str, Any]:
    return _bench_grpc_baseline(work, seconds, "naive_server", f"--model={MODEL_VERSION_DIR}")


def _bench_grpc_baseline(work: Path, seconds: float, module: str, argument: str) -> dict[str, Any]:
    """A baseline server of ``baselines/`` (gRPC Predict only), checked, then loaded."""
    port, request = free_port(), predict_request()
    log = work / f"{module}.log"
    argv = [sys.executable, "-m", f"tests.bench.baselines.{module}", f"--port={port}", argument]
    row: dict[str, Any] = {}
    with child(argv, log) as proc:
        wait_until(lambda: predicts(port, request), proc, log, STARTUP_TIMEOUT_S)
        checked(row, "grpc", lambda: check_predict(port, request),
                lambda: measure_grpc(port, PREDICT, request, seconds))  # fmt: skip
    return row


def bench_rollway(
    work: Path, seconds: float, workers: int, extra: Sequence[str] = (), v2: bool = False
) -> dict[str, Any]:
    """TF Serving's gRPC and REST APIs; with ``v2``, the Open Inference Protocol too."""
    from functions.serving.process import ServerProcess

    rest_port, request = free_port(), predict_request()
    flags = [
        f"--model_name={MODEL}",
        f"--model_base_path={MODEL_BASE}",
        f"--rest_api_port={rest_port}",
        *extra,
    ]
    if workers > 1:
        flags.append(f"--workers={workers}")
    server = ServerProcess(flags, work / f"rollway-{workers}-{len(extra)}.log")
    row: dict[str, Any] = {"flags": flags}
    server.start()
    try:
        try:
            server.wait_serving(timeout=STARTUP_TIMEOUT_S)
        except (RuntimeError, TimeoutError) as err:
            if workers > 1:
                row["not_available"] = str(err)[-3000:]
                return row
            raise
        url = f"http://{LOOPBACK}:{rest_port}/v1/models/{MODEL}:predict"
        checked(row, "grpc", lambda: check_predict(server.port, request),
                lambda: measure_grpc(server.port, PREDICT, request, seconds))  # fmt: skip
        checked(row, "rest", lambda: check_rest(url), lambda: measure_rest(url, seconds))
        if v2:
            infer = model_infer_request()
            checked(row, "grpc_v2", lambda: check_model_infer(server.port, infer),
                    lambda: measure_grpc(server.port, MODEL_INFER, infer, seconds))  # fmt: skip
            v2_url = f"http://{LOOPBACK}:{rest_port}/v2/models/{MODEL}/infer"
            checked(row, "rest_v2", lambda: check_rest_v2(v2_url),
                    lambda: measure_rest(v2_url, seconds, REST_V2_BODY))  # fmt: skip
    finally:
        server.stop()
    return row


def kserve_spec(tf_version: str, python: str) -> str:
    """What the KServe venv was built from; a different one makes it stale."""
    return f"kserve tensorflow-cpu=={tf_version} python{python}\n"


def base_python() -> str:
    return shutil.which("python3") or sys.executable


def ensure_kserve_venv(venv: Path, tf_version: str, log: Path) -> Path:
    """``venv``'s python, creating the venv (kserve + tensorflow-cpu) if missing or stale."""
    python = venv / "bin" / "python"
    version = subprocess.run(
        [base_python(), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    spec, stamp = kserve_spec(tf_version, version), venv / ".rollway-bench-spec"
    if python.exists() and stamp.exists() and stamp.read_text() == spec:
        return python
    print(f"  building the KServe venv in {venv} (log: {log}) ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        for argv in (
            [base_python(), "-m", "venv", str(venv)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "kserve",
                f"tensorflow-cpu=={tf_version}",
            ],
        ):
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {tail(log, 1500)}")
    stamp.write_text(spec)
    return python


def kserve_version(python: Path) -> str:
    return subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('kserve'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def kserve_env() -> dict[str, str]:
    env = child_env()
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def bench_kserve(work: Path, seconds: float, meta: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    try:
        python = ensure_kserve_venv(
            KSERVE_VENV, meta["versions"]["tensorflow"], work / "kserve-venv.log"
        )
        meta["versions"]["kserve"] = kserve_version(python)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as err:
        row["not_available"] = f"KServe venv: {err}"
        return row
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    script = str(BASELINES / "kserve_model.py")
    argv = [
        str(python), script, "serve", f"--model_dir={MODEL_VERSION_DIR}", f"--model_name={MODEL}",
        f"--http_port={http_port}", f"--grpc_port={grpc_port}",
        "--enable_latency_logging=false", "--enable_docs_url=false",
    ]  # fmt: skip
    log, request_file = work / "kserve.log", work / "model-infer-request.bin"
    row["flags"] = argv[3:]
    base = f"http://{LOOPBACK}:{http_port}/v1/models/{MODEL}"
    with child(argv, log, kserve_env()) as proc:
        wait_until(lambda: http_ok(base), proc, log, STARTUP_TIMEOUT_S)

        def check_grpc() -> None:
            done = subprocess.run(
                [str(python), script, "probe", f"--grpc_port={grpc_port}", f"--model_name={MODEL}",
                 f"--request_out={request_file}"],
                capture_output=True, text=True, timeout=120, env=kserve_env(), check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"probe exited {done.returncode}: {done.stderr[-1500:]}")
            outputs = json.loads(done.stdout.strip().splitlines()[-1])["outputs"]
            if list(outputs.values()) != [[EXPECTED]]:
                raise RuntimeError(f"ModelInfer answered {outputs}")

        def load_grpc() -> dict[str, Any]:
            return measure_grpc(grpc_port, MODEL_INFER, request_file.read_bytes(), seconds)

        checked(row, "grpc", check_grpc, load_grpc)
        url = f"{base}:predict"
        checked(row, "rest", lambda: check_rest(url), lambda: measure_rest(url, seconds))
        v2_url = f"http://{LOOPBACK}:{http_port}/v2/models/{MODEL}/infer"
        checked(row, "rest_v2", lambda: check_rest_v2(v2_url),
                lambda: measure_rest(v2_url, seconds, REST_V2_BODY))  # fmt: skip
    return row


# -------------------------------------------------------------------- output


def chart(document: Mapping[str, Any], path: Path) -> None:
    """Bars of gRPC and REST requests/s at 32 connections, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["rows"]
    keys = [k for k in SERVERS if k in rows and k != "raw"]
    labels = [SERVERS[k].replace(" (no TF)", "\n(no TF)").replace(", ", ",\n") for k in keys]

    def values(protocol: str) -> list[float]:
        return [
            float(found["requests_per_second"])
            if (found := load_at(rows, k, protocol, 32))
            else 0.0
            for k in keys
        ]

    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.38
    positions = list(range(len(keys)))
    for offset, protocol, name in ((-width / 2, "grpc", "gRPC"), (width / 2, "rest", "REST")):
        bars = ax.bar([p + offset for p in positions], values(protocol), width, label=f"{name} @32")
        ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "" for v in values(protocol)], fontsize=8)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel("requests/s")
    ax.set_title(
        f"{MODEL}, 32 connections · {document['meta']['cpus']} CPUs · {document['meta']['date']}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name, dist in (
        ("tensorflow", "tensorflow-cpu"),
        ("grpcio", "grpcio"),
        ("protobuf", "protobuf"),
    ):
        try:
            found[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["kserve"] = None
    return found


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--only", help=f"comma-separated rows to rerun, of: {','.join(SERVERS)}")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    only = parse_only(args.only)

    from tests.bench.loadgen import ensure_tools

    try:
        import matplotlib  # noqa: F401  (fail before minutes of measuring, not after)
    except ImportError:
        parser.error("matplotlib is missing: it is in the dev extras (`make venv`)")
    ensure_tools()
    meta: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": versions(),
        "tools": {
            "h2load": tool_version(["h2load", "--version"]),
            "wrk": tool_version(["wrk", "-v"]),
        },
        "seconds": args.seconds,
        "loadavg": round(os.getloadavg()[0], 2),
        "connections": list(CONNECTIONS),
        "rerun": only,
        "notes": [
            "KServe runs with its defaults (1 REST worker, 4 gRPC threads) except "
            "`--enable_latency_logging=false` (no log line per request), and its listeners "
            "moved to 127.0.0.1. The naive server and KServe call the SavedModel's signature "
            "function (the raw row's second figure); rollway runs the Session callable (its "
            "first). Each row's `loadavg` in the JSON is the machine's 1-minute load average "
            "when the row started: other load on the machine makes every figure noisy.",
        ],
    }
    out_json = args.out / "serving_compare.json"
    previous: dict[str, Any] = {}
    if set(only) != set(SERVERS) and out_json.exists():
        old = json.loads(out_json.read_text())
        previous = old.get("rows", {})
        if meta["versions"]["kserve"] is None and "kserve" not in only:
            meta["versions"]["kserve"] = old.get("meta", {}).get("versions", {}).get("kserve")
    fresh: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rollway-bench-compare-") as tmp:
        work = Path(tmp)
        runs: dict[str, Callable[[], dict[str, Any]]] = {
            "raw": bench_raw,
            "aio": lambda: bench_aio(work, args.seconds),
            "naive": lambda: bench_naive(work, args.seconds),
            "kserve": lambda: bench_kserve(work, args.seconds, meta),
            "rollway": lambda: bench_rollway(work, args.seconds, 1, v2=True),
            "rollway2": lambda: bench_rollway(work, args.seconds, 2, v2=True),
            "rollway_caller": lambda: bench_rollway(work, args.seconds, 1, CALLER_THREAD),
            "rollway2_caller": lambda: bench_rollway(work, args.seconds, 2, CALLER_THREAD),
        }
        for key in only:
            print(f"[{SERVERS[key]}]", flush=True)
            started, loadavg = time.monotonic(), os.getloadavg()[0]
            try:
                row = runs[key]()
            except Exception as err:
                row = {"not_available": f"{type(err).__name__}: {str(err)[-3000:]}"}
            row["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
            row["wall_s"] = round(time.monotonic() - started, 1)
            row["loadavg"] = round(loadavg, 2)
            fresh[key] = row
    rows = merge_rows(previous, fresh)
    document = {"meta": meta, "rows": rows, "targets": [asdict(t) for t in targets(rows)]}
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(document, indent=2) + "\n")
    table = markdown(document)
    (args.out / "serving_compare.md").write_text(table)
    chart(document, args.out / "serving_compare.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
