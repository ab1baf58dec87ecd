"""Server-side configuration: parse (safe YAML only) -> normalize -> validate, every problem at once.

This is the only module that imports PyYAML. Policy lives here, on the server, never in pushed
content, so a push cannot loosen the rules that judge it.
"""
from __future__ import annotations

import difflib
import math
import os
import posixpath
import pwd
import re
import shlex
import stat
import tempfile
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import yaml

from ..core.errors import ConfigurationError
from ..core.settings import (STATUS_CONTEXT_MAX, Api, Approvals, CheckError, SignoffRule, Ci, CiStep, CiTrigger, Config, Environment, HttpCheck,
                            Notify, PrometheusCheck, Repository, Rollout, SandboxPolicy, Verify)
from ..core.settings import Drift, Watch
from ..core.settings import Backup, Grafana
from ..core.settings import ExecutionNode
from ..core.settings import Signatures
from ..core.settings import ROLES, RoleGrant, Web
from ..core.settings import BreakGlass, FreezeRule, Matrix, Notifications
from ..gate.snapshot import file_stamp
from ..adapters.sandbox import SandboxError, check as sandbox_check, default_user as default_sandbox_user
from ..base.storeerrors import postgresql_missing
from ..core.windows import Window, WindowError, Cron, parse_duration

# Re-exported: the settings classes are what `load` returns.
__all__ = ["Config", "ConfigEditError", "ConfigError", "Environment", "HttpCheck", "Notify", "PrometheusCheck",
           "Problem", "Repository", "Rollout", "Verify", "add_repository", "load", "repository_entry"]
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when available: same rules, faster
DEFAULT_ENVIRONMENTS = ("qa", "staging", "production")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ONE_DAY = 86400              # seconds: no wait or interval needs more; beyond, timers and timeouts overflow
SOCKET_PATH_MAX = 107        # bytes of a Unix socket path on Linux: sun_path is 108 with the final NUL
CONFIG_MAX = 10 * 2**20      # bytes: a real config is a few KiB; stops --config /dev/zero or a log file read whole
_MAX_NODES = 100_000         # far beyond any real config: stops a YAML alias bomb from expanding here
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NO_PATH = Path("/nonexistent")
MAX_WINDOW = timedelta(days=31)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(ConfigurationError):
    """The configuration is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[Problem], config: "Config | None" = None):
        self.problems = problems
        self.config = config   # what could be read anyway: read-only commands show the rest (see cli)
        super().__init__("\n".join(str(p) for p in problems))


TOP_KEYS = {"state_dir", "runtime_dir", "sweep_interval", "max_parallel", "stop_grace",
            "keep_workdirs", "identity_env", "repositories", "sandbox", "ssh", "api", "groups", "grafana",
            "execution_nodes", "web", "database", "backup", "notifications", "signing_key", "freeze_on", "break_glass"}
BACKUP_KEYS = {"interval", "keep", "dir"}
APPROVALS_KEYS = {"required", "approvers", "required_groups", "forbid_self_approval", "expire_after"}
SIGNOFF_KEYS = {"env", "count"}
API_KEYS = {"listen", "tokens_file"}
CI_KEYS = {"trigger", "steps", "branches", "keep_artifacts", "provenance_keys"}
CI_TRIGGER_KEYS = {"url", "kind", "branches", "secret_file", "timeout", "retries"}
CI_TRIGGER_KINDS = ("generic", "jenkins", "gitlab", "circleci", "buildbot")
CI_STEP_KEYS = {"name", "run", "artifacts", "timeout"}
SANDBOX_KEYS = {"enabled", "user", "read_only", "writable", "network", "playbook_network"}
PLAYBOOK_NETWORKS = ("ssh-only", "host")
SSH_KEYS = {"known_hosts"}
REPO_KEYS = {"name", "path", "environments", "ci", "signatures"}
MAIN_BRANCH = "main"   # the integration branch a repository's own `signatures:` applies to
ENV_KEYS = {"name", "branch", "promote_from", "inventory", "playbook", "timeout", "auto_rollback",
            "retries", "retry_backoff", "retry_backoff_max", "windows", "override_by", "rollout", "verify",
            "notify", "vault_password_file", "require_checks", "auto_promote", "signoff_by", "require_signoff",
            "approvals", "watch", "drift", "execution_node", "require_provenance", "signatures", "signed_push"}
SIGNATURES_KEYS = {"allowed_signers", "gpg_home", "paths"}
WATCH_KEYS = {"for", "interval", "http", "prometheus", "inconclusive"}
WATCH_PROMETHEUS_KEYS = {"url", "query", "max", "min", "name", "timeout", "retries"}
DRIFT_KEYS = {"interval", "heal"}
ROLLOUT_KEYS = {"batches", "max_fail_percentage", "bake"}
VERIFY_KEYS = {"http", "playbook", "prometheus"}
HTTP_KEYS = {"url", "expect_status", "json_field", "timeout", "retries"}
PROMETHEUS_KEYS = {"url", "query", "max", "min"}
NOTIFY_KEYS = {"command", "webhook"}
WINDOW_KEYS = {"allow", "deny", "duration", "timezone", "name"}


def _walk(root: yaml.Node | None) -> Iterator[tuple[str, int, yaml.Node]]:
    """Yield (key path like 'repositories[0].path', 1-based line, node) for each mapping value and sequence item.

    An alias makes a node appear in several places, or inside itself: loops are cut, and the walk
    stops after _MAX_NODES so that nested aliases cannot expand exponentially.
    """
    stack: list[tuple[str, yaml.Node, frozenset[int]]] = [("", root, frozenset())] if root is not None else []
    visited = 0
    while stack and visited < _MAX_NODES:
        path, node, ancestors = stack.pop()
        if id(node) in ancestors:
            continue
        inside = ancestors | {id(node)}
        children: list[tuple[str, int, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{path}.{key_node.value}" if path else str(key_node.value)
                children.append((key, key_node.start_mark.line + 1, value_node))
        elif isinstance(node, yaml.SequenceNode):
            children = [(f"{path}[{i}]", item.start_mark.line + 1, item) for i, item in enumerate(node.value)]
        for key, line, child in children:
            visited += 1
            yield key, line, child
        stack.extend((key, child, inside) for key, _, child in reversed(children))


def _line_index(node: yaml.Node | None) -> dict[str, int]:
    """Map each key path ('repositories[0].path') to its 1-based line in the file."""
    return {key: line for key, line, _ in _walk(node)}


def _duplicate_keys(root: yaml.Node | None) -> list[tuple[str, int, int]]:
    """Keys given twice in one mapping, as (key path, line, first line): YAML would silently keep the last.

    Call before the document is constructed: constructing resolves merge keys (`<<: *base`) by
    copying the merged keys into the mapping, which would look like duplicates.
    """
    mappings = [("", root)] if isinstance(root, yaml.MappingNode) else []
    mappings += [(key, node) for key, _, node in _walk(root) if isinstance(node, yaml.MappingNode)]
    found = []
    for path, mapping in mappings:
        first: dict[tuple[str, Any], int] = {}
        for key_node, _ in mapping.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            name = (key_node.tag, key_node.value)
            if name in first:
                found.append((f"{path}.{key_node.value}" if path else str(key_node.value), line, first[name]))
            else:
                first[name] = line
    return sorted(found, key=lambda f: f[1])


class _Checker:
    """Collects problems with their file and line while normalizing raw data."""

    def __init__(self, file: str, lines: dict[str, int]):
        self.file, self.lines, self.problems = file, lines, []  # type: ignore[var-annotated]

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, self.lines.get(key), key, message))

    def mapping(self, raw: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            self.add(key, f"must be a mapping, not {type(raw).__name__}")
            return {}
        for k in raw:
            if k not in allowed:
                self.add(f"{key}.{k}" if key else str(k),
                         f"unknown key; allowed keys here: {', '.join(sorted(allowed))}")
        return raw

    def number(self, raw: dict[str, Any], key: str, prefix: str, default: float, *,
               integer: bool = False, minimum: float = 0.0, maximum: float = math.inf, what: str = "") -> float:
        """Given a mapping, return its finite number at `key` within [minimum, maximum] (`what` says why the maximum)."""
        value = raw.get(key, default)
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            self.add(full, f"must be {'an integer' if integer else 'a number'}, not {value!r}")
            return default
        if not math.isfinite(value):   # YAML's .nan and .inf: NaN passes every comparison below
            self.add(full, f"must be a finite number, not {value!r}")
            return default
        if value < minimum:
            self.add(full, f"must be at least {minimum:g}, not {value!r}")
            return default
        if value > maximum:
            self.add(full, f"must be at most {maximum:g}{f' ({what})' if what else ''}, not {value!r}")
            return default
        return value

    def seconds(self, raw: dict[str, Any], key: str, prefix: str, default: float, *,
                integer: bool = False, minimum: float = 0.0) -> float:
        """A duration in seconds: a finite number from `minimum` up to one day."""
        return self.number(raw, key, prefix, default, integer=integer, minimum=minimum, maximum=ONE_DAY, what="one day")

    def relpath(self, value: Any, key: str) -> str:
        """Given a path from the config, return it normalized if it stays inside the repository tree."""
        if not isinstance(value, str) or not value or "\0" in value:
            self.add(key, f"must be a path relative to the repository tree, not {value!r}")
            return ""
        norm = posixpath.normpath(value)
        if value.startswith("/") or norm == ".." or norm.startswith("../"):
            self.add(key, f"path escapes the repository tree: {value!r}")
            return ""
        return norm


def load(path: Path | str, *, writable_folders: bool = False) -> Config:
    """Given a config file, return the validated Config. Raise ConfigError listing every problem.

    With `writable_folders`, also require that this process's user can write (or create) state_dir
    and runtime_dir: true for the daemon and `check-config`, not for hooks and read-only commands,
    which run as other users.
    """
    source = Path(path)
    file = str(source)
    stamp = file_stamp(file)  # before reading: an edit in between makes the stamp stale, never wrong
    text = _read_text(source)
    try:
        # One parse: the node tree gives line numbers, then the same loader builds the data (safe tags only).
        loader = _SafeLoader(text)
        try:
            node = loader.get_single_node()
            duplicates = _duplicate_keys(node)   # before constructing, which rewrites merge keys in the tree
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        detail = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "", f"invalid YAML: {detail}")]) from exc
    check = _Checker(file, _line_index(node))
    for key, line, first in duplicates:
        check.problems.append(Problem(file, line, key, f"duplicate key (first at line {first})"))
    config = _normalize(raw if raw is not None else {}, source, check, writable_folders)
    if check.problems:
        raise ConfigError(check.problems, replace(config, stamp=stamp))
    return replace(config, stamp=stamp)


def _read_text(source: Path) -> str:
    """The config file's text. Raise ConfigError, in one line, for a file that cannot be read, is not a regular
    file (/dev/zero, a FIFO: reading would never end), is over CONFIG_MAX bytes, or is not UTF-8 (with its line)."""
    file = str(source)
    try:   # O_NONBLOCK: opening a FIFO does not wait for a writer
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError([Problem(file, None, "", "is not a regular file; give --config a YAML file")])
            data = handle.read(CONFIG_MAX + 1)
    except OSError as exc:
        raise ConfigError([Problem(file, None, "", f"cannot read config: {exc.strerror or exc}")]) from exc
    if len(data) > CONFIG_MAX:
        raise ConfigError([Problem(file, None, "", f"is over {CONFIG_MAX // 2**20} MiB; a gitopsd config is a few "
                                                    "KiB: is it the right file?")])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = data.count(b"\n", 0, exc.start) + 1, exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError([Problem(file, line, "", f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
                                                    "save it as UTF-8")]) from exc


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
    repos = [_human_gates(repo, repos_raw[i] if isinstance(repos_raw[i], dict) else {}, f"repositories[{i}]", groups, check)
             for i, repo in enumerate(repos)]
    repos = [_signatures(repo, repos_raw[i] if isinstance(repos_raw[i], dict) else {}, f"repositories[{i}]", groups,
                         base, check) for i, repo in enumerate(repos)]
    seen: dict[str, int] = {}
    for i, repo in enumerate(repos):
        if repo.name and repo.name in seen:
            check.add(f"repositories[{i}].name", f"repository name {repo.name!r} is used twice")
        seen[repo.name] = i
    _one_entry_per_repository(repos, check)
    state_dir = _dir(top, "state_dir", base, Config.state_dir, check, writable)
    runtime_dir = _dir(top, "runtime_dir", base, Config.runtime_dir, check, writable)
    socket = os.fsencode(runtime_dir / "nudge.sock")
    if len(socket) > SOCKET_PATH_MAX:   # the daemon could not bind it, nor a hook reach it
        check.add("runtime_dir", f"the nudge socket {runtime_dir / 'nudge.sock'} would be {len(socket)} bytes long; "
                                 f"Unix socket paths hold at most {SOCKET_PATH_MAX}: choose a shorter runtime_dir")
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
        sandbox=replace(_sandbox(top.get("sandbox", {}), base, check), known_hosts=known_hosts,
                        requirements_cache=state_dir / "requirements"),
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
    )


def _signing_key(raw: Any, base: Path, check: _Checker) -> Path | None:
    """`signing_key:` the SSH private key gitopsd signs its commits with; its public half (KEY.pub) beside it."""
    path = _path_field(raw, "signing_key", "the path of an SSH private key (`gitopsd install-service` makes one)",
                       base, check)
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
        data = check.mapping(item, key, {"alert", "labels", "envs", "repos"})
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
            rules.append(FreezeRule(alert.strip(), tuple(envs), tuple((k, str(v)) for k, v in sorted(labels.items())),
                                    tuple(names)))
    return tuple(rules)


def _break_glass(raw: Any, check: _Checker) -> BreakGlass:
    """`break_glass: {confirm_within: 15m, lasts: 1h}`: the second person's time limit, and how long it holds."""
    data = check.mapping(raw, "break_glass", {"confirm_within", "lasts"})
    return BreakGlass(confirm_within=_duration(data, "confirm_within", "break_glass", BreakGlass.confirm_within, check),
                      lasts=_duration(data, "lasts", "break_glass", BreakGlass.lasts, check))


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


