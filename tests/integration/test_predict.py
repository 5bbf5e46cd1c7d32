"""PredictionService of a real `rollway serve`, called only through TF Serving's stubs.

One module-scoped server serves four models from a ModelServerConfig file:
TF Serving's half_plus_two, its two-version copy (policy ``all``, labels), and
two SavedModels built here (several signatures and dtypes; a Keras model).
Codes and messages are TensorFlow Serving's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from functions.serving.process import ServerProcess
from tests.conftest import HALF_PLUS_TWO, TWO_VERSIONS, ServerFactory
from tests.integration.helpers import predict_request
from tests.models import export_keras, export_multi

pytestmark = pytest.mark.integration

RPC_TIMEOUT = 30.0
UNLIMITED = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
PREDICT_METHOD = "tensorflow/serving/predict"
X = [[1.0], [2.0], [5.0]]
Y = [2.5, 3.0, 4.5]

SIMPLE_MODEL = 'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}'
TWO_VERSIONS_MODEL = """config {{
    name: "{name}"
    base_path: "{path}"
    model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 123 }}
    version_labels {{ key: "canary" value: 124 }}
  }}"""


def write_model_config(path: Path, models: dict[str, Path]) -> Path:
    """A ModelServerConfig file; base paths are absolute, as TF Serving requires."""
    blocks = [
        (TWO_VERSIONS_MODEL if name == "two_versions" else SIMPLE_MODEL).format(
            name=name, path=base.resolve()
        )
        for name, base in models.items()
    ]
    path.write_text("model_config_list {\n  " + "\n  ".join(blocks) + "\n}\n")
    return path


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    export_multi(base / "multi", 1)
    export_keras(base / "keras", 1)
    return {
        "half_plus_two": HALF_PLUS_TWO,
        "two_versions": TWO_VERSIONS,
        "multi": base / "multi",
        "keras": base / "keras",
    }


@pytest.fixture(scope="module")
def server(
    serve_module: ServerFactory,
    model_dirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> ServerProcess:
    config = write_model_config(tmp_path_factory.mktemp("config") / "models.config", model_dirs)
    return serve_module([f"--model_config_file={config}"])


@contextlib.contextmanager
def open_stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.address, options=UNLIMITED) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with open_stub(server) as opened:
        yield opened


# ---------------------------------------------------------------- helpers


def make_request(
    model: str = "half_plus_two",
    inputs: dict[str, Any] | None = None,
    *,
    version: int | None = None,
    label: str | None = None,
    signature: str | None = None,
    output_filter: tuple[str, ...] = (),
) -> predict_pb2.PredictRequest:
    request = predict_request(model, version, label)
    if signature is not None:
        request.model_spec.signature_name = signature
    for name, value in (inputs if inputs is not None else {"x": x_tensor()}).items():
        request.inputs[name].CopyFrom(value)
    request.output_filter.extend(output_filter)
    return request


def x_tensor(values: Any = X, dtype: Any = tf.float32) -> Any:
    return tf.make_tensor_proto(values, dtype=dtype)


def rpc_error(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=RPC_TIMEOUT)
    return info.value


def metadata_request(model: str, *fields: str) -> get_model_metadata_pb2.GetModelMetadataRequest:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.extend(fields)
    return request


def signature_defs(stub: Any, model: str) -> Any:
    response = stub.GetModelMetadata(metadata_request(model, "signature_def"), timeout=RPC_TIMEOUT)
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    return response, defs


def log_excerpt(server: ServerProcess, lines: int = 40) -> str:
    """The crashing thread's stack if the server crashed, else the end of its log."""
    log = server.log().splitlines()
    crash = [i for i, line in enumerate(log) if line.startswith("Fatal Python error")]
    return "\n".join(log[crash[0] : crash[0] + 25] if crash else log[-lines:])


# ---------------------------------------------------------------- Predict


def test_predict_half_plus_two(stub: Any) -> None:
    response = stub.Predict(make_request(), timeout=RPC_TIMEOUT)

    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs) == ["y"]
    y = response.outputs["y"]
    assert y.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert list(y.float_val) == Y
    assert y.tensor_content == b""
    np.testing.assert_allclose(tf.make_ndarray(y), np.array(Y, np.float32).reshape(3, 1))


