"""The one error tree of rollway.

Every failure a caller can see is one of these classes. Each carries a
canonical status code (the gRPC/absl code space, which TensorFlow Serving uses
too); transports map that code exactly once: gRPC in
``functions.serving.api.grpc_errors`` (the status of the same name), HTTP in
``functions.serving.api.http_errors`` (TF Serving's table; each class below names
its status). Errors the loader may retry say so with ``retriable = True``.
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
    """Input that is malformed or breaks a rule (a request, an event, a URI, a flag,
    a file); resent unchanged it fails again. gRPC INVALID_ARGUMENT, HTTP 400."""

    code = Code.INVALID_ARGUMENT


class NotFound(RollwayError):
    """A named thing does not exist: a model, version, signature, stored object or
    bucket. gRPC NOT_FOUND, HTTP 404."""

    code = Code.NOT_FOUND


class AlreadyExists(RollwayError):
    """A create-once write lost: the version, staging claim or file is already
    there. gRPC ALREADY_EXISTS, HTTP 409."""

    code = Code.ALREADY_EXISTS


class FailedPrecondition(RollwayError):
    """The state does not allow it (a version not verified COMPLETE, a model with no
    assigned version, a refused reload); change the state, not the request. gRPC
    FAILED_PRECONDITION, HTTP 400."""

    code = Code.FAILED_PRECONDITION


class PermissionDenied(RollwayError):
    """The store (file modes, S3 or HDFS access control) or the Kubernetes API
    (RBAC) refused an authenticated caller. gRPC PERMISSION_DENIED, HTTP 403."""

    code = Code.PERMISSION_DENIED


class Unauthenticated(RollwayError):
    """Credentials are missing, invalid or expired (S3 keys, an HDFS token, the
    Kubernetes API's). gRPC UNAUTHENTICATED, HTTP 401."""

    code = Code.UNAUTHENTICATED


class DataLoss(RollwayError):
    """Stored bytes are not what they claim to be (corrupt, truncated); retrying
    cannot fix them. gRPC DATA_LOSS, HTTP 500."""

    code = Code.DATA_LOSS


class ResourceExhausted(RollwayError):
    """A limit or quota was reached; rollway raises it only for a foreign error of
    that code (``error_for_code``). gRPC RESOURCE_EXHAUSTED, HTTP 429."""

    code = Code.RESOURCE_EXHAUSTED


class Unimplemented(RollwayError):
    """Well formed, but not supported, as by TF Serving (a JSON value for a dtype
    with no conversion). gRPC UNIMPLEMENTED, HTTP 501."""

    code = Code.UNIMPLEMENTED


class DeadlineExceeded(RollwayError):
    """An operation ran past its time limit (a REST request, startup waiting for
    its assignments); retriable. gRPC DEADLINE_EXCEEDED, HTTP 504."""

    code = Code.DEADLINE_EXCEEDED
    retriable = True


class Unavailable(RollwayError):
    """Down, busy or changing for now (a store, Kafka, the Kubernetes API, a full
    batch queue, the worker supervisor); retriable. gRPC UNAVAILABLE, HTTP 503."""

    code = Code.UNAVAILABLE
    retriable = True


class Internal(RollwayError):
    """A failure no input explains: a store's unexpected answer, a profiler
    failure, a bug. gRPC INTERNAL, HTTP 500."""

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
