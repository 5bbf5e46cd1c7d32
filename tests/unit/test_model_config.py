"""loader.model_config: TF Serving's ModelServerConfig into ModelSpec values."""

from __future__ import annotations

from pathlib import Path

import pytest

from loader.errors import ConfigError, InvalidArgument
from loader.model_config import (
    TENSORFLOW_PLATFORM,
    ModelSpec,
    parse_model_server_config,
    read_model_server_config,
    single_model_config,
    specs_from_proto,
)
from loader.policy import PolicyKind, VersionPolicy

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three"


def _model(body: str, name: str = "m", base_path: str = "/models/m") -> str:
    return f'model_config_list {{ config {{ name: "{name}" base_path: "{base_path}" {body} }} }}'


def _tf_model(body: str = "", name: str = "m", base_path: str = "/models/m") -> str:
    return _model(f'model_platform: "tensorflow" {body}', name, base_path)


# ------------------------------------------------------------- shared files


def test_good_model_config_from_shared_testdata(tmp_path: Path) -> None:
    text = (TESTDATA / "good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", str(HALF_PLUS_TWO))
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", str(HALF_PLUS_THREE))
    path = tmp_path / "models.config"
    path.write_text(text)

    expected = (
        ModelSpec("half_plus_two", str(HALF_PLUS_TWO)),
        ModelSpec("half_plus_three", str(HALF_PLUS_THREE)),
    )
    assert parse_model_server_config(text) == expected
    assert read_model_server_config(path) == expected
    assert read_model_server_config(str(path)) == expected
    for spec in expected:
        assert spec.policy == VersionPolicy.latest(1)
        assert spec.platform == TENSORFLOW_PLATFORM
        assert dict(spec.labels) == {}


def test_good_model_config_unsubstituted_is_a_relative_path() -> None:
    text = (TESTDATA / "good_model_config.txt").read_text()
    with pytest.raises(ConfigError, match=r"Expected model half_plus_two to have an absolute path"):
        parse_model_server_config(text)


def test_bad_model_config_from_shared_testdata() -> None:
    path = TESTDATA / "bad_model_config.txt"
    with pytest.raises(ConfigError) as info:
        read_model_server_config(path)
    # protobuf's C++ parser reports the token after the unknown name: "formatted".
    assert info.value.message == (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: 1:12: Message type "
        '"tensorflow.serving.ModelServerConfig" has no field named "improperly". '
        f"(Invalid protobuf file: '{path}')"
    )
    assert isinstance(info.value, InvalidArgument)
    with pytest.raises(
        ConfigError, match=r"^Error parsing text-format .+ \(Invalid protobuf file: 'cfg'\)$"
    ):
        parse_model_server_config(path.read_text(), "cfg")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.config"
    with pytest.raises(ConfigError, match="cannot read model config file") as info:
        read_model_server_config(missing)
    assert str(missing) in info.value.message


def test_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "binary.config"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read model config file"):
        read_model_server_config(path)


@pytest.mark.parametrize("text", ["", "model_config_list {}", "model_config_list { }\n"])
def test_empty_configs_have_no_models(text: str) -> None:
    assert parse_model_server_config(text) == ()


# --------------------------------------------------------------- policies


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", VersionPolicy.latest(1)),
        ("model_version_policy { }", VersionPolicy.latest(1)),
        ("model_version_policy { latest { } }", VersionPolicy.latest(1)),
        ("model_version_policy { latest { num_versions: 0 } }", VersionPolicy.latest(1)),
        ("model_version_policy { latest { num_versions: 1 } }", VersionPolicy.latest(1)),
        ("model_version_policy { latest { num_versions: 3 } }", VersionPolicy.latest(3)),
        ("model_version_policy { all { } }", VersionPolicy.all()),
        ("model_version_policy { specific { versions: 4 } }", VersionPolicy.specific([4])),
        (
            "model_version_policy { specific { versions: 1 versions: 42 } }",
            VersionPolicy.specific([1, 42]),
        ),
        (
            "model_version_policy { specific { versions: [7, 8, 9] } }",
            VersionPolicy.specific([7, 8, 9]),
        ),
    ],
    ids=[
        "unset",
        "empty-policy",
        "latest-unset",
        "latest-0",
        "latest-1",
        "latest-3",
        "all",
        "specific-one",
        "specific-two",
        "specific-list",
    ],
)
def test_policies(body: str, expected: VersionPolicy) -> None:
    (spec,) = parse_model_server_config(_tf_model(body))
    assert spec.policy == expected


