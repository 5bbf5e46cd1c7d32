"""``make demo``: the whole pipeline on 127.0.0.1, from publish to a rollout under load.

Steps (each bounded in time; any failure exits 1 naming the step and the log):

1. start tansu (Kafka) with rollway's topics, and the store: SeaweedFS (S3) with
   rollway's bucket, or with ``--storage hdfs`` (``make demo DEMO_STORAGE=hdfs``,
   ``ROLLWAY_DEMO_STORAGE=hdfs``) a NameNode and a DataNode; which URIs each
   part then uses is in ``functions.devstack.stack``;
2. start ``rollway loader``;
3. export demo SavedModel v1 (y = 3*x0 - 2*x1 + 0.5) and publish it with
   ``rollway publish`` (files, manifest last, then the ModelPublished event);
4. wait for generation 1 on the assignments topic, start a ``rollway serve``
   replica following it, wait for gRPC health SERVING, Predict through the TF
   Serving API;
5. with client threads predicting continuously, publish v2 (y = 4*x0 - 2*x1 +
   1.5), show generation 2 arriving and predictions changing, until version 1 is
   unloaded; every request must succeed (exit 1 otherwise);
6. stop every process by PID and print a summary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rich.console import Console
from rich.table import Table

from functions.devstack.children import StackError, interrupt_on_signals
from functions.devstack.stack import (
    LocalStack,
    add_storage_flag,
    check_storage_flag,
)
from functions.devstack.watch import AssignmentWatcher

MODEL = "demo"
WEIGHTS, BIAS = ((3.0,), (-2.0,)), 0.5  # v1
WEIGHTS_V2, BIAS_V2 = ((4.0,), (-2.0,)), 1.5
X = ((1.0, 2.0), (0.5, -1.0))  # the demo input: v1 gives (-0.5, 4), v2 (1.5, 5.5)
TIMEOUT = 90.0  # bound on each wait
STEPS = 6


def expected(weights: Sequence[Sequence[float]], bias: float) -> tuple[float, ...]:
    return tuple(sum(w[0] * x for w, x in zip(weights, row, strict=True)) + bias for row in X)


def export_demo_model(
    base: Path,
    version: int = 1,
    weights: Sequence[Sequence[float]] = WEIGHTS,
    bias: float = BIAS,
) -> Path:
    """Writes the linear SavedModel y = x @ weights + bias (input ``x`` [None, 2],
    output ``y``) to ``base/<version>`` and returns that path."""
    import tensorflow as tf

    class Linear(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weights, dtype=tf.float32)
            self.b = tf.Variable(bias, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])  # type: ignore[untyped-decorator]
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.matmul(x, self.w) + self.b}

    model = Linear()
    path = base / str(version)
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return path


class DemoFailed(Exception):
    """A step failed; the message says what to look at."""


@dataclass
class Steps:
    """A numbered step list on the console, each closed with ✓ and its duration."""

    console: Console
    done: list[tuple[str, float]] = field(default_factory=list)

    def say(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False)

    def info(self, text: str) -> None:
        self.say(f"      {text}")

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        number = len(self.done) + 1
        self.say(f"[{number}/{STEPS}] {title}", "bold")
        started = time.monotonic()
        try:
            with self.console.status(title):
                yield
        except BaseException:
            self.say(f"      ✗ failed after {time.monotonic() - started:.1f} s", "bold red")
            raise
        seconds = time.monotonic() - started
        self.done.append((title, seconds))
        self.say(f"      ✓ {seconds:.1f} s", "green")


def predict_request() -> Any:
    """A PredictRequest for the demo model with input ``x`` = X."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(X, dtype=tf.float32))
    return request


