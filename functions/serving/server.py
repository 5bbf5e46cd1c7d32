"""``rollway serve``: wires flags, config, core, gRPC services and health.

Startup order: parse and validate flags (usage errors exit 2), read the model
config (a base path whose URI scheme no storage backend reads exits 2 too),
start the gRPC server (health says NOT_SERVING), load every model's aspired
versions (any failure exits 1 naming the model, version and cause), apply
labels, then report SERVING. SIGTERM/SIGINT drain: health goes
NOT_SERVING, in-flight gRPC and REST calls get a 10 s grace, then the
process exits 0, within 12 s of the signal whatever still runs (_Watchdog).

With ``--assignments`` the models come from a store's assignments instead
(``functions/serving/assigned.py``): the versions are fetched before they load,
health and the REST port (``/v1/ready``) wait until every assigned version is
AVAILABLE, and a failed or timed-out startup exits 1 at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from functions.serving import flags, logs
from functions.serving.api.grpc_server import GrpcServer, off_loop
from functions.serving.api.health import ModelHealth
from functions.serving.core.assignments.settings import AssignmentSettings
from functions.serving.core.harness import LoadRetries
from functions.serving.core.manager import Manager, local_versions
from functions.serving.core.repository import CacheDir, RepositoryOptions, scheme_problem
from functions.serving.core.serving_core import ServingCore
from functions.serving.dataplane.plane import DataPlane
from functions.serving.flags import ServerOptions
from functions.serving.metrics import ServingMetrics, enable_multiprocess_metrics
from functions.serving.runtime.batching import BatchingOptions
from functions.serving.runtime.loading import RuntimeOptions, load_servable
from functions.serving.runtime.servable import Servable
from loader.errors import ConfigError, FailedPrecondition, RollwayError
from loader.model_config import ModelSpec, read_model_server_config, single_model_config

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from functions.serving.api.v2.inference import V2Api
    from functions.serving.core.assignments.source import AssignedModels
    from functions.serving.workers.link import SupervisorLink

S = TypeVar("S")

log = logging.getLogger("rollway.serve")

VERSION = "0.1.0"
# TF Serving sets SetMaxMessageSize(kint32max); Python gRPC defaults to 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1
SHUTDOWN_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.5  # how often the waiting main thread lets a signal's handler run
# The promise to the orchestrator: the process is gone this long after SIGTERM,
# whatever still runs (within Kubernetes' default 30 s termination grace).
EXIT_DEADLINE_SECONDS = SHUTDOWN_GRACE_SECONDS + 2.0
# After the grace: answers finishing at its end are written, the servers close.
DRAIN_SLACK_SECONDS = 0.5
# The most the watchdog waits for the log handlers to flush before it exits.
FLUSH_SECONDS = 0.25
# health.drain() waits on the gRPC loop, which an inline call may block.
HEALTH_DRAIN_SECONDS = 1.0


@dataclass
class _Feed(Generic[S]):
    """Where the served versions come from: the config's base paths (the core,
    with its file-system source), the store's assignments (their source), or,
    in a worker, the supervisor (its link)."""

    manager: Manager[S]
    core: ServingCore[S] | None = None
    assigned: AssignedModels | None = None
    link: SupervisorLink | None = None

    def start(self, specs: Sequence[ModelSpec]) -> None:
        """Loads the first models; raises naming what failed."""
        if self.assigned is not None:
            self.assigned.start(self.manager)
        elif self.core is not None:
            self.core.start(specs)

    def reload(self, specs: Sequence[ModelSpec]) -> None:
        if self.link is not None:
            self.link.reload(specs)
            return
        if self.core is None:
            raise FailedPrecondition("the served models come from --assignments")
        self.core.reload(specs)

    def close(self) -> None:
        if self.assigned is not None:
            self.assigned.close()
        if self.link is not None:
            self.link.close()
        if self.core is not None:
            self.core.close()
        else:
            self.manager.close()


def _v2_api(o: ServerOptions, plane: DataPlane, feed: _Feed[Servable]) -> V2Api:
    """The Open Inference Protocol over ``plane``, its repository from ``feed``."""
    from functions.serving.api.v2.inference import V2Api
    from functions.serving.api.v2.repository import AssignedRepository, ConfigRepository

    if o.assignments:
        return V2Api(plane, AssignedRepository(feed.manager.specs), server_version=VERSION)

    def served() -> Sequence[ModelSpec]:
        specs = feed.manager.specs()
        if feed.link is None:
            return specs
        # A worker's manager knows names only: its supervisor holds the base paths.
        catalog = {s.name: s for s in _model_specs(o)}
        return [catalog[s.name] for s in specs if s.name in catalog]

    return V2Api(
        plane,
        ConfigRepository(served, lambda: _model_specs(o), feed.reload),
        server_version=VERSION,
    )


class _Shutdown(Exception):
    """Raised by the signal handler while startup is still loading models."""


class _Watchdog:
    """Bounds the exit after a stop: :meth:`arm` (at SIGTERM, or when a shutdown
    starts without one) starts the countdown of ``EXIT_DEADLINE_SECONDS``; if
    the process still runs then, it logs the threads still running, flushes
    the logs and ends with ``os._exit(code)``.

    Why: neither a TensorFlow call on a thread nor a call inline on the gRPC or
    REST event loop can be interrupted, the feed's close waits for loads, and
    the interpreter's exit joins the executors' threads; any of them would
    keep the process past the orchestrator's grace.

    The code is the shutdown's own (0 after SIGTERM), also when it cuts calls
    short: Kubernetes never restarts a container of a pod being deleted,
    whatever its code, and a Job counts a non-zero one as a failure; the
    termination was asked for and kept its bound. The calls cut short are
    their clients' errors, and the log's warning here, not the process's."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # the signal handler may arm it inside arm()
        self._stopped_at: float | None = None
        self._code = 0

    def arm(self, code: int | None = None) -> float:
        """Starts the countdown (the first call only), and sets the exit code
        when given; returns when the drain's grace ends (``time.monotonic()``)."""
        with self._lock:
            if code is not None:
                self._code = code
            if self._stopped_at is None:
                self._stopped_at = time.monotonic()
                threading.Thread(target=self._wait, name="rollway-exit-watchdog",
                                 daemon=True).start()  # fmt: skip
            return self._stopped_at + SHUTDOWN_GRACE_SECONDS

    def _wait(self) -> None:
        assert self._stopped_at is not None
        deadline = self._stopped_at + EXIT_DEADLINE_SECONDS - FLUSH_SECONDS
        time.sleep(max(0.0, deadline - time.monotonic()))
        self.exit_now(f"still running {EXIT_DEADLINE_SECONDS - FLUSH_SECONDS:.1f} s after the stop")

    def exit_now(self, why: str) -> None:
        """Logs ``why`` and what still runs, flushes the logs, exits with the code."""
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        running = [
            f"  {names.get(ident, ident)}: {frame.f_code.co_filename}:{frame.f_lineno} "
            f"in {frame.f_code.co_name}"
            for ident, frame in sys._current_frames().items()
            if ident != me
        ]
        log.warning("%s; exiting with code %d. Threads still running:\n%s",
                    why, self._code, "\n".join(running))  # fmt: skip
        # A handler blocked on a full pipe must not hold the exit.
        flush = threading.Thread(target=logging.shutdown, daemon=True)
        flush.start()
        flush.join(FLUSH_SECONDS)
        os._exit(self._code)


