"""The supervisor's view of its workers: what they serve, and how far they got.

:meth:`Fleet.load` is the load function of the supervisor's manager: it adds
the version to what every worker serves (a :class:`~protocol.Serve`) and
returns once every worker reports it AVAILABLE, or raises the first
worker's error (the manager's harness then retries, as for any load). So
the supervisor's manager, its version policy and its labels describe the
whole server, and the transition policy's availability-preserving order
holds across all workers: an old version leaves a worker only after the new
one is AVAILABLE in every worker.

:meth:`Fleet.publish` is the manager's change callback: it recomputes what
to serve and the server's :class:`~protocol.View` (statuses, readiness) and
sends each to every worker when it changed. Ready means the manager is
ready, the sources say so, and every worker is up with every version the
manager has AVAILABLE.

Lock order: the manager's lock, then the fleet's. Nothing here calls the
manager while holding the fleet's lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from functions.serving.core.lifecycle import VersionState, VersionStatus
from functions.serving.core.manager import Manager
from functions.serving.workers.protocol import (
    Reported,
    Serve,
    ServedVersion,
    States,
    View,
    error_of,
    report,
)
from loader.errors import Code, LoadError, RollwayError
from loader.versions import VersionId

log = logging.getLogger(__name__)

Key = tuple[str, int]
AVAILABLE = int(VersionState.AVAILABLE)
END = int(VersionState.END)
# The supervisor's versions that workers load or keep.
_SERVED_STATES = (VersionState.START, VersionState.LOADING, VersionState.AVAILABLE)


@dataclass(frozen=True)
class FleetVersion:
    """What the supervisor's manager holds: a version every worker loaded."""

    version_id: VersionId
    path: Path


@dataclass
class _Slot:
    index: int
    conn: Connection | None = None
    pid: int = 0
    seq: int = 0  # the last Serve this worker applied
    listening: bool = False  # its ports are open
    states: dict[str, dict[int, Reported]] = field(default_factory=dict)
    # Set while the worker is down: why, when no restart is coming (startup).
    down_error: str | None = None
    # Loads that the worker's death failed: key -> (attempt, message).
    deaths: dict[Key, tuple[int, str]] = field(default_factory=dict)

    def outcome(self, key: Key, attempt: int, seq: int) -> RollwayError | bool:
        """True once AVAILABLE here, an error once failed, False while pending."""
        death = self.deaths.get(key)
        if death is not None and death[0] == attempt:
            return LoadError(death[1], Code.UNAVAILABLE)
        if self.conn is None:
            if self.down_error is not None:
                return LoadError(self.down_error, Code.UNAVAILABLE)
            return False
        if self.seq < seq:
            return False
        state = self.states.get(key[0], {}).get(key[1])
        if state is None:
            return False
        if state[0] == AVAILABLE:
            return True
        if state[0] == END:
            return error_of(state) or LoadError(f"worker {self.index} unloaded it")
        return False


