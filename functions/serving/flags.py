"""``rollway serve`` flags: tensorflow_model_server's names, defaults and syntax.

:class:`ServerOptions` is the single source of truth: each field is one flag,
and its metadata says what the flag does in rollway:

* ``yes``: implemented as in TF Serving;
* ``noop``: accepted so existing launch commands work, but it has no effect
  here (the help text says why);
* ``later``: the feature is not built yet; setting the flag to anything but
  its default fails at startup with "not supported yet".

Every flag also reads ``ROLLWAY_<FLAG_NAME_IN_CAPITALS>`` from the environment
(Knative passes configuration that way); the command line wins. Fields,
variable names and booleans are ``functions.settings``' (one vocabulary for
every command: true/false, 1/0, yes/no, on/off, t/f, y/n); the command line
keeps TF Serving's syntax (``--flag=value`` or ``--flag value``, a bare boolean
flag is true), and a blank variable is unset.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from functions import settings
from functions.serving.core.repository import scheme_problem

_CPUS = os.cpu_count() or 1
ENV_PREFIX = settings.ENV_PREFIX


def _flag(default: Any, help: str, support: str = "yes", why: str = "") -> Any:
    return settings.setting(default, help, extra={"support": support, "why": why})


@dataclass(frozen=True)
class ServerOptions:
    # gRPC
    port: int = _flag(
        8500, "TCP port for the gRPC API. 0 disables TCP (then --grpc_socket_path is required)."
    )
    grpc_socket_path: str = _flag(
        "", "If non-empty, also listen for the gRPC API on this UNIX socket path."
    )
    bind_address: str = _flag(
        "0.0.0.0", "rollway only: the address --port binds to (TF Serving always uses 0.0.0.0)."
    )
    grpc_channel_arguments: str = _flag(
        "",
        "Comma-separated key=value gRPC server arguments, e.g. grpc.max_connection_age_ms=2000. Integer values are passed as integers. They override rollway's defaults, including the 2 GiB message size limits (grpc.max_receive_message_length, grpc.max_send_message_length).",
    )
    grpc_max_threads: int = _flag(
        4 * _CPUS,
        "Threads for the gRPC calls that run off the asyncio event loop: ModelService, the profiler, and inference with --enable_batching (then at least max_batch_size x num_batch_threads, up to 1024, since each request waiting for its batch holds one) or TFLite pools of several interpreters.",
    )
    enable_grpc_healthcheck_service: bool = _flag(
        True,
        "Serve grpc.health.v1.Health, model-aware: SERVING only when every configured model has an AVAILABLE version. Unlike TF Serving (default false), on by default, for Kubernetes and Knative probes.",
    )
    ssl_config_file: str = _flag(
        "",
        "An SSLConfig text proto (server_key and server_cert as PEM text, optional custom_ca, client_verify) that makes the gRPC ports TLS, as in TF Serving.",
    )
    use_alts_credentials: bool = _flag(
        False, "Use Google ALTS credentials.", "later", "ALTS is not supported"
    )
    # REST
    rest_api_port: int = _flag(
        0,
        "Port for TF Serving's HTTP/REST API (an ASGI app served by uvicorn); 0 disables it. Must differ from --port.",
    )
    rest_api_num_threads: int = _flag(4 * _CPUS, "Threads serving HTTP/REST requests.")
    rest_api_timeout_in_ms: int = _flag(
        30000,
        "Timeout for HTTP/REST calls; a request still running then gets 504 (with --inline_inference, when its call ends).",
    )
    rest_api_max_request_bytes: int = _flag(
        256 * 2**20, "rollway only: larger REST request bodies get 413."
    )
    rest_api_read_timeout_in_ms: int = _flag(
        10000,
        "rollway only: how long a REST client may take to send a request's head and whole body; a connection that trickles bytes slower is closed (408 once the head is in), so slow clients cannot hold the port.",
    )
    rest_api_enable_cors_support: bool = _flag(
        False,
        "Enables CORS headers in REST API responses (any origin; OPTIONS preflight answered).",
    )
    # models
    model_name: str = _flag("default", "Name of the model (ignored if --model_config_file is set).")
    model_base_path: str = _flag(
        "",
        "Absolute path or URI of the model's base directory, holding numbered version directories (ignored if --model_config_file is set): a local path, file://, s3://bucket/prefix, hdfs://namenode:port/path or webhdfs://host:port/path. Remote versions are fetched into --cache_dir before they load.",
    )
    model_config_file: str = _flag(
        "",
        "A ModelServerConfig text proto naming the models to serve, with version policies and labels.",
    )
    model_config_file_poll_wait_seconds: int = _flag(
        0, "Seconds between re-reads of --model_config_file; 0 reads it once."
    )
    file_system_poll_wait_seconds: int = _flag(
        1,
        "Seconds between polls of the model base paths for new or removed versions; 0 polls once at startup; negative never polls.",
    )
    require_manifest: bool = _flag(
        False,
        "rollway only: a version directory without rollway-manifest.json (TF Serving's plain layout) waits until its manifest is there. Without it, such a version loads as TF Serving loads it (and again when its files change). Either way, a version with a manifest loads only once every file it lists is there with its size and sha256: until then it is not announced, so the previous version keeps serving, and a file whose bytes differ fails the load with DATA_LOSS. On every scheme, local disk included.",
    )
    saved_model_tags: str = _flag(
        "serve", "Comma-separated tags of the MetaGraph to load from each SavedModel."
    )
    allow_version_labels_for_unavailable_models: bool = _flag(
        False, "Allow a new version label to point to a version that is not loaded yet."
    )
    # loading
    num_load_threads: int = _flag(0, "Threads loading versions in parallel; 0 loads one at a time.")
    num_unload_threads: int = _flag(
        0, "Threads unloading versions.", "noop", "unloading drops a reference and needs no thread"
    )
    max_num_load_retries: int = _flag(
        5, "Retries after a failed load before the version is marked failed; 0 tries once."
    )
    load_retry_interval_micros: int = _flag(
        60_000_000, "Microseconds between load retries; negative means no wait."
    )
    flush_filesystem_caches: bool = _flag(
        True,
        "Flush file system caches after loading.",
        "noop",
        "the Python runtime holds no file system caches to flush",
    )
    enable_model_warmup: bool = _flag(
        True,
        "Replay assets.extra/tf_serving_warmup_requests (predict logs) before a version becomes AVAILABLE.",
    )
    num_request_iterations_for_warmup: int = _flag(
        0, "Times each warmup request is replayed; used when > 0, else 1."
    )
    remove_unused_fields_from_bundle_metagraph: bool = _flag(
        True,
        "Drop unused MetaGraphDef fields to save memory.",
        "noop",
        "rollway keeps only the SignatureDefs",
    )
    # TensorFlow runtime
    tensorflow_session_parallelism: int = _flag(
        0, "Threads for both TensorFlow thread pools; 0 auto-configures."
    )
    tensorflow_intra_op_parallelism: int = _flag(
        0, "Threads parallelising one op; 0 auto-configures."
    )
    tensorflow_inter_op_parallelism: int = _flag(
        0,
        "Ops run at once; 0 auto-configures. -1 runs each call's ops in the calling thread (TensorFlow's ConfigProto meaning): no hand-off to TensorFlow's pool, about 16 us less per call, for small graphs without parallel branches or blocking ops (queues).",
    )
    tensorflow_session_config_file: str = _flag(
        "",
        "A ConfigProto text proto for the TensorFlow session.",
        "later",
        "session config files are not supported yet; use the parallelism flags",
    )
    per_process_gpu_memory_fraction: float = _flag(
        0.0, "Fraction of GPU memory to take.", "later", "rollway serves with tensorflow-cpu"
    )
    xla_cpu_compilation_enabled: bool = _flag(
        False, "Enable XLA:CPU JIT.", "later", "XLA JIT is not supported yet"
    )
    xla_gpu_compilation_enabled: bool = _flag(
        False, "Enable XLA:CPU and XLA:GPU JIT.", "later", "XLA JIT is not supported yet"
    )
    mixed_precision: str = _flag(
        "", "Mixed precision mode.", "later", "mixed precision is not supported yet"
    )
    # features of later releases
    enable_batching: bool = _flag(
        False,
        "Batch concurrent requests server-side (same model version, signature and inner shapes), as TF Serving's BatchingSession.",
    )
    enable_per_model_batching_parameters: bool = _flag(
        False,
        "Read batching_params.pbtxt from each SavedModel.",
        "later",
        "per-model batching_params.pbtxt files are not read yet; use --batching_parameters_file",
    )
    batching_parameters_file: str = _flag(
        "",
        "A BatchingParameters text proto; needs --enable_batching. Fields: max_batch_size (the largest request; default 1000), batch_timeout_micros (0), max_enqueued_batches (10), num_batch_threads (CPUs), thread_pool_name, allowed_batch_sizes (increasing, ending with max_batch_size), pad_variable_length_inputs, enable_large_batch_splitting (split requests larger than what a run may take) and max_execution_batch_size (the largest run with splitting; default max_batch_size). A file that does not parse exits 1 with protobuf's line:column.",
    )
    monitoring_config_file: str = _flag(
        "",
        "A MonitoringConfig text proto; prometheus_config { enable: true path: ... } serves TF Serving's metrics in Prometheus format on the REST port (default path /monitoring/prometheus/metrics).",
    )
    enable_serialization_as_tensor_content: bool = _flag(
        False, "Encode Predict outputs in tensor_content instead of the typed *_val fields."
    )
    enable_signature_method_name_check: bool = _flag(
        False,
        "Require the signatures used by Classify, Regress and MultiInference (and their warmup) "
        "to have the method names tensorflow/serving/classify and tensorflow/serving/regress. "
        "Off by default so that native TF2 models can classify and regress, as in TF Serving.",
    )
    platform_config_file: str = _flag(
        "", "A PlatformConfigMap text proto.", "later", "platform configs are not supported"
    )
    prefer_tflite_model: bool = _flag(
        False,
        "Serve a version directory that holds model.tflite with TensorFlow Lite's interpreter, from that file alone (no saved_model.pb is read or needed); a version without model.tflite is served from its SavedModel.",
    )
    num_tflite_pools: int = _flag(
        _CPUS,
        "With --prefer_tflite_model: TFLite interpreters per model version (TF Serving's name; it is the size of the version's one interpreter pool). A request takes a free interpreter and waits while all are busy. Values below 1 mean 1.",
    )
    num_tflite_interpreters_per_pool: int = _flag(
        1,
        "With --prefer_tflite_model: above 1, a request of more than ceil(500 / N) rows (or of a one-input model's fixed batch size) is split into chunks that run on several interpreters at once, as in TF Serving.",
    )
    thread_pool_factory_config_file: str = _flag(
        "", "A ThreadPoolConfig text proto.", "later", "thread pool factories are not supported"
    )
    enable_profiler: bool = _flag(
        True,
        "Serve TensorFlow's profiler (tensorflow.ProfilerService) on the gRPC ports, as TF Serving does: tf.profiler.experimental.client.trace('grpc://HOST:PORT', LOGDIR, MS) or TensorBoard's Capture Profile traces this process for MS ms and the server writes LOGDIR/plugins/profile/<run>/<host>_<port>.xplane.pb (LOGDIR must be writable by the server). Same ports, TLS and UNIX socket as the serving API; no extra listener. One trace at a time.",
    )
    skip_initialize_tpu: bool = _flag(
        False, "Skip TPU initialisation.", "noop", "rollway does not use TPUs"
    )
    # rollway only: serving what a store's assignments say (functions/serving/assigned.py)
    assignments: str = _flag(
        "",
        "rollway only: a serving store URI (e.g. s3://models-serving): serve what its assignments say instead of --model_base_path/--model_config_file. Every assigned version is fetched into --cache_dir, verified against its manifest, loaded and warmed up before the server reports SERVING.",
    )
    models: str = _flag(
        "",
        "rollway only, with --assignments: comma-separated models to serve; empty serves every model that has an assignment in the store.",
    )
    pin_generation: int = _flag(
        0,
        "rollway only, with --assignments: serve exactly this generation of the assignment (of one model: --models names it, or the store holds only one), read from the generations the store keeps (20); newer generations are ignored and --follow is off. 0 serves the newest.",
    )
    follow: str = _flag(
        "none",
        "rollway only, with --assignments: 'poll' re-reads the assignments every --follow_poll_seconds, 'kafka' consumes --assignments_topic; a newer generation is fetched, loaded, its labels moved, then the versions it drops unloaded, without failing a request. 'none' keeps the startup generation.",
    )
    follow_poll_seconds: float = _flag(
        5.0, "rollway only: seconds between reads of the assignments with --follow=poll."
    )
    kafka_bootstrap_servers: str = _flag(
        "", "rollway only: Kafka's host:port[,host:port...], for --follow=kafka."
    )
    assignments_topic: str = _flag(
        "model-assignments",
        "rollway only: the compacted topic of AssignmentChanged events, for --follow=kafka (read from the beginning, with no consumer group).",
    )
    cache_dir: str = _flag(
        "",
        "rollway only: local directory of fetched versions, <cache_dir>/<model>/<version>. With --assignments: the assigned versions, verified again and reused after a restart; it holds only assigned versions (others are deleted). Otherwise: the versions of remote base paths (s3://, hdfs://, webhdfs://), fetched (and verified, where they have a manifest) before they load; a version leaves it once it is neither loading nor loaded. Local base paths are loaded in place, never copied. Empty: a new directory under $TMPDIR (default /tmp), deleted at exit.",
    )
    assignment_timeout_seconds: float = _flag(
        600.0,
        "rollway only, with --assignments: bound on reading, fetching, verifying, loading and warming up every assigned version at startup (the server exits 1 past it, naming what was not ready); while following, on waiting for a newer generation's versions to load.",
    )
    # rollway only: processes
    inline_inference: str = _flag(
        "auto",
        "rollway only: 'true' runs each gRPC and REST inference call on the server's event loop (fastest for short calls: no thread hand-off; one call at a time per process), 'false' on --grpc_max_threads / --rest_api_num_threads threads (a long call then does not delay the others' I/O, health checks included, and a REST call can be answered 504 while it runs). 'auto': inline, except with --enable_batching or TFLite pools of several interpreters, which need concurrent calls.",
    )
    workers: str = _flag(
        "1",
        "rollway only: serving processes sharing the gRPC and REST ports (SO_REUSEPORT); 'auto' = the CPUs this process may use. Above 1, a supervisor process runs the model sources and every worker loads every version (N copies of each model in memory).",
    )
    # rollway only
    log_format: str = _flag("text", "rollway only: 'text' or 'json' (one JSON object per line).")
    log_level: str = _flag("INFO", "rollway only: DEBUG, INFO, WARNING or ERROR.")
    version: bool = _flag(False, "Print the version and exit.")


class UsageError(ValueError):
    """A bad command line or environment; the CLI prints usage and exits 2."""


def _parse_bool(text: str) -> bool:
    """settings.parse_bool, as argparse wants a type's error (its message verbatim)."""
    try:
        return settings.parse_bool(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_CONVERTERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: int,
    float: float,
    str: str,
}


