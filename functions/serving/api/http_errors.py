"""The error tree mapped to HTTP status codes: the one place this happens.

The table is TF Serving's (``ToHTTPStatusCode`` in its REST handler), so REST
clients see the same statuses they see from ``tensorflow_model_server``.
"""

from __future__ import annotations

from http import HTTPStatus

from functions.serving.codecs import json_text
from loader.errors import Code

HTTP_CODES: dict[Code, int] = {
    Code.OK: HTTPStatus.OK,
    Code.CANCELLED: 499,  # client closed request
    Code.UNKNOWN: HTTPStatus.INTERNAL_SERVER_ERROR,
    Code.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    Code.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    Code.NOT_FOUND: HTTPStatus.NOT_FOUND,
    Code.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    Code.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    Code.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    Code.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    Code.ABORTED: HTTPStatus.CONFLICT,
    Code.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    Code.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    Code.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    Code.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    Code.DATA_LOSS: HTTPStatus.INTERNAL_SERVER_ERROR,
    Code.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
}


def http_status(code: Code) -> int:
    return int(HTTP_CODES.get(code, HTTPStatus.INTERNAL_SERVER_ERROR))


def error_body(message: str) -> bytes:
    """The body of every HTTP error, TF Serving's ``{"error": "<message>"}``."""
    return json_text.dumps({"error": message})
