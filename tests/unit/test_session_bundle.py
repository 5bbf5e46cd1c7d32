"""functions/serving/session_bundle.py: SavedModels run as TF Serving runs them.

A Session callable fed by the SignatureDef's tensor names takes every shape
TensorFlow accepts (no comparison with the signature's shape), for TF 1.0,
TF1 and TF2 SavedModels alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from functions.serving.runtime import saved_model
from functions.serving.runtime.servable import LoadedModel
from functions.serving.runtime.session_bundle import load_session_bundle

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu" / "00000123"
HALF_PLUS_THREE = TESTDATA / "saved_model_half_plus_three" / "00000123"
COUNTER = TESTDATA / "saved_model_counter" / "00000123"


def _load(path: Path) -> LoadedModel:
    saved = saved_model.read_saved_model(path)
    meta_graph = saved_model.select_meta_graph(saved, ["serve"], path)
    return load_session_bundle(path, ("serve",), meta_graph)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        (np.float32(1.0), np.float32(2.5)),  # a scalar, as TF Serving's test client sends
        (np.array([1.0], np.float32), np.array([2.5], np.float32)),
        (np.array([1.0, 2.0, 5.0], np.float32), np.array([2.5, 3.0, 4.5], np.float32)),
        (np.array([[1.0], [2.0]], np.float32), np.array([[2.5], [3.0]], np.float32)),
    ],
)
def test_any_shape_tensorflow_accepts(x: Any, y: Any) -> None:
    runner = _load(HALF_PLUS_TWO).signatures["serving_default"].runner
    out = runner({"x": np.asarray(x)}, ("y",))["y"]
    assert isinstance(out, np.ndarray)
    assert out.shape == np.shape(y)
    np.testing.assert_allclose(out, y)


def test_signature_metadata_is_kept_as_stored() -> None:
    loaded = _load(HALF_PLUS_TWO)
    assert set(loaded.signature_defs) >= {"serving_default", "classify_x_to_y"}
    spec = loaded.signatures["serving_default"].inputs["x"]
    assert spec.dtype == 1 and spec.shape == (-1, 1)


def test_tf_1_0_models_take_any_shape() -> None:
    loaded = _load(HALF_PLUS_THREE)
    runner = loaded.signatures["serving_default"].runner
    out = runner({"x": np.array([1.0, 2.0], np.float32)}, ("y",))["y"]
    np.testing.assert_allclose(out, [3.5, 4.0])
    # Producer-21 graphs: an empty stored shape means "unknown".
    assert loaded.signatures["serving_default"].inputs["x"].shape is None


def test_state_lives_in_the_session() -> None:
    signatures = _load(COUNTER).signatures
    signatures["incr_counter"].runner({}, ("output",))
    signatures["incr_counter_by"].runner({"delta": np.float32(4)}, ("output",))
    assert float(signatures["get_counter"].runner({}, ("output",))["output"]) == 5.0


def test_tensorflow_errors_surface_as_op_errors() -> None:
    runner = _load(HALF_PLUS_TWO).signatures["serving_default"].runner
    with pytest.raises(tf.errors.InvalidArgumentError, match="Type mismatch"):
        runner({"x": np.array([1], np.int32)}, ("y",))


def test_tf2_lookup_tables_assets_and_variables(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("x\ny\nz\n")

    class Model(tf.Module):
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

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="word"),
                tf.TensorSpec([None], tf.float32, name="value"),
            ]
        )
        def serve(self, word: Any, value: Any) -> dict[str, Any]:
            return {"id": self.table.lookup(word), "scaled": value * self.scale}

    model = Model()
    export = tmp_path / "1"
    tf.saved_model.save(model, str(export), signatures={"serving_default": model.serve})
    vocab.unlink()  # the copy in the SavedModel's assets is what must be read
    runner = _load(export).signatures["serving_default"].runner
    out = runner(
        {
            "word": np.array([b"z", b"q"], dtype=object),
            "value": np.array([1.0, 3.0], np.float32),
        },
        ("id", "scaled"),
    )
    assert out["id"].tolist() == [2, 3]
    assert out["scaled"].tolist() == [2.0, 6.0]
    # A scalar works here too: the signature's [None] shape is not enforced.
    single = runner({"word": np.array(b"y", dtype=object), "value": np.float32(1)}, ("id",))
    assert set(single) == {"id"} and int(single["id"]) == 1
