"""A worker's end of the supervisor's pipe.

The worker's manager serves exactly what the latest :class:`Serve` says
(its own loads never retry: the supervisor's harness does, and each new
attempt changes the version's fingerprint so the worker loads it again).
Every change of the worker's versions goes back as :class:`States`. Status
and readiness questions are answered from the supervisor's latest
:class:`View`, so every worker describes the whole server.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from functions.serving.core.lifecycle import VersionStatus
from functions.serving.core.manager import Manager
from functions.serving.core.version_ref import VersionRef
from functions.serving.workers.protocol import (
    Listening,
    Reload,
    Reloaded,
    Serve,
    States,
    View,
    error_of,
    report,
    status_of,
)
from loader.errors import Unavailable
from loader.model_config import ModelSpec

log = logging.getLogger(__name__)


class SupervisorLink:
    def __init__(self, conn: Connection, index: int) -> None:
        self.index = index
        self._conn = conn
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._manager: Manager[Any] | None = None
        self._seq = 0
        self._models: frozenset[str] = frozenset()
        self._view = View({}, False)
        self._replies: dict[int, Reloaded] = {}
        self._ids = itertools.count(1)
        self._lost = False
        self._applied = False  # a first Serve arrived and was applied
        self._on_view: Callable[[], None] = lambda: None
        self._on_lost: Callable[[], None] = lambda: None

    def start(
        self, manager: Manager[Any], on_view: Callable[[], None], on_lost: Callable[[], None]
    ) -> None:
        """Starts following the supervisor; ``on_lost`` runs if it goes away."""
        self._manager, self._on_view, self._on_lost = manager, on_view, on_lost
        threading.Thread(target=self._read, name="rollway-supervisor-link", daemon=True).start()

    def wait_loaded(self) -> None:
        """Waits for the supervisor's first Serve and for its versions to load (or
        fail). A worker opens its ports only then: with SO_REUSEPORT, a listening
        worker gets its share of new connections at once, so a restarted worker
        must not listen before it serves what the others serve."""
        with self._cond:
            while not self._applied and not self._lost:
                self._cond.wait(1.0)
            models = sorted(self._models)
        if self._manager is not None and models:
            self._manager.wait_settled(models)

    def listening(self) -> None:
        """Tells the supervisor this worker's ports are open."""
        self._send(Listening())

    # ------------------------------------------------------- what to answer

    def statuses(self, name: str) -> list[VersionStatus]:
        with self._cond:
            reported = self._view.statuses.get(name, ())
        return [status_of(version, state) for version, state in reported]

    def ready(self) -> bool:
        with self._cond:
            return self._view.ready and not self._lost

    def reload(self, specs: Sequence[ModelSpec]) -> None:
        """Runs HandleReloadConfigRequest on the supervisor's sources; raises its error."""
        request_id = next(self._ids)
        self._send(Reload(request_id, tuple(specs)))
        with self._cond:
            while request_id not in self._replies:
                if self._lost:
                    raise Unavailable("the supervisor process is gone")
                self._cond.wait(1.0)
            reply = self._replies.pop(request_id)
        if reply.error is not None and (error := error_of(reply.error)) is not None:
            raise error

    # ------------------------------------------------------------ reporting

    def report(self) -> None:
        """The manager's change callback: sends this worker's version states."""
        manager = self._manager
        if manager is None:
            return
        with self._cond:
            seq, models = self._seq, self._models
        states = {name: {s.version: report(s) for s in manager.statuses(name)} for name in models}
        self._send(States(seq, states))

    def _send(self, message: object) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                log.debug("worker %d: the supervisor is gone", self.index)

    # -------------------------------------------------------------- reading

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message)
            except Exception:  # one bad message must not stop the worker following
                log.exception("worker %d: could not apply %s", self.index, type(message).__name__)
        with self._cond:
            self._lost = True
            self._cond.notify_all()
        log.error("worker %d: the supervisor process is gone; shutting down", self.index)
        self._on_lost()

    def _handle(self, message: object) -> None:
        if isinstance(message, Serve):
            self._apply(message)
        elif isinstance(message, View):
            with self._cond:
                self._view = message
            self._on_view()
        elif isinstance(message, Reloaded):
            with self._cond:
                self._replies[message.request_id] = message
                self._cond.notify_all()

    def _apply(self, serve: Serve) -> None:
        manager = self._manager
        assert manager is not None
        models = frozenset(serve.versions)
        with self._cond:
            self._models = models
        if models != {spec.name for spec in manager.specs()}:
            manager.set_models(ModelSpec(name, "(supervisor)") for name in sorted(models))
        for name, versions in serve.versions.items():
            refs = {
                number: VersionRef(
                    number, served.path, Path(served.path).name, str(Path(served.path).parent),
                    fingerprint=f"attempt {served.attempt}", path=Path(served.path),
                )
                for number, served in versions.items()
            }  # fmt: skip
            manager.set_aspired_versions(name, refs, serve.labels.get(name, {}))
        with self._cond:
            self._seq, self._applied = serve.seq, True
            self._cond.notify_all()
        self.report()

    def close(self) -> None:
        self._conn.close()
