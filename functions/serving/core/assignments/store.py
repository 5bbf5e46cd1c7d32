"""The store side of serving by assignment: which generation to serve, and its
versions fetched into the local cache (verified, measured, in parallel).

The cache is ``<cache_dir>/<model>/<version>``, laid out as a TF Serving base
path per model. ``loader.fetch`` proves every file against the manifest whose
sha256 the assignment names; intact cached files are reused and damaged ones
fetched again. The cache is this process's own (an emptyDir in a pod).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from functions.serving.metrics import ServingMetrics
from loader import assignments
from loader.errors import FailedPrecondition, Internal, NotFound, RollwayError, error_for_code
from loader.fetch import FetchResult, fetch_version
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.storage import Storage
from loader.versions import parse_version

log = logging.getLogger("rollway.serve")

FILE_WORKERS = 4  # files of one version fetched at once
VERSION_WORKERS = 8  # versions fetched at once


def versions_of(assignment: AssignmentChanged) -> dict[int, str]:
    """Version number -> the manifest sha256 the assignment names."""
    return {int(v.version): v.manifest_sha256 for v in assignment.versions}


def check_assignment(assignment: AssignmentChanged) -> None:
    """An assignment a server can carry out: versions, and labels only on them."""
    where = f"generation {assignment.generation} of model {assignment.model}"
    versions = versions_of(assignment)
    if not versions:
        raise FailedPrecondition(f"{where} assigns no version")
    for label, version in sorted(assignment.labels.items()):
        if version not in versions:
            raise FailedPrecondition(f"{where} labels version {version} {label!r}: not assigned")


def read_assignments(
    store: Storage, models: Sequence[str], pin_generation: int = 0
) -> dict[str, AssignmentChanged]:
    """The assignment to serve of each of ``models`` (default: every model in the
    store): the newest generation, or ``pin_generation`` of the only model."""
    names = list(models) or assignments.list_models(store)
    if not names:
        raise NotFound("no model has an assignment there")
    if pin_generation:
        if len(names) != 1:
            raise FailedPrecondition(
                f"--pin_generation={pin_generation} pins the generation of one model, but the "
                f"store assigns {len(names)} ({', '.join(names)}): name one with --models"
            )
        return {names[0]: pinned_generation(store, names[0], pin_generation)}
    chosen = {}
    for name in names:
        document = assignments.read(store, name)
        if document is None:
            raise NotFound(f"model {name} has no assignment")
        chosen[name] = document.current
    return chosen


def pinned_generation(store: Storage, model: str, generation: int) -> AssignmentChanged:
    """Generation ``generation`` of ``model``: its own object while the store keeps
    it, else the newest document's history; NotFound names the generations kept."""
    key = assignments.generation_key(model, generation)
    try:
        data = store.read_bytes(key, limit=assignments.MAX_DOCUMENT_BYTES)
        document = assignments.decode(data, model, store.join(key))
        if document.current.generation == generation:
            return document.current
    except NotFound:
        pass
    newest = assignments.read(store, model)
    if newest is None:
        raise NotFound(f"model {model} has no assignment")
    kept = [newest.current, *newest.history]
    for assignment in kept:
        if assignment.generation == generation:
            return assignment
    numbers = sorted(a.generation for a in kept)
    raise NotFound(
        f"generation {generation} of model {model} is not in the store: it keeps "
        f"generations {numbers[0]} to {numbers[-1]}"
    )


