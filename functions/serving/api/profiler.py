"""TensorFlow's ProfilerService on rollway's own gRPC ports (``--enable_profiler``).

TF Serving adds TensorFlow's C++ ``ProfilerServiceImpl`` to its gRPC server, so
``tf.profiler.experimental.client.trace("grpc://host:port", logdir, ms)`` and
TensorBoard's "Capture profile" trace a model server on its serving port.
grpcio cannot host that C++ service, and TensorFlow's standalone profiler server
(``tf.profiler.experimental.server.start``) listens on ``[::]:port``: every
interface, plaintext, with no way to choose the address. So this module serves
the same service (``tensorflow.ProfilerService``, tsl/profiler/protobuf/
profiler_service.proto; every method is unary) in Python on rollway's server,
hence on every port and socket it binds, with its TLS, over TensorFlow's
in-process profiler. It follows tsl/profiler/rpc/profiler_service_impl.cc:

* ``Profile`` traces for ``opts.duration_ms`` (from ``opts.start_timestamp_ns``
  when set), ended early by ``Terminate`` of its ``session_id`` or by the
  client going away; then writes the XSpace to
  ``<repository_root>/<session_id>/<host_name>.xplane.pb`` (``:`` becomes
  ``_``; ``override_hostname`` wins over ``host_name``), or returns it in the
  response when ``emit_xspace`` is set. ``empty_trace`` says that no event was
  recorded (the client then retries). One trace at a time per process: a second
  concurrent ``Profile`` is INTERNAL, as in TensorFlow. The tracer levels come
  from ``opts`` (TensorFlow's defaults when ``opts.version`` is 0); other
  options (e.g. ``include_dataset_ops``, ``trace_options``) are not passed on.
* ``Terminate`` ends the ``Profile`` of that ``session_id`` early.
* ``Monitor`` is UNIMPLEMENTED, as in TensorFlow; the continuous-profiling
  methods are not served (UNIMPLEMENTED).

The messages are a subset of profiler_service.proto (the tensorflow wheel ships
no Python classes for it), built at import in a private descriptor pool. Fields
of message type (``opts``, ``xspace``) are declared ``bytes``: the same wire
encoding, decoded with the wheel's ``profiler_options_pb2`` and ``xplane_pb2``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.tsl.profiler.protobuf import profiler_options_pb2, xplane_pb2

from functions.serving.api.grpc_errors import rpc_errors
from loader.errors import Internal

log = logging.getLogger("rollway.profiler")

SERVICE = "tensorflow.ProfilerService"
POLL_SECONDS = 0.01  # how often a running Profile checks Terminate and cancellation

_F = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, label)]), numbered as in profiler_service.proto.
_SUBSET: list[tuple[str, list[tuple[str, int, int, int]]]] = [
    ("ProfileRequest", [
        ("duration_ms", 1, _F.TYPE_UINT64, _F.LABEL_OPTIONAL),
        ("max_events", 2, _F.TYPE_UINT64, _F.LABEL_OPTIONAL),
        ("tools", 3, _F.TYPE_STRING, _F.LABEL_REPEATED),
        ("opts", 4, _F.TYPE_BYTES, _F.LABEL_OPTIONAL),  # tensorflow.ProfileOptions
        ("repository_root", 5, _F.TYPE_STRING, _F.LABEL_OPTIONAL),
        ("session_id", 6, _F.TYPE_STRING, _F.LABEL_OPTIONAL),
        ("host_name", 7, _F.TYPE_STRING, _F.LABEL_OPTIONAL),
        ("emit_xspace", 9, _F.TYPE_BOOL, _F.LABEL_OPTIONAL),
    ]),
    ("ProfileResponse", [
        ("empty_trace", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL),
        ("xspace", 8, _F.TYPE_BYTES, _F.LABEL_OPTIONAL),  # tensorflow.profiler.XSpace
    ]),
    ("TerminateRequest", [("session_id", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL)]),
    ("TerminateResponse", []),
]  # fmt: skip


def _message_classes() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="rollway/profiler_service_subset.proto", package="tensorflow", syntax="proto3"
    )
    for name, fields in _SUBSET:
        message = file.message_type.add(name=name)
        for field, number, kind, label in fields:
            message.field.add(name=field, number=number, type=kind, label=label)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{name}"))
        for name, _ in _SUBSET
    }


_MESSAGES = _message_classes()
ProfileRequest: Any = _MESSAGES["ProfileRequest"]
ProfileResponse: Any = _MESSAGES["ProfileResponse"]
TerminateRequest: Any = _MESSAGES["TerminateRequest"]
TerminateResponse: Any = _MESSAGES["TerminateResponse"]


@dataclass(frozen=True)
class TracerLevels:
    """What ``tf.profiler.experimental.ProfilerOptions`` takes; its defaults."""

    host: int = 2
    python: int = 0
    device: int = 1


def tracer_levels(opts: Any) -> TracerLevels:
    """The levels of a ProfileOptions; version 0 (an unset message) means defaults."""
    if not opts.version:
        return TracerLevels()
    return TracerLevels(opts.host_tracer_level, opts.python_tracer_level, opts.device_tracer_level)


def xplane_path(request: Any, opts: Any) -> str:
    """Where TensorFlow's SaveXSpace writes the trace of ``request``."""
    override = opts.override_hostname
    if not override and "override_hostname" in opts.advanced_configuration:
        override = opts.advanced_configuration["override_hostname"].string_value
    file_name = f"{override or request.host_name}.xplane.pb".replace(":", "_")
    return join_path(request.repository_root, request.session_id, file_name)


