"""Sources, and the file-system source that polls each model's base path.

A source tells the manager what to serve, model by model, as TF Serving's
sources do: each call states the model's whole aspired set (never a delta),
through :class:`AspiredVersions` (``Manager.set_aspired_versions``), so a
repeated or replayed call is harmless. Two sources exist: this one, and the
assignments source (``core.assignments``), which sends each generation's
versions and labels in one call.

Like TF Serving's FileSystemStoragePathSource, every poll reports the whole
set of versions found for each model to the manager, whose version policy
picks the aspired ones. Base paths are read
through one ``VersionRepository`` per model (``repository.py``), so every
scheme of the storage registry works: local paths, ``file://``, ``s3://``,
``hdfs://``, ``webhdfs://``; the repository decides which versions are
complete enough to report, and makes a version loadable when it loads
(:meth:`FileSystemSource.materialize`).

A base path that cannot be read (missing, an unreachable store, bad
credentials) is reported once per distinct message, never with a traceback,
and leaves the model's loaded versions alone; a base path that holds no
version unloads them. A version that is not complete yet is reported once
too, and is not announced, unless it already serves (a version rewritten in
place keeps serving).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from functions.serving.core.lifecycle import VersionState
from functions.serving.core.listing import Scan, reported
from functions.serving.core.manager import Manager
from functions.serving.core.repository import RepositoryOptions, VersionRepository
from functions.serving.core.version_ref import VersionRef
from loader import display
from loader.errors import Code, LoadError, RollwayError
from loader.model_config import ModelSpec

log = logging.getLogger(__name__)


class AspiredVersions(Protocol):
    """Where a source sends a model's whole desired state (the manager)."""

    def __call__(
        self,
        name: str,
        versions: Mapping[int, VersionRef],
        labels: Mapping[str, int] | None = None,
    ) -> None: ...


class FileSystemSource:
    def __init__(
        self,
        manager: Manager[Any],
        poll_wait_seconds: int,
        options: RepositoryOptions | None = None,
    ) -> None:
        self._manager = manager
        self._poll_wait_seconds = poll_wait_seconds
        self._options = options or RepositoryOptions()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        # (model, None) for a base path's message, (model, version) for a version's.
        self._reported: dict[tuple[str, int | None], str] = {}
        self._repos: dict[str, VersionRepository] = {}
        self._repos_lock = threading.Lock()  # the load threads read _repos

    def poll_once(self) -> None:
        with self._poll_lock:
            specs = self._manager.specs()
            self._retire({spec.name for spec in specs})
            for spec in specs:
                self._poll(spec)

    def _poll(self, spec: ModelSpec) -> None:
        name = spec.name
        try:
            repository = self._repository(spec)
            scan = repository.scan()
        except RollwayError as err:
            where = display.uri(spec.base_path)
            self._report((name, None), f"Could not read base path {where} for "
                         f"servable {name}: {err.message}", error=True)  # fmt: skip
            return
        except Exception as err:  # a backend's own failure (libhdfs, a JVM): still no traceback
            where = display.uri(spec.base_path)
            self._report((name, None), f"Could not read base path {where} for "
                         f"servable {name}: {type(err).__name__}: {err}", error=True)  # fmt: skip
            return
        if scan.missing:
            self._report((name, None), f"Could not find base path {repository.location} for "
                         f"servable {name}", error=True)  # fmt: skip
            return
        self._report_waiting(name, scan)
        if not scan.found and not scan.waiting:
            self._report((name, None), f"No versions of servable {name} found under base path "
                         f"{repository.location}. Did you forget to name your leaf directory "
                         "as a number (eg. '/1/')?")  # fmt: skip
        else:
            self._reported.pop((name, None), None)
        serving = [s.version for s in self._manager.statuses(name)
                   if s.state is VersionState.AVAILABLE]  # fmt: skip
        self._manager.set_versions(name, reported(scan, serving))
        # Under the poll lock, so no load can start meanwhile: START and LOADING count.
        repository.prune(
            s.version for s in self._manager.statuses(name) if s.state is not VersionState.END
        )

    def _report_waiting(self, name: str, scan: Scan) -> None:
        for key in [k for k in self._reported if k[0] == name and k[1] is not None]:
            if key[1] not in scan.waiting:
                del self._reported[key]
        for number, (ref, reason) in sorted(scan.waiting.items()):
            self._report((name, number), f"Version {number} of servable {name} is not loaded "
                         f"yet: {ref.location} is not complete: {reason}")  # fmt: skip

    def _repository(self, spec: ModelSpec) -> VersionRepository:
        with self._repos_lock:
            current = self._repos.get(spec.name)
        if current is not None and current.base_path == spec.base_path:
            return current
        repository = VersionRepository(spec.name, spec.base_path, self._options)
        with self._repos_lock:
            self._repos[spec.name] = repository
        if current is not None:
            current.close()
        return repository

    def _retire(self, configured: set[str]) -> None:
        with self._repos_lock:
            gone = [self._repos.pop(n) for n in list(self._repos) if n not in configured]
        for repository in gone:
            repository.close()

    def materialize(self, model: str, ref: VersionRef) -> Path:
        """The local directory to load ``ref`` of ``model`` from (fetched and
        verified as its repository says). Raises RollwayError."""
        with self._repos_lock:
            repository = self._repos.get(model)
        if repository is None:
            raise LoadError(f"model {model} has no base path being polled", Code.UNAVAILABLE)
        return repository.materialize(ref)

    def _report(self, key: tuple[str, int | None], message: str, error: bool = False) -> None:
        if self._reported.get(key) != message:
            self._reported[key] = message
            (log.error if error else log.warning)(message)

    def start(self) -> None:
        """Polls periodically when the poll interval is positive."""
        if self._poll_wait_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rollway-fs-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._poll_wait_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must survive anything storage throws
                log.exception("file system poll failed")

    def stop(self) -> None:
        """Stops polling; loads may still materialize versions until :meth:`close`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Releases every base path's store connections."""
        self.stop()
        self._retire(set())
