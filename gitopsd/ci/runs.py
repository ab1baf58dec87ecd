"""The records of built-in CI runs: one folder per run under config.ci_dir, numbered, with run.json.

`ci_dir/<id>/run.json` says what ran (repository, branch, commit, tree, who pushed), each step's
state and description, and how the run ended; `ci_dir/<id>/<n>-<step>.log` holds each step's
output. The daemon writes them (atomically: a reader sees the old record or the new one);
`gitopsd logs --ci ID` reads them. Stdlib only: the command line imports this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ACTIVE = ("queued", "running")  # a run.json left in one of these by a stopped daemon was interrupted
STEP_OPEN = ("queued", "running")


def folder(ci_dir: Path, run_id: int) -> Path:
    return ci_dir / str(run_id)


def log_name(index: int, step: str) -> str:
    return f"{index}-{step}.log"


def save(ci_dir: Path, record: dict[str, Any]) -> None:
    """Write a run's record atomically."""
    path = folder(ci_dir, int(record["id"])) / "run.json"
    tmp = path.with_name(f".run.json.{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load(ci_dir: Path, run_id: int) -> dict[str, Any] | None:
    try:
        data = json.loads((folder(ci_dir, run_id) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def ids(ci_dir: Path) -> list[int]:
    """Every run id with a folder, ascending."""
    return sorted(int(p.name) for p in ci_dir.iterdir() if p.name.isdigit()) if ci_dir.is_dir() else []


def describe(ci_dir: Path, run_id: int) -> list[str]:
    """What `gitopsd logs --ci ID` prints: the run, then each step's state and output. Raise LookupError if unknown."""
    record = load(ci_dir, run_id)
    if record is None:
        raise LookupError(
            f"no CI run #{run_id} in {ci_dir} (its id is in the description of its gitopsd/<step> "
            "statuses and in the daemon's log)"
        )
    lines = [
        f"# CI run #{run_id}: {record['repo']} {record['branch']} {record['commit']} -> {record['state']}"
        + (f": {record['reason']}" if record.get("reason") else "")
    ]
    lines.append(
        f"# tree {record['tree']}, pushed by {record.get('pusher', 'unknown')}"
        + (f", run again as asked by {record['rerun_by']}" if record.get("rerun_by") else "")
    )
    for index, step in enumerate(record.get("steps", []), 1):
        lines.append(
            f"# --- step {step['name']}: {step['state']}"
            + (f" ({step['description']})" if step.get("description") else "")
            + " ---"
        )
        for name, art in sorted((step.get("artifacts") or {}).items()):
            lines.append(f"# artifact {name}: sha256 {art['sha256']}, {art['size']} bytes")
        try:
            text = (folder(ci_dir, run_id) / log_name(index, step["name"])).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # the step never started
        lines.extend(text.splitlines())
    return lines
