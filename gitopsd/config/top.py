"""The top level of the config: the server's own keys, and every section put together into one Config."""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..base.storeerrors import postgresql_missing
from ..core.settings import AlertFreezes, Backup, BreakGlass, Config, FreezeRule, Notifications, Repository
from .api_web import _api, _grafana, _web
from .human_gates import _groups, _human_gates
from .nodes import _execution_nodes, _placements
from .notifications import _notifications
from .problems import _NO_PATH, _Checker, _duration, _path_field, _resolve
from .repositories import _repository
from .sandbox import _known_hosts, _sandbox
from .signatures import _signatures

SOCKET_PATH_MAX = 107  # bytes of a Unix socket path on Linux: sun_path is 108 with the final NUL


TOP_KEYS = {
    "state_dir": "folder of the state store and each deployment's output (default /var/lib/gitopsd)",
    "runtime_dir": "folder of the sockets hooks reach the daemon through, nudge and judge (default /run/gitopsd)",
    "sweep_interval": "seconds between the daemon's sweeps over every environment (jittered 10 %)",
    "max_parallel": "environments deployed at once",
    "stop_grace": "seconds running deployments get to finish on SIGTERM",
    "keep_workdirs": "exported trees kept per environment (output is always kept)",
    "identity_env": "environment variables a hook reads the pusher's identity from, in order (never commit metadata)",
    "repositories": "the bare repositories gitopsd deploys from, each with its environments (required)",
    "sandbox": "how playbook runs and CI steps are confined (bubblewrap)",
    "ssh": "SSH settings shared by every run: the known_hosts file",
    "api": "the HTTP API: where it listens and its tokens file",
    "groups": "names for sets of identities, used as group:NAME in approvers, signers and roles",
    "grafana": "Grafana annotations for each deployment",
    "execution_nodes": "other machines playbooks may run on, over SSH",
    "web": "the dashboard: how people sign in and what each may do",
    "database": "sqlite (the default, state_dir/state.db) or a postgresql:// URL",
    "backup": "the daemon's copies of its SQLite store",
    "notifications": "where people hear of deployments and requests: a link, Slack, Matrix",
    "signing_key": "SSH private key gitopsd signs its own commits with (KEY.pub beside it)",
    "freeze_on": "alerts that freeze environments while they fire",
    "break_glass": "two-person break-glass: the second person's time limit, and how long it holds",
    "alert_freezes": "when a freeze whose alert Alertmanager no longer sends expires",
}
BACKUP_KEYS = {
    "interval": "time between copies (at least 1m)",
    "keep": "copies kept",
    "dir": "folder of the copies (default state_dir/backups)",
}
FREEZE_KEYS = {
    "alert": "the alert's name (its alertname label)",
    "labels": "labels the alert must also carry",
    "envs": "environments frozen while it fires",
    "repos": "repositories it applies to (default: all)",
}
ALERT_FREEZES_KEYS = {
    "repeat_interval": "Alertmanager's repeat_interval on the route to gitopsd: a firing alert is sent again this often "
    "(default 4h, Alertmanager's own default)",
    "grace": "more time before a freeze whose alert was not sent again expires (default 15m)",
}
BREAK_GLASS_KEYS = {
    "confirm_within": "time the second person has to confirm (default 15m)",
    "lasts": "how long a confirmed break-glass holds (default 1h)",
}


