"""`rollway serve` as a whole process: config files, startup failures and their
exit codes, usage errors, --help/--version, health, SIGTERM, a UNIX socket."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.serving.flags import ServerOptions
from functions.serving.process import ServerProcess
from tests.conftest import (
    BAD_HALF_PLUS_TWO,
    HALF_PLUS_THREE,
    HALF_PLUS_TWO,
    REPO,
    TESTDATA,
    ServerFactory,
)
from tests.integration.helpers import eventually
from tests.models import export_affine

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def predict(channel: grpc.Channel, model: str, xs: Sequence[float]) -> tuple[int, list[float]]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(
        tf.make_tensor_proto(np.array(xs, dtype=np.float32).reshape(-1, 1))
    )
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=10
    )
    assert response.model_spec.name == model
    values = tf.make_ndarray(response.outputs["y"]).ravel().tolist()
    return response.model_spec.version.value, values


def health(channel: grpc.Channel, service: str = "") -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=2
    )
    status: int = reply.status
    return status


def rollway(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "functions.cli", *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def failed_start(serve: ServerFactory, args: Sequence[str]) -> tuple[int, str]:
    """Starts a server that must exit by itself: (exit code, log)."""
    server = serve(list(args), wait=False)
    code = server.wait_exit(120)
    return code, server.log()


def failure_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "Failed to start server" in line]
    assert lines, log
    return lines[0]


# ------------------------------------------------------ good_model_config.txt


def test_good_model_config_serves_both_models(serve: ServerFactory, tmp_path: Path) -> None:
    text = (TESTDATA / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(HALF_PLUS_TWO))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(HALF_PLUS_THREE))
    config = tmp_path / "good_model_config.txt"
    config.write_text(text)
    server = serve([f"--model_config_file={config}"])
    with grpc.insecure_channel(server.address) as channel:
        assert predict(channel, "half_plus_two", [2.0]) == (123, [3.0])
        assert predict(channel, "half_plus_three", [2.0]) == (123, [4.0])
        assert health(channel) == SERVING


@pytest.fixture(scope="module")
def half_plus_two(serve_module: ServerFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """half_plus_two by --model_base_path, on TCP and on a UNIX socket."""
    socket = Path(tempfile.mkdtemp(prefix="rw-")) / "s.sock"  # short: sun_path is 108 bytes
    server = serve_module(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={HALF_PLUS_TWO}",
            f"--grpc_socket_path={socket}",
        ]
    )
    yield server, socket
    server.stop()
    socket.unlink(missing_ok=True)
    socket.parent.rmdir()


def test_predict_a_batch_on_half_plus_two(half_plus_two: tuple[ServerProcess, Path]) -> None:
    with grpc.insecure_channel(half_plus_two[0].address) as channel:
        assert predict(channel, "half_plus_two", [1.0, 2.0, 5.0]) == (123, [2.5, 3.0, 4.5])


def test_predict_over_a_unix_socket(half_plus_two: tuple[ServerProcess, Path]) -> None:
    _, socket = half_plus_two
    assert socket.exists()
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        assert predict(channel, "half_plus_two", [1.0, 2.0, 5.0]) == (123, [2.5, 3.0, 4.5])
        assert health(channel) == SERVING


# ----------------------------------------------------------- startup failures


def test_bad_model_config_exits_non_zero_naming_the_file(serve: ServerFactory) -> None:
    path = TESTDATA / "bad_model_config.txt"
    code, log = failed_start(serve, [f"--model_config_file={path}"])
    assert code != 0, log
    assert str(path) in failure_line(log)


def test_bad_half_plus_two_exits_1_naming_model_version_and_cause(serve: ServerFactory) -> None:
    code, log = failed_start(
        serve, ["--model_name=bad_model", f"--model_base_path={BAD_HALF_PLUS_TWO}"]
    )
    assert code == 1, log
    line = failure_line(log)
    assert "bad_model" in line
    assert "123" in line
    assert "SavedModel file does not exist" in line


def test_relative_base_path_exits_non_zero(serve: ServerFactory) -> None:
    code, log = failed_start(serve, ["--model_base_path=models/half_plus_two"])
    assert code != 0, log
    assert "absolute path" in failure_line(log)


# ---------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--no_such_flag=1"], "unrecognized arguments: --no_such_flag=1"),
        (
            [
                "--tensorflow_session_parallelism=2",
                "--tensorflow_intra_op_parallelism=2",
                "--tensorflow_inter_op_parallelism=2",
            ],
            "You cannot configure all",
        ),
        (["--use_alts_credentials"], "--use_alts_credentials is not supported yet"),
        (
            ["--xla_cpu_compilation_enabled=true"],
            "--xla_cpu_compilation_enabled is not supported yet",
        ),
    ],
    ids=["unknown-flag", "all-parallelism-flags", "alts", "xla-true"],
)
def test_usage_errors_exit_2(serve: ServerFactory, args: list[str], expected: str) -> None:
    code, log = failed_start(serve, [f"--model_base_path={HALF_PLUS_TWO}", *args])
    assert code == 2, log
    assert "usage: rollway serve" in log
    assert expected in log


def test_help_lists_every_flag() -> None:
    result = rollway("serve", "--help")
    assert result.returncode == 0, result.stderr
    for field in dataclasses.fields(ServerOptions):
        assert f"--{field.name}" in result.stdout, field.name


def test_version_prints_versions() -> None:
    result = rollway("serve", "--version")
    assert result.returncode == 0, result.stderr
    assert "rollway ModelServer: " in result.stdout
    assert f"TensorFlow Library: {tf.__version__}" in result.stdout


def test_unknown_command_exits_2() -> None:
    result = rollway("no-such-command")
    assert result.returncode == 2
    assert "unknown command" in result.stderr
    assert "usage: rollway COMMAND" in result.stderr


# ------------------------------------------------------ health, then SIGTERM


def test_health_waits_for_a_first_version_and_sigterm_exits_0(
    serve: ServerFactory, tmp_path: Path
) -> None:
    base = tmp_path / "late"
    base.mkdir()
    server = serve(
        ["--model_name=late", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"],
        wait=False,
    )
    with grpc.insecure_channel(server.address) as channel:

        def not_serving() -> None:
            assert server.proc is not None and server.proc.poll() is None, server.log()
            assert health(channel) == NOT_SERVING
            assert "serving models: late" in server.log()

        eventually(not_serving, timeout=120)
        for service in ("tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            assert health(channel, service) == NOT_SERVING
        with pytest.raises(grpc.RpcError) as info:
            predict(channel, "late", [1.0])
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "Servable not found for request: Latest(late)"

        staging = tmp_path / "staging"
        staging.mkdir()
        export_affine(staging, 1, 2.0, 0.5)
        os.rename(staging / "1", base / "1")

        def serving() -> None:
            assert health(channel) == SERVING

        eventually(serving)
        assert health(channel, "tensorflow.serving.PredictionService") == SERVING
        assert predict(channel, "late", [1.0, 2.0]) == (1, [2.5, 4.5])

    assert server.stop() == 0
    assert "received SIGTERM" in server.log()