# One per process, as the signals are.
_watchdog = _Watchdog()


class _Stop:
    """SIGTERM and SIGINT set :attr:`event` and arm the exit watchdog; while
    :attr:`starting`, the handler also raises :class:`_Shutdown` in the main
    thread, interrupting the loads."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.starting = True

    def wait(self) -> None:
        """Blocks the main thread until a stop, waking twice a second: the kernel
        may deliver the signal to any thread, and Python runs its handler only
        when the main thread next runs bytecode; a wait without a timeout would
        keep it blocked (seen: a SIGTERM handled only a minute later)."""
        while not self.event.wait(POLL_SECONDS):
            pass

    def install(self, sigint: bool = True) -> None:
        """``sigint=False`` in a worker: the supervisor decides when it drains."""
        signal.signal(signal.SIGTERM, self._on_signal)
        if sigint:
            signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        _watchdog.arm()
        self.event.set()
        if self.starting:
            raise _Shutdown


def main(argv: Sequence[str] | None = None) -> int:
    parsed = flags.parse_flags(sys.argv[1:] if argv is None else argv)
    options = parsed.options
    if options.version:
        import tensorflow as tf

        print(f"rollway ModelServer: {VERSION}\nTensorFlow Library: {tf.__version__}")
        return 0
    logs.configure(options.log_format, options.log_level)
    workers = flags.worker_count(options.workers)
    if workers > 1:  # before any metric exists: the workers' metrics are summed
        metrics_dir = enable_multiprocess_metrics()
        try:
            return _main(options, functools.partial(_supervise, workers=workers))
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return _main(options, _serve)


def _main(options: ServerOptions, serve: Callable[..., int]) -> int:
    if options.assignments:  # imported only here: it registers its own metrics
        from functions.serving.core.assignments.source import AssignedModels

        metrics = ServingMetrics()
        return serve(options, (), metrics, AssignedModels(_assignment_settings(options), metrics))
    try:
        specs = _model_specs(options)
    except RollwayError as err:
        log.error("Failed to start server. Error: %s", err.message)
        return 1
    for spec in specs:
        if problem := scheme_problem(spec.base_path):
            print(f"rollway serve: error: model {spec.name}: {problem}", file=sys.stderr)
            return 2
    return serve(options, specs, ServingMetrics())


def _assignment_settings(o: ServerOptions) -> AssignmentSettings:
    return AssignmentSettings(
        store=o.assignments,
        models=tuple(m.strip() for m in o.models.split(",") if m.strip()),
        pin_generation=o.pin_generation,
        follow=o.follow,
        follow_poll_seconds=o.follow_poll_seconds,
        kafka_bootstrap_servers=o.kafka_bootstrap_servers,
        topic=o.assignments_topic,
        cache_dir=o.cache_dir,
        timeout_seconds=o.assignment_timeout_seconds,
    )


def _model_specs(o: ServerOptions) -> tuple[ModelSpec, ...]:
    if o.model_config_file:
        if o.model_base_path:
            log.warning("--model_config_file is set, so --model_name/--model_base_path are ignored")
        return read_model_server_config(o.model_config_file)
    return single_model_config(o.model_name, o.model_base_path)


def _configure_tensorflow(o: ServerOptions) -> Any:
    """Quiets TensorFlow's Python logger; returns the ConfigProto of every
    version's Session, with the thread-pool flags as TF Serving reads them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    if o.log_level.upper() != "DEBUG":
        # TF's Python logger repeats load-time notices (e.g. about TF1 reference
        # variables and the v1 loader) several times per version.
        tf.get_logger().setLevel(logging.ERROR)
    intra, inter = o.tensorflow_intra_op_parallelism, o.tensorflow_inter_op_parallelism
    if not intra and not inter:
        intra = inter = o.tensorflow_session_parallelism
    return config_pb2.ConfigProto(
        intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter
    )


