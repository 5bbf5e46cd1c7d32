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
``functions.serving.api.http_server``, which mounts the Open Inference
Protocol's ``/v2`` beside these on the same port; the body limit, the pool
and its backlog are ``functions.serving.api.rest_calls``, shared with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from functions.serving.api.http_server import Receive, Scope, Send
from functions.serving.api.rest_calls import (
    BACKLOG_PER_THREAD,
    CallRunner,
    ClientGone,
    Headers,
    RestApp,
    error_answer,
    read_body,
    respond,
)
from functions.serving.api.tfserving import responses
from functions.serving.codecs import json_decode, json_encode, json_examples, json_text
from functions.serving.dataplane.plane import DataPlane
from functions.serving.dataplane.types import (
    SIGNATURE_DEF_FIELD,
    ModelSelector,
    SignatureNotFound,
)
from functions.serving.metrics import CONTENT_TYPE, ServingMetrics
from loader.errors import InvalidArgument

_ROUTE = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict|:classify|:regress)?"
)
READY_PATH = "/v1/ready"
__all__ = ["BACKLOG_PER_THREAD", "READY_PATH", "RestApi", "RestOptions"]


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


class RestApi(RestApp):
    """The ASGI application (HTTP scopes only). Inference runs through
    ``runner`` (by default its own, of ``workers`` threads), which the port's
    other applications may share; ``close()`` stops it."""

    def __init__(
        self,
        plane: DataPlane,
        options: RestOptions,
        workers: int,
        metrics: ServingMetrics,
        runner: CallRunner | None = None,
    ) -> None:
        super().__init__(
            runner or CallRunner(workers, options.timeout_seconds, options.inline), metrics
        )
        self._plane = plane
        self._options = options

    async def handle(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        cors = CORS_HEADERS if self._options.cors else []
        if cors and method == "OPTIONS" and (path == READY_PATH or _ROUTE.fullmatch(path)):
            await respond(send, 200, cors, b"")
            return
        if method == "GET" and path == self._options.metrics_path:
            text = self._metrics.render()
            await respond(send, 200, [(b"Content-Type", CONTENT_TYPE.encode())], text)
            return
        try:
            status, payload = await self._dispatch(method, path, scope, receive)
        except ClientGone:
            return
        except Exception as err:
            status, payload = error_answer(err, method, path)
        await respond(send, status, [*cors, (b"Content-Type", b"application/json")], payload)

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
        body = await read_body(scope, receive, self._options.max_request_bytes)
        # Inline, or on the pool if admitted, within the timeout (rest_calls).
        return 200, await self._runner.run(lambda: self._post(suffix or "", selector_args, body))

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


def _to_json(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
