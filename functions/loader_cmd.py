"""``rollway loader``: the loader as a Kafka consumer process.

Consumes publish events (rollway's ModelPublished, MinIO notifications) from
``--topic`` as consumer group ``--group``, and for each: verify -> stage into
``--store`` -> assign under ``--model-config``; then emits AssignmentChanged
(and VersionRejected to the dead-letter topic). Every flag has a ``ROLLWAY_*``
environment variable, since Knative and Kubernetes pass configuration that
way (``LoaderSettings``, bound by ``functions.settings``). SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from functions import exits, settings
from functions.serving import logs
from functions.settings import setting
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

_MAX_BYTES = f"{DEFAULT_MAX_UNPACKED_BYTES // 2**30}GiB"


@dataclass(frozen=True)
class LoaderSettings:
    """``rollway loader``'s flags and ``ROLLWAY_*`` variables (``functions.settings``),
    also the loader function's variables. ``config_from`` checks what one field
    alone cannot: the required ones, and the archive limits' units."""

    # fmt: off
    bootstrap_servers: str = settings.kafka_bootstrap_servers(
        "Kafka bootstrap servers, host:port[,...] (required)"
    )
    topic: str = setting(events.PUBLISH_TOPIC, "topic of publish events", env="ROLLWAY_PUBLISH_TOPIC")
    group: str = setting("rollway-loader", "consumer group; loaders in one group share partitions", env="ROLLWAY_LOADER_GROUP")
    store: str = settings.store("serving store root URI: versions go to <store>/<model>/<version>/ (required)")
    source_roots: str = setting("", "comma-separated URIs events may point to (default: the store)")
    model_config: str = setting("", "TF Serving ModelServerConfig file: version policies and labels (default: latest 1 for every model)")
    assignments_topic: str = settings.assignments_topic("compacted topic for AssignmentChanged")
    dead_letter_topic: str = setting(events.DEAD_LETTER_TOPIC, "topic for VersionRejected")
    staged_topic: str = setting("", "topic for VersionStaged (default: none sent)")
    retry_deadline_seconds: float = setting(1800.0, "an INCOMPLETE version is retried this long, then rejected", minimum=0)
    retry_initial_seconds: float = setting(5.0, "first retry delay; doubles up to --retry-max-seconds", minimum=0)
    retry_max_seconds: float = setting(300.0, "longest retry delay", minimum=0)
    workers: int = setting(8, "files verified and copied in parallel", env="ROLLWAY_LOADER_WORKERS", minimum=0)
    # Text: count_flag reads the units (a setting's int has none).
    max_archive_bytes: str = setting(_MAX_BYTES, f"an archive that unpacks to more bytes is rejected (KiB, MiB, GiB, TiB suffixes accepted; default {_MAX_BYTES})")
    max_archive_members: str = setting(str(DEFAULT_MAX_MEMBERS), f"an archive with more members (files and directories) is rejected (default {DEFAULT_MAX_MEMBERS})")
    session_timeout_ms: int = setting(10000, "consumer group session timeout", env="ROLLWAY_KAFKA_SESSION_TIMEOUT_MS", minimum=0)
    max_poll_interval_ms: int = setting(300000, "the group's rebalance timeout: a rebalance waits this long, less a margin, for the record in work to finish and be committed (work itself may take longer: the loader keeps polling)", env="ROLLWAY_KAFKA_MAX_POLL_INTERVAL_MS", minimum=0)
    fetch_max_wait_ms: int = setting(50, "longest a fetch waits for new records: bounds publish-to-assignment latency", env="ROLLWAY_KAFKA_FETCH_MAX_WAIT_MS", minimum=0)
    metrics_port: int = settings.metrics_port()
    metrics_address: str = settings.metrics_address()
    log_format: str = settings.log_format()
    log_level: str = settings.log_level()
    # fmt: on


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollway loader",
        description="Consume publish events; verify, stage and assign each version.",
        epilog="Every flag can be set by the environment variable shown; a flag wins.",
    )
    settings.add_arguments(parser, LoaderSettings)
    return parser


def parse(argv: Sequence[str] | None = None) -> LoaderSettings:
    """The command line's settings, flags over ``ROLLWAY_*`` variables; a bad
    value exits 2 with usage, as argparse does."""
    return settings.parse_args(build_parser(), LoaderSettings, argv)[1]


def config_from(args: LoaderSettings) -> tuple[LoaderConfig, GroupConfig, emit.Topics]:
    """Validates the settings once, at startup; ConfigError names the bad flag
    and its variable."""
    from loader.errors import ConfigError

    for required in ("bootstrap_servers", "store"):
        if not getattr(args, required):
            raise ConfigError(f"{settings.name_of(LoaderSettings, required)} is required")

    models = {}
    if args.model_config:
        models = {spec.name: spec for spec in read_model_server_config(args.model_config)}
    loader = LoaderConfig(
        store_uri=args.store,
        source_roots=tuple(r for r in args.source_roots.split(",") if r),
        models=models,
        retry=RetryPolicy(
            initial_seconds=args.retry_initial_seconds,
            max_seconds=args.retry_max_seconds,
            deadline_seconds=args.retry_deadline_seconds,
        ),
        workers=max(1, args.workers),
        max_unpacked_bytes=count_flag("max-archive-bytes", args.max_archive_bytes),
        max_members=count_flag("max-archive-members", args.max_archive_members, units=False),
    )
    consumer = GroupConfig(
        bootstrap=args.bootstrap_servers, topic=args.topic, group=args.group,
        session_timeout_ms=args.session_timeout_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
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
        raise ConfigError(
            f"{settings.name_of(LoaderSettings, flag.replace('-', '_'))} must be {what}, "
            f"not {text!r}"
        )
    return int(match.group(1)) * unit


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    logs.configure(args.log_format, args.log_level)
    try:
        loader_config, consumer_config, topics = config_from(args)
        pipeline = Pipeline(loader_config)
        emitter = emit.KafkaEmitter(consumer_config.bootstrap)
    except RollwayError as err:
        return exits.fail("rollway loader", err.message, exits.USAGE)
    except Exception as err:  # e.g. no broker reachable at startup
        return exits.fail(
            "rollway loader", f"cannot start: {type(err).__name__}: {err}", exits.ERROR
        )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, args.metrics_address)
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
    return exits.OK
