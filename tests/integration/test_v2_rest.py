"""The Open Inference Protocol (v2) over REST against a real `rollway serve`:
Triton's ``tritonclient.http`` and KServe's ``InferenceRESTClient`` (in its own
venv, tests/integration/kserve_client.py), raw HTTP for every bad input, the
repository extension with --model_config_file and --assignments."""

from __future__ import annotations

import json
import struct
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from functions.serving.process import ServerProcess, free_port
from tests.conftest import HALF_PLUS_THREE, HALF_PLUS_TWO, TESTDATA, TWO_VERSIONS, ServerFactory
from tests.integration import kserve_client
from tests.integration.helpers import (
    Client,
    eventually,
    model_config,
    predict_request,
    server_config,
    write_config,
)
from tests.integration.kserve_client import kserve_fixture  # noqa: F401 (the kserve fixture)
from tests.models import export_multi

pytestmark = pytest.mark.integration

TIMEOUT = 30
MAX_BODY = 1_000_000


class Http:
    """Raw HTTP to the REST port: (status, headers, body) for any request."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return reply.status, _lower(reply.headers.items()), reply.read()
        except urllib.error.HTTPError as err:
            return err.code, _lower(err.headers.items()), err.read()

    def json(self, method: str, path: str, doc: Any = None) -> tuple[int, Any]:
        body = None if doc is None else json.dumps(doc).encode()
        status, _, payload = self.call(method, path, body)
        return status, json.loads(payload)


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


@pytest.fixture(scope="module")
def server(serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("v2")
    export_multi(root / "multi", 1)
    config = write_config(
        root / "models.config",
        server_config(
            model_config("hp2", HALF_PLUS_TWO),
            model_config("two", TWO_VERSIONS, "all {}", {"stable": 123, "canary": 124}),
            model_config("multi", root / "multi"),
        ),
    )
    return serve_module(
        [f"--model_config_file={config}", f"--rest_api_port={free_port()}",
         f"--rest_api_max_request_bytes={MAX_BODY}",
         f"--monitoring_config_file={TESTDATA / 'monitoring_config.txt'}"]
    )  # fmt: skip


def rest_port(server: ServerProcess) -> int:
    flag = next(a for a in server.args if a.startswith("--rest_api_port="))
    return int(flag.split("=", 1)[1])


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Http:
    return Http(rest_port(server))


@pytest.fixture(scope="module")
def triton_client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(f"127.0.0.1:{rest_port(server)}", network_timeout=TIMEOUT)
    yield client
    client.close()


def tf_serving_predict(server: ServerProcess, model: str, x: np.ndarray) -> np.ndarray:
    """The TF Serving API's gRPC Predict of ``x`` (input "x", output "y")."""
    client = Client(server)
    try:
        request = predict_request(model)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        return np.asarray(
            tf.make_ndarray(client.predictions.Predict(request, timeout=10).outputs["y"])
        )
    finally:
        client.close()


def _input(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# ---------------------------------------------------------------- health, metadata


def test_health_and_server_metadata(
    http: Http, triton_client: triton.InferenceServerClient
) -> None:
    assert http.json("GET", "/v2/health/live") == (200, {"live": True})
    assert http.json("GET", "/v2/health/ready") == (200, {"ready": True})
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    meta = triton_client.get_server_metadata()
    assert meta["name"] == "rollway" and meta["version"]
    assert {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])


