"""The error tree mapped to gRPC status codes: the one place this happens."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from loader.errors import Code, RollwayError

log = logging.getLogger(__name__)

GRPC_CODES: dict[Code, grpc.StatusCode] = {
    Code[status.name]: status for status in grpc.StatusCode if status.name in Code.__members__
}

F = TypeVar("F", bound=Callable[..., Any])


def grpc_code(code: Code) -> grpc.StatusCode:
    return GRPC_CODES.get(code, grpc.StatusCode.UNKNOWN)


def rpc_errors(method: F) -> F:
    """Turns RollwayError into its gRPC status; anything else is INTERNAL and logged."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except RollwayError as err:
            context.abort(grpc_code(err.code), err.message)
        except Exception as err:
            log.exception("unexpected error in %s", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")

    return wrapper  # type: ignore[return-value]