def _batching(o: ServerOptions) -> BatchingOptions | None:
    """--enable_batching, with --batching_parameters_file or TF Serving's defaults."""
    if not o.enable_batching:
        return None
    if not o.batching_parameters_file:
        return BatchingOptions()
    from functions.serving.config_messages import BatchingParameters, read_text_proto

    return BatchingOptions.from_proto(
        read_text_proto(o.batching_parameters_file, BatchingParameters)
    )


def _load_function(
    o: ServerOptions,
    batching: BatchingOptions | None,
    session_config: Any,
    metrics: ServingMetrics,
) -> Any:
    """What the manager calls to load a version: the runtime's load, then warmup."""
    from functions.serving.dataplane.warmup import WarmupOptions, warmed

    runtime = RuntimeOptions(
        tags=tuple(t for t in o.saved_model_tags.split(",") if t),
        batching=batching,
        session_config=session_config,
        prefer_tflite=o.prefer_tflite_model,
        tflite_pools=o.num_tflite_pools,
        tflite_interpreters_per_pool=o.num_tflite_interpreters_per_pool,
    )
    load = functools.partial(load_servable, options=runtime, metrics=metrics)
    if not o.enable_model_warmup:
        return load
    warmup = WarmupOptions(
        o.num_request_iterations_for_warmup, o.enable_signature_method_name_check
    )
    return warmed(load, warmup, metrics)


# Bound on the executor when batching sizes it (threads start only as needed).
MAX_BATCHING_THREADS = 1024