def test_model_metadata_and_readiness(
    http: Http, triton_client: triton.InferenceServerClient
) -> None:
    assert triton_client.get_model_metadata("hp2") == {
        "name": "hp2",
        "versions": ["123"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    assert triton_client.get_model_metadata("two")["versions"] == ["123", "124"]
    assert triton_client.get_model_metadata("two", "124")["name"] == "two"
    multi = triton_client.get_model_metadata("multi")
    assert [(t["name"], t["datatype"], t["shape"]) for t in multi["inputs"]] == [
        ("a", "FP32", [-1, 2]),
        ("b", "FP32", [-1, 2]),
    ]
    for version in ("", "123", "124", "stable", "canary"):
        assert triton_client.is_model_ready("two", version)
    assert not triton_client.is_model_ready("two", "125")
    assert not triton_client.is_model_ready("nope")
    assert http.json("GET", "/v2/models/two/versions/9/ready") == (
        503,
        {"name": "two", "ready": False},
    )
    status, body = http.json("GET", "/v2/models/nope")
    assert status == 404 and "nope" in body["error"]


# --------------------------------------------------------------------------- infer


@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)]
)
def test_infer_matches_tf_serving_predict(
    server: ServerProcess,
    triton_client: triton.InferenceServerClient,
    binary_in: bool,
    binary_out: bool,
) -> None:
    x = np.array([[0.1], [-7.25], [12345.678], [3e-8]], np.float32)
    result = triton_client.infer(
        "hp2",
        [_input("x", x, "FP32", binary_in)],
        outputs=[triton.InferRequestedOutput("y", binary_data=binary_out)],
        request_id="req-7",
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "hp2",
        "123",
        "req-7",
    )
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and y.shape == (4, 1)
    np.testing.assert_array_equal(y, tf_serving_predict(server, "hp2", x))
    assert ("parameters" in response["outputs"][0]) is binary_out


def test_infer_every_output_by_default_binary(triton_client: triton.InferenceServerClient) -> None:
    """tritonclient asks for binary outputs (binary_data_output) when it names none."""
    a = np.array([[1, 2], [3, 4]], np.float32)
    b = np.array([[10, 20], [30, 40]], np.float32)
    result = triton_client.infer(
        "multi", [_input("a", a, "FP32", True), _input("b", b, "FP32", False)]
    )
    np.testing.assert_array_equal(result.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(result.as_numpy("product"), a * b)
    only = triton_client.infer(
        "multi",
        [_input("a", a, "FP32", True), _input("b", b, "FP32", True)],
        outputs=[triton.InferRequestedOutput("product")],
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["product"]


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_tensors(triton_client: triton.InferenceServerClient, binary: bool) -> None:
    text = np.array(["abc", "caf\u00e9", ""], dtype=object)
    result = triton_client.infer(
        "multi",
        [_input("text", text, "BYTES", binary)],
        outputs=[triton.InferRequestedOutput(n, binary_data=binary) for n in ("upper", "length")],
        parameters={"signature_name": "strings"},
    )
    upper = result.as_numpy("upper").tolist()  # JSON data reads back as str, binary as bytes
    assert [v.encode() if isinstance(v, str) else v for v in upper] == [
        b"ABC",
        "CAF\u00e9".encode(),
        b"",
    ]
    assert result.as_numpy("length").tolist() == [3, 5, 0]
    assert result.get_output("length")["datatype"] == "INT32"


def test_bytes_output_that_is_not_utf8(http: Http) -> None:
    """JSON cannot carry it: the client is told to ask for binary data, which can."""
    doc = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": 5},
            }
        ],
        "parameters": {"signature_name": "strings"},
        "outputs": [{"name": "text_bytes"}],
    }
    header = json.dumps(doc).encode()
    body = header + struct.pack("<I", 1) + b"\xff"
    status, _, payload = http.call(
        "POST",
        "/v2/models/multi/infer",
        body,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400 and "binary_data" in json.loads(payload)["error"]
    doc["outputs"] = [{"name": "text_bytes", "parameters": {"binary_data": True}}]
    header = json.dumps(doc).encode()
    status, headers, payload = http.call(
        "POST", "/v2/models/multi/infer", header + struct.pack("<I", 1) + b"\xff",
        {"Inference-Header-Content-Length": str(len(header))},
    )  # fmt: skip
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    length = int(headers["inference-header-content-length"])
    response = json.loads(payload[:length])
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 5}
    assert payload[length:] == struct.pack("<I", 1) + b"\xff"


