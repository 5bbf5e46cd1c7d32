"""The assignments source: serving what a store's assignments say
(``rollway serve --assignments STORE``).

Like every source, it tells the manager each model's whole desired state: for
each generation, ONE ``set_aspired_versions`` call with exactly the assigned
versions (fetched and verified into ``<cache_dir>/<model>/<version>`` first:
``store``) and the assignment's labels. The manager's transition policy does
the rest in TF Serving's AvailabilityPreservingPolicy order: the new versions
load next to the old ones, each label moves once its version is AVAILABLE, and
the versions the generation dropped unload once nothing points to them.

Startup (:meth:`AssignedModels.start`) is bounded by ``--assignment_timeout_seconds``
and fails naming the model, version and cause; ready means every assigned
version is AVAILABLE. :meth:`AssignedModels.swap` (called by ``follow``) moves a
model to a newer generation without failing a request; if the new versions do
not load, the previous generation is aspired again (it never stopped serving).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from functions.serving.core.assignments import follow
from functions.serving.core.assignments.settings import AssignmentSettings
from functions.serving.core.assignments.store import (
    Fetcher,
    check_assignment,
    log_cold_start,
    read_assignments,
    versions_of,
)
from functions.serving.core.lifecycle import VersionState
from functions.serving.core.manager import Manager, settle_error
from functions.serving.core.repository import CacheDir
from functions.serving.core.source import AspiredVersions
from functions.serving.core.version_ref import VersionRef
from functions.serving.metrics import ServingMetrics
from loader.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    RollwayError,
    error_for_code,
)
from loader.model_config import ModelSpec
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from loader.storage import Storage, open_storage

log = logging.getLogger("rollway.serve")


class StartupTimeout(DeadlineExceeded):
    """Startup ran past --assignment_timeout_seconds."""


class AssignedModels:
    def __init__(self, settings: AssignmentSettings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self._metrics = metrics
        self._wanted = list(settings.models)
        self._timeout = settings.timeout_seconds
        self._cache = CacheDir(settings.cache_dir)
        self.cache = self._cache.path
        self._fetcher: Fetcher | None = None
        self._manager: Manager[Any] | None = None
        self._served: dict[str, AssignmentChanged] = {}
        self._ready = threading.Event()
        self._doing = f"opening {settings.store}"  # for the startup timeout message
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

    def _started(self) -> tuple[Fetcher, Manager[Any]]:
        assert self._fetcher is not None and self._manager is not None, "start() comes first"
        return self._fetcher, self._manager

    # ------------------------------------------------------------------ startup

    def start(self, manager: Manager[Any]) -> None:
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
                self._start(manager, started)
            except BaseException as err:  # handed to the caller's thread
                errors.append(err)
            finally:
                done.set()

        threading.Thread(target=run, name="rollway-assigned-start", daemon=True).start()
        if not done.wait(self._timeout):
            raise StartupTimeout(
                f"the assigned versions were not ready within {self._timeout:g}s "
                f"(--assignment_timeout_seconds): still {self._progress(manager)}"
            )
        if errors:
            if isinstance(errors[0], RollwayError):
                raise errors[0]
            raise Internal(f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
        self._ready.set()
        self._follower = follow.start(self, self.settings, self._metrics)

    def _start(self, manager: Manager[Any], started: float) -> None:
        self._manager = manager
        store = open_storage(self.settings.store)
        self._fetcher = fetcher = Fetcher(store, self.cache, self._metrics)
        self._doing = f"reading the assignments in {store.uri} (no answer yet)"
        try:
            chosen = read_assignments(store, self._wanted, self.settings.pin_generation)
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
        manager.set_models(ModelSpec(model, str(self.cache / model)) for model in sorted(chosen))
        for _, assignment in sorted(chosen.items()):
            self._aspire(assignment)
        if error := settle_error(manager.wait_settled(sorted(chosen))):
            raise error
        for model, assignment in chosen.items():
            self._metrics.generation_in_force.labels(model).set(assignment.generation)
        self._metrics.cold_start_seconds.set(time.monotonic() - started)
        log_cold_start(store, results, chosen, time.monotonic() - started, self._metrics)

    def _aspire(self, assignment: AssignmentChanged) -> None:
        """The one call per generation: its versions (in the cache) and labels."""
        model = assignment.model
        versions = {
            v: VersionRef.local(v, self.cache / model / str(v), has_manifest=True)
            for v in versions_of(assignment)
        }
        aspire: AspiredVersions = self._started()[1].set_aspired_versions
        aspire(model, versions, dict(assignment.labels))

    def _progress(self, manager: Manager[Any]) -> str:
        if self._doing != "loading":
            fetching = self._fetcher.in_flight() if self._fetcher is not None else []
            return f"fetching {', '.join(fetching)}" if fetching else self._doing
        waiting = [
            f"{model}:{s.version} {s.state.name}"
            for model in sorted(self._served)
            for s in manager.statuses(model)
            if s.state is not VersionState.AVAILABLE
        ]
        return "loading " + (", ".join(waiting) or "the assigned versions")

    # ------------------------------------------------------------------- swap

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
                self._aspire(new)
                error = settle_error(self._started()[1].wait_settled([model], self._timeout))
                if error is not None:
                    raise error
            except RollwayError:
                self._restore(old)
                raise
            self._served[model] = new
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
        """Back to ``old`` after a failed swap: its versions (which never unloaded)
        and labels are aspired again; what was added unloads and leaves the cache
        (so a retry fetches it again, and a changed copy is loaded again)."""
        self._aspire(old)
        self._started()[1].wait_settled([old.model], self._timeout)
        self._started()[0].prune(old.model, versions_of(old))

    def close(self) -> None:
        """Stops following; deletes the cache directory if this process made it."""
        if self._follower is not None:
            self._follower.stop()
        if self._fetcher is not None:
            self._fetcher.store.close()
        self._cache.close()
