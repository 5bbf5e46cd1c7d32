"""--ssl_config_file: TF Serving's SSLConfig makes the gRPC port TLS."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import grpc
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.conftest import HALF_PLUS_TWO, ServerFactory


def make_certificate(directory: Path) -> tuple[bytes, bytes]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (key, cert) PEM."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()


def ssl_config(path: Path, key: bytes, cert: bytes) -> Path:
    path.write_text(f"server_key: {key.decode()!r}\nserver_cert: {cert.decode()!r}\n")
    return path


def test_tls_grpc(serve: ServerFactory, tmp_path: Path) -> None:
    key, cert = make_certificate(tmp_path)
    config = ssl_config(tmp_path / "ssl.config", key, cert)
    server = serve(
        ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", f"--ssl_config_file={config}"],
        wait=False,
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    with grpc.secure_channel(server.address, credentials) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 120
        while True:
            assert server.proc is not None and server.proc.poll() is None, server.log()
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "hp2"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
        assert list(reply.outputs["y"].float_val) == [3.0]
    with grpc.insecure_channel(server.address) as plain, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("server_key: 'k'\nnot_a_field: 1\n", "Invalid protobuf file"),
        ("client_verify: true\n", "server_key and server_cert"),
    ],
)
def test_bad_ssl_config_exits(
    serve: ServerFactory, tmp_path: Path, text: str, fragment: str
) -> None:
    config = tmp_path / "ssl.config"
    config.write_text(text)
    server = serve(
        ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", f"--ssl_config_file={config}"],
        wait=False,
    )
    assert server.wait_exit(timeout=120) == 1
    assert fragment in server.log()
