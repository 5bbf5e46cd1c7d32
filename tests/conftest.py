"""Shared fixtures: TF Serving's test data, and real `rollway serve` processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from functions.serving.process import ServerProcess

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