def _path_field(raw: Any, key: str, what: str, base: Path, check: _Checker) -> Path | None:
    """A path setting, relative to the config's folder: the path, or None with the problem said at `key`."""
    if not isinstance(raw, str) or not raw or "\0" in raw:
        check.add(key, f"must be {what}, not {raw!r}")
        return None
    try:
        return _resolve(base, raw)
    except ValueError as exc:
        check.add(key, str(exc))
        return None


def _database(raw: Any, check: _Checker) -> str:
    """`database:` sqlite (the default: state_dir/state.db) or postgresql://[user[:password]@]host[:port]/name[?...]."""
    from urllib.parse import urlsplit
    if raw == "sqlite":
        return ""
    shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", raw) if isinstance(raw, str) else repr(raw)
    if not isinstance(raw, str) or not raw.startswith(("postgresql://", "postgres://")):
        check.add("database", f"must be sqlite or a PostgreSQL URL such as postgresql://gitopsd@db.example/gitopsd, "
                              f"not {shown}")
        return ""
    try:
        parts = urlsplit(raw)
        parts.port   # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        check.add("database", f"{shown} is not a valid URL ({exc})")
        return ""
    if not parts.path.strip("/"):
        check.add("database", f"{shown} names no database: add /NAME, e.g. postgresql://gitopsd@{parts.hostname or 'host'}"
                              f"/gitopsd")
        return ""
    missing = postgresql_missing()
    if missing:
        check.add("database", missing)
    return raw


IDENTITY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")


def _groups(raw: Any, check: _Checker) -> dict[str, list[str]]:
    """`groups: {product: [alice, bob], pm: [carol]}`: names for sets of identities (Unix users, Gitolite names)."""
    if not isinstance(raw, dict):
        check.add("groups", "must be a mapping of group names to lists of identities, e.g. {product: [alice, bob]}")
        return {}
    groups: dict[str, list[str]] = {}
    for name, members in raw.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            check.add(f"groups.{name}", "a group name is a plain name (lowercase letters, digits, '-' or '_')")
            continue
        if not (isinstance(members, list) and all(isinstance(m, str) and IDENTITY_RE.match(m) for m in members)):
            check.add(f"groups.{name}", "must be a list of identities (user names), e.g. [alice, bob]")
            continue
        groups[name] = list(dict.fromkeys(members))
    return groups


def _identities(value: Any, key: str, groups: dict[str, list[str]], check: _Checker) -> tuple[str, ...]:
    """A list of identities and `group:NAME` entries, resolved to identities."""
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        check.add(key, "must be a list of identities and group:NAME entries, e.g. [alice, group:product]")
        return ()
    found: list[str] = []
    for entry in value:
        if entry.startswith("group:"):
            if entry[6:] not in groups:
                check.add(key, f"{entry} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})")
            else:
                found += groups[entry[6:]]
        elif IDENTITY_RE.match(entry):
            found.append(entry)
        else:
            check.add(key, f"{entry!r} is not an identity (a user name) nor group:NAME")
    return tuple(dict.fromkeys(found))


def _signatures(repo: Repository, raw: dict[str, Any], key: str, groups: dict[str, list[str]], base: Path,
                check: _Checker) -> Repository:
    """Each environment's `signatures:` and `signed_push:`, and the repository's own `signatures:` for main
    (docs/trust-model.md, "Signed commits and signed pushes")."""
    if "signatures" in raw:
        repo = replace(repo, signatures=_signature_rule(raw["signatures"], False, key, groups, base, check))
    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list):
        return repo
    envs = list(repo.environments)
    for i, (env, env_raw) in enumerate(zip(envs, envs_raw, strict=True)):
        if not isinstance(env_raw, dict) or not ({"signatures", "signed_push"} & set(env_raw)):
            continue
        at = f"{key}.environments[{i}]"
        signed_push = env_raw.get("signed_push", False)
        if signed_push not in ("required", False):
            check.add(f"{at}.signed_push", f"must be `required` (or false), not {signed_push!r}")
        rule = _signature_rule(env_raw.get("signatures"), bool(signed_push), at, groups, base, check)
        envs[i] = replace(env, signatures=rule, signed_push=signed_push == "required")
    return replace(repo, environments=tuple(envs))


