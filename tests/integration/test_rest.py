"""TF Serving's REST API against a real `rollway serve --rest_api_port`, called
with a real HTTP client (urllib)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions.serving.process import free_port
from tests.conftest import HALF_PLUS_TWO, TWO_VERSIONS, ServerFactory
from tests.integration.helpers import model_config, server_config, write_config
from tests.models import export_mlp, export_multi

TIMEOUT = 30


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def get(self, path: str) -> tuple[int, Any]:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        return self.call("POST", path, body, raw)


@pytest.fixture(scope="module")
def http(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    root = tmp_path_factory.mktemp("rest")
    export_multi(root / "multi", 1)
    path = write_config(
        root / "models.config",
        server_config(
            model_config("hp2", HALF_PLUS_TWO),
            model_config("two", TWO_VERSIONS, "all {}", {"stable": 123, "canary": 124}),
            model_config("multi", root / "multi"),
        ),
    )
    port = free_port()
    serve_module(
        [f"--model_config_file={path}", f"--rest_api_port={port}",
         "--rest_api_max_request_bytes=1000000"]
    )  # fmt: skip
    yield Http(port)


def test_status(http: Http) -> None:
    assert http.get("/v1/models/hp2") == (
        200,
        {
            "model_version_status": [
                {"version": "123", "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}}
            ]
        },
    )  # fmt: skip
    status, body = http.get("/v1/models/two/versions/124")
    assert status == 200
    assert [s["version"] for s in body["model_version_status"]] == ["124"]


def test_metadata(http: Http) -> None:
    status, body = http.get("/v1/models/hp2/metadata")
    assert status == 200
    assert body["model_spec"]["name"] == "hp2"
    assert body["model_spec"]["version"] == "123"
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(signatures)
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


def test_predict_row_and_columnar(http: Http) -> None:
    assert http.post("/v1/models/hp2:predict", {"instances": [[1.0], [2.0], [5.0]]}) == (
        200,
        {"predictions": [[2.5], [3.0], [4.5]]},
    )
    assert http.post("/v1/models/hp2:predict", {"inputs": {"x": [[1.0], [2.0]]}}) == (
        200,
        {"outputs": [[2.5], [3.0]]},
    )
    assert http.post("/v1/models/hp2:predict", {"inputs": [[2.0]]}) == (200, {"outputs": [[3.0]]})


def test_tf_serving_quickstart_request(http: Http) -> None:
    """TF Serving's README example: a 1-D batch for a [-1, 1] signature, and a scalar."""
    assert http.post("/v1/models/hp2:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    assert http.post("/v1/models/hp2:predict", {"inputs": 2.0}) == (200, {"outputs": 3.0})


def test_versions_and_labels(http: Http) -> None:
    body = {"instances": [[2.0]]}
    _, v123 = http.post("/v1/models/two/versions/123:predict", body)
    _, stable = http.post("/v1/models/two/labels/stable:predict", body)
    _, latest = http.post("/v1/models/two:predict", body)
    assert v123 == stable
    assert latest == http.post("/v1/models/two/labels/canary:predict", body)[1]


def test_multiple_inputs_outputs_and_signature_name(http: Http) -> None:
    status, body = http.post(
        "/v1/models/multi:predict",
        {"instances": [{"a": [1.0, 2.0], "b": [3.0, 4.0]}]},
    )
    assert status == 200
    assert body == {"predictions": [{"sum": [4.0, 6.0], "product": [3.0, 8.0]}]}


def test_strings_and_b64(http: Http) -> None:
    text = base64.b64encode(b"abc").decode()
    status, body = http.post(
        "/v1/models/multi:predict",
        {"signature_name": "strings", "instances": [{"text": {"b64": text}}, {"text": "xy"}]},
    )
    assert status == 200, body
    first, second = body["predictions"]
    assert first["upper"] == "ABC"
    assert first["length"] == 3
    assert first["text_bytes"] == {"b64": text}  # outputs named *_bytes come back as b64
    assert second["upper"] == "XY"


def test_nan_and_infinity(http: Http) -> None:
    request = urllib.request.Request(
        http.base + "/v1/models/hp2:predict",
        data=b'{"instances": [[NaN], [Infinity], [-Infinity]]}',
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
        text = reply.read().decode()
    values = json.loads(text)["predictions"]
    assert np.isnan(values[0][0]) and values[1][0] == float("inf") and values[2][0] == float("-inf")


def test_classify_and_regress(http: Http) -> None:
    examples = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert http.post("/v1/models/hp2:classify", examples) == (200, {"results": [[["", 3.0]]]})
    examples["signature_name"] = "regress_x_to_y"
    assert http.post("/v1/models/hp2:regress", examples) == (200, {"results": [3.0]})
    with_context = {"signature_name": "regress_x_to_y", "context": {"x": 2.0}, "examples": [{}]}
    assert http.post("/v1/models/hp2:regress", with_context) == (200, {"results": [3.0]})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [[1.0]]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/hp2/versions/9:predict",
            {"instances": [[1.0]]},
            404,
            "Specific(hp2, 9)",
        ),
        (
            "POST",
            "/v1/models/two/labels/nope:predict",
            {"instances": [[1.0]]},
            400,
            "Unrecognized servable version label: nope",
        ),
        (
            "POST",
            "/v1/models/hp2:predict",
            {"signature_name": "nope", "instances": [[1.0]]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        ("POST", "/v1/models/hp2:predict", {"instances": [[1.0]], "inputs": [[1.0]]}, 400, ""),
        ("POST", "/v1/models/hp2:predict", {}, 400, ""),
        ("POST", "/v1/models/hp2:predict", {"instances": [["text"]]}, 400, ""),
        ("POST", "/v1/models/hp2:predict", {"instances": [[1.0], [1.0, 2.0]]}, 400, ""),
        ("GET", "/v1/models/hp2:predict", None, 400, "Malformed request"),
        ("GET", "/v1/nothing", None, 400, "Malformed request"),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ],
)
def test_errors(http: Http, method: str, path: str, body: Any, status: int, fragment: str) -> None:
    got, reply = http.call(method, path, body)
    assert got == status, reply
    assert set(reply) == {"error"}
    assert fragment in reply["error"]


def test_invalid_json_and_too_large(http: Http) -> None:
    status, reply = http.post("/v1/models/hp2:predict", raw=b"{not json")
    assert status == 400 and reply["error"]
    status, reply = http.post("/v1/models/hp2:predict", raw=b" " * 1_500_000)
    assert status == 413
    assert "1000000" in reply["error"]


def test_readiness(http: Http) -> None:
    assert http.get("/v1/ready") == (200, {"ready": True})


def test_timeout_gives_504(serve: ServerFactory, tmp_path: Path) -> None:
    export_mlp(tmp_path / "mlp", 1)
    port = free_port()
    serve([f"--model_base_path={tmp_path / 'mlp'}", "--model_name=mlp",
           f"--rest_api_port={port}", "--rest_api_timeout_in_ms=1"])  # fmt: skip
    batch = np.ones((2000, 256), dtype=np.float32).tolist()
    status, reply = Http(port).post("/v1/models/mlp:predict", {"inputs": batch})
    assert status == 504
    assert "timed out" in reply["error"]


def headers_of(method: str, url: str, body: bytes | None = None) -> tuple[int, dict[str, str]]:
    """The status and headers, names in Title-Case (HTTP's are case-insensitive)."""
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, {k.title(): v for k, v in reply.headers.items()}
    except urllib.error.HTTPError as err:
        return err.code, {k.title(): v for k, v in err.headers.items()}


CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}


def test_cors_headers_only_when_enabled(serve: ServerFactory, http: Http) -> None:
    _, plain = headers_of("GET", http.base + "/v1/models/hp2")
    assert not set(CORS) & set(plain)

    port = free_port()
    serve([f"--model_base_path={HALF_PLUS_TWO}", "--model_name=hp2",
           f"--rest_api_port={port}", "--rest_api_enable_cors_support=true"])  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    status, preflight = headers_of("OPTIONS", base + "/v1/models/hp2:predict")
    assert status == 200
    assert CORS.items() <= preflight.items()
    status, predicted = headers_of(
        "POST", base + "/v1/models/hp2:predict", json.dumps({"instances": [[1.0]]}).encode()
    )
    assert status == 200
    assert CORS.items() <= predicted.items()
    status, failed = headers_of("GET", base + "/v1/models/nope")
    assert status == 404  # errors carry the headers too, so browsers can read them
    assert CORS.items() <= failed.items()