def test_policy_kinds_by_model() -> None:
    text = """
    model_config_list {
      config { name: "a" base_path: "/m/a" model_platform: "tensorflow"
               model_version_policy { latest { num_versions: 2 } } }
      config { name: "b" base_path: "/m/b" model_platform: "tensorflow"
               model_version_policy { all {} } }
      config { name: "c" base_path: "/m/c" model_platform: "tensorflow"
               model_version_policy { specific { versions: 5 } } }
    }
    """
    specs = parse_model_server_config(text)
    assert [s.name for s in specs] == ["a", "b", "c"]
    assert [s.policy.kind for s in specs] == [
        PolicyKind.LATEST,
        PolicyKind.ALL,
        PolicyKind.SPECIFIC,
    ]
    assert specs[0].policy.num_versions == 2
    assert specs[2].policy.versions == frozenset({5})
    assert [s.base_path for s in specs] == ["/m/a", "/m/b", "/m/c"]


# ----------------------------------------------------------------- labels


def test_labels() -> None:
    body = (
        "model_version_policy { specific { versions: 1 versions: 2 } } "
        'version_labels { key: "stable" value: 1 } '
        'version_labels { key: "canary" value: 2 }'
    )
    (spec,) = parse_model_server_config(_tf_model(body))
    assert dict(spec.labels) == {"stable": 1, "canary": 2}
    assert all(isinstance(v, int) for v in spec.labels.values())


def test_no_labels_is_empty() -> None:
    (spec,) = parse_model_server_config(_tf_model())
    assert dict(spec.labels) == {}


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            'model_config_list { config { name: "m" base_path: "/a" model_platform: "tensorflow" } '
            'config { name: "m" base_path: "/b" model_platform: "tensorflow" } }',
            "Illegal to list model m multiple times in config list",
        ),
        (
            _tf_model(base_path="models/m"),
            "Expected model m to have an absolute path or URI; got base_path()=models/m",
        ),
        (
            _tf_model(base_path="./m"),
            "Expected model m to have an absolute path or URI; got base_path()=./m",
        ),
        (
            _tf_model(base_path=""),
            "Expected model m to have an absolute path or URI",
        ),
        (
            _model(""),
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform",
        ),
        (
            _model('model_platform: "tensorflow" model_type: TENSORFLOW'),
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform",
        ),
        (
            _model("model_type: OTHER"),
            "model_type choice 2 not supported",
        ),
        (
            _model('model_platform: "tflite"'),
            "requests unsupported platform tflite",
        ),
        (
            _model('model_platform: "TensorFlow"'),
            "requests unsupported platform TensorFlow",
        ),
        (
            'custom_model_config { type_url: "type.googleapis.com/x.Y" value: "" }',
            "custom_model_config is not supported",
        ),
        (
            _tf_model("model_version_policy { specific { } }"),
            "specific.versions must name at least one version",
        ),
        (
            'model_config_list { config { base_path: "/m" model_platform: "tensorflow" } }',
            "a model config has an empty name",
        ),
    ],
    ids=[
        "duplicate-name",
        "relative-base-path",
        "dot-relative-base-path",
        "empty-base-path",
        "missing-platform",
        "platform-and-model-type",
        "model-type-other",
        "unsupported-platform",
        "platform-is-case-sensitive",
        "custom-model-config",
        "specific-without-versions",
        "empty-name",
    ],
)
def test_config_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_server_config(text, "models.config")
    assert fragment in info.value.message
    assert info.value.message.startswith("models.config: ")


