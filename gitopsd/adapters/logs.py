"""Logging: plain lines for terminals and journald, JSON lines for shipping to ELK.

Every line about a deployment names its repository, environment, commit and deployment id.
Under journald (JOURNAL_STREAM set) lines carry no timestamp: the journal adds its own.
JSON lines use Elastic Common Schema names (docs/monitoring.md, "Logs for ELK"); each deployment's end adds one
summary event (event.action "deployment"), to JSON only: the plain lines already say it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

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


ECS_VERSION = "8.11.0"
OUTCOMES = {"succeeded": "success", "failed": "failure"}  # ECS allows success, failure, unknown


class JsonFormatter(logging.Formatter):
    """One JSON object a line with ECS field names: `@timestamp`, `log.level`, `message` and `ecs.version` as dotted
    top-level keys (as Elastic's ecs-logging libraries write them), the rest nested (`log.logger`, `labels.*`,
    `event.*`, `error.*`, and gitopsd's own under `gitopsd.*`). Filebeat's ndjson parser with expand_keys reads it."""

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC)
        doc: dict[str, Any] = {
            "@timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "log.level": record.levelname.lower(),
            "message": record.getMessage(),
            "ecs.version": ECS_VERSION,
            "log": {"logger": record.name},
            "service": {"name": "gitopsd"},
            "process": {"pid": record.process, "thread": {"name": record.threadName}},
        }
        labels = {f: str(getattr(record, f)) for f in FIELDS if getattr(record, f, None) is not None}
        if labels:
            doc["labels"] = labels
        for key, value in getattr(record, "ecs", {}).items():  # a summary event's event.*, user.* and gitopsd.*
            if isinstance(value, dict):
                doc.setdefault(key, {}).update(value)
            else:
                doc[key] = value
        if record.exc_info:
            doc["error"] = {
                "type": record.exc_info[0].__name__ if record.exc_info[0] else "",
                "message": str(record.exc_info[1]),
                "stack_trace": self.formatException(record.exc_info),
            }
        return json.dumps(doc, default=str)


class NotInPlain(logging.Filter):
    """Plain lines stay as they were: the summary events are for log shippers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "json_only", False)


def deployment_ended(logger: logging.Logger, d: Any) -> None:
    """Log the one summary event of a finished deployment `d` (a Deployment as the store has it)."""
    took = max(0.0, (d.finished_at or d.started_at) - d.started_at)
    ecs = {
        "event": {
            "kind": "event",
            "category": ["process"],
            "type": ["end"],
            "action": "deployment",
            "outcome": OUTCOMES.get(d.result, "unknown"),
            "duration": int(took * 1e9),
            "start": _iso(d.started_at),
            "end": _iso(d.finished_at or d.started_at),
            **({"reason": d.outcome} if d.outcome else {}),
        },
        "user": {"name": d.actor},
        "gitopsd": {
            "kind": d.kind,
            "result": d.result,
            "trigger": d.trigger,
            "actor": d.actor,
            "commit": d.commit,
            "tree": d.tree,
            "previous_commit": d.previous_commit,
            "attempt": d.attempt,
        },
    }
    logger.log(
        logging.INFO if d.result == "succeeded" else logging.WARNING,
        "deployment #%s %s: %s of %s in %.1fs, %s by %s",
        d.id,
        d.result,
        d.kind,
        d.commit[:7],
        took,
        d.trigger,
        d.actor,
        extra={"repo": d.repo, "env": d.env, "commit": d.commit[:7], "deployment": d.id, "ecs": ecs, "json_only": True},
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def setup(log_format: str = "plain", level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(PlainFormatter(timestamps="JOURNAL_STREAM" not in os.environ))
        handler.addFilter(NotInPlain())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("apscheduler", "ansible_runner", "tzlocal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