@pytest.mark.parametrize(
    ("x", "shape", "y"),
    [
        ([1.0, 2.0, 5.0], [3], [2.5, 3.0, 4.5]),  # TF Serving's quickstart request
        ([1.0], [1], [2.5]),
        (2.0, [], [3.0]),  # a scalar, as TF Serving's test client sends
    ],
    ids=["1-d", "one-element", "scalar"],
)
def test_predict_takes_any_shape_tensorflow_runs(
    stub: Any, x: Any, shape: list[int], y: list[float]
) -> None:
    """The signature says [-1, 1]; TF Serving feeds the graph anyway, and so do we."""
    response = stub.Predict(make_request(inputs={"x": x_tensor(x)}), timeout=RPC_TIMEOUT)
    out = response.outputs["y"]
    assert [d.size for d in out.tensor_shape.dim] == shape
    assert list(out.float_val) == y


def test_predict_accepts_tensor_content_and_val_fields_alike(stub: Any) -> None:
    as_content = x_tensor(np.array(X, np.float32))
    assert as_content.tensor_content
    as_vals = predict_pb2.PredictRequest().inputs["x"]
    as_vals.dtype = tf.float32.as_datatype_enum
    as_vals.tensor_shape.dim.add(size=3)
    as_vals.tensor_shape.dim.add(size=1)
    as_vals.float_val.extend([1.0, 2.0, 5.0])
    for tensor in (as_content, as_vals):
        response = stub.Predict(make_request(inputs={"x": tensor}), timeout=RPC_TIMEOUT)
        assert list(response.outputs["y"].float_val) == Y


def test_predict_named_signature_of_half_plus_two(stub: Any) -> None:
    request = make_request(inputs={"inputs": x_tensor()}, signature="regress_x2_to_y3")
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.signature_name == "regress_x2_to_y3"
    assert list(response.outputs) == ["outputs"]
    assert list(response.outputs["outputs"].float_val) == [3.5, 4.0, 5.5]


@pytest.mark.parametrize(
    ("version", "label", "served"),
    [
        (123, None, 123),
        (124, None, 124),
        (None, "stable", 123),
        (None, "canary", 124),
        (None, None, 124),
    ],
    ids=["version-123", "version-124", "label-stable", "label-canary", "latest"],
)
def test_version_selection(stub: Any, version: int | None, label: str | None, served: int) -> None:
    request = make_request("two_versions", version=version, label=label)
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.name == "two_versions"
    assert response.model_spec.version.value == served
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs["y"].float_val) == Y


def test_multiple_inputs_and_outputs(stub: Any) -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = np.array([[10.0, 20.0], [30.0, 40.0]], np.float32)
    request = make_request("multi", {"a": x_tensor(a), "b": x_tensor(b)})
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"sum", "product"}
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["sum"]), a + b)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["product"]), a * b)
    assert list(response.outputs["sum"].float_val) == [11.0, 22.0, 33.0, 44.0]


def test_output_filter_returns_only_the_filtered_outputs(stub: Any) -> None:
    a = np.array([[1.0, 2.0]], np.float32)
    b = np.array([[3.0, 4.0]], np.float32)
    request = make_request(
        "multi", {"a": x_tensor(a), "b": x_tensor(b)}, output_filter=("product",)
    )
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert list(response.outputs) == ["product"]
    assert list(response.outputs["product"].float_val) == [3.0, 8.0]


def test_float64_in_float64_and_int64_out(stub: Any) -> None:
    x = np.array([1.5, -2.25, 3.0], np.float64)
    request = make_request("multi", {"x": x_tensor(x, tf.float64)}, signature="scale")
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.signature_name == "scale"
    doubled, as_int = response.outputs["doubled"], response.outputs["as_int"]
    assert doubled.dtype == tf.float64.as_datatype_enum
    assert list(doubled.double_val) == [3.0, -4.5, 6.0]
    assert as_int.dtype == tf.int64.as_datatype_enum
    assert list(as_int.int64_val) == [1, -2, 3]
    assert tf.make_ndarray(as_int).dtype == np.int64


def test_string_inputs_and_outputs(stub: Any) -> None:
    text = [b"abc", b"Hello, world", b""]
    request = make_request("multi", {"text": x_tensor(text, tf.string)}, signature="strings")
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    upper = response.outputs["upper"]
    assert upper.dtype == tf.string.as_datatype_enum
    assert list(upper.string_val) == [b"ABC", b"HELLO, WORLD", b""]
    assert list(response.outputs["text_bytes"].string_val) == text
    length = response.outputs["length"]
    assert length.dtype == tf.int32.as_datatype_enum
    assert list(length.int_val) == [3, 12, 0]


