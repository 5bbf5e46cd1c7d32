"""One settings layer: every rollway command's flags and environment variables.

A *settings class* is a frozen dataclass whose fields are declared with
:func:`setting` (or one of the shared declarations below) and typed ``bool``,
``int``, ``float`` or ``str``. Each field is one setting; the contract:

* **Flag**: ``--`` and the field's name, with ``_`` written ``-`` in the
  ``"dashes"`` style (rollway's own commands) or kept in the ``"underscores"``
  style (``rollway serve``, whose flags are tensorflow_model_server's); a field
  may name another flag (``flag=``, written without ``--``).
* **Environment variable**: :func:`env_name` of the flag, ``ROLLWAY_`` and the
  flag name in capitals with ``-`` as ``_`` (``--metrics-port``:
  ``ROLLWAY_METRICS_PORT``), unless the field names another (``env=``).
* **Precedence**: the command line, then the environment, then the field's
  default. The Knative functions have no command line: :func:`from_env`.
* **A blank variable is unset**: a variable that is empty or only spaces leaves
  the field at its default (Knative's templated ``value: '{{ env:X }}'`` is
  empty when X is unset). The command line is taken as given: ``--flag=`` sets
  a ``str`` field to the empty string and is an error for the other types
  (as for ``rollway serve``, whose flags are TF Serving's).
* **Conversion**: ``bool`` by :func:`parse_bool` (one vocabulary, also the
  loader's: ``loader.settings_values``), ``int`` and ``float`` by Python's
  ``int`` and ``float``, ``str`` as given; then the field's ``minimum``,
  ``maximum`` and ``choices`` (matched case-insensitively; the value is the
  choice as declared: ``JSON`` reads as ``json``).
  Defaults are trusted, never converted or checked.
* **Errors**: a value that does not convert or check raises
  :class:`SettingError`, a ``ConfigError`` whose message names the flag and its
  variable, e.g. ``--metrics-port (or ROLLWAY_METRICS_PORT) must be 0..65535,
  not '70000'``. Commands turn it into exit status 2 at startup, with usage
  (:func:`parse_args`) or without (their own ``ConfigError`` handling); the
  Knative functions' ``func_runtime.run`` exits 2 with it too.

Flags that are not settings (``--json``, ``--force``, positional arguments:
what one invocation does, not how rollway is configured) stay plain argparse.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from loader import events
from loader.errors import ConfigError
from loader.settings_values import BOOL_WORDS, parse_bool

__all__ = [
    "BOOL_WORDS",
    "ENV_PREFIX",
    "SettingError",
    "Style",
    "add_arguments",
    "convert",
    "env_name",
    "flag_name",
    "from_env",
    "from_values",
    "name_of",
    "parse_args",
    "parse_bool",
    "parse_into",
    "setting",
    "variable",
    "variables",
]

ENV_PREFIX = "ROLLWAY_"
Style = Literal["dashes", "underscores"]
T = TypeVar("T")
_KINDS: dict[type, str] = {bool: "BOOL", int: "INT", float: "FLOAT", str: "STRING"}
_WHAT = {int: "an integer", float: "a number"}


class SettingError(ConfigError):
    """A setting's value that does not convert or check; names flag and variable."""


