"""The one error tree of rollway.

Every failure a caller can see is one of these classes. Each carries a
canonical status code (the gRPC/absl code space, which TensorFlow Serving uses
too); transports map that code exactly once: gRPC in
``functions.serving.api.grpc_errors``. Errors the loader may retry say so with
``retriable = True``.
"""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """Canonical status codes, numbered as in google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RollwayError(Exception):
    """Base of the tree. ``message`` is what clients see, verbatim."""

    code: Code = Code.UNKNOWN
    retriable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(RollwayError):
    code = Code.INVALID_ARGUMENT


class NotFound(RollwayError):
    code = Code.NOT_FOUND


class AlreadyExists(RollwayError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(RollwayError):
    code = Code.FAILED_PRECONDITION


class PermissionDenied(RollwayError):
    code = Code.PERMISSION_DENIED


class Unauthenticated(RollwayError):
    code = Code.UNAUTHENTICATED


class DataLoss(RollwayError):
    """Stored bytes are not what they claim to be (corrupt, truncated)."""

    code = Code.DATA_LOSS


class ResourceExhausted(RollwayError):
    code = Code.RESOURCE_EXHAUSTED


class Unimplemented(RollwayError):
    code = Code.UNIMPLEMENTED


class DeadlineExceeded(RollwayError):
    code = Code.DEADLINE_EXCEEDED
    retriable = True


class Unavailable(RollwayError):
    code = Code.UNAVAILABLE
    retriable = True


class Internal(RollwayError):
    code = Code.INTERNAL


class ConfigError(InvalidArgument):
    """Bad startup configuration (flags, files). The CLI exits non-zero on it."""


class LoadError(RollwayError):
    """A model version could not be loaded. ``code`` is taken from the cause."""

    def __init__(self, message: str, code: Code = Code.UNKNOWN) -> None:
        super().__init__(message)
        self.code = code


_BY_CODE: dict[Code, type[RollwayError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        DataLoss,
        ResourceExhausted,
        Unimplemented,
        DeadlineExceeded,
        Unavailable,
        Internal,
    )
}


def error_for_code(code: Code, message: str) -> RollwayError:
    """Builds the error class that matches ``code`` (used for foreign errors)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = RollwayError(message)
        err.code = code
        return err
    return cls(message)