def test_string_output_filter(stub: Any) -> None:
    request = make_request(
        "multi",
        {"text": x_tensor([b"abc"], tf.string)},
        signature="strings",
        output_filter=("upper",),
    )
    response = stub.Predict(request, timeout=RPC_TIMEOUT)
    assert list(response.outputs) == ["upper"]
    assert list(response.outputs["upper"].string_val) == [b"ABC"]


def test_keras_model(stub: Any) -> None:
    _, defs = signature_defs(stub, "keras")
    sig = defs.signature_def["serving_default"]
    (input_name,) = sig.inputs
    (output_name,) = sig.outputs
    features = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    request = make_request("keras", {input_name: x_tensor(features)})
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    assert response.model_spec.version.value == 1
    out = response.outputs[output_name]
    assert out.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in out.tensor_shape.dim] == [3, 1]
    assert len(out.float_val) == 3
    assert np.all(np.isfinite(tf.make_ndarray(out)))


def test_large_request_above_grpc_default_limit(stub: Any) -> None:
    rows = 1_600_000  # 6.4 MB of float32, above gRPC's 4 MiB default
    x = np.arange(rows, dtype=np.float32).reshape(rows, 1)
    request = make_request(inputs={"x": x_tensor(x)})
    assert request.ByteSize() > 6_000_000
    response = stub.Predict(request, timeout=RPC_TIMEOUT)

    y = tf.make_ndarray(response.outputs["y"])
    assert y.shape == (rows, 1)
    np.testing.assert_allclose(y[[0, 1, -1], 0], [2.0, 2.5, 0.5 * (rows - 1) + 2])


# ---------------------------------------------------------------- GetModelMetadata


def test_metadata_half_plus_two(stub: Any) -> None:
    response, defs = signature_defs(stub, "half_plus_two")

    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert list(response.metadata) == ["signature_def"]
    sigs = defs.signature_def
    assert {
        "serving_default",
        "classify_x_to_y",
        "regress_x_to_y",
        "regress_x_to_y2",
        "regress_x2_to_y3",
    } <= set(sigs)
    assert sigs["serving_default"].method_name == PREDICT_METHOD
    assert sigs["classify_x_to_y"].method_name == "tensorflow/serving/classify"
    assert sigs["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    x, y = sigs["serving_default"].inputs["x"], sigs["serving_default"].outputs["y"]
    assert x.dtype == y.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in x.tensor_shape.dim] == [-1, 1]
    assert sigs["classify_x_to_y"].inputs["inputs"].dtype == tf.string.as_datatype_enum


def test_metadata_multi(stub: Any) -> None:
    _, defs = signature_defs(stub, "multi")
    sigs = defs.signature_def

    assert {"serving_default", "scale", "strings"} <= set(sigs)
    assert all(sigs[k].method_name == PREDICT_METHOD for k in ("serving_default", "scale"))
    default = sigs["serving_default"]
    assert set(default.inputs) == {"a", "b"}
    assert set(default.outputs) == {"sum", "product"}
    assert default.inputs["a"].dtype == tf.float32.as_datatype_enum
    scale = sigs["scale"]
    assert scale.inputs["x"].dtype == tf.float64.as_datatype_enum
    assert scale.outputs["doubled"].dtype == tf.float64.as_datatype_enum
    assert scale.outputs["as_int"].dtype == tf.int64.as_datatype_enum
    strings = sigs["strings"]
    assert strings.inputs["text"].dtype == tf.string.as_datatype_enum
    assert strings.outputs["upper"].dtype == tf.string.as_datatype_enum
    assert strings.outputs["length"].dtype == tf.int32.as_datatype_enum


@pytest.mark.parametrize(("label", "version"), [("stable", 123), ("canary", 124)])
def test_metadata_by_label(stub: Any, label: str, version: int) -> None:
    request = metadata_request("two_versions", "signature_def")
    request.model_spec.version_label = label
    response = stub.GetModelMetadata(request, timeout=RPC_TIMEOUT)
    assert response.model_spec.version.value == version


