"""Storage backends, dispatched by URI scheme through one registry.

``open_storage(uri)`` returns a ``Storage`` rooted at ``uri``. Each backend is
one module exposing ``from_uri(uri: str) -> Storage``; modules are imported on
first use, so a server that only reads local disk never imports boto3 or
pyarrow's HDFS bindings. Adding a backend is one line in ``BACKENDS``.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from loader import display
from loader.errors import InvalidArgument
from loader.storage.base import CHUNK_BYTES, ObjectInfo, Storage, check_key

__all__ = [
    "BACKENDS",
    "CHUNK_BYTES",
    "ObjectInfo",
    "Storage",
    "check_key",
    "open_storage",
    "scheme_of",
]

# URI scheme -> backend module. "" is a plain local path.
BACKENDS: dict[str, str] = {
    "": "loader.storage.local",
    "file": "loader.storage.local",
    "s3": "loader.storage.s3",
    "hdfs": "loader.storage.hdfs",
    "webhdfs": "loader.storage.webhdfs",
    "webhdfss": "loader.storage.webhdfs",
}


def scheme_of(uri: str) -> str:
    """The registry key for ``uri``; a Windows-style or plain path is local.
    A URI too malformed to parse is InvalidArgument."""
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError as err:
        raise InvalidArgument(f"malformed storage URI {display.uri(uri)!r}: {err}") from None
    return "" if len(scheme) <= 1 else scheme


def open_storage(uri: str) -> Storage:
    scheme = scheme_of(uri)
    module_name = BACKENDS.get(scheme)
    if module_name is None:
        known = ", ".join(sorted(f"{s}://" for s in BACKENDS if s))
        raise InvalidArgument(
            f"unsupported storage URI scheme {scheme!r} in {display.uri(uri)!r};"
            f" use a local path or one of {known}"
        )
    module = importlib.import_module(module_name)
    storage: Storage = module.from_uri(uri)
    return storage
