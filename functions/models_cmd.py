"""Operator commands on assignments: ``rollway models list|status``, ``rollway label``,
``rollway pin`` and ``rollway rollback``.

Thin adapters over ``loader.assign`` (what the next assignment is) and
``loader.assignments`` (storing it as a new generation, safe against concurrent
loaders and operators). After a write, ``AssignmentChanged`` goes to Kafka when
bootstrap servers are given. Errors are one line; URIs are printed redacted.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from functions import exits, settings
from loader import assignments, display, events
from loader.assign import (
    OperatorIntents,
    StagedVersion,
    Update,
    known_versions,
    reassign,
    rollback_intents,
)
from loader.errors import FailedPrecondition, InvalidArgument, RollwayError
from loader.schemas.rollway.v1.assignment_pb2 import (
    AssignedVersion,
    AssignmentChanged,
    AssignmentDocument,
)
from loader.storage import Storage, open_storage

_EPILOG = """\
environment:
  ROLLWAY_STORE                     the serving store (instead of --store)
  ROLLWAY_KAFKA_BOOTSTRAP_SERVERS   send AssignmentChanged there after a write
  ROLLWAY_ASSIGNMENTS_TOPIC         its topic (default model-assignments)
  AWS_*, S3_*                       credentials and endpoint of s3:// stores

exit status:
  0  done, or nothing had to change
  1  the store or Kafka failed (a generation reported as committed stays committed)
  2  usage error, or a refused request (unknown model, bad label, nothing to roll back to)
