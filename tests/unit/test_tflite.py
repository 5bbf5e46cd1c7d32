"""functions/serving/tflite.py: model.tflite served as TF Serving's TfLiteSession serves it.

The tests convert their own models with tf.lite.TFLiteConverter: without
signature defs (a bare concrete function), with the converter's signature defs
(a SavedModel), and with TF Serving's own ``signature_defs_metadata``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from flatbuffers import flexbuffers  # type: ignore[import-untyped]
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils
from tensorflow_serving.apis import prediction_log_pb2

from functions.serving.dataplane.warmup import WarmupOptions, warmed
from functions.serving.runtime import tflite
from functions.serving.runtime.loading import RuntimeOptions, load_servable
from functions.serving.runtime.servable import LoadedModel, Servable
from loader.errors import InvalidArgument, LoadError
from loader.versions import VersionId
from tests.models import export_affine

DT_FLOAT, DT_STRING = 1, 7
PREDICT = "tensorflow/serving/predict"
X = tf.TensorSpec([None, 1], tf.float32, name="x")
AB = [
    tf.TensorSpec([None, 2], tf.float32, name="a"),
    tf.TensorSpec([None, 2], tf.float32, name="b"),
]


@tf.function(input_signature=[X])  # type: ignore[untyped-decorator]
def affine(x: Any) -> Any:
    return {"y": 0.5 * x + 2.0}


@tf.function(input_signature=AB)  # type: ignore[untyped-decorator]
def sum_prod(a: Any, b: Any) -> Any:
    return {"sum": a + b, "prod": a * b}


@tf.function(input_signature=[AB[0]])  # type: ignore[untyped-decorator]
def double(a: Any) -> Any:
    return {"doubled": 2.0 * a}


@tf.function(input_signature=[X])  # type: ignore[untyped-decorator]
def total(x: Any) -> Any:
    return {"total": tf.reduce_sum(x)}  # one value per request, not per row


def write(directory: Path, content: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / tflite.MODEL_FILE).write_bytes(content)
    return directory


def bare(function: Any) -> bytes:
    """Converted without signature defs: a concrete function and no trackable object."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()])
    return bytes(converter.convert())


def from_saved_model(directory: Path, functions: dict[str, Any]) -> bytes:
    """Converted from a SavedModel: the converter keeps its signature defs, by key."""
    module = tf.Module()
    signatures = {key: function.get_concrete_function() for key, function in functions.items()}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(directory), signature_keys=list(functions)
    )
    return bytes(converter.convert())


def with_stored_signature_defs(content: bytes, defs: dict[str, Any]) -> bytes:
    """Adds TF Serving's ``signature_defs_metadata``, as tflite's SetSignatureDefMap
    writes it: a flexbuffer map of key -> serialized SignatureDef (a String, which
    Python's flexbuffers Builder only writes from text, hence _WriteBlob)."""
    builder = flexbuffers.Builder()
    with builder.Map():
        for key, sig_def in sorted(defs.items()):
            builder.Key(key)
            builder._WriteBlob(
                sig_def.SerializeToString(), append_zero=True, type_=flexbuffers.Type.STRING
            )
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Finish()), np.uint8)
    model.buffers.append(buffer)
    metadata = schema.MetadataT()
    metadata.name, metadata.buffer = "signature_defs_metadata", len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), metadata]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tflite")
    stored = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/regress")
    stored.inputs["x_in"].name = "x:0"  # TF's name; the tensor is "x" (the legacy rule)
    stored.inputs["x_in"].dtype = DT_FLOAT
    stored.outputs["y_out"].name = "Identity"
    stored.outputs["y_out"].dtype = DT_FLOAT
    return {
        "affine_bare": write(root / "affine_bare", bare(affine)),
        "affine_saved": write(
            root / "affine_saved", from_saved_model(root / "sm1", {"serving_default": affine})
        ),
        "two_bare": write(root / "two_bare", bare(sum_prod)),
        "two_saved": write(
            root / "two_saved",
            from_saved_model(root / "sm2", {"serving_default": sum_prod, "double": double}),
        ),
        "total": write(root / "total", bare(total)),
        "stored": write(
            root / "stored", with_stored_signature_defs(bare(affine), {"regress_x": stored})
        ),
    }