def _signature_rule(raw: Any, signed_push: bool, at: str, groups: dict[str, list[str]], base: Path,
                    check: _Checker) -> Signatures | None:
    """One `signatures:` mapping at `at`: the allowed signers' files (checked, allowed_signers line by line), paths."""
    from ..gate.signatures import allowed_signers_problems
    data = check.mapping(raw, f"{at}.signatures", SIGNATURES_KEYS) if raw is not None else {}
    found: dict[str, Path | None] = {}
    for name, what in (("allowed_signers", "an SSH allowed_signers file (ssh-keygen(1), ALLOWED SIGNERS)"),
                       ("gpg_home", "an OpenPGP keyring folder (a GNUPGHOME with the allowed public keys)")):
        path = _path_field(data[name], f"{at}.signatures.{name}", f"the path of {what}", base, check) \
            if name in data else None
        found[name] = path
        try:
            exists = path is None or (path.is_file() if name == "allowed_signers" else path.is_dir())
        except PermissionError:
            continue   # a hook or a read-only command, as another user: the daemon and check-config see it
        if not exists:
            check.add(f"{at}.signatures.{name}", f"{path} does not exist: it must be {what}, kept outside the repository")
        elif path is not None and name == "allowed_signers":
            for problem in allowed_signers_problems(str(path))[:5]:
                check.add(f"{at}.signatures.allowed_signers", problem)
    if raw is not None and not any(found.values()):
        check.add(f"{at}.signatures", "names no allowed signers: set allowed_signers (SSH) and/or gpg_home (OpenPGP)")
    if signed_push and not any(found.values()):
        check.add(f"{at}.signed_push", "needs signatures.allowed_signers or signatures.gpg_home: who may sign a push")
    paths_raw = data.get("paths", {})
    paths: list[tuple[str, tuple[str, ...]]] = []
    if not isinstance(paths_raw, dict):
        check.add(f"{at}.signatures.paths", "must map path globs to signers, e.g. {'environments/production/**': "
                                            "[group:ops]}")
    else:
        for glob, signers in paths_raw.items():
            if not isinstance(glob, str) or not glob or "\n" in glob:
                check.add(f"{at}.signatures.paths", f"{glob!r} is not a path glob such as environments/production/**")
                continue
            paths.append((glob, _identities(signers, f"{at}.signatures.paths.{glob}", groups, check)))
    return Signatures(found["allowed_signers"], found["gpg_home"], tuple(paths)) if any(found.values()) else None


def _human_gates(repo: Repository, raw: dict[str, Any], key: str, groups: dict[str, list[str]],
                 check: _Checker) -> Repository:
    """Each environment's sign-off and approval settings (docs/human-gates.md), with groups resolved."""
    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list):
        return repo
    envs = list(repo.environments)
    for i, (env, env_raw) in enumerate(zip(envs, envs_raw, strict=True)):
        if not isinstance(env_raw, dict):
            continue
        at = f"{key}.environments[{i}]"
        signoff_by = _identities(env_raw.get("signoff_by", []), f"{at}.signoff_by", groups, check)
        rule = None
        if "require_signoff" in env_raw:
            data = check.mapping(env_raw["require_signoff"], f"{at}.require_signoff", SIGNOFF_KEYS)
            where = data.get("env", env.name)
            count = int(check.number(data, "count", f"{at}.require_signoff", 1, integer=True, minimum=1, maximum=100))
            rule = SignoffRule(str(where), count)
        approvals = None
        if "approvals" in env_raw:
            data = check.mapping(env_raw["approvals"], f"{at}.approvals", APPROVALS_KEYS)
            approvers = _identities(data.get("approvers", []), f"{at}.approvals.approvers", groups, check)
            required = int(check.number(data, "required", f"{at}.approvals", 1, integer=True, minimum=1, maximum=100))
            needed_raw = data.get("required_groups", [])
            needed: list[tuple[str, tuple[str, ...]]] = []
            if not (isinstance(needed_raw, list) and all(isinstance(g, str) for g in needed_raw)):
                check.add(f"{at}.approvals.required_groups", "must be a list of group names, e.g. [product]")
            else:
                for g in needed_raw:
                    name = g[6:] if g.startswith("group:") else g
                    if name not in groups:
                        check.add(f"{at}.approvals.required_groups",
                                  f"{g} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})")
                    else:
                        needed.append((name, tuple(groups[name])))
            if not approvers:
                check.add(f"{at}.approvals.approvers", "must name who may approve (identities or group:NAME)")
            elif required > len(approvers):
                check.add(f"{at}.approvals.required", f"{required} approvals can never be given: only "
                                                      f"{len(approvers)} identit{'y' if len(approvers) == 1 else 'ies'} may approve")
            for name, members in needed:
                if not set(members) & set(approvers):
                    check.add(f"{at}.approvals.required_groups", f"no member of {name} is among the approvers")
            self_ok = data.get("forbid_self_approval", True)
            if not isinstance(self_ok, bool):
                check.add(f"{at}.approvals.forbid_self_approval", f"must be true or false, not {self_ok!r}")
                self_ok = True
            expire = None
            if data.get("expire_after") is not None:
                try:
                    expire = parse_duration(data["expire_after"]).total_seconds()
                except (WindowError, OverflowError) as exc:
                    check.add(f"{at}.approvals.expire_after", str(exc))
            approvals = Approvals(required=required, approvers=approvers, required_groups=tuple(needed),
                                  forbid_self_approval=self_ok, expire_after=expire)
        envs[i] = replace(env, signoff_by=signoff_by, require_signoff=rule, approvals=approvals)
    for i, env in enumerate(envs):
        rule = env.require_signoff
        if rule is None:
            continue
        source = next((e for e in envs if e.name == rule.env), None)
        at = f"{key}.environments[{i}].require_signoff"
        if source is None:
            check.add(f"{at}.env", f"{rule.env!r} names no environment of this repository")
        elif not source.signoff_by:
            check.add(at, f"{rule.env} has no signoff_by: nobody could ever sign off there")
        elif rule.count > len(source.signoff_by):
            check.add(f"{at}.count", f"{rule.count} sign-offs can never be given: only {len(source.signoff_by)} "
                                     f"identit{'y' if len(source.signoff_by) == 1 else 'ies'} may sign off in {rule.env}")
    return replace(repo, environments=tuple(envs))


def _api(raw: Any, base: Path, check: _Checker) -> Api | None:
    """`api: {listen: "127.0.0.1:8470", tokens_file: tokens.yml}`: the HTTP API, off without this section."""
    data = check.mapping(raw, "api", API_KEYS)
    listen = data.get("listen", f"{Api.host}:{Api.port}")
    host, _, port = str(listen).rpartition(":")
    host = host.strip("[]")
    if not isinstance(listen, str) or not host or not port.isdigit() or not 0 < int(port) < 65536:
        check.add("api.listen", f"must be HOST:PORT such as 127.0.0.1:8470, not {listen!r}")
        host, port = Api.host, str(Api.port)
    tokens = _path_field(data.get("tokens_file", "tokens.yml"), "api.tokens_file", "a file path", base, check)
    return Api(host=host, port=int(port), tokens_file=tokens or Api.tokens_file)


GRAFANA_KEYS = {"url", "token_file", "dashboard_uid", "timeout"}
NODE_KEYS = {"name", "ssh", "port", "identity_file", "max_parallel"}
NODE_USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
NODE_HOST_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])$")
PLACEMENTS = ("local", "any")   # execution_node: besides a node's name


def _execution_nodes(raw: Any, base: Path, check: _Checker) -> tuple[ExecutionNode, ...]:
    """`execution_nodes: [{name, ssh: user@host, port?, identity_file?, max_parallel?}]`: where playbooks may run."""
    if not isinstance(raw, list):
        check.add("execution_nodes", "must be a list of nodes, e.g. [{name: runner1, ssh: deployer@10.0.0.5}]")
        return ()
    nodes: list[ExecutionNode] = []
    for i, item in enumerate(raw):
        key = f"execution_nodes[{i}]"
        data = check.mapping(item, key, NODE_KEYS)
        if not data:
            continue
        name = data.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name) or name in PLACEMENTS:
            check.add(f"{key}.name", f"must be a plain name (lowercase letters, digits, '-' or '_') other than "
                                     f"local and any, not {name!r}")
            name = ""
        elif any(n.name == name for n in nodes):
            check.add(f"{key}.name", f"execution node {name!r} is defined twice")
            name = ""
        ssh = data.get("ssh")
        user, _, host = ssh.partition("@") if isinstance(ssh, str) else ("", "", "")
        if not (NODE_USER_RE.match(user) and NODE_HOST_RE.match(host)):
            check.add(f"{key}.ssh", f"must be user@host (a login name and a host name or address), not {ssh!r}")
        port = int(check.number(data, "port", key, 22, integer=True, minimum=1, maximum=65535, what="a TCP port"))
        identity = None
        if "identity_file" in data:
            value = data["identity_file"]
            if not isinstance(value, str) or not value:
                check.add(f"{key}.identity_file", f"must be the path of an SSH private key, not {value!r}")
            else:
                try:
                    identity = _resolve(base, value)
                except ValueError as exc:
                    check.add(f"{key}.identity_file", str(exc))
        parallel = int(check.number(data, "max_parallel", key, ExecutionNode.max_parallel, integer=True, minimum=1,
                                    maximum=1000, what="a thousand deployments"))
        if name:
            nodes.append(ExecutionNode(name, user, host, port, identity, parallel))
    return tuple(nodes)


def _execution_node(data: dict[str, Any], key: str, check: _Checker) -> str:
    """An environment's execution_node: local (the default), any, or a node's name (checked against the nodes later)."""
    value = data.get("execution_node", "local")
    if not isinstance(value, str) or not NAME_RE.match(value):
        check.add(f"{key}.execution_node", f"must be local, any or the name of an execution node, not {value!r}")
        return "local"
    return value