class PredictClients:
    """Threads sending Predict back to back, each on its own channel. An answer
    counts as failed if the RPC fails or y is not what its version computes."""

    def __init__(self, address: str, values: Mapping[int, Sequence[float]], threads: int) -> None:
        self.address, self.values, self.request = address, values, predict_request()
        self.requests = self.failures = 0
        self.by_version: dict[int, int] = {}
        self.errors: list[str] = []
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            while not self._stop.is_set():
                error, version = "", 0
                try:
                    response = stub.Predict(self.request, timeout=10)
                    version = response.model_spec.version.value
                    ys = list(response.outputs["y"].float_val)
                    if not _close(ys, self.values.get(version, ())):
                        error = f"version {version} answered y={ys}"
                except grpc.RpcError as err:
                    error = f"{err.code().name}: {err.details()}"
                with self._lock:
                    self.requests += 1
                    if error:
                        self.failures += 1
                        self.errors.append(error)
                    else:
                        self.by_version[version] = self.by_version.get(version, 0) + 1
                self._stop.wait(0.002)  # leave the replica CPU to load v2 on 2 cores

    def wait_for(self, check: Callable[[PredictClients], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check(self):
            if time.monotonic() > deadline:
                raise DemoFailed(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.05)

    def __enter__(self) -> PredictClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def wait_unloaded(address: str, version: int, timeout: float) -> None:
    """Until GetModelStatus reports ``version`` of the demo model END."""
    import grpc
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    end = get_model_status_pb2.ModelVersionStatus.END
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        while time.monotonic() < deadline:
            statuses = stub.GetModelStatus(request, timeout=5).model_version_status
            if any(s.version == version and s.state == end for s in statuses):
                return
            time.sleep(0.1)
    raise DemoFailed(f"version {version} was not unloaded within {timeout:g}s")


def publish(stack: LocalStack, steps: Steps, source: Path, version: int) -> None:
    """``rollway publish`` (its main, in this process: TensorFlow is loaded already)."""
    from functions import publish_cmd

    argv = [str(source), f"{stack.landing}/{MODEL}", "--version", str(version),
            "--kafka-bootstrap-servers", stack.bootstrap, "--progress", "never"]  # fmt: skip
    steps.info(f"$ rollway publish {' '.join(argv)}")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = publish_cmd.main(argv)
    for line in err.getvalue().splitlines():
        steps.info(f"  {line}")
    if code != 0:
        raise DemoFailed(f"rollway publish exited with {code}")


def show_prediction(steps: Steps, address: str) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(), timeout=10)
    spec, ys = response.model_spec, list(response.outputs["y"].float_val)
    steps.info(f"Predict via tensorflow_serving PredictionService at {address}:")
    steps.info(f"  model_spec: name={spec.name} version={spec.version.value} "
               f"signature={spec.signature_name}")  # fmt: skip
    for row, y in zip(X, ys, strict=True):
        steps.info(f"  x={list(row)} -> y={y:g}")
    if spec.version.value != 1 or not _close(ys, expected(WEIGHTS, BIAS)):
        raise DemoFailed(f"expected version 1 and y={expected(WEIGHTS, BIAS)}")


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-4 for x, y in zip(a, b, strict=True))


