"""Bounded memory per request, against a real `rollway serve` (issue 15).

A request of B bytes may make the server allocate at most 64 x B + 64 MiB
for the tensors it decodes, refused before anything is allocated: zero-size
shapes with huge dimensions, one string broadcast to a huge shape, a
tf.Example context copied into many examples. A rejected REST body gives its
memory back when the request ends, and an error quotes at most a few hundred
bytes of the request.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from functions.serving.process import ServerProcess, free_port
from tests.conftest import HALF_PLUS_TWO, ServerFactory
from tests.integration.helpers import model_config, server_config, write_config

pytestmark = pytest.mark.integration

RPC_TIMEOUT = 30.0
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
MiB = 2**20
RSS_SLACK = 200 * MiB


class Server:
    def __init__(self, process: ServerProcess, rest_port: int) -> None:
        self.process = process
        self.rest = f"http://127.0.0.1:{rest_port}"
        self.channel = grpc.insecure_channel(process.address, options=UNLIMITED)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def rss(self) -> int:
        """The serving process's resident set, in bytes (/proc/<pid>/status VmRSS)."""
        assert self.process.proc is not None
        status = Path(f"/proc/{self.process.proc.pid}/status").read_text()
        (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(line.split()[1]) * 1024

    def post(self, path: str, body: bytes) -> tuple[int, Any, int]:
        """(status, the decoded JSON reply, the reply's length in bytes)."""
        request = urllib.request.Request(self.rest + path, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as reply:
                raw = reply.read()
                return reply.status, json.loads(raw), len(raw)
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, json.loads(raw), len(raw)


def _start(serve: ServerFactory, root: Path, *flags: str) -> Server:
    path = write_config(root / "models.config", server_config(model_config("hp2", HALF_PLUS_TWO)))
    port = free_port()
    process = serve(
        [f"--model_config_file={path}", f"--rest_api_port={port}",
         "--rest_api_max_request_bytes=200000000", "--rest_api_timeout_in_ms=120000", *flags]
    )  # fmt: skip
    return Server(process, port)


@pytest.fixture(scope="module")
def server(
    serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    started = _start(serve_module, tmp_path_factory.mktemp("bounds"))
    yield started
    started.channel.close()


def _predict(signature: str, name: str, dtype: int, dims: list[int], **fields: Any) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "hp2"
    request.model_spec.signature_name = signature
    tensor = request.inputs[name]
    tensor.dtype = dtype
    for size in dims:
        tensor.tensor_shape.dim.add(size=size)
    for field, values in fields.items():
        getattr(tensor, field).extend(values)
    return request


def _refused(server: Server, call: Any, request: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=RPC_TIMEOUT)
    err: Any = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    details: str = err.details()
    return details


# ----------------------------------------------------------------- gRPC


@pytest.mark.parametrize(
    "dims", [[2, 0, 2**62], [0, 2**62], [1, 0, 2**62], [0, 2**63 - 1]], ids=str
)
def test_zero_size_shapes_with_huge_dimensions(server: Server, dims: list[int]) -> None:
    request = _predict("serving_default", "x", 1, dims, float_val=[1.0])
    details = _refused(server, server.stub.Predict, request)
    assert details.startswith('input "x": tensor_shape ')
    assert "has no elements" in details and "-byte limit for one tensor" in details
    log = server.process.log()
    assert "Traceback" not in log and "internal error" not in log


@pytest.mark.parametrize(
    ("dims", "limit"),
    [
        ([134217727], "2147483647-byte limit for one tensor"),
        ([2_000_000], "64 x that + 64 MiB"),
    ],
)
def test_one_string_broadcast_to_a_huge_shape(server: Server, dims: list[int], limit: str) -> None:
    """The issue's 53-byte request: Predict on classify_x_to_y with one empty string."""
    request = _predict("classify_x_to_y", "inputs", 7, dims, string_val=[b""])
    assert request.ByteSize() < 100
    before = server.rss()
    details = _refused(server, server.stub.Predict, request)
    assert details.startswith(f'input "inputs": tensor_shape {dims} of DT_STRING needs ')
    assert limit in details
    assert server.rss() - before < RSS_SLACK
    assert "Traceback" not in server.process.log()


def test_classify_context_copied_into_many_examples(server: Server) -> None:
    """40,000 empty examples over a 16 KiB context: a 96 KB request asks for 655 MB."""
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "hp2"
    request.model_spec.signature_name = "classify_x_to_y"
    listed = request.input.example_list_with_context
    listed.context.features.feature["pad"].bytes_list.value.append(b"c" * 16384)
    for _ in range(40_000):
        listed.examples.add()
    before = server.rss()
    details = _refused(server, server.stub.Classify, request)
    assert details.startswith("Input (serialized tf.Examples): tensor_shape [40000] of DT_STRING")
    assert (
        "-byte limit for a request whose values take " in details
        and "64 x that + 64 MiB" in details
    )
    assert server.rss() - before < RSS_SLACK


def test_a_small_broadcast_is_still_served(server: Server) -> None:
    request = _predict("serving_default", "x", 1, [1000, 1], float_val=[2.0])
    response = server.stub.Predict(request, timeout=RPC_TIMEOUT)
    y = tf.make_ndarray(response.outputs["y"])
    assert y.shape == (1000, 1) and float(y[0, 0]) == 3.0


# ----------------------------------------------------------------- REST

FLOATS = 6_000_000  # 30 MB of JSON


def _bad_floats_body() -> bytes:
    """Millions of floats with a string last: rejected after all were parsed."""
    return b'{"inputs": [' + b"0.5, " * FLOATS + b'"bad"]}'


def _rejected_body_returns_its_memory(server: Server) -> None:
    body = _bad_floats_body()
    status, reply, length = server.post("/v1/models/hp2:predict", body)  # warm-up
    assert status == 400, reply
    assert "is not of expected type: float" in reply["error"] and length < 1000
    baseline = server.rss()
    for _ in range(3):
        status, reply, _ = server.post("/v1/models/hp2:predict", body)
        assert status == 400, reply
    grown = server.rss() - baseline
    assert grown < RSS_SLACK, f"RSS grew by {grown // MiB} MiB after three rejected bodies"


def test_rejected_rest_body_returns_its_memory(server: Server) -> None:
    _rejected_body_returns_its_memory(server)


def test_rejected_rest_body_returns_its_memory_on_the_pool(
    serve: ServerFactory, tmp_path: Path
) -> None:
    """With --inline_inference=false a call runs on a pool thread: its future
    and its error's traceback once kept each other, and the body, alive."""
    pooled = _start(serve, tmp_path, "--inline_inference=false")
    try:
        _rejected_body_returns_its_memory(pooled)
    finally:
        pooled.channel.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [1.0], "inputs": "' + b"x" * 20 * MiB + b'"}',
        b'{"instances": [' + b"1.0, " * 4 * MiB + b"1.0], " + b'"signature_name": 7}',
        b'{"instances": [{"' + b"k" * 20 * MiB + b'": 1.0}]}',
    ],
    ids=["both-keys", "signature-name", "long-key"],
)
def test_errors_quote_a_few_hundred_bytes_of_a_huge_body(server: Server, body: bytes) -> None:
    status, reply, length = server.post("/v1/models/hp2:predict", body)
    assert status == 400, reply
    assert length < 1200, reply["error"][:2000]
    assert "..." in reply["error"]
