"""--workers 2: two serving processes behind one gRPC and one REST port.

Real processes only: ``rollway serve --workers 2`` (a supervisor and two
spawned workers sharing the ports with SO_REUSEPORT), real SavedModels. Each
request opens a new connection, so the kernel spreads them over both workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2

from functions.serving.process import ServerProcess, free_port
from tests.conftest import HALF_PLUS_TWO, TESTDATA, TWO_VERSIONS, ServerFactory
from tests.integration.helpers import (
    Client,
    eventually,
    model_config,
    predict_request,
    server_config,
)

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MODEL = "half_plus_two"


def _predict_once(server: ServerProcess, x: float = 2.0) -> tuple[int, float]:
    """One Predict on a connection of its own (so it may reach either worker)."""
    client = Client(server)
    try:
        return client.predict(MODEL, x)
    finally:
        client.close()


def _health(server: ServerProcess) -> int:
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        return int(reply.status)


def _worker_pids(server: ServerProcess) -> list[int]:
    """The supervisor's children: the workers (multiprocessing's resource tracker
    has no serving port, and is told apart by its command line)."""
    assert server.proc is not None
    pid = server.proc.pid
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(c) for c in text]
    return [c for c in children if "resource_tracker" not in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def workers_server(serve: ServerFactory, tmp_path: Path) -> Iterator[tuple[ServerProcess, int]]:
    rest_port = free_port()
    config = tmp_path / "monitoring.txt"
    config.write_text("prometheus_config { enable: true }\n")
    server = serve(
        [f"--model_name={MODEL}", f"--model_base_path={HALF_PLUS_TWO}", "--workers=2",
         f"--rest_api_port={rest_port}", f"--monitoring_config_file={config}"]
    )  # fmt: skip
    yield server, rest_port


def test_two_workers_serve_the_same_versions(
    workers_server: tuple[ServerProcess, int],
) -> None:
    server, rest_port = workers_server
    assert len(_worker_pids(server)) == 2
    for worker in (0, 1):  # each worker loaded the version itself
        assert (
            f"[rollway-worker-{worker}] functions.serving.core.manager: {MODEL}:123 is AVAILABLE"
            in server.log()
        )
    for _ in range(20):
        assert _predict_once(server) == (123, 3.0)
    body = json.dumps({"instances": [1.0, 2.0, 5.0]}).encode()
    for _ in range(10):
        request = urllib.request.Request(
            f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict", data=body
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert json.loads(reply.read()) == {"predictions": [2.5, 3.0, 4.5]}
    client = Client(server)
    assert client.states(MODEL) == {123: AVAILABLE}
    client.close()


def test_the_metrics_scrape_sums_both_workers(workers_server: tuple[ServerProcess, int]) -> None:
    server, rest_port = workers_server
    requests = 40  # on new connections: all on one worker has odds of 2**-39
    for _ in range(requests):
        _predict_once(server)
    url = f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics"
    for _ in range(3):  # each scrape may reach either worker: both see the sum
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        line = f':tensorflow:serving:request_count{{model_name="{MODEL}",status="OK"}} {requests}'
        assert line in text, text
        assert (
            f'rollway_serving_model_version_state{{model_name="{MODEL}",version="123"}} 30' in text
        )


def test_a_killed_worker_is_restarted_while_the_other_answers(
    workers_server: tuple[ServerProcess, int],
) -> None:
    server, _ = workers_server
    victim, survivor = _worker_pids(server)
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: _assert_equal(_health(server), NOT_SERVING), timeout=30)
    answered = 0
    while _health(server) != SERVING:  # until the restarted worker has the version
        assert _predict_once(server) == (123, 3.0)  # the survivor answers meanwhile
        answered += 1
    assert answered > 0
    pids = _worker_pids(server)
    assert survivor in pids and victim not in pids and len(pids) == 2
    assert "worker 0" in server.log() or "worker 1" in server.log()
    assert "exited with code -9" in server.log()
    for _ in range(10):
        assert _predict_once(server) == (123, 3.0)


def test_sigterm_drains_both_workers(workers_server: tuple[ServerProcess, int]) -> None:
    server, _ = workers_server
    pids = _worker_pids(server)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    log = server.log()
    for worker in (0, 1):
        assert f"[rollway-worker-{worker}] rollway.serve: stopped" in log, log
    assert all(not Path(f"/proc/{pid}").exists() or "zombie" in _status(pid) for pid in pids)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _assert_equal(actual: object, expected: object) -> None:
    assert actual == expected


def test_a_version_swap_under_load_fails_no_request(serve: ServerFactory, tmp_path: Path) -> None:
    base = tmp_path / "model"
    base.mkdir()
    shutil.copytree(TWO_VERSIONS / "00000123", base / "00000123")
    server = serve(
        [f"--model_name={MODEL}", f"--model_base_path={base}", "--workers=2",
         "--file_system_poll_wait_seconds=1"]
    )  # fmt: skip
    errors: list[BaseException] = []
    versions: set[int] = set()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                version, y = _predict_once(server)
                assert y == 3.0
                versions.add(version)
            except BaseException as err:  # every failure is the test's failure
                errors.append(err)
                return

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        shutil.copytree(TWO_VERSIONS / "00000124", base / "00000124")
        client = Client(server)
        eventually(lambda: _assert_equal(client.states(MODEL), {124: AVAILABLE, 123: END}), 120)
        client.close()
        eventually(lambda: _assert_equal(124 in versions, True))
        versions.clear()
        time.sleep(1)  # every worker has dropped 123 by now: only 124 answers
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert versions == {124}


def test_a_reload_request_to_any_worker_reaches_the_supervisor(
    serve: ServerFactory, tmp_path: Path
) -> None:
    from tests.integration.helpers import write_config

    config_path = write_config(
        tmp_path / "models.config", server_config(model_config(MODEL, HALF_PLUS_TWO))
    )
    server = serve([f"--model_config_file={config_path}", "--workers=2"])
    client = Client(server)
    client.reload(
        server_config(model_config(MODEL, HALF_PLUS_TWO), model_config("other", HALF_PLUS_TWO))
    )
    assert client.states("other") == {123: AVAILABLE}  # the reload returns once it loaded
    client.close()
    for _ in range(10):  # both workers serve the new model
        fresh = Client(server)
        request = predict_request("other")
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], dtype=np.float32)))
        assert fresh.predictions.Predict(request, timeout=10).model_spec.name == "other"
        fresh.close()


def test_a_port_in_use_fails_startup(serve: ServerFactory) -> None:
    with socket_in_use() as port:
        server = serve(
            [f"--model_name={MODEL}", f"--model_base_path={HALF_PLUS_TWO}", "--workers=2",
             f"--rest_api_port={port}"], wait=False,
        )  # fmt: skip
        assert server.wait_exit(120) == 1
    assert "Failed to start server" in server.log()
    assert TESTDATA.is_dir()


class socket_in_use:  # noqa: N801 (a context manager, used as a function)
    """A loopback port bound and listened on without SO_REUSEPORT."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
