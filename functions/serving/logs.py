"""Logging setup, the one place every rollway process configures it: human-
readable text, or one JSON object per line for log pipelines
(``--log_format=json``). Structured fields passed as ``extra={"fields": {...}}``
become keys of the JSON object.

No level prints a credential, DEBUG included. Two lines of defence:

- ``QUIET_LOGGERS`` (boto3, botocore, s3transfer, urllib3, requests) stay at
  INFO or above whatever the level: at DEBUG botocore.auth prints the
  canonical request and string to sign (``x-amz-security-token:<token>``),
  botocore.endpoint and urllib3 the request headers (``Authorization``) and
  URLs (a WebHDFS ``delegation=`` token), botocore.parsers and s3transfer the
  response headers and bodies. None of that helps debug rollway, whose own
  DEBUG lines stay on;
- ``Redactor``, a filter on the one handler, masks what slips through anyway:
  the values of credential environment variables (``CREDENTIAL_ENV`` and any
  ``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``), token, signature and
  ``Authorization`` header values, and the user info of URLs
  (``loader.display.text``).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from urllib.parse import quote

from loader import display

QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3", "requests")
CREDENTIAL_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "WEBHDFS_DELEGATION_TOKEN",
)  # fmt: skip
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD", re.IGNORECASE)
_MIN_SECRET_CHARS = 8  # shorter values (flags, "true") would mask ordinary words
MASK = "<redacted>"
# A header or query parameter whose value is a credential: token:<v>, token=<v>,
# 'X-Amz-Security-Token': b'<v>'. Authorization values run to the end of the
# line or quote ("AWS4-HMAC-SHA256 Credential=..., Signature=...").
_TOKEN_VALUE = re.compile(
    r"(?i)(?<![\w-])(x-amz-security-token|x-amz-signature|delegation)"
    r"([\"']?\s*[:=]\s*(?:(?-i:b)(?=[\"']))?[\"']?)[^\s\"'&,;}]+"
)
_AUTHORIZATION_VALUE = re.compile(
    r"(?i)(?<![\w-])((?:proxy-)?authorization)"
    r"([\"']?\s*[:=]\s*(?:(?-i:b)(?=[\"']))?[\"']?)[^\"'\r\n]+"
)


class Redactor(logging.Filter):
    """Masks credentials in every record it passes (message, exception, stack,
    structured fields). It rewrites the record, so any formatter prints the
    masked text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        values = {v for s in secrets if len(s) >= _MIN_SECRET_CHARS for v in (s, quote(s, ""))}
        ordered = sorted(values, key=len, reverse=True)  # a longer value before its prefix
        self._values = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Redactor:
        names = {*CREDENTIAL_ENV, *(name for name in env if _SECRET_NAME.search(name))}
        return cls(env[name] for name in names if name in env and not name.endswith("_FILE"))

    def redact(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        text = _TOKEN_VALUE.sub(rf"\1\2{MASK}", text)
        text = _AUTHORIZATION_VALUE.sub(rf"\1\2{MASK}", text)
        return display.text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: logging reports it when formatting
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                key: self.redact(value) if isinstance(value, str) else value
                for key, value in fields.items()
            }
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        process = record.processName or ""
        if process.startswith("rollway-worker-"):
            entry["worker"] = int(process.rsplit("-", 1)[1])
        fields = getattr(record, "fields", None)  # log.info(..., extra={"fields": {...}})
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# In a worker of --workers (multiprocessing names it), each line says which.
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"


def configure(log_format: str, level: str) -> None:
    """One stderr handler on the root logger, at ``level``; see the module doc
    for why ``QUIET_LOGGERS`` stay at INFO and what the handler masks."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redactor.from_env(os.environ))
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        worker = multiprocessing.current_process().name.startswith("rollway-worker-")
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT if worker else TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.INFO if root.getEffectiveLevel() < logging.INFO else logging.NOTSET
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
