"""``rollway rollout status|promote|rollback``: the CLI over the fake
Kubernetes API (fake_api.py) and a real assignment store on local disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from functions import rollout_cmd
from functions.rollout import handler
from functions.rollout.settings import RolloutConfig
from loader import assignments
from loader.assign import StagedVersion, next_generation, with_current
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged, AssignmentDocument
from loader.storage import open_storage
from tests.rollout.fake_api import FakeServices
from tests.rollout.helpers import NAMESPACE, new_service, traffic

NS = ["--namespace", NAMESPACE]


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeServices:
    fake = FakeServices()
    monkeypatch.setattr(rollout_cmd, "api_factory", lambda: fake)
    monkeypatch.delenv("ROLLWAY_ROLLOUT_SERVICES", raising=False)
    monkeypatch.delenv("ROLLWAY_STORE", raising=False)
    return fake


def canary(api: FakeServices, ready: bool = True) -> None:
    """mnist: generation 1 stable, generation 2 a 10 % canary."""
    api.put(NAMESPACE, new_service(**{"rollway.dev/strategy": "canary"}))
    config = RolloutConfig(NAMESPACE)
    for generation in (1, 2):
        handler.roll_out(api, config, AssignmentChanged(model="mnist", generation=generation))
    stored = api.objects[(NAMESPACE, "mnist")]
    stored["status"] = {
        "latestCreatedRevisionName": "mnist-g2",
        "latestReadyRevisionName": "mnist-g2" if ready else "mnist-g1",
        "conditions": [{"type": "Ready", "status": "True"}],
        "url": "http://mnist.rollway.example.com",
    }


def store_with_generations(root: Path, count: int) -> str:
    """An assignment store where generation N of mnist serves version N."""
    storage = open_storage(str(root))
    for number in range(1, count + 1):
        version = StagedVersion(number, f"{root}/mnist/{number}", f"{number:064x}")

        def update(document: AssignmentDocument | None, v: StagedVersion = version) -> Any:
            previous = document.current if document is not None else None
            return with_current(document, next_generation(previous, "mnist", [v], {}))

        assignments.commit(storage, "mnist", update)
    storage.close()
    return str(root)


def output(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_status(api: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    canary(api, ready=False)
    assert rollout_cmd.main(["status", "mnist", *NS, "--json"]) == 0
    (service,) = output(capsys)["services"]
    assert service["generation"] == 2
    assert service["strategy"] == {"kind": "canary", "canary_percent": 10}
    assert service["template_revision"] == "mnist-g2"
    assert service["pinned_generation"] == "2"
    assert [
        (t["tag"], t["revision"], t["percent"], t["generation"]) for t in service["traffic"]
    ] == [
        ("stable", "mnist-g1", 90, 1),
        ("canary", "mnist-g2", 10, 2),
    ]
    assert service["rollback_to"] == "mnist-g1"
    assert rollout_cmd.main(["status", "mnist", *NS]) == 0
    text = capsys.readouterr().out
    assert "canary     mnist-g2" in text and "rollback goes to: mnist-g1" in text


def test_promote(api: FakeServices, capsys: pytest.CaptureFixture[str]) -> None:
    canary(api)
    assert rollout_cmd.main(["promote", "mnist", *NS, "--json"]) == 0
    assert traffic(api.objects[(NAMESPACE, "mnist")]) == [("stable", "mnist-g2", 100)]
    assert output(capsys)["services"][0]["rollback_to"] == "mnist-g1"
    assert rollout_cmd.main(["promote", "mnist", *NS]) == 2  # nothing left to promote
    assert "no canary or candidate" in capsys.readouterr().err


def test_rollback_moves_traffic_and_the_assignment(
    api: FakeServices, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    canary(api)
    store = store_with_generations(tmp_path / "store", 2)
    assert rollout_cmd.main(["rollback", "mnist", *NS, "--store", store]) == 0
    stored = api.objects[(NAMESPACE, "mnist")]
    assert traffic(stored) == [("stable", "mnist-g1", 100)]
    document = assignments.read(open_storage(store), "mnist")
    assert document is not None
    assert document.current.generation == 3
    assert [v.version for v in document.current.versions] == [1]  # generation 1's versions
    assert list(document.pinned_versions) == [1]
    assert stored["metadata"]["annotations"]["rollway.dev/generation"] == "3"
    # The rollback's own AssignmentChanged does not roll forward again.
    event = AssignmentChanged(model="mnist", generation=3)
    (report,) = handler.roll_out(api, RolloutConfig(NAMESPACE), event)
    assert report.outcome == "unchanged"
    # Running it again: nothing left to roll back to.
    assert rollout_cmd.main(["rollback", "mnist", *NS, "--store", store]) == 2
    assert "no canary and no previous revision" in capsys.readouterr().err


def test_rollback_aims_at_the_generation_of_the_revision(api: FakeServices, tmp_path: Path) -> None:
    """Generations 2 and 3 came after the stable revision's generation 1: the
    assignment goes back to 1, not to history[0] (3)."""
    canary(api)
    store = store_with_generations(tmp_path / "store", 4)
    assert rollout_cmd.main(["rollback", "mnist", *NS, "--store", store]) == 0
    document = assignments.read(open_storage(store), "mnist")
    assert document is not None
    assert (document.current.generation, [v.version for v in document.current.versions]) == (5, [1])


def test_rollback_needs_a_store_or_traffic_only(
    api: FakeServices, capsys: pytest.CaptureFixture[str]
) -> None:
    canary(api)
    assert rollout_cmd.main(["rollback", "mnist", *NS]) == 2
    assert "--store" in capsys.readouterr().err
    assert traffic(api.objects[(NAMESPACE, "mnist")])[1][0] == "canary"  # nothing moved
    assert rollout_cmd.main(["rollback", "mnist", *NS, "--traffic-only"]) == 0
    assert traffic(api.objects[(NAMESPACE, "mnist")]) == [("stable", "mnist-g1", 100)]


def test_a_missing_service_and_a_service_mapping(
    api: FakeServices, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollout_cmd.main(["status", "mnist", *NS]) == 2
    assert "no Service rollway/mnist" in capsys.readouterr().err
    api.put(NAMESPACE, new_service("models-mnist"))
    assert rollout_cmd.main(["status", "mnist", *NS, "--service", "mnist=models-mnist"]) == 0
    assert "Service models-mnist" in capsys.readouterr().out
    assert rollout_cmd.main(["status", "mnist", *NS, "--service", "models-mnist", "--json"]) == 0
    assert output(capsys)["services"][0]["service"] == "models-mnist"
