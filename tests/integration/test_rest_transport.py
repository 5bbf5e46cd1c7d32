"""The REST API's transport against a real `rollway serve`: slow clients, body
limits, the inference backlog, draining on SIGTERM, and binding the port.

A "gate" model makes requests wait deterministically: it writes
``<path>.started`` when it runs, then waits until ``<path>`` exists, so a test
decides when a request in flight may finish (no sleeps, no timing asserts).
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import pytest

from functions.serving.api.http_server import (
    BindError,
    HttpServerOptions,
    Receive,
    Scope,
    Send,
    serve_http,
)
from functions.serving.process import LOOPBACK, ServerProcess, free_port
from tests.conftest import HALF_PLUS_TWO, ServerFactory
from tests.integration.helpers import (
    model_config,
    server_config,
    wait_for_file,
    wait_refused,
    write_config,
)
from tests.models import export_gate

pytestmark = pytest.mark.integration

TIMEOUT = 60.0  # generous: the machine is shared
READ_TIMEOUT_MS = 1500
MAX_BYTES = 100_000
PREDICT = b"POST /v1/models/hp2:predict HTTP/1.1\r\nHost: rollway\r\n"


def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def raw_reply(sock: socket.socket) -> tuple[int, Any]:
    """Reads one HTTP response from ``sock``: (status, parsed JSON body)."""
    reply = http.client.HTTPResponse(sock)
    reply.begin()
    return reply.status, json.loads(reply.read())


def connect(port: int) -> socket.socket:
    return socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)


def gate_config(root: Path) -> Path:
    export_gate(root / "gate", 1)
    return write_config(
        root / "models.config",
        server_config(model_config("hp2", HALF_PLUS_TWO), model_config("gate", root / "gate")),
    )


@pytest.fixture(scope="module")
def rest(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server with one inference thread (so a backlog of BACKLOG_PER_THREAD),
    off the event loop (the gate model blocks its call), a 1.5 s read timeout
    and a 100 kB body limit; yields its REST port."""
    config = gate_config(tmp_path_factory.mktemp("transport"))
    port = free_port()
    serve_module(
        [f"--model_config_file={config}", f"--rest_api_port={port}",
         "--rest_api_num_threads=1", "--inline_inference=false",
         f"--rest_api_read_timeout_in_ms={READ_TIMEOUT_MS}",
         f"--rest_api_max_request_bytes={MAX_BYTES}"]
    )  # fmt: skip
    yield port


def test_tricklers_do_not_stop_real_clients_and_are_closed(rest: int) -> None:
    tricklers = [connect(rest) for _ in range(60)]
    for sock in tricklers:
        sock.sendall(PREDICT)
    open_ = set(tricklers)
    stop = threading.Event()

    def trickle() -> None:  # a byte per connection every 100 ms: never idle, never done
        while not stop.is_set() and open_:
            for sock in list(open_):
                try:
                    sock.sendall(b"X")
                except OSError:
                    open_.discard(sock)
            stop.wait(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        for i in range(10):
            assert call(rest, "POST", "/v1/models/hp2:predict", {"instances": [[float(i)]]}) == (
                200,
                {"predictions": [[i / 2 + 2]]},
            )
        # Every trickling connection is closed by the server, without an answer.
        deadline = time.monotonic() + TIMEOUT
        closed: set[socket.socket] = set()
        while len(closed) < len(tricklers) and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in tricklers if s not in closed], [], [], 1.0)
            for sock in ready:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                assert data == b"", data
                closed.add(sock)
        assert len(closed) == len(tricklers)
    finally:
        stop.set()
        thread.join()
        for sock in tricklers:
            sock.close()


