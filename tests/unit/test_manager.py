"""functions.serving.core.manager: the version lifecycle, driven by a fake loader.

The Manager only stores what the load function returns, so a small stand-in
object replaces a real SavedModel here; the integration tests load real ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from functions.serving.core.harness import LoadRetries
from functions.serving.core.lifecycle import VersionState, VersionStatus
from functions.serving.core.manager import Manager
from functions.serving.core.version_ref import VersionRef
from loader.errors import Code, FailedPrecondition, InvalidArgument, LoadError, NotFound
from loader.model_config import ModelSpec
from loader.policy import VersionPolicy
from loader.versions import VersionId, scan_versions

TIMEOUT = 10.0


@dataclass(frozen=True)
class Loaded:
    """Stands in for a Servable: remembers what was loaded."""

    version_id: VersionId
    path: Path


class FakeLoader:
    """A load function whose failures and pauses the test decides."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.calls: list[VersionId] = []
        self.failing: dict[VersionId, BaseException] = {}
        self.fail_times: dict[VersionId, int] = {}
        self.gates: dict[VersionId, threading.Event] = {}

    def fail(self, model: str, version: int, error: BaseException | None = None) -> None:
        self.failing[VersionId(model, version)] = error or LoadError(
            f"cannot load {model}:{version}", Code.DATA_LOSS
        )

    def succeed(self, model: str, version: int) -> None:
        self.failing.pop(VersionId(model, version), None)

    def gate(self, model: str, version: int) -> threading.Event:
        return self.gates.setdefault(VersionId(model, version), threading.Event())

    def release_all(self) -> None:
        for gate in list(self.gates.values()):
            gate.set()

    def count(self, model: str, version: int) -> int:
        with self._lock:
            return self.calls.count(VersionId(model, version))

    def wait_calls(self, n: int) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: len(self.calls) >= n, TIMEOUT)

    def __call__(self, version_id: VersionId, ref: VersionRef) -> Any:
        with self._lock:
            self.calls.append(version_id)
            self._lock.notify_all()
        gate = self.gates.get(version_id)
        if gate is not None:
            assert gate.wait(TIMEOUT), f"gate for {version_id} never opened"
        with self._lock:
            left = self.fail_times.get(version_id, 0)
            if left:
                self.fail_times[version_id] = left - 1
                raise LoadError(f"transient failure of {version_id}", Code.UNAVAILABLE)
        error = self.failing.get(version_id)
        if error is not None:
            raise error
        assert ref.path is not None
        return Loaded(version_id, ref.path)


@pytest.fixture
def fake() -> FakeLoader:
    return FakeLoader()


MakeManager = Callable[..., Manager]


@pytest.fixture
def make_manager(fake: FakeLoader) -> Iterator[MakeManager]:
    made: list[Manager] = []

    def make(**kwargs: Any) -> Manager:
        kwargs.setdefault("retry", LoadRetries(0, 0.0))
        manager = Manager(fake, **kwargs)
        made.append(manager)
        return manager

    yield make
    fake.release_all()
    for manager in made:
        manager.close()


@pytest.fixture
def manager(make_manager: MakeManager) -> Manager:
    return make_manager()


def scan(base: Path) -> dict[int, VersionRef]:
    """The version directories under ``base``, as the source reports local ones."""
    return {number: VersionRef.local(number, path) for number, path in scan_versions(base).items()}


def _versions(base: Path, *numbers: int) -> dict[int, VersionRef]:
    """Creates version directories (each with one file) and scans them."""
    for number in numbers:
        path = base / str(number)
        path.mkdir(parents=True, exist_ok=True)
        (path / "saved_model.pb").write_bytes(f"version {number}".encode())
    return scan(base)


def _spec(name: str, base: Path, policy: VersionPolicy | None = None) -> ModelSpec:
    return ModelSpec(name, str(base), policy or VersionPolicy.latest(1))


def _states(manager: Manager, name: str) -> list[tuple[int, VersionState]]:
    return [(s.version, s.state) for s in manager.statuses(name)]


def _settle(manager: Manager, *names: str) -> list[tuple[VersionId, Any]]:
    return manager.wait_settled(list(names), timeout=TIMEOUT)


def _served(
    manager: Manager, name: str, version: int | None = None, label: str | None = None
) -> int:
    loaded = manager.resolve(name, version, label)
    assert isinstance(loaded, Loaded)
    assert loaded.version_id.model == name
    return loaded.version_id.version


# ----------------------------------------------------------------- loading


