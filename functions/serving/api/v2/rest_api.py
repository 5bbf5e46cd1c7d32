"""The Open Inference Protocol's REST API, mounted at ``/v2`` on the REST port.

Routes (KServe's and Triton's):

* ``GET  /v2/health/live``, ``/v2/health/ready``: ``{"live": true}``,
  ``{"ready": ...}``; ready is /v1/ready's answer, 503 when false;
* ``GET  /v2``: server metadata;
* ``GET  /v2/models/{m}[/versions/{v}]``: model metadata;
  ``.../ready``: 200 ``{"name", "ready": true}``, else 503 with ``false``;
* ``POST .../infer``: JSON tensors and the binary tensor data extension
  (``rest_codec``);
* ``POST /v2/repository/index`` (body ``{"ready": true}`` optional),
  ``POST /v2/repository/models/{m}/load`` and ``/unload``.

Errors are ``{"error": "<message>"}`` with the status of the one HTTP map
(``http_errors``): 400 for a bad request, 404 for an unknown model, version
or route, 503 when the pool is full, 504 on the timeout, 413 past the body
limit. Infer runs as TF Serving's REST predict does, through the port's one
:class:`CallRunner` (inline, or on the pool with its backlog and timeout)
after its body is in; metadata, health and the index answer on the loop;
load and unload wait for the models on a thread of their own (never the
pool, never the loop: a load takes seconds), one at a time.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from functions.serving.api.http_server import Receive, Scope, Send
from functions.serving.api.rest_calls import (
    CallRunner,
    ClientGone,
    Headers,
    RestApp,
    error_answer,
    header,
    read_body,
    respond,
)
from functions.serving.api.v2 import rest_codec
from functions.serving.api.v2.inference import (
    ENTRYPOINT_REST,
    METRICS_API,
    IndexEntry,
    ModelMetadata,
    TensorMetadata,
    V2Api,
)
from functions.serving.codecs import json_text
from functions.serving.metrics import ServingMetrics
from loader.errors import InvalidArgument, NotFound

PREFIX = "/v2"
_MODEL = re.compile(
    r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<suffix>/ready|/infer)?"
)
_REPOSITORY = re.compile(r"/v2/repository/models/(?P<name>[^/]+)/(?P<action>load|unload)")
_INDEX = "/v2/repository/index"
_JSON: Headers = [(b"Content-Type", b"application/json")]


class V2RestApi(RestApp):
    """The ASGI application for ``/v2`` paths (HTTP scopes only)."""

    def __init__(
        self,
        api: V2Api,
        runner: CallRunner,
        max_request_bytes: int,
        metrics: ServingMetrics,
    ) -> None:
        super().__init__(runner, metrics)
        self._api = api
        self._max_request_bytes = max_request_bytes
        self._repository_lock = asyncio.Lock()

    async def handle(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        headers = _JSON
        try:
            status, payload, json_length = await self._dispatch(method, path, scope, receive)
            if json_length is not None:
                headers = [
                    (b"Content-Type", b"application/octet-stream"),
                    (b"Inference-Header-Content-Length", str(json_length).encode()),
                ]
        except ClientGone:
            return
        except Exception as err:
            status, payload = error_answer(err, method, path)
        await respond(send, status, headers, payload)

    async def _dispatch(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, int | None]:
        path = path.rstrip("/") or path
        if method == "GET":
            status, doc = self._get(path)
            return status, _dumps(doc), None
        if method != "POST":
            raise InvalidArgument(f"Malformed request: {method} {json_text.clip(path)}")
        if (match := _MODEL.fullmatch(path)) and match["suffix"] == "/infer":
            body = await read_body(scope, receive, self._max_request_bytes)
            length = header(scope, rest_codec.HEADER_LENGTH)
            name, version = match["name"], match["version"] or ""
            payload, json_length = await self._runner.run(
                lambda: self._infer(name, version, body, length)
            )
            return 200, payload, json_length
        if path == _INDEX:
            doc = await self._json_body(scope, receive)
            ready = doc.get("ready", False)
            if not isinstance(ready, bool):
                raise InvalidArgument('"ready" must be a boolean')
            entries = self._api.repository_index(ready)
            return 200, _dumps([_index_entry(e) for e in entries]), None
        if match := _REPOSITORY.fullmatch(path):
            doc = await self._json_body(scope, receive)
            return 200, _dumps(await self._change(match["name"], match["action"], doc)), None
        raise _no_route(method, path)

    def _get(self, path: str) -> tuple[int, Any]:
        if path == PREFIX:
            meta = self._api.server_metadata()
            return 200, {"name": meta.name, "version": meta.version,
                         "extensions": list(meta.extensions)}  # fmt: skip
        if path == "/v2/health/live":
            return 200, {"live": self._api.live()}
        if path == "/v2/health/ready":
            ready = self._api.ready()
            return (200 if ready else 503), {"ready": ready}
        match = _MODEL.fullmatch(path)
        if match is None or match["suffix"] == "/infer":
            raise _no_route("GET", path)
        name, version = match["name"], match["version"] or ""
        if match["suffix"] == "/ready":
            ready = self._api.model_ready(name, version)
            return (200 if ready else 503), {"name": name, "ready": ready}
        return 200, _metadata(self._api.model_metadata(name, version))

    def _infer(
        self, name: str, version: str, body: bytes, length: bytes | None
    ) -> tuple[bytes, int | None]:
        """On the pool (or inline): decode, infer, encode (all CPU-bound)."""
        with self._metrics.request(name, METRICS_API, ENTRYPOINT_REST):
            request = rest_codec.parse_infer(name, version, body, length)
            response = self._api.infer(request)
            return rest_codec.encode_infer(request, response)

    async def _json_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """A repository request's body: empty, or a JSON object."""
        body = await read_body(scope, receive, self._max_request_bytes)
        if not body.strip():
            return {}
        doc: dict[str, Any] = json_text.parse_json(body)
        return doc

    async def _change(self, name: str, action: str, doc: dict[str, Any]) -> dict[str, Any]:
        parameters = doc.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidArgument('"parameters" must be a JSON object')
        call = self._api.load if action == "load" else self._api.unload
        async with self._repository_lock:
            await asyncio.to_thread(call, name, parameters)
        return {"name": name, action: True}


def _no_route(method: str, path: str) -> NotFound:
    return NotFound(f"Not found: {method} {json_text.clip(path)}")


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _tensor(meta: TensorMetadata) -> dict[str, Any]:
    return {"name": meta.name, "datatype": meta.datatype, "shape": list(meta.shape)}


def _metadata(meta: ModelMetadata) -> dict[str, Any]:
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor(t) for t in meta.inputs],
        "outputs": [_tensor(t) for t in meta.outputs],
    }


def _index_entry(entry: IndexEntry) -> dict[str, Any]:
    doc = {"name": entry.name, "state": entry.state, "reason": entry.reason}
    if entry.version:
        doc["version"] = entry.version
    return doc