class Fleet:
    def __init__(self, count: int) -> None:
        self._cond = threading.Condition()
        self._slots = [_Slot(i) for i in range(count)]
        self._served: dict[Key, ServedVersion] = {}
        self._seq = 0
        self._serve = Serve(0, {}, {})
        self._view = View({}, False)
        self._manager: Manager[Any] | None = None
        self._sources_ready: Callable[[], bool] = lambda: True
        self._stopping = False
        self.restarts = False  # False during startup: a worker that dies fails it

    @property
    def size(self) -> int:
        return len(self._slots)

    def bind(self, manager: Manager[Any], sources_ready: Callable[[], bool]) -> None:
        self._manager = manager
        self._sources_ready = sources_ready

    # ------------------------------------------------------------ load path

    def load(self, version_id: VersionId, path: Path) -> FleetVersion:
        """Every worker loads ``path``; raises the first worker's error."""
        key = (version_id.model, version_id.version)
        with self._cond:
            previous = self._served.get(key)
            attempt = previous.attempt + 1 if previous is not None else 1
            self._served[key] = ServedVersion(str(path), attempt)
        seq = self.publish()
        with self._cond:
            while True:
                if self._stopping:
                    raise LoadError(f"{version_id}: the server is shutting down", Code.UNAVAILABLE)
                outcomes = [s.outcome(key, attempt, seq) for s in self._slots]
                for slot, outcome in zip(self._slots, outcomes, strict=True):
                    if isinstance(outcome, RollwayError):
                        raise LoadError(f"worker {slot.index}: {outcome.message}", outcome.code)
                if all(outcome is True for outcome in outcomes):
                    return FleetVersion(version_id, path)
                self._cond.wait(1.0)

    # ---------------------------------------------------------- publishing

    def publish(self) -> int:
        """Sends what changed of Serve and View to every worker; returns Serve's seq."""
        statuses, labels, manager_ready = self._read_manager()
        sources_ready = self._sources_ready()
        with self._cond:
            served_now = {
                name: {
                    s.version: self._served[(name, s.version)]
                    for s in model
                    if s.state in _SERVED_STATES and (name, s.version) in self._served
                }
                for name, model in statuses.items()
            }
            for key in [k for k in self._served if k[1] not in served_now.get(k[0], {})]:
                if not any(s.version == key[1] for s in statuses.get(key[0], ())):
                    del self._served[key]  # forgotten by the manager: a later load starts over
            labels = {name: labels.get(name, {}) for name in served_now}
            if served_now != self._serve.versions or labels != self._serve.labels:
                self._seq += 1
                self._serve = Serve(self._seq, served_now, labels)
                self._send_all(self._serve)
            available = {
                (name, s.version)
                for name, model in statuses.items()
                for s in model
                if s.state is VersionState.AVAILABLE
            }
            view = View(
                {n: [(s.version, report(s)) for s in model] for n, model in statuses.items()},
                manager_ready and sources_ready and self._caught_up(available),
            )
            if view != self._view:
                self._view = view
                self._send_all(view)
            self._cond.notify_all()
            return self._serve.seq

    def changed(self) -> None:
        """The manager's change callback."""
        self.publish()

    def ready(self) -> bool:
        with self._cond:
            return self._view.ready

    def _read_manager(
        self,
    ) -> tuple[dict[str, list[VersionStatus]], dict[str, dict[str, int]], bool]:
        manager = self._manager
        if manager is None:
            return {}, {}, False
        names = [spec.name for spec in manager.specs()]
        statuses = {name: manager.statuses(name) for name in names}
        return statuses, {name: manager.labels(name) for name in names}, manager.is_ready()

    def _caught_up(self, available: set[Key]) -> bool:
        for slot in self._slots:
            if slot.conn is None or not slot.listening or slot.seq < self._serve.seq:
                return False
            for name, version in available:
                state = slot.states.get(name, {}).get(version)
                if state is None or state[0] != AVAILABLE:
                    return False
        return True

    def _send_all(self, message: object) -> None:
        for slot in self._slots:
            if slot.conn is not None:
                _send(slot, message)

    # ------------------------------------------------------- worker events

    def attach(self, index: int, conn: Connection, pid: int) -> None:
        """A (re)started worker: it gets what to serve and the view at once."""
        with self._cond:
            slot = self._slots[index]
            slot.conn, slot.pid, slot.seq, slot.states = conn, pid, 0, {}
            slot.down_error, slot.listening = None, False
            _send(slot, self._serve)
            _send(slot, self._view)
        self.publish()

    def update(self, index: int, states: States) -> None:
        with self._cond:
            slot = self._slots[index]
            slot.seq, slot.states = states.seq, {n: dict(v) for n, v in states.states.items()}
            slot.deaths = {
                k: d for k, d in slot.deaths.items()
                if k not in self._served or self._served[k].attempt == d[0]
            }  # fmt: skip
            self._cond.notify_all()
        self.publish()

    def listening(self, index: int) -> None:
        with self._cond:
            self._slots[index].listening = True
        self.publish()

    def wait_ready(self) -> None:
        """Startup's last step: every worker listening, with the latest Serve
        applied. Raises if a worker exits meanwhile (restarts are off until then)."""
        with self._cond:
            while not all(
                s.conn is not None and s.listening and s.seq >= self._serve.seq for s in self._slots
            ):
                for slot in self._slots:
                    if slot.down_error is not None:
                        raise LoadError(slot.down_error, Code.UNAVAILABLE)
                if self._stopping:
                    raise LoadError("the server is shutting down", Code.UNAVAILABLE)
                self._cond.wait(1.0)

    def detach(self, index: int, why: str) -> None:
        """A worker exited: the loads it had not finished fail with ``why``."""
        with self._cond:
            slot = self._slots[index]
            for (name, version), served in self._served.items():
                state = slot.states.get(name, {}).get(version)
                if state is None or state[0] != AVAILABLE:
                    slot.deaths[(name, version)] = (served.attempt, why)
            slot.conn, slot.states, slot.seq, slot.listening = None, {}, 0, False
            if not self.restarts:
                slot.down_error = why
            self._cond.notify_all()
        self.publish()

    def stop(self) -> None:
        """Fails the loads still waiting; nothing more is sent."""
        with self._cond:
            self._stopping = True
            for slot in self._slots:
                slot.conn = None
            self._cond.notify_all()


def _send(slot: _Slot, message: object) -> None:
    assert slot.conn is not None
    try:
        slot.conn.send(message)
    except (OSError, ValueError):  # the worker is gone; its reader thread detaches it
        log.debug("worker %d: send failed", slot.index)
