"""Loading one version into a :class:`Servable`: a SavedModel into a TensorFlow
Session (``session_bundle``), or with ``--prefer_tflite_model`` a
``model.tflite`` into TensorFlow Lite interpreters (``tflite``). Warmup is the
data plane's (``dataplane.warmup``): it replays requests through the same
operations that serve them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from functions.serving.metrics import ServingMetrics, microseconds
from functions.serving.runtime import saved_model, tflite
from functions.serving.runtime.batching import BatchingOptions
from functions.serving.runtime.op_libraries import register_op_libraries
from functions.serving.runtime.servable import Servable
from functions.serving.runtime.session_bundle import load_session_bundle
from loader.errors import Code, LoadError
from loader.versions import VersionId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeOptions:
    """How every version is loaded (from the server's flags)."""

    tags: tuple[str, ...] = ("serve",)
    batching: BatchingOptions | None = None
    session_config: Any = None  # the ConfigProto of every Session (thread-pool flags)
    prefer_tflite: bool = False
    tflite_pools: int = 1
    tflite_interpreters_per_pool: int = 1


def load_servable(
    version_id: VersionId,
    path: Path,
    options: RuntimeOptions = RuntimeOptions(),
    metrics: ServingMetrics | None = None,
) -> Servable:
    """Loads one version; raises LoadError with the cause.

    With ``prefer_tflite``, a version holding ``model.tflite`` is served from
    that file alone (TensorFlow Lite's interpreter, ``tflite_pools`` of them;
    see tflite.py), as TF Serving's --prefer_tflite_model does: no SavedModel
    is read, or needed, then."""
    o, metrics = options, metrics or ServingMetrics()
    started = time.monotonic()
    register_op_libraries()  # TF Serving links these ops into its binary
    lite = path / tflite.MODEL_FILE
    use_tflite = o.prefer_tflite and lite.is_file()
    if not use_tflite:
        saved = saved_model.read_saved_model(path)
        meta_graph = saved_model.select_meta_graph(saved, o.tags, path)
    try:
        if use_tflite:
            loaded = tflite.load_tflite(path, o.tflite_pools, o.tflite_interpreters_per_pool)
        else:
            loaded = load_session_bundle(path, o.tags, meta_graph, o.session_config)
    except Exception as err:  # TF raises many types here; all mean "cannot load"
        metrics.load_attempt_count.labels(str(path), "fail").inc()
        what = f"TensorFlow Lite model {lite}" if use_tflite else f"SavedModel at {path}"
        raise LoadError(f"loading {what} failed: {err}", Code.INVALID_ARGUMENT) from err
    servable = Servable(version_id, path, loaded, o.batching, metrics)
    load_done = time.monotonic()
    metrics.load_attempt_count.labels(str(path), "success").inc()
    metrics.load_latency.labels(str(path)).inc(microseconds(load_done - started))
    log.info(
        "loaded %s from %s in %.2fs (signatures: %s)",
        version_id,
        path,
        load_done - started,
        ", ".join(sorted(servable.signatures)),
    )
    return servable