def _normalize(raw: Any, source: Path, check: _Checker, writable: bool) -> Config:
    top = check.mapping(raw, "", TOP_KEYS)
    base = source.parent
    identity = top.get("identity_env", list(Config.identity_env))
    if not (isinstance(identity, list) and all(isinstance(v, str) and re.fullmatch(r"[A-Z_][A-Z0-9_]*", v) for v in identity)):
        check.add("identity_env", "must be a list of environment variable names, e.g. [GL_USER, REMOTE_USER]")
        identity = list(Config.identity_env)
    repos_raw = top.get("repositories")
    if not isinstance(repos_raw, list) or not repos_raw:
        check.add("repositories", "must be a non-empty list of repositories (add one with `gitopsd init REPO`)")
        repos_raw = []
    repos = [_repository(r, f"repositories[{i}]", base, check) for i, r in enumerate(repos_raw)]
    groups = _groups(top.get("groups", {}), check)
    repos = [
        _human_gates(repo, repos_raw[i] if isinstance(repos_raw[i], dict) else {}, f"repositories[{i}]", groups, check)
        for i, repo in enumerate(repos)
    ]
    repos = [
        _signatures(repo, repos_raw[i] if isinstance(repos_raw[i], dict) else {}, f"repositories[{i}]", groups, base, check)
        for i, repo in enumerate(repos)
    ]
    seen: dict[str, int] = {}
    for i, repo in enumerate(repos):
        if repo.name and repo.name in seen:
            check.add(f"repositories[{i}].name", f"repository name {repo.name!r} is used twice")
        seen[repo.name] = i
    _one_entry_per_repository(repos, check)
    state_dir = _dir(top, "state_dir", base, Config.state_dir, check, writable)
    runtime_dir = _dir(top, "runtime_dir", base, Config.runtime_dir, check, writable)
    socket = os.fsencode(runtime_dir / "nudge.sock")
    if len(socket) > SOCKET_PATH_MAX:  # the daemon could not bind it, nor a hook reach it
        check.add(
            "runtime_dir",
            f"the nudge socket {runtime_dir / 'nudge.sock'} would be {len(socket)} bytes long; "
            f"Unix socket paths hold at most {SOCKET_PATH_MAX}: choose a shorter runtime_dir",
        )
    known_hosts = _known_hosts(top.get("ssh", {}), base, state_dir, check)
    nodes = _execution_nodes(top.get("execution_nodes", []), base, check)
    _placements(repos, nodes, check)
    return Config(
        source=source.resolve(),
        state_dir=state_dir,
        runtime_dir=runtime_dir,
        sweep_interval=check.seconds(top, "sweep_interval", "", Config.sweep_interval, minimum=1),
        max_parallel=int(check.number(top, "max_parallel", "", Config.max_parallel, integer=True, minimum=1)),
        stop_grace=check.seconds(top, "stop_grace", "", Config.stop_grace, minimum=0),
        keep_workdirs=int(check.number(top, "keep_workdirs", "", Config.keep_workdirs, integer=True, minimum=1)),
        identity_env=tuple(identity),
        repositories=tuple(repos),
        sandbox=replace(
            _sandbox(top.get("sandbox", {}), base, check), known_hosts=known_hosts, requirements_cache=state_dir / "requirements"
        ),
        known_hosts=known_hosts,
        database_url=_database(top.get("database", "sqlite"), check),
        api=_api(top["api"], base, check) if "api" in top else None,
        grafana=_grafana(top["grafana"], base, check) if "grafana" in top else None,
        execution_nodes=nodes,
        groups=tuple((name, tuple(members)) for name, members in groups.items()),
        web=_web(top["web"], "api" in top, repos, groups, base, check) if "web" in top else None,
        backup=_backup(top["backup"], base, check) if "backup" in top else Backup(),
        notifications=_notifications(top["notifications"], base, check) if "notifications" in top else Notifications(),
        signing_key=_signing_key(top["signing_key"], base, check) if "signing_key" in top else None,
        freeze_on=_freeze_on(top.get("freeze_on", []), repos, check),
        break_glass=_break_glass(top.get("break_glass", {}), check),
        alert_freezes=_alert_freezes(top.get("alert_freezes", {}), check),
    )


def _signing_key(raw: Any, base: Path, check: _Checker) -> Path | None:
    """`signing_key:` the SSH private key gitopsd signs its commits with; its public half (KEY.pub) beside it."""
    path = _path_field(raw, "signing_key", "the path of an SSH private key (`gitopsd install-service` makes one)", base, check)
    public = Path(f"{path}.pub") if path else None
    if public is not None and not public.is_file():
        check.add("signing_key", f"{public} does not exist: make the key with ssh-keygen -t ed25519 -N '' -f {path}")
    return path


def _freeze_on(raw: Any, repos: list[Repository], check: _Checker) -> tuple[FreezeRule, ...]:
    """`freeze_on: [{alert: NAME, labels: {...}, envs: [production], repos: [...]}]`: alerts that freeze environments."""
    if not isinstance(raw, list):
        check.add("freeze_on", "must be a list like [{alert: HighErrorRate, envs: [production]}]")
        return ()
    rules = []
    for i, item in enumerate(raw):
        key = f"freeze_on[{i}]"
        data = check.mapping(item, key, FREEZE_KEYS)
        alert, labels, envs = data.get("alert"), data.get("labels", {}), data.get("envs")
        names = data.get("repos", [])
        if not isinstance(alert, str) or not alert.strip():
            check.add(f"{key}.alert", "must be the alert's name (its alertname label), e.g. HighErrorRate")
        if not (isinstance(labels, dict) and all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in labels.items())):
            check.add(f"{key}.labels", "must map label names to values, e.g. {severity: critical}")
            labels = {}
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            check.add(f"{key}.repos", "must be a list of repository names")
            names = []
        known = [r for r in repos if not names or r.name in names]
        for name in names:
            if not any(r.name == name for r in repos):
                check.add(f"{key}.repos", f"no repository named {name!r} (known: {', '.join(r.name for r in repos)})")
        if not (isinstance(envs, list) and envs and all(isinstance(e, str) for e in envs)):
            check.add(f"{key}.envs", "must list the environments to freeze, e.g. [production]")
            envs = []
        for env in envs:
            if known and not any(r.environment(env) for r in known):
                check.add(f"{key}.envs", f"no repository has an environment {env!r}")
        if isinstance(alert, str) and alert.strip():
            rules.append(
                FreezeRule(alert.strip(), tuple(envs), tuple((k, str(v)) for k, v in sorted(labels.items())), tuple(names))
            )
    return tuple(rules)