def _placements(repos: list[Repository], nodes: tuple[ExecutionNode, ...], check: _Checker) -> None:
    """Each environment's execution_node names a configured node (any needs at least one)."""
    names = [n.name for n in nodes]
    for i, repo in enumerate(repos):
        for j, env in enumerate(repo.environments):
            where = env.execution_node
            if where == "local" or where in names or (where == "any" and names):
                continue
            known = ", ".join(names) if names else "none: add execution_nodes at the top of the config"
            check.add(f"repositories[{i}].environments[{j}].execution_node",
                      f"{where!r} is not an execution node (configured: {known}); use local, any or a node's name"
                      if where != "any" else f"any places on the execution nodes, and there are {known}")


def _grafana(raw: Any, base: Path, check: _Checker) -> Grafana | None:
    """`grafana: {url, token_file, dashboard_uid?, timeout?}`: annotate each deployment's end in Grafana."""
    data = check.mapping(raw, "grafana", GRAFANA_KEYS)
    url = _url(data.get("url"), "grafana.url", check).rstrip("/")
    token_raw = data.get("token_file")
    token = None
    if not isinstance(token_raw, str) or not token_raw or "\0" in token_raw:
        check.add("grafana.token_file", f"must be the path of a file holding a Grafana service account token, not {token_raw!r}")
    else:
        try:
            token = _resolve(base, token_raw)
        except ValueError as exc:
            check.add("grafana.token_file", str(exc))
    uid = data.get("dashboard_uid")
    if uid is not None and not (isinstance(uid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid)):
        check.add("grafana.dashboard_uid", f"must be a dashboard's uid (letters, digits, - and _), not {uid!r}")
        uid = None
    timeout = check.number(data, "timeout", "grafana", Grafana.timeout, minimum=0.1, maximum=30, what="half a minute")
    if not url or token is None:
        return None
    return Grafana(url=url, token_file=token, dashboard_uid=uid, timeout=timeout)


WEB_KEYS = {"auth", "proxy_header", "proxy_groups_header", "trusted_proxies", "proxy_secret_file", "roles", "admin",
            "secure_cookies", "session_hours"}
HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def _web(raw: Any, has_api: bool, repos: list[Repository], groups: dict[str, list[str]], base: Path,
         check: _Checker) -> Web:
    """`web:` the dashboard (docs/web.md): who you are and, per environment, what you may do."""
    import ipaddress
    data = check.mapping(raw, "web", WEB_KEYS)
    if not has_api:
        check.add("web", "the dashboard is served on the HTTP API's address: add `api: {listen: 127.0.0.1:8470}` too")
    auth = data.get("auth", Web.auth)
    if auth not in ("login", "proxy"):
        check.add("web.auth", f"must be login (an API token on gitopsd's own login page) or proxy (a header set by a "
                              f"trusted reverse proxy), not {auth!r}")
        auth = Web.auth
    headers: dict[str, str | None] = {}
    for name, default in (("proxy_header", Web.proxy_header), ("proxy_groups_header", None)):
        value = data.get(name, default)
        if value is not None and not (isinstance(value, str) and HEADER_RE.match(value)):
            check.add(f"web.{name}", f"must be an HTTP header name such as X-Forwarded-User, not {value!r}")
            value = default
        headers[name] = value
    proxies: list[str] = []
    raw_proxies = data.get("trusted_proxies", list(Web.trusted_proxies))
    if not isinstance(raw_proxies, list):
        check.add("web.trusted_proxies", "must be a list of addresses or networks, e.g. [127.0.0.1, 10.0.0.0/24]")
        raw_proxies = []
    for i, entry in enumerate(raw_proxies):
        try:
            proxies.append(str(ipaddress.ip_network(str(entry), strict=False)))
        except ValueError:
            check.add(f"web.trusted_proxies[{i}]", f"must be an IP address or network such as 127.0.0.1 or "
                                                   f"10.0.0.0/24, not {entry!r}")
    if auth == "proxy" and not raw_proxies:
        check.add("web.trusted_proxies", "auth: proxy needs the proxy's address here: a user header from anywhere "
                                         "else is ignored")
    secret_raw, secret = data.get("proxy_secret_file"), None
    if secret_raw is not None:
        try:
            if not isinstance(secret_raw, str) or not secret_raw:
                raise ValueError(f"must be the path of the file holding the proxy's shared secret, not {secret_raw!r}")
            secret = _resolve(base, secret_raw)
        except ValueError as exc:
            check.add("web.proxy_secret_file", str(exc))
    elif auth == "proxy" or "trusted_proxies" in data:
        # Any local account can send a header from loopback: an address alone proves no proxy.
        check.add("web.proxy_secret_file", "trusted_proxies needs a shared secret too: add proxy_secret_file: "
                                           "/etc/gitopsd/proxy-secret (readable by root and the proxy only) and have "
                                           "the proxy send its content in X-Gitopsd-Proxy-Secret")
    external = headers["proxy_groups_header"] is not None
    grants = [RoleGrant("*", "admin", *_web_people(data["admin"], "web.admin", groups, external, check))] \
        if "admin" in data else []
    roles = data.get("roles", {"*": {"viewer": ["*"]}})
    if not isinstance(roles, dict):
        check.add("web.roles", "must map environments (ENV, REPO/ENV, REPO/* or \"*\") to roles and who has them, "
                               "e.g. {production: {deployer: [group:ops]}}")
        roles = {}
    for where, given in roles.items():
        key = f"web.roles.{where}"
        if not _web_place(str(where), repos):
            check.add(key, "names no environment: use \"*\", ENV, REPO/ENV or REPO/* with names from repositories")
        if not isinstance(given, dict):
            check.add(key, f"must map roles ({', '.join(ROLES)}) to lists of people, e.g. {{deployer: [group:ops]}}")
            continue
        for role, people in given.items():
            if role not in ROLES:
                check.add(f"{key}.{role}", f"is no role; roles are {', '.join(ROLES)}")
                continue
            grants.append(RoleGrant(str(where), role, *_web_people(people, f"{key}.{role}", groups, external, check)))
    cookies = data.get("secure_cookies", Web.secure_cookies)
    if cookies not in ("auto", True, False):
        check.add("web.secure_cookies", f"must be auto (Secure when the request came over TLS), true or false, not "
                                        f"{cookies!r}")
        cookies = Web.secure_cookies
    hours = check.number(data, "session_hours", "web", Web.session_hours, minimum=0.05, maximum=720,
                         what="30 days")
    return Web(auth=auth, proxy_header=headers["proxy_header"] or Web.proxy_header,
               proxy_groups_header=headers["proxy_groups_header"], trusted_proxies=tuple(proxies),
               proxy_secret_file=secret, grants=tuple(grants),
               secure_cookies=cookies if isinstance(cookies, str) else str(cookies).lower(), session_hours=hours)


def _web_place(where: str, repos: list[Repository]) -> bool:
    """Does a `web.roles` key name environments that exist: "*", ENV, REPO/ENV or REPO/*?"""
    if where == "*":
        return True
    repo_name, _, env_name = where.rpartition("/")
    chosen = [r for r in repos if r.name == repo_name] if repo_name else repos
    return bool(chosen) and (env_name == "*" and bool(repo_name) or any(r.environment(env_name) for r in chosen))


def _web_people(value: Any, key: str, groups: dict[str, list[str]], external: bool,
                check: _Checker) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(identities, group names) of a role's list: user names, "*" (everyone signed in) and group:NAME entries.

    A group must be one of `groups:`, unless the proxy also says groups (proxy_groups_header): then it may be theirs."""
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        check.add(key, "must be a list of user names, group:NAME entries or \"*\" (everyone signed in), e.g. [group:ops]")
        return (), ()
    people: list[str] = []
    named: list[str] = []
    for entry in value:
        if entry.startswith("group:"):
            name = entry[6:]
            if name in groups:
                people += groups[name]
            elif not (external and HEADER_VALUE_RE.match(name)):
                check.add(key, f"{entry} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})"
                               + ("" if external else "; groups from your proxy count only with web.proxy_groups_header"))
                continue
            named.append(name)
        elif entry == "*" or IDENTITY_RE.match(entry):
            people.append(entry)
        else:
            check.add(key, f"{entry!r} is not a user name, group:NAME nor \"*\"")
    return tuple(dict.fromkeys(people)), tuple(dict.fromkeys(named))


HEADER_VALUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:/+-]{0,127}$")   # a group name as a proxy may say it


def _globs(value: Any, key: str, check: _Checker, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of branch name globs such as [main, "feature/*"]."""
    if value is None:
        return default
    if not (isinstance(value, list) and value and all(isinstance(v, str) and v and "\0" not in v and not v.startswith("-")
                                                       for v in value)):
        check.add(key, "must be a non-empty list of branch names or globs, e.g. [main, 'feature/*']")
        return default
    return tuple(value)


