"""``rollway publish SAVED_MODEL_DIR MODEL_BASE_URI``: uploads a version, manifest last.

Thin adapter over ``loader.publish``: checks the SavedModel loads (unless
``--no-check``), uploads its files in parallel with a progress bar, writes the
manifest last, prints the version URI on stdout (and nothing else there, so
scripts can capture it), then optionally sends a ``ModelPublished`` CloudEvent
to Kafka. Credentials come from the environment and never appear in output.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from functions import exits, settings
from functions.progress_bar import human_bytes, transfer_bar
from functions.settings import setting
from functions.trial_load import load_problem
from loader import display, events
from loader.errors import AlreadyExists, InvalidArgument, RollwayError
from loader.publish import PublishResult, publish_version
from loader.schemas.rollway.v1.events_pb2 import ModelPublished
from loader.storage import open_storage
from loader.versions import VersionId, parse_version

# TensorFlow (imported later, for SavedModel checks) prints C++ start-up notices;
# on a command line they are noise. An explicit setting still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROG = "rollway publish"
# Beyond functions.exits' codes: the version exists; stored, but no event sent.
EXIT_EXISTS, EXIT_EVENT = 3, 5
CREATED_BY = "rollway publish"

_EPILOG = """\
environment:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL or
  S3_ENDPOINT, S3_USE_HTTPS, S3_VERIFY_SSL, AWS_REGION, AWS_CA_BUNDLE   s3:// stores
  ROLLWAY_KAFKA_BOOTSTRAP_SERVERS, ROLLWAY_PUBLISH_TOPIC                 the event

exit status:
  0  published (and the event sent, if Kafka was given)
  1  the upload failed (store unreachable, bad credentials, ...); no manifest was written
  2  usage error, or SAVED_MODEL_DIR is not a loadable SavedModel
  3  the version exists (pass --force) or is staged (never replaced)
  5  the version is published, but the ModelPublished event could not be sent