def test_a_stalled_body_gets_408(rest: int) -> None:
    with connect(rest) as sock:
        sock.sendall(PREDICT + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        status, body = raw_reply(sock)
        assert status == 408
        assert "--rest_api_read_timeout_in_ms" in body["error"]
        assert sock.recv(1) == b""  # and the connection is closed


def test_a_declared_length_over_the_limit_gets_413_before_the_body(rest: int) -> None:
    with connect(rest) as sock:
        sock.sendall(PREDICT + b"Content-Length: 1000000000\r\n\r\n")  # and no body at all
        status, body = raw_reply(sock)
    assert status == 413
    assert body == {
        "error": "Request body of 1000000000 bytes is larger than the 100000-byte limit "
        "(--rest_api_max_request_bytes)"
    }


def test_a_chunked_body_over_the_limit_gets_413(rest: int) -> None:
    chunk = b"[" * 16_384
    with connect(rest) as sock:
        sock.sendall(PREDICT + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):  # 160 kB, past the 100 kB limit
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        status, body = raw_reply(sock)
    assert status == 413
    assert f"larger than the {MAX_BYTES}-byte limit" in body["error"]


def test_a_chunked_body_within_the_limit_is_served(rest: int) -> None:
    payload = json.dumps({"instances": [[1.0], [2.0]]}).encode()
    with connect(rest) as sock:
        sock.sendall(PREDICT + b"Transfer-Encoding: chunked\r\n\r\n")
        for part in (payload[:5], payload[5:]):
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        sock.sendall(b"0\r\n\r\n")
        assert raw_reply(sock) == (200, {"predictions": [[2.5], [3.0]]})


def test_a_full_backlog_gets_503(rest: int, tmp_path: Path) -> None:
    """One thread, so BACKLOG_PER_THREAD admitted: 2 more requests that cannot
    finish before the gate opens are answered at once with 503 UNAVAILABLE."""
    from functions.serving.api.tfserving.rest_api import BACKLOG_PER_THREAD

    gate = tmp_path / "gate"
    body = {"instances": [str(gate)]}
    sent = BACKLOG_PER_THREAD + 2
    with futures.ThreadPoolExecutor(sent) as pool:
        calls = [
            pool.submit(call, rest, "POST", "/v1/models/gate:predict", body) for _ in range(sent)
        ]
        rejected = []
        for done in futures.as_completed(calls, timeout=TIMEOUT):
            rejected.append(done.result())
            if len(rejected) == 2:
                break
        gate.touch()
        replies = [c.result(timeout=TIMEOUT) for c in calls]
    assert all(status == 503 and "--rest_api_num_threads" in r["error"] for status, r in rejected)
    assert sorted(status for status, _ in replies) == [200] * BACKLOG_PER_THREAD + [503] * 2
    assert {json.dumps(r) for status, r in replies if status == 200} <= {
        json.dumps({"predictions": [n]}) for n in range(10_000)
    }


def test_sigterm_drains_a_request_in_flight(serve: ServerFactory, tmp_path: Path) -> None:
    config = gate_config(tmp_path)
    port = free_port()
    server = serve([f"--model_config_file={config}", f"--rest_api_port={port}",
                    "--inline_inference=false"])  # fmt: skip
    gate = tmp_path / "gate"
    with futures.ThreadPoolExecutor(1) as pool:
        reply = pool.submit(
            call, port, "POST", "/v1/models/gate:predict", {"instances": [str(gate)]}
        )
        wait_for_file(Path(f"{gate}.started"), TIMEOUT)  # the request is running in TensorFlow
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        wait_refused(port, TIMEOUT)  # draining: the port no longer accepts
        gate.touch()
        status, body = reply.result(timeout=TIMEOUT)
    assert status == 200
    assert list(body) == ["predictions"] and isinstance(body["predictions"][0], int)
    assert server.wait_exit(TIMEOUT) == 0


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{os.getpid()}".encode()})


def test_reuse_port_shares_the_port_and_without_it_a_used_port_fails() -> None:
    port = free_port()
    first = serve_http(hello, HttpServerOptions(LOOPBACK, port, reuse_port=True))
    try:
        second = serve_http(hello, HttpServerOptions(LOOPBACK, port, reuse_port=True))
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/", timeout=TIMEOUT) as reply:
                assert reply.read() == str(os.getpid()).encode()
            with pytest.raises(BindError, match=f"{LOOPBACK}:{port}: Address already in use"):
                serve_http(hello, HttpServerOptions(LOOPBACK, port, reuse_port=False))
        finally:
            second.close()
    finally:
        first.close()


def test_a_rest_port_in_use_exits_1_naming_it(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind((LOOPBACK, 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = ServerProcess(
            ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}", f"--rest_api_port={port}"],
            tmp_path / "server.log",
        )
        with server:
            assert server.wait_exit(TIMEOUT * 2) == 1
        assert f"{LOOPBACK}:{port}: Address already in use" in server.log()