def _ci(raw: Any, key: str, check: _Checker) -> Ci:
    """A repository's `ci:` section: CI servers to trigger and built-in steps (docs/ci.md, "Continuous integration")."""
    data = check.mapping(raw, key, CI_KEYS)
    branches = _globs(data.get("branches"), f"{key}.branches", check, Ci.branches)
    triggers_raw = data.get("trigger", [])
    if not isinstance(triggers_raw, list):
        check.add(f"{key}.trigger", "must be a list of CI servers, e.g. [{url: 'https://ci.example/hook', kind: jenkins}]")
        triggers_raw = []
    triggers = []
    for i, item in enumerate(triggers_raw):
        at = f"{key}.trigger[{i}]"
        t = check.mapping(item, at, CI_TRIGGER_KEYS)
        if not t:
            continue
        kind = t.get("kind", "generic")
        if kind not in CI_TRIGGER_KINDS:
            check.add(f"{at}.kind", f"must be one of {', '.join(CI_TRIGGER_KINDS)}, not {kind!r}")
            kind = "generic"
        secret = t.get("secret_file")
        if secret is not None and not (isinstance(secret, str) and secret.startswith("/") and "\0" not in secret):
            check.add(f"{at}.secret_file", f"must be an absolute path to a file outside the repository, not {secret!r}")
            secret = None
        if kind in ("gitlab", "circleci") and secret is None:
            check.add(f"{at}.secret_file", f"a {kind} trigger needs the file holding its token")
        triggers.append(CiTrigger(url=_url(t.get("url"), f"{at}.url", check), kind=str(kind),
                                  branches=_globs(t.get("branches"), f"{at}.branches", check, branches),
                                  secret_file=Path(posixpath.normpath(secret)) if secret else None,
                                  timeout=check.seconds(t, "timeout", at, 10.0, minimum=0.1),
                                  retries=int(check.number(t, "retries", at, 5, integer=True, minimum=0, maximum=20))))
    steps_raw = data.get("steps", [])
    if not isinstance(steps_raw, list):
        check.add(f"{key}.steps", "must be a list of steps, e.g. [{name: test, run: 'make check'}]")
        steps_raw = []
    steps: list[CiStep] = []
    for i, item in enumerate(steps_raw):
        at = f"{key}.steps[{i}]"
        st = check.mapping(item, at, CI_STEP_KEYS)
        if not st:
            continue
        name = st.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            check.add(f"{at}.name", f"must be a plain name (lowercase letters, digits, '-' or '_'), not {name!r}")
            name = ""
        elif any(s.name == name for s in steps):
            check.add(f"{at}.name", f"step {name!r} is defined twice")
        run = st.get("run")
        argv: list[str] = []
        if isinstance(run, str):
            try:
                argv = shlex.split(run)
            except ValueError as exc:
                check.add(f"{at}.run", f"cannot be split into arguments: {exc}")
        elif isinstance(run, list) and all(isinstance(a, str) for a in run):
            argv = list(run)
        if not argv or any("\0" in a for a in argv):
            check.add(f"{at}.run", "must be a command, e.g. 'make check' or [make, check] (no shell: "
                                   "for pipes or &&, write [sh, -c, '...'])")
            argv = []
        artifacts = st.get("artifacts", [])
        if not (isinstance(artifacts, list) and all(isinstance(a, str) and a for a in artifacts)):
            check.add(f"{at}.artifacts", "must be a list of file globs relative to the tree, e.g. ['dist/*.tar.gz']")
            artifacts = []
        artifacts = [check.relpath(a, f"{at}.artifacts") for a in artifacts]
        steps.append(CiStep(name=name or "", run=tuple(argv), artifacts=tuple(a for a in artifacts if a),
                            timeout=int(check.seconds(st, "timeout", at, 1800, integer=True, minimum=1))))
    keys = data.get("provenance_keys", [])
    if not (isinstance(keys, list) and all(isinstance(k, str) and k.startswith("/") and "\0" not in k for k in keys)):
        check.add(f"{key}.provenance_keys", "must be a list of absolute paths to PEM public keys of CI servers whose "
                                            "signed provenance this repository accepts, e.g. [/etc/gitopsd/ci.pub]")
        keys = []
    return Ci(trigger=tuple(triggers), steps=tuple(steps), branches=branches,
              keep_artifacts=int(check.number(data, "keep_artifacts", key, 20, integer=True, minimum=0)),
              provenance_keys=tuple(Path(posixpath.normpath(k)) for k in keys))


def _contexts(value: Any, key: str, check: _Checker) -> tuple[str, ...]:
    """require_checks: commit status contexts such as [ci/build, ci/test]."""
    if not (isinstance(value, list) and all(isinstance(v, str) and v.strip() and len(v) <= STATUS_CONTEXT_MAX
                                            and "\n" not in v for v in value)):
        check.add(key, "must be a list of commit status contexts, e.g. [ci/build, ci/test]")
        return ()
    return tuple(dict.fromkeys(value))


def _known_hosts(raw: Any, base: Path, state_dir: Path, check: _Checker) -> Path:
    """The `ssh:` section's known_hosts: the file of host keys ssh accepts, <state_dir>/.ssh/known_hosts by default."""
    data = check.mapping(raw, "ssh", SSH_KEYS)
    default = state_dir / ".ssh" / "known_hosts"
    value = data.get("known_hosts", str(default))
    if not isinstance(value, str) or not value:
        check.add("ssh.known_hosts", f"must be the path of a known_hosts file, not {value!r}")
        return default
    try:
        path = _resolve(base, value)
    except ValueError as exc:
        check.add("ssh.known_hosts", str(exc))
        return default
    try:
        folder = path.is_dir()
    except OSError:   # a reader of the config (the hook, as the git user) may not see into the state folder
        folder = False
    if folder:
        check.add("ssh.known_hosts", f"{path} is a folder; give the path of a file (`gitopsd hosts trust ENV` writes it)")
    return path


def _sandbox(raw: Any, base: Path, check: _Checker) -> SandboxPolicy:
    """The `sandbox:` section: on by default; as root, runs drop to `nobody` unless `user:` says otherwise."""
    data = check.mapping(raw, "sandbox", SANDBOX_KEYS)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        check.add("sandbox.enabled", f"must be true or false, not {enabled!r}")
        enabled = True
    network = data.get("network", False)
    if not isinstance(network, bool):
        check.add("sandbox.network", f"must be true or false (whether CI steps may reach the network), not {network!r}")
        network = False
    playbook_network = data.get("playbook_network", "ssh-only")
    if playbook_network not in PLAYBOOK_NETWORKS:
        check.add("sandbox.playbook_network", "must be ssh-only (playbook runs reach only their inventory's hosts, over "
                                              f"SSH) or host (the deploy server's network), not {playbook_network!r}")
        playbook_network = "ssh-only"
    user = data.get("user", default_sandbox_user())
    if user is not None and not (isinstance(user, str) and re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", user)):
        check.add("sandbox.user", f"must be a user name, not {user!r}")
        user = default_sandbox_user()
    elif isinstance(user, str) and user != "root":
        import pwd
        try:
            pwd.getpwnam(user)
        except KeyError:
            check.add("sandbox.user", f"no user {user!r} on this machine (playbooks run as it when the daemon is root)")
    folders: dict[str, tuple[Path, ...]] = {}
    for key in ("read_only", "writable"):
        value = data.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) and v and "\0" not in v for v in value)):
            check.add(f"sandbox.{key}", "must be a list of folder paths the playbook runs may see")
            value = []
        resolved = []
        for i, v in enumerate(value):
            try:
                resolved.append(_resolve(base, v))
            except ValueError as exc:
                check.add(f"sandbox.{key}[{i}]", str(exc))
        folders[key] = tuple(resolved)
    policy = SandboxPolicy(enabled=enabled, user=user, read_only=folders["read_only"], writable=folders["writable"],
                           network=network, playbook_network=playbook_network)
    try:
        sandbox_check(policy)
    except SandboxError as exc:
        check.add("sandbox", str(exc))
    return policy


def _one_entry_per_repository(repos: list[Repository], check: _Checker) -> None:
    """Refuse a repository configured twice (another spelling, a symlink, a bind mount): it would deploy twice at once."""
    by_path: dict[Path, int] = {}
    by_inode: dict[tuple[int, int], int] = {}
    for i, repo in enumerate(repos):
        if repo.path == _NO_PATH:
            continue   # already reported
        try:
            st = os.stat(repo.path)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)   # what os.path.samefile compares
        except OSError:
            inode = None
        first = by_path.get(repo.path, by_inode.get(inode) if inode else None)
        if first is not None:
            other = f"{repos[first].name} (repositories[{first}])" if repos[first].name else f"repositories[{first}]"
            check.add(f"repositories[{i}].path", f"{repo.path} is the repository of {other} again; "
                                                 "configure each repository once, or it is deployed twice at the same time")
            continue
        by_path[repo.path] = i
        if inode:
            by_inode[inode] = i


def _resolve(base: Path, value: str) -> Path:
    """Given a path from the config, return it absolute with symlinks resolved. Raise ValueError saying why not."""
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL byte")
    try:
        return (base / os.path.expanduser(value)).resolve()
    except (OSError, RuntimeError, ValueError) as exc:   # RuntimeError: a symlink loop
        raise ValueError(f"cannot resolve {value!r}: {exc}") from exc


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
    except PermissionError as exc:   # a folder only the service's user may look into
        return f"{path} cannot be checked by {who}: {exc.strerror} on {exc.filename}" if writable else None
    if not existing.is_dir():
        return f"{path} is not a folder" if existing == path else f"{path} cannot be created: {existing} is not a folder"
    effective = os.access in os.supports_effective_ids
    if writable and not os.access(existing, os.W_OK | os.X_OK, effective_ids=effective):
        if existing == path:
            return f"{path} is not writable by {who}"
        return f"{path} does not exist and {who} cannot create it: {existing} is not writable"
    return None


