"""`repositories:` and their `environments:`: branches, promotion, playbooks, rollouts, notify, windows."""

from __future__ import annotations

import difflib
import os
import posixpath
import pwd
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..core.settings import Ci, Environment, Notify, Repository, Rollout
from ..core.windows import Cron, DurationTooLong, Window, WindowError, parse_duration
from .checks import _drift, _verify, _watch
from .ci import _ci, _contexts
from .nodes import _execution_node
from .problems import _NO_PATH, BRANCH_RE, NAME_RE, _Checker, _flag, _resolve, _url

DEFAULT_ENVIRONMENTS = ("qa", "staging", "production")
MAX_WINDOW = timedelta(days=31)
REPO_KEYS = {
    "name": "the repository's name in commands, the API and the dashboard",
    "path": "the bare repository's path",
    "environments": "its environments in promotion order (default qa, staging, production)",
    "ci": "its CI: a trigger for a CI server and/or steps gitopsd runs",
    "signatures": "the signatures main's new commits need (keys as an environment's)",
}
ENV_KEYS = {
    "name": "the environment's name",
    "branch": "the branch deployed here (default: the name)",
    "promote_from": "the branch promoted from (default: the previous environment's, main for the first)",
    "inventory": "Ansible inventory in the tree (default environments/<name>/hosts.yml)",
    "playbook": "playbook in the tree (default playbooks/deploy.yml)",
    "timeout": "seconds a run may take (default 900); the run and every process it started are then reaped",
    "auto_rollback": "deploy the last good tree again after a failed deployment",
    "retries": "failed attempts retried before the environment stalls",
    "retry_backoff": "seconds before the first retry, doubled per failure (+-20 % jitter)",
    "retry_backoff_max": "most seconds between retries",
    "windows": "change windows: when deployments may (allow) or may not (deny) start",
    "override_by": "identities who may deploy outside the windows",
    "rollout": "deploy in batches, with a bake time between them",
    "verify": "checks after a deployment: HTTP, a playbook, Prometheus",
    "notify": "a command or webhook told of each deployment",
    "vault_password_file": "Ansible Vault password file for this environment",
    "require_checks": "check contexts that must be success on a tree before it is promoted here",
    "auto_promote": "the daemon promotes a tree here once it passes what is required",
    "signoff_by": "identities who may sign off manual testing here",
    "require_signoff": "sign-offs a tree needs from an earlier environment before it is promoted here",
    "approvals": "approvals a release candidate needs before it is promoted here",
    "watch": "checks that keep running for a while after a deployment",
    "drift": "how often the hosts are checked against the deployed tree, and whether drift is healed",
    "execution_node": "where playbooks run: local (the default), any, or a node's name",
    "require_provenance": "only trees whose built artifacts carry valid signed provenance",
    "signatures": "every new commit signed by an allowed signer",
    "signed_push": "required: only `git push --signed` with an allowed key",
}
ROLLOUT_KEYS = {
    "batches": "hosts per batch: numbers or percentages, e.g. [1, 25%, 100%]",
    "max_fail_percentage": "percentage of a batch's hosts that may fail before the rollout stops",
    "bake": "time to wait between batches",
}
NOTIFY_KEYS = {
    "command": "argv run after each deployment (never through a shell)",
    "webhook": "URL POSTed a JSON body after each deployment",
}
WINDOW_KEYS = {
    "allow": "cron expression of when a window opening deployments starts",
    "deny": "cron expression of when a window closing deployments starts",
    "duration": "how long each window lasts",
    "timezone": "the cron expression's time zone (default UTC)",
    "name": "the window's name in messages",
}


def _repository(raw: Any, key: str, base: Path, check: _Checker) -> Repository:  # noqa: C901 (a config section: one branch per key)
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
            except PermissionError:  # a folder this user may not look into (the service layout's, as another user)
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
            check.add(
                f"{at}.branch",
                f"branch {env.branch!r} is already used by environment {branches[env.branch]!r}; "
                "each environment needs its own branch",
            )
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
                check.add(
                    f"{key}.environments[{i}].require_checks",
                    f"{context!r} would never be reported: gitopsd/<name> comes from the built-in CI step "
                    f"<name> (its steps give {known})",
                )
    for i, env in enumerate(envs):
        if env.auto_promote and env.promote_from not in branches and not env.require_checks:
            check.add(
                f"{key}.environments[{i}].auto_promote",
                f"would promote every new head of {env.promote_from} untested: name the checks it must pass in require_checks",
            )
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
        hint = (
            f"{source!r} is the environment whose branch is {by_name[source]!r}; "
            if source in by_name
            else "".join(f"did you mean {m!r}? " for m in difflib.get_close_matches(source, known, 1))
        )
        check.add(
            f"{key}.environments[{i}].promote_from",
            f"{source!r} is no environment branch here, not main and no branch of {path}: {hint}"
            f"promote from one of {', '.join(dict.fromkeys(known))}, or push the branch {source!r} first",
        )


def _has_branch(repo: Path, branch: str) -> bool | None:
    """Whether a bare repository has refs/heads/BRANCH (a loose ref or in packed-refs); None if it cannot tell."""
    ref = f"refs/heads/{branch}"
    try:
        if (repo / "reftable").exists() or not (repo / "HEAD").is_file():
            return None  # another ref format: read only through git, which the config does not run
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
            continue  # no loop, or one already reported; promoting from its own branch is reported above
        on_a_loop.update(chain)
        # Say it where promote_from is written: a loop cannot be made of defaults alone.
        at = next((i for i in sorted(chain) if f"{key}.environments[{i}].promote_from" in check.lines), start)
        chain = chain[chain.index(at) :] + chain[: chain.index(at)]
        loop = " <- ".join(envs[i].branch for i in chain + chain[:1])
        check.add(
            f"{key}.environments[{at}].promote_from",
            f"promotions go round in a loop ({loop}), so nothing can ever enter it: one of these environments "
            "must promote from a branch outside the loop (usually main)",
        )


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
        pass  # a hook or a read-only command, as another user: the daemon and check-config see it
    return path


def _rollout(raw: Any, key: str, check: _Checker) -> Rollout | None:
    from ..core.batches import validate_batches

    data = check.mapping(raw, key, ROLLOUT_KEYS)
    batches = data.get("batches", ["100%"])
    problem = validate_batches(batches)
    if problem:
        check.add(f"{key}.batches", problem)
        batches = ["100%"]
    return Rollout(
        batches=tuple(batches),
        max_fail_percentage=check.number(data, "max_fail_percentage", key, 0.0, maximum=100, what="a percentage"),
        bake=check.seconds(data, "bake", key, 0.0),
    )


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
        bad = False  # every problem of the entry is said, not only the first
        try:
            cron = Cron.parse(str(data["allow" if allow else "deny"]))
            duration = parse_duration(data.get("duration"))
        except DurationTooLong:  # more seconds than a timedelta holds: said as too long a window, below
            duration = MAX_WINDOW + MAX_WINDOW
        except WindowError as exc:
            check.add(at, str(exc))
            bad = True
        if not bad and duration > MAX_WINDOW:  # checking a window walks back over its whole length, minute by minute
            check.add(
                f"{at}.duration",
                f"a window lasts at most {MAX_WINDOW.days} days, not {data.get('duration')} "
                "(for longer, let cron start it again)",
            )
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
        name = str(
            data.get("name")
            or f"{'allow' if allow else 'deny'} {data['allow' if allow else 'deny']} for {data.get('duration')} ({tz})"
        )
        windows.append(Window(name, allow, cron, duration, tz))
    return tuple(windows)
