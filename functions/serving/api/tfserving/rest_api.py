"""TF Serving's REST API (``--rest_api_port``), as a WSGI app served by waitress.

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

Why waitress: a production WSGI server in pure Python with a fixed worker
pool (``--rest_api_num_threads``), request body limits and no event loop to
block; inference here is CPU-bound TensorFlow work, so threads are the right
unit, and gRPC remains the fast path (see the benchmark).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from functions.serving.api.http_errors import http_status
from functions.serving.api.tfserving import responses
from functions.serving.codecs import json_decode, json_encode, json_examples, json_text
from functions.serving.dataplane.plane import DataPlane
from functions.serving.dataplane.types import (
    SIGNATURE_DEF_FIELD,
    ModelSelector,
    SignatureNotFound,
)
from functions.serving.metrics import CONTENT_TYPE, ServingMetrics
from loader.errors import Code, DeadlineExceeded, InvalidArgument, RollwayError

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict|:classify|:regress)?"
)
READY_PATH = "/v1/ready"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class RestOptions:
    timeout_seconds: float
    max_request_bytes: int
    check_method: bool = False
    metrics_path: str | None = None  # Prometheus scrape path, when enabled
    cors: bool = False


CORS_HEADERS = [
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
]


class RestApi:
    """The WSGI application. Each request runs on a worker pool so that
    ``--rest_api_timeout_in_ms`` can answer 504 without waiting for TensorFlow."""

    def __init__(
        self, plane: DataPlane, options: RestOptions, workers: int, metrics: ServingMetrics
    ) -> None:
        self._plane = plane
        self._metrics = metrics
        self._options = options
        self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix="rollway-rest")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        cors = CORS_HEADERS if self._options.cors else []
        if cors and method == "OPTIONS" and (path == READY_PATH or _ROUTE.fullmatch(path)):
            start_response("200 OK", [*cors, ("Content-Length", "0")])
            return [b""]
        if method == "GET" and path == self._options.metrics_path:
            text = self._metrics.render()
            start_response(
                "200 OK",
                [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(text)))],
            )
            return [text]
        try:
            status, body = self._dispatch(method, path, environ)
        except _TooLarge as err:  # HTTP's own status; no canonical code says "too large"
            status, body = 413, {"error": err.message}
        except RollwayError as err:
            status, body = http_status(err.code), {"error": err.message}
        except Exception as err:
            log.exception("unexpected error in %s %s", method, path)
            status, body = 500, {"error": f"internal error: {type(err).__name__}: {err}"}
        payload = json_text.dumps(body)
        start_response(
            f"{status} {_reason(status)}",
            [*cors, ("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    def _dispatch(self, method: str, path: str, environ: dict[str, Any]) -> tuple[int, Any]:
        if path == READY_PATH and method == "GET":
            ready = self._plane.ready()
            return (200 if ready else 503), {"ready": ready}
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
            return 200, self._get(suffix, selector_args)
        body = json_text.parse_json(self._read_body(environ))
        future = self._pool.submit(self._post, suffix or "", selector_args, body)
        try:
            return 200, future.result(timeout=self._options.timeout_seconds)
        except futures.TimeoutError as err:
            raise DeadlineExceeded(
                f"Request timed out after {self._options.timeout_seconds * 1000:.0f} ms"
            ) from err

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError as err:
            raise InvalidArgument("Content-Length is not a number") from err
        if length > self._options.max_request_bytes:
            raise _TooLarge(
                f"Request body of {length} bytes is larger than the "
                f"{self._options.max_request_bytes}-byte limit (--rest_api_max_request_bytes)"
            )
        data: bytes = environ["wsgi.input"].read(length) if length else b""
        return data

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

    def _post(self, suffix: str, args: dict[str, Any], body: Any) -> Any:
        with self._metrics.request(args["name"], suffix[1:], "REST"):
            return self._run(suffix, args, body)

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


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Client Closed Request" if status == 499 else "Error"


def serve_rest(app: RestApi, host: str, port: int, threads: int, max_body: int) -> Any:
    """Starts waitress on ``host:port`` in a daemon thread; returns the server
    (``.close()`` stops it)."""
    import threading

    import waitress.server

    server = waitress.server.create_server(
        app,
        host=host,
        port=port,
        threads=threads,
        # Twice our own limit: bodies up to that get our JSON 413 from the app;
        # waitress refuses anything larger itself (plain text) without buffering it.
        max_request_body_size=2 * max_body,
        ident="rollway",
        clear_untrusted_proxy_headers=True,
    )
    threading.Thread(target=server.run, name="rollway-rest", daemon=True).start()
    log.info("Exporting HTTP/REST API at %s:%d ...", host, port)
    return server
