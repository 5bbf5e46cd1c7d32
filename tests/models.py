"""SavedModels built by the tests themselves (each function writes one version).

All exports are small and fast. Every model is a real TensorFlow SavedModel,
loaded by the real server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf


def export_affine(
    base: Path,
    version: int,
    scale: float = 1.0,
    offset: float = 0.0,
    shape: tuple[int | None, ...] = (None, 1),
) -> Path:
    """y = scale * x + offset, x float32 ``shape``; signature serving_default (x -> y).

    Different (scale, offset) per version make it visible which version served.
    """

    class Affine(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.scale = tf.Variable(scale, dtype=tf.float32)
            self.offset = tf.Variable(offset, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec(list(shape), tf.float32, name="x")])  # type: ignore[misc]
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": x * self.scale + self.offset}

    module = Affine()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def export_multi(base: Path, version: int) -> Path:
    """A tf.Module with several signatures and several inputs and outputs.

    - serving_default: a float32 [None, 2], b float32 [None, 2] -> sum, product
    - scale: x float64 [None] -> doubled (float64), as_int (int64)
    - strings: text string [None] -> upper (string), length (int32), text_bytes (string)
    """

    class Multi(tf.Module):  # type: ignore[misc]
        @tf.function(  # type: ignore[misc]
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None, 2], tf.float32, name="b"),
            ]
        )
        def add_mul(self, a: Any, b: Any) -> dict[str, Any]:
            return {"sum": a + b, "product": a * b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float64, name="x")])  # type: ignore[misc]
        def scale(self, x: Any) -> dict[str, Any]:
            return {"doubled": x * 2.0, "as_int": tf.cast(x, tf.int64)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])  # type: ignore[misc]
        def strings(self, text: Any) -> dict[str, Any]:
            return {
                "upper": tf.strings.upper(text),
                "length": tf.strings.length(text),
                "text_bytes": text,
            }

    module = Multi()
    path = base / str(version)
    tf.saved_model.save(
        module,
        str(path),
        signatures={
            "serving_default": module.add_mul,
            "scale": module.scale,
            "strings": module.strings,
        },
    )
    return path


def export_keras(base: Path, version: int, features: int = 4, hidden: int = 8) -> Path:
    """A Keras MLP exported with model.export (input 'inputs' float32 [None, features])."""
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(shape=(features,), name="inputs")
    hidden_layer = tf.keras.layers.Dense(hidden, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(1, name="score")(hidden_layer)
    model = tf.keras.Model(inputs, outputs)
    path = base / str(version)
    model.export(str(path), verbose=False)
    return path


def export_mlp(base: Path, version: int, features: int = 256, hidden: int = 1024) -> Path:
    """An MLP of about a million parameters (256*1024 + 1024*768 + ...), for benchmarks."""
    rng = tf.random.Generator.from_seed(1)

    class MLP(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w1 = tf.Variable(rng.normal([features, hidden]) * 0.05)
            self.b1 = tf.Variable(tf.zeros([hidden]))
            self.w2 = tf.Variable(rng.normal([hidden, 768]) * 0.05)
            self.b2 = tf.Variable(tf.zeros([768]))
            self.w3 = tf.Variable(rng.normal([768, 10]) * 0.05)

        @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="x")])  # type: ignore[misc]
        def serve(self, x: Any) -> dict[str, Any]:
            h = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
            h = tf.nn.relu(tf.matmul(h, self.w2) + self.b2)
            return {"logits": tf.matmul(h, self.w3)}

    module = MLP()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def export_gate(base: Path, version: int) -> Path:
    """path string [None] -> waited int64: writes ``path[0] + ".started"``, then
    polls every 20 ms until ``path[0]`` exists (a tf.data sleep in a while loop)."""
    from tensorflow.python.data.experimental.ops import testing

    class Gate(tf.Module):  # type: ignore[misc]
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="path")])  # type: ignore[misc]
        def serve(self, path: Any) -> dict[str, Any]:
            started = tf.io.write_file(path[0] + ".started", "")
            with tf.control_dependencies([started]):
                zero = tf.constant(0, tf.int64)

            def closed(i: Any) -> Any:  # depends on i: evaluated again each iteration
                again = tf.strings.substr(tf.strings.as_string(i), 0, 0)
                return tf.equal(tf.size(tf.io.matching_files(path[0] + again)), 0)

            def wait(i: Any) -> Any:
                pause = tf.data.Dataset.from_tensors(i).apply(testing.sleep(20_000))
                return pause.reduce(i, lambda total, _: total + 1)

            waited = tf.while_loop(closed, wait, [zero])[0]
            return {"waited": tf.fill(tf.shape(path), waited)}

    module = Gate()
    path = base / str(version)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path
