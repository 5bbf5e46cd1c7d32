"""functions.settings: the one settings layer (pure: no process, no I/O)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from functions import settings
from functions.settings import SettingError, setting
from loader.errors import ConfigError
from loader.settings_values import FALSE_WORDS, TRUE_WORDS, parse_bool


@dataclass(frozen=True)
class Example:
    bootstrap_servers: str = settings.kafka_bootstrap_servers(flag="bootstrap-servers")
    metrics_port: int = settings.metrics_port()
    ratio: float = setting(0.5, "a ratio", minimum=0, maximum=1)
    enabled: bool = setting(False, "a switch", env="ROLLWAY_EXAMPLE_SWITCH")
    log_format: str = settings.log_format()
    topic: str = setting("events", "a topic")


@pytest.mark.parametrize("word", [*TRUE_WORDS, "TRUE", " Yes ", "On", "T", "Y"])
def test_true_words(word: str) -> None:
    assert parse_bool(word) is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "FALSE", " no ", "Off", "F", "N"])
def test_false_words(word: str) -> None:
    assert parse_bool(word) is False


@pytest.mark.parametrize("word", ["", " ", "maybe", "2", "enabled", "yess"])
def test_other_words_are_not_booleans(word: str) -> None:
    with pytest.raises(ValueError, match="must be true or false"):
        parse_bool(word)


def test_names() -> None:
    assert settings.env_name("--metrics-port") == "ROLLWAY_METRICS_PORT"
    assert settings.env_name("rest_api_port") == "ROLLWAY_REST_API_PORT"
    assert settings.variables(Example) == {
        "bootstrap_servers": "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS",  # the shared declaration's
        "metrics_port": "ROLLWAY_METRICS_PORT",
        "ratio": "ROLLWAY_RATIO",  # derived from the flag
        "enabled": "ROLLWAY_EXAMPLE_SWITCH",  # named by the field
        "log_format": "ROLLWAY_LOG_FORMAT",
        "topic": "ROLLWAY_TOPIC",
    }
    assert settings.name_of(Example, "metrics_port") == "--metrics-port (or ROLLWAY_METRICS_PORT)"
    assert settings.name_of(Example, "metrics_port", "underscores") == (
        "--metrics_port (or ROLLWAY_METRICS_PORT)"
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("metrics_port", "http", "--metrics-port (or ROLLWAY_METRICS_PORT) must be an integer"),
        ("metrics_port", "70000", "--metrics-port (or ROLLWAY_METRICS_PORT) must be 0..65535"),
        ("metrics_port", "-1", "must be 0..65535, not '-1'"),
        ("ratio", "half", "--ratio (or ROLLWAY_RATIO) must be a number, not 'half'"),
        ("ratio", "2", "--ratio (or ROLLWAY_RATIO) must be 0..1"),
        ("enabled", "maybe", "--enabled (or ROLLWAY_EXAMPLE_SWITCH) must be true or false"),
        ("enabled", "", "must be true or false"),  # a blank flag is no boolean
        ("log_format", "xml", "--log-format (or ROLLWAY_LOG_FORMAT) must be text or json"),
    ],
)
def test_conversion_errors_name_the_flag_and_the_variable(
    name: str, text: str, message: str
) -> None:
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.convert(Example, name, text)
    assert issubclass(SettingError, ConfigError)  # commands and functions exit 2 with it


def test_conversion() -> None:
    assert settings.convert(Example, "metrics_port", " 9090 ") == 9090
    assert settings.convert(Example, "ratio", "0.25") == 0.25
    assert settings.convert(Example, "enabled", "on") is True
    assert settings.convert(Example, "log_format", "JSON") == "json"  # the declared spelling
    assert settings.convert(Example, "topic", "") == ""  # a str flag may be empty


def test_from_env_reads_each_variable_and_blank_is_unset() -> None:
    env = {
        "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "ROLLWAY_METRICS_PORT": "9100",
        "ROLLWAY_EXAMPLE_SWITCH": "yes",
        "ROLLWAY_TOPIC": "  ",  # blank: the default
        "ROLLWAY_RATIO": "",
        "ROLLWAY_ENABLED": "no",  # not its variable
    }
    assert settings.from_env(Example, env) == Example(
        bootstrap_servers="k:9092", metrics_port=9100, enabled=True
    )
    assert settings.from_env(Example, {}) == Example()


def test_from_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="ROLLWAY_METRICS_PORT"):
        settings.from_env(Example, {"ROLLWAY_METRICS_PORT": "many"})


def _parser(env: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="example")
    settings.add_arguments(parser, Example, env=env)
    return parser


def test_the_environment_is_the_default_and_the_flag_wins() -> None:
    env = {"ROLLWAY_METRICS_PORT": "9100", "ROLLWAY_TOPIC": "from-env"}
    _, got = settings.parse_args(_parser(env), Example, ["--topic", "from-flag"])
    assert (got.metrics_port, got.topic) == (9100, "from-flag")
    _, got = settings.parse_args(_parser({}), Example, [])
    assert got == Example()


def test_a_flag_wins_even_over_a_bad_variable() -> None:
    env = {"ROLLWAY_METRICS_PORT": "not-a-port"}
    _, got = settings.parse_args(_parser(env), Example, ["--metrics-port=8080"])
    assert got.metrics_port == 8080


def test_a_bare_boolean_flag_is_true() -> None:
    assert settings.parse_args(_parser({}), Example, ["--enabled"])[1].enabled is True
    assert settings.parse_args(_parser({}), Example, ["--enabled=off"])[1].enabled is False


def test_bad_values_exit_2_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, env in ((["--metrics-port=x"], {}), ([], {"ROLLWAY_EXAMPLE_SWITCH": "perhaps"})):
        with pytest.raises(SystemExit) as exited:
            settings.parse_args(_parser(env), Example, argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "usage: example" in err
        assert ("ROLLWAY_METRICS_PORT" if argv else "ROLLWAY_EXAMPLE_SWITCH") in err


def test_help_shows_the_variable() -> None:
    text = _parser({}).format_help()
    assert "[ROLLWAY_KAFKA_BOOTSTRAP_SERVERS]" in text and "--bootstrap-servers" in text
    assert "[ROLLWAY_EXAMPLE_SWITCH]" in text


def test_only_adds_the_named_fields() -> None:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Example, env={}, only={"topic"})
    assert vars(parser.parse_args([])) == {"topic": None}
