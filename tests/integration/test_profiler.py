"""--enable_profiler: TensorFlow's ProfilerService on a real `rollway serve`.

TensorFlow's own client (``tf.profiler.experimental.client.trace``, run in a
subprocess so that its TensorFlow is not the server's) traces the server on its
gRPC port while Predicts run. TensorFlow's client dials neither TLS nor UNIX
sockets (it uses insecure channels and wants host:port), so those two are
driven with grpcio and the service's own messages, as any TLS client would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from functions.serving.api.profiler import (
    SERVICE,
    ProfileRequest,
    ProfileResponse,
    TerminateRequest,
    TerminateResponse,
)
from functions.serving.process import ServerProcess
from tests.conftest import HALF_PLUS_TWO, ServerFactory
from tests.integration.helpers import predict_request
from tests.integration.test_tls import make_certificate, ssl_config

pytestmark = pytest.mark.integration

MODEL = "half_plus_two"
TRACE_MS = 2000
# Runs TensorFlow's profiler client; prints OK, or ERROR <exception class> <message>.
# Host tracer level 3 (verbose): at the default level 2, TensorFlow traces a kernel
# only while its measured cost marks it expensive, and whether a tiny Mul counts as
# expensive depends on how busy the machine was when the executor sampled it.
TRACE = """
import sys
import tensorflow as tf
options = tf.profiler.experimental.ProfilerOptions(host_tracer_level=3)
try:
    tf.profiler.experimental.client.trace(
        sys.argv[1], sys.argv[2], int(sys.argv[3]), options=options
    )
except Exception as err:
    print("ERROR", type(err).__name__, err)
    sys.exit(3)
print("OK")
"""


def trace(
    address: str, logdir: Path, duration_ms: int = TRACE_MS
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TRACE, f"grpc://{address}", str(logdir), str(duration_ms)],
        check=False, capture_output=True, text=True, timeout=180,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip


class Load:
    """Predicts on ``channel`` from a thread until stopped; counts the answers."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        self.done = 0
        self.errors: list[grpc.RpcError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        request = predict_request(MODEL)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0]], dtype=np.float32)))
        while not self._stop.is_set():
            try:
                reply = self.stub.Predict(request, timeout=10)
                assert list(reply.outputs["y"].float_val) == [2.5]
                self.done += 1
            except grpc.RpcError as err:
                self.errors.append(err)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def call(channel: grpc.Channel, method: str, request: Any, response: Any, timeout: float) -> Any:
    stub = channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    return stub(request, timeout=timeout)


def profile_request(
    root: Path, session: str, host: str, duration_ms: int = 1000, emit: bool = False
) -> Any:
    opts = profiler_options_pb2.ProfileOptions(
        version=1, host_tracer_level=2, device_tracer_level=1, duration_ms=duration_ms
    )
    return ProfileRequest(
        duration_ms=duration_ms,
        opts=opts.SerializeToString(),
        repository_root=str(root),
        session_id=session,
        host_name=host,
        emit_xspace=emit,
    )


def host_event_names(space: Any) -> set[str]:
    """Names of the events recorded on the host plane."""
    (plane,) = [p for p in space.planes if p.name == "/host:CPU"]
    return {
        plane.event_metadata[event.metadata_id].name
        for line in plane.lines
        for event in line.events
    }


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def socket_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sock") / "grpc.sock"


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory, socket_path: Path) -> ServerProcess:
    return serve_module(
        [f"--model_name={MODEL}", f"--model_base_path={HALF_PLUS_TWO}",
         f"--grpc_socket_path={socket_path}"]
    )  # fmt: skip


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


# ---------------------------------------------------------------- tests