def _break_glass(raw: Any, check: _Checker) -> BreakGlass:
    """`break_glass: {confirm_within: 15m, lasts: 1h}`: the second person's time limit, and how long it holds."""
    data = check.mapping(raw, "break_glass", BREAK_GLASS_KEYS)
    return BreakGlass(
        confirm_within=_duration(data, "confirm_within", "break_glass", BreakGlass.confirm_within, check),
        lasts=_duration(data, "lasts", "break_glass", BreakGlass.lasts, check),
    )


def _alert_freezes(raw: Any, check: _Checker) -> AlertFreezes:
    """`alert_freezes: {repeat_interval: 4h, grace: 15m}`: a freeze expires when its alert is not sent again in time."""
    data = check.mapping(raw, "alert_freezes", ALERT_FREEZES_KEYS)
    return AlertFreezes(
        repeat_interval=_duration(data, "repeat_interval", "alert_freezes", AlertFreezes.repeat_interval, check),
        grace=_duration(data, "grace", "alert_freezes", AlertFreezes.grace, check),
    )


def _backup(raw: Any, base: Path, check: _Checker) -> Backup:
    """`backup: {interval: 1h, keep: 24, dir: <state_dir>/backups}`: the daemon's copies of its SQLite store."""
    data = check.mapping(raw, "backup", BACKUP_KEYS)
    interval = _duration(data, "interval", "backup", Backup.interval, check)
    if interval < 60:
        check.add("backup.interval", f"must be at least 1m, not {data.get('interval')!r}")
        interval = Backup.interval
    keep = int(check.number(data, "keep", "backup", Backup.keep, integer=True, minimum=1, maximum=10000))
    folder = _path_field(data["dir"], "backup.dir", "the path of a folder", base, check) if "dir" in data else None
    return Backup(interval=interval, keep=keep, dir=folder)


def _database(raw: Any, check: _Checker) -> str:
    """`database:` sqlite (the default: state_dir/state.db) or postgresql://[user[:password]@]host[:port]/name[?...]."""
    from urllib.parse import urlsplit

    if raw == "sqlite":
        return ""
    shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", raw) if isinstance(raw, str) else repr(raw)
    if not isinstance(raw, str) or not raw.startswith(("postgresql://", "postgres://")):
        check.add("database", f"must be sqlite or a PostgreSQL URL such as postgresql://gitopsd@db.example/gitopsd, not {shown}")
        return ""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        check.add("database", f"{shown} is not a valid URL ({exc})")
        return ""
    if not parts.path.strip("/"):
        check.add(
            "database", f"{shown} names no database: add /NAME, e.g. postgresql://gitopsd@{parts.hostname or 'host'}/gitopsd"
        )
        return ""
    missing = postgresql_missing()
    if missing:
        check.add("database", missing)
    return raw


def _one_entry_per_repository(repos: list[Repository], check: _Checker) -> None:
    """Refuse a repository configured twice (another spelling, a symlink, a bind mount): it would deploy twice at once."""
    by_path: dict[Path, int] = {}
    by_inode: dict[tuple[int, int], int] = {}
    for i, repo in enumerate(repos):
        if repo.path == _NO_PATH:
            continue  # already reported
        try:
            st = os.stat(repo.path)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)  # what os.path.samefile compares
        except OSError:
            inode = None
        first = by_path.get(repo.path, by_inode.get(inode) if inode else None)
        if first is not None:
            other = f"{repos[first].name} (repositories[{first}])" if repos[first].name else f"repositories[{first}]"
            check.add(
                f"repositories[{i}].path",
                f"{repo.path} is the repository of {other} again; "
                "configure each repository once, or it is deployed twice at the same time",
            )
            continue
        by_path[repo.path] = i
        if inode:
            by_inode[inode] = i


def _dir(top: dict[str, Any], key: str, base: Path, default: Path, check: _Checker, writable: bool) -> Path:
    value = top.get(key)
    if value is None:
        value = str(default)
    if not isinstance(value, str) or not value or "\0" in value:
        check.add(key, f"must be a folder path, not {value!r}")
        return default
    try:
        path = _resolve(base, value)
    except ValueError as exc:
        check.add(key, str(exc))
        return default
    problem = _folder_problem(path, writable)
    if problem:
        check.add(key, problem)
    return path


def _folder_problem(path: Path, writable: bool) -> str | None:
    """Why the daemon could not use (or create) the folder `path`; with `writable`, also as this process's user."""
    uid = os.geteuid()
    try:
        who = f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        who = f"uid {uid}"
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except PermissionError as exc:  # a folder only the service's user may look into
        return f"{path} cannot be checked by {who}: {exc.strerror} on {exc.filename}" if writable else None
    if not existing.is_dir():
        return f"{path} is not a folder" if existing == path else f"{path} cannot be created: {existing} is not a folder"
    effective = os.access in os.supports_effective_ids
    if writable and not os.access(existing, os.W_OK | os.X_OK, effective_ids=effective):
        if existing == path:
            return f"{path} is not writable by {who}"
        return f"{path} does not exist and {who} cannot create it: {existing} is not writable"
    return None
