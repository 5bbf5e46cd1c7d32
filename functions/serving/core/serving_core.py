"""ServingCore: the model configuration, the manager and the source, together.

It owns the two operations that change what is served: the initial load at
startup and a config reload (from ModelService.HandleReloadConfigRequest or
from polling ``--model_config_file``). Both are synchronous: they return once
the models they add have loaded, or raise naming what failed.

The manager loads a version through the source: the source's repository makes
it a local directory (fetched and verified where the base path says so), then
the server's load function loads that directory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic

from functions.serving.core.harness import LoadRetries
from functions.serving.core.manager import Manager, S, settle_error
from functions.serving.core.repository import RepositoryOptions, scheme_problem
from functions.serving.core.source import FileSystemSource
from functions.serving.core.version_ref import VersionRef
from functions.serving.metrics import ServingMetrics
from loader.errors import InvalidArgument, RollwayError
from loader.model_config import ModelSpec, read_model_server_config
from loader.versions import VersionId

log = logging.getLogger(__name__)


class ServingCore(Generic[S]):
    def __init__(
        self,
        load: Callable[[VersionId, Path], S],
        retry: LoadRetries,
        num_load_threads: int,
        allow_labels_for_unavailable: bool,
        file_system_poll_wait_seconds: int,
        on_change: Callable[[], None] | None = None,
        metrics: ServingMetrics | None = None,
        repositories: RepositoryOptions | None = None,
    ) -> None:
        """``load`` loads a local version directory; ``repositories`` says how base
        paths are read (the core owns its cache directory: ``close`` deletes it if
        it made it)."""

        def load_version(version_id: VersionId, ref: VersionRef) -> S:
            return load(version_id, self._source.materialize(version_id.model, ref))

        self._repositories = repositories or RepositoryOptions()
        self.manager: Manager[S] = Manager(
            load_version, retry, num_load_threads, allow_labels_for_unavailable, on_change, metrics
        )
        self._source = FileSystemSource(
            self.manager, file_system_poll_wait_seconds, self._repositories
        )
        self._poll_enabled = file_system_poll_wait_seconds >= 0
        self._reload_lock = threading.Lock()
        self._config_thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, specs: Sequence[ModelSpec]) -> None:
        """Loads the initial config; raises if any aspired version fails to load.
        Polling starts first: a base path not readable yet is polled until it is."""
        self._source.start()
        self._apply(specs, wait_for=[s.name for s in specs])

    def reload(self, specs: Sequence[ModelSpec]) -> None:
        """Replaces the config. Waits for newly added models (and for models whose
        labels must find their versions loaded), as TF Serving's ReloadConfig."""
        with self._reload_lock:
            known = {s.name for s in self.manager.specs()}
            self._apply(specs, wait_for=[s.name for s in specs if s.name not in known or s.labels])

    def _apply(self, specs: Sequence[ModelSpec], wait_for: list[str]) -> None:
        for spec in specs:
            problem = scheme_problem(spec.base_path)
            if problem:
                raise InvalidArgument(f"model {spec.name}: {problem}")
        self.manager.set_models(specs)
        if self._poll_enabled:
            self._source.poll_once()
        if error := settle_error(self.manager.wait_settled(wait_for)):
            raise error
        for spec in specs:
            self.manager.set_labels(spec.name, spec.labels)

    def watch_config_file(self, path: str, poll_wait_seconds: int) -> None:
        """Re-reads ``path`` every ``poll_wait_seconds`` and reloads when it changed."""
        if poll_wait_seconds <= 0:
            return
        current = tuple(self.manager.specs())

        def run() -> None:
            nonlocal current
            while not self._stop.wait(poll_wait_seconds):
                try:
                    specs = read_model_server_config(path)
                    if specs != current:
                        log.info("model config file %s changed; reloading", path)
                        self.reload(specs)
                        current = specs
                except RollwayError as err:
                    log.error("Failed to reload ModelServerConfig file %s: %s", path, err.message)
                except Exception:
                    log.exception("config file poll failed")

        self._config_thread = threading.Thread(target=run, name="rollway-config-poll", daemon=True)
        self._config_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._source.stop()
        self.manager.close()  # waits for the loads, which may still be fetching
        self._source.close()
        if self._repositories.cache is not None:
            self._repositories.cache.close()