def setting(
    default: Any,
    help: str,
    *,
    env: str | None = None,
    flag: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """A settings-class field: ``default`` (of the field's type), ``help`` (what
    ``--help`` says, without the variable: :func:`add_arguments` adds it), and
    optionally its own variable or flag name, bounds, allowed words, and
    ``extra`` metadata for the command's own use (``rollway serve``'s support)."""
    metadata = {
        "help": help, "env": env, "flag": flag, "minimum": minimum, "maximum": maximum,
        "choices": tuple(choices), **(extra or {}),
    }  # fmt: skip
    return dataclasses.field(default=default, metadata=metadata)


# -- shared declarations: one default and variable, whichever command uses them --------
# Each returns a new field (a dataclass field belongs to one class); ``help``
# differs per command because what the command does with the value does.


def kafka_bootstrap_servers(
    help: str = "Kafka bootstrap servers, host:port[,...]", *, flag: str | None = None
) -> Any:
    """Kafka's ``host:port[,...]``; empty means no Kafka (each command says if it needs it)."""
    return setting("", help, env="ROLLWAY_KAFKA_BOOTSTRAP_SERVERS", flag=flag)


def assignments_topic(help: str = "the compacted topic of AssignmentChanged") -> Any:
    return setting(events.ASSIGNMENTS_TOPIC, help, env="ROLLWAY_ASSIGNMENTS_TOPIC")


def store(help: str = "the serving store root URI") -> Any:
    return setting("", help, env="ROLLWAY_STORE")


def metrics_port(help: str = "serve Prometheus metrics on this port (0 = off)") -> Any:
    return setting(0, help, env="ROLLWAY_METRICS_PORT", minimum=0, maximum=65535)


def metrics_address(help: str = "address for the metrics port") -> Any:
    return setting("0.0.0.0", help, env="ROLLWAY_METRICS_ADDRESS")


def log_format(default: str = "text", help: str = "text or json (one JSON object per line)") -> Any:
    return setting(default, help, env="ROLLWAY_LOG_FORMAT", choices=("text", "json"))


def log_level(default: str = "info", help: str = "debug, info, warning or error") -> Any:
    return setting(
        default, help, env="ROLLWAY_LOG_LEVEL", choices=("debug", "info", "warning", "error")
    )


# -- names ------------------------------------------------------------------------------


def flag_name(f: dataclasses.Field[Any], style: Style = "dashes") -> str:
    """The flag of field ``f``, without ``--``."""
    named: str | None = f.metadata.get("flag")
    if named:
        return named
    return f.name.replace("_", "-") if style == "dashes" else f.name


def env_name(flag: str) -> str:
    """The variable derived from a flag name (with or without ``--``)."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def _env_of(f: dataclasses.Field[Any], style: Style) -> str:
    named: str | None = f.metadata.get("env")
    return named or env_name(flag_name(f, style))


def variable(cls: type, name: str, style: Style = "dashes") -> str:
    """The environment variable of the field ``name`` of ``cls``."""
    return _env_of(_fields(cls)[name], style)


def variables(cls: type, style: Style = "dashes") -> dict[str, str]:
    """Every field of ``cls`` -> its environment variable (what a deployment may set)."""
    return {name: _env_of(f, style) for name, f in _fields(cls).items()}


def name_of(cls: type, name: str, style: Style = "dashes") -> str:
    """``--flag (or VARIABLE)`` of the field ``name`` of ``cls``: how messages
    about a setting name it, wherever its value came from."""
    f = _fields(cls)[name]
    return f"--{flag_name(f, style)} (or {_env_of(f, style)})"


# -- conversion -------------------------------------------------------------------------


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The fields of settings class ``cls``, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def _kind(cls: type, f: dataclasses.Field[Any]) -> type:
    kind: type = typing.get_type_hints(cls)[f.name]
    if kind not in _KINDS:
        raise TypeError(f"{cls.__name__}.{f.name}: a setting is bool, int, float or str")
    return kind


def convert(cls: type, name: str, text: str, style: Style = "dashes") -> Any:
    """The value of field ``name`` of ``cls`` that ``text`` sets, converted and
    checked; SettingError otherwise."""
    f = _fields(cls)[name]
    kind = _kind(cls, f)
    try:
        value = _convert(kind, f, text)
    except ValueError as err:
        raise SettingError(f"{name_of(cls, name, style)} {err}") from None
    return value


def _convert(kind: type, f: dataclasses.Field[Any], text: str) -> Any:
    """Raises ValueError with the problem, as ``must be ..., not 'text'``."""
    if kind is bool:
        return parse_bool(text)
    if kind is str:
        value: Any = text
    else:
        try:
            value = kind(text.strip())
        except ValueError:
            raise ValueError(f"must be {_WHAT[kind]}, not {text!r}") from None
    low, high, choices = f.metadata["minimum"], f.metadata["maximum"], f.metadata["choices"]
    if choices:
        match = [c for c in choices if c.lower() == value.strip().lower()]
        if not match:
            words = (
                f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else choices[0]
            )
            raise ValueError(f"must be {words}, not {text!r}")
        value = match[0]
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low}..{high}" if low is not None and high is not None else (
            f">= {low}" if low is not None else f"<= {high}"
        )  # fmt: skip
        raise ValueError(f"must be {bounds}, not {text!r}")
    return value


def from_values(cls: type[T], values: Mapping[str, object], style: Style = "dashes") -> T:
    """An instance of ``cls`` from text keyed by field name (or by flag name,
    with dashes); an absent key or ``None`` takes the default; a bool passes as
    is (a bare boolean flag). Other keys are ignored. SettingError on a bad value."""
    result: dict[str, Any] = {}
    for name, f in _fields(cls).items():
        given = values.get(name, values.get(flag_name(f, style)))
        if given is None:
            continue
        if isinstance(given, str):
            result[name] = convert(cls, name, given, style)
        elif isinstance(given, bool) and _kind(cls, f) is bool:
            result[name] = given
        else:
            raise TypeError(f"{cls.__name__}.{name}: expected text, got {given!r}")
    return cls(**result)


def from_env(cls: type[T], env: Mapping[str, str], style: Style = "dashes") -> T:
    """An instance of ``cls`` from each field's variable in ``env`` (blank or
    absent: the default): how the Knative functions, which have no command
    line, read their settings. SettingError names the bad one."""
    values = {name: _env_value(env, _env_of(f, style)) for name, f in _fields(cls).items()}
    return from_values(cls, values, style)


def _env_value(env: Mapping[str, str], variable: str) -> str | None:
    """The text of ``variable``; None when it is absent or blank (unset)."""
    text = env.get(variable)
    return text if text is not None and text.strip() else None


# -- argparse ---------------------------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    style: Style = "dashes",
    *,
    env: Mapping[str, str] | None = None,
    only: Collection[str] | None = None,
    help_for: Callable[[dataclasses.Field[Any]], str] | None = None,
) -> None:
    """Adds a flag for each field of ``cls`` (of the names in ``only``, if given).
    The flag's default is the text of its variable in ``env`` (``os.environ``
    when None, read now), else None; :func:`from_values` (or :func:`parse_args`)
    converts what the namespace holds, so a bad variable does not matter when
    the flag is given. A boolean flag given bare means true. The help is
    ``help_for(field)`` (default: the field's help) and ``[VARIABLE]``."""
    env = os.environ if env is None else env
    for f in _fields(cls).values():
        if only is not None and f.name not in only:
            continue
        kind = _kind(cls, f)
        variable = _env_of(f, style)
        text = help_for(f) if help_for else f.metadata["help"]
        extra: dict[str, Any] = {"nargs": "?", "const": True} if kind is bool else {}
        if kind is bool or style == "underscores":  # else argparse's own: the flag's name
            extra["metavar"] = _KINDS[kind]
        parser.add_argument(
            f"--{flag_name(f, style)}", dest=f.name, default=_env_value(env, variable),
            help=f"{text} [{variable}]".replace("%", "%%"), **extra,
        )  # fmt: skip


def parse_args(
    parser: argparse.ArgumentParser, cls: type[T], argv: Sequence[str] | None = None,
    style: Style = "dashes",
) -> tuple[argparse.Namespace, T]:  # fmt: skip
    """``parser.parse_args(argv)`` and the settings of ``cls`` it holds; a bad
    value exits 2 with usage and the SettingError's message, as argparse does."""
    namespace = parser.parse_args(argv)
    try:
        return namespace, from_values(cls, vars(namespace), style)
    except SettingError as err:
        parser.error(err.message)


def parse_into(
    parser: argparse.ArgumentParser, cls: type, argv: Sequence[str] | None = None,
    style: Style = "dashes",
) -> argparse.Namespace:  # fmt: skip
    """:func:`parse_args`, with the namespace's settings replaced by their
    converted values (every field of ``cls``, at its default where the parser
    has no such flag): for commands that read their settings off the namespace
    beside their other arguments."""
    namespace, values = parse_args(parser, cast(type[object], cls), argv, style)
    for f in dataclasses.fields(cls):
        setattr(namespace, f.name, getattr(values, f.name))
    return namespace