def _repository(raw: Any, key: str, base: Path, check: _Checker) -> Repository:
    data = check.mapping(raw, key, REPO_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.add(f"{key}.name", f"must be a plain name (lowercase letters, digits, '-' or '_'), not {name!r}")
        name = ""
    path_raw = data.get("path")
    path = _NO_PATH
    if not isinstance(path_raw, str) or not path_raw or "\0" in path_raw:
        check.add(f"{key}.path", f"must be the path of a bare Git repository, not {path_raw!r}")
    else:
        try:
            path = _resolve(base, path_raw)
        except ValueError as exc:
            check.add(f"{key}.path", str(exc))
        else:
            try:
                found = (path / "HEAD").is_file() and (path / "objects").is_dir()
            except PermissionError:   # a folder this user may not look into (the service layout's, as another user)
                who = pwd.getpwuid(os.geteuid()).pw_name
                check.add(f"{key}.path", f"{path} cannot be read by {who} (run `gitopsd doctor` as root to see why)")
            else:
                if not found:
                    check.add(f"{key}.path", f"no Git repository at {path} (run `gitopsd init {path}` to create one)")
    envs_raw = data.get("environments")
    if envs_raw is None:
        envs_raw = [{"name": n} for n in DEFAULT_ENVIRONMENTS]
    if not isinstance(envs_raw, list) or not envs_raw:
        check.add(f"{key}.environments", "must be a non-empty list of environments in promotion order")
        envs_raw = []
    envs: list[Environment] = []
    for i, env_raw in enumerate(envs_raw):
        previous = envs[-1].branch if envs else "main"
        envs.append(_environment(env_raw, f"{key}.environments[{i}]", previous, check))
    names: dict[str, str] = {}
    branches: dict[str, str] = {}
    for i, env in enumerate(envs):
        at = f"{key}.environments[{i}]"
        if env.name and env.name in names:
            check.add(f"{at}.name", f"environment {env.name!r} is defined twice")
        if env.branch and env.branch in branches:
            check.add(f"{at}.branch", f"branch {env.branch!r} is already used by environment {branches[env.branch]!r}; "
                                      "each environment needs its own branch")
        names[env.name] = at
        branches[env.branch] = env.name
    for i, env in enumerate(envs):
        if env.promote_from == env.branch and env.branch:
            check.add(f"{key}.environments[{i}].promote_from", "an environment cannot promote from its own branch")
    _promotion_loops(envs, key, check)
    _unknown_sources(envs, key, path, check)
    ci = _ci(data["ci"], f"{key}.ci", check) if "ci" in data else Ci()
    steps = {f"gitopsd/{step.name}" for step in ci.steps}
    for i, env in enumerate(envs):
        for context in env.require_checks:
            if context.startswith("gitopsd/") and context not in steps:
                known = ", ".join(sorted(steps)) or "none: this repository has no ci.steps"
                check.add(f"{key}.environments[{i}].require_checks",
                          f"{context!r} would never be reported: gitopsd/<name> comes from the built-in CI step "
                          f"<name> (its steps give {known})")
    for i, env in enumerate(envs):
        if env.auto_promote and env.promote_from not in branches and not env.require_checks:
            check.add(f"{key}.environments[{i}].auto_promote",
                      f"would promote every new head of {env.promote_from} untested: "
                      "name the checks it must pass in require_checks")
    return Repository(name=name or "", path=path, environments=tuple(envs), ci=ci)


def _unknown_sources(envs: list[Environment], key: str, path: Path, check: _Checker) -> None:
    """Report a promote_from that names no environment branch, not main and no branch of the repository: a typo
    (`stagng`), or an environment's name where its branch differs; nothing could ever be promoted from it."""
    known = [env.branch for env in envs if env.branch] + ["main"]
    by_name = {env.name: env.branch for env in envs if env.name and env.branch}
    for i, env in enumerate(envs):
        source = env.promote_from
        if not source or source in known or path == _NO_PATH or _has_branch(path, source) is not False:
            continue
        hint = (f"{source!r} is the environment whose branch is {by_name[source]!r}; " if source in by_name else
                "".join(f"did you mean {m!r}? " for m in difflib.get_close_matches(source, known, 1)))
        check.add(f"{key}.environments[{i}].promote_from",
                  f"{source!r} is no environment branch here, not main and no branch of {path}: {hint}"
                  f"promote from one of {', '.join(dict.fromkeys(known))}, or push the branch {source!r} first")


def _has_branch(repo: Path, branch: str) -> bool | None:
    """Whether a bare repository has refs/heads/BRANCH (a loose ref or in packed-refs); None if it cannot tell."""
    ref = f"refs/heads/{branch}"
    try:
        if (repo / "reftable").exists() or not (repo / "HEAD").is_file():
            return None   # another ref format: read only through git, which the config does not run
        if (repo / ref).is_file():
            return True
        with open(repo / "packed-refs", encoding="utf-8", errors="replace") as handle:
            return any(line.rstrip("\n").endswith(f" {ref}") for line in handle)
    except FileNotFoundError:
        return False
    except OSError:
        return None


def _promotion_loops(envs: list[Environment], key: str, check: _Checker) -> None:
    """Refuse environments that promote from each other in a loop: no tree could ever be verified to enter it."""
    index = {env.branch: i for i, env in enumerate(envs) if env.branch}
    on_a_loop: set[int] = set()
    for start in range(len(envs)):
        chain = [start]
        while envs[chain[-1]].promote_from in index and index[envs[chain[-1]].promote_from] not in chain:
            chain.append(index[envs[chain[-1]].promote_from])
        closes = index.get(envs[chain[-1]].promote_from) == start
        if not closes or len(chain) < 2 or start in on_a_loop:
            continue   # no loop, or one already reported; promoting from its own branch is reported above
        on_a_loop.update(chain)
        # Say it where promote_from is written: a loop cannot be made of defaults alone.
        at = next((i for i in sorted(chain) if f"{key}.environments[{i}].promote_from" in check.lines), start)
        chain = chain[chain.index(at):] + chain[:chain.index(at)]
        loop = " <- ".join(envs[i].branch for i in chain + chain[:1])
        check.add(f"{key}.environments[{at}].promote_from",
                  f"promotions go round in a loop ({loop}), so nothing can ever enter it: one of these environments "
                  "must promote from a branch outside the loop (usually main)")


def _environment(raw: Any, key: str, previous_branch: str, check: _Checker) -> Environment:
    data = check.mapping(raw, key, ENV_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        check.add(f"{key}.name", f"must be a plain name (lowercase letters, digits, '-' or '_'), not {name!r}")
        name = ""
    branch = data.get("branch", name)
    if branch == "" and "branch" not in data:
        pass  # the name is already reported as invalid
    elif not isinstance(branch, str) or not BRANCH_RE.match(branch) or ".." in branch or branch.endswith((".lock", ".")):
        check.add(f"{key}.branch", f"must be a plain branch name, not {branch!r}")
        branch = ""
    promote_from = data.get("promote_from", previous_branch)
    if promote_from == "" and "promote_from" not in data:
        pass  # the previous environment's branch is already reported as invalid
    elif not isinstance(promote_from, str) or not BRANCH_RE.match(promote_from) or ".." in promote_from:
        check.add(f"{key}.promote_from", f"must be a plain branch name, not {promote_from!r}")
        promote_from = ""
    auto_rollback = data.get("auto_rollback", False)
    if not isinstance(auto_rollback, bool):
        check.add(f"{key}.auto_rollback", f"must be true or false, not {auto_rollback!r}")
        auto_rollback = False
    override_by = data.get("override_by", [])
    if not (isinstance(override_by, list) and all(isinstance(v, str) and v.strip() and "\n" not in v for v in override_by)):
        check.add(f"{key}.override_by", "must be a list of identities (user names)")
        override_by = []
    return Environment(
        name=name,
        branch=branch,
        promote_from=promote_from,
        inventory=check.relpath(data.get("inventory", f"environments/{name}/hosts.yml"), f"{key}.inventory"),
        playbook=check.relpath(data.get("playbook", "playbooks/deploy.yml"), f"{key}.playbook"),
        timeout=int(check.seconds(data, "timeout", key, 900, integer=True, minimum=1)),
        auto_rollback=auto_rollback,
        # The retry backoff doubles with each failure: a thousand would overflow it.
        retries=int(check.number(data, "retries", key, 3, integer=True, minimum=0, maximum=100)),
        retry_backoff=check.seconds(data, "retry_backoff", key, 10.0),
        retry_backoff_max=check.seconds(data, "retry_backoff_max", key, 300.0),
        windows=_windows(data.get("windows", []), f"{key}.windows", check),
        override_by=tuple(override_by),
        rollout=_rollout(data["rollout"], f"{key}.rollout", check) if "rollout" in data else None,
        verify=_verify(data.get("verify", {}), f"{key}.verify", check),
        notify=_notify(data.get("notify", {}), f"{key}.notify", check),
        vault_password_file=_vault_file(data, key, check),
        require_checks=_contexts(data.get("require_checks", []), f"{key}.require_checks", check),
        auto_promote=_flag(data, "auto_promote", key, check),
        watch=_watch(data["watch"], f"{key}.watch", check) if "watch" in data else None,
        drift=_drift(data["drift"], f"{key}.drift", check) if "drift" in data else None,
        execution_node=_execution_node(data, key, check),
        require_provenance=_flag(data, "require_provenance", key, check),
    )


def _flag(data: dict[str, Any], name: str, key: str, check: _Checker) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        check.add(f"{key}.{name}", f"must be true or false, not {value!r}")
        return False
    return value


def _vault_file(data: dict[str, Any], key: str, check: _Checker) -> Path | None:
    """An environment's vault_password_file: an absolute path to a file, which must exist."""
    value = data.get("vault_password_file")
    if value is None:
        return None
    at = f"{key}.vault_password_file"
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        check.add(at, f"must be an absolute path to a file outside the repository, not {value!r}")
        return None
    path = Path(posixpath.normpath(value))
    try:
        if not path.is_file():
            check.add(at, f"{path} is not a file: write the vault password in it (mode 0600, owned by the daemon's user)")
    except PermissionError:
        pass   # a hook or a read-only command, as another user: the daemon and check-config see it
    return path


def _rollout(raw: Any, key: str, check: _Checker) -> Rollout | None:
    from ..core.batches import validate_batches
    data = check.mapping(raw, key, ROLLOUT_KEYS)
    batches = data.get("batches", ["100%"])
    problem = validate_batches(batches)
    if problem:
        check.add(f"{key}.batches", problem)
        batches = ["100%"]
    return Rollout(batches=tuple(batches),
                   max_fail_percentage=check.number(data, "max_fail_percentage", key, 0.0, maximum=100, what="a percentage"),
                   bake=check.seconds(data, "bake", key, 0.0))


def _url(value: Any, key: str, check: _Checker) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s]+$", value):
        check.add(key, f"must be an http:// or https:// URL, not {value!r}")
        return ""
    return value


def _verify(raw: Any, key: str, check: _Checker) -> Verify:
    data = check.mapping(raw, key, VERIFY_KEYS)
    http = _http_check(data["http"], f"{key}.http", check) if "http" in data else None
    prometheus = _prometheus_check(data["prometheus"], f"{key}.prometheus", check) if "prometheus" in data else None
    playbook = check.relpath(data["playbook"], f"{key}.playbook") if "playbook" in data else None
    return Verify(http=http, playbook=playbook or None, prometheus=prometheus)


def _http_check(raw: Any, key: str, check: _Checker) -> HttpCheck | None:
    """An HTTP check (verify.http, watch.http[i])."""
    h = check.mapping(raw, key, HTTP_KEYS)
    field_ = h.get("json_field")
    made: HttpCheck | None = _check(HttpCheck, key, check, url=_url(h.get("url"), f"{key}.url", check),
                  expect_status=int(check.number(h, "expect_status", key, 200, integer=True, minimum=100,
                                                 maximum=599, what="an HTTP status")),
                  json_field=str(field_) if field_ else None,
                  timeout=check.seconds(h, "timeout", key, 2.0, minimum=0.1),
                  retries=int(check.number(h, "retries", key, 3, integer=True, minimum=0)))
    return made


def _prometheus_check(raw: Any, key: str, check: _Checker, allowed: set[str] = PROMETHEUS_KEYS,
                      retries: int = 0) -> PrometheusCheck | None:
    """A Prometheus check (verify.prometheus; watch.prometheus[i] also takes name, timeout and retries)."""
    p = check.mapping(raw, key, allowed)
    query = p.get("query")
    if not isinstance(query, str) or not query:
        check.add(f"{key}.query", "must be a PromQL query")
        query = ""
    bounds = {b: p.get(b) for b in ("max", "min")}
    for b, v in bounds.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            check.add(f"{key}.{b}", f"must be a number, not {v!r}")
            bounds[b] = None
        elif v is not None and not math.isfinite(v):
            check.add(f"{key}.{b}", f"must be a finite number, not {v!r}")
            bounds[b] = None
    if p.get("max") is None and p.get("min") is None:   # an invalid one is already reported
        check.add(key, "needs max: or min: (the threshold the query result must respect)")
    name = p.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or "\n" in name):
        check.add(f"{key}.name", f"must be a one-line name, not {name!r}")
        name = None
    made: PrometheusCheck | None = _check(PrometheusCheck, key, check, url=_url(p.get("url"), f"{key}.url", check), query=query,
                  max_value=bounds["max"], min_value=bounds["min"], name=name,
                  timeout=check.seconds(p, "timeout", key, 5.0, minimum=0.1),
                  retries=int(check.number(p, "retries", key, retries, integer=True, minimum=0, maximum=10)))
    return made


