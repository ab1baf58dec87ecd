"""What a playbook run's events and output say: its outcome from the final stats, its changes and their diffs.

Exit codes do not say success (no hosts matched exits 0, an unreachable host and a syntax error both exit 4):
the final `playbook_on_stats` event does. Check-mode runs (drift, previews) report what would change, with diffs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..core.runfiles import read_own
from ..core.types import TaskChange


def judge(stats: dict[str, Any] | None, no_hosts_matched: bool, status: str, rc: int | None) -> tuple[bool, str, dict[str, str]]:
    """Given the final `playbook_on_stats` data, return (ok, reason, per-host result)."""
    if status in ("timeout", "canceled"):
        return False, f"run {'timed out' if status == 'timeout' else 'was canceled'}", {}
    if stats is None:
        return False, f"ansible-playbook ended without final stats (exit code {rc}): syntax error or missing file?", {}
    hosts: dict[str, str] = {}
    for host in stats.get("processed", {}):
        hosts[host] = "ok"
    for host in stats.get("failures", {}):
        hosts[host] = "failed"
    for host in stats.get("dark", {}):
        hosts[host] = "unreachable"
    if no_hosts_matched or not hosts:
        return False, "no hosts matched: the inventory or the play's hosts pattern selects nothing", hosts
    bad = sorted(h for h, r in hosts.items() if r != "ok")
    if bad:
        fine = len(hosts) - len(bad)  # say the others were fine: "failed on prod-1" alone reads as all failed
        return (
            False,
            ("failed on " + ", ".join(f"{h} ({hosts[h]})" for h in bad) + (f"; {fine} of {len(hosts)} hosts ok" if fine else "")),
            hosts,
        )
    if status != "successful":
        return False, f"ansible-playbook reported {status} (exit code {rc})", hosts
    return True, f"succeeded on {len(hosts)} host{'s' if len(hosts) != 1 else ''}", hosts


TASK_ENDS = ("runner_on_ok", "runner_on_failed", "runner_on_skipped", "runner_on_unreachable")


def timed_out(seconds: float, busy: dict[str, str]) -> str:
    """What a run stopped at its time limit says: after how long, the task each host was still in, and the setting."""
    tasks: dict[str, list[str]] = {}
    for host, task in busy.items():
        tasks.setdefault(task, []).append(host)
    where = "; ".join(f"in task '{task}' on {', '.join(sorted(hosts))}" for task, hosts in tasks.items())
    return (
        f"run timed out after {seconds:g}s {where or 'before any task started'} (every process of the run was stopped); "
        "if it needs longer, raise the environment's timeout: in the config"
    )


MAX_DIFF = 20_000  # characters of one task's diff kept for `gitopsd drift`


def reports_changed(event: dict[str, Any]) -> bool:
    """Whether a runner_on_ok event says `changed`. A no_log result keeps nothing in the event's data, not even
    `changed`: then the line Ansible printed for it says ("changed: [host]")."""
    res = (event.get("event_data") or {}).get("res")
    if not isinstance(res, dict):
        return False
    if "censored" in res and "changed" not in res:
        return re.sub(r"\x1b\[[0-9;]*m", "", str(event.get("stdout") or "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


def task_change(data: dict[str, Any], workdir: Path) -> TaskChange:
    """A `changed` task result (a runner_on_ok event's data) as a TaskChange: no_log results keep no diff."""
    res = data.get("res") or {}
    task = str(data.get("task") or data.get("task_action") or "?")
    path = str(data.get("task_path") or "")
    root = str(workdir) + "/"
    if path.startswith(root):  # each run exports the tree afresh: the place in the tree names the task
        path = path[len(root) :]
    no_log = bool(res.get("_ansible_no_log")) or "censored" in res
    diffs: list[Any] = []
    if not no_log:
        diffs += res["diff"] if isinstance(res.get("diff"), list) else [res.get("diff")]
        for item in res.get("results") or []:
            if isinstance(item, dict) and not item.get("_ansible_no_log") and "censored" not in item:
                diffs += item["diff"] if isinstance(item.get("diff"), list) else [item.get("diff")]
    text = "".join(render_diff(d) for d in diffs if d)
    if len(text) > MAX_DIFF:
        text = text[:MAX_DIFF] + "\n[diff cut at 20000 characters]\n"
    return TaskChange(str(data.get("host", "?")), task, f"{task}|{path}", text, no_log)


def render_diff(diff: Any) -> str:
    """One of Ansible's diffs (before/after with headers, or a prepared text) as unified diff text."""
    import difflib

    if not isinstance(diff, dict):
        return ""
    prepared = diff.get("prepared")
    if isinstance(prepared, str):
        return prepared if prepared.endswith("\n") else prepared + "\n"
    before, after = diff.get("before", ""), diff.get("after", "")
    if not isinstance(before, str):
        before = json.dumps(before, indent=2, sort_keys=True) + "\n"
    if not isinstance(after, str):
        after = json.dumps(after, indent=2, sort_keys=True) + "\n"
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"before: {diff.get('before_header', '')}".rstrip(),
            f"after: {diff.get('after_header', '')}".rstrip(),
        )
    )


def content_error(stdout: Path, workdir: Path) -> str | None:
    """Ansible's parse error in a run's output (exit code 4, no stats), with where it is in the tree; else None.

    ansible-playbook exits 4 without running a play when it cannot load the playbook: invalid YAML,
    an unknown module or attribute, a missing role or file. Retrying the same tree cannot help.
    """
    try:  # the run may have replaced its output with a link: read only its own file (below its data dir)
        lines = read_own(stdout.parents[2], stdout).splitlines()
    except OSError:
        return None
    error = next((i for i, line in enumerate(lines) if line.startswith(("[ERROR]: ", "ERROR! "))), None)
    if error is None:
        return None
    text = lines[error].split(" ", 1)[1].strip()
    origin = next((line for line in lines[error + 1 : error + 4] if line.startswith("Origin: ")), None)
    if origin:
        where = origin[len("Origin: ") :].strip()
        root = str(workdir.resolve()) + "/"
        text += f" ({where[len(root) :] if where.startswith(root) else where})"
    return text
