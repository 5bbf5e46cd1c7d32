"""Prometheus metrics with TensorFlow Serving's names, labels and buckets.

Metrics live in one prometheus-client registry per :class:`ServingMetrics`,
which the server creates and hands down. The text rendering follows TF
Serving's exporter rather than prometheus-client's, so existing dashboards
keep working: names are TF's paths with ``/`` turned into ``:``
(``:tensorflow:serving:request_count``), counters carry no ``_total`` suffix,
and only ``# TYPE`` lines are written. Latencies are in microseconds, with
TF's exponential buckets (10 * 1.8^i, 33 of them).

With ``--enable_batching`` the BatchingSession's queueing histogram and run
counter are exported as well. rollway adds ``rollway_serving_model_version_state``,
a gauge of each version's ModelVersionStatus.State number (TF Serving exports none).

With ``--workers N`` every process records into prometheus-client's
multiprocess files and a scrape of any worker sums them
(:func:`enable_multiprocess_metrics`).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import prometheus_client
import prometheus_client.values
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from loader.errors import RollwayError

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

DEFAULT_PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = "text/plain; charset=utf-8"
LATENCY_BUCKETS_US = tuple(10 * 1.8**i for i in range(33))

# TF Serving's BatchingSession metrics: queueing time per task (its buckets:
# 100 * 1.2^i us, 52 of them, ~1 s) and one count per batched TF call.
QUEUING_BUCKETS_US = tuple(100 * 1.2**i for i in range(52))
BATCH_THREAD_POOL = "batch_threads"  # TF Serving's name for its shared batch scheduler pool


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable


def enable_multiprocess_metrics() -> str:
    """--workers: every process's metrics go to files in a new directory, which
    any worker's scrape sums (prometheus-client's multiprocess mode). Call
    before the first metric exists; the workers inherit the directory through
    the environment. Returns the directory (the caller deletes it at exit)."""
    directory = tempfile.mkdtemp(prefix="rollway-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory
    # The library picks its value class when it is imported, from this variable;
    # this process imported it already, so it picks again.
    prometheus_client.values.ValueClass = prometheus_client.values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def _multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


def microseconds(seconds: float) -> float:
    return seconds * 1e6


class ServingMetrics:
    """Every metric ``rollway serve`` exports, in one registry the server creates
    and hands down to the components that record them (nothing registers at
    import, so a process may hold several, and workers can be aggregated)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry(auto_describe=True)
        self.request_count = Counter(
            ":tensorflow:serving:request_count", "The total number of requests.",
            ["model_name", "status"], registry=r,
        )  # fmt: skip
        self.request_latency = self._latency(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
        )
        self.runtime_latency = self._latency(
            ":tensorflow:serving:runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ["model_name", "API", "runtime"],
        )
        self.warmup_latency = self._latency(
            ":tensorflow:serving:model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ["model_path", "status"],
        )
        self.load_attempt_count = Counter(
            ":tensorflow:cc:saved_model:load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ["model_path", "status"], registry=r,
        )  # fmt: skip
        self.load_latency = Counter(
            ":tensorflow:cc:saved_model:load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ["model_path"], registry=r,
        )  # fmt: skip
        self.batching_queuing_latency = Histogram(
            ":tensorflow:serving:batching_session:queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ["thread_pool_name"], buckets=QUEUING_BUCKETS_US, registry=r,
        )  # fmt: skip
        self.batching_wrapped_run_count = Counter(
            ":tensorflow:serving:batching_session:wrapped_run_count",
            "Total count of run calls on the wrapped session", registry=r,
        )  # fmt: skip
        self.version_state = self._version_gauge(
            "rollway_serving_model_version_state",
            "ModelVersionStatus.State of each version (10 START ... 30 AVAILABLE ... 50 END).",
            mode="livemin",
        )
        # --assignments (core/assignments)
        self.generation_in_force = Gauge(
            "rollway_serving_assignment_generation",
            "The assignment generation each model serves.", ["model_name"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.cold_start_seconds = Gauge(
            "rollway_serving_cold_start_seconds",
            "Seconds from reading the assignments to every assigned version AVAILABLE.",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.fetch_bytes = self._version_gauge(
            "rollway_serving_fetch_bytes",
            "Bytes fetched from the store by each version's last fetch "
            "(intact cached files not counted).",
        )
        self.fetch_seconds = self._version_gauge(
            "rollway_serving_fetch_seconds",
            "Seconds fetching and verifying each version's files (last fetch).",
        )
        self.follow_failures = Counter(
            "rollway_serving_follow_failures",
            "Failed reads or swaps while following assignments (each is retried).",
            ["model_name"], registry=r,
        )  # fmt: skip

    def _latency(self, name: str, help: str, labels: list[str]) -> Histogram:
        """A latency in microseconds, with TF Serving's buckets."""
        return Histogram(name, help, labels, buckets=LATENCY_BUCKETS_US, registry=self.registry)

    def _version_gauge(
        self, name: str, help: str, mode: Literal["livemin", "livemax"] = "livemax"
    ) -> Gauge:
        """A gauge per model version; ``mode`` combines the --workers processes' values."""
        return Gauge(
            name, help, ["model_name", "version"], registry=self.registry, multiprocess_mode=mode
        )

    @contextmanager
    def runtime(self, model_name: str, api: str) -> Iterator[None]:
        """Times the TensorFlow call of one request."""
        started = time.perf_counter()
        yield
        self.runtime_latency.labels(model_name, api, "TF1").observe(
            microseconds(time.perf_counter() - started)
        )

    @contextmanager
    def request(self, model_name: str, api: str, entrypoint: str) -> Iterator[None]:
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
            self.record_request(model_name, api, entrypoint, status, time.perf_counter() - started)

    def record_request(
        self, model_name: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """As TF Serving: every request is counted, successful ones are timed."""
        self.request_count.labels(model_name, status).inc()
        if status == "OK":
            self.request_latency.labels(model_name, api, entrypoint).observe(microseconds(seconds))

    def sample(self, name: str, labels: dict[str, str]) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def render(self) -> bytes:
        """The registry in TF Serving's Prometheus text format; with --workers,
        every process's metrics: counters and histograms summed, a version's
        state the lowest of any process, the supervisor's gauges as it sets them."""
        if not _multiprocess():
            return render(self.registry)
        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        return render(summed)

    @staticmethod
    def process_exited(pid: int) -> None:
        """A worker exited: its gauges leave the sums (its counts stay)."""
        if _multiprocess():
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


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


def render(registry: CollectorRegistry) -> bytes:
    """``registry`` in TF Serving's Prometheus text format."""
    lines: list[str] = []
    for family in registry.collect():
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
