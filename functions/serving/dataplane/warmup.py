"""Warmup: replaying ``assets.extra/tf_serving_warmup_requests`` on a version
before it is AVAILABLE.

The file is a TFRecord file of PredictionLog, as TF Serving writes and reads
it (saved_model_warmup.cc). Each record runs through the same servable-level
operations that serve requests, so a version is AVAILABLE only after every
kind of request in the file has run on it. A missing file is fine; a
malformed file, more than 1000 records, or a failing request fails the load
with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.serving.codecs import tensors
from functions.serving.dataplane import examples
from functions.serving.dataplane.predict import predict_with
from functions.serving.dataplane.types import ModelSelector, Task
from functions.serving.metrics import ServingMetrics, microseconds
from functions.serving.runtime.servable import Servable
from loader.errors import Code, LoadError, RollwayError
from loader.versions import VersionId

log = logging.getLogger(__name__)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000

LoadFn = Callable[[VersionId, Path], Servable]


@dataclass(frozen=True)
class WarmupOptions:
    """``--num_request_iterations_for_warmup`` (0 means 1) and
    ``--enable_signature_method_name_check``."""

    iterations: int = 1
    check_method: bool = False


def warmed(load: LoadFn, options: WarmupOptions, metrics: ServingMetrics | None = None) -> LoadFn:
    """``load``, then warmup: what the manager calls when warmup is on."""
    recorder = metrics or ServingMetrics()

    def load_and_warm(version_id: VersionId, path: Path) -> Servable:
        servable = load(version_id, path)
        started = time.monotonic()
        replayed = timed_warmup(servable, options, recorder)
        if replayed:
            log.info(
                "warmed up %s: %d request(s) in %.2fs",
                version_id,
                replayed,
                time.monotonic() - started,
            )
        return servable

    return load_and_warm


def timed_warmup(servable: Servable, options: WarmupOptions, metrics: ServingMetrics) -> int:
    started, status = time.monotonic(), "OK"
    try:
        return replay_warmup(servable, max(options.iterations, 1), options.check_method)
    except RollwayError as err:
        status = err.code.name
        raise
    finally:
        metrics.warmup_latency.labels(str(servable.path), status).observe(
            microseconds(time.monotonic() - started)
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


def _signature_name(request: Any) -> str:
    """The logged request's signature (its model_spec picks nothing else: the
    servable is the version being warmed up)."""
    if not request.HasField("model_spec"):
        raise LoadError("Missing ModelSpec", Code.INVALID_ARGUMENT)
    return str(request.model_spec.signature_name)


def _replay(servable: Servable, kind: str | None, entry: Any, check_method: bool) -> None:
    if kind == "predict_log":
        request = entry.predict_log.request
        inputs = request.inputs
        predict_with(
            servable,
            _signature_name(request),
            lambda specs: tensors.to_ndarrays(inputs),
            inputs.keys(),
            request.output_filter,
        )
    elif kind == "classify_log":
        request = entry.classify_log.request
        examples.classify_with(servable, _signature_name(request), request.input, check_method)
    elif kind == "regress_log":
        request = entry.regress_log.request
        examples.regress_with(servable, _signature_name(request), request.input, check_method)
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        tasks = [
            Task(ModelSelector(t.model_spec.name, signature_name=t.model_spec.signature_name),
                 t.method_name)
            for t in request.tasks
        ]  # fmt: skip
        examples.multi_inference_with(servable, tasks, request.input, check_method)
    else:
        raise LoadError(
            f"warmup log type {kind} is not supported (only predict, classify, regress and "
            "multi-inference logs are)",
            Code.UNIMPLEMENTED,
        )
