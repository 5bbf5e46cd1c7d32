"""functions.serving.flags: tensorflow_model_server's flags, defaults and syntax."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from functions.serving.flags import (
    ENV_PREFIX,
    ServerOptions,
    UsageError,
    build_parser,
    parse_channel_arguments,
    parse_flags,
    worker_count,
)

BASE = "--model_base_path=/models/m"
FIELDS = {f.name: f for f in dataclasses.fields(ServerOptions)}
LATER = [f for f in dataclasses.fields(ServerOptions) if f.metadata["support"] == "later"]


def _parse(*argv: str, env: dict[str, str] | None = None) -> Any:
    return parse_flags(list(argv), env={} if env is None else env)


def _exit_2(
    capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None
) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        _parse(*argv, env=env)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: rollway serve" in captured.err
    return captured.err


# ---------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("port", 8500),
        ("grpc_socket_path", ""),
        ("grpc_channel_arguments", ""),
        ("grpc_max_threads", 4 * (os.cpu_count() or 1)),
        ("model_name", "default"),
        ("model_base_path", ""),
        ("model_config_file_poll_wait_seconds", 0),
        ("file_system_poll_wait_seconds", 1),
        ("max_num_load_retries", 5),
        ("load_retry_interval_micros", 60_000_000),
        ("num_load_threads", 0),
        ("num_unload_threads", 0),
        ("enable_model_warmup", True),
        ("num_request_iterations_for_warmup", 0),
        ("rest_api_port", 0),
        ("rest_api_num_threads", 4 * (os.cpu_count() or 1)),
        ("rest_api_timeout_in_ms", 30000),
        ("rest_api_enable_cors_support", False),
        ("saved_model_tags", "serve"),
        ("allow_version_labels_for_unavailable_models", False),
        ("enable_batching", False),
        ("batching_parameters_file", ""),
        ("flush_filesystem_caches", True),
        ("tensorflow_session_parallelism", 0),
        ("tensorflow_intra_op_parallelism", 0),
        ("tensorflow_inter_op_parallelism", 0),
        ("per_process_gpu_memory_fraction", 0.0),
        ("remove_unused_fields_from_bundle_metagraph", True),
        ("prefer_tflite_model", False),
        ("num_tflite_pools", os.cpu_count() or 1),
        ("num_tflite_interpreters_per_pool", 1),
        ("enable_signature_method_name_check", False),
        ("enable_profiler", True),
        ("enable_serialization_as_tensor_content", False),
        ("use_alts_credentials", False),
        ("version", False),
        ("ssl_config_file", ""),
        ("monitoring_config_file", ""),
        ("enable_per_model_batching_parameters", False),
        ("tensorflow_session_config_file", ""),
        ("platform_config_file", ""),
        ("xla_cpu_compilation_enabled", False),
        ("xla_gpu_compilation_enabled", False),
        ("mixed_precision", ""),
        ("thread_pool_factory_config_file", ""),
        ("skip_initialize_tpu", False),
        # rollway's own choices, documented in the README
        ("enable_grpc_healthcheck_service", True),
        ("bind_address", "0.0.0.0"),
        ("log_format", "text"),
        ("log_level", "INFO"),
        # serving from assignments (rollway only)
        ("assignments", ""),
        ("models", ""),
        ("pin_generation", 0),
        ("follow", "none"),
        ("follow_poll_seconds", 5.0),
        ("kafka_bootstrap_servers", ""),
        ("assignments_topic", "model-assignments"),
        ("cache_dir", ""),
        ("assignment_timeout_seconds", 600.0),
    ],
)
def test_defaults_match_tf_serving(name: str, default: Any) -> None:
    assert getattr(ServerOptions(), name) == default
    parsed = _parse("--model_config_file=/models.config")
    assert getattr(parsed.options, name) == default


# Every flag of TF Serving's model_servers/main.cc (flag_list), in its order.
TF_SERVING_FLAGS = [
    "port",
    "grpc_socket_path",
    "rest_api_port",
    "rest_api_num_threads",
    "rest_api_timeout_in_ms",
    "rest_api_enable_cors_support",
    "enable_batching",
    "allow_version_labels_for_unavailable_models",
    "batching_parameters_file",
    "enable_per_model_batching_parameters",
    "model_config_file",
    "model_config_file_poll_wait_seconds",
    "model_name",
    "model_base_path",
    "num_load_threads",
    "num_unload_threads",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "file_system_poll_wait_seconds",
    "flush_filesystem_caches",
    "tensorflow_session_parallelism",
    "tensorflow_session_config_file",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "use_alts_credentials",
    "ssl_config_file",
    "platform_config_file",
    "per_process_gpu_memory_fraction",
    "saved_model_tags",
    "grpc_channel_arguments",
    "grpc_max_threads",
    "enable_model_warmup",
    "num_request_iterations_for_warmup",
    "version",
    "monitoring_config_file",
    "remove_unused_fields_from_bundle_metagraph",
    "prefer_tflite_model",
    "num_tflite_pools",
    "num_tflite_interpreters_per_pool",
    "enable_signature_method_name_check",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
    "enable_profiler",
    "thread_pool_factory_config_file",
    "mixed_precision",
    "skip_initialize_tpu",
    "enable_grpc_healthcheck_service",
    "enable_serialization_as_tensor_content",
]


def test_every_tf_serving_flag_is_accepted() -> None:
    assert set(TF_SERVING_FLAGS) <= set(FIELDS)
    assert len(TF_SERVING_FLAGS) == len(set(TF_SERVING_FLAGS)) == 48


def test_batching_file_help_lists_every_batching_parameters_field() -> None:
    from functions.serving.config_messages import BatchingParameters

    text = FIELDS["batching_parameters_file"].metadata["help"]
    for field in BatchingParameters.DESCRIPTOR.fields:
        assert field.name in text, field.name


def test_per_model_batching_says_what_is_missing() -> None:
    why = FIELDS["enable_per_model_batching_parameters"].metadata["why"]
    assert "batching_params.pbtxt" in why
    assert "batching is not supported" not in why  # --enable_batching works


def test_tflite_flags_are_supported() -> None:
    names = ("prefer_tflite_model", "num_tflite_pools", "num_tflite_interpreters_per_pool")
    assert all(FIELDS[name].metadata["support"] == "yes" for name in names)
    parsed = _parse(
        BASE,
        "--prefer_tflite_model",
        "--num_tflite_pools=3",
        "--num_tflite_interpreters_per_pool=2",
    )
    options = parsed.options
    assert (options.prefer_tflite_model, options.num_tflite_pools) == (True, 3)
    assert options.num_tflite_interpreters_per_pool == 2
    env = {"ROLLWAY_PREFER_TFLITE_MODEL": "true", "ROLLWAY_NUM_TFLITE_POOLS": "5"}
    from_env = _parse(BASE, env=env).options
    assert (from_env.prefer_tflite_model, from_env.num_tflite_pools) == (True, 5)


def test_model_config_file_default_is_empty() -> None:
    assert ServerOptions().model_config_file == ""
    assert _parse(BASE).options.model_config_file == ""


def test_only_given_flags_are_explicit() -> None:
    parsed = _parse(BASE)
    assert parsed.explicit == frozenset({"model_base_path"})
    assert parsed.options == ServerOptions(model_base_path="/models/m")


def test_every_field_has_documented_metadata() -> None:
    for f in dataclasses.fields(ServerOptions):
        assert f.metadata["help"], f.name
        assert f.metadata["support"] in ("yes", "noop", "later"), f.name
        if f.metadata["support"] != "yes":
            assert f.metadata["why"], f.name


# ------------------------------------------------------------------ syntax


@pytest.mark.parametrize(
    "argv",
    [
        ["--model_base_path=/models/m", "--model_name=half", "--port=9000"],
        ["--model_base_path", "/models/m", "--model_name", "half", "--port", "9000"],
        ["--model_base_path=/models/m", "--model_name", "half", "--port=9000"],
    ],
    ids=["equals", "space", "mixed"],
)
def test_both_syntaxes(argv: list[str]) -> None:
    options = _parse(*argv).options
    assert (options.model_base_path, options.model_name, options.port) == (
        "/models/m",
        "half",
        9000,
    )


def test_negative_values_with_space_syntax() -> None:
    options = _parse(BASE, "--load_retry_interval_micros", "-1").options
    assert options.load_retry_interval_micros == -1
    options = _parse(BASE, "--file_system_poll_wait_seconds", "-1").options
    assert options.file_system_poll_wait_seconds == -1


def test_the_last_occurrence_wins() -> None:
    assert _parse(BASE, "--model_name=a", "--model_name=b").options.model_name == "b"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--allow_version_labels_for_unavailable_models"], True),
        (["--allow_version_labels_for_unavailable_models=true"], True),
        (["--allow_version_labels_for_unavailable_models=True"], True),
        (["--allow_version_labels_for_unavailable_models=1"], True),
        (["--allow_version_labels_for_unavailable_models", "true"], True),
        (["--allow_version_labels_for_unavailable_models=false"], False),
        (["--allow_version_labels_for_unavailable_models=0"], False),
        (["--allow_version_labels_for_unavailable_models", "false"], False),
    ],
)
def test_boolean_flags(argv: list[str], expected: bool) -> None:
    parsed = _parse(*argv, BASE)
    assert parsed.options.allow_version_labels_for_unavailable_models is expected
    assert "allow_version_labels_for_unavailable_models" in parsed.explicit


def test_bare_boolean_before_another_flag() -> None:
    options = _parse("--enable_model_warmup", "--model_base_path", "/models/m").options
    assert options.enable_model_warmup is True
    assert options.model_base_path == "/models/m"


def test_boolean_false_turns_off_a_default_true() -> None:
    options = _parse(BASE, "--enable_model_warmup=false").options
    assert options.enable_model_warmup is False
    options = _parse(BASE, "--enable_grpc_healthcheck_service=false").options
    assert options.enable_grpc_healthcheck_service is False


def test_bad_boolean_value(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(capsys, BASE, "--enable_model_warmup=maybe")
    assert "--enable_model_warmup" in err
    assert "maybe" in err


def test_bad_int_value(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(capsys, BASE, "--port=http")
    assert "--port" in err


def test_float_flag_type() -> None:
    assert isinstance(FIELDS["per_process_gpu_memory_fraction"].default, float)
    parser = build_parser()
    namespace = parser.parse_args(["--per_process_gpu_memory_fraction=0.5"])
    assert namespace.per_process_gpu_memory_fraction == 0.5


# ------------------------------------------------------------- environment


def test_environment_variables() -> None:
    env = {
        "ROLLWAY_MODEL_BASE_PATH": "/models/env",
        "ROLLWAY_MODEL_NAME": "from_env",
        "ROLLWAY_PORT": "9001",
        "ROLLWAY_ENABLE_MODEL_WARMUP": "false",
        "ROLLWAY_ALLOW_VERSION_LABELS_FOR_UNAVAILABLE_MODELS": "true",
    }
    parsed = _parse(env=env)
    options = parsed.options
    assert options.model_base_path == "/models/env"
    assert options.model_name == "from_env"
    assert options.port == 9001
    assert options.enable_model_warmup is False
    assert options.allow_version_labels_for_unavailable_models is True
    assert parsed.explicit == {
        "model_base_path",
        "model_name",
        "port",
        "enable_model_warmup",
        "allow_version_labels_for_unavailable_models",
    }


def test_command_line_wins_over_environment() -> None:
    env = {
        "ROLLWAY_MODEL_NAME": "from_env",
        "ROLLWAY_PORT": "9001",
        "ROLLWAY_MODEL_BASE_PATH": "/e",
    }
    options = _parse(BASE, "--model_name=from_cli", "--port", "9002", env=env).options
    assert options.model_name == "from_cli"
    assert options.port == 9002
    assert options.model_base_path == "/models/m"


def test_command_line_wins_even_over_a_bad_environment_value() -> None:
    options = _parse(BASE, "--port=9002", env={"ROLLWAY_PORT": "not-a-number"}).options
    assert options.port == 9002


def test_empty_environment_variable_is_unset() -> None:
    parsed = _parse(BASE, env={"ROLLWAY_MODEL_NAME": "", "ROLLWAY_PORT": ""})
    assert parsed.options.model_name == "default"
    assert parsed.options.port == 8500
    assert parsed.explicit == {"model_base_path"}


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"ROLLWAY_TEST_HDFS_URI": "hdfs://x", "ROLLWAY_NOT_A_FLAG": "1", "PORT": "1"}
    assert _parse(BASE, env=env).options == ServerOptions(model_base_path="/models/m")


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROLLWAY_MODEL_NAME", "from_os_env")
    assert parse_flags([BASE]).options.model_name == "from_os_env"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROLLWAY_PORT", "abc"),
        ("ROLLWAY_MAX_NUM_LOAD_RETRIES", "1.5"),
        ("ROLLWAY_ENABLE_MODEL_WARMUP", "perhaps"),
        ("ROLLWAY_PER_PROCESS_GPU_MEMORY_FRACTION", "half"),
    ],
)
def test_bad_environment_value_names_the_variable(
    capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    err = _exit_2(capsys, BASE, env={name: value})
    assert f"environment variable {name}" in err


def test_env_prefix() -> None:
    assert ENV_PREFIX == "ROLLWAY_"


# ------------------------------------------------------ unknown and abbrev


@pytest.mark.parametrize(
    "argv",
    [
        [BASE, "--no_such_flag=1"],
        [BASE, "--no_such_flag"],
        [BASE, "--model_name_x=foo"],
        [BASE, "--mod=x"],
        [BASE, "--mod", "x"],
        ["--model_base=/models/m"],
        [BASE, "--port=8500", "--por=1"],
        [BASE, "stray"],
        [BASE, "-p", "1"],
    ],
    ids=[
        "unknown",
        "unknown-bare",
        "longer",
        "abbrev-equals",
        "abbrev-space",
        "abbrev-base-path",
        "abbrev-port",
        "positional",
        "short",
    ],
)
def test_unknown_and_abbreviated_flags_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    err = _exit_2(capsys, *argv)
    assert "unrecognized arguments" in err


# ------------------------------------------------------------ cross-checks


def test_all_three_parallelism_flags_are_contradictory(capsys: pytest.CaptureFixture[str]) -> None:
    err = _exit_2(
        capsys,
        BASE,
        "--tensorflow_session_parallelism=2",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2",
    )
    assert (
        "Either configure --tensorflow_session_parallelism or "
        "(--tensorflow_intra_op_parallelism, --tensorflow_inter_op_parallelism) "
        "separately. You cannot configure all."
    ) in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--tensorflow_session_parallelism=2"],
        ["--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2"],
        ["--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=2"],
    ],
)
def test_parallelism_flags_that_agree(argv: list[str]) -> None:
    _parse(BASE, *argv)


def test_batching_parameters_file_needs_enable_batching(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = _exit_2(capsys, BASE, "--batching_parameters_file=/batching.config")
    assert "--batching_parameters_file is set without setting --enable_batching to true." in err


@pytest.mark.parametrize("env", [{}, {"ROLLWAY_MODEL_BASE_PATH": ""}])
def test_neither_model_path_nor_config(
    capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    err = _exit_2(capsys, "--model_name=m", env=env)
    assert "Both --model_base_path and --model_config_file are empty!" in err


def test_model_config_file_alone_is_enough() -> None:
    options = _parse("--model_config_file=/models.config").options
    assert options.model_config_file == "/models.config"


def test_version_needs_no_model() -> None:
    assert _parse("--version").options.version is True


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--port=70000"], "between 0 and 65535"),
        (["--port=-1"], "between 0 and 65535"),
        (["--port=0"], "--grpc_socket_path is required"),
        (["--grpc_max_threads=0"], "--grpc_max_threads must be at least 1"),
        (["--max_num_load_retries=-1"], "--max_num_load_retries must not be negative"),
        (["--num_load_threads=-2"], "--num_load_threads must not be negative"),
        (["--log_format=xml"], "--log_format must be 'text' or 'json'"),
        (["--log_level=LOUD"], "--log_level must be"),
        (["--saved_model_tags=,"], "--saved_model_tags must name at least one tag"),
        (["--grpc_channel_arguments=novalue"], "is not key=value"),
    ],
)
def test_invalid_values(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert fragment in _exit_2(capsys, BASE, *argv)


def test_port_zero_with_a_socket() -> None:
    options = _parse(BASE, "--port=0", "--grpc_socket_path=/tmp/rollway.sock").options
    assert options.port == 0


# ------------------------------------------------- serving from assignments

STORE = "--assignments=s3://models-serving"


def test_assignments_replace_the_model_flags() -> None:
    options = _parse(STORE, "--models=a, b", "--follow=poll", "--follow_poll_seconds=0.5").options
    assert (options.assignments, options.models, options.follow) == (
        "s3://models-serving",
        "a, b",
        "poll",
    )
    assert options.follow_poll_seconds == 0.5


def test_assignment_flags_from_the_environment() -> None:
    env = {
        "ROLLWAY_ASSIGNMENTS": "s3://models-serving",
        "ROLLWAY_MODELS": "hp",
        "ROLLWAY_PIN_GENERATION": "7",
        "ROLLWAY_FOLLOW": "kafka",
        "ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "ROLLWAY_ASSIGNMENTS_TOPIC": "assignments",
        "ROLLWAY_CACHE_DIR": "/cache",
        "ROLLWAY_ASSIGNMENT_TIMEOUT_SECONDS": "120",
    }
    o = _parse(env=env).options
    assert (o.assignments, o.models, o.pin_generation, o.follow) == (
        "s3://models-serving",
        "hp",
        7,
        "kafka",
    )
    assert (o.kafka_bootstrap_servers, o.assignments_topic, o.cache_dir) == (
        "kafka:9092",
        "assignments",
        "/cache",
    )
    assert o.assignment_timeout_seconds == 120.0


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([STORE, BASE], "--assignments cannot be combined with --model_base_path"),
        ([STORE, "--model_config_file=/m.config"], "--assignments cannot be combined"),
        ([STORE, "--follow=sometimes"], "--follow must be none, poll or kafka"),
        ([STORE, "--follow=kafka"], "--follow=kafka needs --kafka_bootstrap_servers"),
        ([STORE, "--pin_generation=-1"], "--pin_generation must not be negative"),
        ([STORE, "--pin_generation=2", "--models=a,b"], "pins the generation of one model"),
        ([STORE, "--follow_poll_seconds=0"], "must be positive"),
        ([STORE, "--assignment_timeout_seconds=-5"], "must be positive"),
        ([BASE, "--models=a"], "--models needs --assignments"),
        ([BASE, "--pin_generation=3"], "--pin_generation needs --assignments"),
        ([BASE, "--follow=poll"], "--follow needs --assignments"),
    ],
)
def test_assignment_flag_conflicts_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    assert fragment in _exit_2(capsys, *argv)


def test_pin_generation_of_one_named_model_and_follow_flags_are_accepted() -> None:
    options = _parse(STORE, "--pin_generation=3", "--models=hp", "--follow=poll").options
    assert (options.pin_generation, options.models) == (3, "hp")
    # Kafka settings shared with the loader's environment do not need --assignments.
    assert _parse(BASE, env={"ROLLWAY_KAFKA_BOOTSTRAP_SERVERS": "k:9092"}).options.port == 8500


# ---------------------------------------------------------- not supported


def _non_default(f: dataclasses.Field[Any]) -> str:
    if isinstance(f.default, bool):
        return "false" if f.default else "true"
    if isinstance(f.default, int):
        return "8501"
    if isinstance(f.default, float):
        return "0.5"
    return "/some/value"


def test_later_flags_exist() -> None:
    names = {f.name for f in LATER}
    assert {
        "enable_per_model_batching_parameters",
        "use_alts_credentials",
        "platform_config_file",
        "tensorflow_session_config_file",
        "per_process_gpu_memory_fraction",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
        "mixed_precision",
        "thread_pool_factory_config_file",
    } == names


@pytest.mark.parametrize("field", LATER, ids=lambda f: f.name)
def test_later_flags_with_a_non_default_value_exit_2(
    capsys: pytest.CaptureFixture[str], field: dataclasses.Field[Any]
) -> None:
    extra = ["--enable_batching=true"] if field.name == "batching_parameters_file" else []
    err = _exit_2(capsys, BASE, *extra, f"--{field.name}={_non_default(field)}")
    assert "not supported yet" in err
    if not extra:
        assert f"--{field.name} is not supported yet: {field.metadata['why']}" in err


@pytest.mark.parametrize("field", LATER, ids=lambda f: f.name)
def test_later_flags_from_the_environment_exit_2(
    capsys: pytest.CaptureFixture[str], field: dataclasses.Field[Any]
) -> None:
    env = {ENV_PREFIX + field.name.upper(): _non_default(field)}
    if field.name == "batching_parameters_file":
        env["ROLLWAY_ENABLE_BATCHING"] = "true"
    assert "not supported yet" in _exit_2(capsys, BASE, env=env)


@pytest.mark.parametrize("field", LATER, ids=lambda f: f.name)
def test_later_flags_at_their_default_are_accepted(field: dataclasses.Field[Any]) -> None:
    default = field.default
    text = str(default).lower() if isinstance(default, bool) else str(default)
    parsed = _parse(BASE, f"--{field.name}={text}") if text else _parse(BASE, f"--{field.name}=")
    assert getattr(parsed.options, field.name) == default


@pytest.mark.parametrize(
    "argv",
    [["--enable_profiler=true"], ["--enable_profiler"], ["--enable_profiler", "true"]],
)
def test_explicit_enable_profiler_true_is_accepted(argv: list[str]) -> None:
    parsed = _parse(BASE, *argv)
    assert parsed.options.enable_profiler is True
    assert "enable_profiler" in parsed.explicit


def test_enable_profiler_from_the_environment() -> None:
    assert _parse(BASE, env={"ROLLWAY_ENABLE_PROFILER": "true"}).options.enable_profiler is True
    assert _parse(BASE, env={"ROLLWAY_ENABLE_PROFILER": "no"}).options.enable_profiler is False


def test_default_enable_profiler_is_accepted() -> None:
    parsed = _parse(BASE)
    assert parsed.options.enable_profiler is True
    assert "enable_profiler" not in parsed.explicit


def test_enable_profiler_false_is_accepted() -> None:
    assert _parse(BASE, "--enable_profiler=false").options.enable_profiler is False


@pytest.mark.parametrize(
    "name", [f.name for f in dataclasses.fields(ServerOptions) if f.metadata["support"] == "noop"]
)
def test_noop_flags_are_accepted(name: str) -> None:
    f = FIELDS[name]
    parsed = _parse(BASE, f"--{name}={_non_default(f)}")
    assert name in parsed.explicit


# -------------------------------------------------------------------- help


def test_help_mentions_every_field() -> None:
    text = build_parser().format_help()
    for f in dataclasses.fields(ServerOptions):
        assert f"--{f.name}" in text, f.name


def test_help_says_what_is_not_supported_and_what_has_no_effect() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "not supported yet" in text
    assert "no effect in rollway" in text
    assert "ROLLWAY_" in text


# ------------------------------------------------------- channel arguments


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("a=1,b=x", [("a", 1), ("b", "x")]),
        ("grpc.max_connection_age_ms=2000", [("grpc.max_connection_age_ms", 2000)]),
        ("a=-5", [("a", -5)]),
        ("a=2147483647", [("a", 2147483647)]),
        ("a=-2147483648", [("a", -2147483648)]),
        ("a=2147483648", [("a", "2147483648")]),
        ("a=-2147483649", [("a", "-2147483649")]),
        ("a=99999999999999999999", [("a", "99999999999999999999")]),
        ("a=", [("a", "")]),
        ("a=1,,b=2,", [("a", 1), ("b", 2)]),
        ("a=1.5", [("a", "1.5")]),
    ],
)
def test_parse_channel_arguments(text: str, expected: list[tuple[str, int | str]]) -> None:
    result = parse_channel_arguments(text)
    assert result == expected
    assert [type(v) for _, v in result] == [type(v) for _, v in expected]


@pytest.mark.parametrize("text", ["bad", "a=1,bad", "=1"])
def test_parse_channel_arguments_errors(text: str) -> None:
    with pytest.raises(UsageError, match="is not key=value"):
        parse_channel_arguments(text)


def test_usage_error_is_a_value_error() -> None:
    assert issubclass(UsageError, ValueError)


# ----------------------------------------------------- processes and threads


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("3", 3), ("auto", len(os.sched_getaffinity(0)))]
)
def test_workers(value: str, expected: int) -> None:
    assert worker_count(_parse(BASE, f"--workers={value}").options.workers) == expected


@pytest.mark.parametrize("value", ["0", "-2", "many", ""])
def test_bad_workers(capsys: pytest.CaptureFixture[str], value: str) -> None:
    assert "--workers must be a positive number or 'auto'" in _exit_2(
        capsys, BASE, f"--workers={value}"
    )


@pytest.mark.parametrize("value", ["auto", "true", "false"])
def test_inline_inference(value: str) -> None:
    assert _parse(BASE, f"--inline_inference={value}").options.inline_inference == value


def test_bad_inline_inference(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--inline_inference must be auto, true or false" in _exit_2(
        capsys, BASE, "--inline_inference=sometimes"
    )
    err = _exit_2(capsys, BASE, "--inline_inference=true", "--enable_batching")
    assert "cannot be combined with --enable_batching" in err


def test_inter_op_parallelism_minus_one_is_the_callers_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        _parse(BASE, "--tensorflow_inter_op_parallelism=-1").options.tensorflow_inter_op_parallelism
        == -1
    )
    err = _exit_2(capsys, BASE, "--tensorflow_inter_op_parallelism=-2")
    assert "must be -1 (the caller's thread) or more" in err
