"""The version manager: the mechanism that loads, serves and unloads versions.

Modelled on TensorFlow Serving's AspiredVersionsManager:

* A *source* tells the manager, per model, the whole set of versions it found
  (never deltas); the pure version policy (``loader.policy``) turns that into
  the *aspired* set.
* Which versions to load and unload, in what order, is the pure transition
  policy's (``core.policy``: TF Serving's AvailabilityPreservingPolicy, plus
  labels pinning their versions); the manager carries it out.
* Aspired versions are loaded on a thread pool, with retries as configured.
* Unlike TF Serving, a version that failed is loaded again once the content
  of its directory changes (its ``VersionRef`` fingerprint), so a half-copied
  version is never stranded.

The request path (:meth:`Manager.resolve`) takes no lock: it reads an
immutable snapshot that is replaced whenever a version changes state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from functions.serving.core import policy
from functions.serving.core.harness import LoadRetries, load_with_retries
from functions.serving.core.lifecycle import VersionState, VersionStatus
from functions.serving.core.policy import VersionView
from functions.serving.core.serving_map import ModelView, ServingMap
from functions.serving.core.version_ref import VersionRef
from functions.serving.metrics import ServingMetrics
from loader.errors import (
    Code,
    FailedPrecondition,
    LoadError,
    NotFound,
    RollwayError,
    error_for_code,
)
from loader.model_config import ModelSpec
from loader.policy import aspired_versions
from loader.versions import VersionId

log = logging.getLogger(__name__)


S = TypeVar("S")  # what a load returns: the runtime's servable (core never looks inside)
# Makes the version loadable (fetching it, if need be) and loads it; raises RollwayError.
LoadFn = Callable[[VersionId, VersionRef], S]


@dataclass(eq=False)
class _Version(Generic[S]):
    number: int
    ref: VersionRef
    state: VersionState = VersionState.START
    servable: S | None = None
    error: RollwayError | None = None
    fingerprint: str | None = None


@dataclass(eq=False)
class _Model(Generic[S]):
    spec: ModelSpec
    versions: dict[int, _Version[S]] = field(default_factory=dict)
    aspired: frozenset[int] | None = None  # None until the source reported once
    labels: dict[str, int] = field(default_factory=dict)
    # Labels a source asked for whose version is not AVAILABLE yet: each moves
    # when its version becomes AVAILABLE (until then the label keeps its target).
    pending_labels: dict[str, int] = field(default_factory=dict)
    configured: bool = True


def local_versions(load: Callable[[VersionId, Path], S]) -> LoadFn[S]:
    """A LoadFn for sources whose versions are already local directories (the
    assignments source's verified cache)."""

    def load_local(version_id: VersionId, ref: VersionRef) -> S:
        if ref.path is None:
            raise LoadError(f"{version_id} is not on local disk: {ref.location}")
        return load(version_id, ref.path)

    return load_local


def settle_error(failures: Sequence[tuple[VersionId, RollwayError]]) -> RollwayError | None:
    """What :meth:`Manager.wait_settled`'s failures mean to whoever waited (TF
    Serving's ServerCore words it so); None when nothing failed."""
    if not failures:
        return None
    details = "".join(f"{{{vid} due to error: {err.message}}}, " for vid, err in failures)
    return error_for_code(
        Code.UNKNOWN, f"{len(failures)} model version(s) did not become available: {{{details}}}"
    )


class Manager(Generic[S]):
    def __init__(
        self,
        load: LoadFn[S],
        retry: LoadRetries | None = None,
        num_load_threads: int = 1,
        allow_labels_for_unavailable: bool = False,
        on_change: Callable[[], None] | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._load = load
        self._metrics = metrics or ServingMetrics()
        self._retry = retry or LoadRetries()
        self._allow_unavailable_labels = allow_labels_for_unavailable
        self._on_change = on_change
        self._cond = threading.Condition()
        self._models: dict[str, _Model[S]] = {}
        self._serving: ServingMap[S] = ServingMap()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, num_load_threads), thread_name_prefix="rollway-load"
        )

    # ----------------------------------------------------------- configuration

    def set_models(self, specs: Iterable[ModelSpec]) -> list[str]:
        """Replaces the set of configured models; returns the names that are new.

        Models left out lose their aspired versions, so they are unloaded.
        Labels are set separately, with :meth:`set_labels`, once versions load.
        """
        specs = list(specs)
        wanted = {s.name for s in specs}
        added: list[str] = []
        with self._cond:
            for spec in specs:
                model = self._models.get(spec.name)
                if model is None or not model.configured:
                    self._models[spec.name] = model = _Model(spec, model.versions if model else {})
                    added.append(spec.name)
                model.spec, model.configured = spec, True
            for name, model in self._models.items():
                if name not in wanted and model.configured:
                    log.info("model %s left the config; unloading its versions", name)
                    model.configured, model.aspired, model.labels = False, frozenset(), {}
                    model.pending_labels = {}
                    self._unload_unaspired(model)
            self._publish()
        return added

    def specs(self) -> list[ModelSpec]:
        with self._cond:
            return [m.spec for m in self._models.values() if m.configured]

    def set_versions(self, name: str, found: Mapping[int, VersionRef]) -> None:
        """The file-system source's report: every version of ``name`` found on
        storage; the model's version policy picks the aspired ones."""
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.configured:
                return
            aspired = aspired_versions(found, model.spec.policy)
        self.set_aspired_versions(name, {v: found[v] for v in aspired})

    def set_aspired_versions(
        self,
        name: str,
        versions: Mapping[int, VersionRef],
        labels: Mapping[str, int] | None = None,
    ) -> None:
        """A source's whole desired state of ``name`` (never a delta): exactly these
        versions, and when ``labels`` is given, exactly these labels, each moved as
        soon as its version is AVAILABLE. The transition policy loads the new
        versions next to the old ones and unloads the old ones only once that
        leaves the model serving, and no label points to them."""
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.configured:
                return
            failed_fingerprints = {
                v: r.fingerprint
                for v in versions
                if (r := model.versions.get(v)) is not None
                and r.state is VersionState.END and r.error is not None
            }  # fmt: skip
        # A local version's fingerprint walks its directory: do it outside the lock.
        changed = {
            v for v, fingerprint in failed_fingerprints.items()
            if versions[v].content_fingerprint() != fingerprint
        }  # fmt: skip
        aspired = frozenset(versions)
        with self._cond:
            if not model.configured or self._closed.is_set():
                return
            views = {
                v: VersionView(r.state, r.error is not None, v in changed)
                for v, r in model.versions.items()
            }
            for number, ref in versions.items():
                record = model.versions.get(number)
                if record is not None and record.state is VersionState.LOADING:
                    # A load waiting to retry reads this ref: a remote version
                    # rewritten since the last attempt is retried at once.
                    record.ref = ref
            for number in policy.to_load(views, aspired):
                if number in changed:
                    log.info("%s changed on storage since it failed; loading it again",
                             VersionId(name, number))  # fmt: skip
                self._start_load(model, number, versions[number])
            model.aspired = aspired
            if labels is not None:
                model.labels = {k: v for k, v in model.labels.items() if k in labels}
                model.pending_labels = dict(labels)
                self._move_labels(model)
            self._unload_unaspired(model)
            self._publish()

    def set_labels(self, name: str, labels: Mapping[str, int]) -> None:
        """Applies a model's version labels, with TF Serving's rules.

        A label may point only to an AVAILABLE version. With
        ``--allow_version_labels_for_unavailable_models`` a *new* label (or one
        left unchanged) may point to any version; moving a label still needs
        a loaded target.
        """
        with self._cond:
            model = self._models.get(name)
            if model is None or not model.configured:
                raise NotFound(f"Could not find any versions of model {name}")
            for label, version in labels.items():
                record = model.versions.get(version)
                available = record is not None and record.state is VersionState.AVAILABLE
                previous = model.labels.get(label)
                tolerated = self._allow_unavailable_labels and previous in (None, version)
                if not available and not tolerated:
                    raise FailedPrecondition(
                        f"Request to assign label to version {version} of model {name}, "
                        "which is not currently available for inference"
                    )
            model.labels = dict(labels)
            self._unload_unaspired(model)  # a version the labels left may go now
            self._publish()

    # ------------------------------------------------------------ request path

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> S:
        """The servable a request names, or NotFound/InvalidArgument as TF Serving."""
        return self._serving.resolve(name, version, label)

    # ------------------------------------------------------------------ status

    def statuses(self, name: str) -> list[VersionStatus]:
        """Every version the manager knows of ``name``, newest first."""
        with self._cond:
            model = self._models.get(name)
            if model is None:
                return []
            return [
                VersionStatus(r.number, r.state, r.error)
                for r in sorted(model.versions.values(), key=lambda r: -r.number)
            ]

    def labels(self, name: str) -> dict[str, int]:
        return self._serving.labels(name)

    def is_ready(self) -> bool:
        """True when every configured model has at least one AVAILABLE version."""
        with self._cond:
            configured = [n for n, m in self._models.items() if m.configured]
            return bool(configured) and all(self._serving.serves(n) for n in configured)

    def wait_settled(
        self, names: Iterable[str], timeout: float | None = None
    ) -> list[tuple[VersionId, RollwayError]]:
        """Waits until every aspired version of ``names`` is AVAILABLE or has failed.

        Returns the failed versions with their errors. On timeout, versions
        still loading are returned too, with an error that says so.
        """
        names = list(names)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._settled(names):
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._closed.is_set():
                    break
                # In slices: a signal's handler runs only when the waiting (main)
                # thread runs bytecode again (server.py's _Stop.wait).
                self._cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            failures: list[tuple[VersionId, RollwayError]] = []
            for name in names:
                model = self._models.get(name)
                if model is None:
                    continue
                for number in sorted(model.aspired or ()):
                    record = model.versions[number]
                    if record.state is VersionState.END and record.error is not None:
                        failures.append((VersionId(name, number), record.error))
                    elif record.state is not VersionState.AVAILABLE:
                        failures.append((VersionId(name, number), LoadError(
                            f"still {record.state.name} after {timeout}s")))  # fmt: skip
            return failures

    def _settled(self, names: list[str]) -> bool:
        for name in names:
            model = self._models.get(name)
            if model is None or not model.configured:
                continue
            if model.aspired is None:
                return False
            for number in model.aspired:
                if model.versions[number].state not in (VersionState.AVAILABLE, VersionState.END):
                    return False
        return True

    def close(self) -> None:
        """Stops loading, and unloads everything."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            for model in self._models.values():
                for record in model.versions.values():
                    record.servable = None
                    if record.state is not VersionState.END:
                        record.state = VersionState.END
            self._serving = ServingMap()

    # ---------------------------------------------------------------- internal

    def _start_load(self, model: _Model[S], number: int, ref: VersionRef) -> None:
        record: _Version[S] = _Version(number, ref)
        model.versions[number] = record
        self._pool.submit(self._load_with_retries, model, record)

    def _still_wanted(self, model: _Model[S], record: _Version[S]) -> bool:
        with self._cond:
            return (
                not self._closed.is_set()
                and model.configured
                and model.versions.get(record.number) is record
                and (model.aspired is None or record.number in model.aspired)
            )

    def _load_with_retries(self, model: _Model[S], record: _Version[S]) -> None:
        version_id = VersionId(model.spec.name, record.number)
        with self._cond:
            record.state = VersionState.LOADING
        outcome = load_with_retries(
            lambda: self._load(version_id, record.ref),
            version_id,
            self._retry,
            wanted=lambda: self._still_wanted(model, record),
            # Late-bound: the newest ref a source reported (see set_aspired_versions).
            fingerprint=lambda: record.ref.content_fingerprint(),  # noqa: PLW0108
            closed=self._closed,
        )
        servable, error, fingerprint = outcome.servable, outcome.error, outcome.fingerprint
        with self._cond:
            if model.versions.get(record.number) is not record or self._closed.is_set():
                return  # superseded; drop whatever was loaded
            if servable is not None:
                record.state, record.servable, record.error = VersionState.AVAILABLE, servable, None
                log.info("%s is AVAILABLE", version_id)
            else:
                record.state, record.error, record.fingerprint = (
                    VersionState.END,
                    error,
                    fingerprint,
                )
                log.error("%s failed to load: %s", version_id, error.message)
            self._move_labels(model)
            self._unload_unaspired(model)
            self._publish()

    def _move_labels(self, model: _Model[S]) -> None:
        """Applies the pending labels whose version is AVAILABLE."""
        for label, number in list(model.pending_labels.items()):
            record = model.versions.get(number)
            if record is not None and record.state is VersionState.AVAILABLE:
                model.labels[label] = number
                del model.pending_labels[label]

    def _unload_unaspired(self, model: _Model[S]) -> None:
        """Carries out the policy's unloads (availability preserving; a version a
        label points to stays until the label moves)."""
        views = {v: VersionView(r.state) for v, r in model.versions.items()}
        pinned = frozenset(model.labels.values())
        for number in policy.to_unload(views, model.aspired or frozenset(), pinned):
            record = model.versions[number]
            record.state = VersionState.UNLOADING
            record.servable = None  # in-flight requests keep their own reference
            record.state = VersionState.END
            log.info("unloaded %s", VersionId(model.spec.name, number))
        # A version that is neither aspired nor loaded/loading is forgotten
        # only once it ended; its END status stays visible, as in TF Serving.

    def _publish(self) -> None:
        """Rebuilds the request path's snapshot. Call with the lock held."""
        views: dict[str, ModelView[S]] = {}
        for name, model in self._models.items():
            for number, record in model.versions.items():
                self._metrics.version_state.labels(name, str(number)).set(int(record.state))
            if not model.configured:
                continue
            available = {
                v: r.servable
                for v, r in model.versions.items()
                if r.state is VersionState.AVAILABLE and r.servable is not None
            }
            views[name] = ModelView(available, dict(model.labels))
        self._serving = ServingMap(views)
        self._cond.notify_all()
        if self._on_change is not None:
            self._on_change()
