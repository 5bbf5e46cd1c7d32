"""The messages between the supervisor and a worker, over a multiprocessing pipe.

Every message states a whole state, never a delta (as sources do), so a
worker that restarts needs only the latest :class:`Serve` and :class:`View`.
Errors cross as (code name, message) and come back as :class:`LoadError`
with the same code: exceptions with their own constructors do not pickle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from functions.serving.core.lifecycle import VersionState, VersionStatus
from loader.errors import Code, LoadError, RollwayError
from loader.model_config import ModelSpec

# (state number, error code name, error message); "" when the version has no error.
Reported = tuple[int, str, str]


@dataclass(frozen=True)
class ServedVersion:
    path: str  # the local directory every worker loads
    attempt: int  # the supervisor's load attempt: a new one makes a worker load it again


@dataclass(frozen=True)
class Serve:
    """Supervisor to worker: exactly these models, versions and labels."""

    seq: int
    versions: Mapping[str, Mapping[int, ServedVersion]]
    labels: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class View:
    """Supervisor to worker: the whole server's statuses and readiness."""

    statuses: Mapping[str, Sequence[tuple[int, Reported]]]
    ready: bool


@dataclass(frozen=True)
class States:
    """Worker to supervisor: its versions' states, after applying Serve ``seq``."""

    seq: int
    states: Mapping[str, Mapping[int, Reported]] = field(default_factory=dict)


@dataclass(frozen=True)
class Listening:
    """Worker to supervisor: its gRPC (and REST) ports are open."""


@dataclass(frozen=True)
class Reload:
    """Worker to supervisor: a HandleReloadConfigRequest, to run on the sources."""

    request_id: int
    specs: tuple[ModelSpec, ...]


@dataclass(frozen=True)
class Reloaded:
    """Supervisor to worker: the reload's outcome; ``error`` is (code, message) or None."""

    request_id: int
    error: tuple[str, str] | None


def report(status: VersionStatus) -> Reported:
    error = status.error
    return (int(status.state), error.code.name if error else "", error.message if error else "")


def error_of(reported: Reported | tuple[str, str]) -> RollwayError | None:
    code, message = reported[-2], reported[-1]
    if not code:
        return None
    return LoadError(str(message), Code[str(code)])


def status_of(version: int, reported: Reported) -> VersionStatus:
    return VersionStatus(version, VersionState(reported[0]), error_of(reported))
