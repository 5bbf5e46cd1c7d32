"""``rollway rollout status|promote|rollback|run``: a model's Knative Services
as the rollout function manages them (``functions/rollout``).

``rollback`` moves traffic back AND the assignment: the assignment becomes the
generation of the revision that gets the traffic again (a new generation,
pinned, through ``models_cmd``'s operator path), and that generation is
recorded on the Service as taken, so that its AssignmentChanged does not roll
forward again. Kubernetes credentials come the client's default way: in a pod
its ServiceAccount, elsewhere ``KUBECONFIG`` (or ~/.kube/config).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from functions import exits, models_cmd, settings
from functions.rollout import apply, plan
from functions.rollout.consumer import RolloutConsumer
from functions.rollout.service import Service, generation_of
from functions.rollout.settings import (
    ConsumerSettings,
    RolloutSettings,
    config_from,
    services_for,
)
from functions.rollout.status import status_json, status_text
from functions.serving import logs
from loader import assignments, display
from loader.assign import OperatorIntents, known_versions, rollback_intents
from loader.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    RollwayError,
)
from loader.group_consumer import GroupConfig
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentDocument
from loader.storage import open_storage

log = logging.getLogger("rollway.rollout")
# Tests replace it with a fake CustomObjectsApi.
api_factory: Callable[[], apply.ServicesApi] = apply.load_api

_EPILOG = """\
Every flag can be set by the environment variable shown; a flag wins.
exit status: 0 done (or nothing to change), 1 the API, the store or Kafka failed,
2 usage error or refused (no canary to promote, nothing to roll back to, forbidden)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rollway rollout", epilog=_EPILOG, formatter_class=argparse.RawTextHelpFormatter,
        description="Roll out assignments as Knative revisions: status, promote, rollback, run.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    for action, text in (
        ("status", "a model's Services: revisions, traffic, generation, readiness"),
        ("promote", "100%% to the canary (or candidate) revision; it becomes stable"),
        ("rollback", "traffic back to the previous revision, and the assignment to its generation"),
        ("run", "consume AssignmentChanged and roll each out (a Kafka consumer)"),
    ):
        command = sub.add_parser(action, help=text, description=text, epilog=_EPILOG,
                                 formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
        if action != "run":
            command.add_argument("model")
        if action in ("status", "promote"):  # rollback gets it from models_cmd._common
            command.add_argument("--json", action="store_true", help="print JSON on stdout")
        settings.add_arguments(command, RolloutSettings, only={"namespace"})
        # --service repeats, so argparse takes no default from its variable: _values reads it.
        alone = "; SERVICE alone names MODEL's" if action != "run" else ""
        service = next(f for f in dataclasses.fields(RolloutSettings) if f.name == "service")
        command.add_argument("--service", action="append", default=[], help=(
            f"{service.metadata['help']}{alone} [{settings.variable(RolloutSettings, 'service')}]"
        ))  # fmt: skip
        if action == "run":
            settings.add_arguments(
                command,
                RolloutSettings,
                only={"strategy", "canary_percent", "create_services", "template"},
            )
            settings.add_arguments(command, ConsumerSettings)
        elif action == "status":
            settings.add_arguments(command, RolloutSettings, only={"strategy", "canary_percent"})
        if action == "rollback":
            models_cmd._common(command, write=True)  # --store, Kafka: as `rollway rollback`
            command.add_argument("--traffic-only", action="store_true",
                                 help="move traffic only, not the assignment")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # rollback's --store and Kafka settings (models_cmd's), converted; defaults elsewhere.
    args = settings.parse_into(build_parser(), models_cmd.StoreSettings, argv)
    prog = f"rollway rollout {args.action}"
    try:
        if args.action == "run":
            return _run(args)
        mapped = [s for s in args.service if "=" in s]
        config = config_from(_values(args), mapped)
        bare = tuple(s for s in args.service if "=" not in s)
        services = bare or services_for(args.model, config)
        api = api_factory()
        if args.action == "status":
            return _status(api, config.namespace, services, config.strategy, args.json)
        if args.action == "promote":
            return _each(api, config.namespace, services, plan.promote, args.json)
        return _rollback(prog, api, args, config.namespace, services)
    except (models_cmd.Refused, InvalidArgument, FailedPrecondition, PermissionDenied) as err:
        return exits.fail(prog, err.message, exits.USAGE)
    except RollwayError as err:
        return exits.fail(prog, err.message, exits.ERROR)
    except Exception as err:  # a backend's own error: one line, never a raw store URI
        return exits.unexpected(prog, err, getattr(args, "store", ""))


def _values(args: argparse.Namespace) -> dict[str, str | bool]:
    """The flags for ``config_from``; ``--service`` entries are passed apart and
    its variable is read here (argparse's append takes no default from it)."""
    values = {k: v for k, v in vars(args).items() if isinstance(v, (str, bool))}
    values["service"] = os.environ.get(settings.variable(RolloutSettings, "service"), "")
    return values


def _status(
    api: apply.ServicesApi, namespace: str, services: Sequence[str], default: plan.Strategy,
    as_json: bool,
) -> int:  # fmt: skip
    found = []
    for name in services:
        service = apply.get(api, namespace, name)
        if service is None:
            raise FailedPrecondition(f"no Service {namespace}/{name}")
        found.append(status_json(service, default))
    print(json.dumps({"services": found}) if as_json else "\n\n".join(map(status_text, found)))
    return exits.OK


def _each(
    api: apply.ServicesApi, namespace: str, services: Sequence[str],
    step: Callable[[Service], Service], as_json: bool,
) -> int:  # fmt: skip
    """Applies ``step`` (a plan of the current Service) to each Service."""
    done = []
    for name in services:
        applied = apply.apply(api, namespace, name, lambda s: None if s is None else step(s))
        if applied.outcome is apply.ApplyOutcome.ABSENT:
            raise FailedPrecondition(f"no Service {namespace}/{name}")
        assert applied.service is not None
        done.append(status_json(applied.service, plan.Strategy()))
        print(f"Service {namespace}/{name}: {applied.outcome.value}", file=sys.stderr)
    print(json.dumps({"services": done}) if as_json else "\n\n".join(map(status_text, done)))
    return exits.OK


def _rollback(
    prog: str, api: apply.ServicesApi, args: argparse.Namespace, namespace: str,
    services: Sequence[str],
) -> int:  # fmt: skip
    targets = {}
    for name in services:
        current = apply.get(api, namespace, name)
        if current is None:
            raise FailedPrecondition(f"no Service {namespace}/{name}")
        targets[name] = generation_of(name, plan.rollback_target(current))
    if len(set(targets.values())) > 1:
        raise FailedPrecondition(f"the Services of {args.model} would roll back to different "
                                 f"generations ({targets}): roll them back one by one")  # fmt: skip
    taken = None
    if not args.traffic_only:
        taken = _rollback_assignment(prog, args, next(iter(targets.values()), None))
    step = lambda s: plan.rollback(s, generation=taken)  # noqa: E731
    return _each(api, namespace, services, step, args.json)


def _rollback_assignment(prog: str, args: argparse.Namespace, generation: int | None) -> int:
    """Commits the assignment rollback to ``generation`` (None: the previous
    generation, as ``rollway rollback``); sends it when Kafka is given. Returns
    the generation now in force."""
    if not args.store:
        raise ConfigError("--store (or ROLLWAY_STORE) is required, or --traffic-only")
    cause = f"rollway rollout rollback by {models_cmd._user()}@{socket.gethostname()}"
    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        storage = open_storage(args.store)
    except ImportError as err:
        raise ConfigError(f"no storage backend for {display.uri(args.store)} ({err})") from None
    try:
        update = models_cmd._update(args.model, _rollback_edit(generation), cause, now)
        document = assignments.commit(storage, assignments.check_model(args.model), update)
        if document is None:  # already there, e.g. a second run after a failed patch
            document = assignments.read(storage, args.model)
            assert document is not None  # _update refuses a model without one
            print(f"model {args.model}: assignment unchanged", file=sys.stderr)
            return document.current.generation
    except RollwayError as err:
        err.message = f"{display.uri(args.store)}: {err.message}"  # name the store, redacted
        raise
    finally:
        storage.close()
    generation_now = document.current.generation
    print(f"model {args.model}: assignment generation {generation_now} committed", file=sys.stderr)
    if args.kafka_bootstrap_servers:
        try:
            models_cmd.send_assignment(
                args.kafka_bootstrap_servers, args.assignments_topic, document.current
            )
        except Exception as err:  # committed anyway; the traffic still has to move
            print(f"{prog}: AssignmentChanged of generation {generation_now} could not be sent: "
                  f"{err}", file=sys.stderr)  # fmt: skip
    return generation_now


def _rollback_edit(generation: int | None) -> models_cmd.Edit:
    """``rollway rollback``'s edit, aimed at ``generation`` instead of history[0]."""

    def edit(document: AssignmentDocument) -> tuple[OperatorIntents, models_cmd.Known]:
        if generation is None:
            return models_cmd._rollback_edit(document)
        if generation == document.current.generation:
            return OperatorIntents.from_document(document), None
        target = next((h for h in document.history if h.generation == generation), None)
        if target is None:
            raise FailedPrecondition(
                f"generation {generation} of model {document.current.model} is not in the "
                f"assignment's history (the last {assignments.HISTORY_LIMIT}); use --traffic-only"
            )
        aimed = AssignmentDocument()  # rollback_intents goes to history[0]: make it the target
        aimed.CopyFrom(document)
        del aimed.history[:]
        aimed.history.append(target)
        return rollback_intents(aimed), known_versions(document, first=target)

    return edit


def _run(args: argparse.Namespace) -> int:
    try:
        run = settings.from_values(ConsumerSettings, vars(args))
    except RollwayError as err:  # before logging is configured: a bad log format or level
        return exits.fail("rollway rollout run", err.message, exits.USAGE)
    logs.configure(run.log_format, run.log_level)
    try:
        rollout = config_from(_values(args), args.service)
        if not run.bootstrap_servers:
            raise ConfigError(
                f"{settings.name_of(ConsumerSettings, 'bootstrap_servers')} is required"
            )
        api = api_factory()
    except (RollwayError, ValueError) as err:
        return exits.fail("rollway rollout run", str(getattr(err, "message", err)), exits.USAGE)
    consumer_config = GroupConfig(
        run.bootstrap_servers, run.assignments_topic, run.group,
        client_id="rollway-rollout", tick_seconds=run.resync_seconds,
    )  # fmt: skip
    consumer = RolloutConsumer(api, rollout, consumer_config)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the record in hand, then stopping", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()
    return exits.OK
