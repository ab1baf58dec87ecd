"""The pre-receive hook: the promotion gate Git runs on every push, before any ref moves.

For each environment branch the push updates, `policy.judge` decides; one refusal refuses the
whole push (Git applies all of pre-receive's verdict or none). When the push is accepted, one
nudge tells the daemon who is pushing which commits; the daemon deploys them as soon as the ref
moves (its ref watcher sees the move; it also looks again a few times after the nudge).

This is the only gitopsd code on a push's path, and it must stay fast: Git starts it with
`python -I -S` (hooks/pre-receive) and it imports only light standard-library modules, SQLite
and git subprocesses. The configuration comes from the snapshot in the state database
(`gate/snapshot.py`), or from the YAML file when the snapshot is stale or missing. Git runs hooks with the
bare repository as the working directory and the pushed objects in quarantine; `git`
subprocesses inherit that environment and see them. What only some pushes need is imported
only for them: the YAML (configfile.py), promotion requests (promotion_request.py), push
certificates (certificates.py) and the refusals no rule of `policy.judge` makes (messages.py).
"""

from __future__ import annotations

import io
import sqlite3
import sys

from ..base import gitcli, hookenv
from . import nudge, policy, snapshot
from .push import REQUEST_PREFIX, RefUpdate, is_reserved, push_option, pusher, read_updates, report_refusals, shadowed, unpoliced

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: typing and datetime cost the hook time
    from datetime import datetime
    from typing import TextIO

    from . import signatures
    from .configfile import LoadConfig
    from .signatures import SshCrypto

USAGE = "usage: pre-receive --config FILE [--database FILE]"


def shadow_refusals(updates: list[RefUpdate], branches: set[str], out: TextIO) -> list[str]:
    """Say (one line each) which pushed refs shadow an environment branch; their deletion is always welcome."""
    found = []
    for update in updates:
        branch = shadowed(update.ref, branches) if update.new != gitcli.ZERO else None
        if branch is not None:
            print(
                f"gitopsd: push to {update.ref} refused: its name shadows the environment branch {branch}, so "
                f"`git push origin main:{branch}` would be ambiguous for everyone; push it under another name",
                file=out,
            )
            found.append(branch)
    return found


def gate_config(
    config_path: str, database: str, repo_path: str, out: TextIO, load: LoadConfig
) -> tuple[snapshot.GateConfig, str] | None:
    """The gate's configuration and the state database: the snapshot if current, else the file (read by `load`).

    None (after saying why on `out`) when neither can be read, or the file is invalid: then nothing
    can be judged. An unreadable store alone is said later, and only for environment branches.
    """
    store_error = None
    if database:
        try:
            db = snapshot.connect_readonly(database)
        except sqlite3.Error as exc:  # said below only if it matters: feature branches need no store
            db, store_error = None, exc
        if db is not None:
            try:
                current = snapshot.load(db, config_path, repo_path)
            finally:
                db.close()
            if current is not None:
                return current, database
    from . import configfile  # the slow path: a config edit the daemon has not read yet

    return configfile.gate_config(config_path, database, repo_path, store_error, out, load)


def pre_receive(
    config_path: str,
    database: str,
    stdin_text: str,
    out: TextIO | None = None,
    now: datetime | None = None,
    *,
    load_config: LoadConfig,
    ssh_crypto: SshCrypto | None,
    gate: tuple[snapshot.GateConfig, str] | None = None,
) -> int:
    """Judge every environment-branch update in the push; 0 accepts the push, 1 refuses all of it. What the pusher is
    told goes to `out` (standard error), with any character a terminal would act on shown as its escape (`printable`):
    git allows C1 controls and bidirectional overrides in ref names, and refusals name refs.

    The two parts above the gate come from whoever runs it: `load_config` (config.load) reads the YAML
    when the snapshot is stale, `ssh_crypto` checks SSH signatures in this process (None: git does). `gate`: the
    configuration and database `gate_config` found, when the caller looked already (daemon/judge.py).
    """
    said = io.StringIO()
    try:
        return _pre_receive(
            config_path, database, stdin_text, said, now, load_config=load_config, ssh_crypto=ssh_crypto, gate=gate
        )
    finally:
        (out if out is not None else sys.stderr).write(printable(said.getvalue()))