def test_tensorflow_client_traces_requests(
    server: ServerProcess, channel: grpc.Channel, tmp_path: Path
) -> None:
    with Load(channel) as load:
        while load.done < 5:  # the server answers before the trace starts
            time.sleep(0.01)
        before = load.done
        done = trace(server.address, tmp_path)
        during = load.done - before
    assert done.returncode == 0 and "OK" in done.stdout, done.stdout + done.stderr
    assert not load.errors and during > 0
    (xplane,) = tmp_path.glob("plugins/profile/*/*.xplane.pb")
    assert xplane.name == f"127.0.0.1_{server.port}.xplane.pb"
    space = xplane_pb2.XSpace.FromString(xplane.read_bytes())
    names = host_event_names(space)
    # The Session runs of the Predicts, and the op (name:type) y = a * x + b runs.
    assert {"SessionRun", "Mul:Mul"} <= names, sorted(names)


def test_over_the_unix_socket(server: ServerProcess, socket_path: Path, tmp_path: Path) -> None:
    with grpc.insecure_channel(f"unix:{socket_path}") as channel, Load(channel) as load:
        while load.done < 5:
            time.sleep(0.01)
        reply = call(
            channel, "Profile", profile_request(tmp_path, "unix", "sock"), ProfileResponse, 60
        )
    assert not reply.empty_trace and not reply.xspace
    space = xplane_pb2.XSpace.FromString((tmp_path / "unix" / "sock.xplane.pb").read_bytes())
    assert "SessionRun" in host_event_names(space)


def test_terminate_ends_a_long_trace(channel: grpc.Channel, tmp_path: Path) -> None:
    result: list[Any] = []
    request = profile_request(tmp_path, "long", "h:1", duration_ms=120_000)
    began = time.monotonic()
    profile = threading.Thread(
        target=lambda: result.append(call(channel, "Profile", request, ProfileResponse, 150))
    )
    profile.start()
    time.sleep(1.0)  # let the trace start; a Terminate that comes first also ends it
    call(channel, "Terminate", TerminateRequest(session_id="long"), TerminateResponse, 10)
    profile.join(60)
    assert result, "Profile did not return after Terminate"
    assert time.monotonic() - began < 60
    assert (tmp_path / "long" / "h_1.xplane.pb").stat().st_size > 0


def test_over_tls(serve: ServerFactory, tmp_path: Path) -> None:
    key, cert = make_certificate(tmp_path)
    config = ssl_config(tmp_path / "ssl.config", key, cert)
    server = serve(
        [f"--model_name={MODEL}", f"--model_base_path={HALF_PLUS_TWO}",
         f"--ssl_config_file={config}"],
        wait=False,
    )  # fmt: skip
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    with grpc.secure_channel(server.address, credentials) as channel:
        grpc.channel_ready_future(channel).result(timeout=120)
        with Load(channel) as load:
            deadline = time.monotonic() + 120
            while load.done < 5:  # the model loads after the port opens
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            request = profile_request(tmp_path, "tls", "h", emit=True)
            reply = call(channel, "Profile", request, ProfileResponse, 60)
    assert not reply.empty_trace
    assert "SessionRun" in host_event_names(xplane_pb2.XSpace.FromString(reply.xspace))
    assert not (tmp_path / "tls").exists()  # emit_xspace: returned, not written
    with grpc.insecure_channel(server.address) as plain, pytest.raises(grpc.RpcError):
        call(plain, "Profile", profile_request(tmp_path, "plain", "h"), ProfileResponse, 5)


def test_disabled_profiler_is_unimplemented(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(
        [f"--model_name={MODEL}", f"--model_base_path={HALF_PLUS_TWO}", "--enable_profiler=false"]
    )
    done = trace(server.address, tmp_path, 500)
    # TensorFlow's client logs each attempt's UNIMPLEMENTED, then gives up with
    # UNAVAILABLE (a RuntimeError), as against a TF Serving run without it.
    assert done.returncode == 3, done.stdout + done.stderr
    assert "UNIMPLEMENTED: Method not found" in done.stderr, done.stderr
    assert "UNAVAILABLE: No trace event was collected" in done.stdout, done.stdout
    assert not list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        call(channel, "Profile", profile_request(tmp_path, "x", "h"), ProfileResponse, 10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