def rows(n: int, width: int = 1, start: float = 0.0) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)


def run(loaded: LoadedModel, key: str, inputs: dict[str, np.ndarray], *outputs: str) -> Any:
    signature = loaded.signatures[key]
    return signature.runner(inputs, outputs or tuple(sorted(signature.outputs)))


# ------------------------------------------------------------- signatures


def test_without_signature_defs_tf_serving_builds_serving_default(
    models: dict[str, Path],
) -> None:
    loaded = tflite.load_tflite(models["two_bare"], 1, 1)
    assert set(loaded.signature_defs) == set(loaded.signatures) == {"serving_default"}
    sig_def = loaded.signature_defs["serving_default"]
    assert sig_def.method_name == PREDICT
    # Keyed by tensor name up to ':', described by its dims (a dynamic batch reads 1).
    assert set(sig_def.inputs) == {"a", "b"}
    assert set(sig_def.outputs) == {"Identity", "Identity_1"}
    info = sig_def.inputs["a"]
    assert (info.name, info.dtype, [d.size for d in info.tensor_shape.dim]) == ("a", 1, [1, 2])
    assert sig_def.outputs["Identity"].name == "Identity"
    signature = loaded.signatures["serving_default"]
    assert (signature.inputs["a"].dtype, signature.inputs["a"].shape) == (DT_FLOAT, (1, 2))


def test_converter_signature_defs_are_served_by_key(models: dict[str, Path]) -> None:
    loaded = tflite.load_tflite(models["two_saved"], 1, 1)
    assert set(loaded.signatures) == {"serving_default", "double"}
    default = loaded.signature_defs["serving_default"]
    assert (set(default.inputs), set(default.outputs)) == ({"a", "b"}, {"sum", "prod"})
    assert default.method_name == PREDICT
    info = default.inputs["a"]
    assert info.name == "serving_default_a:0"  # the TFLite tensor's name
    assert (info.dtype, [d.size for d in info.tensor_shape.dim]) == (DT_FLOAT, [-1, 2])
    double_def = loaded.signature_defs["double"]
    assert (set(double_def.inputs), set(double_def.outputs)) == ({"a"}, {"doubled"})
    out = run(loaded, "double", {"a": rows(3, 2)})
    np.testing.assert_allclose(out["doubled"], double(rows(3, 2))["doubled"].numpy())


def test_tf_serving_signature_defs_metadata_is_served_as_stored(models: dict[str, Path]) -> None:
    loaded = tflite.load_tflite(models["stored"], 1, 1)
    assert set(loaded.signatures) == {"regress_x"}
    sig_def = loaded.signature_defs["regress_x"]
    assert sig_def.method_name == "tensorflow/serving/regress"
    assert sig_def.inputs["x_in"].name == "x"  # "x:0" resolved without its suffix
    out = run(loaded, "regress_x", {"x_in": rows(3)})
    np.testing.assert_allclose(out["y_out"], affine(rows(3))["y"].numpy())


def test_unknown_tensor_in_stored_signature_defs_fails_the_load(
    models: dict[str, Path], tmp_path: Path
) -> None:
    bad = meta_graph_pb2.SignatureDef()
    bad.inputs["x"].name = "nope:0"
    bad.outputs["y"].name = "Identity"
    path = write(tmp_path / "m", with_stored_signature_defs(bare(affine), {"s": bad}))
    with pytest.raises(ValueError, match="input 'x' references an unknown tensor 'nope:0'"):
        tflite.load_tflite(path, 1, 1)


# ---------------------------------------------------------------- results