def swap_seconds(log: Path) -> float | None:
    """The replica's own measure of its swap to generation 2 (its JSON log)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"assignment_swap"' in line:
            entry = json.loads(line)
            if entry.get("generation") == 2:
                return float(entry["seconds"])
    return None


def rollout(stack: LocalStack, steps: Steps, watcher: AssignmentWatcher, v2: Path) -> int:
    """Step 5; returns the number of requests sent during it."""
    address = f"127.0.0.1:{stack.grpc_port}"
    v1_y, v2_y = expected(WEIGHTS, BIAS), expected(WEIGHTS_V2, BIAS_V2)
    with PredictClients(address, {1: v1_y, 2: v2_y}, threads=2) as clients:
        clients.wait_for(lambda c: c.requests >= 20, TIMEOUT, "the first client answers")
        steps.info(f"2 client threads predicting continuously ({clients.requests} answers so far)")
        started = time.monotonic()
        publish(stack, steps, v2, 2)
        event = watcher.wait_for(MODEL, 2, TIMEOUT)
        steps.info(f"AssignmentChanged on topic model-assignments: model={event.model} "
                   f"generation={event.generation} versions={[v.version for v in event.versions]} "
                   f"labels={dict(event.labels)}")  # fmt: skip
        clients.wait_for(lambda c: 2 in c.by_version, TIMEOUT, "a prediction from version 2")
        steps.info(f"predictions changed: version 1 y={list(v1_y)} -> version 2 y={list(v2_y)} "
                   f"({time.monotonic() - started:.1f} s after publishing v2 began)")  # fmt: skip
        wait_unloaded(address, 1, TIMEOUT)
        steps.info("version 1 unloaded (GetModelStatus: END); the replica serves only v2")
        after = clients.requests + 20
        clients.wait_for(lambda c: c.requests >= after, TIMEOUT, "answers after the rollout")
    seconds = swap_seconds(stack.workdir / "serve.log")
    if seconds is not None:
        steps.info(f"the replica swapped generations in {seconds:.2f} s (load v2, move, unload v1)")
    steps.info(f"{clients.requests} requests during the rollout, by version: "
               f"{dict(sorted(clients.by_version.items()))}")  # fmt: skip
    steps.info(f"{clients.failures} failed requests")
    if clients.failures:
        for error in clients.errors[:5]:
            steps.info(f"  {error}")
        raise DemoFailed(f"{clients.failures} requests failed during the rollout")
    return clients.requests


def run(stack: LocalStack, steps: Steps) -> int:
    store = "HDFS (NameNode, DataNode)" if stack.storage == "hdfs" else "S3 (SeaweedFS)"
    with steps.step(f"Start Kafka (tansu) and {store}"):
        stack.start_infra()
        assert stack.kafka is not None
        stack.export_env()  # as a user would export them, for publish
        steps.info(f"tansu      {stack.bootstrap}  (pid {stack.kafka.process.pid})")
        pids = stack.pids()
        if stack.s3 is not None:
            steps.info(f"SeaweedFS  S3 {stack.s3.endpoint_url}  (pid {pids['weed'][0]})")
        if stack.hdfs is not None:
            steps.info(f"NameNode   {stack.hdfs.hdfs_uri('')}, WebHDFS http://127.0.0.1:"
                       f"{stack.hdfs.http_port}  (pid {pids['namenode'][0]})")  # fmt: skip
            steps.info(f"DataNode   one, Hadoop 2.7.3  (pid {pids['datanode'][0]})")
        steps.info("topics     model-publish, model-assignments, model-publish-dlq")
        where = "folders   " if stack.hdfs is not None else "bucket     rollway:"
        steps.info(f"{where} {stack.landing}/ (published), {stack.store}/ (staged)")
    with steps.step("Start the loader"):
        stack.start_loader()
        steps.info(f"rollway loader (pid {stack.pids()['loader'][0]}): "
                   f"{' and '.join(stack.source_roots())} -> {stack.store}")  # fmt: skip
        if stack.serving_store != stack.store:
            steps.info(f"the replica will read the store as {stack.serving_store} (no JVM)")
        steps.info("the serving replica starts in step 4, once a version is assigned")
    watcher = AssignmentWatcher(stack.bootstrap)
    try:
        with steps.step("Export and publish v1"):
            steps.info("demo SavedModel v1: y = 3*x0 - 2*x1 + 0.5 (input x [None, 2], output y)")
            models = stack.workdir / "export"
            v1 = export_demo_model(models, 1)
            v2 = export_demo_model(models / "next", 2, WEIGHTS_V2, BIAS_V2)
            publish(stack, steps, v1, 1)
        with steps.step("Assign v1, start a replica, Predict over gRPC"):
            event = watcher.wait_for(MODEL, 1, TIMEOUT)
            steps.info(f"AssignmentChanged: model={event.model} generation={event.generation} "
                       f"versions={[v.version for v in event.versions]}")  # fmt: skip
            stack.start_serving(TIMEOUT)
            steps.info(f"rollway serve --follow=kafka (pid {stack.pids()['serve'][-1]}): "
                       f"gRPC 127.0.0.1:{stack.grpc_port}, REST 127.0.0.1:{stack.rest_port}; "
                       "health SERVING")  # fmt: skip
            show_prediction(steps, f"127.0.0.1:{stack.grpc_port}")
        with steps.step("Roll out v2 under continuous Predict load"):
            steps.info("v2: y = 4*x0 - 2*x1 + 1.5")
            requests = rollout(stack, steps, watcher, v2)
    finally:
        watcher.close()
    with steps.step("Stop everything by PID"):
        pids = stack.pids()
        for stopped in stack.stop():
            steps.info(f"{stopped.name:<8} pid {stopped.pid:<8} exit code {stopped.exit_code}")
        alive = [p for ps in pids.values() for p in ps if _alive(p)]
        if alive:
            raise DemoFailed(f"processes still running: {alive}")
    return requests


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def summary(steps: Steps, requests: int) -> None:
    table = Table(title="rollway demo: summary", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for title, seconds in steps.done:
        table.add_row(f"✓ {title}", f"{seconds:.1f}")
    table.add_row("total", f"{sum(s for _, s in steps.done):.1f}")
    steps.console.print(table)
    steps.say(f"demo OK: v1 served, v2 rolled out under load, {requests} requests, "
              "0 failed requests", "bold green")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    add_storage_flag(parser)
    args = parser.parse_args(argv)
    check_storage_flag(parser, args)
    console = Console(highlight=False, soft_wrap=True)
    steps = Steps(console)
    workdir = Path(tempfile.mkdtemp(prefix="rollway-demo-"))
    interrupt_on_signals()
    steps.say(f"rollway demo: the whole pipeline on 127.0.0.1 with {args.storage} storage "
              f"(logs in {workdir})", "bold")  # fmt: skip
    try:
        with LocalStack(workdir, args.storage) as stack:
            requests = run(stack, steps)
    except KeyboardInterrupt:
        steps.say(f"interrupted: every process stopped; logs kept in {workdir}", "bold red")
        return 130
    except Exception as err:  # any failure: say what, stop everything, keep the logs
        known = isinstance(err, (DemoFailed, StackError, TimeoutError))
        steps.say(f"demo FAILED: {err if known else repr(err)}", "bold red")
        steps.say(f"every process stopped; logs kept in {workdir}", "red")
        return 1
    summary(steps, requests)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
