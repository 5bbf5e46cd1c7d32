"""What may be shown of a URI, a name or an error: rollway's one sanitizer.

Everything that reaches a log line, an error message, an HTTP answer or a
dead letter and came from outside (an event, a header, a storage server's
reply) or may hold a credential passes through one of these four:

* ``uri(value)``: a URI without user info, query or fragment (where presigned
  URLs and ``user:secret@`` live). Never raises.
* ``text(value)``: free text (an exception's message, a server's answer) with
  the user info of every URL in it replaced by ``<redacted>``.
* ``quoted(value, limit)``: hostile text quoted (``repr``: control characters
  escaped) and cut to ``limit`` characters, so that it cannot forge log lines
  or grow a message without bound.
* ``name(value)``: an identifier shown as it is when it is short and
  printable, quoted otherwise.
* ``error(err, limit)``: an exception for an answer or a log: rollway's own
  messages name no credential by contract (``loader.errors``) and are cut to
  ``limit``; anything else is its class name and scrubbed ``text``.

Secrets that are not in URLs (tokens in environment variables, Authorization
headers) are masked on every log record by ``functions.serving.logs.Redactor``,
which applies ``text`` last.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from loader.errors import RollwayError

MAX_NAME_CHARS = 1024  # an identifier longer than this is quoted and cut

_USERINFO = re.compile(r"(//)[^/@\s]+@")


def uri(value: str) -> str:
    """``value`` without user info, query or fragment: the form safe for logs
    and errors. Never raises; a URI too malformed to parse becomes a placeholder."""
    try:
        parts = urlsplit(value)
        if not parts.scheme or len(parts.scheme) <= 1:  # a path (C:\\ too): nothing to hide
            return value
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:  # a bad port or IPv6 literal: it may hold anything, show nothing
        return "<malformed URI>"
    return f"{parts.scheme}://{host}{parts.path}"


def text(value: str) -> str:
    """``value`` with the user info of every URL in it (``//user:secret@host``)
    replaced: ``uri`` for free text such as log lines and error messages."""
    return _USERINFO.sub(r"\1<redacted>@", value)


def quoted(value: str, limit: int = 120) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters (it may be hostile)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."


def name(value: str) -> str:
    """An identifier as it is when short and printable; quoted and cut otherwise."""
    return value if len(value) <= MAX_NAME_CHARS and value.isprintable() else quoted(value)


def error(err: BaseException, limit: int = 500) -> str:
    """``err`` for answers and logs, at most about ``limit`` characters."""
    if isinstance(err, RollwayError):
        return text(err.message)[:limit]
    return f"{type(err).__name__}: {text(str(err))[:200]}"
