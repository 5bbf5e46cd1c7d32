"""TensorFlow Serving's ModelServerConfig, read into rollway's value types.

The text format and the message classes are TF Serving's own (from the
``tensorflow-serving-api`` package), so users keep their config files. This
module validates once and hands out frozen :class:`ModelSpec` values; nothing
downstream touches the proto.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
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
    parse_text_proto(text, message, source)
    return specs_from_proto(message, source)


def parse_text_proto(text: str, message: Any, source: str) -> None:
    """Parses text-format ``text`` into ``message`` as TF Serving's
    ParseProtoTextFile does (``util/proto_util.h``).

    A ConfigError says what TF Serving prints: the line protobuf's C++ parser
    logs, ``Error parsing text-format <full message name>: <line>:<column>:
    <message>`` (``text_format.cc`` ReportError: both 1-based), then TF
    Serving's status ``Invalid protobuf file: '<source>'``.
    """
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        detail = text_format_error(err, text, message.DESCRIPTOR.full_name)
        raise ConfigError(f"{detail} (Invalid protobuf file: '{source}')") from err


def text_format_error(err: text_format.ParseError, text: str, full_name: str) -> str:
    """Python protobuf's ParseError in the words and positions of the C++ parser.

    The C++ tokenizer counts columns in bytes and moves a tab to the next
    multiple of 8; Python counts characters. Where the two parsers point at
    different tokens for the same mistake, the C++ one is reported: an unknown
    field name at the token after it (C++ reports the current token once the
    name is consumed), and a message left open at the end of the input.
    Other messages are Python protobuf's own wording.
    """
    line, column = err.GetLine(), err.GetColumn()
    if line is None or column is None:
        return f"Error parsing text-format {full_name}: {err}"
    lines = text.split("\n")
    row, col = line - 1, column - 1
    message = str(err).removeprefix(f"{line}:{column} : ")
    # Errors at the current token repeat its line: "'<line>': <message>".
    echo = f"'{lines[row]}': " if row < len(lines) else ""
    current_token = bool(echo) and message.startswith(echo)
    if current_token:
        message = message[len(echo) :]
    if _UNKNOWN_FIELD.match(message) and row < len(lines):
        name = _IDENTIFIER.match(lines[row], col)
        row, col = _next_token(lines, row, name.end() if name else col)
    elif not current_token and _UNCLOSED.match(message):
        row, col = _next_token(lines, len(lines) - 1, len(lines[-1]))
        message = "Expected identifier, got: "
    elif found := _IDENTIFIER_OR_NUMBER.match(message):
        message = f"Expected identifier, got: {found.group(1)}"
    prefix = lines[row][:col] if row < len(lines) else ""
    return f"Error parsing text-format {full_name}: {row + 1}:{_cpp_column(prefix) + 1}: {message}"


_UNKNOWN_FIELD = re.compile(r'Message type "[^"]+" has no field named "[^"]+"\.$')
_UNCLOSED = re.compile(r'Expected "[}>]"\.$')
_IDENTIFIER_OR_NUMBER = re.compile(r"Expected identifier or number, got (.*)\.$")
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]*")
_WHITESPACE = " \t\r\v\f"


def _next_token(lines: Sequence[str], row: int, col: int) -> tuple[int, int]:
    """Where the C++ tokenizer's next token starts at or after (row, col),
    past whitespace and # comments; the end of the input if there is none."""
    while True:
        line = lines[row]
        while col < len(line) and line[col] in _WHITESPACE:
            col += 1
        if col < len(line) and line[col] != "#":
            return row, col
        if row + 1 == len(lines):
            return row, len(line)
        row, col = row + 1, 0


def _cpp_column(prefix: str) -> int:
    """The 0-based column io::Tokenizer gives the character after ``prefix``."""
    column = 0
    for char in prefix:
        column += 8 - column % 8 if char == "\t" else len(char.encode("utf-8"))
    return column


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
