"""Logging setup: human-readable text, or one JSON object per line for log
pipelines (``--log_format=json``). Structured fields passed as
``extra={"fields": {...}}`` become keys of the JSON object."""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
from datetime import datetime, timezone


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
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# In a worker of --workers (multiprocessing names it), each line says which.
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"


def configure(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        worker = multiprocessing.current_process().name.startswith("rollway-worker-")
        handler.setFormatter(logging.Formatter(WORKER_TEXT_FORMAT if worker else TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