def _converter(kind: type) -> Callable[[str], Any]:
    return _CONVERTERS[kind]


def _fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(ServerOptions))


def build_parser(prog: str = "rollway serve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        allow_abbrev=False,
        description=(
            "Serve TensorFlow SavedModels over TensorFlow Serving's gRPC API. A drop-in "
            "replacement for tensorflow_model_server: same flags (--flag=value or --flag "
            "value), same ModelServerConfig files. Each flag can also be set with the "
            f"environment variable {ENV_PREFIX}<FLAG_NAME_IN_CAPITALS>."
        ),
    )
    hints = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STRING"}
    for f in _fields():
        kind = _kind(f)
        note = {"noop": " [accepted; no effect in rollway: {why}]",
                "later": " [not supported yet: {why}]"}.get(f.metadata["support"], "")  # fmt: skip
        text = f"{f.metadata['help']}{note.format(why=f.metadata['why'])} (default: {f.default})"
        extra: dict[str, Any] = {"nargs": "?", "const": True} if kind is bool else {}
        parser.add_argument(
            f"--{f.name}", type=_converter(kind), default=None, metavar=hints[kind],
            help=text.replace("%", "%%"), **extra,
        )  # fmt: skip
    return parser


def _kind(f: dataclasses.Field[Any]) -> type:
    return {"bool": bool, "int": int, "float": float, "str": str}[str(f.type)]


