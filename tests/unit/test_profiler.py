"""functions/serving/profiler.py: the ProfilerService's logic, with a fake tracer
behind a real in-process grpcio server on a loopback port (codes as clients see
them), and the real tracer alone. A real server traced by TensorFlow's client is
in tests/integration/test_profiler.py."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

from functions.serving.api import profiler
from functions.serving.api.profiler import (
    ProfileRequest,
    ProfileResponse,
    ProfilerService,
    TerminateRequest,
    TerminateResponse,
    TracerLevels,
)
from functions.serving.process import LOOPBACK, free_port

ONE_EVENT = xplane_pb2.XSpace(
    planes=[
        xplane_pb2.XPlane(
            name="/host:CPU",
            lines=[xplane_pb2.XLine(events=[xplane_pb2.XEvent(metadata_id=1, duration_ps=5)])],
        )
    ]
).SerializeToString()
NO_EVENT = xplane_pb2.XSpace(
    planes=[xplane_pb2.XPlane(name="/host:CPU", lines=[xplane_pb2.XLine()])]
).SerializeToString()


class FakeTracer:
    def __init__(self, xspace: bytes = ONE_EVENT, fail: Exception | None = None) -> None:
        self.xspace = xspace
        self.fail = fail
        self.started: list[TracerLevels] = []
        self.stopped = 0
        self.discarded = 0

    def start(self, levels: TracerLevels) -> None:
        if self.fail is not None:
            raise self.fail
        self.started.append(levels)

    def stop(self) -> bytes:
        self.stopped += 1
        return self.xspace

    def discard(self) -> None:
        self.discarded += 1


class Service:
    """A started grpcio server holding one ProfilerService, and its calls."""

    def __init__(self, tracer: FakeTracer, written: dict[str, bytes]) -> None:
        self.tracer = tracer
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def write(path: str, data: bytes) -> None:
            if "unwritable" in path:
                raise OSError("read-only file system")
            written[path] = data

        self.server.add_generic_rpc_handlers((ProfilerService(tracer, write).handler(),))
        port = free_port()
        self.server.add_insecure_port(f"{LOOPBACK}:{port}")
        self.server.start()
        self.channel = grpc.insecure_channel(f"{LOOPBACK}:{port}")

    def call(self, method: str, request: Any, response: Any, timeout: float = 10.0) -> Any:
        stub = self.channel.unary_unary(
            f"/{profiler.SERVICE}/{method}",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        return stub(request, timeout=timeout)

    def profile(self, timeout: float = 10.0, **fields: Any) -> Any:
        return self.call("Profile", ProfileRequest(**fields), ProfileResponse, timeout)

    def close(self) -> None:
        self.channel.close()
        self.server.stop(0).wait()


@pytest.fixture
def written() -> dict[str, bytes]:
    return {}


@pytest.fixture
def tracer() -> FakeTracer:
    return FakeTracer()


@pytest.fixture
def service(tracer: FakeTracer, written: dict[str, bytes]) -> Iterator[Service]:
    started = Service(tracer, written)
    yield started
    started.close()


def options(duration_ms: int = 10, **fields: Any) -> bytes:
    return profiler_options_pb2.ProfileOptions(
        version=1, duration_ms=duration_ms, **fields
    ).SerializeToString()


# ---------------------------------------------------------------- pure logic


def test_tracer_levels_from_options() -> None:
    unset = profiler_options_pb2.ProfileOptions(host_tracer_level=3)
    assert profiler.tracer_levels(unset) == TracerLevels(2, 0, 1)  # version 0: defaults
    given = profiler_options_pb2.ProfileOptions(
        version=1, host_tracer_level=3, python_tracer_level=1, device_tracer_level=0
    )
    assert profiler.tracer_levels(given) == TracerLevels(3, 1, 0)


@pytest.mark.parametrize(
    ("root", "host", "override", "expected"),
    [
        ("/logs/plugins/profile", "127.0.0.1:8500", "", "/logs/plugins/profile/run/127.0.0.1_8500"),
        ("/logs/plugins/profile/", "h", "", "/logs/plugins/profile/run/h"),
        ("gs://bucket/logs", "h:1", "", "gs://bucket/logs/run/h_1"),
        ("/logs", "127.0.0.1:8500", "pod-0", "/logs/run/pod-0"),
        ("", "h", "", "run/h"),
    ],
)
def test_xplane_path(root: str, host: str, override: str, expected: str) -> None:
    request = ProfileRequest(repository_root=root, session_id="run", host_name=host)
    opts = profiler_options_pb2.ProfileOptions(override_hostname=override)
    assert profiler.xplane_path(request, opts) == expected + ".xplane.pb"


def test_xplane_path_override_from_advanced_configuration() -> None:
    opts = profiler_options_pb2.ProfileOptions()
    opts.advanced_configuration["override_hostname"].string_value = "pod-1"
    request = ProfileRequest(repository_root="/r", session_id="s", host_name="h:1")
    assert profiler.xplane_path(request, opts) == "/r/s/pod-1.xplane.pb"


def test_is_empty() -> None:
    assert profiler.is_empty(b"")
    assert profiler.is_empty(NO_EVENT)
    assert not profiler.is_empty(ONE_EVENT)


def test_message_fields_of_message_type_are_wire_compatible() -> None:
    # opts and xspace are declared bytes: what a real ProfileOptions/XSpace encodes.
    request = ProfileRequest.FromString(ProfileRequest(opts=options(7)).SerializeToString())
    assert profiler_options_pb2.ProfileOptions.FromString(request.opts).duration_ms == 7
    data = ProfileResponse(xspace=ONE_EVENT).SerializeToString()
    assert data[:1] == b"\x42"  # field 8, length-delimited, as a message field
    assert xplane_pb2.XSpace.FromString(ProfileResponse.FromString(data).xspace).planes


# ---------------------------------------------------------------- over gRPC


def test_profile_writes_the_xspace(
    service: Service, tracer: FakeTracer, written: dict[str, bytes]
) -> None:
    response = service.profile(
        opts=options(50, host_tracer_level=3),
        repository_root="/logs/plugins/profile",
        session_id="2026_01_01_00_00_00",
        host_name="127.0.0.1:8500",
    )
    assert not response.empty_trace and not response.xspace
    assert written == {
        "/logs/plugins/profile/2026_01_01_00_00_00/127.0.0.1_8500.xplane.pb": ONE_EVENT
    }
    assert tracer.started == [TracerLevels(3, 0, 0)] and tracer.stopped == 1


def test_profile_emit_xspace_returns_it_and_writes_nothing(
    service: Service, written: dict[str, bytes]
) -> None:
    response = service.profile(opts=options(), repository_root="/r", emit_xspace=True)
    assert response.xspace == ONE_EVENT and not response.empty_trace
    assert written == {}


def test_profile_reports_an_empty_trace(
    service: Service, tracer: FakeTracer, written: dict[str, bytes]
) -> None:
    tracer.xspace = NO_EVENT
    assert service.profile(opts=options(), repository_root="/r", session_id="s").empty_trace
    assert list(written) == ["/r/s/.xplane.pb"]  # written anyway, as TensorFlow does


def test_terminate_ends_a_profile_early(service: Service, tracer: FakeTracer) -> None:
    began = time.monotonic()
    result: list[Any] = []
    call = threading.Thread(
        target=lambda: result.append(
            service.profile(timeout=60, opts=options(50_000), repository_root="/r", session_id="s")
        )
    )
    call.start()
    while not tracer.started:
        time.sleep(0.01)
    other = service.call("Terminate", TerminateRequest(session_id="other"), TerminateResponse)
    assert other == TerminateResponse()
    service.call("Terminate", TerminateRequest(session_id="s"), TerminateResponse)
    call.join(30)
    assert result and not result[0].empty_trace
    assert time.monotonic() - began < 20 and tracer.stopped == 1


def test_a_cancelled_profile_discards_its_trace(
    service: Service, tracer: FakeTracer, written: dict[str, bytes]
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        service.profile(timeout=0.5, opts=options(60_000), repository_root="/r")
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while not tracer.discarded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tracer.discarded == 1 and tracer.stopped == 0 and written == {}


def test_a_tracer_that_cannot_start_is_internal(service: Service, tracer: FakeTracer) -> None:
    tracer.fail = RuntimeError("Another profiler is running.")
    with pytest.raises(grpc.RpcError) as info:
        service.profile(opts=options(), repository_root="/r")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Another profiler is running."


def test_a_second_concurrent_profile_is_internal(service: Service, tracer: FakeTracer) -> None:
    first: list[Any] = []
    call = threading.Thread(
        target=lambda: first.append(
            service.profile(opts=options(1500), repository_root="/r", session_id="a")
        )
    )
    call.start()
    while not tracer.started:
        time.sleep(0.01)
    with pytest.raises(grpc.RpcError) as info:
        service.profile(opts=options(), repository_root="/r", session_id="b")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "Another profiling session active."
    call.join(30)
    assert first and not first[0].empty_trace and tracer.stopped == 1


def test_an_unwritable_repository_is_internal(service: Service) -> None:
    with pytest.raises(grpc.RpcError) as info:
        service.profile(opts=options(), repository_root="/unwritable", session_id="s")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "could not write /unwritable/s/.xplane.pb" in (info.value.details() or "")


def test_monitor_and_unserved_methods_are_unimplemented(service: Service) -> None:
    for method in ("Monitor", "StartContinuousProfiling", "GetSnapshot"):
        stub = service.channel.unary_unary(f"/{profiler.SERVICE}/{method}")
        with pytest.raises(grpc.RpcError) as info:
            stub(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED, method


def test_the_real_tracer_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorFlowTracer: a trace of a few ops, as serialized XSpace; staging removed."""
    import tensorflow as tf

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tracer = profiler.TensorFlowTracer()
    tracer.start(TracerLevels())
    assert [p.name[:16] for p in tmp_path.iterdir()] == ["rollway-profile-"]
    for _ in range(20):
        tf.constant([[1.0]]) * 2.0 + 1.0
    xspace = xplane_pb2.XSpace.FromString(tracer.stop())
    assert "/host:CPU" in [plane.name for plane in xspace.planes]
    tracer.start(TracerLevels())  # the session ended: a new one may start
    tracer.discard()
    assert not list(tmp_path.iterdir())
