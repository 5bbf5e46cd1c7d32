"""Child processes of the local stack: started with their log, stopped by PID
(SIGTERM, then SIGKILL after a timeout), and the readiness and signal helpers
the demo and ``rollway up`` share."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from functions.serving.process import await_serving


class StackError(RuntimeError):
    """A part of the stack did not start; the message names it and its log."""


class Child:
    """One child process in its own session (so a terminal's Ctrl-C reaches only
    the parent, which stops the children in order), output to ``log_path``."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str]):
        self.name, self.args, self.log_path, self.env = name, list(args), log_path, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: int
    exit_code: int | None


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (HdfsCluster.stop, one process at a time)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def stop_all(
    parts: Sequence[tuple[str, subprocess.Popen[bytes], Callable[[], object]]],
) -> list[Stopped]:
    """Runs each part's stop in parallel; a part whose stop failed is SIGKILLed."""

    def run(stop: Callable[[], object]) -> None:
        with suppress(Exception):  # checked below: nothing survives
            stop()

    threads = [threading.Thread(target=run, args=(stop,)) for _, _, stop in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _, proc, _ in parts:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return [Stopped(name, proc.pid, proc.returncode) for name, proc, _ in parts]


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so that
    ``with LocalStack(...)`` unwinds and stops every child. Set explicitly: a
    shell that starts a process in the background leaves SIGINT ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored meanwhile (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def wait_serving(child: Child, address: str, timeout: float) -> None:
    """Until the model-aware gRPC health check says SERVING; StackError with the log
    if the process exits first or the time runs out."""
    serving = await_serving(address, timeout, lambda: not child.running())
    if serving is False:
        raise StackError(f"{child.name} exited before serving:\n{child.log_tail()}")
    if serving is None:
        raise StackError(f"{child.name} not SERVING after {timeout:g}s:\n{child.log_tail()}")
