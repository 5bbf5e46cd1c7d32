"""Serving benchmark: cold start of ``rollway serve --assignments``, and publish to serving.

Both parts run on a real SeaweedFS (S3) and, for the second, a real tansu broker
and a real ``rollway loader`` subprocess, all on loopback.

1. Cold start, for a version of about ``--small-mib`` and one of about
   ``--large-mib`` MiB (an embedding table with a Predict warmup record in
   ``assets.extra``), staged and assigned in the store: from starting the server
   process to its gRPC health reporting SERVING, with a fresh empty cache each
   run. The server's ``cold_start`` log line (``--log_format=json``) splits it
   into fetch, load and warmup. The baseline, in the same run: a fresh Python
   process that imports TensorFlow, downloads the same objects with boto3
   (``get_object`` one after another, into a temporary directory), calls
   ``tf.saved_model.load`` and makes the warmup request's call once. A third
   process only imports TensorFlow. Best of ``--repeat``, alternating baseline
   and ours. Target: ours <= 1.3x the baseline.
2. Publish to serving, with one ``rollway serve --follow=kafka`` replica: from
   ``rollway publish --kafka-bootstrap-servers ...`` (into the landing area)
   returning, to the new version answering Predict, ``--publishes`` times; p50
   and p95. Predict is polled every 20 ms from the command's start (each
   version's output differs), so a version that answers before the command
   exits counts 0. The split starts at the ModelPublished's send time (its
   CreateTime), then the AssignmentChanged (read by this process from the
   assignments topic), the loader's logged steps, and the replica's swap (its
   ``assignment_swap`` log line). Target: p50 <= 2 s.

Results: tests/bench/results/cold_start.{json,md}. Run: ``python -m
tests.bench.bench_serving_assigned``. The baseline child is this module too
(``--baseline-child``), so keep its top-level imports light.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[2]
MIB = 2**20
BUCKET = "bench"
WIDTH = 256  # floats per table row
WARMUP_IDS = [0, 1, 2]
TARGET_RATIO = 1.3
TARGET_P50_S = 2.0
PREDICT_POLL_S = 0.02
PTS_MODEL = "pts"


def child_env() -> dict[str, str]:
    """The environment of every timed child: the same for ours and the baseline."""
    return dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")


# --------------------------------------------------------------------- models


def export_table(base: Path, version: int, mib: int) -> Path:
    """A SavedModel of about ``mib`` MiB: ids int64 [None] -> score (row sums of a
    float32 [rows, 256] table), with one Predict warmup record."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    rows = max(len(WARMUP_IDS), mib * MIB // (WIDTH * 4))
    values = np.random.default_rng(version).standard_normal((rows, WIDTH), dtype=np.float32)

    class Table(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.Variable(values)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])  # type: ignore[untyped-decorator]
        def serve(self, ids: Any) -> dict[str, Any]:
            return {"score": tf.reduce_sum(tf.gather(self.table, ids), axis=1)}

    module = Table()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    entry = prediction_log_pb2.PredictionLog()
    request = entry.predict_log.request
    request.model_spec.name = base.name
    request.inputs["ids"].CopyFrom(tf.make_tensor_proto(WARMUP_IDS, dtype=tf.int64))
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    warmup.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        writer.write(entry.SerializeToString())
    return path


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stage_and_assign(root: str, model: str, version: int, source: Path) -> None:
    """Publishes ``source`` to ``<root>/landing``, verifies and stages it in
    ``<root>/store``, and commits an assignment of exactly that version."""
    from loader import assignments
    from loader.assign import StagedVersion, policy_update
    from loader.model_config import ModelSpec
    from loader.policy import VersionPolicy
    from loader.publish import publish_version
    from loader.stage import stage_version, staged_versions
    from loader.storage import open_storage
    from loader.verify import verify_version

    landing = open_storage(f"{root}/landing")
    publish_version(source, open_storage(f"{root}/landing/{model}"), model, version, workers=8)
    report = verify_version(landing, f"{model}/{version}")
    store = open_storage(f"{root}/store")
    stage_version(landing, f"{model}/{version}", store, model, version, report)
    staged = {
        v: StagedVersion(v, store.join(f"{model}/{v}"), info.manifest_sha256)
        for v, info in staged_versions(store, model).items()
    }
    spec = ModelSpec(model, "", VersionPolicy.specific([version]), {})
    assert assignments.commit(store, model, policy_update(model, staged, spec)) is not None