@dataclass(frozen=True)
class ParsedFlags:
    options: ServerOptions
    explicit: frozenset[str]  # flags given on the command line or in the environment


def parse_flags(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ParsedFlags:
    """Parses and validates; raises SystemExit(2) with usage on any problem."""
    env = os.environ if env is None else env
    parser = build_parser()
    namespace = parser.parse_args(list(argv))
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for f in _fields():
        given = getattr(namespace, f.name)
        env_name = settings.env_name(f.name)
        if given is None and env.get(env_name, "").strip():  # blank: unset
            try:
                given = _converter(_kind(f))(env[env_name])
            except (ValueError, argparse.ArgumentTypeError) as err:
                parser.error(f"environment variable {env_name}: {err}")
        if given is not None:
            values[f.name] = given
            explicit.add(f.name)
    options = ServerOptions(**values)
    try:
        validate(options)
    except UsageError as err:
        parser.error(str(err))
    return ParsedFlags(options, frozenset(explicit))


def validate(options: ServerOptions) -> None:
    """Cross-flag rules, and refusal of features that are not built yet."""
    o = options
    if o.version:
        return
    if o.tensorflow_intra_op_parallelism > 0 and o.tensorflow_inter_op_parallelism > 0 \
            and o.tensorflow_session_parallelism > 0:  # fmt: skip
        raise UsageError(
            "Either configure --tensorflow_session_parallelism or "
            "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all."
        )
    if o.batching_parameters_file and not o.enable_batching:
        raise UsageError(
            "--batching_parameters_file is set without setting --enable_batching to true."
        )
    _validate_assignments(o)
    if not 0 <= o.port <= 65535 or not 0 <= o.rest_api_port <= 65535:
        raise UsageError("--port and --rest_api_port must be between 0 and 65535")
    if o.port == 0 and not o.grpc_socket_path:
        raise UsageError("--port=0 disables TCP, so --grpc_socket_path is required")
    if o.rest_api_port and o.rest_api_port == o.port:
        raise UsageError("--rest_api_port cannot be same as --port.")
    for name in ("grpc_max_threads", "rest_api_num_threads", "rest_api_timeout_in_ms",
                 "rest_api_max_request_bytes", "rest_api_read_timeout_in_ms"):  # fmt: skip
        if getattr(o, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    for name in ("num_load_threads", "max_num_load_retries", "num_request_iterations_for_warmup",
                 "tensorflow_session_parallelism", "tensorflow_intra_op_parallelism",
                 "model_config_file_poll_wait_seconds"):  # fmt: skip
        if getattr(o, name) < 0:
            raise UsageError(f"--{name} must not be negative")
    if o.tensorflow_inter_op_parallelism < -1:
        raise UsageError(
            "--tensorflow_inter_op_parallelism must be -1 (the caller's thread) or more"
        )
    if o.log_format not in ("text", "json"):
        raise UsageError(f"--log_format must be 'text' or 'json', got {o.log_format!r}")
    if o.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log_level must be DEBUG, INFO, WARNING or ERROR, got {o.log_level!r}")
    if not [t for t in o.saved_model_tags.split(",") if t]:
        raise UsageError("--saved_model_tags must name at least one tag")
    parse_channel_arguments(o.grpc_channel_arguments)
    worker_count(o.workers)
    if o.inline_inference not in ("auto", "true", "false"):
        raise UsageError(
            f"--inline_inference must be auto, true or false, got {o.inline_inference!r}"
        )
    if o.inline_inference == "true" and o.enable_batching:
        raise UsageError(
            "--inline_inference=true cannot be combined with --enable_batching: a batch "
            "waits for concurrent requests, which inline calls never are"
        )
    for f in _fields():
        if f.metadata["support"] != "later":
            continue
        if getattr(o, f.name) != f.default:
            raise UsageError(f"--{f.name} is not supported yet: {f.metadata['why']}")


FOLLOW_MODES = ("none", "poll", "kafka")


def _validate_assignments(o: ServerOptions) -> None:
    """Where the models come from: --assignments, or TF Serving's two flags."""
    if not o.assignments:
        if not o.model_base_path and not o.model_config_file:
            raise UsageError("Both --model_base_path and --model_config_file are empty!")
        if not o.model_config_file and (problem := scheme_problem(o.model_base_path)):
            raise UsageError(f"--model_base_path: {problem}")
        defaults = ServerOptions()
        for name in ("models", "pin_generation", "follow"):
            if getattr(o, name) != getattr(defaults, name):
                raise UsageError(f"--{name} needs --assignments")
        return
    if o.model_base_path or o.model_config_file:
        raise UsageError(
            "--assignments cannot be combined with --model_base_path or --model_config_file: "
            "the store's assignments say what to serve"
        )
    if o.follow not in FOLLOW_MODES:
        raise UsageError(f"--follow must be none, poll or kafka, got {o.follow!r}")
    if o.follow == "kafka" and not o.kafka_bootstrap_servers:
        raise UsageError("--follow=kafka needs --kafka_bootstrap_servers")
    if o.pin_generation < 0:
        raise UsageError("--pin_generation must not be negative")
    if o.pin_generation and len([m for m in o.models.split(",") if m.strip()]) > 1:
        raise UsageError(
            "--pin_generation pins the generation of one model: --models names several"
        )
    if o.follow_poll_seconds <= 0 or o.assignment_timeout_seconds <= 0:
        raise UsageError("--follow_poll_seconds and --assignment_timeout_seconds must be positive")


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments: ``k=v,k=v``; int32 values become ints."""
    result: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(value)
            result.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
        except ValueError:
            result.append((key, value))
    return result


def worker_count(text: str) -> int:
    """--workers: a positive number, or 'auto' (the CPUs this process may use)."""
    if text.strip().lower() == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else _CPUS
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError(f"--workers must be a positive number or 'auto', got {text!r}")
    return count