# TF Serving logs protobuf's C++ parser: "Error parsing text-format <message>:
# <line>:<column>: <message>" (text_format.cc ReportError), 1-based; columns
# count bytes and move a tab to the next multiple of 8 (io::Tokenizer).
@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (  # an unknown field is reported at the token after its name
            'model_config_list { config { nmae: "m" } }',
            "1:34",
            'Message type "tensorflow.serving.ModelConfig" has no field named "nmae".',
        ),
        (
            'model_config_list {\n\tconfig {\n\t\tnmae: "m" } }',
            "3:21",
            'Message type "tensorflow.serving.ModelConfig" has no field named "nmae".',
        ),
        (
            'model_config_list { config { name: "\u00e9" nmae # comment\n  : "m" } }',
            "2:3",
            'Message type "tensorflow.serving.ModelConfig" has no field named "nmae".',
        ),
        (
            "foo",
            "1:4",
            'Message type "tensorflow.serving.ModelServerConfig" has no field named "foo".',
        ),
        (  # a message left open: the C++ parser wants a field name at the end
            'model_config_list {\n  config { name: "m"\n',
            "3:1",
            "Expected identifier, got: ",
        ),
        (
            'model_config_list { config { name: "m" } } }',
            "1:44",
            "Expected identifier, got: }",
        ),
        (
            "model_config_list {\n  config {\n    name: 3\n  }\n}",
            "3:11",
            "Expected string but found: '3'",
        ),
        (
            _tf_model("model_version_policy { latest { num_versions: -1 } }"),
            "1:138",
            "Value out of range: -1",
        ),
    ],
    ids=["unknown-field", "tabs", "utf8-and-comment", "at-end", "unclosed", "extra-brace",
         "wrong-type", "out-of-range"],
)  # fmt: skip
def test_parse_errors_are_tf_servings(text: str, where: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_server_config(text, "/etc/models.config")
    assert info.value.message == (
        f"Error parsing text-format tensorflow.serving.ModelServerConfig: {where}: {message} "
        "(Invalid protobuf file: '/etc/models.config')"
    )


def test_errors_name_the_model() -> None:
    with pytest.raises(ConfigError, match=r"models\.config: model 'mine': .*specific"):
        parse_model_server_config(
            _tf_model("model_version_policy { specific {} }", name="mine"), "models.config"
        )
    with pytest.raises(ConfigError, match=r"model 'mine': requests unsupported platform x"):
        parse_model_server_config(_model('model_platform: "x"', name="mine"))


def test_deprecated_model_type_tensorflow_alone_is_accepted() -> None:
    (spec,) = parse_model_server_config(_model("model_type: TENSORFLOW"))
    assert spec.platform == TENSORFLOW_PLATFORM


def test_specs_from_proto_validates_a_message() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    config = message.model_config_list.config.add()
    config.name, config.base_path, config.model_platform = "m", "/models/m", "tensorflow"
    config.model_version_policy.all.SetInParent()
    config.version_labels["stable"] = 7
    assert specs_from_proto(message) == (
        ModelSpec("m", "/models/m", VersionPolicy.all(), {"stable": 7}),
    )
    config.base_path = "relative"
    with pytest.raises(ConfigError, match=r"^reload: Expected model m to have an absolute path"):
        specs_from_proto(message, "reload")


def test_specs_from_an_empty_message() -> None:
    from tensorflow_serving.config import model_server_config_pb2

    assert specs_from_proto(model_server_config_pb2.ModelServerConfig()) == ()


# ---------------------------------------------------------- single model


def test_single_model_config() -> None:
    specs = single_model_config("half_plus_two", str(HALF_PLUS_TWO))
    assert specs == (ModelSpec("half_plus_two", str(HALF_PLUS_TWO)),)
    (spec,) = specs
    assert spec.policy == VersionPolicy.latest(1)
    assert spec.platform == "tensorflow"
    assert dict(spec.labels) == {}


def test_single_model_config_needs_an_absolute_path() -> None:
    with pytest.raises(ConfigError) as info:
        single_model_config("default", "models/default")
    assert info.value.message == (
        "--model_base_path: Expected model default to have an absolute path or URI; "
        "got base_path()=models/default"
    )


def test_single_model_config_needs_a_name() -> None:
    with pytest.raises(ConfigError, match="empty name"):
        single_model_config("", "/models/m")


def test_model_spec_defaults() -> None:
    spec = ModelSpec("m", "/models/m")
    assert spec.policy == VersionPolicy.latest(1)
    assert dict(spec.labels) == {}
    assert spec.platform == TENSORFLOW_PLATFORM
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("base", ["s3://bucket/models/m", "hdfs://nn:8020/m", "file:///srv/m"])
def test_uri_base_paths_are_accepted(base: str) -> None:
    (spec,) = parse_model_server_config(
        f'model_config_list {{ config {{ name: "m" base_path: "{base}"'
        ' model_platform: "tensorflow" } }'
    )
    assert spec.base_path == base