def _duration(data: dict[str, Any], name: str, key: str, default: float, check: _Checker) -> float:
    """A duration like 30s, 15m, 1h (or a number of seconds), up to one day."""
    if name not in data:
        return default
    try:
        seconds = parse_duration(data[name]).total_seconds()
    except WindowError:
        check.add(f"{key}.{name}", f"must be a duration like 30s, 15m or 1h, not {data[name]!r}")
        return default
    if seconds > ONE_DAY:
        check.add(f"{key}.{name}", f"must be at most one day, not {data[name]!r}")
        return default
    return seconds


def _watch(raw: Any, key: str, check: _Checker) -> Watch | None:
    """`watch:`: checks that keep running for a while after each successful deployment."""
    data = check.mapping(raw, key, WATCH_KEYS)
    if not data:
        return None
    if "for" not in data:
        check.add(f"{key}.for", "is missing: say how long to watch after a deployment, e.g. 15m")
    duration = _duration(data, "for", key, 900.0, check)
    interval = _duration(data, "interval", key, 30.0, check)
    if interval > duration:
        check.add(f"{key}.interval", f"is longer than the watch ({data.get('interval')!r} > {data.get('for')!r}): "
                                     "no check would run")
    checks: dict[str, list[Any]] = {"http": [], "prometheus": []}
    for kind in checks:
        items = data.get(kind, [])
        if isinstance(items, dict):   # one check may be given without a list
            items = [items]
        if not isinstance(items, list):
            check.add(f"{key}.{kind}", f"must be a list of {kind} checks")
            continue
        for i, item in enumerate(items):
            at = f"{key}.{kind}[{i}]"
            built = (_http_check(item, at, check) if kind == "http"
                     else _prometheus_check(item, at, check, WATCH_PROMETHEUS_KEYS, retries=2))
            if built is not None:
                checks[kind].append(built)
    if not data.get("http") and not data.get("prometheus"):
        check.add(key, "names no check: add http: or prometheus: checks to watch")
    inconclusive = data.get("inconclusive", "fail")
    if inconclusive not in ("fail", "pass"):
        check.add(f"{key}.inconclusive", f"must be fail or pass, not {inconclusive!r}")
        inconclusive = "fail"
    return Watch(duration=duration, interval=interval, http=tuple(checks["http"]),
                 prometheus=tuple(checks["prometheus"]), inconclusive=inconclusive)


def _drift(raw: Any, key: str, check: _Checker) -> Drift:
    """`drift:`: check-mode runs of the deployed tree on a schedule, and whether to heal."""
    data = check.mapping(raw, key, DRIFT_KEYS)
    interval = _duration(data, "interval", key, 3600.0, check)
    return Drift(interval=interval, heal=_flag(data, "heal", key, check))


def _check(cls: Any, key: str, check: _Checker, **values: Any) -> Any:
    """A check built from valid values, or None with the problem said (its own rules, e.g. min above max)."""
    try:
        return cls(**values)
    except CheckError as exc:
        check.add(key, str(exc))
        return None


def _notify(raw: Any, key: str, check: _Checker) -> Notify:
    data = check.mapping(raw, key, NOTIFY_KEYS)
    command = data.get("command", [])
    if not (isinstance(command, list) and all(isinstance(c, str) and c for c in command)):
        check.add(f"{key}.command", "must be a list of arguments (no shell), e.g. [/usr/local/bin/page, --team, ops]")
        command = []
    if command and not command[0].startswith("/"):
        check.add(f"{key}.command", f"the program must be an absolute path, not {command[0]!r}")
    webhook = _url(data["webhook"], f"{key}.webhook", check) if "webhook" in data else None
    return Notify(command=tuple(command), webhook=webhook or None)


def _windows(raw: Any, key: str, check: _Checker) -> tuple[Window, ...]:
    if not isinstance(raw, list):
        check.add(key, "must be a list of windows like {allow: '0 9 * * 1-5', duration: 8h, timezone: UTC}")
        return ()
    windows = []
    for i, item in enumerate(raw):
        at = f"{key}[{i}]"
        data = check.mapping(item, at, WINDOW_KEYS)
        if not data:
            continue
        if ("allow" in data) == ("deny" in data):
            check.add(at, "needs exactly one of allow: or deny: (a cron expression for when the window starts)")
            continue
        allow = "allow" in data
        bad = False   # every problem of the entry is said, not only the first
        try:
            cron = Cron.parse(str(data["allow" if allow else "deny"]))
            duration = parse_duration(data.get("duration"))
        except WindowError as exc:
            check.add(at, str(exc))
            bad = True
        except OverflowError:   # more seconds than a timedelta holds
            duration = MAX_WINDOW + MAX_WINDOW
        if not bad and duration > MAX_WINDOW:   # checking a window walks back over its whole length, minute by minute
            check.add(f"{at}.duration", f"a window lasts at most {MAX_WINDOW.days} days, not {data.get('duration')} "
                                        "(for longer, let cron start it again)")
            bad = True
        tz = str(data.get("timezone", "UTC"))
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(tz)
        except (ValueError, KeyError, OSError):
            check.add(f"{at}.timezone", f"unknown time zone {tz!r}")
            bad = True
        if bad:
            continue
        name = str(data.get("name") or f"{'allow' if allow else 'deny'} {data['allow' if allow else 'deny']} for {data.get('duration')} ({tz})")
        windows.append(Window(name, allow, cron, duration, tz))
    return tuple(windows)