# ----------------------------------------------------------- cold start: timing


def log_entries(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a --log_format=json log."""
    entries = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries


def epoch(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["time"]).timestamp()


def wait_healthy(server: Any, timeout: float = 600.0) -> float:
    """Polls gRPC health every 10 ms; returns when it first said SERVING. Reconnect
    backoff is kept short, or a channel that failed while the server imported
    TensorFlow would look again only seconds after the port opened."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [
        ("grpc.initial_reconnect_backoff_ms", 10),
        ("grpc.min_reconnect_backoff_ms", 10),
        ("grpc.max_reconnect_backoff_ms", 50),
    ]
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited before SERVING:\n{server.log()[-3000:]}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.time()
            except grpc.RpcError:
                pass
            time.sleep(0.01)
    raise TimeoutError(f"server not SERVING after {timeout}s:\n{server.log()[-3000:]}")


def run_ours(store_uri: str, model: str, work: Path) -> dict[str, Any]:
    """One cold start of ``rollway serve --assignments``, fresh cache; seconds."""
    from functions.serving.process import ServerProcess

    tag = uuid.uuid4().hex[:8]
    log_path = work / f"serve-{model}-{tag}.log"
    server = ServerProcess(
        [f"--assignments={store_uri}", f"--models={model}", f"--cache_dir={work / tag}",
         "--log_format=json"],
        log_path,
    )  # fmt: skip
    started = time.time()
    server.start()  # its environment is child_env()'s
    try:
        ready = wait_healthy(server)
    finally:
        server.stop()
    shutil.rmtree(work / tag, ignore_errors=True)
    entries = log_entries(server.log())
    report = next(e for e in entries if e.get("event") == "cold_start")
    grpc_up = next(e for e in entries if e["message"].startswith("Running gRPC ModelServer"))
    (row,) = report["versions"]
    reported = epoch(report)
    assigned_from = reported - report["seconds"]  # reading the assignments began
    steps = row["fetch_s"] + row["load_s"] + row["warmup_s"]
    return {
        "total_s": ready - started,
        "imports_and_grpc_s": epoch(grpc_up) - started,
        "before_assignments_s": assigned_from - started,
        "assigned_s": report["seconds"],
        "fetch_s": row["fetch_s"],
        "load_s": row["load_s"],
        "warmup_s": row["warmup_s"],
        "other_assigned_s": max(0.0, report["seconds"] - steps),
        "health_lag_s": ready - reported,
        "bytes_fetched": row["bytes_fetched"],
        "files_fetched": row["files_fetched"],
    }


