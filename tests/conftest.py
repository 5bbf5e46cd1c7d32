"""Shared fixtures: TF Serving's test data, and real `rollway serve` processes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from functions.devstack.hdfs import HdfsCluster
from functions.devstack.hdfs_dist import HdfsDist, MissingPrerequisite, prepare
from functions.devstack.seaweedfs import TEST_BUCKET, SeaweedFS
from functions.serving.process import ServerProcess

# Fixtures kept in their own modules: stores (``backend``) and the Kafka broker.
pytest_plugins = ["tests.stores", "tests.kafka_broker"]

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO.parent / "shared" / "testdata" / "tf_serving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three"
TWO_VERSIONS = TESTDATA / "saved_model_half_plus_two_2_versions"
BAD_HALF_PLUS_TWO = TESTDATA / "bad_half_plus_two"

# Flags every test server gets: fail fast, and no retry waits.
FAST_FLAGS = ("--max_num_load_retries=0", "--load_retry_interval_micros=0")


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.fail(f"TF Serving test data not found at {TESTDATA} (expected ../shared)")
    return TESTDATA


def copy_model(source: Path, dest: Path) -> Path:
    """Copies a model base directory (the tests may change the copy)."""
    shutil.copytree(source, dest)
    return dest


ServerFactory = Callable[..., ServerProcess]


def _factory(tmp: Path, started: list[ServerProcess]) -> ServerFactory:
    def start(args: Sequence[str], wait: bool = True, fast: bool = True) -> ServerProcess:
        log = tmp / f"server-{len(started)}.log"
        server = ServerProcess([*(FAST_FLAGS if fast else ()), *args], log)
        started.append(server)
        server.start()
        if wait:
            server.wait_serving()
        return server

    return start


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerFactory]:
    """Starts `rollway serve` processes for one test; stops them all afterwards."""
    started: list[ServerProcess] = []
    yield _factory(tmp_path, started)
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def serve_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Like `serve`, shared by the tests of one module (server startup costs seconds)."""
    started: list[ServerProcess] = []
    yield _factory(tmp_path_factory.mktemp("servers"), started)
    for server in started:
        server.stop()


@pytest.fixture
def channel_to() -> Iterator[Callable[[ServerProcess], grpc.Channel]]:
    channels: list[grpc.Channel] = []

    def open_channel(server: ServerProcess) -> grpc.Channel:
        channel = grpc.insecure_channel(server.address)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


# --- S3: one real SeaweedFS per test session -----------------------------------

# Variables that would change how the S3 backend connects; s3_env clears them.
_S3_ENV_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL", "AWS_CA_BUNDLE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
)  # fmt: skip


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A running SeaweedFS (S3 on a loopback port) with the bucket TEST_BUCKET."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        server.create_bucket(TEST_BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Points the S3 backend at ``seaweedfs`` for one test, through the environment
    variables users set; returns them."""
    for name in _S3_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    env = seaweedfs.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_root(s3_env: dict[str, str]) -> str:
    """A fresh ``s3://bucket/<unique prefix>`` for one test (``s3_env`` is set)."""
    return f"s3://{TEST_BUCKET}/t-{uuid.uuid4().hex[:12]}"


# --- HDFS: one real NameNode and DataNode per test session ----------------------


@dataclass(frozen=True)
class RemoteRoot:
    """A root URI on a remote store, and what a client process needs to reach it."""

    uri: str
    env: dict[str, str] = field(default_factory=dict)

    def fresh(self) -> RemoteRoot:
        return RemoteRoot(f"{self.uri.rstrip('/')}/t-{uuid.uuid4().hex[:12]}", self.env)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def hdfs_dist() -> HdfsDist:
    """The prepared HDFS cache (functions/devstack/hdfs.py; the first run on a
    machine downloads and builds it). A machine that cannot provide a
    prerequisite (Java, gcc, Jersey without root, PyPI for the first download)
    skips the tests that need it, saying which; under CI=true they fail instead."""
    try:
        return prepare()
    except MissingPrerequisite as err:
        if _in_ci():
            pytest.fail(f"CI must run the HDFS tests, but: {err}")
        pytest.skip(f"no HDFS dev stack on this machine: {err}")


@pytest.fixture(scope="session")
def hdfs_cluster(
    hdfs_dist: HdfsDist, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HdfsCluster]:
    """The session's NameNode and DataNode, started when a test first asks for them."""
    cluster = HdfsCluster(tmp_path_factory.mktemp("hdfs"), hdfs_dist).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def hdfs_base(request: pytest.FixtureRequest) -> Iterator[RemoteRoot]:
    """Where hdfs:// tests write: $ROLLWAY_TEST_HDFS_URI (an external cluster, for
    which this environment is already set up), else the session's cluster. Its
    client environment is then set in this process for the whole session: the
    libhdfs inside pytest reads it once, when it first loads."""
    external = os.environ.get("ROLLWAY_TEST_HDFS_URI")
    if external:
        yield RemoteRoot(external)
        return
    cluster: HdfsCluster = request.getfixturevalue("hdfs_cluster")
    env = cluster.env()
    old = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield RemoteRoot(cluster.hdfs_uri("/rollway-test"), env)
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def webhdfs_base(request: pytest.FixtureRequest) -> RemoteRoot:
    """Where webhdfs:// tests write: $ROLLWAY_TEST_WEBHDFS_URL, else the session's
    cluster. WebHDFS needs no client environment."""
    external = os.environ.get("ROLLWAY_TEST_WEBHDFS_URL")
    if external:
        return RemoteRoot(external)
    cluster: HdfsCluster = request.getfixturevalue("hdfs_cluster")
    return RemoteRoot(cluster.webhdfs_uri("/rollway-test"))


@pytest.fixture
def hdfs_root(hdfs_base: RemoteRoot) -> RemoteRoot:
    """A fresh ``hdfs://`` root for one test (its client environment is set)."""
    return hdfs_base.fresh()


@pytest.fixture
def webhdfs_root(webhdfs_base: RemoteRoot) -> RemoteRoot:
    """A fresh ``webhdfs://`` root for one test."""
    return webhdfs_base.fresh()
