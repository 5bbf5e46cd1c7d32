"""The supervisor's fleet: what it tells workers, and when a load is done.

Pure logic over real multiprocessing pipes; the "workers" are this test's
ends of the pipes, answering as a worker's link does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

import pytest

from functions.serving.core.harness import LoadRetries
from functions.serving.core.lifecycle import VersionState
from functions.serving.core.manager import Manager, local_versions
from functions.serving.core.version_ref import VersionRef
from functions.serving.workers.fleet import Fleet, FleetVersion
from functions.serving.workers.protocol import Serve, States, View
from loader.errors import Code, LoadError, RollwayError
from loader.model_config import ModelSpec
from loader.versions import VersionId

AVAILABLE, END = int(VersionState.AVAILABLE), int(VersionState.END)
MODEL = "m"
M = TypeVar("M")


def _fleet(count: int) -> tuple[Fleet, list[Connection]]:
    fleet = Fleet(count)
    ends = []
    for index in range(count):
        ours, theirs = Pipe()
        fleet.attach(index, theirs, pid=1000 + index)
        ends.append(ours)
    return fleet, ends


def _drain(conn: Connection) -> list[object]:
    messages = []
    while conn.poll(0.05):
        messages.append(conn.recv())
    return messages


def _last(conn: Connection, kind: type) -> object:
    found = [m for m in _drain(conn) if isinstance(m, kind)]
    assert found, f"no {kind.__name__} sent"
    return found[-1]


def test_a_load_returns_once_every_worker_has_the_version(tmp_path: Path) -> None:
    fleet, ends = _fleet(2)
    result: list[FleetVersion | BaseException] = []
    loader = threading.Thread(
        target=lambda: result.append(fleet.load(VersionId(MODEL, 1), tmp_path))
    )
    loader.start()
    serves = []
    for end in ends:
        serve = _wait_for(end, Serve)
        assert serve.versions == {}  # no manager bound: nothing configured yet
        serves.append(serve)
    fleet.update(0, States(serves[0].seq, {MODEL: {1: (AVAILABLE, "", "")}}))
    loader.join(0.3)
    assert loader.is_alive()  # worker 1 has not reported yet
    fleet.update(1, States(serves[1].seq, {MODEL: {1: (AVAILABLE, "", "")}}))
    loader.join(5)
    assert result == [FleetVersion(VersionId(MODEL, 1), tmp_path)]


def test_a_worker_error_fails_the_load_with_its_code(tmp_path: Path) -> None:
    fleet, ends = _fleet(2)
    errors: list[RollwayError] = []

    def load() -> None:
        try:
            fleet.load(VersionId(MODEL, 1), tmp_path)
        except RollwayError as err:
            errors.append(err)

    loader = threading.Thread(target=load)
    loader.start()
    serve = _wait_for(ends[1], Serve)
    fleet.update(1, States(serve.seq, {MODEL: {1: (END, "DATA_LOSS", "bad bytes")}}))
    loader.join(5)
    assert [(e.code, e.message) for e in errors] == [(Code.DATA_LOSS, "worker 1: bad bytes")]


def test_a_report_older_than_the_serve_does_not_count(tmp_path: Path) -> None:
    fleet, ends = _fleet(1)
    done = threading.Event()

    def load() -> None:
        fleet.load(VersionId(MODEL, 1), tmp_path)
        done.set()

    loader = threading.Thread(target=load)
    loader.start()
    serve = _wait_for(ends[0], Serve)
    # A failure reported before this worker applied the latest Serve (an earlier attempt's):
    fleet.update(0, States(serve.seq - 1, {MODEL: {1: (END, "UNKNOWN", "old attempt")}}))
    assert not done.wait(0.3)
    fleet.update(0, States(serve.seq, {MODEL: {1: (AVAILABLE, "", "")}}))
    assert done.wait(5)


def test_a_worker_that_dies_during_startup_fails_the_load(tmp_path: Path) -> None:
    fleet, _ = _fleet(2)
    fleet.detach(0, "worker 0 (pid 1000) exited with code 1")
    with pytest.raises(LoadError, match=r"worker 0: worker 0 .* exited with code 1"):
        fleet.load(VersionId(MODEL, 1), tmp_path)


def test_the_view_is_ready_only_when_every_worker_serves_every_available_version(
    tmp_path: Path,
) -> None:
    fleet, ends = _fleet(2)
    manager: Manager[FleetVersion] = Manager(
        local_versions(fleet.load), LoadRetries(0, 0.0), on_change=fleet.changed
    )
    fleet.bind(manager, lambda: True)
    for index in (0, 1):
        fleet.listening(index)
    manager.set_models([ModelSpec(MODEL, str(tmp_path))])
    manager.set_aspired_versions(MODEL, {1: VersionRef.local(1, tmp_path)})
    for index, end in enumerate(ends):
        serve = _wait_for(end, Serve, lambda s: 1 in s.versions.get(MODEL, {}))
        assert serve.versions[MODEL][1].path == str(tmp_path)
        fleet.update(index, States(serve.seq, {MODEL: {1: (AVAILABLE, "", "")}}))
    assert manager.wait_settled([MODEL], timeout=5) == []
    assert fleet.ready()
    view = _last(ends[0], View)
    assert isinstance(view, View) and view.ready
    assert view.statuses[MODEL] == [(1, (AVAILABLE, "", ""))]
    fleet.detach(1, "worker 1 (pid 1001) exited with code -9")
    assert not fleet.ready()  # the other worker hears it: not ready until it is back
    view = _last(ends[0], View)
    assert isinstance(view, View) and not view.ready
    manager.close()


def _wait_for(conn: Connection, kind: type[M], match: Callable[[M], bool] | None = None) -> M:
    """The first message of ``kind`` (and matching ``match``) from the fleet."""
    while conn.poll(5):
        message = conn.recv()
        if isinstance(message, kind) and (match is None or match(message)):
            return message
    raise AssertionError(f"no {kind.__name__} sent")