def run_json_child(args: list[str]) -> tuple[float, dict[str, Any]]:
    """Runs a Python child that prints one JSON object last; (start time, object)."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=child_env(), capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return started, json.loads(done.stdout.strip().splitlines()[-1])


def run_baseline(version_uri: str, work: Path) -> dict[str, Any]:
    target = work / f"raw-{uuid.uuid4().hex[:8]}"
    try:
        started, marks = run_json_child(
            ["-m", "tests.bench.bench_serving_assigned", "--baseline-child", version_uri,
             str(target)]
        )  # fmt: skip
    finally:
        shutil.rmtree(target, ignore_errors=True)
    return {
        "total_s": marks["called"] - started,
        "interpreter_s": marks["main"] - started,
        "import_tf_s": marks["tf_imported"] - marks["main"],
        "client_s": marks["client"] - marks["tf_imported"],
        "download_s": marks["downloaded"] - marks["client"],
        "load_s": marks["loaded"] - marks["downloaded"],
        "call_s": marks["called"] - marks["loaded"],
        "bytes": marks["bytes"],
        "files": marks["files"],
    }


def run_import_only() -> dict[str, Any]:
    code = "import time, json; import tensorflow; print(json.dumps({'t': time.time()}))"
    started, marks = run_json_child(["-c", code])
    return {"total_s": marks["t"] - started}


def baseline_child(version_uri: str, target: Path) -> None:
    """In a fresh interpreter: the plain way to serve one version from S3. Prints
    the time of each step (seconds since the epoch) as one JSON object."""
    marks: dict[str, float] = {"main": time.time()}
    import tensorflow as tf

    marks["tf_imported"] = time.time()
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))  # AWS_* env
    marks["client"] = time.time()
    bucket, _, prefix = version_uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/"
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    total = 0
    for key in keys:
        path = target / key[len(prefix) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with path.open("wb") as out:
            while chunk := body.read(8 * MIB):
                out.write(chunk)
                total += len(chunk)
    marks["downloaded"] = time.time()
    model = tf.saved_model.load(str(target))
    marks["loaded"] = time.time()
    model.signatures["serving_default"](ids=tf.constant(WARMUP_IDS, tf.int64))
    marks["called"] = time.time()
    print(json.dumps({**marks, "bytes": total, "files": len(keys)}))


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {**min(runs, key=lambda r: float(r["total_s"])), "runs_s": [r["total_s"] for r in runs]}


def measure_cold_start(
    sizes: dict[str, int], repeat: int, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows per model size, and the TensorFlow-import-only process (run between
    the others, so that all see the same machine)."""
    root = f"s3://{BUCKET}/cold-{uuid.uuid4().hex[:8]}"
    store_uri = f"{root}/store"
    rows = []
    imports: list[dict[str, Any]] = []
    for name, mib in sizes.items():
        source = export_table(work / "src" / name, 1, mib)
        size = directory_bytes(source)
        stage_and_assign(root, name, 1, source)
        ours: list[dict[str, Any]] = []
        base: list[dict[str, Any]] = []
        for _ in range(repeat):
            imports.append(run_import_only())
            base.append(run_baseline(f"{store_uri}/{name}/1", work))
            ours.append(run_ours(store_uri, name, work))
        best_ours, best_base = fastest(ours), fastest(base)
        ratio = best_ours["total_s"] / best_base["total_s"]
        rows.append({
            "model": name, "bytes": size, "ours": best_ours, "baseline": best_base,
            "ratio": round(ratio, 3), "target": TARGET_RATIO, "pass": ratio <= TARGET_RATIO,
            "overhead_s": round(best_ours["total_s"] - best_base["total_s"], 4),
        })  # fmt: skip
        print(f"cold start {name}: ours {best_ours['total_s']:.2f}s, "
              f"baseline {best_base['total_s']:.2f}s", flush=True)  # fmt: skip
    return rows, fastest(imports)


# ---------------------------------------------------------- publish to serving


