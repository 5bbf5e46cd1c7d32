"""A ``model.tflite`` served with TensorFlow Lite's interpreter, as TF Serving's
TfLiteSession serves it (servables/tensorflow/tflite_session.cc).

Signatures, from the first of these the model has:

1. TF Serving's: SignatureDefs stored in the model's ``signature_defs_metadata``
   (tflite/tools/signature/signature_def_util). Kept as stored; a tensor name
   the subgraph lacks is retried without its ``:N`` suffix (FixTfLiteTensorName).
2. The converter's (SignatureRunner keys, input and output names). TF Serving
   ignores these and generates (3) instead; rollway serves them by key, with the
   tensors' names, dtypes and shape signatures (-1: any size) as TensorInfos.
3. None: one ``serving_default`` (tensorflow/serving/predict) over the primary
   subgraph's tensors, each keyed by its name up to the first ``:`` and
   described by its name, dtype and dims (a dynamic batch reads 1), as TF Serving.

A run resizes (and reallocates) an interpreter only when an input's shape
changed, as TfLiteSession does; a free interpreter last run with the same
shapes is preferred, since a resize re-plans the graph.

Pools: ``pools`` interpreters per model (TF Serving's --num_tflite_pools is the
size of TfLiteSession's one interpreter pool). A call takes a free one, blocking
while all are busy, so no interpreter ever runs on two threads; TensorFlow
Lite releases the GIL while it invokes. With ``interpreters_per_pool`` > 1, TF
Serving splits a request larger than ceil(500 / interpreters_per_pool) rows
(or a one-input model's fixed batch size) into chunks run on several
interpreters at once, and so does rollway; TF Serving's scheduler also merges
concurrent small requests, which rollway leaves to --enable_batching. Chunks
are joined only when every output has a row per input row; otherwise the
request is run whole.

Contract of a runner as :data:`servable.Runner`; what TensorFlow Lite cannot
run is its own error (source locations dropped) as InvalidArgument.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from functions.serving.codecs import tensors
from functions.serving.codecs.specs import TensorSpec
from functions.serving.runtime.servable import Arrays, LoadedModel, Signature
from loader.errors import InvalidArgument

log = logging.getLogger(__name__)

MODEL_FILE = "model.tflite"
SIGNATURE_DEFS_METADATA = b"signature_defs_metadata"
DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
SPLIT_BATCH_ROWS = 500  # TF Serving's kInitialBatchSize

Shapes = tuple[tuple[int, ...], ...]


@dataclass(eq=False)
class _Slot:
    """One interpreter and what this module knows of its state."""

    interpreter: Any
    runners: dict[str, Any] = field(default_factory=dict)  # key -> SignatureRunner
    dims: dict[int, tuple[int, ...]] = field(default_factory=dict)  # input index -> dims
    last: dict[str, Shapes] = field(default_factory=dict)  # signature -> last input shapes

    def forget(self) -> None:
        """After a failure: assume nothing, so the next run resizes and reallocates."""
        self.dims.clear()
        self.last.clear()


class InterpreterPool:
    """Interpreters of one model, each used by one thread at a time."""

    def __init__(self, slots: list[_Slot]) -> None:
        self.size = len(slots)
        self._free = list(slots)
        self._lock = threading.Lock()
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()  # one per free slot
        for _ in slots:
            self._tokens.put(None)

    def take(self, signature: str, shapes: Shapes) -> _Slot:
        """A free slot, preferring one last run with ``shapes``; blocks while none is
        free. The caller must :meth:`give` it back."""
        self._tokens.get()
        with self._lock:
            free = self._free
            at = len(free) - 1
            for i in range(at, -1, -1):
                if free[i].last.get(signature) == shapes:
                    at = i
                    break
            return free.pop(at)

    def give(self, slot: _Slot) -> None:
        with self._lock:
            self._free.append(slot)
        self._tokens.put(None)


# Runs one signature on a slot: (slot, inputs, output aliases) -> outputs.
Invoke = Callable[[_Slot, Mapping[str, npt.NDArray[Any]], tuple[str, ...]], Arrays]


@dataclass(frozen=True, eq=False)
class TfLiteRunner:
    """A signature's :data:`servable.Runner` over an :class:`InterpreterPool`:
    ``invoke`` runs signature ``key`` on a free interpreter. With an ``executor``,
    a request of more than ``chunk_rows`` rows runs in chunks on several at once."""

    pool: InterpreterPool
    key: str
    invoke: Invoke
    chunk_rows: int = 0
    executor: ThreadPoolExecutor | None = None

    def __call__(self, inputs: Mapping[str, npt.NDArray[Any]], outputs: tuple[str, ...]) -> Arrays:
        ranges = self._chunks(inputs) if self.executor is not None else []
        if not ranges or self.executor is None:
            return self._run(inputs, outputs)
        parts = [{k: v[lo:hi] for k, v in inputs.items()} for lo, hi in ranges]
        rest = [self.executor.submit(self._run, part, outputs) for part in parts[1:]]
        try:
            results = [self._run(parts[0], outputs)]
        finally:
            wait_all(rest)
        results += [future.result() for future in rest]
        rows = [hi - lo for lo, hi in ranges]
        if not all(_has_rows(r[name], n) for r, n in zip(results, rows, strict=True)
                   for name in outputs):  # fmt: skip
            return self._run(inputs, outputs)  # outputs are not one row per input row
        return {name: np.concatenate([r[name] for r in results]) for name in outputs}

    def _chunks(self, inputs: Mapping[str, npt.NDArray[Any]]) -> list[tuple[int, int]]:
        sizes = {array.shape[0] if array.ndim else -1 for array in inputs.values()}
        if not self.chunk_rows or len(sizes) != 1:
            return []
        rows, step = sizes.pop(), self.chunk_rows
        return [(lo, min(lo + step, rows)) for lo in range(0, rows, step)] if rows > step else []

    def _run(self, inputs: Mapping[str, npt.NDArray[Any]], outputs: tuple[str, ...]) -> Arrays:
        shapes = tuple([inputs[name].shape for name in sorted(inputs)])
        slot = self.pool.take(self.key, shapes)
        try:
            result = self.invoke(slot, inputs, outputs)
            slot.last[self.key] = shapes
        except (RuntimeError, ValueError) as err:
            slot.forget()
            raise InvalidArgument(tflite_error_message(err)) from err
        except BaseException:
            slot.forget()
            raise
        finally:
            self.pool.give(slot)
        for name, value in result.items():
            if value.dtype.kind == "S":  # TFLite strings as the codecs carry them
                result[name] = value.astype(object)
        return result


def _has_rows(array: npt.NDArray[Any], rows: int) -> bool:
    return array.ndim > 0 and array.shape[0] == rows


_SOURCE_LOCATION = re.compile(r"\S+\.(?:cc|h|c):\d+ ")


def tflite_error_message(err: Exception) -> str:
    """TensorFlow Lite's error without the C++ source locations it starts lines with."""
    text = _SOURCE_LOCATION.sub("", str(err)).replace("Node number", "; Node number")
    parts = [part.strip() for part in re.split(r"\n|; ", text) if part.strip()]
    return "; ".join(parts) or type(err).__name__


