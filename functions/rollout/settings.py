"""The rollout's configuration, read once at startup from flags or ``ROLLWAY_*``
environment variables (the same settings classes, bound by ``functions.settings``,
serve ``rollway rollout`` and the Knative function), validated, with a
documented default for every field. ConfigError names the bad flag and its
variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from functions import settings
from functions.rollout import apply
from functions.rollout.service import DNS_LABEL, Kind, Service, Strategy
from functions.settings import setting
from loader.errors import ConfigError, InvalidArgument


@dataclass(frozen=True)
class RolloutSettings:
    """The rollout's own settings: every ``rollway rollout`` action takes some,
    ``run`` and the Knative function all (``functions.settings``)."""

    # fmt: off
    namespace: str = setting(
        "", "namespace of the Services (default: the pod's, else the kubeconfig context's)")
    service: str = setting(
        "", "MODEL=SERVICE[,SERVICE]: a model's Knative Services, e.g. its gRPC and REST "
        "ones; repeat the flag, or separate entries with ';' in the variable "
        "(default: the Service named like the model)", env="ROLLWAY_ROLLOUT_SERVICES")
    strategy: str = setting(
        Kind.IMMEDIATE.value, "strategy of a Service without the rollway.dev/strategy "
        "annotation: immediate, canary or manual", env="ROLLWAY_ROLLOUT_STRATEGY",
        choices=[k.value for k in Kind])
    canary_percent: int = setting(
        10, "canary share of a Service without rollway.dev/canary-percent (1..99)",
        env="ROLLWAY_ROLLOUT_CANARY_PERCENT", minimum=1, maximum=99)
    create_services: bool = setting(
        False, "create a model's missing Service from --template (opt-in per namespace; "
        "needs infra/components/instance-creation)", env="ROLLWAY_ROLLOUT_CREATE")
    template: str = setting(
        "", "YAML file whose first Knative Service is the template of created Services "
        "(default: infra/base/serving-grpc.yaml of this checkout)",
        env="ROLLWAY_ROLLOUT_TEMPLATE")
    # fmt: on


@dataclass(frozen=True)
class ConsumerSettings:
    """The settings of ``rollway rollout run`` only (the function's KafkaSource consumes)."""

    # fmt: off
    bootstrap_servers: str = settings.kafka_bootstrap_servers(
        "Kafka bootstrap servers, host:port[,...] (required)")
    assignments_topic: str = settings.assignments_topic("the compacted topic of AssignmentChanged")
    group: str = setting("rollway-rollout", "consumer group", env="ROLLWAY_ROLLOUT_GROUP")
    resync_seconds: float = setting(
        60.0, "how often Services rolled out are read again to take failed revisions out of "
        "their traffic; 0 = never", env="ROLLWAY_ROLLOUT_RESYNC_SECONDS", minimum=0)
    log_format: str = settings.log_format(help="text or json")
    log_level: str = settings.log_level()
    # fmt: on


@dataclass(frozen=True)
class FunctionLogSettings:
    """How the rollout function logs: JSON lines unless ROLLWAY_LOG_FORMAT says text."""

    log_format: str = settings.log_format("json", "text or json")
    log_level: str = settings.log_level()


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class RolloutConfig:
    namespace: str
    services: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    strategy: Strategy = field(default_factory=Strategy)
    create: bool = False
    template: Service | None = None  # loaded only when ``create``


def config_from(values: Mapping[str, object], services: Iterable[str] = ()) -> RolloutConfig:
    """``values`` maps RolloutSettings' fields (or flags, with dashes) to text
    (``functions.settings.from_values``; others are ignored); absent ones take
    their default. ``services`` adds ``--service`` entries."""
    return _config(settings.from_values(RolloutSettings, values), services)


def config_from_env(env: Mapping[str, str]) -> RolloutConfig:
    """``config_from`` with RolloutSettings' variables in ``env`` (``from_env``)."""
    return _config(settings.from_env(RolloutSettings, env))


def _config(given: RolloutSettings, services: Iterable[str] = ()) -> RolloutConfig:
    """What one setting alone cannot check: the Service map, the template, the
    namespace (the pod's by default). ConfigError names the bad flag."""

    def bad(name: str, why: str) -> ConfigError:
        return ConfigError(f"{settings.name_of(RolloutSettings, name)} {why}")

    entries = [*given.service.split(";"), *services]
    try:
        mapping = parse_services(entries)
    except InvalidArgument as err:
        raise bad("service", err.message) from None
    template = None
    if given.create_services:
        path = Path(given.template) if given.template else apply.DEFAULT_TEMPLATE
        template = apply.load_template(path)
    namespace = given.namespace or apply.default_namespace()
    if not _NAMESPACE.fullmatch(namespace):
        raise bad("namespace", f"is not a namespace name: {namespace!r}")
    strategy = Strategy(Kind(given.strategy), given.canary_percent)
    return RolloutConfig(namespace, mapping, strategy, given.create_services, template)


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
        f"--service {model}=SERVICE ({settings.variable(RolloutSettings, 'service')})"
    )