def test_set_models_returns_the_new_names(manager: Manager, tmp_path: Path) -> None:
    a, b = _spec("a", tmp_path / "a"), _spec("b", tmp_path / "b")
    assert manager.set_models([a, b]) == ["a", "b"]
    assert manager.set_models([a, b]) == []
    assert manager.set_models([b]) == []
    assert manager.set_models([a, b]) == ["a"]
    assert [s.name for s in manager.specs()] == ["a", "b"]


def test_loads_the_latest_version(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    found = _versions(base, 1, 2)
    manager.set_versions("m", found)
    assert _settle(manager, "m") == []
    assert fake.calls == [VersionId("m", 2)]
    assert _served(manager, "m") == 2
    assert _served(manager, "m", 2) == 2
    loaded = manager.resolve("m")
    assert isinstance(loaded, Loaded)
    assert loaded.path == found[2].path
    assert _states(manager, "m") == [(2, VersionState.AVAILABLE)]


def test_version_zero_is_a_version(manager: Manager, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 0))
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 0
    assert _served(manager, "m", 0) == 0
    assert manager.is_ready()
    manager.set_labels("m", {"stable": 0})
    assert _served(manager, "m", label="stable") == 0


def test_loads_all_versions(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    manager.set_versions("m", _versions(base, 1, 2, 3))
    assert _settle(manager, "m") == []
    assert sorted(fake.calls) == [VersionId("m", v) for v in (1, 2, 3)]
    assert _served(manager, "m") == 3
    assert [_served(manager, "m", v) for v in (1, 2, 3)] == [1, 2, 3]


def test_loads_specific_versions(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.specific([1, 3, 7]))])
    manager.set_versions("m", _versions(base, 1, 2, 3))
    assert _settle(manager, "m") == []
    assert sorted(fake.calls) == [VersionId("m", 1), VersionId("m", 3)]
    assert _states(manager, "m") == [(3, VersionState.AVAILABLE), (1, VersionState.AVAILABLE)]


def test_latest_two_then_a_newer_version(manager: Manager, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.latest(2))])
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []
    manager.set_versions("m", _versions(base, 3))
    assert _settle(manager, "m") == []
    assert _states(manager, "m") == [
        (3, VersionState.AVAILABLE),
        (2, VersionState.AVAILABLE),
        (1, VersionState.END),
    ]