"""

_LABEL_HELP = """\
Set or remove version labels of MODEL, as a new generation. A label must point to
a version in the current assignment (TF Serving's rule). Labels set or removed here
are the operator's: they win over the model config's label of the same name, and a
removed label stays removed until it is set again."""
_PIN_HELP = """\
Serve exactly these versions of MODEL, whatever the version policy says, until
--clear. Versions in the assignment or its history can be pinned. After --clear the
current versions stay until the loader's next assignment applies the policy."""
_ROLLBACK_HELP = """\
Make the previous generation's versions and labels the assignment again (a new
generation), and pin them, so that a replayed publish event does not roll forward.
'rollway pin MODEL --clear' hands versions back to the policy. A second rollback
returns to where the first started."""


class Refused(Exception):
    """The request cannot be honoured as asked (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _label_arg(text: str) -> tuple[str, int]:
    name, sep, number = text.partition("=")
    if not sep or not name or not number.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION, not {text!r}")
    return name, int(number)


def _versions_arg(text: str) -> frozenset[int]:
    parts = text.split(",")
    if not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected versions like 3,5, not {text!r}")
    return frozenset(int(part) for part in parts)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip


@dataclass(frozen=True)
class StoreSettings:
    """The settings of the assignment commands (``functions.settings``); the
    reading ones (list, status) take only ``--store``."""

    store: str = settings.store("the serving store holding _rollway/assignments")
    kafka_bootstrap_servers: str = settings.kafka_bootstrap_servers("send AssignmentChanged there")
    assignments_topic: str = settings.assignments_topic(
        f"the topic of AssignmentChanged (default {events.ASSIGNMENTS_TOPIC})"
    )


def _common(parser: argparse.ArgumentParser, *, write: bool) -> None:
    settings.add_arguments(parser, StoreSettings, only=None if write else {"store"})
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, with StoreSettings converted (flag, then variable, then default)."""
    return settings.parse_into(parser, StoreSettings, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``rollway models list`` and ``rollway models status MODEL``."""
    parser = _parser("rollway models", "List models, or show one model's assignment.")
    sub = parser.add_subparsers(dest="action", required=True)
    _common(sub.add_parser("list", help="models with an assignment"), write=False)
    status = sub.add_parser("status", help="one model's assignment")
    status.add_argument("model")
    _common(status, write=False)
    args = _parse(parser, argv)
    if args.action == "list":
        return _run(parser.prog, args, lambda storage: _list(storage, args.json))
    return _run(parser.prog, args, lambda storage: _status(storage, args.model, args.json))


def label_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser("rollway label", _LABEL_HELP)
    _common(parser, write=True)
    parser.add_argument("model")
    parser.add_argument("labels", nargs="*", type=_label_arg, metavar="LABEL=VERSION")
    parser.add_argument("--remove", action="append", default=[], metavar="LABEL")
    args = _parse(parser, argv)
    if not args.labels and not args.remove:
        parser.error("give LABEL=VERSION or --remove LABEL")
    return _write(parser.prog, args, _label_edit(dict(args.labels), args.remove))


def pin_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser("rollway pin", _PIN_HELP)
    _common(parser, write=True)
    parser.add_argument("model")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--versions", type=_versions_arg, metavar="V,V")
    which.add_argument("--clear", action="store_true", help="hand versions back to the policy")
    args = _parse(parser, argv)
    return _write(parser.prog, args, _pin_edit(args.versions))


def rollback_main(argv: Sequence[str] | None = None) -> int:
    parser = _parser("rollway rollback", _ROLLBACK_HELP)
    _common(parser, write=True)
    parser.add_argument("model")
    args = _parse(parser, argv)
    return _write(parser.prog, args, _rollback_edit)


# An edit: the document -> the intents the command asks for, and the versions it may
# assign (None: every version the document names). It raises InvalidArgument or
# FailedPrecondition to refuse.
Known = dict[int, StagedVersion] | None
Edit = Callable[[AssignmentDocument], tuple[OperatorIntents, Known]]


def _label_edit(set_: dict[str, int], remove: list[str]) -> Edit:
    def edit(document: AssignmentDocument) -> tuple[OperatorIntents, None]:
        before = OperatorIntents.from_document(document)
        for name in remove:
            if name not in document.current.labels and not before.owns(name):
                raise InvalidArgument(f"model {document.current.model} has no label {name!r}")
        return before.with_labels(set_, remove), None

    return edit


def _pin_edit(versions: frozenset[int] | None) -> Edit:
    def edit(document: AssignmentDocument) -> tuple[OperatorIntents, None]:
        known = known_versions(document)
        if missing := sorted((versions or frozenset()) - known.keys()):
            raise InvalidArgument(
                f"model {document.current.model} was never assigned version {_nums(missing)}: "
                f"only versions in its assignment or history can be pinned ({_nums(known)})"
            )
        return OperatorIntents.from_document(document).with_pins(versions or ()), None

    return edit


def _rollback_edit(document: AssignmentDocument) -> tuple[OperatorIntents, Known]:
    after = rollback_intents(document)  # refuses when there is no history
    return after, known_versions(document, first=document.history[0])


def _update(model: str, edit: Edit, cause: str, now: datetime.datetime) -> Update:
    def update(document: AssignmentDocument | None) -> AssignmentDocument | None:
        if document is None:
            raise Refused(f"model {model} has no assignment in this store")
        try:
            after, known = edit(document)
            return reassign(document, after, known=known, cause=cause, changed_at=now)
        except (InvalidArgument, FailedPrecondition) as err:
            raise Refused(err.message) from None

    return update


def _run(prog: str, args: argparse.Namespace, action: Callable[[Storage], int]) -> int:
    """Opens the store, runs ``action`` and maps errors to one line and an exit code."""
    if not args.store:
        return exits.fail(prog, "--store is required (or set ROLLWAY_STORE)", exits.USAGE)
    try:
        storage = open_storage(args.store)
    except InvalidArgument as err:
        return exits.fail(prog, err.message, exits.USAGE)
    except ImportError as err:
        where = display.uri(args.store)
        return exits.fail(prog, f"no storage backend for {where} ({err})", exits.ERROR)
    try:
        return action(storage)
    except (Refused, InvalidArgument) as err:  # InvalidArgument: e.g. a name that cannot be a key
        return exits.fail(prog, err.message, exits.USAGE)
    except RollwayError as err:
        return exits.fail(prog, f"{display.uri(args.store)}: {err.message}", exits.ERROR)
    except Exception as err:  # a backend bug: keep the message, never a raw URI
        return exits.unexpected(prog, err, args.store, at_uri=True)
    finally:
        storage.close()


def _write(prog: str, args: argparse.Namespace, edit: Edit) -> int:
    command = prog.rsplit(maxsplit=1)[-1]
    cause = f"rollway {command} by {_user()}@{socket.gethostname()}"
    now = datetime.datetime.now(datetime.timezone.utc)

    def action(storage: Storage) -> int:
        assignments.check_model(args.model)
        document = assignments.commit(storage, args.model, _update(args.model, edit, cause, now))
        if document is None:
            current = assignments.read(storage, args.model)
            print(f"model {args.model}: unchanged", file=sys.stderr)
            if current is not None:
                _show(current, args.json, brief=True)
            return exits.OK
        _show(document, args.json, brief=True)
        if not args.kafka_bootstrap_servers:
            return exits.OK
        try:
            send_assignment(args.kafka_bootstrap_servers, args.assignments_topic, document.current)
        except Exception as err:
            return exits.fail(prog, f"generation {document.current.generation} of {args.model} "
                              "is committed, but AssignmentChanged could not be sent to topic "
                              f"{args.assignments_topic!r}: {err}", exits.ERROR)  # fmt: skip
        return exits.OK

    return _run(prog, args, action)


def send_assignment(bootstrap: str, topic: str, current: AssignmentChanged) -> None:
    """Sends ``current`` as an AssignmentChanged CloudEvent keyed by model (acks=all)."""
    from kafka import KafkaProducer

    record = events.encode(
        current,
        source=f"//rollway/cli/{socket.gethostname()}",
        subject=f"{current.model}/{current.generation}",
        time=current.changed_at.ToDatetime(tzinfo=datetime.timezone.utc),
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks="all", retries=5,
        request_timeout_ms=15000, max_block_ms=15000,
    )  # fmt: skip
    try:
        producer.send(topic, key=record.key, value=record.value, headers=record.headers).get(30)
        producer.flush(30)
    finally:
        producer.close(10)


def _list(storage: Storage, as_json: bool) -> int:
    models = assignments.list_models(storage)
    print(json.dumps({"models": models}) if as_json else "\n".join(models))
    return exits.OK


def _status(storage: Storage, model: str, as_json: bool) -> int:
    document = assignments.read(storage, assignments.check_model(model))
    if document is None:
        raise Refused(f"model {model} has no assignment in this store")
    _show(document, as_json, brief=False)
    return exits.OK


def _show(document: AssignmentDocument, as_json: bool, *, brief: bool) -> None:
    data = status_json(document)
    if as_json:
        print(json.dumps(data))
        return
    print(f"model {data['model']}: generation {data['generation']}, changed "
          f"{data['changed_at'] or '?'} ({data['cause'] or 'no cause recorded'})")  # fmt: skip
    print("versions:")
    for v in data["versions"]:
        print(f"  {v['version']}  {v['version_uri']}  sha256 {v['manifest_sha256'] or '?'}")
    print(f"labels: {_pairs(data['labels'])}")
    if data["pinned_versions"]:
        print(f"pinned: {_nums(data['pinned_versions'])} (the version policy is suspended "
              f"until 'rollway pin {data['model']} --clear')")  # fmt: skip
    if data["label_overrides"] or data["removed_labels"]:
        removed = ", ".join(data["removed_labels"]) or "none"
        print(f"operator labels: {_pairs(data['label_overrides'])}; removed: {removed}")
    if brief:
        return
    print(f"history ({len(data['history'])}, newest first):")
    for h in data["history"]:
        print(f"  {h['generation']}  {h['changed_at'] or '?'}  versions {_nums(h['versions'])}"
              f"  labels {_pairs(h['labels'])}  ({h['cause']})")  # fmt: skip


def status_json(document: AssignmentDocument) -> dict[str, Any]:
    current = document.current
    return {
        **_summary(current),
        "versions": [_version_json(v) for v in current.versions],
        "pinned_versions": sorted(document.pinned_versions),
        "label_overrides": dict(sorted(document.label_overrides.items())),
        "removed_labels": sorted(document.removed_labels),
        "history": [
            {**_summary(h), "versions": [v.version for v in h.versions]} for h in document.history
        ],
    }


def _version_json(v: AssignedVersion) -> dict[str, Any]:
    uri = display.uri(v.version_uri)
    return {"version": v.version, "version_uri": uri, "manifest_sha256": v.manifest_sha256}


def _summary(assignment: AssignmentChanged) -> dict[str, Any]:
    changed = assignment.changed_at.ToJsonString() if assignment.HasField("changed_at") else None
    return {
        "model": assignment.model,
        "generation": assignment.generation,
        "changed_at": changed,
        "cause": assignment.cause,
        "labels": dict(sorted(assignment.labels.items())),
    }


def _pairs(labels: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"


def _nums(versions: Any) -> str:
    return ",".join(str(v) for v in sorted(versions))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