def test_fp64_and_int64(triton_client: triton.InferenceServerClient) -> None:
    x = np.array([1.5, -2.25, 1e300], np.float64)
    result = triton_client.infer(
        "multi", [_input("x", x, "FP64", True)], parameters={"signature_name": "scale"}
    )
    np.testing.assert_array_equal(result.as_numpy("doubled"), x * 2)
    assert result.get_output("as_int")["datatype"] == "INT64"


@pytest.mark.parametrize(("version", "served"), [("", "124"), ("123", "123"), ("124", "124"),
                                                 ("stable", "123"), ("canary", "124")])  # fmt: skip
def test_version_addressing(
    http: Http, triton_client: triton.InferenceServerClient, version: str, served: str
) -> None:
    x = np.array([[4.0]], np.float32)
    result = triton_client.infer("two", [_input("x", x, "FP32", True)], model_version=version)
    assert result.get_response()["model_version"] == served
    path = "/v2/models/two" + (f"/versions/{version}" if version else "") + "/infer"
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [[4.0]]}]}
    status, body = http.json("POST", path, doc)
    assert status == 200 and body["model_version"] == served and body["outputs"][0]["data"] == [4.0]


KSERVE_SCRIPT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main(base):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    out = {"live": await client.is_server_live(base), "ready": await client.is_server_ready(base),
           "model_ready": await client.is_model_ready(base, "hp2"),
           "missing_ready": await client.is_model_ready(base, "nope")}
    x = np.array([[0.1], [-7.25], [12345.678]], np.float32)
    for binary in (False, True):
        tensor = InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        response = await client.infer(base, InferRequest("hp2", [tensor], request_id="k1"), "hp2")
        y = response.outputs[0].as_numpy()
        out[f"binary={binary}"] = {"id": response.id, "y": y.tolist(), "dtype": str(y.dtype)}
    text = InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"ab", b"xyz"], dtype=object), binary_data=True)
    response = await client.infer(
        base, InferRequest("multi", [text], parameters={"signature_name": "strings"}), "multi"
    )
    out["strings"] = {o.name: o.as_numpy().tolist() for o in response.outputs if o.name != "upper"}
    await client.close()
    print(json.dumps(out, default=lambda v: v.decode()))