@pytest.mark.parametrize("batch", [1, 3, 7])
@pytest.mark.parametrize("name", ["affine_bare", "affine_saved"])
def test_results_equal_tensorflow_for_any_batch_size(
    models: dict[str, Path], name: str, batch: int
) -> None:
    loaded = tflite.load_tflite(models[name], 1, 1)
    output = "Identity" if name == "affine_bare" else "y"
    for n in (batch, 1, batch):  # the interpreter is resized back and forth
        out = run(loaded, "serving_default", {"x": rows(n, start=n)})
        assert list(out) == [output]
        assert out[output].shape == (n, 1)
        np.testing.assert_allclose(out[output], affine(rows(n, start=n))["y"].numpy())


@pytest.mark.parametrize("name", ["two_bare", "two_saved"])
def test_two_inputs_and_outputs_with_an_output_filter(models: dict[str, Path], name: str) -> None:
    loaded = tflite.load_tflite(models[name], 1, 1)
    prod, sum_ = ("Identity", "Identity_1") if name == "two_bare" else ("prod", "sum")
    a, b = rows(7, 2), rows(7, 2, start=3.0)
    want = {k: v.numpy() for k, v in sum_prod(a, b).items()}
    out = run(loaded, "serving_default", {"a": a, "b": b})
    np.testing.assert_allclose(out[sum_], want["sum"])
    np.testing.assert_allclose(out[prod], want["prod"])
    only = run(loaded, "serving_default", {"a": a, "b": b}, prod)
    assert list(only) == [prod]


def test_strings_in_and_out(tmp_path: Path) -> None:
    specs = [
        tf.TensorSpec([None], tf.string, name="words"),
        tf.TensorSpec([None], tf.int32, name="at"),
    ]

    @tf.function(input_signature=specs)  # type: ignore[untyped-decorator]
    def pick(words: Any, at: Any) -> Any:
        return tf.gather(words, at)

    loaded = tflite.load_tflite(write(tmp_path / "m", bare(pick)), 1, 1)
    signature = loaded.signatures["serving_default"]
    assert (signature.inputs["words"].dtype, signature.inputs["at"].dtype) == (DT_STRING, 3)
    (out,) = signature.outputs
    words = np.array([b"a", b"b\x00c", b"d"], object)
    picked = signature.runner({"words": words, "at": np.array([2, 1], np.int32)}, (out,))[out]
    assert picked.dtype == object and list(picked) == [b"d", b"b\x00c"]


# ------------------------------------------------------ errors and pools


def servable(loaded: LoadedModel, path: Path) -> Servable:
    return Servable(VersionId("m", 1), path, loaded)


@pytest.mark.parametrize("name", ["two_bare", "two_saved"])
def test_a_request_tflite_cannot_run_is_invalid_argument_and_the_interpreter_recovers(
    models: dict[str, Path], name: str
) -> None:
    loaded = tflite.load_tflite(models[name], 1, 1)  # one interpreter: the same one after
    served = servable(loaded, models[name])
    signature = served.signature("serving_default")
    with pytest.raises(InvalidArgument) as info:
        served.run(signature, {"a": rows(3, 2), "b": rows(3, 3)})  # not broadcastable
    message = info.value.message
    assert "failed to prepare" in message
    assert "Traceback" not in message and ".cc:" not in message and "\n" not in message
    a, b = rows(3, 2), rows(3, 2, start=1.0)
    out = served.run(signature, {"a": a, "b": b})
    np.testing.assert_allclose(next(iter(out.values())), a * b)  # the first alias is the product
    with pytest.raises(InvalidArgument):  # the same bad shapes fail again, cleanly
        served.run(signature, {"a": rows(3, 2), "b": rows(3, 3)})
    assert served.run(signature, {"a": a, "b": b}).keys() == out.keys()