def read_yaml(text: str) -> Any:
    """Plain data from YAML text (safe tags only), for tools that read a config without validating it
    (install-service --root, the demo). Raise ConfigurationError for text that is not YAML."""
    try:
        return yaml.load(text, Loader=_SafeLoader)   # noqa: S506 (safe tags only; libyaml's depth limit, as load has)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}") from exc
    except RecursionError as exc:   # found by fuzz/fuzz_tokens_file.py: `[[[[...` without libyaml
        raise ConfigurationError("invalid YAML: nested too deeply") from exc


def write_yaml(data: Any) -> str:
    """YAML text for plain data, keys in the given order."""
    return str(yaml.safe_dump(data, sort_keys=False))


def repository_entry(name: str, path: Path) -> dict[str, Any]:
    """Return the config mapping `gitopsd init` writes for a repository with the default environments."""
    return {"name": name, "path": str(path), "environments": [
        {"name": env, "promote_from": prev, "auto_rollback": env == "production"}
        for env, prev in zip(DEFAULT_ENVIRONMENTS, ("main",) + DEFAULT_ENVIRONMENTS[:-1], strict=True)]}


class ConfigEditError(ConfigurationError):
    """The config file cannot be edited safely by a program: the message says what to do instead."""


_NEW_CONFIG_HEADER = ("# gitopsd server configuration (docs/operate.md, \"Configuration\"). `gitopsd init` adds repositories\n"
                      "# below; edit the rest by hand, then `gitopsd check-config`.\n")


def add_repository(config_path: Path, entry: dict[str, Any], defaults: dict[str, Any] | None = None,
                   new_file_group: int | None = None) -> bool:
    """Add a repository entry to a config file, keeping its comments, mode, owner and group.

    The file is edited as text: only the new entry is inserted, at the end of `repositories:`.
    A missing file is created from `defaults`, mode 0640 of `new_file_group` (0644 without one).
    Return False if an entry by that name exists. Raise ConfigEditError when it cannot be done safely.
    """
    item = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False)
    if not config_path.exists():
        text = _NEW_CONFIG_HEADER + (yaml.safe_dump(dict(defaults), sort_keys=False) if defaults else "")
        _write_config_text(config_path, text + "repositories:\n" + _indent(item, 2), None, new_file_group)
        return True
    try:
        text = config_path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=_SafeLoader)
        data = yaml.safe_load(text) if root is not None else {}
    except OSError as exc:
        raise ConfigEditError(f"cannot read {config_path}: {exc.strerror or exc}; run gitopsd init as a user who "
                              "may read and write it (root)") from exc
    except yaml.YAMLError as exc:
        raise ConfigEditError(f"{config_path} is not valid YAML; fix it first "
                              f"(gitopsd check-config --config {config_path})") from exc
    repos = data.get("repositories") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(repos, (list, type(None))):
        raise ConfigEditError(f"{config_path}: the file is not a mapping with a `repositories:` list; fix it first "
                              f"(gitopsd check-config --config {config_path})")
    if any(isinstance(r, dict) and r.get("name") == entry["name"] for r in repos or []):
        return False
    new = _text_with_item(text, root, item)
    if new is None or yaml.safe_load(new) != {**data, "repositories": [*(repos or []), entry]}:
        raise ConfigEditError(f"{config_path}: `repositories:` is written in a form gitopsd does not edit (a flow "
                              f"list [...]?); add this entry under it by hand:\n{item}")
    _write_config_text(config_path, new, config_path.stat(), None)
    return True


def _indent(text: str, columns: int) -> str:
    return "".join(" " * columns + line if line.strip() else line for line in text.splitlines(keepends=True))


def _text_with_item(text: str, root: yaml.Node | None, item: str) -> str | None:
    """Return `text` with the YAML list `item` appended to its top-level `repositories:`; None if it cannot be."""
    if text and not text.endswith("\n"):
        text += "\n"
    value = None
    if isinstance(root, yaml.MappingNode):
        value = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "repositories"), None)
    elif root is not None:
        return None
    if value is None:
        return text + "repositories:\n" + _indent(item, 2)
    lines = text.splitlines(keepends=True)
    if isinstance(value, yaml.SequenceNode) and not value.flow_style:
        # After the last line of the last entry: comments and blank lines that follow belong to what comes next.
        dash = value.start_mark.column
        last = value.value[-1].start_mark.line
        for n in range(last + 1, min(value.end_mark.line + 1, len(lines))):
            stripped = lines[n].strip()
            if stripped and not stripped.startswith("#") and len(lines[n]) - len(lines[n].lstrip()) > dash:
                last = n
        return "".join(lines[:last + 1]) + _indent(item, dash) + "".join(lines[last + 1:])
    if (isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null") or (
            isinstance(value, yaml.SequenceNode) and not value.value):
        # `repositories:`, `repositories: ~` or `repositories: []`: the value goes, the list follows the key's line.
        start, end = value.start_mark.index, value.end_mark.index
        text = text[:start] + text[end:]
        lines = text.splitlines(keepends=True)
        at = value.start_mark.line
        lines[at] = lines[at].rstrip(" \t\n") + "\n" if "#" not in lines[at] else lines[at]
        return "".join(lines[:at + 1]) + _indent(item, 2) + "".join(lines[at + 1:])
    return None


def _write_config_text(path: Path, text: str, keep: os.stat_result | None, group: int | None) -> None:
    """Replace `path` with `text` atomically, with the mode, owner and group of `keep` (or 0640/0644 for a new file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(keep.st_mode) if keep else (0o640 if group is not None else 0o644)
    owner = (keep.st_uid, keep.st_gid) if keep else (os.geteuid(), group if group is not None else os.getegid())
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigEditError(f"cannot write {path} ({exc.strerror}): run gitopsd init as a user who may write "
                              f"{path.parent} (root)") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(fd, mode)
            if owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            os.fsync(fd)
        os.replace(tmp, path)
    except PermissionError as exc:
        os.unlink(tmp)
        raise ConfigEditError(f"cannot write {path} keeping its owner and group (uid {owner[0]}, gid {owner[1]}): "
                              "run gitopsd init as root") from exc
    except BaseException:
        os.unlink(tmp)
        raise


NOTIFICATIONS_KEYS = {"link", "slack_webhook", "matrix"}
MATRIX_KEYS = {"homeserver", "user", "password_file", "room", "accounts", "timeout"}
MATRIX_USER_RE = re.compile(r"^@[^\s:]+:[^\s]+$")


def _notifications(raw: Any, base: Path, check: _Checker) -> Notifications:
    """`notifications: {link?, slack_webhook?, matrix?}`: approval requests to chat, approvals from a Matrix room."""
    data = check.mapping(raw, "notifications", NOTIFICATIONS_KEYS)
    link = _url(data["link"], "notifications.link", check).rstrip("/") or None if "link" in data else None
    slack = _url(data["slack_webhook"], "notifications.slack_webhook", check) or None if "slack_webhook" in data else None
    return Notifications(link=link, slack_webhook=slack,
                         matrix=_matrix(data["matrix"], base, check) if "matrix" in data else None)


def _matrix(raw: Any, base: Path, check: _Checker) -> Matrix | None:
    """`notifications.matrix`: the homeserver, gitopsd's account and password file, the room, the mapped accounts."""
    key = "notifications.matrix"
    data = check.mapping(raw, key, MATRIX_KEYS)
    homeserver = _url(data.get("homeserver"), f"{key}.homeserver", check).rstrip("/")
    user = data.get("user")
    if not isinstance(user, str) or not MATRIX_USER_RE.match(user):
        check.add(f"{key}.user", f"must be gitopsd's Matrix user id like @gitopsd:example.org, not {user!r}")
    password = _path_field(data.get("password_file"), f"{key}.password_file",
                           "the path of a file holding gitopsd's Matrix password", base, check)
    room = data.get("room")
    if not isinstance(room, str) or not re.match(r"^(![^\s]+|#[^\s:]+:[^\s]+)$", room):
        check.add(f"{key}.room", f"must be a room id (!abc:example.org) or alias (#deploys:example.org), not {room!r}")
    accounts_raw = data.get("accounts", {})
    accounts: list[tuple[str, str]] = []
    if not isinstance(accounts_raw, dict):
        check.add(f"{key}.accounts", "must map Matrix user ids to identities, e.g. {'@alice:example.org': alice}")
    else:
        for account, identity in accounts_raw.items():
            if not isinstance(account, str) or not MATRIX_USER_RE.match(account):
                check.add(f"{key}.accounts", f"{account!r} is not a Matrix user id like @alice:example.org")
            elif not isinstance(identity, str) or not IDENTITY_RE.match(identity) or account == user:
                check.add(f"{key}.accounts.{account}", f"must be the identity {account} approves as (a user name), "
                                                       f"not {identity!r}")
            else:
                accounts.append((account, identity))
    timeout = check.number(data, "timeout", key, Matrix.timeout, minimum=1, maximum=120, what="two minutes")
    if not homeserver or not isinstance(user, str) or password is None or not isinstance(room, str):
        return None
    return Matrix(homeserver=homeserver, user=user, password_file=password, room=room, accounts=tuple(accounts),
                  timeout=timeout)