class TopicClock:
    """Reads the publish and assignments topics on a thread: when each version's
    ModelPublished was sent (the producer's CreateTime) and when an AssignmentChanged
    first named it (the time this process read it)."""

    def __init__(self, bootstrap: str, publish_topic: str, assignments_topic: str) -> None:
        self.bootstrap = bootstrap
        self.topics = (publish_topic, assignments_topic)
        self.sent: dict[int, float] = {}
        self.assigned: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from kafka import KafkaConsumer

        from loader.events import decode_data
        from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
        from loader.schemas.rollway.v1.events_pb2 import ModelPublished

        consumer = KafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=10,
        )  # fmt: skip
        try:
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=50).values():
                    now = time.time()
                    for record in records:
                        if record.topic == self.topics[0]:
                            published = decode_data(record.value, ModelPublished())
                            self.sent.setdefault(int(published.version), record.timestamp / 1e3)
                            continue
                        change = decode_data(record.value, AssignmentChanged())
                        for assigned in change.versions:
                            self.assigned.setdefault(int(assigned.version), now)
        finally:
            consumer.close()

    def wait(self, seen: dict[int, float], version: int, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while version not in seen:
            if time.monotonic() > deadline:
                raise TimeoutError(f"version {version} never showed up on {self.topics}")
            time.sleep(0.01)
        return seen[version]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Predictor:
    """Predict on model ``pts`` with x = [[1.0]]; y = 1 + version."""

    def __init__(self, address: str) -> None:
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self._grpc, self._tf = grpc, tf
        self.channel = grpc.insecure_channel(address)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = PTS_MODEL
        self.request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))

    def answer(self) -> float | None:
        try:
            response = self.stub.Predict(self.request, timeout=5)
        except self._grpc.RpcError:
            return None
        return float(self._tf.make_ndarray(response.outputs["y"]).ravel()[0])

    def wait_for(
        self, expected: float, timeout: float = 120.0, give_up: Callable[[], bool] = bool
    ) -> float:
        """Polls every 20 ms; the time the answer was first ``expected``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not give_up():
            y = self.answer()
            if y is not None and abs(y - expected) < 1e-4:
                return time.time()
            time.sleep(PREDICT_POLL_S)
        raise TimeoutError(f"Predict never answered {expected}")

    def close(self) -> None:
        self.channel.close()


def wait_loader_consuming(stack: Any, loader: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not re.search(r"Updated partition assignment: \[\w", stack.loader_log()):
        if loader.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the loader did not start:\n{stack.loader_log()[-3000:]}")
        time.sleep(0.05)


def publish_command(stack: Any, version: int) -> list[str]:
    """``rollway publish`` as ``tests.loader.harness.Stack.publish`` runs it."""
    return [
        sys.executable, "-m", "functions.cli", "publish", "--no-check", "--version", str(version),
        "--kafka-bootstrap-servers", stack.kafka.bootstrap, "--topic", stack.topics.publish,
        str(stack.source(PTS_MODEL, version)), f"{stack.landing}/{PTS_MODEL}",
    ]  # fmt: skip


def publish_and_watch(stack: Any, predictor: Predictor, version: int) -> dict[str, float]:
    """Runs ``rollway publish`` while polling Predict; when it started, returned, and
    when the version first answered (which may come before the command returns)."""
    started = time.time()
    process = subprocess.Popen(
        publish_command(stack, version), cwd=REPO, env=stack.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    returned, failed = 0.0, []

    def wait_exit() -> None:
        nonlocal returned
        _, err = process.communicate(timeout=120)
        returned = time.time()
        if process.returncode != 0:
            failed.append(f"rollway publish exited {process.returncode}: {err.decode()}")

    waiter = threading.Thread(target=wait_exit, name="publish-exit", daemon=True)
    waiter.start()
    answering = predictor.wait_for(1.0 + version, give_up=lambda: bool(failed))
    waiter.join(130)
    if failed or not returned:
        raise RuntimeError(failed[0] if failed else f"rollway publish {version} did not exit")
    return {"version": version, "started": started, "returned": returned, "answering": answering}


def measure_publish_to_serving(weed: Any, publishes: int, work: Path) -> dict[str, Any]:
    from functions.devstack.tansu import TansuBroker
    from functions.serving.process import ServerProcess
    from tests.loader.harness import Stack, Topics, subprocess_env
    from tests.models import export_affine

    for version in range(1, publishes + 2):  # Stack.source(): <workdir>/src/<model>/<version>
        export_affine(work / "src" / PTS_MODEL, version, scale=1.0, offset=float(version))
    stops: list[Callable[[], Any]] = []
    try:
        broker = TansuBroker(work / "tansu.log")
        stops.append(broker.stop)
        stack = Stack(
            root=f"s3://{BUCKET}/pts-{uuid.uuid4().hex[:8]}", kafka=broker,
            topics=Topics.fresh(broker), env=subprocess_env(weed.env()), workdir=work,
        )  # fmt: skip
        stops.append(stack.stop_loaders)
        loader = stack.start_loader()
        clock = TopicClock(broker.bootstrap, stack.topics.publish, stack.topics.assignments)
        stops.append(clock.close)
        wait_loader_consuming(stack, loader)
        stack.publish(PTS_MODEL, 1)
        clock.wait(clock.assigned, 1)
        server = ServerProcess(
            [f"--assignments={stack.store_uri}", f"--models={PTS_MODEL}", "--follow=kafka",
             f"--kafka_bootstrap_servers={broker.bootstrap}",
             f"--assignments_topic={stack.topics.assignments}", "--log_format=json",
             f"--cache_dir={work / 'pts-cache'}"],
            work / "serve-pts.log",
        ).start()  # fmt: skip
        stops.append(server.stop)
        server.wait_serving()
        predictor = Predictor(server.address)
        stops.append(predictor.close)
        predictor.wait_for(2.0)
        samples = []
        for version in range(2, publishes + 2):
            sample = publish_and_watch(stack, predictor, version)
            sample["sent"] = clock.wait(clock.sent, version)
            sample["assigned"] = clock.wait(clock.assigned, version)
            samples.append(sample)
        server.stop()
        return summarize_publishes(
            samples, log_entries(server.log()), log_entries(stack.loader_log())
        )
    finally:
        while stops:
            stops.pop()()


def summarize_publishes(
    samples: list[dict[str, float]],
    server_log: list[dict[str, Any]],
    loader_log: list[dict[str, Any]],
) -> dict[str, Any]:
    from tests.bench.bench_predict import percentile

    swaps = {
        added: e for e in server_log if e.get("event") == "assignment_swap" for added in e["added"]
    }
    outcomes = {
        e["version"]: e for e in loader_log
        if e.get("outcome") == "staged" and e.get("model") == PTS_MODEL
    }  # fmt: skip
    rows = []
    for s in samples:
        swap, outcome = swaps.get(int(s["version"])), outcomes.get(int(s["version"]), {})
        row = {
            "version": int(s["version"]),
            # the target: a version already answering when the command returns counts 0
            "total_s": max(0.0, s["answering"] - s["returned"]),
            "answering_before_return_s": max(0.0, s["returned"] - s["answering"]),
            "command_s": s["returned"] - s["started"],
            "command_to_event_s": s["sent"] - s["started"],
            "event_to_return_s": s["returned"] - s["sent"],
            "event_to_answering_s": s["answering"] - s["sent"],
            "event_to_assigned_s": s["assigned"] - s["sent"],
            "loader_verify_s": outcome.get("verify_s", 0.0),
            "loader_stage_s": outcome.get("stage_s", 0.0),
            "loader_assign_s": outcome.get("assign_s", 0.0),
            "assigned_to_answering_s": s["answering"] - s["assigned"],
        }
        if swap is not None:  # logged once the old version is unloaded
            swap_started = epoch(swap) - swap["seconds"]
            row["assigned_to_swap_start_s"] = swap_started - s["assigned"]
            row["swap_start_to_answering_s"] = s["answering"] - swap_started
            row["swap_s"] = swap["seconds"]
        rows.append({k: round(v, 4) for k, v in row.items()})

    def stat(key: str) -> dict[str, float]:
        values = [r[key] for r in rows if key in r]
        return {
            "p50_s": percentile(values, 50), "p95_s": percentile(values, 95),
            "mean_s": statistics.fmean(values), "max_s": max(values),
        }  # fmt: skip

    summary = {key: stat(key) for key in rows[0] if key != "version"}
    p50 = summary["total_s"]["p50_s"]
    return {
        "publishes": len(rows), "rows": rows, "summary": summary,
        "target_p50_s": TARGET_P50_S, "pass": p50 <= TARGET_P50_S,
    }  # fmt: skip


# -------------------------------------------------------------------- report


def write_report(
    rows: list[dict[str, Any]], imports: dict[str, Any], pts: dict[str, Any], args: Any
) -> None:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    lines = [
        "# Serving benchmark: cold start and publish to serving", "",
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} · {os.cpu_count()} CPUs · S3 = SeaweedFS, "
        "Kafka = tansu (memory), both on loopback · best of "
        f"{args.repeat}, fresh empty cache each run.", "",
        "## Cold start: process start to gRPC health SERVING", "",
        "Ours: `rollway serve --assignments=s3://... --models=M` (fetch verified into the "
        "cache, load, warmup with the version's one Predict record). Baseline: a fresh "
        "`python` that imports TensorFlow, downloads the same objects with boto3 "
        "(`get_object` one at a time), `tf.saved_model.load`s them and makes the warmup "
        f"call once. A process that only imports TensorFlow takes {ms(imports['total_s'])}.",
        "",
        "| model | size | ours | baseline | ratio | target | result | "
        "ours - baseline |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['bytes'] / MIB:.1f} MiB | {r['ours']['total_s']:.2f} s | "
            f"{r['baseline']['total_s']:.2f} s | {r['ratio']:.2f} | ≤ {r['target']:.1f} | "
            f"{'PASS' if r['pass'] else 'FAIL'} | {ms(r['overhead_s'])} |"
        )
    lines += [
        "", "Where the time goes (the fastest run of each):", "",
        "| model | ours: imports + gRPC up | read assignments etc. | fetch + verify | load | "
        "warmup | health seen | baseline: interpreter + TF import | boto3 client | download | "
        "load | call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in rows:
        o, b = r["ours"], r["baseline"]
        lines.append(
            f"| {r['model']} | {ms(o['before_assignments_s'])} | {ms(o['other_assigned_s'])} | "
            f"{ms(o['fetch_s'])} | {ms(o['load_s'])} | {ms(o['warmup_s'])} | "
            f"{ms(o['health_lag_s'])} | {ms(b['interpreter_s'] + b['import_tf_s'])} | "
            f"{ms(b['client_s'])} | {ms(b['download_s'])} | {ms(b['load_s'])} | "
            f"{ms(b['call_s'])} |"
        )
    s = pts["summary"]
    lines += [
        "", "## Publish to serving (follow mode)", "",
        f"{pts['publishes']} versions of a tiny affine model (y = x + version), one at a time: "
        "`rollway publish --no-check --kafka-bootstrap-servers ...` into the landing area, a "
        "`rollway loader` subprocess, one `rollway serve --assignments ... --follow=kafka` "
        "replica. Predict is polled every 20 ms from the moment the command starts; the "
        "target counts from the command returning (0 when the new version already answers "
        "then). The split starts at the ModelPublished event's send time (its CreateTime).",
        "",
        "| measurement | p50 | p95 | max | target | result |",
        "|---|---:|---:|---:|---:|---|",
        f"| publish returned → new version answers | {ms(s['total_s']['p50_s'])} | "
        f"{ms(s['total_s']['p95_s'])} | {ms(s['total_s']['max_s'])} | "
        f"p50 ≤ {pts['target_p50_s']:.0f} s | {'PASS' if pts['pass'] else 'FAIL'} |",
    ]  # fmt: skip
    parts = [
        ("answering_before_return_s", "new version answering before the command returned, by"),
        ("command_s", "the publish command, start to exit"),
        ("command_to_event_s", "… start → ModelPublished sent (interpreter, imports, upload)"),
        ("event_to_return_s", "… ModelPublished sent → exit"),
        ("event_to_answering_s", "ModelPublished sent → new version answers"),
        ("event_to_assigned_s", "… → AssignmentChanged on the topic (the loader)"),
        ("loader_verify_s", "… … of which the loader verifies"),
        ("loader_stage_s", "… … of which the loader stages (copies)"),
        ("loader_assign_s", "… … of which the loader assigns"),
        ("assigned_to_answering_s", "… AssignmentChanged → new version answers"),
        ("assigned_to_swap_start_s", "… … of which the replica receives it (Kafka fetch)"),
        ("swap_start_to_answering_s", "… … of which the swap fetches and loads it"),
        ("swap_s", "the replica's whole swap (until the old version is unloaded)"),
    ]
    for key, label in parts:
        if key in s:
            lines.append(
                f"| {label} | {ms(s[key]['p50_s'])} | {ms(s[key]['p95_s'])} | "
                f"{ms(s[key]['max_s'])} | | |"
            )
    early = sum(1 for r in pts["rows"] if r["answering_before_return_s"] > 0)
    lines += [
        "",
        f"The new version answered before `rollway publish` exited in {early} of "
        f"{pts['publishes']} publishes: after sending the event the command still takes "
        f"{ms(s['event_to_return_s']['p50_s'])} (p50) to exit, longer than the "
        f"{ms(s['event_to_answering_s']['p50_s'])} (p50) from the event to the new version "
        "answering.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"cold_start": rows, "import_tensorflow": imports, "publish_to_serving": pts}
    (args.out / "cold_start.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "cold_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--small-mib", type=int, default=10)
    parser.add_argument("--large-mib", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--baseline-child", nargs=2, metavar=("VERSION_URI", "DIR"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(args.baseline_child[0], Path(args.baseline_child[1]))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from functions.devstack.seaweedfs import SeaweedFS

    with tempfile.TemporaryDirectory(prefix="rollway-bench-serving-") as tmp:
        work = Path(tmp)
        with SeaweedFS(work / "weed") as weed:
            weed.create_bucket(BUCKET)
            os.environ.update(weed.env())
            sizes = {f"table{args.small_mib}": args.small_mib,
                     f"table{args.large_mib}": args.large_mib}  # fmt: skip
            rows, imports = measure_cold_start(sizes, args.repeat, work)
            pts = measure_publish_to_serving(weed, args.publishes, work)
    write_report(rows, imports, pts, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
