"""functions/rollout_function: the HTTP contract with the KafkaSource, called
in-process through ASGI (the Kubernetes API is fake_api.py), and the function
project's packaging (dependencies, force-included modules)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from functions.rollout_function.function.func import RolloutFunction
from loader import events
from loader.schemas.rollway.v1.assignment_pb2 import AssignmentChanged
from tests.rollout.fake_api import FakeApiError, FakeServices
from tests.rollout.helpers import NAMESPACE, new_service, traffic

REPO = Path(__file__).resolve().parents[2]
FUNCTION_DIR = REPO / "functions" / "rollout_function"
CE = {"ce-specversion": "1.0", "ce-id": "partition:0/offset:1", "ce-source": "/kafka"}
RECORD = events.encode(AssignmentChanged(model="mnist", generation=2), source="//rollway/test")


def call(
    function: RolloutFunction, headers: dict[str, str], body: bytes = b"", method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": method, "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    asyncio.run(function.handle(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.fixture
def api() -> FakeServices:
    fake = FakeServices()
    fake.put(NAMESPACE, new_service())
    return fake


@pytest.fixture
def function(api: FakeServices) -> RolloutFunction:
    made = RolloutFunction(api_factory=lambda: api)
    made.start({"ROLLWAY_NAMESPACE": NAMESPACE, "ROLLWAY_LOG_FORMAT": "text"})
    assert made.ready() == (True, "ready") and made.alive() == (True, "alive")
    return made


def test_an_assignment_is_rolled_out(function: RolloutFunction, api: FakeServices) -> None:
    headers = {**CE, "ce-type": events.ASSIGNMENT_CHANGED}
    status, body = call(function, headers, RECORD.value)
    assert status == 200
    assert body == {"status": "done", "results": [
        {"model": "mnist", "generation": 2, "service": "mnist", "outcome": "patched",
         "revision": "mnist-g2"},
    ]}  # fmt: skip
    assert traffic(api.objects[(NAMESPACE, "mnist")]) == [("stable", "mnist-g2", 100)]
    wrapped = {**CE, "ce-type": "dev.knative.kafka.event", "ce-key": "mnist"}
    status, body = call(function, wrapped, RECORD.value)
    assert (status, body["results"][0]["outcome"]) == (200, "unchanged")


ANSWERS: list[tuple[str, dict[str, str], bytes, str, int, str]] = [
    ("another event type", {**CE, "ce-type": events.MODEL_PUBLISHED}, b"{}", "POST", 200,
     "ignored"),
    ("a body that is no AssignmentChanged", {**CE, "ce-type": events.ASSIGNMENT_CHANGED}, b"[",
     "POST", 400, "invalid"),
    ("no CloudEvent headers", {"content-type": "application/json"}, b"{}", "POST", 400,
     "invalid"),
    ("specversion 0.3", {**CE, "ce-type": events.ASSIGNMENT_CHANGED, "ce-specversion": "0.3"},
     b"{}", "POST", 400, "invalid"),
    ("structured mode", {"content-type": "application/cloudevents+json"}, b"{}", "POST", 415,
     "invalid"),
    ("structured mode, any case", {"Content-Type": " Application/CloudEvents+JSON"}, b"{}",
     "POST", 415, "invalid"),
    ("a GET", {}, b"", "GET", 405, "invalid"),
    ("over 1 MiB", {**CE, "ce-type": events.ASSIGNMENT_CHANGED}, b" " * (1024 * 1024 + 1),
     "POST", 400, "invalid"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "headers", "body", "method", "status", "kind"), ANSWERS,
                         ids=[a[0] for a in ANSWERS])  # fmt: skip
def test_answers(
    function: RolloutFunction, name: str, headers: dict[str, str], body: bytes, method: str,
    status: int, kind: str,
) -> None:  # fmt: skip
    answer = call(function, headers, body, method)
    assert (answer[0], answer[1]["status"]) == (status, kind)


def test_a_gone_client_gets_no_answer(function: RolloutFunction) -> None:
    # As the loader function does (functions.func_asgi): no 400 that no one reads.
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = {**CE, "ce-type": events.ASSIGNMENT_CHANGED}
    scope = {"type": "http", "method": "POST", "path": "/",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
    asyncio.run(function.handle(scope, receive, send))
    assert sent == []


def test_an_unreachable_api_answers_503(function: RolloutFunction, api: FakeServices) -> None:
    api.failures["get"] = [FakeApiError(500, "Internal Server Error")]
    status, body = call(function, {**CE, "ce-type": events.ASSIGNMENT_CHANGED}, RECORD.value)
    assert (status, body["status"]) == (503, "unavailable")
    assert "500" in body["reason"]


def test_a_bad_configuration_is_not_alive() -> None:
    broken = RolloutFunction(api_factory=FakeServices)
    broken.start({"ROLLWAY_NAMESPACE": NAMESPACE, "ROLLWAY_ROLLOUT_STRATEGY": "blue-green"})
    alive, why = broken.alive()
    assert not alive and "ROLLWAY_ROLLOUT_STRATEGY" in why
    status, _ = call(broken, {**CE, "ce-type": events.ASSIGNMENT_CHANGED}, RECORD.value)
    assert status == 503


def _toml(path: Path) -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    document: dict[str, Any] = tomllib.loads(path.read_text())
    return document


def test_the_function_project_pins_what_rollway_pins() -> None:
    def requirements(path: Path, *extra: str) -> dict[str, str]:
        project = _toml(path)["project"]
        listed = [*project["dependencies"]]
        for name in extra:
            listed += project.get("optional-dependencies", {}).get(name, [])
        return {re.split(r"[<>=!~ ;\[]", d)[0].lower(): d for d in listed}

    rollway = requirements(REPO / "pyproject.toml", "dev", "rollout")
    for name, requirement in requirements(FUNCTION_DIR / "pyproject.toml").items():
        if name in rollway:
            assert requirement == rollway[name], "keep the version specifiers equal"


def test_the_function_project_includes_every_rollway_module_it_imports() -> None:
    build = _toml(FUNCTION_DIR / "pyproject.toml")["tool"]["hatch"]["build"]
    included = set(build["targets"]["wheel"]["force-include"].values())
    # functions/settings.py: the function reads its variables with settings.from_env.
    assert {"loader", "infra/base/serving-grpc.yaml", "functions/settings.py"} <= included
    probe = (
        "import json, sys, functions.rollout_function.function.func; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for name in json.loads(out):
        if name.split(".")[0] != "functions" or name.startswith("functions.rollout_function"):
            continue
        path = name.replace(".", "/")
        covered = {f"{path}.py", f"{path}/__init__.py"} & included or any(
            path.startswith(f"{directory}/") or path == directory for directory in included
        )
        assert covered, f"{name} is not force-included"
