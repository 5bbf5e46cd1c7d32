"""Prometheus metrics with TensorFlow Serving's names, labels and buckets.

Metrics live in one prometheus-client registry. The text rendering follows TF
Serving's exporter rather than prometheus-client's, so existing dashboards
keep working: names are TF's paths with ``/`` turned into ``:``
(``:tensorflow:serving:request_count``), counters carry no ``_total`` suffix,
and only ``# TYPE`` lines are written. Latencies are in microseconds, with
TF's exponential buckets (10 * 1.8^i, 33 of them).

With ``--enable_batching`` the BatchingSession's queueing histogram and run
counter are exported as well. rollway adds ``:rollway:serving:model_version_state``,
a gauge of each version's ModelVersionStatus.State number (TF Serving exports none).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from loader.errors import RollwayError

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

DEFAULT_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = "text/plain; charset=utf-8"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))

REGISTRY = CollectorRegistry(auto_describe=True)

request_count = Counter(
    ":tensorflow:serving:request_count", "The total number of requests.",
    ["model_name", "status"], registry=REGISTRY,
)  # fmt: skip
request_latency = Histogram(
    ":tensorflow:serving:request_latency",
    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ["model_name", "API", "entrypoint"], buckets=LATENCY_BUCKETS_US, registry=REGISTRY,
)  # fmt: skip
runtime_latency = Histogram(
    ":tensorflow:serving:runtime_latency",
    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ["model_name", "API", "runtime"], buckets=LATENCY_BUCKETS_US, registry=REGISTRY,
)  # fmt: skip
warmup_latency = Histogram(
    ":tensorflow:serving:model_warmup_latency",
    "Distribution of wall time (in microseconds) for warming up the model.",
    ["model_path", "status"], buckets=LATENCY_BUCKETS_US, registry=REGISTRY,
)  # fmt: skip
load_attempt_count = Counter(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "The number of times a SavedModel was successfully loaded.",
    ["model_path", "status"], registry=REGISTRY,
)  # fmt: skip
load_latency = Counter(
    ":tensorflow:cc:saved_model:load_latency",
    "Latency in microseconds for SavedModels that were successfully loaded.",
    ["model_path"], registry=REGISTRY,
)  # fmt: skip
# TF Serving's BatchingSession metrics: queueing time per task (its buckets:
# 100 * 1.2^i us, 52 of them, ~1 s) and one count per batched TF call.
QUEUING_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))
BATCH_THREAD_POOL = "batch_threads"  # TF Serving's name for its shared batch scheduler pool
batching_queuing_latency = Histogram(
    ":tensorflow:serving:batching_session:queuing_latency",
    "Distribution of wall time spent (in microseconds) in queuing",
    ["thread_pool_name"], buckets=QUEUING_BUCKETS_US, registry=REGISTRY,
)  # fmt: skip
batching_wrapped_run_count = Counter(
    ":tensorflow:serving:batching_session:wrapped_run_count",
    "Total count of run calls on the wrapped session", registry=REGISTRY,
)  # fmt: skip
version_state = Gauge(
    ":rollway:serving:model_version_state",
    "ModelVersionStatus.State of each version (10 START ... 30 AVAILABLE ... 50 END).",
    ["model_name", "version"], registry=REGISTRY,
)  # fmt: skip


def microseconds(seconds: float) -> float:
    return seconds * 1e6


@contextmanager
def runtime(model_name: str, api: str) -> Iterator[None]:
    """Times the TensorFlow call of one request."""
    started = time.perf_counter()
    yield
    runtime_latency.labels(model_name, api, "TF1").observe(
        microseconds(time.perf_counter() - started)
    )


@contextmanager
def request(model_name: str, api: str, entrypoint: str) -> Iterator[None]:
    """Counts and times one request; the status is the error's canonical code name."""
    started, status = time.perf_counter(), "OK"
    try:
        yield
    except RollwayError as err:
        status = err.code.name
        raise
    except BaseException:
        status = "INTERNAL"
        raise
    finally:
        record_request(model_name, api, entrypoint, status, time.perf_counter() - started)


def record_request(model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
    """As TF Serving: every request is counted, successful ones are timed."""
    request_count.labels(model_name, status).inc()
    if status == "OK":
        request_latency.labels(model_name, api, entrypoint).observe(microseconds(seconds))


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return f"{value:.6g}"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + ",".join(escaped) + "}"


def render() -> bytes:
    """The registry in TF Serving's Prometheus text format."""
    lines: list[str] = []
    for family in REGISTRY.collect():
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name.endswith("_total"):
                name = name[: -len("_total")]
            labels = dict(sample.labels)
            if "le" in labels:
                labels["le"] = _number(float(labels["le"]))
            lines.append(f"{name}{_labels(labels)} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode()
