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


def status_of(err: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """A handler's exception as its gRPC status: RollwayError by its code, anything
    else INTERNAL (and logged with its traceback: it is a bug)."""
    if isinstance(err, RollwayError):
        return grpc_code(err.code), err.message
    log.exception("unexpected error in %s", method)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}"


def rpc_errors(method: F) -> F:
    """For synchronous handlers: an exception becomes the RPC's status."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as err:
            context.abort(*status_of(err, method.__name__))

    return wrapper  # type: ignore[return-value]


def async_rpc_errors(method: F) -> F:
    """For ``async def`` handlers of a ``grpc.aio`` server: the same mapping."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(self, request, context)
        except Exception as err:
            await context.abort(*status_of(err, method.__name__))

    return wrapper  # type: ignore[return-value]
