"""TF Serving's REST API (``--rest_api_port``), as an ASGI application.

Routes, JSON formats and HTTP statuses are TF Serving's:

* ``GET  /v1/models/{m}[/versions/{v}|/labels/{l}]``: model status;
* ``GET  .../metadata``: signature defs;
* ``POST ...:predict`` (row ``instances`` or columnar ``inputs``),
  ``...:classify`` and ``...:regress`` (``examples`` and ``context``).

Errors are ``{"error": "<message>"}`` with the status from ``http_status``.
With ``--rest_api_enable_cors_support`` every API response carries
TF Serving's CORS headers (any origin; POST and GET; Content-Type), and a
preflight ``OPTIONS`` on an API path answers 200 with them and no body.

``GET /v1/ready`` is rollway's: 200 only when every configured model has an
AVAILABLE version (TF Serving's status route answers 200 either way), for
Kubernetes and Knative probes.

The GET routes are cheap and answer on the event loop. A POST's body is read
as it streams: a Content-Length over ``--rest_api_max_request_bytes`` gets 413
before any of it is read, a chunked body is cut with 413 at the limit. Then
JSON parsing, TensorFlow and JSON encoding run on a pool of
``--rest_api_num_threads`` threads, off the loop. At most
``BACKLOG_PER_THREAD`` times that many requests are admitted (running or
queued); more get 503 UNAVAILABLE at once, as TF Serving answers a full
batching queue and Triton a full request queue, so load balancers retry
elsewhere. ``--rest_api_timeout_in_ms`` counts from the end of the body: a
request not answered by then gets 504, and one still queued never starts.

The transport (uvicorn, timeouts for slow clients, drain) is
``functions.serving.api.http_server``, which can mount another protocol's
routes beside these on the same port.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from functions.serving.api.http_errors import error_body, http_status
from functions.serving.api.http_server import Receive, Scope, Send
from functions.serving.api.tfserving import responses
from functions.serving.codecs import json_decode, json_encode, json_examples, json_text
from functions.serving.dataplane.plane import DataPlane
from functions.serving.dataplane.types import (
    SIGNATURE_DEF_FIELD,
    ModelSelector,
    SignatureNotFound,
)
from functions.serving.metrics import CONTENT_TYPE, ServingMetrics
from loader.errors import Code, DeadlineExceeded, InvalidArgument, RollwayError, Unavailable

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict|:classify|:regress)?"
)
READY_PATH = "/v1/ready"
# Admitted requests (running and queued) per --rest_api_num_threads thread.
BACKLOG_PER_THREAD = 16  # 128 requests on 2 CPUs: more than a client pool or a proxy keeps open

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class RestOptions:
    timeout_seconds: float
    max_request_bytes: int
    check_method: bool = False
    metrics_path: str | None = None  # Prometheus scrape path, when enabled
    cors: bool = False
    # Inference on the event loop itself (the server's rule, as for gRPC): no
    # hand-off and no GIL contention with a pool; one call at a time.
    inline: bool = False


CORS_HEADERS: Headers = [
    (b"Access-Control-Allow-Origin", b"*"),
    (b"Access-Control-Allow-Methods", b"POST, GET"),
    (b"Access-Control-Allow-Headers", b"Content-Type"),
]


class RestApi:
    """The ASGI application (HTTP scopes only). Inference runs on its own
    bounded thread pool; ``close()`` stops the pool."""

    def __init__(
        self, plane: DataPlane, options: RestOptions, workers: int, metrics: ServingMetrics
    ) -> None:
        self._plane = plane
        self._metrics = metrics
        self._options = options
        self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix="rollway-rest")
        self._backlog = _Backlog(BACKLOG_PER_THREAD * workers, workers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"RestApi serves HTTP only, not {scope['type']}")
        method: str = scope["method"]
        path: str = scope["path"]
        cors = CORS_HEADERS if self._options.cors else []
        if cors and method == "OPTIONS" and (path == READY_PATH or _ROUTE.fullmatch(path)):
            await _respond(send, 200, cors, b"")
            return
        if method == "GET" and path == self._options.metrics_path:
            text = self._metrics.render()
            await _respond(send, 200, [(b"Content-Type", CONTENT_TYPE.encode())], text)
            return
        try:
            status, payload = await self._dispatch(method, path, scope, receive)
        except _ClientGone:
            return
        except _TooLarge as err:  # HTTP's own status; no canonical code says "too large"
            status, payload = 413, error_body(err.message)
        except RollwayError as err:
            status, payload = http_status(err.code), error_body(err.message)
            # A pool call's future holds err, whose traceback holds the frames that
            # hold the future, the body and the parsed JSON: a cycle that only a
            # full garbage collection would free. Drop the traceback to break it.
            err.__traceback__ = None
        except Exception as err:
            log.exception("unexpected error in %s %s", method, path)
            status, payload = 500, error_body(f"internal error: {type(err).__name__}: {err}")
            err.__traceback__ = None
        await _respond(send, status, [*cors, (b"Content-Type", b"application/json")], payload)

    async def _dispatch(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes]:
        if path == READY_PATH and method == "GET":
            ready = self._plane.ready()
            return (200 if ready else 503), json_text.dumps({"ready": ready})
        match = _ROUTE.fullmatch(path)
        suffix = match["suffix"] if match else None
        expected = "POST" if suffix and suffix.startswith(":") else "GET"
        if match is None or method != expected:
            raise InvalidArgument(f"Malformed request: {method} {path}")
        selector_args = {
            "name": match["name"],
            "version": int(match["version"]) if match["version"] else None,
            "label": match["label"],
        }
        if method == "GET":
            return 200, json_text.dumps(self._get(suffix, selector_args))
        body = await self._read_body(scope, receive)
        return 200, await self._infer(suffix or "", selector_args, body)

    async def _infer(self, suffix: str, args: dict[str, Any], body: bytes) -> bytes:
        """Runs the request inline, or on the pool if admitted, within the timeout."""
        if self._options.inline:
            return self._infer_inline(suffix, args, body)
        if not self._backlog.admit():
            raise Unavailable(
                f"Too many REST requests in flight ({self._backlog.limit} running or queued "
                f"for {self._backlog.threads} threads, --rest_api_num_threads); retry later"
            )
        future = self._pool.submit(self._post, suffix, args, body)
        future.add_done_callback(self._backlog.release)  # also when cancelled unstarted
        try:
            return await asyncio.wait_for(
                asyncio.wrap_future(future), timeout=self._options.timeout_seconds
            )
        except asyncio.TimeoutError as err:
            future.cancel()  # still queued: never starts; running: TensorFlow cannot stop
            raise DeadlineExceeded(
                f"Request timed out after {self._options.timeout_seconds * 1000:.0f} ms"
            ) from err

    def _infer_inline(self, suffix: str, args: dict[str, Any], body: bytes) -> bytes:
        """On the loop: the loop runs one call at a time, so the backlog is the
        connections waiting for it. A call cannot be interrupted: the timeout
        is checked when it ends, and one that overran answers 504 (its result
        dropped, as a client that timed out would have)."""
        started = time.monotonic()
        result = self._post(suffix, args, body)
        if time.monotonic() - started > self._options.timeout_seconds:
            raise DeadlineExceeded(
                f"Request timed out after {self._options.timeout_seconds * 1000:.0f} ms"
            )
        return result

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self._options.max_request_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise _TooLarge(_too_large(f"{declared} bytes", limit))
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            body += message.get("body", b"")
            if len(body) > limit:
                raise _TooLarge(_too_large(f"more than {limit} bytes", limit))
            more = message.get("more_body", False)
        return bytes(body)

    def _get(self, suffix: str | None, args: dict[str, Any]) -> Any:
        if suffix == "/metadata":
            metadata = self._plane.metadata(ModelSelector(**args), [SIGNATURE_DEF_FIELD])
            response = responses.metadata_response(metadata)
            return {
                "model_spec": _to_json(response.model_spec),
                "metadata": {SIGNATURE_DEF_FIELD: _to_json(metadata.signature_defs)},
            }
        statuses = self._plane.status(args["name"], args["version"])
        return _to_json(responses.status_response(statuses))

    def _post(self, suffix: str, args: dict[str, Any], raw: bytes) -> bytes:
        """On a pool thread: JSON in, TensorFlow, JSON out (all CPU-bound)."""
        body = json_text.parse_json(raw)
        with self._metrics.request(args["name"], suffix[1:], "REST"):
            result = self._run(suffix, args, body)
        return json_text.dumps(result)

    def _run(self, suffix: str, args: dict[str, Any], body: Any) -> Any:
        if suffix == ":predict":
            request = json_decode.parse_predict_body(body)
            selector = ModelSelector(**args, signature_name=request.signature_name)
            try:
                prediction = self._plane.predict(
                    selector, lambda specs: json_decode.decode_inputs(request, specs)
                )
            except SignatureNotFound as err:  # TF Serving's REST wording (and code) here
                raise InvalidArgument(
                    f'Serving signature name: "{err.name}" not found in signature def'
                ) from err
            return json_encode.encode_outputs(prediction.outputs, request.format)
        signature_name, request_input = json_examples.parse_examples_body(body)
        selector = ModelSelector(**args, signature_name=signature_name)
        if suffix == ":classify":
            _, classification = self._plane.classify(selector, request_input)
            return json_encode.encode_classification(classification)
        _, regression = self._plane.regress(selector, request_input)
        return json_encode.encode_regression(regression)


class _TooLarge(RollwayError):
    code = Code.RESOURCE_EXHAUSTED


def _to_json(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class _ClientGone(Exception):
    """The client disconnected (or timed out) before its body was in."""


class _Backlog:
    """Counts admitted requests (running and queued on the pool) up to ``limit``."""

    def __init__(self, limit: int, threads: int) -> None:
        self.limit = limit
        self.threads = threads
        self._admitted = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.limit:
                return False
            self._admitted += 1
            return True

    def release(self, _: object = None) -> None:
        with self._lock:
            self._admitted -= 1


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError as err:
                raise InvalidArgument("Content-Length is not a number") from err
    return None


def _too_large(size: str, limit: int) -> str:
    return (
        f"Request body of {size} is larger than the {limit}-byte limit "
        "(--rest_api_max_request_bytes)"
    )


async def _respond(send: Send, status: int, headers: Headers, payload: bytes) -> None:
    headers = [*headers, (b"Content-Length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