def _grpc_server(
    o: ServerOptions, reuse_port: bool, batching: BatchingOptions | None
) -> GrpcServer:
    """``reuse_port``: in a worker, which shares the port with the others; else a
    port in use fails the bind (as TF Serving). With batching, every request
    waiting for its batch holds an executor thread, so the executor can hold
    the batches the batch threads take: at least max_batch_size x
    num_batch_threads threads (--grpc_max_threads alone would cap a batch)."""
    channel_options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    channel_options += flags.parse_channel_arguments(o.grpc_channel_arguments)
    threads = o.grpc_max_threads
    if batching is not None:
        wanted = batching.max_batch_size * batching.num_batch_threads
        threads = max(threads, min(MAX_BATCHING_THREADS, wanted))
    return GrpcServer(channel_options, threads)


def _inline_inference(o: ServerOptions) -> bool:
    """Whether the gRPC and REST handlers call the data plane on their event
    loop itself (--inline_inference).

    Inline is the fastest path (no thread hand-off, no GIL contention with a
    pool; measured: REST p99 15 ms against 200 ms at 32 connections, README's
    performance section), but it runs one call at a time per process. By
    default the runtimes that gain from concurrent calls get the executor
    instead: the batcher (requests wait in its queue for others to join) and
    TFLite interpreter pools of more than one interpreter."""
    if o.inline_inference != "auto":
        return o.inline_inference == "true"
    return not o.enable_batching and not (o.prefer_tflite_model and o.num_tflite_pools > 1)


def _feed(
    o: ServerOptions,
    load: Callable[[Any, Any], S],
    on_change: Callable[[], None],
    metrics: ServingMetrics,
    assigned: AssignedModels | None,
    link: SupervisorLink | None = None,
) -> _Feed[S]:
    """The manager, and the source that feeds it."""
    retry = LoadRetries(o.max_num_load_retries, max(o.load_retry_interval_micros, 0) / 1e6)
    if link is not None:  # a worker: the supervisor retries, and has checked the labels
        manager: Manager[S] = Manager(
            local_versions(load), LoadRetries(0, 0.0), o.num_load_threads, True, link.report,
            metrics,
        )  # fmt: skip
        return _Feed(manager, link=link)
    if assigned is None:  # the file-system source, polling the config's base paths
        core = ServingCore(
            load=load,
            retry=retry,
            num_load_threads=o.num_load_threads,
            allow_labels_for_unavailable=o.allow_version_labels_for_unavailable_models,
            file_system_poll_wait_seconds=o.file_system_poll_wait_seconds,
            on_change=on_change,
            metrics=metrics,
            repositories=RepositoryOptions(
                cache=CacheDir(o.cache_dir), require_manifest=o.require_manifest
            ),
        )
        return _Feed(core.manager, core=core)
    # the assignments source feeds the manager itself
    manager = Manager(
        local_versions(load),
        retry,
        o.num_load_threads,
        o.allow_version_labels_for_unavailable_models,
        on_change,
        metrics,
    )
    return _Feed(manager, assigned=assigned)


def _supervise(
    o: ServerOptions,
    specs: Sequence[ModelSpec],
    metrics: ServingMetrics,
    assigned: AssignedModels | None = None,
    *,
    workers: int,
) -> int:
    """--workers N: the sources run here, against the fleet of workers."""
    from functions.serving.workers.fleet import Fleet
    from functions.serving.workers.supervisor import Workers

    fleet = Fleet(workers)
    feed = _feed(o, fleet.load, fleet.changed, metrics, assigned)
    fleet.bind(feed.manager, lambda: not assigned or assigned.ready())

    def startup_failed(why: str) -> None:
        # As with assignments: the loads cannot be interrupted, and a worker that
        # cannot start (a port in use, say) would fail again: exit now.
        log.error("Failed to start server. Error: %s", why)
        processes.stop(SHUTDOWN_GRACE_SECONDS)
        logging.shutdown()
        os._exit(1)

    processes = Workers(
        fleet, worker_main, o, feed.reload, on_exit=metrics.process_exited,
        on_startup_failure=startup_failed,
    )  # fmt: skip
    stop = _Stop()
    stop.install()
    code = 0
    try:
        processes.start()
        log.info("supervising %d workers", workers)
        feed.start(specs)
        fleet.wait_ready()  # every worker listening, with every version
        stop.starting = False
        processes.enable_restarts()
        if o.model_config_file and feed.core is not None:
            feed.core.watch_config_file(o.model_config_file, o.model_config_file_poll_wait_seconds)
        log.info("serving models: %s", ", ".join(s.name for s in feed.manager.specs()) or "(none)")
        stop.wait()
    except _Shutdown:
        pass
    except RollwayError as err:
        stop.starting = False
        log.error("Failed to start server. Error: %s", err.message)
        code = 1
    grace_end = _watchdog.arm(code)
    if feed.assigned is not None:
        feed.assigned.close()  # stops following first: no swap during the drain
        feed.assigned = None
    # Each worker drains for the grace from its own SIGTERM; one still running
    # just after it is killed, so the supervisor too exits in the bound.
    processes.stop(max(0.0, grace_end + DRAIN_SLACK_SECONDS - time.monotonic()))
    feed.close()
    log.info("stopped")
    return code


