"""The worker processes: started, watched, restarted and drained.

Workers are started with multiprocessing's ``spawn`` (never ``fork``: the
supervisor's threads and any TensorFlow state must not be copied), each
with one pipe. A reader thread per worker passes its messages to the fleet
and runs its reload requests on the sources. A worker that exits while the
server runs is restarted, with a backoff while it keeps failing, and the
server is not ready until it serves again; the others keep answering.
During startup a worker that exits fails the startup instead (a port in
use, say, would otherwise restart forever).

Workers ignore SIGINT (a terminal's Ctrl-C reaches the whole process
group): only the supervisor decides when they drain, with SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from functions.serving.workers.fleet import Fleet
from functions.serving.workers.protocol import Listening, Reload, Reloaded, States
from loader.errors import RollwayError
from loader.model_config import ModelSpec

log = logging.getLogger(__name__)

# target(options, conn, index): a worker's main; it must be importable (spawn).
WorkerMain = Callable[[Any, Connection, int], None]
Reloader = Callable[[Sequence[ModelSpec]], None]
RESTART_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
# A worker up this long has its restart backoff reset.
HEALTHY_SECONDS = 60.0


class Workers:
    def __init__(
        self,
        fleet: Fleet,
        target: WorkerMain,
        options: Any,
        reload: Reloader,
        on_exit: Callable[[int], None] = lambda pid: None,
        on_startup_failure: Callable[[str], None] = lambda why: None,
    ) -> None:
        """``on_exit(pid)`` runs for every worker that exited (metrics clean-up);
        ``on_startup_failure(why)`` when one exits before startup completed."""
        self._fleet = fleet
        self._target = target
        self._options = options
        self._reload = reload
        self._on_exit = on_exit
        self._on_startup_failure = on_startup_failure
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._failures = [0] * fleet.size

    def start(self) -> None:
        for index in range(self._fleet.size):
            self._spawn(index)

    def enable_restarts(self) -> None:
        """After startup: from now on a worker that exits is restarted (and one
        that exited meanwhile is started again now)."""
        self._fleet.restarts = True
        with self._lock:
            dead = [i for i, p in self._processes.items() if p.exitcode is not None]
        for index in dead:
            self._spawn(index)

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._processes.values() if p.pid is not None]

    def _spawn(self, index: int) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=self._target,
            args=(self._options, child, index),
            name=f"rollway-worker-{index}",
        )
        with self._lock:
            current = self._processes.get(index)
            if self._stopping.is_set() or (current is not None and current.exitcode is None):
                return  # stopping, or started already (by the other restart path)
            process.start()
            self._processes[index] = process
        child.close()
        assert process.pid is not None
        log.info("worker %d started (pid %d)", index, process.pid)
        self._fleet.attach(index, parent, process.pid)
        threading.Thread(
            target=self._follow, args=(index, process, parent, time.monotonic()),
            name=f"rollway-worker-{index}-link", daemon=True,
        ).start()  # fmt: skip

    def _follow(self, index: int, process: BaseProcess, conn: Connection, started: float) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, States):
                self._fleet.update(index, message)
            elif isinstance(message, Listening):
                self._fleet.listening(index)
            elif isinstance(message, Reload):
                threading.Thread(target=self._run_reload, args=(conn, message), daemon=True).start()
        process.join(timeout=30)
        code = process.exitcode
        conn.close()
        if process.pid is not None:
            self._on_exit(process.pid)
        if self._stopping.is_set():
            return
        why = f"worker {index} (pid {process.pid}) exited with code {code}"
        log.error("%s", why)
        self._fleet.detach(index, why)
        if not self._fleet.restarts:
            self._on_startup_failure(why)
            return
        if time.monotonic() - started > HEALTHY_SECONDS:
            self._failures[index] = 0
        delay = RESTART_BACKOFF_SECONDS[
            min(self._failures[index], len(RESTART_BACKOFF_SECONDS) - 1)
        ]
        self._failures[index] += 1
        log.info("restarting worker %d in %.0f s", index, delay)
        if not self._stopping.wait(delay):
            self._spawn(index)

    def _run_reload(self, conn: Connection, request: Reload) -> None:
        error: tuple[str, str] | None = None
        try:
            self._reload(request.specs)
        except RollwayError as err:
            error = (err.code.name, err.message)
        except Exception as err:
            log.exception("reload failed")
            error = ("INTERNAL", f"internal error: {type(err).__name__}: {err}")
        try:
            conn.send(Reloaded(request.request_id, error))
        except (OSError, ValueError):
            log.debug("the worker that asked for a reload is gone")

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM to every worker (each drains its ports); SIGKILL to those still
        running after ``grace_seconds``; returns within about a second more."""
        self._stopping.set()
        self._fleet.stop()
        with self._lock:
            processes = list(self._processes.values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_seconds
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        stuck = [process for process in processes if process.is_alive()]
        for process in stuck:  # all at once: no worker's kill waits on another's
            log.warning("worker pid %s did not drain in %.1f s; killing it",
                        process.pid, grace_seconds)  # fmt: skip
            process.kill()
        for process in stuck:
            process.join(1.0)
