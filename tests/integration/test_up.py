"""`rollway up`: the local stack started as a user would, used through the
endpoints and the publish command it prints, then stopped with Ctrl-C (SIGINT)
with no process left behind; on S3 (the default) and with `--storage hdfs`."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.devstack.stack import HDFS_CLIENT_VARS
from tests.conftest import HALF_PLUS_TWO, REPO

pytestmark = pytest.mark.integration

# Variables of this environment that would point a client at another S3.
_S3_VARS = ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_PROFILE",
            "AWS_CA_BUNDLE", "AWS_DEFAULT_REGION")  # fmt: skip


class Up:
    """`rollway up` as a subprocess; its stdout is read line by line on a thread."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        self.workdir = workdir
        self.storage = "s3"
        self.lines: list[str] = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("ROLLWAY_DEMO_STORAGE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "functions.cli", "up", "--workdir", str(workdir), *flags],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output:\n{self.output}")

    def pids(self) -> set[int]:
        """Every PID that the output ("pid N", the "pids:" line) and pids.json name."""
        found = {int(p) for p in re.findall(r"\bpid (\d+)", self.output)}
        for line in self.lines:
            if line.startswith("pids: "):
                found |= {int(p) for _, ps in re.findall(r"(\w+)=([\d,]+)", line)
                          for p in ps.split(",")}  # fmt: skip
        pids_file = self.workdir / "pids.json"
        if pids_file.exists():
            found |= {p for ps in json.loads(pids_file.read_text()).values() for p in ps}
        return found

    def port(self, pattern: str) -> int:
        found = re.search(pattern, self.output)
        assert found, f"no {pattern!r} in:\n{self.output}"
        return int(found[1])


@pytest.fixture(params=["s3", "hdfs"])
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Up]:
    """`rollway up` on S3 (no flag: the default) or with `--storage hdfs`."""
    flags = []
    if request.param == "hdfs":
        request.getfixturevalue("hdfs_dist")  # prepared, or skipped saying what is missing
        flags = ["--storage", "hdfs"]
    process = Up(tmp_path / "up", *flags)
    process.storage = request.param
    yield process
    if process.proc.poll() is None:  # the test failed half-way: still stop it cleanly
        process.proc.send_signal(signal.SIGINT)
        try:
            process.proc.wait(60)
        except subprocess.TimeoutExpired:
            process.proc.kill()
            process.proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def publish(up: Up, command: str, env: dict[str, str]) -> None:
    """Runs a printed ``rollway publish`` command, its placeholders filled in."""
    source = str(HALF_PLUS_TWO / "00000123")
    argv = [source if arg == "SAVED_MODEL_DIR" else arg for arg in shlex.split(command)]
    assert argv[-2:] == [argv[-2], "--next"] and argv[-2].endswith("/MODEL"), command
    argv[-2] = argv[-2].removesuffix("/MODEL") + "/hp"
    published = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert published.returncode == 0, published.stderr
    assert "sent ModelPublished" in published.stderr


def predict(grpc_port: int) -> int:
    """Half plus two's answer checked; returns the version that answered."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=10)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0, 4.5]  # half plus two
    return int(response.model_spec.version.value)


def test_up_serves_what_is_published_and_stops_every_process(up: Up) -> None:
    up.wait_line(r"^Ready\. Ctrl-C stops everything\.$", timeout=180)
    grpc_port = up.port(r"serving replica\s+gRPC 127\.0\.0\.1:(\d+)")
    ports = [grpc_port, up.port(r"Kafka \(tansu\)\s+127\.0\.0\.1:(\d+)")]
    if up.storage == "hdfs":
        ports.append(up.port(r"HDFS \(NameNode\)\s+hdfs://127\.0\.0\.1:(\d+)/"))
        ports.append(up.port(r"HDFS \(NameNode\).* WebHDFS http://127\.0\.0\.1:(\d+)"))
        assert re.search(r"from webhdfs://127\.0\.0\.1:\d+/rollway/store ", up.output)
    else:
        ports.append(up.port(r"S3 \(SeaweedFS\)\s+http://127\.0\.0\.1:(\d+)"))
    exports = next(line for line in up.lines if line.strip().startswith("export "))
    commands = [line for line in up.lines if " publish SAVED_MODEL_DIR " in line]
    assert len(commands) == (2 if up.storage == "hdfs" else 1), up.output

    # Publish with exactly the printed command and environment (on HDFS: hdfs://).
    env = {k: v for k, v in os.environ.items() if k not in (*_S3_VARS, *HDFS_CLIENT_VARS)}
    env.update(dict(item.split("=", 1) for item in shlex.split(exports)[1:]))
    if up.storage == "hdfs":
        assert " hdfs://127.0.0.1:" in commands[0] and "CLASSPATH=" in exports
    publish(up, commands[0], env)
    up.wait_line(r"assignment: model=hp generation=1 versions=\[1\]", timeout=60)
    up.wait_line(rf"serving replica ready \(pid \d+\): gRPC 127\.0\.0\.1:{grpc_port}\b", 120)
    assert predict(grpc_port) == 1

    if up.storage == "hdfs":  # the second command: webhdfs://, with no JVM in the client
        assert " webhdfs://127.0.0.1:" in commands[1]
        kafka = {"ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": env["ROLLWAY_KAFKA_BOOTSTRAP_SERVERS"]}
        bare = {k: v for k, v in os.environ.items() if k not in HDFS_CLIENT_VARS}
        publish(up, commands[1], {**bare, **kafka})
        up.wait_line(r"assignment: model=hp generation=2 versions=\[2\]", timeout=60)
        deadline = time.monotonic() + 60  # rolled out in place by the following replica
        while predict(grpc_port) != 2:
            assert time.monotonic() < deadline, up.output
            time.sleep(0.1)

    pids = up.pids()
    parts = ["serve", "loader", "tansu", *(["datanode", "namenode"] if up.storage == "hdfs"
                                          else ["weed"])]  # fmt: skip
    assert len(pids) >= len(parts), up.output
    assert all(_alive(pid) for pid in pids)
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(60) == 0, up.output
    up.wait_line(r"^all stopped$", timeout=5)
    for name in parts:
        assert re.search(rf"stopped {name} \(pid \d+\), exit code", up.output), up.output
    assert re.search(r"stopped loader \(pid \d+\), exit code 0\b", up.output), up.output
    assert not [pid for pid in up.pids() if _alive(pid)], up.output
    assert not [p for p in ports if _listening(p)]
    leftovers = [
        proc.name
        for proc in Path("/proc").iterdir()
        if proc.name.isdigit() and str(up.workdir) in _cmdline(proc)
    ]
    assert not leftovers, f"processes still using {up.workdir}: {leftovers}"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
