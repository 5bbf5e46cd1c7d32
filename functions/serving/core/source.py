"""The file-system source: polls each model's base path for versions.

Like TF Serving's FileSystemStoragePathSource, every poll reports the whole
set of versions found for each model to the manager. A base path that cannot
be read is reported once (not on every poll) and leaves the model's loaded
versions alone; an empty base path unloads them.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from functions.serving.core.manager import Manager
from loader.versions import scan_versions

log = logging.getLogger(__name__)


class FileSystemSource:
    def __init__(self, manager: Manager[Any], poll_wait_seconds: int) -> None:
        self._manager = manager
        self._poll_wait_seconds = poll_wait_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()
        self._reported: dict[str, str] = {}

    def poll_once(self) -> None:
        with self._poll_lock:
            for spec in self._manager.specs():
                if not os.path.isdir(spec.base_path):
                    self._report(spec.name, f"Could not find base path {spec.base_path} for "
                                 f"servable {spec.name}", error=True)  # fmt: skip
                    continue
                found = scan_versions(spec.base_path)
                if not found:
                    self._report(spec.name, f"No versions of servable {spec.name} found under "
                                 f"base path {spec.base_path}. Did you forget to name your leaf "
                                 "directory as a number (eg. '/1/')?")  # fmt: skip
                else:
                    self._reported.pop(spec.name, None)
                self._manager.set_versions(spec.name, found)

    def _report(self, name: str, message: str, error: bool = False) -> None:
        if self._reported.get(name) != message:
            self._reported[name] = message
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
