"""``rollway verify VERSION_URI``: proves that a published version is complete.

Thin adapter over ``loader.verify.verify_version``: the version URI
(``<base>/<model>/<version>``) becomes the storage root, with prefix "". With
``--load`` a COMPLETE version is also trial-loaded in TensorFlow exactly as
``rollway serve`` loads it (warmup included); a failed load makes it CORRUPT.
Output names URIs only in their redacted form, and errors never print a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from functions import exits
from functions.progress_bar import human_bytes, transfer_bar
from functions.trial_load import load_problem
from loader import display
from loader.errors import DataLoss, InvalidArgument, RollwayError
from loader.manifest import MANIFEST_NAME, path_problems
from loader.storage import CHUNK_BYTES, Storage, open_storage, scheme_of
from loader.verify import (
    METHOD_LEGACY,
    Problem,
    ProblemKind,
    Verdict,
    VerificationReport,
    verify_version,
)
from loader.versions import VersionId, parse_version

# TensorFlow (imported later, for SavedModel checks) prints C++ start-up notices;
# on a command line they are noise. An explicit setting still wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EXIT_CODES = {Verdict.COMPLETE: 0, Verdict.INCOMPLETE: 3, Verdict.CORRUPT: 4}
PROG = "rollway verify"

_DESCRIPTION = f"""\
Prove that a model version directory is complete: its manifest ({MANIFEST_NAME},
written last by 'rollway publish') is valid, every listed file has the listed
size and sha256, no unlisted file is present, and the files form a SavedModel
(saved_model.pb or .pbtxt, and every variables shard)."""

_EPILOG = """\
exit status:
  0  COMPLETE    every listed file is present, with the listed size and sha256
  3  INCOMPLETE  the version may still be arriving (e.g. no manifest yet): retry later
  4  CORRUPT     stored bytes contradict the manifest, or --load failed: reject
  2  usage error (bad flags, unsupported URI scheme)
  1  the store could not be read (unreachable, bad credentials, ...) or another error
"""


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollway verify",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "uri",
        metavar="VERSION_URI",
        help="the version directory <base>/<model>/<version>: a local path, file://..., "
        "s3://bucket/..., hdfs://... (credentials come from the environment, as for serve)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument(
        "--load",
        action="store_true",
        help="if COMPLETE, also load the SavedModel in TensorFlow as 'rollway serve' does "
        "(warmup included; remote versions are downloaded to a temporary directory first)",
    )
    parser.add_argument(
        "--tags", default="serve", help="comma-separated MetaGraph tags for --load (default: serve)"
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=8,
        metavar="N",
        help="files hashed in parallel; memory use is about 8 MiB per worker (default: 8)",
    )
    parser.add_argument(
        "--allow-legacy",
        action="store_true",
        help="accept a version without a manifest (plain TF Serving layout) once its listing "
        "stays unchanged for --settle-seconds. Weaker: sizes and checksums cannot be "
        "checked, and a slow multipart upload does not change the listing",
    )
    parser.add_argument(
        "--settle-seconds",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="with --allow-legacy: how long the listing must stay unchanged (default: 30)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2); argparse printed why
        return exit_.code if isinstance(exit_.code, int) else exits.USAGE
    uri, tags = args.uri, tuple(t for t in args.tags.split(",") if t)
    if args.load and not tags:
        return exits.fail(PROG, "--tags must name at least one tag", exits.USAGE)
    try:
        storage = open_storage(uri)
    except InvalidArgument as err:
        return exits.fail(PROG, err.message, exits.USAGE)
    except ImportError as err:
        return exits.fail(
            PROG,
            f"the {scheme_of(uri)}:// storage backend is not available ({err.name or err}); "
            f"cannot verify {display.uri(uri)}",
            exits.ERROR,
        )
    loaded: bool | None = None
    try:
        with transfer_bar("verifying", enabled=not args.json and sys.stderr.isatty()) as progress:
            report = verify_version(
                storage,
                workers=args.workers,
                progress=progress,
                allow_legacy=args.allow_legacy,
                settle_seconds=args.settle_seconds,
                expected_version=_version_in(uri),
            )
        if args.load and report.verdict is Verdict.COMPLETE:
            report = report.with_problems(trial_load(storage, report, tags))
            loaded = report.verdict is Verdict.COMPLETE
    except RollwayError as err:
        return exits.fail(PROG, f"cannot verify {display.uri(uri)}: {err.message}", exits.ERROR)
    except Exception as err:  # a backend bug; keep the message, drop any raw URI
        return exits.unexpected(PROG, err, uri, at_uri=True)
    finally:
        storage.close()
    if args.json:
        print(json.dumps(as_json(display.uri(uri), report, loaded), indent=None))
    else:
        print_human(sys.stdout, display.uri(uri), report, loaded)
    return EXIT_CODES[report.verdict]


def _version_in(uri: str) -> int | None:
    """The version number the URI's last segment names; the manifest must agree."""
    path = urlsplit(uri).path if len(urlsplit(uri).scheme) > 1 else uri
    return parse_version(path.rstrip("/").rsplit("/", 1)[-1])