asyncio.run(main(sys.argv[1]))
"""


def test_kserve_rest_client(
    server: ServerProcess, http: Http, kserve: kserve_client.RunScript
) -> None:
    out = kserve(KSERVE_SCRIPT, http.base)
    assert out["live"] and out["ready"] and out["model_ready"]
    assert out["missing_ready"] is False
    x = np.array([[0.1], [-7.25], [12345.678]], np.float32)
    expected = tf_serving_predict(server, "hp2", x).tolist()
    for binary in (False, True):
        assert out[f"binary={binary}"] == {"id": "k1", "y": expected, "dtype": "float32"}
    assert out["strings"] == {"length": [2, 3], "text_bytes": ["ab", "xyz"]}


# ------------------------------------------------------------------------ bad input


def _doc(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **extra}


X = {"name": "x", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}


def _binary(
    doc: dict[str, Any], data: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(doc).encode()
    length = len(text) if header_length is None else header_length
    return text + data, {"Inference-Header-Content-Length": str(length)}


def _x_binary(shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": "x",
        "datatype": "FP32",
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


def _text_binary(size: int, shape: tuple[int, ...] = (1,)) -> dict[str, Any]:
    return {
        "name": "text",
        "datatype": "BYTES",
        "shape": list(shape),
        "parameters": {"binary_data_size": size},
    }


STRINGS = {"signature_name": "strings"}
HP2 = "/v2/models/hp2/infer"


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str], int, str]] = [
    ("unknown model", "/v2/models/nope/infer", _j(_doc(X)), {}, 404, "nope"),
    ("unknown version", "/v2/models/hp2/versions/7/infer", _j(_doc(X)), {}, 404,
     "Specific(hp2, 7)"),
    ("unknown label", "/v2/models/two/versions/nolabel/infer", _j(_doc(X)), {},
     404, "nolabel"),
    ("wrong datatype", HP2,
     _j(_doc({**X, "datatype": "INT32", "data": [1, 2]})), {}, 400,
     "datatype INT32 does not match the model's FP32"),
    ("unknown datatype", HP2, _j(_doc({**X, "datatype": "FP8"})),
     {}, 400, "unknown datatype"),
    ("string in FP32 data", HP2,
     _j(_doc({**X, "data": [1.0, "2"]})), {}, 400, "FP32 data holds a string"),
    ("data does not match the shape", HP2,
     _j(_doc({**X, "data": [1.0, 2.0, 3.0]})), {}, 400,
     "3 values, but shape [2, 1] needs 2"),
    ("shape does not match the signature", HP2,
     _j(_doc({**X, "shape": [1, 2]})), {}, 400, "does not match the model's [-1, 1]"),
    ("negative dimension", HP2, _j(_doc({**X, "shape": [-2, 1]})),
     {}, 400, "negative dimension"),
    ("huge shape, tiny JSON data", HP2,
     _j(_doc({**X, "shape": [2**40, 2**20], "data": [1.0]})), {}, 400,
     "1 values, but shape"),
    ("huge shape, tiny binary data", HP2, *_binary(_doc(_x_binary([2**40, 1], 4)),
     b"\0" * 4), 400, "4 bytes of data, but shape [1099511627776, 1] of FP32 needs"),
    ("malformed JSON", HP2, b'{"inputs": [', {}, 400, "JSON Parse error"),
    ("empty body", HP2, b"", {}, 400, "JSON Parse error"),
    ("a JSON list", HP2, b"[1]", {}, 400, "JSON"),
    ("no inputs", HP2, b"{}", {}, 400, '"inputs"'),
    ("neither data nor binary", HP2,
     _j(_doc({"name": "x", "datatype": "FP32", "shape": [1, 1]})), {}, 400,
     "neither"),
    ("unknown input", HP2, _j(_doc({**X, "name": "z"})), {},
     400, "input tensor alias not found in signature: z"),
    ("unknown output", HP2,
     _j(_doc(X, outputs=[{"name": "nope"}])), {}, 400,
     "output tensor alias not found in signature: nope"),
    ("unknown signature", HP2,
     _j(_doc(X, parameters={"signature_name": "nope"})), {}, 400, "nope"),
    ("header length larger than the body", HP2,
     *_binary(_doc(_x_binary([2, 1], 8)), b"\0" * 8, 10_000), 400,
     "Inference-Header-Content-Length is 10000, more than the"),
    ("header length not a number", HP2,
     _j(_doc(X)), {"Inference-Header-Content-Length": "ten"}, 400, "not a number"),
    ("binary_data_size past the body", HP2,
     *_binary(_doc(_x_binary([2, 1], 8)), b"\0" * 4), 400, "runs past the binary data"),
    ("binary data left over", HP2,
     *_binary(_doc(_x_binary([2, 1], 8)), b"\0" * 12), 400, "4 bytes of binary data follow"),
    ("BYTES length prefix past the buffer", "/v2/models/multi/infer",
     *_binary(_doc(_text_binary(6), parameters=STRINGS), struct.pack("<I", 100) + b"ab"), 400,
     "element 0 declares 100 bytes, but only 2 remain"),
    ("BYTES count larger than the buffer", "/v2/models/multi/infer",
     *_binary(_doc(_text_binary(4, (2**40,)), parameters=STRINGS), struct.pack("<I", 0)), 400,
     "needs 1099511627776 elements"),
    ("body over the limit", HP2, b" " * (MAX_BODY + 1), {}, 413,
     "--rest_api_max_request_bytes"),
    ("load with a config", "/v2/repository/models/hp2/load",
     _j({"parameters": {"config": "{}"}}), {}, 400, 'parameter "config" is refused'),
    ("load with files", "/v2/repository/models/hp2/load",
     _j({"parameters": {"file:1/saved_model.pb": "AAAA"}}), {}, 400, "refused"),
    ("no such route", "/v2/models/hp2/stats", b"{}", {}, 404, "Not found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_4xx_and_the_server_stays_healthy(
    http: Http, path: str, body: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    got, reply_headers, payload = http.call("POST", path, body, headers)
    assert got == status, payload
    assert reply_headers["content-type"] == "application/json"
    assert message in json.loads(payload)["error"]
    assert http.json("GET", "/v2/health/ready") == (200, {"ready": True})
    ok, answer = http.json("POST", "/v2/models/hp2/infer", _doc(X))
    assert ok == 200 and answer["outputs"][0]["data"] == [2.5, 3.0]


def test_wrong_methods_and_routes(http: Http) -> None:
    assert http.call("GET", "/v2/models/hp2/infer")[0] == 404
    assert http.call("PUT", "/v2/models/hp2")[0] == 400
    assert http.call("GET", "/v2/nothing")[0] == 404
    assert http.call("GET", "/v2/")[0] == 200  # a trailing slash is the same route


def test_metrics_count_v2_requests(http: Http) -> None:
    http.json("POST", "/v2/models/hp2/infer", _doc(X))
    http.json("POST", "/v2/models/hp2/infer", _doc({**X, "datatype": "INT8"}))
    _, _, text = http.call("GET", "/monitoring/prometheus/metrics")
    lines = text.decode().splitlines()

    def value(prefix: str) -> float:
        return float(next(line for line in lines if line.startswith(prefix)).rsplit(" ", 1)[1])

    latency = (
        ':tensorflow:serving:request_latency_count{model_name="hp2",API="infer",'
        'entrypoint="V2_REST"}'
    )
    assert value(latency) >= 1
    assert (
        value(':tensorflow:serving:request_count{model_name="hp2",status="INVALID_ARGUMENT"}') >= 1
    )


# ---------------------------------------------------------------------- repository


def test_repository_index(triton_client: triton.InferenceServerClient, http: Http) -> None:
    index = triton_client.get_model_repository_index()
    assert {(e["name"], e.get("version"), e["state"]) for e in index} == {
        ("hp2", "123", "READY"), ("multi", "1", "READY"),
        ("two", "123", "READY"), ("two", "124", "READY"),
    }  # fmt: skip
    status, ready = http.json("POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and len(ready) == 4


@pytest.mark.parametrize("workers", [1, 2])
def test_load_and_unload_follow_the_config_file(
    serve: ServerFactory, tmp_path: Path, workers: int
) -> None:
    """With --workers 2 the change goes through the supervisor to every worker."""
    config = write_config(
        tmp_path / "models.config",
        server_config(model_config("hp2", HALF_PLUS_TWO), model_config("hp3", HALF_PLUS_THREE)),
    )
    server = serve(
        [f"--model_config_file={config}", f"--rest_api_port={free_port()}", f"--workers={workers}"]
    )
    http = Http(rest_port(server))
    client = triton.InferenceServerClient(f"127.0.0.1:{rest_port(server)}", network_timeout=60)
    x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2.0]}]}
    try:
        eventually(lambda: _answers(http, x, 200))  # every worker serving
        client.unload_model("hp3")
        index = {e["name"]: e for e in client.get_model_repository_index()}
        assert index["hp3"]["state"] == "UNAVAILABLE" and index["hp2"]["state"] == "READY"
        assert not client.is_model_ready("hp3")
        eventually(lambda: _answers(http, x, 404))  # workers unload as the supervisor says
        assert http.json("GET", "/v2/health/ready") == (
            200,
            {"ready": True},
        )  # hp2 is all it serves
        assert http.json("POST", "/v2/repository/models/hp3/unload") == (
            200,
            {"name": "hp3", "unload": True},
        )

        client.load_model("hp3")
        assert client.is_model_ready("hp3")
        for _ in range(4):
            status, body = http.json("POST", "/v2/models/hp3/infer", x)
            assert status == 200 and body["outputs"][0]["data"] == [4.0]  # x / 2 + 3
        assert http.json("POST", "/v2/repository/models/hp3/load") == (
            200,
            {"name": "hp3", "load": True},
        )

        for action in ("load", "unload"):
            status, body = http.json("POST", f"/v2/repository/models/nope/{action}")
            assert status == 404 and "nope" in body["error"]
        with pytest.raises(InferenceServerException, match="refused"):
            client.load_model("hp3", config='{"backend": "python"}')
    finally:
        client.close()


def _answers(http: Http, doc: Any, status: int) -> None:
    for _ in range(4):
        assert http.json("POST", "/v2/models/hp3/infer", doc)[0] == status


def _reachable(http: Http) -> None:
    try:
        http.call("GET", "/v2/health/live")
    except OSError as err:  # refused: not listening yet
        raise AssertionError(err) from err


def test_assignments_refuse_load_and_unload(serve: ServerFactory, tmp_path: Path) -> None:
    from tests.serving.test_assigned import Store

    store = Store(str(tmp_path / "store-root"))
    store.stage("hp2", 1, HALF_PLUS_TWO / "00000123")
    store.assign("hp2", [1])
    server = serve(
        [f"--assignments={store.uri}", f"--rest_api_port={free_port()}",
         f"--cache_dir={tmp_path / 'cache'}"]
    )  # fmt: skip
    http = Http(rest_port(server))
    # REST starts once every assigned version is AVAILABLE, just after health says so.
    eventually(lambda: _reachable(http))
    for action in ("load", "unload"):
        status, body = http.json("POST", f"/v2/repository/models/hp2/{action}")
        assert status == 400 and "change assignments instead" in body["error"]
    status, index = http.json("POST", "/v2/repository/index")
    assert status == 200 and index == [
        {"name": "hp2", "version": "1", "state": "READY", "reason": ""}
    ]


# ------------------------------------------------------- the REST port's one pool


def test_v2_shares_the_pool_backlog_and_timeout(serve: ServerFactory, tmp_path: Path) -> None:
    """One thread, so BACKLOG_PER_THREAD admitted for both APIs together: of that
    many gate calls plus 2, half TF Serving REST and half v2, 2 get 503 at once
    (separate backlogs would admit them all). A v2 call that runs past
    --rest_api_timeout_in_ms gets 504."""
    from concurrent import futures

    from functions.serving.api.rest_calls import BACKLOG_PER_THREAD
    from tests.integration.test_rest_transport import gate_config

    server = serve(
        [f"--model_config_file={gate_config(tmp_path)}", f"--rest_api_port={free_port()}",
         "--rest_api_num_threads=1", "--inline_inference=false",
         "--rest_api_timeout_in_ms=5000"]
    )  # fmt: skip
    http = Http(rest_port(server))
    gate = str(tmp_path / "gate-open")
    v1 = ("/v1/models/gate:predict", {"instances": [gate]})
    v2 = ("/v2/models/gate/infer", _doc({"name": "path", "datatype": "BYTES", "shape": [1],
                                          "data": [gate]}))  # fmt: skip
    sent = BACKLOG_PER_THREAD + 2
    with futures.ThreadPoolExecutor(sent) as pool:
        calls = [pool.submit(http.json, "POST", *(v1 if i % 2 else v2)) for i in range(sent)]
        rejected = []
        for done in futures.as_completed(calls, timeout=TIMEOUT):
            rejected.append(done.result())
            if len(rejected) == 2:
                break
        Path(gate).touch()
        replies = [c.result(timeout=TIMEOUT) for c in calls]
    assert all(status == 503 and "--rest_api_num_threads" in r["error"] for status, r in rejected)
    assert sorted(status for status, _ in replies) == [200] * BACKLOG_PER_THREAD + [503] * 2

    slow = _doc(
        {"name": "path", "datatype": "BYTES", "shape": [1], "data": [str(tmp_path / "shut")]}
    )
    status, body = http.json("POST", "/v2/models/gate/infer", slow)
    assert status == 504 and "timed out after 5000 ms" in body["error"]
    (tmp_path / "shut").touch()
    assert http.json("POST", HP2, _doc(X))[0] == 200
