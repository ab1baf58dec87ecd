"""What every command group shares: the config --config names, the repository --repo names, the daemon's sockets.

Below the command groups so that none of them imports another: main.py registers them, they import only this.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.words import plural as plural  # the command groups take it from here


def load_config(args: argparse.Namespace) -> Any:
    """The configuration --config names, or one line saying to run check-config."""
    from ..config import ConfigError, load

    try:
        return load(Path(args.config))
    except ConfigError as exc:
        raise UserError(f"the configuration has problems (run `gitopsd check-config --config {args.config}`):\n{exc}") from exc


def repository(config: Any, name: str | None) -> Any:
    """The repository --repo names (or the only one), or one line naming those there are."""
    if name is None:
        if len(config.repositories) == 1:
            return config.repositories[0]
        names = ", ".join(r.name for r in config.repositories)
        raise UserError(f"several repositories are configured ({names}): say which with --repo NAME")
    repo = config.repository(name)
    if repo is None:
        known = ", ".join(r.name for r in config.repositories) or "none"
        raise UserError(f"no repository named {name!r} in {config.source} (known: {known})")
    return repo


def read_config(args: argparse.Namespace, check: bool = True) -> tuple[Any, dict[str, str]]:
    """The config for a read-only command, and {repository: problem} for repositories that cannot be read.

    A missing or unreadable repository must not hide the others from `status`, `history` and `logs`;
    any other problem in the config still stops the command. The daemon's snapshot of the file, while
    it matches, spares parsing and validating it (status.read_config); with `check` False, and the
    snapshot, the repositories' folders are not looked at (a command that reads only the store).
    """
    import re

    from ..services.status import read_config

    fast = read_config(Path(args.config), check)
    if fast is not None:
        return fast
    from ..config import ConfigError, load

    try:
        return load(Path(args.config)), {}
    except ConfigError as exc:
        at = [re.fullmatch(r"repositories\[(\d+)\]\.path", p.key) for p in exc.problems]
        if exc.config is None or not all(at):
            raise UserError(
                f"the configuration has problems (run `gitopsd check-config --config {args.config}`):\n{exc}"
            ) from exc
        unavailable = {}
        for match, problem in zip(at, exc.problems, strict=True):
            assert match is not None
            index = int(match.group(1))
            if index < len(exc.config.repositories):
                unavailable[exc.config.repositories[index].name] = problem.message
        return exc.config, unavailable


def check_env_name(config: Any, repo_name: str | None, name: str) -> None:
    """Fail unless some (or the named) repository has an environment `name`: a typo must not print an empty table."""
    repos = [r for r in config.repositories if repo_name in (None, r.name)]
    if not any(r.environment(name) for r in repos):
        known = sorted({e.name for r in repos for e in r.environments})
        where = f"repository {repo_name}" if repo_name else config.source
        raise UserError(f"no environment named {name!r} in {where} (known: {', '.join(known) or 'none'})")


def environment(repo: Any, name: str) -> Any:
    env = repo.environment(name)
    if env is None:
        raise UserError(
            f"repository {repo.name} has no environment {name!r} (it has: {', '.join(e.name for e in repo.environments)})"
        )
    return env


def cli_identity() -> str:
    """Who runs this command: the Unix user (the sudo caller when run through sudo)."""
    import pwd

    if os.getuid() == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    return pwd.getpwuid(os.getuid()).pw_name


def nudge(config: Any, repo: Any, trigger: str, commits: tuple[str, ...] = (), reason: str | None = None) -> bool:
    from ..gate.nudge import Nudge, send

    return send(
        config.nudge_socket, Nudge(repo=str(repo.path), trigger=trigger, actor=cli_identity(), commits=commits, reason=reason)
    )


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding the state folder's lock (daemon/main.py's lock_state_dir), or None.

    Read from /proc/locks, not by trying the lock: a daemon starting at that instant must not find it taken."""
    try:
        info = os.stat(state_dir / "daemon.lock")
        wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def unreachable(config: Any) -> str | None:
    """What is true when the daemon's sockets are not there although it runs: its runtime folder was removed."""
    try:
        if config.runtime_dir.exists():
            return None
        pid = daemon_pid(config.state_dir)
    except (AttributeError, OSError):
        return None
    if pid is None:
        return None
    return (
        f"the runtime folder {config.runtime_dir} is missing: the daemon (pid {pid}) was started with it and "
        "cannot be reached; restart it: systemctl restart gitopsd"
    )


def not_told(config: Any, absent: str = "the daemon is not running") -> str:
    """The words for a nudge that could not be sent: `absent`, unless the daemon runs without its runtime folder."""
    return unreachable(config) or absent


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def ask_daemon(args: argparse.Namespace, request: dict[str, Any]) -> int:
    """Send a request over the daemon's control socket (it knows the caller by SO_PEERCRED); print its answer."""
    from ..adapters.control import ControlError, call

    config = load_config(args)
    if getattr(args, "repo", None):
        request["repo"] = args.repo
    try:
        answer = call(config.control_socket, request, owner=config.state_dir)
    except ControlError as exc:
        raise UserError(str(exc)) from exc
    if not answer.get("ok"):
        raise UserError(str(answer.get("error") or "refused"))
    print(answer.get("message", "done"))
    return 0


KIND_WORDS = {
    "file": "file",
    "package": "package",
    "service": "service",
    "handler": "handler",
    "cannot predict": "cannot predict",
    "change": "change",
}


def when(ts: float | None) -> str:
    from ..services.releases import when

    return when(ts) if ts else "-"


def print_preview(view: dict[str, Any], diffs: bool = True) -> None:
    """A preview as people read it: per host, per task, what would change (diffs indented)."""
    what = f"rc/{view['rc']}" if view["rc"] else f"{view['source_env']}'s tree {view['tree'][:7]}"
    print(
        f"Preview #{view['id']} of {what} (commit {view['commit'][:7]}) against {view['target_env']}: "
        f"{view['state']}" + (f", made {when(view['finished_at'])}" if view["finished_at"] else "")
    )
    if view["stale"]:
        print(
            f"STALE: {view['stale']}; make a fresh one: gitopsd preview {view['source_env']} {view['target_env']}"
            + (f" --rc {view['rc']}" if view["rc"] else "")
        )
    if view["summary"]:
        print(f"  {view['summary']}")
    for host, h in view["hosts"].items():
        state = {"ok": "", "failed": " (the preview stopped early)", "unreachable": " UNREACHABLE"}.get(h["state"], "")
        print(f"{host}:{state}" + (f" {h['reason']}" if h.get("reason") else ""))
        if not h["changes"] and h["state"] == "ok":
            print("  no change")
        for c in h["changes"]:
            label = (
                "restart (handler)"
                if c["handler"] and c["kind"] in ("service", "handler")
                else KIND_WORDS.get(c["kind"], c["kind"])
            )
            detail = " ".join(x for x in (c["path"], c["note"]) if x)
            print(f"  {label}: {c['task']}" + (f": {detail}" if detail else ""))
            if diffs and c["diff"]:
                for line in c["diff"].rstrip("\n").splitlines():
                    print(f"      {line}")
