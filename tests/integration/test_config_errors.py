"""Config files that do not parse, against a real ``rollway serve``: the process
exits 1 and says what TF Serving says (protobuf's C++ parser's
``Error parsing text-format <message>: <line>:<column>: ...`` and TF Serving's
``Invalid protobuf file: '<path>'``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HALF_PLUS_TWO, ServerFactory

MODEL = ["--model_name=hp2", f"--model_base_path={HALF_PLUS_TWO}"]


@pytest.mark.parametrize(
    ("flags", "text", "expected"),
    [
        (
            ["--model_config_file={file}"],
            'model_config_list {\n  config {\n    name: "hp2"\n    nmae: "x"\n  }\n}\n',
            "Error parsing text-format tensorflow.serving.ModelServerConfig: 4:9: Message type "
            '"tensorflow.serving.ModelConfig" has no field named "nmae".',
        ),
        (
            [*MODEL, "--enable_batching", "--batching_parameters_file={file}"],
            "max_batch_size { value: 8 }\nmax_batch_sise { value: 4 }\n",
            "Error parsing text-format tensorflow.serving.BatchingParameters: 2:16: Message type "
            '"tensorflow.serving.BatchingParameters" has no field named "max_batch_sise".',
        ),
        (
            [*MODEL, "--rest_api_port=0", "--monitoring_config_file={file}"],
            "prometheus_config {\n\tenable: true\n\tpath: 7\n}\n",
            "Error parsing text-format tensorflow.serving.MonitoringConfig: 3:15: "
            "Expected string but found: '7'",
        ),
        (
            [*MODEL, "--ssl_config_file={file}"],
            "server_key: 'k'\nnot_a_field: 1\n",
            "Error parsing text-format tensorflow.serving.SSLConfig: 2:12: Message type "
            '"tensorflow.serving.SSLConfig" has no field named "not_a_field".',
        ),
    ],
    ids=["model-config", "batching", "monitoring", "ssl"],
)
def test_a_config_file_that_does_not_parse_exits_1(
    serve: ServerFactory, tmp_path: Path, flags: list[str], text: str, expected: str
) -> None:
    config = tmp_path / "bad.config"
    config.write_text(text)
    server = serve([flag.format(file=config) for flag in flags], wait=False)
    assert server.wait_exit(timeout=120) == 1
    log = server.log()
    assert f"Failed to start server. Error: {expected} (Invalid protobuf file: '{config}')" in log