def worker_main(options: ServerOptions, conn: Connection, index: int) -> None:
    """A worker process (started by ``workers.supervisor``): serves what the
    supervisor says on the shared ports."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to drain
    logs.configure(options.log_format, options.log_level)
    from functions.serving.workers.link import SupervisorLink

    sys.exit(_serve(options, (), ServingMetrics(), link=SupervisorLink(conn, index)))


def _serve(
    o: ServerOptions,
    specs: Sequence[ModelSpec],
    metrics: ServingMetrics,
    assigned: AssignedModels | None = None,
    link: SupervisorLink | None = None,
) -> int:
    """One serving process: the whole server, or (``link``) one of --workers."""
    try:
        batching = _batching(o)
    except RollwayError as err:
        log.error("Failed to start server. Error: %s", err.message)
        return 1
    session_config = _configure_tensorflow(o)
    load = _load_function(o, batching, session_config, metrics)
    # With assignments REST opens only once every assigned version is ready, and
    # gRPC health says SERVING only after that: a client told SERVING finds both ports.
    rest_late = bool(o.rest_api_port and assigned)
    ports_open = threading.Event()
    if not rest_late:
        ports_open.set()
    # plane is built below: it needs the core, whose changes refresh health.
    health = ModelHealth(lambda: ports_open.is_set() and plane.ready())
    feed: _Feed[Servable] = _feed(o, load, health.refresh, metrics, assigned, link)
    plane = _plane(o, feed, assigned, link)
    stop = _Stop()  # a signal, or a worker's supervisor gone
    server = _grpc_server(o, reuse_port=link is not None, batching=batching)
    v2 = _v2_api(o, plane, feed)
    _add_api_services(server, o, plane, feed, metrics, v2)
    _add_optional_services(server, o, health)
    if link is not None:
        link.start(feed.manager, on_view=health.refresh, on_lost=stop.event.set)
        link.wait_loaded()
    try:
        metrics_path = _metrics_path(o)
        addresses = _bind(server, o)
    except (RuntimeError, RollwayError) as err:
        log.error("Failed to start server. Error: %s", err)
        feed.close()
        return 1
    start_rest = functools.partial(
        _start_rest, o, plane, v2, metrics, metrics_path, reuse_port=link is not None
    )
    try:
        rest = _open_ports(
            server, addresses, start_rest if o.rest_api_port and not assigned else None
        )
    except RollwayError:  # _start_rest logged it
        return _shutdown(server, None, feed, health, 1)
    if link is not None:
        link.listening()
    stop.install(sigint=link is None)
    try:
        rest = (
            _start_models(feed, specs, health, start_rest if rest_late else None, ports_open)
            or rest
        )
        stop.starting = False
    except _Shutdown:
        return _shutdown(server, rest, feed, health, 0)
    except RollwayError as err:
        log.error("Failed to start server. Error: %s", err.message)
        if assigned is not None:
            # Fetches and loads still running cannot be interrupted, and the
            # bound on startup is a promise to the orchestrator: exit now.
            assigned.close()
            logging.shutdown()
            os._exit(1)
        return _shutdown(server, rest, feed, health, 1)
    if o.model_config_file and feed.core is not None:
        feed.core.watch_config_file(o.model_config_file, o.model_config_file_poll_wait_seconds)
    log.info("serving models: %s", ", ".join(s.name for s in feed.manager.specs()) or "(none)")
    stop.wait()
    return _shutdown(server, rest, feed, health, 0)


def _open_ports(
    server: GrpcServer, addresses: Sequence[str], start_rest: Callable[[], Any] | None
) -> Any:
    """Starts the gRPC server on its bound ``addresses``, and REST (returned)."""
    server.start()
    for address in addresses:
        log.info("Running gRPC ModelServer at %s ...", address)
    return start_rest() if start_rest is not None else None


def _plane(
    o: ServerOptions,
    feed: _Feed[Servable],
    assigned: AssignedModels | None,
    link: SupervisorLink | None,
) -> DataPlane:
    """With assignments, ready only once startup loaded every assigned version;
    in a worker, the supervisor's view of the whole server says."""
    if link is not None:
        return DataPlane(
            feed.manager,
            check_method=o.enable_signature_method_name_check,
            ready=link.ready,
            statuses=link.statuses,
        )
    return DataPlane(
        feed.manager,
        check_method=o.enable_signature_method_name_check,
        ready=lambda: feed.manager.is_ready() and (not assigned or assigned.ready()),
    )


