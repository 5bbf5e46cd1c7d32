"""``rollway serve``: wires flags, config, core, gRPC services and health.

Startup order: parse and validate flags (usage errors exit 2), read the model
config (a base path whose URI scheme no storage backend reads exits 2 too),
start the gRPC server (health says NOT_SERVING), load every model's aspired
versions (any failure exits 1 naming the model, version and cause), apply
labels, then report SERVING. SIGTERM/SIGINT drain: health goes
NOT_SERVING, in-flight RPCs get a grace period, then the process exits 0.

With ``--assignments`` the models come from a store's assignments instead
(``functions/serving/assigned.py``): the versions are fetched before they load,
health and the REST port (``/v1/ready``) wait until every assigned version is
AVAILABLE, and a failed or timed-out startup exits 1 at once.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc

from functions.serving import flags, logs
from functions.serving.api.health import ModelHealth
from functions.serving.core.assignments.settings import AssignmentSettings
from functions.serving.core.harness import LoadRetries
from functions.serving.core.manager import Manager, local_versions
from functions.serving.core.repository import CacheDir, RepositoryOptions, scheme_problem
from functions.serving.core.serving_core import ServingCore
from functions.serving.dataplane.plane import DataPlane
from functions.serving.flags import ServerOptions
from functions.serving.metrics import ServingMetrics
from functions.serving.runtime.batching import BatchingOptions
from functions.serving.runtime.loading import RuntimeOptions, load_servable
from functions.serving.runtime.servable import Servable
from loader.errors import ConfigError, FailedPrecondition, RollwayError
from loader.model_config import ModelSpec, read_model_server_config, single_model_config

if TYPE_CHECKING:
    from functions.serving.core.assignments.source import AssignedModels

log = logging.getLogger("rollway.serve")

VERSION = "0.1.0"
# TF Serving sets SetMaxMessageSize(kint32max); Python gRPC defaults to 4 MiB.
MAX_MESSAGE_BYTES = 2**31 - 1
SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass
class _Feed:
    """Where the served versions come from: the config's base paths (the core,
    with its file-system source) or the store's assignments (their source)."""

    manager: Manager[Servable]
    core: ServingCore[Servable] | None = None
    assigned: AssignedModels | None = None

    def start(self, specs: Sequence[ModelSpec]) -> None:
        """Loads the first models; raises naming what failed."""
        if self.assigned is not None:
            self.assigned.start(self.manager)
        elif self.core is not None:
            self.core.start(specs)

    def reload(self, specs: Sequence[ModelSpec]) -> None:
        if self.core is None:
            raise FailedPrecondition("the served models come from --assignments")
        self.core.reload(specs)

    def close(self) -> None:
        if self.assigned is not None:
            self.assigned.close()
        if self.core is not None:
            self.core.close()
        else:
            self.manager.close()


class _Shutdown(Exception):
    """Raised by the signal handler while startup is still loading models."""


def main(argv: Sequence[str] | None = None) -> int:
    parsed = flags.parse_flags(sys.argv[1:] if argv is None else argv)
    options = parsed.options
    if options.version:
        import tensorflow as tf

        print(f"rollway ModelServer: {VERSION}\nTensorFlow Library: {tf.__version__}")
        return 0
    logs.configure(options.log_format, options.log_level)
    if options.assignments:  # imported only here: it registers its own metrics
        from functions.serving.core.assignments.source import AssignedModels

        metrics = ServingMetrics()
        return _serve(options, (), metrics, AssignedModels(_assignment_settings(options), metrics))
    try:
        specs = _model_specs(options)
    except RollwayError as err:
        log.error("Failed to start server. Error: %s", err.message)
        return 1
    for spec in specs:
        if problem := scheme_problem(spec.base_path):
            print(f"rollway serve: error: model {spec.name}: {problem}", file=sys.stderr)
            return 2
    return _serve(options, specs, ServingMetrics())


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


def _grpc_server(o: ServerOptions) -> grpc.Server:
    channel_options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),
    ]
    channel_options += flags.parse_channel_arguments(o.grpc_channel_arguments)
    return grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=o.grpc_max_threads, thread_name_prefix="rollway-grpc"
        ),
        options=channel_options,
    )


def _feed(
    o: ServerOptions,
    load: Any,
    health: ModelHealth,
    metrics: ServingMetrics,
    assigned: AssignedModels | None,
) -> _Feed:
    """The manager, and the source that feeds it."""
    retry = LoadRetries(o.max_num_load_retries, max(o.load_retry_interval_micros, 0) / 1e6)
    if assigned is None:  # the file-system source, polling the config's base paths
        core = ServingCore(
            load=load,
            retry=retry,
            num_load_threads=o.num_load_threads,
            allow_labels_for_unavailable=o.allow_version_labels_for_unavailable_models,
            file_system_poll_wait_seconds=o.file_system_poll_wait_seconds,
            on_change=health.refresh,
            metrics=metrics,
            repositories=RepositoryOptions(
                cache=CacheDir(o.cache_dir), require_manifest=o.require_manifest
            ),
        )
        feed = _Feed(core.manager, core=core)
    else:  # the assignments source feeds the manager itself
        manager: Manager[Servable] = Manager(
            local_versions(load),
            retry,
            o.num_load_threads,
            o.allow_version_labels_for_unavailable_models,
            health.refresh,
            metrics,
        )
        feed = _Feed(manager, assigned=assigned)
    return feed