def _signature_runner_call(key: str) -> Invoke:
    def invoke(
        slot: _Slot, inputs: Mapping[str, npt.NDArray[Any]], outputs: tuple[str, ...]
    ) -> Arrays:
        result = slot.runners[key](**inputs)
        return {name: result[name] for name in outputs}

    return invoke


def _primary_call(input_index: Mapping[str, int], output_index: Mapping[str, int]) -> Invoke:
    """Feeds and fetches the primary subgraph's tensors by index (TfLiteSession::Run)."""

    def invoke(
        slot: _Slot, inputs: Mapping[str, npt.NDArray[Any]], outputs: tuple[str, ...]
    ) -> Arrays:
        interpreter, resized = slot.interpreter, False
        for alias, index in input_index.items():
            shape = inputs[alias].shape
            if slot.dims.get(index) != shape:
                interpreter.resize_tensor_input(index, shape)
                slot.dims[index], resized = shape, True
        if resized:
            interpreter.allocate_tensors()
        for alias, index in input_index.items():
            interpreter.set_tensor(index, inputs[alias])
        interpreter.invoke()
        return {name: interpreter.get_tensor(output_index[name]) for name in outputs}

    return invoke


def load_tflite(path: Path, pools: int, interpreters_per_pool: int) -> LoadedModel:
    """Loads ``path / model.tflite`` into max(1, ``pools``) interpreters. TensorFlow
    Lite's exceptions (a corrupt file, an unknown op) propagate, and ValueError
    for a model rollway cannot serve; the caller maps them to a LoadError."""
    import tensorflow as tf

    content = (path / MODEL_FILE).read_bytes()
    if not content:
        raise ValueError("the file is empty")
    # tf.lite.Interpreter warns on every construction that LiteRT replaces it.
    warnings.filterwarnings("ignore", r"\s*Warning: tf\.lite\.Interpreter is deprecated")
    slots = [
        _Slot(tf.lite.Interpreter(model_content=content, num_threads=1))  # TF Serving's 1 thread
        for _ in range(max(1, pools))
    ]
    for slot in slots:
        slot.interpreter.allocate_tensors()  # as TF Serving: a model that cannot fails here
        for detail in slot.interpreter.get_input_details():
            slot.dims[int(detail["index"])] = tuple(int(n) for n in detail["shape"])
    stored = _stored_signature_defs(content)  # read once the interpreter verified the file
    native = {} if stored else slots[0].interpreter.get_signature_list()
    for slot in slots:
        slot.runners.update({key: slot.interpreter.get_signature_runner(key) for key in native})
    pool = InterpreterPool(slots)
    executor = ThreadPoolExecutor(pool.size, "tflite") if interpreters_per_pool > 1 else None
    default_chunk = -(-SPLIT_BATCH_ROWS // max(1, interpreters_per_pool)) if executor else 0
    if stored:
        defs, invokes = _from_stored(slots[0].interpreter, stored)
    elif native:
        defs, invokes = _from_runners(slots[0])
    else:
        log.warning("no signature def in %s: serving one generated from its tensors", path)
        defs, invokes = _generated(slots[0].interpreter)
    log.info("%s: TensorFlow Lite, %d interpreter(s)", path / MODEL_FILE, pool.size)
    signatures = {}
    for key, sig_def in defs.items():
        fixed = [spec.shape for spec in map(_spec, sig_def.inputs.values())]
        chunk = fixed[0][0] if len(fixed) == 1 and fixed[0] and fixed[0][0] > 1 else default_chunk
        signatures[key] = Signature(
            name=key,
            method_name=str(sig_def.method_name),
            inputs={k: _spec(v) for k, v in sig_def.inputs.items()},
            outputs={k: _spec(v) for k, v in sig_def.outputs.items()},
            runner=TfLiteRunner(pool, key, invokes[key], chunk if executor else 0, executor),
        )
    return LoadedModel(defs, signatures, resource=(pool, executor, content))


def _spec(info: Any) -> TensorSpec:
    known = info.HasField("tensor_shape") and not info.tensor_shape.unknown_rank
    return TensorSpec(
        int(info.dtype), tuple(d.size for d in info.tensor_shape.dim) if known else None
    )


def _tensor_info(detail: Mapping[str, Any], shape_key: str) -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    dtype = np.dtype(detail["dtype"])
    enum = tensors.dtype_enum(np.dtype(object) if dtype.kind == "S" else dtype)
    if not enum:
        raise ValueError(f"tensor {detail['name']!r} has type {dtype}, which rollway cannot carry")
    info = meta_graph_pb2.TensorInfo(name=detail["name"], dtype=enum)
    for size in detail[shape_key]:
        info.tensor_shape.dim.add(size=int(size))
    return info


def _generated(interpreter: Any) -> tuple[dict[str, Any], dict[str, Invoke]]:
    from tensorflow.core.protobuf import meta_graph_pb2

    sig_def = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
    index: dict[str, dict[str, int]] = {"inputs": {}, "outputs": {}}
    for kind, details in (("inputs", interpreter.get_input_details()),
                          ("outputs", interpreter.get_output_details())):  # fmt: skip
        for detail in details:
            alias = str(detail["name"]).split(":", 1)[0]
            if alias in index[kind]:
                raise ValueError(f"two {kind} of the model are both named {alias!r}")
            getattr(sig_def, kind)[alias].CopyFrom(_tensor_info(detail, "shape"))
            index[kind][alias] = int(detail["index"])
    invoke = _primary_call(index["inputs"], index["outputs"])
    return {DEFAULT_SIGNATURE: sig_def}, {DEFAULT_SIGNATURE: invoke}


def _from_runners(slot: _Slot) -> tuple[dict[str, Any], dict[str, Invoke]]:
    from tensorflow.core.protobuf import meta_graph_pb2

    defs: dict[str, Any] = {}
    for key, runner in slot.runners.items():
        sig_def = defs[key] = meta_graph_pb2.SignatureDef(method_name=PREDICT_METHOD)
        for alias, detail in runner.get_input_details().items():
            sig_def.inputs[alias].CopyFrom(_tensor_info(detail, "shape_signature"))
        for alias, detail in runner.get_output_details().items():
            sig_def.outputs[alias].CopyFrom(_tensor_info(detail, "shape_signature"))
    return defs, {key: _signature_runner_call(key) for key in defs}


def _from_stored(
    interpreter: Any, stored: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Invoke]]:
    """TF Serving's own SignatureDefs, resolved against the primary subgraph."""
    known = {
        "input": {d["name"]: int(d["index"]) for d in interpreter.get_input_details()},
        "output": {d["name"]: int(d["index"]) for d in interpreter.get_output_details()},
    }
    invokes: dict[str, Invoke] = {}
    for key, sig_def in stored.items():
        index: dict[str, dict[str, int]] = {"input": {}, "output": {}}
        for kind, infos in (("input", sig_def.inputs), ("output", sig_def.outputs)):
            for alias, info in infos.items():
                name = info.name if info.name in known[kind] else info.name.split(":", 1)[0]
                if name not in known[kind]:
                    raise ValueError(
                        f"signature {key!r}: {kind} {alias!r} references an unknown tensor "
                        f"{info.name!r}"
                    )
                info.name, index[kind][alias] = name, known[kind][name]
        invokes[key] = _primary_call(index["input"], index["output"])
    return stored, invokes


def _stored_signature_defs(content: bytes) -> dict[str, Any]:
    """The SignatureDefs in the model's ``signature_defs_metadata`` (a flexbuffer
    map of key -> serialized SignatureDef); empty when there is none."""
    from flatbuffers import flexbuffers  # type: ignore[import-untyped]
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(content, 0)
    for i in range(model.MetadataLength()):
        metadata = model.Metadata(i)
        if metadata.Name() != SIGNATURE_DEFS_METADATA:
            continue
        data = model.Buffers(metadata.Buffer()).DataAsNumpy()
        entries = flexbuffers.GetRoot(bytes(data)).AsMap
        result = {}
        for key, value in zip(entries.Keys, entries.Values, strict=True):
            sig_def = meta_graph_pb2.SignatureDef()
            sig_def.ParseFromString(bytes(value.AsStringBytes))
            result[key.AsKey] = sig_def
        return result
    return {}
