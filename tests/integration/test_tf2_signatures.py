"""TF2 SavedModels served as TF Serving serves them, against a real `rollway serve`.

The model has a lookup table read from an asset file, a resource variable and a
tf.function signature whose declared shapes are [None]. As in TF Serving, the
MetaGraph runs in a Session fed by the SignatureDef's tensor names, so scalars
and other shapes TensorFlow can run are answered, over gRPC and REST alike, and
what TensorFlow cannot run is its own error.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from functions.serving.process import ServerProcess, free_port
from tests.conftest import ServerFactory

TIMEOUT = 30


def export_table_model(base: Path) -> Path:
    """serving_default: word string [None], value float [None] -> id int64, scaled
    float, weighted float (id * value)."""
    vocab = base.parent / "vocab.txt"
    vocab.write_text("apple\nbanana\ncherry\n")

    class TableModel(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            self.scale = tf.Variable(2.0)
            self.table = tf.lookup.StaticVocabularyTable(
                tf.lookup.TextFileInitializer(
                    str(vocab),
                    tf.string,
                    tf.lookup.TextFileIndex.WHOLE_LINE,
                    tf.int64,
                    tf.lookup.TextFileIndex.LINE_NUMBER,
                ),
                num_oov_buckets=1,
            )

        @tf.function(  # type: ignore[misc]
            input_signature=[
                tf.TensorSpec([None], tf.string, name="word"),
                tf.TensorSpec([None], tf.float32, name="value"),
            ]
        )
        def serve(self, word: Any, value: Any) -> dict[str, Any]:
            ids = self.table.lookup(word)
            return {
                "id": ids,
                "scaled": value * self.scale,
                "weighted": tf.cast(ids, tf.float32) * value,
            }

    model = TableModel()
    version = base / "1"
    tf.saved_model.save(model, str(version), signatures={"serving_default": model.serve})
    vocab.unlink()  # only the SavedModel's own asset copy may be read
    return version


@pytest.fixture(scope="module")
def server(
    serve_module: ServerFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, int]]:
    base = tmp_path_factory.mktemp("tf2") / "table"
    export_table_model(base)
    rest_port = free_port()
    yield (
        serve_module(
            ["--model_name=table", f"--model_base_path={base}", f"--rest_api_port={rest_port}"]
        ),
        rest_port,
    )


@pytest.fixture(scope="module")
def stub(
    server: tuple[ServerProcess, int],
) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server[0].address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict(stub: Any, word: Any, value: Any) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "table"
    request.inputs["word"].CopyFrom(tf.make_tensor_proto(word, dtype=tf.string))
    request.inputs["value"].CopyFrom(tf.make_tensor_proto(value, dtype=tf.float32))
    response = stub.Predict(request, timeout=TIMEOUT)
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def _post(port: int, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/models/table:predict",
        data=json.dumps(body).encode(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_lookup_table_from_assets_and_variable(stub: Any) -> None:
    out = _predict(stub, [b"cherry", b"durian", b"apple"], [1.0, 2.0, 3.0])
    assert out["id"].tolist() == [2, 3, 0]
    assert out["scaled"].tolist() == [2.0, 4.0, 6.0]


def test_scalars_for_a_batch_signature(stub: Any) -> None:
    """The signature says [None]; TensorFlow runs scalars, so TF Serving answers them."""
    out = _predict(stub, b"banana", 1.5)
    assert out["id"].shape == () and int(out["id"]) == 1
    assert out["scaled"].shape == () and float(out["scaled"]) == 3.0


def test_tensorflow_errors_come_back_as_invalid_argument(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _predict(stub, [b"apple", b"banana"], [1.0, 2.0, 3.0])
    # Shapes TensorFlow cannot multiply: its own error, without internals.
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Incompatible shapes: [2] vs. [3]" in info.value.details()
    assert "Traceback" not in info.value.details()
    assert "{{node" not in info.value.details()


def test_rest_rows_columns_and_scalars(server: tuple[ServerProcess, int]) -> None:
    port = server[1]
    rows = {"instances": [{"word": "apple", "value": 1.0}, {"word": "kiwi", "value": 2.0}]}
    assert _post(port, rows) == (
        200,
        {
            "predictions": [
                {"id": 0, "scaled": 2.0, "weighted": 0.0},
                {"id": 3, "scaled": 4.0, "weighted": 6.0},
            ]
        },
    )
    assert _post(port, {"inputs": {"word": "cherry", "value": 0.5}}) == (
        200,
        {"outputs": {"id": 2, "scaled": 1.0, "weighted": 1.0}},
    )