def _add_api_services(
    server: GrpcServer,
    o: ServerOptions,
    plane: DataPlane,
    feed: _Feed[Servable],
    metrics: ServingMetrics,
    v2: V2Api,
) -> None:
    """TF Serving's PredictionService and ModelService, and the Open Inference
    Protocol's GRPCInferenceService."""
    from functions.serving.api.tfserving.grpc_api import add_services  # imports TensorFlow
    from functions.serving.api.v2 import grpc_api as v2_grpc

    run = off_loop(None if _inline_inference(o) else server.executor)
    v2_grpc.add_services(server.server, v2, metrics, run)
    add_services(
        server.server,
        plane,
        feed.reload,
        metrics,
        run,
        o.enable_serialization_as_tensor_content,
        reload_refusal=(
            "the served models come from --assignments; change them with the store's "
            "assignments (rollway label, pin, rollback), not HandleReloadConfigRequest"
            if o.assignments
            else ""
        ),
    )


def _add_optional_services(server: GrpcServer, o: ServerOptions, health: ModelHealth) -> None:
    """The services beside TF Serving's API, on the same ports: health, the profiler."""
    if o.enable_grpc_healthcheck_service:
        health.add_to(server)
    if o.enable_profiler:  # TensorFlow's ProfilerService, as TF Serving's server.cc adds it
        from functions.serving.api.profiler import add_profiler_service

        add_profiler_service(server.server)


def _start_models(
    feed: _Feed[Servable],
    specs: Sequence[ModelSpec],
    health: ModelHealth,
    start_rest: Callable[[], Any] | None,
    ports_open: threading.Event,
) -> Any:
    """Loads the models; returns the REST server when it may start only now
    (with assignments, REST starts once every assigned version is ready, and
    ``ports_open`` lets health report SERVING once it listens)."""
    feed.start(specs)
    rest = start_rest() if start_rest is not None else None
    ports_open.set()
    health.refresh()
    return rest


def _bind(server: GrpcServer, o: ServerOptions) -> list[str]:
    addresses = []
    if o.port:
        host = f"[{o.bind_address}]" if ":" in o.bind_address else o.bind_address
        addresses.append(f"{host}:{o.port}")
    if o.grpc_socket_path:
        addresses.append(f"unix:{o.grpc_socket_path}")
    credentials = _server_credentials(o.ssl_config_file) if o.ssl_config_file else None
    for address in addresses:
        if server.add_port(address, credentials) == 0:
            raise RuntimeError(f"could not bind the gRPC server to {address}")
    return addresses


def _server_credentials(path: str) -> grpc.ServerCredentials:
    """TF Serving's BuildServerCredentialsFromSSLConfigFile."""
    from functions.serving.config_messages import SSLConfig, read_text_proto

    config = read_text_proto(path, SSLConfig)
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"{path}: server_key and server_cert (PEM text) are required")
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=bool(config.client_verify),
    )


def _metrics_path(o: ServerOptions) -> str | None:
    """The Prometheus scrape path from --monitoring_config_file, if enabled."""
    if not o.monitoring_config_file:
        return None
    from functions.serving.config_messages import MonitoringConfig, read_text_proto
    from functions.serving.metrics import DEFAULT_PATH

    config = read_text_proto(o.monitoring_config_file, MonitoringConfig).prometheus_config
    if not config.enable:
        return None
    if not o.rest_api_port:
        raise ConfigError(
            f"{o.monitoring_config_file} enables Prometheus, whose metrics are served on the "
            "REST port: set --rest_api_port"
        )
    path = str(config.path or DEFAULT_PATH)
    if not path.startswith("/"):
        raise ConfigError(f"{o.monitoring_config_file}: prometheus_config.path must start with /")
    return path


