"""Logging: plain lines for terminals and journald, JSON lines for shipping to ELK.

Every line about a deployment names its repository, environment, commit and deployment id.
Under journald (JOURNAL_STREAM set) lines carry no timestamp: the journal adds its own.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone

FIELDS = ("repo", "env", "commit", "deployment")


class PlainFormatter(logging.Formatter):
    def __init__(self, timestamps: bool):
        super().__init__()
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        where = "/".join(str(getattr(record, f)) for f in ("repo", "env") if getattr(record, f, None))
        tags = [where] if where else []
        if getattr(record, "commit", None):
            tags.append(str(record.commit))  # type: ignore[attr-defined]
        if getattr(record, "deployment", None):
            tags.append(f"#{record.deployment}")  # type: ignore[attr-defined]
        prefix = f"[{' '.join(tags)}] " if tags else ""
        line = f"{record.levelname.lower()}: {prefix}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if self.timestamps:
            line = f"{datetime.now().astimezone().isoformat(timespec='seconds')} {line}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for f in FIELDS:
            value = getattr(record, f, None)
            if value is not None:
                doc[f] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup(log_format: str = "plain", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "ansible_runner", "tzlocal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
