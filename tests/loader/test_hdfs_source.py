"""The loader with versions published to HDFS, end to end with the real parts: a
NameNode and a DataNode (Hadoop 2.7.3), SeaweedFS, tansu, ``rollway publish``
and ``rollway loader`` as subprocesses, and a ``rollway serve --assignments``
replica answering Predict from the serving store the loader staged into.

The three cases cover every scheme on each side at least once:

- published to ``hdfs://`` (libhdfs), staged into S3, served from ``s3://``;
- published to ``webhdfs://``, staged through ``hdfs://``, served from
  ``hdfs://`` (the TF Serving ``--model_base_path=hdfs://`` setup);
- published to, staged into and served from ``webhdfs://``, with no JVM in any
  rollway process (their environments lack JAVA_HOME, CLASSPATH and
  ARROW_LIBHDFS_DIR).

Each case starts its own loader (the serving store is a loader flag); topics and
roots are fresh per case. A fourth shows that a loader that loaded libhdfs still
stops cleanly on SIGTERM (loader/storage/hdfs.py gives the JVM -Xrs, even when
the user's LIBHDFS_OPTS lacks it).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.devstack.seaweedfs import SeaweedFS
from loader.storage import open_storage
from loader.verify import Verdict, verify_version
from tests.conftest import TEST_BUCKET, RemoteRoot, ServerFactory
from tests.kafka_broker import TansuBroker
from tests.loader.harness import Stack, Topics, Watcher, assignments_in, subprocess_env

pytestmark = pytest.mark.integration

# What a process needs to open hdfs:// URIs; a JVM-free process has none of them.
HDFS_CLIENT_VARS = ("JAVA_HOME", "ARROW_LIBHDFS_DIR", "CLASSPATH", "LIBHDFS_OPTS", "HADOOP_HOME")


@dataclass
class HdfsStack(Stack):
    """A loader whose landing area and serving store are two independent roots."""

    landing_root: str = ""
    store_root: str = ""

    @property
    def landing(self) -> str:
        return self.landing_root

    @property
    def store_uri(self) -> str:
        return self.store_root


def without_jvm(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in HDFS_CLIENT_VARS}


@pytest.fixture
def make_stack() -> Iterator[list[HdfsStack]]:
    made: list[HdfsStack] = []
    yield made
    for stack in made:
        stack.stop_loaders()


def start(
    made: list[HdfsStack],
    kafka: TansuBroker,
    workdir: Path,
    landing: str,
    store: str,
    env: dict[str, str],
) -> HdfsStack:
    stack = HdfsStack(
        root="", kafka=kafka, topics=Topics.fresh(kafka), env=env, workdir=workdir,
        landing_root=landing, store_root=store,
    )  # fmt: skip
    made.append(stack)
    stack.start_loader()
    return stack


def wait_assigned(stack: HdfsStack, model: str) -> list[int]:
    """The versions of ``model``'s first AssignmentChanged, after checking it
    points into the serving store."""
    watcher = Watcher(stack.kafka, stack.topics.assignments)
    try:
        try:
            seen = watcher.wait_for(lambda r: any(a.model == model for a in assignments_in(r)))
        except AssertionError as err:
            raise AssertionError(f"{err}\nloader log:\n{stack.loader_log()[-4000:]}") from None
    finally:
        watcher.close()
    first = next(a for a in assignments_in(seen) if a.model == model)
    assert first.generation == 1
    for version in first.versions:
        assert version.version_uri == f"{stack.store_uri}/{model}/{version.version}"
    return [v.version for v in first.versions]


def check_staged(store_uri: str, model: str, version: int) -> None:
    store = open_storage(store_uri)
    try:
        report = verify_version(store, f"{model}/{version}")
    finally:
        store.close()
    assert report.verdict is Verdict.COMPLETE, report.problems


def jvm_loaded(pid: int) -> bool:
    """Whether process ``pid`` has mapped libjvm (libhdfs starts a JVM inside it)."""
    return "libjvm" in Path(f"/proc/{pid}/maps").read_text()


def predict_half_plus_two(serve: ServerFactory, assignments_uri: str, tmp: Path) -> int:
    """Starts a replica of ``assignments_uri``, checks its answer; returns its PID."""
    server = serve([f"--assignments={assignments_uri}", f"--cache_dir={tmp / 'cache'}"])
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32))
    with grpc.insecure_channel(server.address) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=10)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]  # half plus two
    assert response.model_spec.version.value == 1
    assert server.proc is not None
    return server.proc.pid


def fresh(base: RemoteRoot) -> str:
    return base.fresh().uri


def test_hdfs_source_is_staged_into_s3_and_served_from_s3(
    make_stack: list[HdfsStack],
    kafka: TansuBroker,
    hdfs_base: RemoteRoot,
    seaweedfs: SeaweedFS,
    s3_env: dict[str, str],
    serve: ServerFactory,
    tmp_path: Path,
) -> None:
    env = subprocess_env({**s3_env, **hdfs_base.env})
    landing = f"{fresh(hdfs_base)}/landing"
    store = f"s3://{TEST_BUCKET}/hdfs-src-{uuid.uuid4().hex[:8]}/store"
    stack = start(make_stack, kafka, tmp_path, landing, store, env)
    published = stack.publish("hp", 1)
    assert f"{landing}/hp/1" in published.stderr
    assert wait_assigned(stack, "hp") == [1]
    check_staged(store, "hp", 1)
    predict_half_plus_two(serve, store, tmp_path)


def test_webhdfs_source_is_staged_into_hdfs_and_served_from_hdfs(
    make_stack: list[HdfsStack],
    kafka: TansuBroker,
    hdfs_base: RemoteRoot,
    webhdfs_base: RemoteRoot,
    serve: ServerFactory,
    tmp_path: Path,
) -> None:
    """The loader holds the JVM (the store is hdfs://); publishing needs none."""
    suffix = f"t-{uuid.uuid4().hex[:12]}"
    landing = f"{webhdfs_base.uri}/{suffix}/landing"
    store = f"{hdfs_base.uri}/{suffix}/store"
    stack = start(make_stack, kafka, tmp_path, landing, store,
                  subprocess_env(hdfs_base.env))  # fmt: skip
    stack.env = without_jvm(stack.env)  # for rollway publish, to webhdfs://
    stack.publish("hp", 1)
    assert wait_assigned(stack, "hp") == [1]
    check_staged(store, "hp", 1)
    replica = predict_half_plus_two(serve, store, tmp_path)  # this process has the JVM's env
    assert jvm_loaded(replica) and jvm_loaded(stack.loaders[0].pid)  # hdfs:// through libhdfs


def test_webhdfs_end_to_end_needs_no_jvm_in_any_rollway_process(
    make_stack: list[HdfsStack],
    kafka: TansuBroker,
    webhdfs_base: RemoteRoot,
    serve: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in HDFS_CLIENT_VARS:  # the replica inherits this process's environment
        monkeypatch.delenv(name, raising=False)
    root = fresh(webhdfs_base)
    landing, store = f"{root}/landing", f"{root}/store"
    stack = start(make_stack, kafka, tmp_path, landing, store,
                  without_jvm(subprocess_env({})))  # fmt: skip
    stack.publish("hp", 1)
    assert wait_assigned(stack, "hp") == [1]
    check_staged(store, "hp", 1)
    replica = predict_half_plus_two(serve, store, tmp_path)
    assert not jvm_loaded(replica)
    assert not jvm_loaded(stack.loaders[0].pid)


def test_a_loader_holding_a_jvm_still_stops_cleanly_on_sigterm(
    make_stack: list[HdfsStack],
    kafka: TansuBroker,
    hdfs_base: RemoteRoot,
    webhdfs_base: RemoteRoot,
    tmp_path: Path,
) -> None:
    """The JVM starts at the first event read from hdfs://, after the loader set
    its signal handlers; SIGTERM must still finish the record in hand and exit 0."""
    env = subprocess_env(hdfs_base.env)
    env["LIBHDFS_OPTS"] = env.get("LIBHDFS_OPTS", "").replace("-Xrs", "")  # as users set it
    landing, store = f"{fresh(hdfs_base)}/landing", f"{fresh(webhdfs_base)}/store"
    stack = start(make_stack, kafka, tmp_path, landing, store, env)
    stack.publish("hp", 1)
    assert wait_assigned(stack, "hp") == [1]
    loader = stack.loaders[0]
    assert jvm_loaded(loader.pid)
    loader.send_signal(signal.SIGTERM)
    assert loader.wait(30) == 0, stack.loader_log()[-2000:]
    assert "loader stopped" in stack.loader_log()
