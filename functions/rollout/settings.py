"""The rollout's configuration, read once at startup from flags or ``ROLLWAY_*``
environment variables (the same table serves ``rollway rollout`` and the
Knative function), validated, with a documented default for every field.
ConfigError names the bad flag and its variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from functions.rollout import apply
from functions.rollout.service import DNS_LABEL, Kind, Service, Strategy
from loader import events
from loader.errors import ConfigError, InvalidArgument

# flag -> (environment variable, default, help)
FLAGS: dict[str, tuple[str, str, str]] = {
    "namespace": ("ROLLWAY_NAMESPACE", "",
                  "namespace of the Services (default: the pod's, else the kubeconfig context's)"),
    "service": ("ROLLWAY_ROLLOUT_SERVICES", "",
                "MODEL=SERVICE[,SERVICE]: a model's Knative Services, e.g. its gRPC and REST "
                "ones; repeat the flag, or separate entries with ';' in the variable "
                "(default: the Service named like the model)"),
    "strategy": ("ROLLWAY_ROLLOUT_STRATEGY", Kind.IMMEDIATE.value,
                 "strategy of a Service without the rollway.dev/strategy annotation: "
                 "immediate, canary or manual"),
    "canary-percent": ("ROLLWAY_ROLLOUT_CANARY_PERCENT", "10",
                       "canary share of a Service without rollway.dev/canary-percent (1..99)"),
    "create-services": ("ROLLWAY_ROLLOUT_CREATE", "false",
                        "create a model's missing Service from --template (opt-in per namespace; "
                        "needs infra/components/instance-creation)"),
    "template": ("ROLLWAY_ROLLOUT_TEMPLATE", "",
                 "YAML file whose first Knative Service is the template of created Services "
                 "(default: infra/base/serving-grpc.yaml of this checkout)"),
}  # fmt: skip
# flag -> (environment variable, default, help) of `rollway rollout run` only.
CONSUMER_FLAGS: dict[str, tuple[str, str, str]] = {
    "bootstrap-servers": ("ROLLWAY_KAFKA_BOOTSTRAP_SERVERS", "",
                          "Kafka bootstrap servers, host:port[,...] (required)"),
    "assignments-topic": ("ROLLWAY_ASSIGNMENTS_TOPIC", events.ASSIGNMENTS_TOPIC,
                          "the compacted topic of AssignmentChanged"),
    "group": ("ROLLWAY_ROLLOUT_GROUP", "rollway-rollout", "consumer group"),
    "resync-seconds": ("ROLLWAY_ROLLOUT_RESYNC_SECONDS", "60",
                       "how often Services rolled out are read again to take failed revisions "
                       "out of their traffic; 0 = never"),
    "log-format": ("ROLLWAY_LOG_FORMAT", "text", "text or json"),
    "log-level": ("ROLLWAY_LOG_LEVEL", "info", "debug, info, warning or error"),
}  # fmt: skip
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class RolloutConfig:
    namespace: str
    services: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strategy: Strategy = field(default_factory=Strategy)
    create: bool = False
    template: Service | None = None  # loaded only when ``create``


def config_from(values: Mapping[str, str], services: Iterable[str] = ()) -> RolloutConfig:
    """``values`` maps the flags of FLAGS (dashes or underscores) to text; absent
    ones take their variable's default. ``services`` adds ``--service`` entries."""

    def value(flag: str) -> str:
        text = values.get(flag, values.get(flag.replace("-", "_")))
        return FLAGS[flag][1] if text is None else str(text)

    def bad(flag: str, why: str) -> ConfigError:
        return ConfigError(f"--{flag} (or {FLAGS[flag][0]}) {why}")

    try:
        kind = Kind(value("strategy"))
    except ValueError:
        strategy = value("strategy")
        raise bad("strategy", f"must be immediate, canary or manual, not {strategy!r}") from None
    percent = value("canary-percent")
    if not percent.isdigit() or not 1 <= int(percent) <= 99:
        raise bad("canary-percent", f"must be 1..99, not {percent!r}")
    create = value("create-services").lower()
    if create not in _TRUE + _FALSE:
        raise bad("create-services", f"must be true or false, not {create!r}")
    entries = [*value("service").split(";"), *services]
    try:
        mapping = parse_services(entries)
    except InvalidArgument as err:
        raise bad("service", err.message) from None
    template = None
    if create in _TRUE:
        path = Path(value("template")) if value("template") else apply.DEFAULT_TEMPLATE
        template = apply.load_template(path)
    namespace = value("namespace") or apply.default_namespace()
    if not _NAMESPACE.fullmatch(namespace):
        raise bad("namespace", f"is not a namespace name: {namespace!r}")
    return RolloutConfig(
        namespace, mapping, Strategy(kind, int(percent)), create in _TRUE, template
    )


def config_from_env(env: Mapping[str, str]) -> RolloutConfig:
    """``config_from`` with the values of the FLAGS' variables in ``env``."""
    return config_from({flag: env[var] for flag, (var, _, _) in FLAGS.items() if var in env})


def parse_services(entries: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``MODEL=SERVICE[,SERVICE]`` entries (blank ones skipped) -> model -> Services."""
    mapping: dict[str, tuple[str, ...]] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        model, sep, names = entry.partition("=")
        services = tuple(n.strip() for n in names.split(",") if n.strip())
        if not sep or not model.strip() or not services:
            raise InvalidArgument(f"expected MODEL=SERVICE[,SERVICE], not {entry!r}")
        for name in services:
            if not DNS_LABEL.fullmatch(name):
                raise InvalidArgument(f"{name!r} is not a Service name (a DNS label)")
        mapping[model.strip()] = services
    return mapping


def services_for(model: str, config: RolloutConfig) -> tuple[str, ...]:
    """The Services of ``model``: mapped, else the one named like the model.
    InvalidArgument when the model's name cannot be a Service's."""
    if model in config.services:
        return config.services[model]
    if DNS_LABEL.fullmatch(model):
        return (model,)
    raise InvalidArgument(
        f"model {model!r} cannot name a Service (a DNS label): map it with "
        f"--service {model}=SERVICE ({FLAGS['service'][0]})"
    )
