"""Serving what a store's assignments say (``rollway serve --assignments STORE``).

Startup (:meth:`AssignedModels.start`), bounded by ``--assignment_timeout_seconds``:
read each model's assignment (the newest generation, or ``--pin_generation``),
fetch every assigned version into ``<cache_dir>/<model>/<version>`` in parallel
(``assigned_store``: verified against the manifests the assignment names), then
start the core with one ``specific`` policy per model (exactly the assigned
versions) and the assignment's labels. Ready means every assigned version is
AVAILABLE. A failure names the model, version and cause.

Versions come only from assignments: the core's file-system source scans the
cache only when the config changes (never on a timer), and the cache holds only
assigned versions (others are deleted), so nothing else can be loaded or dropped.

:meth:`AssignedModels.swap` (called by ``follow``) moves a model to a newer
generation without failing a request, in TF Serving's AvailabilityPreservingPolicy
order: fetch the new versions, load them next to the old ones, move the labels,
then unload the versions the generation dropped. If the new versions do not
load, the previous generation's config is restored; it never stopped serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from functions.serving.core.assignments import follow
from functions.serving.core.assignments.store import (
    Fetcher,
    check_assignment,
    log_cold_start,
    read_assignments,
    versions_of,
)
from functions.serving.core.lifecycle import VersionState
from functions.serving.core.repository import CacheDir
from functions.serving.core.serving_core import ServingCore
from functions.serving.flags import ServerOptions
from functions.serving.metrics import ServingMetrics
from loader.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    RollwayError,
    error_for_code,
)
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.storage import Storage, open_storage

log = logging.getLogger("rollway.serve")

_NO_LABELS: Mapping[str, int] = {}


class StartupTimeout(DeadlineExceeded):
    """Startup ran past --assignment_timeout_seconds."""


class AssignedModels:
    def __init__(self, options: ServerOptions, metrics: ServingMetrics) -> None:
        self.options = options
        self._metrics = metrics
        self._wanted = [m.strip() for m in options.models.split(",") if m.strip()]
        self._timeout = options.assignment_timeout_seconds
        self._cache = CacheDir(options.cache_dir)
        self.cache = self._cache.path
        self._fetcher: Fetcher | None = None
        self._core: ServingCore[Any] | None = None
        self._served: dict[str, AssignmentChanged] = {}
        self._ready = threading.Event()
        self._doing = f"opening {options.assignments}"  # for the startup timeout message
        self._lock = threading.Lock()  # one swap at a time
        self._follower: follow.Follower | None = None

    @property
    def models(self) -> list[str]:
        """The models served (known once startup read the assignments)."""
        return sorted(self._served)

    @property
    def store(self) -> Storage:
        return self._started()[0].store

    def ready(self) -> bool:
        """True once startup loaded every assigned version (health waits for it)."""
        return self._ready.is_set()

    def generation(self, model: str) -> int:
        served = self._served.get(model)
        return served.generation if served is not None else 0

    def _started(self) -> tuple[Fetcher, ServingCore[Any]]:
        assert self._fetcher is not None and self._core is not None, "start() comes first"
        return self._fetcher, self._core

    # ------------------------------------------------------------------ startup

    def start(self, core: ServingCore[Any]) -> None:
        """Reads, fetches and loads every assigned version, then starts following.

        Raises RollwayError naming the model, version and cause, or StartupTimeout.
        The work runs on a daemon thread, so the bound holds even when storage or
        TensorFlow does not return (the caller then exits the process).
        """
        started = time.monotonic()
        errors: list[BaseException] = []
        done = threading.Event()

        def run() -> None:
            try:
                self._start(core, started)
            except BaseException as err:  # handed to the caller's thread
                errors.append(err)
            finally:
                done.set()

        threading.Thread(target=run, name="rollway-assigned-start", daemon=True).start()
        if not done.wait(self._timeout):
            raise StartupTimeout(
                f"the assigned versions were not ready within {self._timeout:g}s "
                f"(--assignment_timeout_seconds): still {self._progress(core)}"
            )
        if errors:
            if isinstance(errors[0], RollwayError):
                raise errors[0]
            raise Internal(f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
        self._ready.set()
        self._follower = follow.start(self, self.options, self._metrics)

    def _start(self, core: ServingCore[Any], started: float) -> None:
        self._core = core
        store = open_storage(self.options.assignments)
        self._fetcher = fetcher = Fetcher(store, self.cache, self._metrics)
        self._doing = f"reading the assignments in {store.uri} (no answer yet)"
        try:
            chosen = read_assignments(store, self._wanted, self.options.pin_generation)
        except RollwayError as err:
            raise error_for_code(
                err.code, f"cannot read the assignments in {store.uri}: {err.message}"
            ) from err
        wanted = []
        for model, assignment in sorted(chosen.items()):
            check_assignment(assignment)
            fetcher.prune(model, versions_of(assignment))
            wanted += [(model, v, sha) for v, sha in sorted(versions_of(assignment).items())]
        results = fetcher.fetch(wanted)
        self._doing = "loading"
        self._served = dict(chosen)
        core.start(self._specs())
        for model, assignment in chosen.items():
            self._metrics.generation_in_force.labels(model).set(assignment.generation)
        self._metrics.cold_start_seconds.set(time.monotonic() - started)
        log_cold_start(store, results, chosen, time.monotonic() - started, self._metrics)

    def _progress(self, core: ServingCore[Any]) -> str:
        if self._doing != "loading":
            fetching = self._fetcher.in_flight() if self._fetcher is not None else []
            return f"fetching {', '.join(fetching)}" if fetching else self._doing
        waiting = [
            f"{model}:{s.version} {s.state.name}"
            for model in sorted(self._served)
            for s in core.manager.statuses(model)
            if s.state is not VersionState.AVAILABLE
        ]
        return "loading " + (", ".join(waiting) or "the assigned versions")

    # ------------------------------------------------------------------- swap

    def _specs(
        self, model: str = "", versions: Iterable[int] = (), labels: Mapping[str, int] = _NO_LABELS
    ) -> list[ModelSpec]:
        """The config of the served generations, but ``model`` with these versions/labels."""
        specs = []
        for name, assignment in sorted(self._served.items()):
            chosen = versions_of(assignment).keys() if name != model else versions
            tags = dict(assignment.labels) if name != model else dict(labels)
            base = str(self.cache / name)
            specs.append(ModelSpec(name, base, VersionPolicy.specific(chosen), tags))
        return specs

    def _reload(self, model: str, versions: Iterable[int], labels: Mapping[str, int]) -> None:
        """Reloads the config with ``model`` changed; waits for its versions to load."""
        core = self._started()[1]
        core.reload(self._specs(model, versions, labels))
        failures = core.manager.wait_settled([model], self._timeout)
        if failures:
            details = "; ".join(f"{vid} due to error: {err.message}" for vid, err in failures)
            raise error_for_code(failures[0][1].code, f"did not become available: {details}")

    def swap(self, new: AssignmentChanged) -> bool:
        """Makes ``new`` the generation in force of its model; False when it is not
        newer than the one served. Raises RollwayError (the old one still serves)."""
        fetcher = self._started()[0]
        with self._lock:
            old = self._served.get(new.model)
            if old is None or new.generation <= old.generation:
                return False
            check_assignment(new)
            model, started = new.model, time.monotonic()
            before, after = versions_of(old), versions_of(new)
            for v in sorted(before.keys() & after.keys()):
                if before[v] != after[v]:
                    raise FailedPrecondition(
                        f"generation {new.generation} of model {model} names version {v} with "
                        f"manifest {after[v]}, but {before[v]} is served: staged versions "
                        "never change"
                    )
            added = sorted(after.keys() - before.keys())
            try:
                results = fetcher.fetch([(model, v, after[v]) for v in added])
                self._reload(model, before | after, old.labels)  # load next to the old ones
                self._reload(model, before | after, new.labels)  # move the labels
            except RollwayError:
                self._restore(old)
                raise
            self._served[model] = new
            self._reload(model, after, new.labels)  # unload what the generation dropped
            fetcher.prune(model, after)
        self._metrics.generation_in_force.labels(model).set(new.generation)
        seconds = time.monotonic() - started
        fields = {
            "event": "assignment_swap", "model": model, "generation": new.generation,
            "previous_generation": old.generation, "versions": sorted(after),
            "labels": dict(new.labels), "added": added,
            "removed": sorted(before.keys() - after.keys()),
            "bytes_fetched": sum(r.bytes_fetched for r in results.values()),
            "seconds": round(seconds, 3),
        }  # fmt: skip
        log.info(
            "model %s: generation %d in force (was %d): versions %s, labels %s; %.2fs",
            model, new.generation, old.generation, sorted(after), dict(new.labels), seconds,
            extra={"fields": fields},
        )  # fmt: skip
        return True

    def _restore(self, old: AssignmentChanged) -> None:
        """Back to ``old`` after a failed swap: what was added unloads and leaves the
        cache (so a retry fetches it again, and a changed copy is loaded again)."""
        try:
            self._reload(old.model, versions_of(old), old.labels)
        except RollwayError as err:  # old's versions never unloaded; only labels could lag
            log.error("restoring generation %d of %s: %s", old.generation, old.model, err.message)
        self._started()[0].prune(old.model, versions_of(old))

    def close(self) -> None:
        """Stops following; deletes the cache directory if this process made it."""
        if self._follower is not None:
            self._follower.stop()
        if self._fetcher is not None:
            self._fetcher.store.close()
        self._cache.close()
