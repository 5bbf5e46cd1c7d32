"""What the two Knative functions (``functions/loader_function`` and
``functions/rollout_function``) share of plain ASGI: taking a KafkaSource's
delivery in, and answering it. Each function is a ``Sink``: func-python calls
its ``handle``, and the function says only what to ``answer`` a delivery.

Each function is still built on its own by ``func build``: this module reaches
their images as the loader library does, force-included by each function's
``pyproject.toml``; tests/loader/test_function.py and
tests/rollout/test_function.py fail when a module that func.py imports is not.

One rule for both, as HTTP has it:

- Header names and values are bytes read as latin-1 (ISO-8859-1, which HTTP
  defines them in; it decodes any byte, so nothing is lost or refused here).
  Names are lower-cased, and the last of a repeated header wins, as in
  CloudEvents. Percent-decoding of CloudEvent attributes is the SDK's
  (``loader.events.from_http_headers``).
- The content type is compared case-insensitively, without surrounding blanks.
- A client that goes away before its body is in gets no answer at all: there
  is no one to read it, and the KafkaSource redelivers what it did not see
  acknowledged.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loader import display

# ASGI, typed only as far as the functions rely on it.
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

REQUIRED_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type")
ONLY_POST = {"status": "invalid", "reason": "only POST (a CloudEvent) is accepted"}


@dataclass(frozen=True)
class Answer:
    """What a function answers: a status, a JSON body, and extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True)
class Delivery:
    """A POST that is a binary-mode CloudEvent 1.0 by its headers. ``body`` is
    None when it was over the limit (read and dropped, never parsed)."""

    headers: dict[str, str]
    body: bytes | None


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class Sink(abc.ABC):
    """What both functions are to func-python's ASGI middleware: ``handle``
    takes a delivery in (``accept``, bodies up to ``limit`` bytes) and sends
    what the subclass's ``answer`` says."""

    limit: int

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        delivery = await accept(scope, receive, send, self.limit)
        if delivery is not None:
            reply = await self.answer(scope, delivery)
            await respond(send, reply.status, reply.body, reply.headers)

    @abc.abstractmethod
    async def answer(self, scope: Scope, delivery: Delivery) -> Answer:
        """The reply to one accepted delivery (each function's own)."""


async def accept(scope: Scope, receive: Receive, send: Send, limit: int) -> Delivery | None:
    """The delivery, or None once it is answered: 405 for another method, 415
    and 400 for what is no binary-mode CloudEvent 1.0 (``not_a_cloud_event``).
    None with no answer when the client went away (``ClientGone``)."""
    if scope.get("method") != "POST":
        await respond(send, 405, ONLY_POST, ((b"allow", b"POST"),))
        return None
    headers = request_headers(scope.get("headers", ()))
    refused = not_a_cloud_event(headers)
    if refused is not None:
        await respond(send, refused[0], {"status": "invalid", "reason": refused[1]})
        return None
    try:
        body = await read_body(receive, limit)
    except ClientGone:
        return None
    return Delivery(headers, body)


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased names, latin-1 names and values; the last of repeated headers wins."""
    return {
        bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1") for name, value in raw
    }


def content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").strip().lower()


def not_a_cloud_event(headers: Mapping[str, str]) -> tuple[int, str] | None:
    """(4xx status, reason) for a request that is no binary-mode CloudEvent 1.0.
    KafkaSource retries neither: these can never succeed."""
    if content_type(headers).startswith("application/cloudevents"):  # +json, -batch+json
        return 415, "structured and batched CloudEvents are not accepted; use binary mode"
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        return 400, f"not a binary-mode CloudEvent: no {', '.join(missing)} header"
    if headers["ce-specversion"] != "1.0":
        return (
            400,
            f"CloudEvents specversion {display.quoted(headers['ce-specversion'])} is not 1.0",
        )
    return None


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None if it is over ``limit`` bytes; ClientGone if
    the client disconnected first. The rest of an oversized body is read and
    dropped: hypercorn would otherwise hold the connection until shutdown,
    waiting for the application to take it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            raise ClientGone
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if size <= limit else None


async def respond(
    send: Send, status: int, body: Mapping[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A JSON answer (compact), with ``headers`` after content type and length."""
    data = json.dumps(body, separators=(",", ":")).encode()
    sent = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*sent, *headers]})
    await send({"type": "http.response.body", "body": data})