def test_metadata_without_field_is_invalid(stub: Any) -> None:
    err = rpc_error(stub.GetModelMetadata, metadata_request("half_plus_two"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "GetModelMetadataRequest must specify at least one metadata_field"


def test_metadata_unknown_field_is_invalid(stub: Any) -> None:
    err = rpc_error(stub.GetModelMetadata, metadata_request("half_plus_two", "nope"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Metadata field nope is not supported"


def test_metadata_errors_match_predict(stub: Any) -> None:
    err = rpc_error(stub.GetModelMetadata, metadata_request("nope", "signature_def"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "Servable not found for request: Latest(nope)"
    err = rpc_error(stub.GetModelMetadata, get_model_metadata_pb2.GetModelMetadataRequest())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Missing ModelSpec"


# ---------------------------------------------------------------- Predict errors


def _no_model_spec() -> predict_pb2.PredictRequest:
    request = make_request()
    request.ClearField("model_spec")
    return request


def _short_content() -> predict_pb2.PredictRequest:
    tensor = x_tensor(np.array(X, np.float32))
    tensor.tensor_content = tensor.tensor_content[:8]
    return make_request(inputs={"x": tensor})


def _half_val_out_of_uint16_range() -> predict_pb2.PredictRequest:
    # TensorFlow keeps the low 16 bits of each half_val (Tensor::FromProto); the
    # tensor is valid but a DT_HALF, so the float signature rejects it.
    tensor = predict_pb2.PredictRequest().inputs["x"]
    tensor.dtype = tf.float16.as_datatype_enum
    tensor.tensor_shape.dim.add(size=1)
    tensor.tensor_shape.dim.add(size=1)
    tensor.half_val.append(70000)
    return make_request(inputs={"x": tensor})


def _rank_65() -> predict_pb2.PredictRequest:
    # TensorFlow allows rank up to 254 (numpy only 64): a valid tensor, the wrong shape.
    tensor = predict_pb2.PredictRequest().inputs["x"]
    tensor.dtype = tf.float32.as_datatype_enum
    for _ in range(65):
        tensor.tensor_shape.dim.add(size=1)
    tensor.float_val.append(1.0)
    return make_request(inputs={"x": tensor})


INVALID = grpc.StatusCode.INVALID_ARGUMENT
ERROR_CASES: list[tuple[str, Callable[[], Any], grpc.StatusCode, str, bool]] = [
    # (id, request, code, text, whether text is the exact message or a part of it)
    (
        "unknown-model",
        lambda: make_request("nope"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
        True,
    ),
    (
        "unknown-version",
        lambda: make_request(version=999),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half_plus_two, 999)",
        True,
    ),
    (
        "unknown-version-of-unknown-model",
        lambda: make_request("nope", version=1),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(nope, 1)",
        True,
    ),
    (
        "unknown-label",
        lambda: make_request("two_versions", label="nope"),
        INVALID,
        "Unrecognized servable version label: nope",
        True,
    ),
    (
        "label-on-model-without-labels",
        lambda: make_request(label="stable"),
        INVALID,
        "Unrecognized servable version label: stable",
        True,
    ),
    (
        "empty-label",
        lambda: make_request("two_versions", label=""),
        INVALID,
        "Unrecognized servable version label: ",
        True,
    ),
    (
        "unknown-signature",
        lambda: make_request(signature="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
        True,
    ),
    ("missing-model-spec", _no_model_spec, INVALID, "Missing ModelSpec", True),
    (
        "empty-model-name",
        lambda: make_request(""),
        INVALID,
        "ModelSpec has no name specified.",
        True,
    ),
    (
        "extra-input",
        lambda: make_request(inputs={"x": x_tensor(), "z": x_tensor()}),
        INVALID,
        "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
        "Sent extra: {z}. Missing but required: {}.",
        True,
    ),
    (
        "missing-input",
        lambda: make_request("multi", {"a": x_tensor([[1.0, 2.0]])}),
        INVALID,
        "input size does not match signature: 1!=2 len({a}) != len({a,b}). "
        "Sent extra: {}. Missing but required: {b}.",
        True,
    ),
    (
        "unknown-input",
        lambda: make_request(inputs={"z": x_tensor()}),
        INVALID,
        "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.",
        True,
    ),
    (
        "string-for-float",
        lambda: make_request(inputs={"x": x_tensor([[b"a"], [b"b"]], tf.string)}),
        INVALID,
        '"x"',
        False,
    ),
    (
        "int-for-float",
        lambda: make_request(inputs={"x": x_tensor([[1], [2]], tf.int32)}),
        INVALID,
        '"x"',
        False,
    ),
    (
        # Shapes are TensorFlow's to judge, as in TF Serving: its own error comes back.
        "shapes-tensorflow-cannot-run",
        lambda: make_request(
            "multi", {"a": x_tensor([[1.0, 2.0]] * 2), "b": x_tensor([[1.0, 2.0]] * 3)}
        ),
        INVALID,
        "Incompatible shapes: [2,2] vs. [3,2]",
        False,
    ),
    (
        "unknown-output-filter",
        lambda: make_request(output_filter=("nope",)),
        INVALID,
        "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.",
        True,
    ),
    (
        "duplicate-output-filter",
        lambda: make_request(output_filter=("y", "y")),
        INVALID,
        "duplicate output tensor alias: y",
        True,
    ),
    ("short-tensor-content", _short_content, INVALID, '"x"', False),
    ("half-val-out-of-range", _half_val_out_of_uint16_range, INVALID, '"x"', False),
    ("rank-65", _rank_65, INVALID, '"x"', False),
]


@pytest.mark.parametrize(
    ("build", "code", "text", "exact"),
    [case[1:] for case in ERROR_CASES],
    ids=[case[0] for case in ERROR_CASES],
)
def test_predict_error(
    stub: Any, build: Callable[[], Any], code: grpc.StatusCode, text: str, exact: bool
) -> None:
    err = rpc_error(stub.Predict, build())
    assert err.code() == code, err.details()
    if exact:
        assert err.details() == text
    else:
        assert text in err.details()


def test_server_still_serves_after_errors(stub: Any) -> None:
    for _, build, *_ in ERROR_CASES:
        try:
            stub.Predict(build(), timeout=RPC_TIMEOUT)
        except grpc.RpcError as err:
            assert err.code() != grpc.StatusCode.UNAVAILABLE, err.details()
    response = stub.Predict(make_request(), timeout=RPC_TIMEOUT)
    assert list(response.outputs["y"].float_val) == Y


# ---------------------------------------------------------------- tensor_content output


def test_serialization_as_tensor_content(
    serve: ServerFactory, model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    models = {name: model_dirs[name] for name in ("half_plus_two", "multi")}
    config = write_model_config(tmp_path / "models.config", models)
    server = serve(
        [f"--model_config_file={config}", "--enable_serialization_as_tensor_content=true"]
    )
    with open_stub(server) as stub:
        response = stub.Predict(make_request(), timeout=RPC_TIMEOUT)
        y = response.outputs["y"]
        assert y.tensor_content
        assert not y.float_val
        assert y.dtype == tf.float32.as_datatype_enum
        assert [d.size for d in y.tensor_shape.dim] == [3, 1]
        np.testing.assert_allclose(tf.make_ndarray(y), np.array(Y, np.float32).reshape(3, 1))

        x = np.array([1.5, -2.0], np.float64)
        scale = stub.Predict(
            make_request("multi", {"x": x_tensor(x, tf.float64)}, signature="scale"),
            timeout=RPC_TIMEOUT,
        )
        assert not scale.outputs["as_int"].int64_val
        assert tf.make_ndarray(scale.outputs["as_int"]).tolist() == [1, -2]
        assert tf.make_ndarray(scale.outputs["doubled"]).tolist() == [3.0, -4.0]

        # Strings cannot live in tensor_content: TensorFlow keeps them in string_val.
        strings = stub.Predict(
            make_request("multi", {"text": x_tensor([b"abc"], tf.string)}, signature="strings"),
            timeout=RPC_TIMEOUT,
        )
        assert list(strings.outputs["upper"].string_val) == [b"ABC"]


# ---------------------------------------------------------------- robustness


def test_high_rank_string_tensor_does_not_kill_the_server(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """classify_x_to_y takes strings of any rank; TensorFlow allows rank 33 (up to 254).

    TF Serving answers INVALID_ARGUMENT (ParseExample: "Expected serialized to be a
    vector"). A separate server: this request must not take the shared one down.
    """
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a crash leaves its Python stack in the log
    server = serve(["--model_name=half_plus_two", f"--model_base_path={HALF_PLUS_TWO}"])
    tensor = predict_pb2.PredictRequest().inputs["inputs"]
    tensor.dtype = tf.string.as_datatype_enum
    for _ in range(33):
        tensor.tensor_shape.dim.add(size=1)
    tensor.string_val.append(b"")
    request = make_request(inputs={"inputs": tensor}, signature="classify_x_to_y")
    with open_stub(server) as stub:
        err = rpc_error(stub.Predict, request)
        assert err.code() == INVALID, f"{err.details()}\nserver log:\n{log_excerpt(server)}"
        response = stub.Predict(make_request(), timeout=RPC_TIMEOUT)
        assert list(response.outputs["y"].float_val) == Y
