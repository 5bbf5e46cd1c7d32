"""Loading one version: read the SavedModel, load it, warm it up.

Warmup replays ``assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
PredictionLog, as TF Serving writes and reads it) through the same data plane
that serves requests, so a version is AVAILABLE only after every kind of
request in the file has run on it. A missing file is fine; a malformed file,
more than 1000 records, or a failing request fails the load with the reason.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from functions.serving import example_inference, inference, metrics, saved_model, tensors, tflite
from functions.serving.batching import BatchingOptions
from functions.serving.op_libraries import register_op_libraries
from functions.serving.proto_requests import selector_from_proto, tasks_from_proto
from functions.serving.servable import Servable
from functions.serving.session_bundle import load_session_bundle
from loader.errors import Code, LoadError, RollwayError
from loader.versions import VersionId

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000


def load_servable(
    version_id: VersionId,
    path: Path,
    tags: tuple[str, ...],
    warmup: bool,
    warmup_iterations: int,
    check_method: bool = False,
    batching: BatchingOptions | None = None,
    session_config: Any = None,
    prefer_tflite: bool = False,
    tflite_pools: int = 1,
    tflite_interpreters_per_pool: int = 1,
) -> Servable:
    """Loads and (optionally) warms up one version. Raises LoadError with the cause.

    ``session_config`` is the TensorFlow ConfigProto every version's Session
    gets (the thread-pool flags). With ``prefer_tflite``, a version holding
    ``model.tflite`` is served from that file alone (TensorFlow Lite's
    interpreter, ``tflite_pools`` of them; see tflite.py), as TF Serving's
    --prefer_tflite_model does: no SavedModel is read, or needed, then."""
    started = time.monotonic()
    register_op_libraries()  # TF Serving links these ops into its binary
    lite = path / tflite.MODEL_FILE
    use_tflite = prefer_tflite and lite.is_file()
    if not use_tflite:
        saved = saved_model.read_saved_model(path)
        meta_graph = saved_model.select_meta_graph(saved, tags, path)
    try:
        if use_tflite:
            loaded = tflite.load_tflite(path, tflite_pools, tflite_interpreters_per_pool)
        else:
            loaded = load_session_bundle(path, tags, meta_graph, session_config)
    except Exception as err:  # TF raises many types here; all mean "cannot load"
        metrics.load_attempt_count.labels(str(path), "fail").inc()
        what = f"TensorFlow Lite model {lite}" if use_tflite else f"SavedModel at {path}"
        raise LoadError(f"loading {what} failed: {err}", Code.INVALID_ARGUMENT) from err
    servable = Servable(version_id, path, loaded, batching)
    load_done = time.monotonic()
    metrics.load_attempt_count.labels(str(path), "success").inc()
    metrics.load_latency.labels(str(path)).inc(metrics.microseconds(load_done - started))
    replayed = _timed_warmup(servable, warmup_iterations, check_method) if warmup else 0
    log.info(
        "loaded %s from %s in %.2fs, warmup %d request(s) in %.2fs (signatures: %s)",
        version_id,
        path,
        load_done - started,
        replayed,
        time.monotonic() - load_done,
        ", ".join(sorted(servable.signatures)),
    )
    return servable


def _timed_warmup(servable: Servable, iterations: int, check_method: bool) -> int:
    started, status = time.monotonic(), "OK"
    try:
        return replay_warmup(servable, max(iterations, 1), check_method)
    except RollwayError as err:
        status = err.code.name
        raise
    finally:
        metrics.warmup_latency.labels(str(servable.path), status).observe(
            metrics.microseconds(time.monotonic() - started)
        )


def read_warmup_records(path: Path) -> list[bytes]:
    import tensorflow as tf

    try:
        dataset = tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS + 1)
        records = [bytes(r.numpy()) for r in dataset]
    except tf.errors.OpError as err:
        raise LoadError(
            f"warmup file {path} is not a valid TFRecord file: {err.message}",
            Code.INVALID_ARGUMENT,
        ) from err
    if len(records) > MAX_WARMUP_RECORDS:
        raise LoadError(
            f"warmup file {path} has more than {MAX_WARMUP_RECORDS} records", Code.INVALID_ARGUMENT
        )
    return records


def replay_warmup(servable: Servable, iterations: int, check_method: bool = False) -> int:
    """Replays the version's warmup file ``iterations`` times; returns requests run."""
    path = servable.path / WARMUP_FILE
    if not path.is_file():
        return 0
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for index, record in enumerate(read_warmup_records(path)):
        entry = prediction_log_pb2.PredictionLog()
        try:
            entry.ParseFromString(record)
        except Exception as err:
            raise LoadError(
                f"warmup record {index} in {path} is not a PredictionLog", Code.INVALID_ARGUMENT
            ) from err
        kind = entry.WhichOneof("log_type")
        try:
            for _ in range(iterations):
                _replay(servable, kind, entry, check_method)
                count += 1
        except RollwayError as err:
            raise LoadError(
                f"warmup record {index} ({kind}) in {path} failed: {err.message}", err.code
            ) from err
    return count


def _replay(servable: Servable, kind: str | None, entry: Any, check_method: bool) -> None:
    if kind == "predict_log":
        request = entry.predict_log.request
        signature = selector_from_proto(request).signature_name
        inference.predict_with(
            servable, signature, request.inputs, tensors.to_ndarray, request.output_filter
        )
    elif kind == "classify_log":
        request = entry.classify_log.request
        signature = selector_from_proto(request).signature_name
        example_inference.classify_with(servable, signature, request.input, check_method)
    elif kind == "regress_log":
        request = entry.regress_log.request
        signature = selector_from_proto(request).signature_name
        example_inference.regress_with(servable, signature, request.input, check_method)
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        example_inference.multi_inference_with(
            servable, tasks_from_proto(request), request.input, check_method
        )
    else:
        raise LoadError(
            f"warmup log type {kind} is not supported (only predict, classify, regress and "
            "multi-inference logs are)",
            Code.UNIMPLEMENTED,
        )
