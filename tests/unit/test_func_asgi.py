"""functions.func_asgi: the ASGI helpers both Knative functions share (pure,
driven with in-memory receive/send), and the packaging that keeps it shared:
each function project force-includes this one module, and neither func.py
keeps a copy of its helpers."""

from __future__ import annotations

import ast
import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions import func_asgi

REPO = Path(__file__).resolve().parents[2]
FUNCTION_CLASSES = {"loader_function": "LoaderFunction", "rollout_function": "RolloutFunction"}
FUNCTIONS = tuple(FUNCTION_CLASSES)
CE = [
    (b"ce-specversion", b"1.0"),
    (b"ce-id", b"partition:0/offset:1"),
    (b"ce-source", b"/kafka"),
    (b"ce-type", b"dev.knative.kafka.event"),
]


def receiving(*messages: dict[str, Any]) -> func_asgi.Receive:
    queue: Iterator[dict[str, Any]] = iter(messages)

    async def receive() -> dict[str, Any]:
        return next(queue)

    return receive


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


def accept(
    headers: list[tuple[bytes, bytes]], *messages: dict[str, Any], method: str = "POST"
) -> tuple[func_asgi.Delivery | None, list[dict[str, Any]]]:
    """``func_asgi.accept`` with a body limit of 8 bytes; what it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/", "headers": headers}
    delivery = asyncio.run(func_asgi.accept(scope, receiving(*messages), send, 8))
    return delivery, sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    start, end = sent
    return start["status"], json.loads(end["body"]), dict(start["headers"])


def test_header_bytes_are_latin1_names_lower_cased_and_the_last_wins() -> None:
    raw = [(b"CE-ID", b"caf\xe9"), (b"Ce-Id", b"2"), (b"X-Other", b"\xff\x00")]
    assert func_asgi.request_headers(raw) == {"ce-id": "2", "x-other": "\xff\x00"}
    assert func_asgi.request_headers([(b"ce-id", b"caf\xe9")]) == {"ce-id": "café"}


@pytest.mark.parametrize(
    ("extra", "status", "reason"),
    [
        ({"content-type": "application/cloudevents+json"}, 415, "binary mode"),
        ({"content-type": " Application/CloudEvents-Batch+JSON "}, 415, "binary mode"),
        ({"ce-specversion": "0.3"}, 400, "specversion '0.3' is not 1.0"),
        ({"ce-source": ""}, 400, "no ce-source header"),
    ],
    ids=["structured", "batched-any-case", "old-specversion", "empty-source"],
)
def test_what_is_no_binary_cloud_event(extra: dict[str, str], status: int, reason: str) -> None:
    headers = func_asgi.request_headers(CE) | extra
    refused = func_asgi.not_a_cloud_event(headers)
    assert refused is not None
    assert refused[0] == status
    assert reason in refused[1]
    assert func_asgi.not_a_cloud_event(func_asgi.request_headers(CE)) is None


def test_no_headers_names_every_missing_one() -> None:
    assert func_asgi.not_a_cloud_event({"content-type": "application/json"}) == (
        400,
        "not a binary-mode CloudEvent: no ce-specversion, ce-id, ce-source, ce-type header",
    )


def test_a_delivery_is_its_headers_and_its_body_in_chunks() -> None:
    delivery, sent = accept(CE, body(b"{", more=True), body(b"}"))
    assert sent == []
    assert delivery == func_asgi.Delivery(func_asgi.request_headers(CE), b"{}")


def test_a_body_over_the_limit_is_drained_and_not_kept() -> None:
    messages = [body(b"12345", more=True), body(b"67890", more=True), body(b"x")]
    delivery, sent = accept(CE, *messages)
    assert sent == []
    assert delivery is not None
    assert delivery.body is None


def test_a_gone_client_gets_no_answer() -> None:
    delivery, sent = accept(CE, body(b"{", more=True), {"type": "http.disconnect"})
    assert (delivery, sent) == (None, [])


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", CE, 405),
        ("POST", [(b"content-type", b"application/cloudevents+json")], 415),
        ("POST", [(b"content-type", b"application/json")], 400),
    ],
)
def test_refusals_are_answered_before_the_body_is_read(
    method: str, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    delivery, sent = accept(headers, method=method)  # receive would fail: nothing queued
    assert delivery is None
    code, answered, reply_headers = answer(sent)
    assert (code, answered["status"]) == (status, "invalid")
    assert reply_headers[b"content-type"] == b"application/json"
    assert int(reply_headers[b"content-length"]) == len(sent[1]["body"])
    if status == 405:
        assert reply_headers[b"allow"] == b"POST"


class Echo(func_asgi.Sink):
    limit = 8

    async def answer(
        self, scope: func_asgi.Scope, delivery: func_asgi.Delivery
    ) -> func_asgi.Answer:
        return func_asgi.Answer(202, {"body": repr(delivery.body)}, ((b"x-path", b"/p"),))


def test_a_sink_answers_what_its_subclass_says() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for data, expected in ((b"{}", "b'{}'"), (b"123456789", "None")):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": "/p", "headers": CE}
        asyncio.run(Echo().handle(scope, receiving(body(data)), send))
        status, answered, headers = answer(sent)
        assert (status, answered, headers[b"x-path"]) == (202, {"body": expected}, b"/p")


def test_respond_is_compact_json_with_extra_headers_last() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    extra = ((b"retry-after", b"5"),)
    asyncio.run(func_asgi.respond(send, 503, {"status": "retry", "results": []}, extra))
    assert sent[1]["body"] == b'{"status":"retry","results":[]}'
    assert [name for name, _ in sent[0]["headers"]] == [
        b"content-type",
        b"content-length",
        b"retry-after",
    ]


# -- shared, not copied: what keeps the two functions from drifting apart -----------


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_function_project_force_includes_the_shared_module(function: str) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "functions" / function / "pyproject.toml").read_text())
    included = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["../../functions/func_asgi.py"] == "functions/func_asgi.py"


def top_level_names(path: Path) -> set[str]:
    """What a module defines or assigns at its top level (imports aside)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_keeps_its_own_copy_of_the_helpers(function: str) -> None:
    func = REPO / "functions" / function / "function" / "func.py"
    shared = top_level_names(REPO / "functions" / "func_asgi.py")
    assert {"accept", "read_body", "request_headers", "not_a_cloud_event", "respond"} <= shared
    assert not top_level_names(func) & shared, "use functions.func_asgi, not a copy"
    assert f"class {FUNCTION_CLASSES[function]}(func_asgi.Sink):" in func.read_text()


def test_both_functions_are_sinks() -> None:
    from functions.loader_function.function.func import LoaderFunction
    from functions.rollout_function.function.func import RolloutFunction

    for made in (LoaderFunction(), RolloutFunction()):
        assert isinstance(made, func_asgi.Sink)
        assert type(made).handle is func_asgi.Sink.handle


def test_the_loader_function_answers_through_the_shared_helpers() -> None:
    from functions.loader_function.function.func import LoaderFunction

    def post(function: func_asgi.Sink, headers: list[tuple[bytes, bytes]]) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        asyncio.run(function.handle(scope, receiving(body(b"{}")), send))
        return int(sent[0]["status"])

    unstarted = LoaderFunction()
    assert post(unstarted, CE) == 503  # not ready: the KafkaSource retries
    assert post(unstarted, [(b"Content-Type", b"Application/CloudEvents+JSON")]) == 415