class Fetcher:
    """Fetches assigned versions from ``store`` into ``cache``; thread-safe."""

    def __init__(self, store: Storage, cache: Path, metrics: ServingMetrics) -> None:
        self.store = store
        self._metrics = metrics
        self.cache = cache
        self._lock = threading.Lock()
        self._fetching: set[str] = set()

    def in_flight(self) -> list[str]:
        """The fetches running now, for a timeout message."""
        with self._lock:
            return sorted(self._fetching)

    def fetch(self, wanted: Sequence[tuple[str, int, str]]) -> dict[tuple[str, int], FetchResult]:
        """Fetches (model, version, manifest sha256) in parallel; the first failure
        raises RollwayError naming the model, version and cause."""
        if not wanted:
            return {}
        pool = ThreadPoolExecutor(min(VERSION_WORKERS, len(wanted)), "rollway-fetch-version")
        try:
            futures = {pool.submit(self._one, m, v, sha): (m, v) for m, v, sha in wanted}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                error = future.exception() if future in done else None
                if error is not None:
                    raise error
            return {key: future.result() for future, key in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # the others are not needed now

    def _one(self, model: str, version: int, sha: str) -> FetchResult:
        where = self.store.join(f"{model}/{version}")
        with self._tracked(f"{model}:{version} from {where}"):
            try:
                result = fetch_version(
                    self.store, model, version, self.cache,
                    expected_manifest_sha256=sha, workers=FILE_WORKERS,
                )  # fmt: skip
            except RollwayError as err:
                raise error_for_code(
                    err.code,
                    f"model {model} version {version}: fetching {where} failed: {err.message}",
                ) from err
            except OSError as err:  # the local cache: disk full, permissions
                raise Internal(
                    f"model {model} version {version}: writing {self.cache} failed: {err}"
                ) from err
        self._metrics.fetch_bytes.labels(model, str(version)).set(result.bytes_fetched)
        self._metrics.fetch_seconds.labels(model, str(version)).set(result.seconds)
        return result

    @contextlib.contextmanager
    def _tracked(self, what: str) -> Iterator[None]:
        with self._lock:
            self._fetching.add(what)
        try:
            yield
        finally:
            with self._lock:
                self._fetching.discard(what)

    def prune(self, model: str, keep: Mapping[int, Any]) -> None:
        """Deletes the cached versions of ``model`` that are not in ``keep``."""
        base = self.cache / model
        for entry in os.scandir(base) if base.is_dir() else ():
            number = parse_version(entry.name)
            if number is not None and number not in keep and entry.is_dir():
                shutil.rmtree(entry.path, ignore_errors=True)


def log_cold_start(
    store: Storage,
    results: Mapping[tuple[str, int], FetchResult],
    chosen: Mapping[str, AssignmentChanged],
    seconds: float,
    metrics: ServingMetrics,
) -> None:
    """One line: each version's bytes and fetch, load and warmup seconds (the last
    two from the load metrics, which are keyed by the version's path)."""

    def registry_seconds(name: str, labels: dict[str, str]) -> float:
        value = metrics.sample(name, labels)
        return round((value or 0.0) / 1e6, 3)

    rows = []
    for (model, version), r in sorted(results.items()):
        path = str(r.path)
        rows.append({
            "model": model, "version": version, "generation": chosen[model].generation,
            "total_bytes": r.total_bytes, "bytes_fetched": r.bytes_fetched,
            "files_fetched": r.files_fetched, "files_reused": r.files_reused,
            "fetch_s": round(r.seconds, 3),
            "load_s": registry_seconds(":tensorflow:cc:saved_model:load_latency_total",
                                       {"model_path": path}),
            "warmup_s": registry_seconds(":tensorflow:serving:model_warmup_latency_sum",
                                         {"model_path": path, "status": "OK"}),
        })  # fmt: skip
    text = "; ".join(
        f"{r['model']}:{r['version']} fetched {r['bytes_fetched']} of {r['total_bytes']} bytes "
        f"in {r['fetch_s']}s, load {r['load_s']}s, warmup {r['warmup_s']}s"
        for r in rows
    )
    log.info(
        "cold start: %d version(s) from %s ready in %.2fs: %s",
        len(rows), store.uri, seconds, text,
        extra={"fields": {"event": "cold_start", "store": store.uri,
                          "seconds": round(seconds, 3), "versions": rows}},
    )  # fmt: skip