def join_path(*parts: str) -> str:
    """tsl's io::JoinPath: empty parts are skipped, one '/' between the others."""
    kept = [part for part in parts if part]
    if not kept:
        return ""
    return "/".join([kept[0].rstrip("/"), *(part.strip("/") for part in kept[1:])])


def is_empty(xspace: bytes) -> bool:
    """tsl's IsEmpty(XSpace): no line of any plane holds an event."""
    space = xplane_pb2.XSpace.FromString(xspace)
    return not any(line.events for plane in space.planes for line in plane.lines)


class Tracer(Protocol):
    """The process's profiler: one trace at a time."""

    def start(self, levels: TracerLevels) -> None:
        """Starts tracing; raises if it cannot (e.g. a trace is running)."""

    def stop(self) -> bytes:
        """Ends the trace started last; returns its serialized XSpace."""

    def discard(self) -> None:
        """Ends the trace started last, keeping nothing."""


class TensorFlowTracer:
    """``tf.profiler.experimental``: its trace goes through a staging directory,
    the only way its public API hands out the XSpace."""

    def __init__(self) -> None:
        self._staging = ""

    def start(self, levels: TracerLevels) -> None:
        import tensorflow as tf

        staging = tempfile.mkdtemp(prefix="rollway-profile-")
        try:
            tf.profiler.experimental.start(
                staging,
                tf.profiler.experimental.ProfilerOptions(
                    host_tracer_level=levels.host,
                    python_tracer_level=levels.python,
                    device_tracer_level=levels.device,
                ),
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._staging = staging

    def stop(self) -> bytes:
        import tensorflow as tf

        staging, self._staging = self._staging, ""
        try:
            tf.profiler.experimental.stop(save=True)
            # <staging>/plugins/profile/<timestamp>/<hostname>.xplane.pb
            found = glob.glob(os.path.join(staging, "plugins", "profile", "*", "*.xplane.pb"))
            if len(found) != 1:
                raise Internal(f"the profiler wrote {len(found)} XSpace files, expected 1")
            with open(found[0], "rb") as file:
                return file.read()
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def discard(self) -> None:
        import tensorflow as tf

        staging, self._staging = self._staging, ""
        try:
            tf.profiler.experimental.stop(save=False)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def write_file(path: str, data: bytes) -> None:
    """Writes through TensorFlow's file systems, as SaveXSpace does (gs://, ...)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(data)


class ProfilerService:
    """``tensorflow.ProfilerService``; ``tracer`` and ``write`` are seams for tests."""

    def __init__(
        self,
        tracer: Tracer | None = None,
        write: Callable[[str, bytes], None] = write_file,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._tracer = tracer if tracer is not None else TensorFlowTracer()
        self._write = write
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._busy = False
        self._terminated: set[str] = set()  # session ids told to stop (TF keeps them too)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        def unary(method: Callable[..., Any], request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                method,
                request_deserializer=request.FromString if request else None,
                response_serializer=response.SerializeToString if response else None,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Profile": unary(self.profile, ProfileRequest, ProfileResponse),
                "Terminate": unary(self.terminate, TerminateRequest, TerminateResponse),
                "Monitor": unary(self.monitor, None, None),
            },
        )

    @rpc_errors
    def profile(self, request: Any, context: grpc.ServicerContext) -> Any:
        opts = profiler_options_pb2.ProfileOptions.FromString(request.opts)
        with self._lock:
            # Refused as TensorFlow's profiler refuses a second session; the
            # flag keeps the refusal from touching the trace that is running.
            busy, self._busy = self._busy, True
        if busy:
            raise Internal("Another profiling session active.")
        try:
            return self._profile(request, opts, context)
        finally:
            with self._lock:
                self._busy = False

    def _profile(self, request: Any, opts: Any, context: grpc.ServicerContext) -> Any:
        duration_ms = opts.duration_ms or request.duration_ms
        log.info("profiling for %d ms (session %r)", duration_ms, request.session_id)
        # grpc.aio's context for synchronous handlers has no is_active(): a
        # callback records the RPC's end (cancelled, past its deadline, or the
        # server stopping) instead.
        ended = threading.Event()
        context.add_callback(ended.set)

        def active() -> bool:
            return not ended.is_set()

        if not self._wait(None, opts.start_timestamp_ns, active):
            return ProfileResponse()  # the client is gone: nobody reads this answer
        try:
            self._tracer.start(tracer_levels(opts))
        except Internal:
            raise
        except Exception as err:
            raise Internal(getattr(err, "message", None) or str(err)) from err
        until_ns = self._clock_ns() + duration_ms * 1_000_000
        if not self._wait(request.session_id, until_ns, active):
            self._tracer.discard()
            return ProfileResponse()
        try:
            xspace = self._tracer.stop()
        except Internal:
            raise
        except Exception as err:
            raise Internal(f"could not collect the trace: {err}") from err
        response = ProfileResponse(empty_trace=is_empty(xspace))
        if request.emit_xspace:
            response.xspace = xspace
            return response
        path = xplane_path(request, opts)
        try:
            self._write(path, xspace)
        except Exception as err:
            raise Internal(f"could not write {path}: {err}") from err
        log.info("profile written to %s (%d bytes)", path, len(xspace))
        return response

    def _wait(self, session_id: str | None, until_ns: int, active: Callable[[], bool]) -> bool:
        """Sleeps until ``until_ns`` (wall clock, as TensorFlow's) or until a
        Terminate of ``session_id``; False when the RPC ended first (cancelled,
        past its deadline, or the server stopping)."""
        while self._clock_ns() < until_ns:
            if session_id is not None:
                with self._lock:
                    if session_id in self._terminated:
                        self._terminated.discard(session_id)
                        return True
            if not active():
                return False
            time.sleep(POLL_SECONDS)
        return active()

    @rpc_errors
    def terminate(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._terminated.add(request.session_id)
        return TerminateResponse()

    def monitor(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "unimplemented.")


def add_profiler_service(server: grpc.aio.Server) -> ProfilerService:
    """Serves ``tensorflow.ProfilerService`` on ``server`` (before it starts)."""
    service = ProfilerService()
    server.add_generic_rpc_handlers((service.handler(),))
    return service
