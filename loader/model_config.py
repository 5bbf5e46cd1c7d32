"""TensorFlow Serving's ModelServerConfig, read into rollway's value types.

The text format and the message classes are TF Serving's own (from the
``tensorflow-serving-api`` package), so users keep their config files. This
module validates once and hands out frozen :class:`ModelSpec` values; nothing
downstream touches the proto.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from loader.errors import ConfigError
from loader.policy import PolicyKind, VersionPolicy

TENSORFLOW_PLATFORM = "tensorflow"


def _model_server_config_cls() -> Any:
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig


@dataclass(frozen=True)
class ModelSpec:
    """One served model: where its versions live, which to serve, and labels."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: Mapping[str, int] = field(default_factory=dict)
    platform: str = TENSORFLOW_PLATFORM


def parse_model_server_config(text: str, source: str = "<string>") -> tuple[ModelSpec, ...]:
    """Parses ModelServerConfig text; raises ConfigError naming the problem."""
    message = _model_server_config_cls()()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise ConfigError(f"{source}: invalid ModelServerConfig text proto: {err}") from err
    return specs_from_proto(message, source)


def read_model_server_config(path: str | os.PathLike[str]) -> tuple[ModelSpec, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read model config file {os.fspath(path)!r}: {err}") from err
    return parse_model_server_config(text, os.fspath(path))


def specs_from_proto(message: Any, source: str = "<config>") -> tuple[ModelSpec, ...]:
    """Validates a ModelServerConfig message (also the one in ReloadConfigRequest)."""
    which = message.WhichOneof("config")
    if which == "custom_model_config":
        raise ConfigError(f"{source}: custom_model_config is not supported; use model_config_list")
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for config in message.model_config_list.config if which else ():
        spec = _spec_from_model_config(config, source)
        if spec.name in seen:
            raise ConfigError(
                f"{source}: Illegal to list model {spec.name} multiple times in config list"
            )
        seen.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def _spec_from_model_config(config: Any, source: str) -> ModelSpec:
    name = str(config.name)
    if not name:
        raise ConfigError(f"{source}: a model config has an empty name")
    where = f"{source}: model {name!r}"
    if not (os.path.isabs(config.base_path) or "://" in config.base_path):
        # TF Serving rejects relative paths too: they would depend on the cwd.
        raise ConfigError(
            f"{source}: Expected model {name} to have an absolute path or URI; "
            f"got base_path()={config.base_path}"
        )
    platform = _platform(config, where)
    return ModelSpec(
        name=name,
        base_path=str(config.base_path),
        policy=_policy_from_proto(config.model_version_policy, where),
        labels=dict(config.version_labels),
        platform=platform,
    )


def _platform(config: Any, where: str) -> str:
    """TF Serving's rule: exactly one of model_platform and (deprecated) model_type."""
    platform, model_type = str(config.model_platform), int(config.model_type)
    if platform and model_type:
        raise ConfigError(
            f"{where}: Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform."
        )
    if not platform and not model_type:
        raise ConfigError(
            f"{where}: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            'ModelServerConfig::model_platform. Add model_platform: "tensorflow".'
        )
    if model_type and model_type != 1:  # 1 = ModelType.TENSORFLOW
        raise ConfigError(
            f"{where}: ModelServerConfig::model_type choice {model_type} not supported."
        )
    platform = platform or TENSORFLOW_PLATFORM
    if platform != TENSORFLOW_PLATFORM:
        raise ConfigError(f"{where}: requests unsupported platform {platform}")
    return platform


def _policy_from_proto(policy: Any, where: str) -> VersionPolicy:
    which = policy.WhichOneof("policy_choice")
    try:
        if which == "all":
            return VersionPolicy(PolicyKind.ALL)
        if which == "specific":
            return VersionPolicy.specific(int(v) for v in policy.specific.versions)
        if which == "latest":
            # TF Serving treats an unset num_versions as 1.
            return VersionPolicy.latest(int(policy.latest.num_versions) or 1)
        return VersionPolicy.latest(1)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from err


def single_model_config(name: str, base_path: str) -> tuple[ModelSpec, ...]:
    """The config ``--model_name``/``--model_base_path`` stand for."""
    message = _model_server_config_cls()()
    config = message.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = name, base_path, TENSORFLOW_PLATFORM
    return specs_from_proto(message, "--model_base_path")