def printable(text: str) -> str:
    """TEXT with each character that is neither printable nor a newline or tab shown as its escape (\\x9b, \\u202e)."""
    if all(line.isprintable() for line in text.replace("\t", " ").split("\n")):
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _pre_receive(  # noqa: C901 (the hook: one branch per kind of ref update)
    config_path: str,
    database: str,
    stdin_text: str,
    out: TextIO,
    now: datetime | None,
    *,
    load_config: LoadConfig,
    ssh_crypto: SshCrypto | None,
    gate: tuple[snapshot.GateConfig, str] | None,
) -> int:
    updates = read_updates(stdin_text)
    repo_path = hookenv.repository()
    said = io.StringIO()
    found = gate if gate is not None else gate_config(config_path, database, repo_path, said, load_config)
    if found is None:
        branches = snapshot_branches(config_path, database, repo_path)
        if branches is not None and unpoliced(updates, branches):
            # Feature branches are the developers' own: a config edit gone wrong must not stop them.
            print(
                "gitopsd: the gitopsd configuration cannot be read just now; this push touches no environment "
                "branch, so it goes through",
                file=out,
            )
            return 0
        out.write(said.getvalue())
        return 1
    out.write(said.getvalue())
    config, database = found
    repo = config.repository_at(repo_path)
    if repo is None:
        return 0  # not a repository gitopsd manages
    shadows = shadow_refusals(updates, {e.branch for e in repo.environments}, out)
    if shadows:
        envs = [repo.environment_for_branch(b) for b in shadows]
        report_refusals(config, repo_path, [(e.name if e is not None else "", "reserved-ref") for e in envs])
        return 1
    if any(is_reserved(u.ref) for u in updates):
        from .messages import reserved_refusal

        reserved = [(u, reserved_refusal(u, repo.name)) for u in updates if is_reserved(u.ref)]
        for update, verdict in reserved:
            print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
        report_refusals(config, repo_path, [("", v.rule_id) for _u, v in reserved])
        return 1
    requests = [u for u in updates if u.ref.startswith(REQUEST_PREFIX)]
    if requests:
        from .promotion_request import promotion_request

        return promotion_request(
            config, config_path, database, repo, repo_path, updates, requests[0], out, now, ssh_crypto=ssh_crypto
        )
    env_updates = [(u, env) for u in updates if u.branch for env in [repo.environment_for_branch(u.branch)] if env is not None]
    env_refs = {u.ref for u, _env in env_updates}
    branch_commits = tuple(u.new for u in updates if u.branch and u.new != gitcli.ZERO and u.ref not in env_refs)
    ruled = [
        (u, repo.branch_rules[u.branch])
        for u in updates
        if u.branch in repo.branch_rules and u.new != gitcli.ZERO and u.ref not in env_refs
    ]
    if ruled and unsigned_on_branches(config, config_path, repo_path, ruled, out, ssh_crypto):
        return 1
    if not env_updates:
        # Feature branches and main belong to the developers. The daemon hears who pushed what, for CI
        # (a trigger names the pusher) and self-approval; it sees the refs move by itself.
        announce_branches(config, repo_path, branch_commits)
        return 0
    identity = pusher(config.identity_env, repo_path)
    certified: str | None = ""
    if any(env.signatures is not None and env.signatures.signed_push for _u, env in env_updates):
        from .certificates import certified_pusher  # only for `signed_push: required`

        certified = certified_pusher(env_updates, repo_path, config_path, out)
    if certified is None:
        report_refusals(config, repo_path, [(env.name, "signed-push") for _u, env in env_updates])
        return 1
    identity = certified or identity
    override = push_option("override")
    pending = {u.branch: u.new for u in updates if u.branch and u.new != gitcli.ZERO}
    verdicts = []
    db = None
    try:
        db = snapshot.connect_readonly(database)
        ledger = snapshot.Ledger(db)
        for update, env in env_updates:
            verdict = policy.judge(
                repo,
                repo_path,
                ledger,
                env,
                update.old,
                update.new,
                identity=identity,
                override_reason=override,
                now=now,
                pending=pending,
                ssh_crypto=ssh_crypto,
            )
            verdicts.append((update, env, verdict))
    except sqlite3.Error as exc:
        from .messages import unreadable

        unreadable(database, exc, out)
        report_refusals(config, repo_path, [(env.name, "store-unreadable") for _u, env in env_updates])
        return 1
    finally:
        if db is not None:
            db.close()
    refused = [(u, v) for u, _env, v in verdicts if not v.accepted]
    for update, verdict in refused:
        print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
    if refused:
        report_refusals(config, repo_path, [(env.name, v.rule_id) for _u, env, v in verdicts if not v.accepted])
        return 1
    for _update, env, verdict in verdicts:
        if verdict.override:
            print(f"gitopsd: {env.name}: {verdict.override} (recorded)", file=out)
    announce_branches(config, repo_path, branch_commits)
    overrides = [v.override for _u, _e, v in verdicts if v.override]
    sent = nudge.send(
        config.nudge_socket,
        nudge.Nudge(
            repo=repo_path,
            trigger="push",
            actor=identity,
            commits=tuple(u.new for u, _e, _v in verdicts),
            reason=overrides[0] if overrides else None,
        ),
    )
    names = ", ".join(sorted(env.branch for _u, env, _v in verdicts))
    if sent:
        print(f"gitopsd: {names} will be deployed as soon as this push completes; follow it with `gitopsd status`", file=out)
    else:
        print(f"gitopsd: the daemon is not running; {names} will be deployed when it is back", file=out)
    return 0


