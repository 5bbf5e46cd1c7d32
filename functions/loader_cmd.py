"""``rollway loader``: the loader as a Kafka consumer process.

Consumes publish events (rollway's ModelPublished, MinIO notifications) from
``--topic`` as consumer group ``--group``, and for each: verify -> stage into
``--store`` -> assign under ``--model-config``; then emits AssignmentChanged
(and VersionRejected to the dead-letter topic). Every flag has a ``ROLLWAY_*``
environment variable, since Knative and Kubernetes pass configuration that
way. SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
from collections.abc import Mapping, Sequence
from types import FrameType

from functions.serving import logs
from loader import emit, events
from loader.consumer import LoaderConsumer
from loader.errors import RollwayError
from loader.group_consumer import GroupConfig
from loader.model_config import read_model_server_config
from loader.pipeline import LoaderConfig, Pipeline
from loader.retry import RetryPolicy
from loader.unpack import DEFAULT_MAX_MEMBERS, DEFAULT_MAX_UNPACKED_BYTES

log = logging.getLogger("rollway.loader")
PARKED_SCAN_SECONDS = 5.0  # how often versions parked for a retry are checked
_UNITS = {"": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_BYTES = re.compile(r"\s*([0-9]+)\s*([A-Za-z]*)\s*")

# flag -> (environment variable, default, help)
FLAGS: dict[str, tuple[str, str, str]] = {
    "bootstrap-servers": ("ROLLWAY_KAFKA_BOOTSTRAP_SERVERS", "", "Kafka bootstrap servers, host:port[,...] (required)"),
    "topic": ("ROLLWAY_PUBLISH_TOPIC", events.PUBLISH_TOPIC, "topic of publish events"),
    "group": ("ROLLWAY_LOADER_GROUP", "rollway-loader", "consumer group; loaders in one group share partitions"),
    "store": ("ROLLWAY_STORE", "", "serving store root URI: versions go to <store>/<model>/<version>/ (required)"),
    "source-roots": ("ROLLWAY_SOURCE_ROOTS", "", "comma-separated URIs events may point to (default: the store)"),
    "model-config": ("ROLLWAY_MODEL_CONFIG", "", "TF Serving ModelServerConfig file: version policies and labels (default: latest 1 for every model)"),
    "assignments-topic": ("ROLLWAY_ASSIGNMENTS_TOPIC", events.ASSIGNMENTS_TOPIC, "compacted topic for AssignmentChanged"),
    "dead-letter-topic": ("ROLLWAY_DEAD_LETTER_TOPIC", events.DEAD_LETTER_TOPIC, "topic for VersionRejected"),
    "staged-topic": ("ROLLWAY_STAGED_TOPIC", "", "topic for VersionStaged (default: none sent)"),
    "retry-deadline-seconds": ("ROLLWAY_RETRY_DEADLINE_SECONDS", "1800", "an INCOMPLETE version is retried this long, then rejected"),
    "retry-initial-seconds": ("ROLLWAY_RETRY_INITIAL_SECONDS", "5", "first retry delay; doubles up to --retry-max-seconds"),
    "retry-max-seconds": ("ROLLWAY_RETRY_MAX_SECONDS", "300", "longest retry delay"),
    "workers": ("ROLLWAY_LOADER_WORKERS", "8", "files verified and copied in parallel"),
    "max-archive-bytes": ("ROLLWAY_MAX_ARCHIVE_BYTES", f"{DEFAULT_MAX_UNPACKED_BYTES // 2**30}GiB", f"an archive that unpacks to more bytes is rejected (KiB, MiB, GiB, TiB suffixes accepted; default {DEFAULT_MAX_UNPACKED_BYTES // 2**30}GiB)"),
    "max-archive-members": ("ROLLWAY_MAX_ARCHIVE_MEMBERS", str(DEFAULT_MAX_MEMBERS), f"an archive with more members (files and directories) is rejected (default {DEFAULT_MAX_MEMBERS})"),
    "session-timeout-ms": ("ROLLWAY_KAFKA_SESSION_TIMEOUT_MS", "10000", "consumer group session timeout"),
    "max-poll-interval-ms": ("ROLLWAY_KAFKA_MAX_POLL_INTERVAL_MS", "300000", "the group's rebalance timeout: a rebalance waits this long, less a margin, for the record in work to finish and be committed (work itself may take longer: the loader keeps polling)"),
    "fetch-max-wait-ms": ("ROLLWAY_KAFKA_FETCH_MAX_WAIT_MS", "50", "longest a fetch waits for new records: bounds publish-to-assignment latency"),
    "metrics-port": ("ROLLWAY_METRICS_PORT", "0", "serve Prometheus metrics on this port (0 = off)"),
    "metrics-address": ("ROLLWAY_METRICS_ADDRESS", "0.0.0.0", "address for the metrics port"),
    "log-format": ("ROLLWAY_LOG_FORMAT", "text", "text or json (one JSON object per line)"),
    "log-level": ("ROLLWAY_LOG_LEVEL", "info", "debug, info, warning or error"),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollway loader",
        description="Consume publish events; verify, stage and assign each version.",
        epilog="Every flag can be set by the environment variable shown; a flag wins.",
    )
    for flag, (env, default, text) in FLAGS.items():
        parser.add_argument(
            f"--{flag}", default=os.environ.get(env, default), help=f"{text} [{env}]"
        )
    return parser


def args_from_env(env: Mapping[str, str]) -> argparse.Namespace:
    """The flags as ``env`` sets them through their ROLLWAY_* variables (each
    default otherwise), with no command line: how the loader function
    (``functions.loader_function``) reads the same configuration. Validate the
    result with ``config_from``."""
    return argparse.Namespace(
        **{
            flag.replace("-", "_"): env.get(var, default)
            for flag, (var, default, _) in FLAGS.items()
        }
    )


def config_from(args: argparse.Namespace) -> tuple[LoaderConfig, GroupConfig, emit.Topics]:
    """Validates the flags once, at startup; ConfigError names the bad one."""
    from loader.errors import ConfigError

    for required in ("bootstrap_servers", "store"):
        if not getattr(args, required):
            flag = required.replace("_", "-")
            raise ConfigError(f"--{flag} (or {FLAGS[flag][0]}) is required")

    def number(name: str) -> float:
        text = getattr(args, name.replace("-", "_"))
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--{name} must be a number, not {text!r}") from None
        if value < 0:
            raise ConfigError(f"--{name} must be >= 0, not {text!r}")
        return value

    models = {}
    if args.model_config:
        models = {spec.name: spec for spec in read_model_server_config(args.model_config)}
    loader = LoaderConfig(
        store_uri=args.store,
        source_roots=tuple(r for r in args.source_roots.split(",") if r),
        models=models,
        retry=RetryPolicy(
            initial_seconds=number("retry-initial-seconds"),
            max_seconds=number("retry-max-seconds"),
            deadline_seconds=number("retry-deadline-seconds"),
        ),
        workers=max(1, int(number("workers"))),
        max_unpacked_bytes=count_flag("max-archive-bytes", args.max_archive_bytes),
        max_members=count_flag("max-archive-members", args.max_archive_members, units=False),
    )
    consumer = GroupConfig(
        bootstrap=args.bootstrap_servers, topic=args.topic, group=args.group,
        session_timeout_ms=int(number("session-timeout-ms")),
        max_poll_interval_ms=int(number("max-poll-interval-ms")),
        fetch_max_wait_ms=int(number("fetch-max-wait-ms")),
        tick_seconds=PARKED_SCAN_SECONDS,
    )  # fmt: skip
    topics = emit.Topics(args.assignments_topic, args.dead_letter_topic, args.staged_topic)
    return loader, consumer, topics


def count_flag(flag: str, text: str, *, units: bool = True) -> int:
    """A positive whole number (with ``units``, optionally KiB, MiB, GiB or TiB);
    ConfigError names ``--flag`` and its variable otherwise."""
    from loader.errors import ConfigError

    match = _BYTES.fullmatch(text)
    unit = _UNITS.get(match.group(2).upper()) if match and (units or not match.group(2)) else None
    if match is None or unit is None or int(match.group(1)) < 1:
        what = (
            "a positive number of bytes (or KiB, MiB, GiB, TiB)" if units else "a positive number"
        )
        raise ConfigError(f"--{flag} (or {FLAGS[flag][0]}) must be {what}, not {text!r}")
    return int(match.group(1)) * unit


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        loader_config, consumer_config, topics = config_from(args)
        pipeline = Pipeline(loader_config)
        emitter = emit.KafkaEmitter(consumer_config.bootstrap)
    except RollwayError as err:
        print(f"rollway loader: {err.message}", file=sys.stderr)
        return 2
    except Exception as err:  # e.g. no broker reachable at startup
        print(f"rollway loader: cannot start: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    if int(args.metrics_port):
        from prometheus_client import start_http_server

        start_http_server(int(args.metrics_port), args.metrics_address)
    consumer = LoaderConsumer(
        pipeline, consumer_config, emitter, topics, emit.source_name("loader")
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the record in hand, then stopping", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run()
    finally:
        emitter.close()
    return 0