@contextlib.contextmanager
def watched_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Records every take of an interpreter; fails if one is taken while in use."""
    seen: dict[str, Any] = {"takes": 0, "slots": set(), "busy": set(), "most": 0}
    lock = threading.Lock()
    take, give = tflite.InterpreterPool.take, tflite.InterpreterPool.give

    def watched_take(self: tflite.InterpreterPool, signature: str, shapes: Any) -> Any:
        slot = take(self, signature, shapes)
        with lock:
            assert id(slot) not in seen["busy"], "an interpreter is used by two threads"
            seen["busy"].add(id(slot))
            seen["slots"].add(id(slot))
            seen["takes"] += 1
            seen["most"] = max(seen["most"], len(seen["busy"]))
        return slot

    def watched_give(self: tflite.InterpreterPool, slot: Any) -> None:
        with lock:
            seen["busy"].discard(id(slot))
        give(self, slot)

    monkeypatch.setattr(tflite.InterpreterPool, "take", watched_take)
    monkeypatch.setattr(tflite.InterpreterPool, "give", watched_give)
    yield seen


@pytest.mark.parametrize(("pools", "per_pool"), [(1, 2), (2, 1), (2, 2)])
@pytest.mark.parametrize("name", ["affine_bare", "affine_saved"])
def test_concurrent_calls_from_8_threads_are_all_correct(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, name: str, pools: int, per_pool: int
) -> None:
    loaded = tflite.load_tflite(models[name], pools, per_pool)
    signature = loaded.signatures["serving_default"]
    (output,) = signature.outputs

    def call(i: int) -> bool:
        x = rows(1 + i % 7, start=float(i))
        return bool(np.allclose(signature.runner({"x": x}, (output,))[output], 0.5 * x + 2.0))

    with watched_pool(monkeypatch) as seen, ThreadPoolExecutor(8) as threads:
        assert all(threads.map(call, range(400)))
    assert seen["takes"] == 400
    assert seen["most"] <= pools and len(seen["slots"]) <= pools


def test_a_large_request_is_split_across_interpreters(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = tflite.load_tflite(models["affine_saved"], 2, 4)  # chunks of ceil(500 / 4) rows
    x = rows(600)
    with watched_pool(monkeypatch) as seen:
        out = run(loaded, "serving_default", {"x": x})["y"]
    np.testing.assert_allclose(out, 0.5 * x + 2.0)
    assert seen["takes"] == 5  # 125, 125, 125, 125, 100 rows
    with watched_pool(monkeypatch) as seen:
        run(loaded, "serving_default", {"x": rows(125)})
    assert seen["takes"] == 1


def test_a_split_request_whose_outputs_are_not_per_row_runs_whole(
    models: dict[str, Path],
) -> None:
    loaded = tflite.load_tflite(models["total"], 2, 4)
    x = rows(600)
    (output,) = loaded.signatures["serving_default"].outputs
    np.testing.assert_allclose(run(loaded, "serving_default", {"x": x})[output], x.sum())


def test_no_interpreter_without_a_free_one(models: dict[str, Path]) -> None:
    loaded = tflite.load_tflite(models["affine_bare"], 1, 1)
    pool, _, _ = loaded.resource
    started, done = threading.Event(), threading.Event()

    def blocked() -> None:
        started.set()
        run(loaded, "serving_default", {"x": rows(2)})
        done.set()

    slot = pool.take("serving_default", ((2, 1),))
    thread = threading.Thread(target=blocked)
    thread.start()
    started.wait()
    assert not done.wait(0.3)  # waits while the only interpreter is taken
    pool.give(slot)
    thread.join(10)
    assert done.is_set()


def test_a_free_interpreter_last_run_with_the_same_shapes_is_preferred() -> None:
    slots = [tflite._Slot(interpreter=None) for _ in range(3)]
    slots[0].last["s"] = ((7, 1),)
    slots[1].last["s"] = ((1, 1),)
    pool = tflite.InterpreterPool(slots)
    for shapes, want in [(((7, 1),), 0), (((1, 1),), 1), (((3, 1),), 1)]:
        slot = pool.take("s", shapes)
        assert slot is slots[want]  # else the one given back last
        pool.give(slot)
    taken = [pool.take("s", ((7, 1),)) for _ in slots]
    assert sorted(map(id, taken)) == sorted(map(id, slots))


def test_error_messages_drop_source_locations() -> None:
    err = RuntimeError(
        "tensorflow/lite/kernels/gather.cc:194 pos < n was not true.Node number 0 (GATHER) "
        "failed to invoke.\n"
    )
    assert tflite.tflite_error_message(err) == (
        "pos < n was not true.; Node number 0 (GATHER) failed to invoke."
    )


# ----------------------------------------------------------------- loading


def copy_with_tflite(base: Path, content: bytes) -> Path:
    version = export_affine(base, 1, scale=3.0, offset=1.0)  # the SavedModel: 3x + 1
    (version / tflite.MODEL_FILE).write_bytes(content)  # the TFLite model: 0.5x + 2
    return version


@pytest.mark.parametrize(
    ("prefer", "has_tflite", "want"),
    [(True, True, 2.5), (False, True, 4.0), (True, False, 4.0)],
    ids=["preferred", "not-preferred", "no-model.tflite"],
)
def test_load_servable_prefers_model_tflite_only_when_asked(
    tmp_path: Path, prefer: bool, has_tflite: bool, want: float
) -> None:
    version = copy_with_tflite(tmp_path / "m", bare(affine))
    if not has_tflite:
        (version / tflite.MODEL_FILE).unlink()
    served = load_servable(
        VersionId("m", 1), version, RuntimeOptions(prefer_tflite=prefer, tflite_pools=2)
    )
    signature = served.signature("serving_default")
    out = served.run(signature, {"x": np.array([[1.0]], np.float32)})
    assert float(next(iter(out.values())).ravel()[0]) == pytest.approx(want)


def test_model_tflite_alone_needs_no_saved_model(models: dict[str, Path]) -> None:
    served = load_servable(VersionId("m", 1), models["affine_saved"], TFLITE)
    assert "serving_default" in served.signature_defs.signature_def


TFLITE = RuntimeOptions(prefer_tflite=True)
LOAD_TFLITE = functools.partial(load_servable, options=TFLITE)


def write_warmup(version: Path, *inputs: np.ndarray) -> None:
    path = version / "assets.extra" / "tf_serving_warmup_requests"
    path.parent.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for x in inputs:
            entry = prediction_log_pb2.PredictionLog()
            entry.predict_log.request.model_spec.name = "m"
            entry.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
            writer.write(entry.SerializeToString())


def test_warmup_replays_through_the_interpreters(tmp_path: Path) -> None:
    version = write(tmp_path / "1", bare(affine))
    write_warmup(version, rows(1), rows(7))
    served = warmed(LOAD_TFLITE, WarmupOptions(iterations=2))(VersionId("m", 1), version)
    assert served.signature("serving_default").inputs["x"].dtype == DT_FLOAT


def test_a_failing_warmup_request_fails_the_load(tmp_path: Path) -> None:
    version = write(tmp_path / "1", bare(affine))
    write_warmup(version, rows(2).astype(np.float64))
    with pytest.raises(LoadError, match=r"warmup record 0 .*expects dtype DT_FLOAT"):
        warmed(LOAD_TFLITE, WarmupOptions())(VersionId("m", 1), version)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"not a flatbuffer model at all" * 4, "not a valid Flatbuffer"), (b"", "the file is empty")],
)
def test_a_corrupt_model_tflite_is_a_load_error(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    version = write(tmp_path / "1", content)
    with pytest.raises(
        LoadError, match=r"loading TensorFlow Lite model .*model\.tflite failed: "
    ) as info:
        load_servable(VersionId("m", 1), version, TFLITE)
    assert reason in info.value.message