def _serve(
    o: ServerOptions,
    specs: Sequence[ModelSpec],
    metrics: ServingMetrics,
    assigned: AssignedModels | None = None,
) -> int:
    try:
        batching = _batching(o)
    except RollwayError as err:
        log.error("Failed to start server. Error: %s", err.message)
        return 1
    session_config = _configure_tensorflow(o)
    from functions.serving.api.tfserving.grpc_api import add_services  # imports TensorFlow

    load = _load_function(o, batching, session_config, metrics)
    # plane is built below: it needs the core, whose changes refresh health.
    health = ModelHealth(lambda: plane.ready())  # noqa: PLW0108
    feed = _feed(o, load, health, metrics, assigned)
    # With assignments, ready only once startup loaded every assigned version.
    plane = DataPlane(
        feed.manager,
        check_method=o.enable_signature_method_name_check,
        ready=lambda: feed.manager.is_ready() and (not assigned or assigned.ready()),
    )

    server = _grpc_server(o)
    add_services(
        server,
        plane,
        feed.reload,
        metrics,
        o.enable_serialization_as_tensor_content,
        reload_refusal=(
            "the served models come from --assignments; change them with the store's "
            "assignments (rollway label, pin, rollback), not HandleReloadConfigRequest"
            if o.assignments
            else ""
        ),
    )
    _add_optional_services(server, o, health)
    try:
        metrics_path = _metrics_path(o)
        addresses = _bind(server, o)
    except (RuntimeError, RollwayError) as err:
        log.error("Failed to start server. Error: %s", err)
        feed.close()
        return 1
    server.start()
    for address in addresses:
        log.info("Running gRPC ModelServer at %s ...", address)
    start_rest = functools.partial(_start_rest, o, plane, metrics, metrics_path)
    rest = start_rest() if o.rest_api_port and not assigned else None
    if metrics_path:
        log.info(
            "Prometheus metrics at http://%s:%d%s", o.bind_address, o.rest_api_port, metrics_path
        )

    stop = threading.Event()
    starting = True

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()
        if starting:
            raise _Shutdown

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rest = (
            _start_models(feed, specs, health, start_rest if o.rest_api_port and assigned else None)
            or rest
        )
        starting = False
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


def _add_optional_services(server: grpc.Server, o: ServerOptions, health: ModelHealth) -> None:
    """The services beside TF Serving's API, on the same ports: health, the profiler."""
    if o.enable_grpc_healthcheck_service:
        health.add_to(server)
    if o.enable_profiler:  # TensorFlow's ProfilerService, as TF Serving's server.cc adds it
        from functions.serving.api.profiler import add_profiler_service

        add_profiler_service(server)


def _start_models(
    feed: _Feed,
    specs: Sequence[ModelSpec],
    health: ModelHealth,
    start_rest: Callable[[], Any] | None,
) -> Any:
    """Loads the models; returns the REST server when it may start only now
    (with assignments, REST starts once every assigned version is ready)."""
    feed.start(specs)
    health.refresh()
    return start_rest() if start_rest is not None else None


def _bind(server: grpc.Server, o: ServerOptions) -> list[str]:
    addresses = []
    if o.port:
        host = f"[{o.bind_address}]" if ":" in o.bind_address else o.bind_address
        addresses.append(f"{host}:{o.port}")
    if o.grpc_socket_path:
        addresses.append(f"unix:{o.grpc_socket_path}")
    credentials = _server_credentials(o.ssl_config_file) if o.ssl_config_file else None
    for address in addresses:
        bound = (
            server.add_secure_port(address, credentials)
            if credentials is not None
            else server.add_insecure_port(address)
        )
        if bound == 0:
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
    o: ServerOptions, plane: DataPlane, metrics: ServingMetrics, metrics_path: str | None
) -> Any:
    from functions.serving.api.tfserving.rest_api import RestApi, RestOptions, serve_rest

    app = RestApi(
        plane,
        RestOptions(
            timeout_seconds=o.rest_api_timeout_in_ms / 1000.0,
            max_request_bytes=o.rest_api_max_request_bytes,
            metrics_path=metrics_path,
            cors=o.rest_api_enable_cors_support,
        ),
        workers=o.rest_api_num_threads,
        metrics=metrics,
    )
    return serve_rest(
        app, o.bind_address, o.rest_api_port, o.rest_api_num_threads, o.rest_api_max_request_bytes
    )


def _shutdown(server: grpc.Server, rest: Any, feed: _Feed, health: ModelHealth, code: int) -> int:
    health.drain()
    if feed.assigned is not None:
        feed.assigned.close()  # stops following first: no swap during the drain
        feed.assigned = None
    if rest is not None:
        rest.close()
    server.stop(SHUTDOWN_GRACE_SECONDS).wait()
    feed.close()
    log.info("stopped")
    return code