def test_versions_for_an_unknown_model_are_ignored(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    manager.set_versions("ghost", _versions(tmp_path / "ghost", 1))
    assert _settle(manager, "ghost") == []
    assert fake.calls == []
    assert manager.statuses("ghost") == []


def test_on_change_is_called(make_manager: MakeManager, tmp_path: Path) -> None:
    changes: list[int] = []
    manager = make_manager(on_change=lambda: changes.append(1))
    manager.set_models([_spec("m", tmp_path / "m")])
    assert changes
    before = len(changes)
    manager.set_versions("m", _versions(tmp_path / "m", 1))
    assert _settle(manager, "m") == []
    assert len(changes) > before


# ----------------------------------------------------------------- resolve


def test_resolve_errors_for_an_unknown_model(manager: Manager) -> None:
    with pytest.raises(NotFound) as info:
        manager.resolve("m")
    assert info.value.message == "Servable not found for request: Latest(m)"
    with pytest.raises(NotFound) as info:
        manager.resolve("m", 3)
    assert info.value.message == "Servable not found for request: Specific(m, 3)"
    with pytest.raises(InvalidArgument) as label_info:
        manager.resolve("m", label="x")
    assert label_info.value.message == "Unrecognized servable version label: x"


def test_resolve_errors_for_a_loaded_model(manager: Manager, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(m\)$"):
        manager.resolve("m")  # configured, nothing loaded yet
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []
    with pytest.raises(NotFound) as info:
        manager.resolve("m", 3)
    assert info.value.message == "Servable not found for request: Specific(m, 3)"
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 1\)$"):
        manager.resolve("m", 1)  # on disk, but not aspired
    with pytest.raises(InvalidArgument) as label_info:
        manager.resolve("m", label="x")
    assert label_info.value.message == "Unrecognized servable version label: x"
    assert label_info.value.code is Code.INVALID_ARGUMENT


def test_resolve_by_label(manager: Manager, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []
    manager.set_labels("m", {"stable": 1, "canary": 2})
    assert manager.labels("m") == {"stable": 1, "canary": 2}
    assert _served(manager, "m", label="stable") == 1
    assert _served(manager, "m", label="canary") == 2
    assert _served(manager, "m") == 2


# ---------------------------------------------------- availability rules


def test_a_failing_new_version_leaves_the_old_one_serving(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 1

    fake.fail("m", 2)
    manager.set_versions("m", _versions(base, 1, 2))
    failures = _settle(manager, "m")
    assert [(vid, err.message) for vid, err in failures] == [(VersionId("m", 2), "cannot load m:2")]
    assert _served(manager, "m") == 1
    assert _states(manager, "m") == [(2, VersionState.END), (1, VersionState.AVAILABLE)]
    assert manager.is_ready()


def test_a_new_version_replaces_the_old_one_after_it_loads(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []

    gate = fake.gate("m", 2)
    manager.set_versions("m", _versions(base, 1, 2))
    # While 2 loads, 1 keeps serving.
    assert manager.wait_settled(["m"], timeout=0.01) != []
    assert _served(manager, "m") == 1
    assert dict(_states(manager, "m"))[1] is VersionState.AVAILABLE
    gate.set()
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 2
    assert _states(manager, "m") == [(2, VersionState.AVAILABLE), (1, VersionState.END)]
    with pytest.raises(NotFound, match=r"Specific\(m, 1\)"):
        manager.resolve("m", 1)


def test_failed_version_then_fixed_on_disk(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []
    fake.fail("m", 2)
    manager.set_versions("m", _versions(base, 1, 2))
    assert len(_settle(manager, "m")) == 1

    fake.succeed("m", 2)
    (base / "2" / "variables.index").write_bytes(b"the rest of the copy")
    manager.set_versions("m", scan(base))
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 2
    assert _states(manager, "m") == [(2, VersionState.AVAILABLE), (1, VersionState.END)]
    assert fake.count("m", 2) == 2


def test_a_failed_version_is_not_retried_on_an_unchanged_poll(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail("m", 1)
    found = _versions(base, 1)
    manager.set_versions("m", found)
    failures = _settle(manager, "m")
    assert len(failures) == 1
    (status,) = manager.statuses("m")
    assert fake.count("m", 1) == 1

    for _ in range(3):
        manager.set_versions("m", scan(base))
        # A new load would have replaced the END record synchronously.
        (again,) = manager.statuses("m")
        assert again == status
    assert _settle(manager, "m") == failures
    assert fake.count("m", 1) == 1

    fake.succeed("m", 1)
    (base / "1" / "extra.txt").write_text("now complete")
    manager.set_versions("m", scan(base))
    assert _settle(manager, "m") == []
    assert fake.count("m", 1) == 2
    assert _served(manager, "m") == 1


def test_a_rewritten_file_also_triggers_a_retry(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    import os

    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail("m", 1)
    manager.set_versions("m", _versions(base, 1))
    assert len(_settle(manager, "m")) == 1
    path = base / "1" / "saved_model.pb"
    path.write_bytes(b"a longer, complete graph")
    os.utime(path, ns=(1, 1))
    fake.succeed("m", 1)
    manager.set_versions("m", scan(base))
    assert _settle(manager, "m") == []
    assert fake.count("m", 1) == 2


def test_all_versions_removed_from_disk_unloads(manager: Manager, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []
    manager.set_versions("m", {})
    assert _settle(manager, "m") == []
    assert _states(manager, "m") == [(1, VersionState.END)]
    with pytest.raises(NotFound, match=r"Latest\(m\)"):
        manager.resolve("m")


def test_an_unloaded_version_loads_again_when_aspired_again(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []
    manager.set_versions("m", {1: VersionRef.local(1, base / "1")})  # version 2 was deleted
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 1
    assert _states(manager, "m") == [(2, VersionState.END), (1, VersionState.AVAILABLE)]
    assert fake.count("m", 1) == 1


def test_a_newer_version_while_one_loads(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []
    gate = fake.gate("m", 2)
    manager.set_versions("m", _versions(base, 2))
    assert fake.wait_calls(2)  # version 2 is loading
    manager.set_versions("m", _versions(base, 3))
    assert _served(manager, "m") == 1
    gate.set()
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 3
    assert _states(manager, "m") == [
        (3, VersionState.AVAILABLE),
        (2, VersionState.END),
        (1, VersionState.END),
    ]


def test_a_version_dropped_while_queued_loads_when_aspired_again(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    gate = fake.gate("m", 1)
    manager.set_versions("m", _versions(base, 1))
    assert fake.wait_calls(1)  # version 1 holds the only load thread
    manager.set_versions("m", _versions(base, 2))  # version 2 queues behind it
    manager.set_versions("m", {1: VersionRef.local(1, base / "1")})  # and is gone again
    gate.set()
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 1
    manager.set_versions("m", scan(base))
    assert _settle(manager, "m") == []
    assert _served(manager, "m") == 2
    assert _states(manager, "m") == [(2, VersionState.AVAILABLE), (1, VersionState.END)]


def test_parallel_loads(make_manager: MakeManager, fake: FakeLoader, tmp_path: Path) -> None:
    manager = make_manager(num_load_threads=2)
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    gates = [fake.gate("m", 1), fake.gate("m", 2)]
    manager.set_versions("m", _versions(base, 1, 2))
    assert fake.wait_calls(2)  # both load at once
    for gate in gates:
        gate.set()
    assert _settle(manager, "m") == []
    assert _states(manager, "m") == [(2, VersionState.AVAILABLE), (1, VersionState.AVAILABLE)]


# ----------------------------------------------------------------- retries


def test_retries_then_gives_up(make_manager: MakeManager, fake: FakeLoader, tmp_path: Path) -> None:
    manager = make_manager(retry=LoadRetries(max_retries=2, interval_seconds=0.0))
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail("m", 1)
    manager.set_versions("m", _versions(base, 1))
    ((vid, err),) = _settle(manager, "m")
    assert vid == VersionId("m", 1)
    assert isinstance(err, LoadError)
    assert err.code is Code.DATA_LOSS
    assert fake.count("m", 1) == 3


def test_no_retries(make_manager: MakeManager, fake: FakeLoader, tmp_path: Path) -> None:
    manager = make_manager(retry=LoadRetries(max_retries=0, interval_seconds=0.0))
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail("m", 1)
    manager.set_versions("m", _versions(base, 1))
    assert len(_settle(manager, "m")) == 1
    assert fake.count("m", 1) == 1


def test_a_retry_that_succeeds(make_manager: MakeManager, fake: FakeLoader, tmp_path: Path) -> None:
    manager = make_manager(retry=LoadRetries(max_retries=2, interval_seconds=0.0))
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail_times[VersionId("m", 1)] = 2
    manager.set_versions("m", _versions(base, 1))
    assert _settle(manager, "m") == []
    assert fake.count("m", 1) == 3
    assert _states(manager, "m") == [(1, VersionState.AVAILABLE)]
    assert manager.statuses("m")[0].error is None


def test_a_pending_retry_runs_as_soon_as_the_local_content_changes(
    make_manager: MakeManager, fake: FakeLoader, tmp_path: Path
) -> None:
    """A half-copied version is retried when the copy completes, not after the
    retry interval (an hour here: the test would time out waiting for it)."""
    manager = make_manager(retry=LoadRetries(max_retries=3, interval_seconds=3600.0))
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail_times[VersionId("m", 1)] = 1
    manager.set_versions("m", _versions(base, 1))
    assert fake.wait_calls(1)
    (base / "1" / "variables").mkdir()
    (base / "1" / "variables" / "variables.index").write_bytes(b"the rest of the copy")
    assert fake.wait_calls(2)
    assert _settle(manager, "m") == []
    assert _states(manager, "m") == [(1, VersionState.AVAILABLE)]


def test_a_pending_retry_reads_the_newest_remote_listing(
    make_manager: MakeManager, fake: FakeLoader, tmp_path: Path
) -> None:
    """A remote version's fingerprint comes from the source's scan: a new scan
    that sees different files wakes a retry waiting on the old listing."""
    manager = make_manager(retry=LoadRetries(max_retries=3, interval_seconds=3600.0))
    manager.set_models([_spec("m", tmp_path / "m")])
    fake.fail_times[VersionId("m", 1)] = 1
    (tmp_path / "m" / "1").mkdir(parents=True)

    def remote(fingerprint: str) -> dict[int, VersionRef]:
        ref = VersionRef(1, "s3://bucket/m/1", "1", "s3://bucket/m", False, fingerprint)
        return {1: replace(ref, path=tmp_path / "m" / "1")}

    manager.set_versions("m", remote("listing-1"))
    assert fake.wait_calls(1)
    manager.set_versions("m", remote("listing-2"))
    assert fake.wait_calls(2)
    assert _settle(manager, "m") == []


def test_an_unexpected_exception_becomes_a_load_error(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    fake.fail("m", 1, RuntimeError("boom"))
    manager.set_versions("m", _versions(base, 1))
    ((_, err),) = _settle(manager, "m")
    assert isinstance(err, LoadError)
    assert err.message == "RuntimeError: boom"


# ---------------------------------------------------------------- statuses


def test_statuses_newest_first_with_states_and_errors(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    error = LoadError("bad checkpoint", Code.DATA_LOSS)
    fake.fail("m", 2, error)
    manager.set_versions("m", _versions(base, 1, 2, 3))
    assert len(_settle(manager, "m")) == 1
    statuses = manager.statuses("m")
    assert statuses == [
        VersionStatus(3, VersionState.AVAILABLE),
        VersionStatus(2, VersionState.END, error),
        VersionStatus(1, VersionState.AVAILABLE),
    ]
    assert statuses[1].error is error
    assert manager.statuses("unknown") == []


def test_state_values_are_tf_servings() -> None:
    assert [(s.name, int(s)) for s in VersionState] == [
        ("START", 10),
        ("LOADING", 20),
        ("AVAILABLE", 30),
        ("UNLOADING", 40),
        ("END", 50),
    ]


def test_status_while_loading(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base)])
    gate = fake.gate("m", 1)
    manager.set_versions("m", _versions(base, 1))
    ((vid, err),) = manager.wait_settled(["m"], timeout=0.01)
    assert vid == VersionId("m", 1)
    assert "still" in err.message
    (status,) = manager.statuses("m")
    assert status.state in (VersionState.START, VersionState.LOADING)
    assert not manager.is_ready()
    gate.set()
    assert _settle(manager, "m") == []
    assert manager.is_ready()


# ------------------------------------------------------------------ labels


LABEL_ERROR = (
    "Request to assign label to version 9 of model m, "
    "which is not currently available for inference"
)


@pytest.fixture
def two_versions(manager: Manager, tmp_path: Path) -> Manager:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []
    return manager


def test_label_to_an_available_version(two_versions: Manager) -> None:
    two_versions.set_labels("m", {"stable": 1})
    assert two_versions.labels("m") == {"stable": 1}
    two_versions.set_labels("m", {"stable": 2})  # moving to a loaded version is fine
    assert two_versions.labels("m") == {"stable": 2}
    two_versions.set_labels("m", {})
    assert two_versions.labels("m") == {}


def test_label_to_an_unavailable_version(two_versions: Manager) -> None:
    two_versions.set_labels("m", {"stable": 1})
    with pytest.raises(FailedPrecondition) as info:
        two_versions.set_labels("m", {"stable": 1, "canary": 9})
    assert info.value.message == LABEL_ERROR
    assert info.value.code is Code.FAILED_PRECONDITION
    assert two_versions.labels("m") == {"stable": 1}  # nothing half-applied


def test_label_to_a_failed_version(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    fake.fail("m", 9)
    manager.set_versions("m", _versions(base, 1, 9))
    assert len(_settle(manager, "m")) == 1
    with pytest.raises(FailedPrecondition, match="^" + LABEL_ERROR + "$"):
        manager.set_labels("m", {"canary": 9})


def test_labels_for_an_unknown_model(manager: Manager) -> None:
    with pytest.raises(NotFound):
        manager.set_labels("nope", {"stable": 1})
    assert manager.labels("nope") == {}


def test_allow_labels_for_unavailable_versions(make_manager: MakeManager, tmp_path: Path) -> None:
    manager = make_manager(allow_labels_for_unavailable=True)
    base = tmp_path / "m"
    manager.set_models([_spec("m", base, VersionPolicy.all())])
    manager.set_versions("m", _versions(base, 1, 2))
    assert _settle(manager, "m") == []

    manager.set_labels("m", {"stable": 1, "canary": 9})  # a new label may point anywhere
    assert manager.labels("m") == {"stable": 1, "canary": 9}
    manager.set_labels("m", {"stable": 1, "canary": 9})  # unchanged: still fine
    with pytest.raises(NotFound, match=r"^Servable not found for request: Specific\(m, 9\)$"):
        manager.resolve("m", label="canary")

    with pytest.raises(FailedPrecondition) as info:
        manager.set_labels("m", {"stable": 9, "canary": 9})  # moving needs a loaded target
    assert info.value.message == LABEL_ERROR
    assert manager.labels("m") == {"stable": 1, "canary": 9}

    manager.set_labels("m", {"stable": 2, "canary": 9})  # moving to a loaded version is fine
    assert manager.labels("m") == {"stable": 2, "canary": 9}


def test_labels_before_any_version_loads(make_manager: MakeManager, tmp_path: Path) -> None:
    strict = make_manager()
    strict.set_models([_spec("m", tmp_path / "m")])
    with pytest.raises(FailedPrecondition, match="version 1 of model m"):
        strict.set_labels("m", {"stable": 1})
    lenient = make_manager(allow_labels_for_unavailable=True)
    lenient.set_models([_spec("m", tmp_path / "m")])
    lenient.set_labels("m", {"stable": 1})
    assert lenient.labels("m") == {"stable": 1}


# ------------------------------------------------------- models come and go


def test_removing_a_model_unloads_its_versions(manager: Manager, tmp_path: Path) -> None:
    a, b = _spec("a", tmp_path / "a", VersionPolicy.all()), _spec("b", tmp_path / "b")
    manager.set_models([a, b])
    manager.set_versions("a", _versions(tmp_path / "a", 1, 2))
    manager.set_versions("b", _versions(tmp_path / "b", 1))
    assert _settle(manager, "a", "b") == []
    manager.set_labels("a", {"stable": 1})

    assert manager.set_models([b]) == []
    assert _states(manager, "a") == [(2, VersionState.END), (1, VersionState.END)]
    with pytest.raises(NotFound, match=r"^Servable not found for request: Latest\(a\)$"):
        manager.resolve("a")
    with pytest.raises(InvalidArgument):
        manager.resolve("a", label="stable")
    assert manager.labels("a") == {}
    assert [s.name for s in manager.specs()] == ["b"]
    assert _served(manager, "b") == 1
    assert manager.is_ready()
    with pytest.raises(NotFound):
        manager.set_labels("a", {"stable": 1})


def test_versions_of_a_removed_model_are_ignored(
    manager: Manager, fake: FakeLoader, tmp_path: Path
) -> None:
    a = _spec("a", tmp_path / "a")
    manager.set_models([a])
    manager.set_models([])
    manager.set_versions("a", _versions(tmp_path / "a", 1))
    assert _settle(manager, "a") == []
    assert fake.calls == []


def test_a_removed_model_can_come_back(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    a = _spec("a", tmp_path / "a")
    manager.set_models([a])
    manager.set_versions("a", _versions(tmp_path / "a", 1))
    assert _settle(manager, "a") == []
    manager.set_models([])
    assert manager.set_models([a]) == ["a"]
    manager.set_versions("a", scan(tmp_path / "a"))
    assert _settle(manager, "a") == []
    assert _served(manager, "a") == 1
    assert fake.count("a", 1) == 2


# ------------------------------------------------------------------ ready


def test_is_ready(manager: Manager, fake: FakeLoader, tmp_path: Path) -> None:
    assert not manager.is_ready()  # no models: not ready
    a, b = _spec("a", tmp_path / "a"), _spec("b", tmp_path / "b")
    manager.set_models([a])
    assert not manager.is_ready()
    manager.set_versions("a", {})  # no versions on disk yet
    assert _settle(manager, "a") == []
    assert not manager.is_ready()
    manager.set_versions("a", _versions(tmp_path / "a", 1))
    assert _settle(manager, "a") == []
    assert manager.is_ready()

    manager.set_models([a, b])
    assert not manager.is_ready()  # b has nothing AVAILABLE
    fake.fail("b", 1)
    manager.set_versions("b", _versions(tmp_path / "b", 1))
    assert len(_settle(manager, "b")) == 1
    assert not manager.is_ready()
    fake.succeed("b", 1)
    manager.set_versions("b", _versions(tmp_path / "b", 2))
    assert _settle(manager, "b") == []
    assert manager.is_ready()

    manager.set_models([b])  # a removed: only b counts
    assert manager.is_ready()
    manager.set_models([])
    assert not manager.is_ready()


def test_close_unloads_everything(make_manager: MakeManager, tmp_path: Path) -> None:
    manager = make_manager()
    manager.set_models([_spec("m", tmp_path / "m")])
    manager.set_versions("m", _versions(tmp_path / "m", 1))
    assert _settle(manager, "m") == []
    manager.close()
    assert _states(manager, "m") == [(1, VersionState.END)]
    # Nothing is loaded any more: not ready (and no KeyError from the dropped views).
    assert manager.is_ready() is False
    with pytest.raises(NotFound):
        manager.resolve("m")