def _start_rest(
    o: ServerOptions,
    plane: DataPlane,
    v2: V2Api,
    metrics: ServingMetrics,
    metrics_path: str | None,
    reuse_port: bool = False,
) -> Any:
    """TF Serving's REST routes and the Open Inference Protocol's ``/v2`` on
    uvicorn, sharing one pool; the server's ``close()`` drains it. Raises
    ``BindError`` (a RollwayError) naming the address it cannot bind."""
    from functions.serving.api.http_server import Dispatcher, HttpServerOptions, serve_http
    from functions.serving.api.rest_calls import CallRunner
    from functions.serving.api.tfserving.rest_api import RestApi, RestOptions
    from functions.serving.api.v2.rest_api import PREFIX, V2RestApi

    runner = CallRunner(
        o.rest_api_num_threads, o.rest_api_timeout_in_ms / 1000.0, _inline_inference(o)
    )
    app = RestApi(
        plane,
        RestOptions(
            timeout_seconds=o.rest_api_timeout_in_ms / 1000.0,
            max_request_bytes=o.rest_api_max_request_bytes,
            metrics_path=metrics_path,
            cors=o.rest_api_enable_cors_support,
            inline=_inline_inference(o),
        ),
        workers=o.rest_api_num_threads,
        metrics=metrics,
        runner=runner,
    )
    v2_app = V2RestApi(v2, runner, o.rest_api_max_request_bytes, metrics)
    options = HttpServerOptions(
        host=o.bind_address,
        port=o.rest_api_port,
        reuse_port=reuse_port,
        read_timeout_seconds=o.rest_api_read_timeout_in_ms / 1000.0,
        max_request_bytes=o.rest_api_max_request_bytes,
        drain_seconds=SHUTDOWN_GRACE_SECONDS,
    )
    try:
        server = serve_http(Dispatcher(app, {PREFIX: v2_app}), options)
    except RollwayError as err:
        app.close()
        log.error("Failed to start server. Error: %s", err.message)
        raise
    if metrics_path:
        log.info("Prometheus metrics at http://%s:%d%s", o.bind_address, o.rest_api_port,
                 metrics_path)  # fmt: skip
    return server


def _shutdown(
    server: GrpcServer, rest: Any, feed: _Feed[Servable], health: ModelHealth, code: int
) -> int:
    """Health NOT_SERVING, stop following assignments, drain REST and gRPC
    together until the grace (counted from SIGTERM) ends, close the feed. The
    watchdog bounds it all; a drain still blocked after the grace (a call
    inline on its loop) exits at once, so the interpreter never finalizes
    under a running TensorFlow call."""
    grace_end = _watchdog.arm(code)

    def drain_health() -> None:
        with contextlib.suppress(TimeoutError):  # its loop is blocked: warned below
            health.drain()

    if not _until(time.monotonic() + HEALTH_DRAIN_SECONDS, drain_health):
        log.warning("the gRPC health service did not switch to NOT_SERVING in %.0f s",
                    HEALTH_DRAIN_SECONDS)  # fmt: skip
    if feed.assigned is not None:
        feed.assigned.close()  # stops following first: no swap during the drain
        feed.assigned = None
    drains = [functools.partial(server.stop, max(0.0, grace_end - time.monotonic()))]
    if rest is not None:
        drains.append(rest.close)
    drained = _until(grace_end + DRAIN_SLACK_SECONDS, *drains)
    feed.close()
    if not drained:
        _watchdog.exit_now(f"calls still running {SHUTDOWN_GRACE_SECONDS:.0f} s after the stop")
    log.info("stopped")
    return code


def _until(deadline: float, *calls: Callable[[], object]) -> bool:
    """Runs ``calls`` at once, each on a daemon thread; whether all returned by
    ``deadline`` (``time.monotonic()``). An exception is logged."""

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except Exception:
            log.exception("shutdown step failed")

    threads = [threading.Thread(target=run, args=(c,), name="rollway-drain", daemon=True)
               for c in calls]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(thread.is_alive() for thread in threads)