"""


@dataclass(frozen=True)
class PublishSettings:
    """The settings of ``rollway publish`` (``functions.settings``): where the event goes."""

    kafka_bootstrap_servers: str = settings.kafka_bootstrap_servers(
        "send a ModelPublished event there"
    )
    kafka_timeout_seconds: float = setting(
        15.0, "how long sending the event may take before publish exits 5 (default 15)", minimum=0
    )
    topic: str = setting(
        events.PUBLISH_TOPIC,
        f"publish topic (default {events.PUBLISH_TOPIC})",
        env="ROLLWAY_PUBLISH_TOPIC",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollway publish",
        description="Upload a SavedModel as <MODEL_BASE_URI>/<version>/, files first and "
        "rollway-manifest.json (sizes and sha256 of every file) last.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("saved_model_dir", type=Path, help="local SavedModel directory")
    parser.add_argument(
        "model_base_uri",
        help="the model's base path, as TF Serving's --model_base_path: a local path, "
        "file://, s3://bucket/prefix/MODEL, hdfs:// or webhdfs://",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="the version number to publish")
    which.add_argument(
        "--next",
        action="store_true",
        help="the highest existing version + 1 (the default when SAVED_MODEL_DIR's name "
        "is not a version number)",
    )
    parser.add_argument(
        "--model-name", help="model name for the manifest and event (default: last path "
        "segment of MODEL_BASE_URI)"
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    parser.add_argument("--no-check", action="store_true", help="skip the trial load in TensorFlow")
    parser.add_argument("--workers", type=int, default=8, help="parallel uploads (default 8)")
    settings.add_arguments(parser, PublishSettings)
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument(
        "--progress", choices=("auto", "always", "never"), default="auto",
        help="progress bar on stderr (auto: only on a terminal)",
    )  # fmt: skip
    return parser


def choose_version(args: argparse.Namespace) -> int | None:
    """Pure: the explicit version, else the directory's name if it is a version
    number (TF exports to timestamped directories), else None for --next."""
    if args.version is not None:
        if args.version < 0:
            raise InvalidArgument(f"--version must be >= 0, not {args.version}")
        return int(args.version)
    if args.next:
        return None
    return parse_version(args.saved_model_dir.name)


def model_name_of(base_uri: str) -> str:
    name = base_uri.rstrip("/").rsplit("/", 1)[-1]
    if not name or ":" in name:
        raise InvalidArgument(f"cannot tell the model name from {display.uri(base_uri)!r}; "
                              "pass --model-name")  # fmt: skip
    return name


def main(argv: Sequence[str] | None = None) -> int:
    args = settings.parse_into(build_parser(), PublishSettings, argv)
    try:
        model = args.model_name or model_name_of(args.model_base_uri)
        version = choose_version(args)
        source: Path = args.saved_model_dir
        if not source.is_dir():
            raise InvalidArgument(f"{source} is not a directory")
        if not args.no_check:
            problem = load_problem(source, VersionId(model, version or 0))
            if problem is not None:
                raise InvalidArgument(f"{source} does not load as a SavedModel: {problem}")
        storage = open_storage(args.model_base_uri)
    except RollwayError as err:
        return exits.fail(PROG, err.message, exits.USAGE)
    enabled = {"auto": None, "always": True, "never": False}[args.progress]
    try:
        with transfer_bar(f"publish {model}", enabled) as progress:
            result = publish_version(
                source, storage, model, version, force=args.force,
                workers=args.workers, created_by=CREATED_BY, progress=progress,
            )  # fmt: skip
    except AlreadyExists as err:
        return exits.fail(PROG, err.message, EXIT_EXISTS)
    except InvalidArgument as err:
        return exits.fail(PROG, err.message, exits.USAGE)
    except RollwayError as err:
        return exits.fail(PROG, f"{err.message} (no manifest was written)", exits.ERROR)
    finally:
        storage.close()
    mib_s = result.total_bytes / max(result.seconds, 1e-9) / 2**20
    print(
        f"published {result.version_uri}: {len(result.manifest.files)} files, "
        f"{human_bytes(result.total_bytes)} in {result.seconds:.1f} s ({mib_s:.1f} MiB/s)",
        file=sys.stderr,
    )
    code = exits.OK
    if args.kafka_bootstrap_servers:
        try:
            send_event(args.kafka_bootstrap_servers, args.topic, result, args.kafka_timeout_seconds)
            print(f"sent ModelPublished to topic {args.topic!r}", file=sys.stderr)
        except Exception as err:  # the store is done; say exactly what is missing
            code = exits.fail(
                PROG,
                f"{result.version_uri} is published, but the ModelPublished event could not "
                f"be sent to {args.kafka_bootstrap_servers}: {err}",
                EXIT_EVENT,
            )
    if args.json:
        print(json.dumps(summary(result)))
    else:
        print(result.version_uri)
    return code


def published_event(result: PublishResult) -> ModelPublished:
    event = ModelPublished(
        model=result.model,
        version=result.version,
        version_uri=result.version_uri,
        manifest_sha256=result.manifest_sha256,
        total_bytes=result.total_bytes,
        file_count=len(result.manifest.files),
        publisher=CREATED_BY,
    )
    event.published_at.GetCurrentTime()
    return event


def send_event(bootstrap: str, topic: str, result: PublishResult, timeout_s: float = 15.0) -> None:
    """Sends the ModelPublished and waits for the broker's acknowledgement;
    each wait (reaching the broker, metadata, the send, the flush) is bounded
    by ``timeout_s``."""
    from kafka import KafkaProducer

    record = events.encode_model_published(
        published_event(result), source=f"//rollway/publish/{socket.gethostname()}"
    )
    timeout_ms = max(1, int(timeout_s * 1000))
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", retries=5,
        request_timeout_ms=timeout_ms, max_block_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
    )  # fmt: skip
    try:
        sent = producer.send(topic, key=record.key, value=record.value, headers=record.headers)
        sent.get(timeout_s)
        producer.flush(timeout_s)
    finally:
        producer.close(min(timeout_s, 10.0))


def summary(result: PublishResult) -> dict[str, object]:
    return {
        "model": result.model,
        "version": result.version,
        "version_uri": result.version_uri,
        "files": len(result.manifest.files),
        "total_bytes": result.total_bytes,
        "manifest_sha256": result.manifest_sha256,
        "seconds": round(result.seconds, 3),
    }