def as_json(uri: str, report: VerificationReport, loaded: bool | None) -> dict[str, Any]:
    manifest = report.manifest
    return {
        "uri": uri,
        "verdict": report.verdict.value,
        "method": report.method,
        "problems": [
            {"kind": p.kind.value, "path": p.path, "detail": p.detail} for p in report.problems
        ],
        "files_checked": report.files_checked,
        "bytes_hashed": report.bytes_hashed,
        "seconds": round(report.seconds, 6),
        "model": manifest.model if manifest is not None else None,
        "version": manifest.version if manifest is not None else None,
        "loaded": loaded,
    }


def print_human(out: TextIO, uri: str, report: VerificationReport, loaded: bool | None) -> None:
    print(f"{uri}: {report.verdict.value}", file=out)
    if report.method == METHOD_LEGACY:
        print(
            f"method: {report.method} (no manifest; the listing did not change while watched,"
            " so sizes and checksums were NOT verified)",
            file=out,
        )
    else:
        print(f"method: {report.method} ({MANIFEST_NAME})", file=out)
    if report.manifest is not None:
        m = report.manifest
        print(f"version: {m.model} {m.version}, written by {m.created_by or '?'}", file=out)
    print(f"problems: {len(report.problems)}", file=out)
    for problem in report.problems:
        print(f"  {problem}", file=out)
    rate = report.bytes_hashed / report.seconds if report.seconds > 0 else 0.0
    print(
        f"checked {report.files_checked} file(s), hashed {human_bytes(report.bytes_hashed)}"
        f" in {report.seconds:.2f}s ({human_bytes(rate)}/s)",
        file=out,
    )
    if loaded is not None:
        print(f"trial load: {'OK' if loaded else 'FAILED'}", file=out)


def trial_load(
    storage: Storage, report: VerificationReport, tags: tuple[str, ...]
) -> list[Problem]:
    """Loads the verified version as the server does; a LOAD_FAILED problem if it fails."""
    manifest = report.manifest
    version = VersionId(manifest.model, manifest.version) if manifest else VersionId("verify", 0)
    with _local_copy(storage, report) as directory:
        detail = load_problem(directory, version, tags)
    return [] if detail is None else [Problem(ProblemKind.LOAD_FAILED, "", detail)]


@contextlib.contextmanager
def _local_copy(storage: Storage, report: VerificationReport) -> Iterator[Path]:
    """The version as a local directory: itself when the store is local, else a
    temporary download of its files through the Storage interface."""
    from loader.storage.local import LocalStorage

    if isinstance(storage, LocalStorage):
        yield storage.root
        return
    if report.manifest is not None:
        paths = [entry.path for entry in report.manifest.files]
    else:
        paths = [info.key for info in storage.list("") if info.key != MANIFEST_NAME]
    with tempfile.TemporaryDirectory(prefix="rollway-verify-") as temp:
        for path in paths:
            if path_problems(path):  # never write outside the temporary directory
                raise DataLoss(f"refusing to download {path!r}: {path_problems(path)}")
            target = Path(temp, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with storage.open_read(path) as reader, target.open("wb") as out:
                shutil.copyfileobj(reader, out, CHUNK_BYTES)
        yield Path(temp)