def unsigned_on_branches(
    config: snapshot.GateConfig,
    config_path: str,
    repo_path: str,
    ruled: list[tuple[RefUpdate, signatures.Rule]],
    out: TextIO,
    ssh_crypto: SshCrypto | None,
) -> bool:
    """Say why (and return True) when the push adds commits to main that its `signatures:` refuses."""
    from .signatures import judge as judge_signatures

    refused = []
    for update, rule in ruled:
        branch = update.branch or ""
        found = judge_signatures(repo_path, rule, branch, branch, update.new, [update.old], ssh_crypto)
        if found is not None:
            print("\n".join(policy.refuse("signature", *found).refusal_lines(update.ref, config_path)), file=out)
            refused.append(("", "signature"))
    if refused:
        report_refusals(config, repo_path, refused)
    return bool(refused)


def snapshot_branches(config_path: str, database: str, repo_path: str) -> set[str] | None:
    """The environment branches of this repository in the newest snapshot, stale or not; None when there is none."""
    try:
        db = snapshot.connect_readonly(database) if database else None
        if db is None:
            return None
        try:
            return snapshot.branches(db, config_path, repo_path)
        finally:
            db.close()
    except sqlite3.Error:
        return None


def announce_branches(config: snapshot.GateConfig, repo_path: str, commits: tuple[str, ...]) -> None:
    """Tell the daemon who pushed these heads of non-environment branches (main, feature branches).

    Never with the trigger "push": that announces judged heads of environment branches, and a
    commit announced so would later meet no deploy window if someone moved a branch onto it by hand.
    """
    if commits:
        nudge.send(
            config.nudge_socket,
            nudge.Nudge(repo=repo_path, trigger="branch-push", actor=pusher(config.identity_env, repo_path), commits=commits),
        )


def main(argv: list[str], load_config: LoadConfig, ssh_crypto: SshCrypto | None) -> int:
    """`pre-receive --config FILE [--database FILE]`, with Git's ref updates on stdin (the ports: as pre_receive)."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    if len(argv) % 2 or not set(args) <= {"--config", "--database"} or not args.get("--config"):
        print(f"gitopsd: {USAGE}", file=sys.stderr)
        return 2
    return pre_receive(
        args["--config"], args.get("--database", ""), sys.stdin.read(), load_config=load_config, ssh_crypto=ssh_crypto
    )
