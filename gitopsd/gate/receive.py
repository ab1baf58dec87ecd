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
subprocesses inherit that environment and see them.
"""

from __future__ import annotations

import io
import os
import sqlite3
import sys

from ..base import gitcli
from . import nudge, policy, promotion, snapshot

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: typing and datetime cost the hook time
    from datetime import datetime
    from typing import TextIO

    from . import signatures

USAGE = "usage: pre-receive --config FILE [--database FILE]"


class RefUpdate:
    __slots__ = ("old", "new", "ref")

    def __init__(self, old: str, new: str, ref: str):
        self.old, self.new, self.ref = old, new, ref

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/") :] if self.ref.startswith("refs/heads/") else None


def read_updates(text: str) -> list[RefUpdate]:
    """Git's pre-receive input: one `<old> <new> <ref>` line per ref."""
    return [RefUpdate(*parts) for parts in (line.split() for line in text.splitlines()) if len(parts) == 3]


def pusher(identity_env: tuple[str, ...], repo_path: str = ".") -> str:
    """Who pushed: the transport's variable (GL_USER, GITOPSD_USER, ...) or the Unix user; never commit metadata.

    The variables count only when the hook runs as the repository's owner: the account sshd (with
    `gitopsd git-shell NAME` or authorized_keys' environment=) or Gitolite logs people in to, whose
    environment the transport sets. Any other Unix user pushing (through the file system, or over SSH
    as their own account) sets what they like, so they are who the kernel says.
    """
    uid = os.getuid()
    try:
        transport = os.stat(repo_path).st_uid == uid
    except OSError:
        transport = False
    for name in identity_env if transport else ():
        value = os.environ.get(name)
        if value:
            return value
    return nudge.user_name(uid)


def push_option(name: str) -> str | None:
    """A push option (`git push -o name=value`); pusher-controlled, so only ever a request."""
    for i in range(int(os.environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)):
        key, _, value = os.environ.get(f"GIT_PUSH_OPTION_{i}", "").partition("=")
        if key in (name, f"gitopsd.{name}") and value.strip():
            return value.strip()[:200]
    return None


REPLACE_REFS = "refs/replace/"
AUDIT_NOTES = "refs/notes/gitopsd"  # reserved for gitopsd's own audit trail


RC_TAGS = "refs/tags/rc/"  # release candidates: only gitopsd makes them (`gitopsd rc create`)


def is_reserved(ref: str) -> bool:
    return ref.startswith((REPLACE_REFS, RC_TAGS)) or ref == AUDIT_NOTES


def shadowed(ref: str, branches: set[str]) -> str | None:
    """The environment branch that `ref` shadows, if any: a tag `qa`, a branch `refs/heads/qa`, a `refs/qa` would make
    `git push origin main:qa` (and `git log qa`) ambiguous for everyone."""
    name = ref
    while True:
        for prefix in ("refs/heads/", "refs/tags/", "refs/remotes/", "refs/"):
            if name.startswith(prefix):
                name = name[len(prefix) :]
                break
        else:
            break
        if name.removesuffix("/HEAD") in branches and ref != "refs/heads/" + name:
            return name.removesuffix("/HEAD")
    return None


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


def unpoliced(updates: list[RefUpdate], branches: set[str]) -> bool:
    """Does the push touch only refs nobody polices (feature branches, main, ordinary tags)? Environment branches come
    from the newest snapshot, even a stale one: a branch it does not know the daemon judges again anyway."""
    for update in updates:
        ref = update.ref
        if ref.startswith("refs/heads/"):
            if ref[len("refs/heads/") :] in branches:
                return False
        elif not ref.startswith("refs/tags/"):
            return False  # notes, replace refs, promotion requests, and whatever cannot be told apart
        if is_reserved(ref) or shadowed(ref, branches) is not None:
            return False
    return True


def reserved_refusal(update: RefUpdate, repo_name: str) -> policy.Verdict:
    """Why a push may not touch a replace ref or gitopsd's notes, and what to do instead."""
    action = "delete" if update.new == gitcli.ZERO else "create" if update.old == gitcli.ZERO else "update"
    if update.ref.startswith(RC_TAGS):
        return policy.refuse(
            "reserved-ref",
            "release candidates (rc/* tags) are made by gitopsd only",
            [f"this push would {action} {update.ref}: an rc/* tag is what approvals bind to."],
            [
                f"create one on the server: gitopsd rc create --repo {repo_name}",
                "push your own tags under another name (e.g. v1.2.3), or leave rc/* out of the push",
            ],
        )
    if update.ref == AUDIT_NOTES:
        return policy.refuse(
            "reserved-ref",
            f"{AUDIT_NOTES} is gitopsd's own record; pushes may not change it",
            [f"this push would {action} it."],
            [
                "push your notes under another name: git push origin refs/notes/<yours>",
                f"leave {AUDIT_NOTES} out of the push (no --mirror, no refs/notes/* refspec)",
            ],
        )
    return policy.refuse(
        "reserved-ref",
        "replace refs (refs/replace/*) are not accepted in a deployment repository",
        [
            f"this push would {action} {update.ref}. A replace ref makes git show another commit in place of",
            "a real one; gitopsd judges and deploys the real commits, so it would only make them disagree.",
        ],
        [
            "keep replace refs in your clone (git replace works locally) and leave them out of the push",
            f"to change what an environment runs, push a new commit or roll back: gitopsd rollback <env> --repo {repo_name}",
        ],
    )


def unreadable(database: str, exc: Exception, out: TextIO) -> None:
    """Refuse with what is really wrong with the store: the pusher's access, a damaged file, or a busy one."""
    from ..base import storeerrors

    kind = storeerrors.classify(exc)
    print(
        f"\ngitopsd: push refused: the deployment records in {database} cannot be read ({exc}),\n"
        "so environment branches cannot be checked.",
        file=out,
    )
    if kind == storeerrors.DAMAGED:
        print(
            "The file is damaged. Ask an operator to look at it: the daemon's log says more, and\n"
            "`gitopsd status` on the deploy server shows the same error.\n",
            file=out,
        )
    elif kind == storeerrors.BUSY:
        print("Another process holds the file just now. Push again in a moment.\n", file=out)
    elif kind == storeerrors.PERMISSION:
        user = nudge.user_name(os.getuid())
        print(
            f"The hook runs as {user}, who must be able to read the state folder:\n"
            f"ask an operator to add {user} to the daemon's group (usermod -aG gitopsd {user}).\n",
            file=out,
        )
    else:
        print("Ask an operator to look at the daemon's log and `gitopsd status` on the deploy server.\n", file=out)


def gate_config(config_path: str, database: str, repo_path: str, out: TextIO) -> tuple[snapshot.GateConfig, str] | None:
    """The gate's configuration and the state database: the snapshot if current, else the file.

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
        copy = cached(config_path, repo_path)
        if copy is not None:
            return copy, database
    # The slow path: the YAML file with its full validation. PyYAML lives in site-packages, which
    # `python -S` left out of the import path.
    try:
        import site

        site.main()
        from ..config import ConfigError, load
    except ImportError as exc:
        if store_error is not None:
            unreadable(database, store_error, out)
        else:
            print(
                f"\ngitopsd: push refused: the hook's Python ({sys.executable}) cannot read the configuration "
                f"({exc}).\nAsk an operator to run `gitopsd install-hooks` again with gitopsd's own Python.",
                file=out,
            )
        return None
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(
            "\ngitopsd: push refused: the deploy server's gitopsd configuration is invalid, so environment\n"
            "branches cannot be checked. Ask an operator to run `gitopsd check-config`:",
            file=out,
        )
        for problem in exc.problems[:5]:
            print(f"  {problem}", file=out)
        return None
    gate = snapshot.from_config(config)
    if database == str(config.database):
        keep(gate, repo_path)
    from pathlib import Path

    from .shimstamp import shim_rule, write

    try:  # the shim decides pushes of main alone again from the next push on, as after the daemon's reload
        write(
            repo_path,
            str(config.source.resolve()),
            shim_rule(config.repository_at(Path(repo_path))),
            int(config.stamp.rsplit(":", 1)[-1]),
        )
    except (OSError, ValueError):  # a folder the pusher may not write, a file with no stamp: Python judges them
        pass
    return gate, str(config.database)


# A config edit the daemon has not read yet: the first push parses the YAML and keeps the gate's part for this
# repository in a snapshot file of its own beside it, stamped like the daemon's (gate/snapshot.py); later
# pushes read that until the daemon has saved the new config. Whoever may write this file may also write the
# repository's hooks and git config, so it is trusted as they are.
CACHE_FILE = "gitopsd-gate.cache"


def cached(config_path: str, repo_path: str) -> snapshot.GateConfig | None:
    """The gate's part of the config as the last push here parsed it; None unless it is of the file as it is now."""
    path = os.path.join(repo_path, CACHE_FILE)
    try:
        db = snapshot.connect_readonly(path)
    except sqlite3.Error:
        return None
    if db is None:
        return None
    try:
        return snapshot.load(db, config_path, repo_path)
    finally:
        db.close()


def keep(gate: snapshot.GateConfig, repo_path: str) -> None:
    """Write the gate's part of the config for this repository beside it (see `cached`); quietly not if it cannot."""
    import time

    repo = gate.repository_at(repo_path)
    mine = snapshot.GateConfig(gate.source, gate.stamp, gate.runtime_dir, gate.identity_env, [repo] if repo else [])
    path = os.path.join(repo_path, CACHE_FILE)
    tmp = f"{path}.{os.getpid()}"
    try:
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(snapshot.SCHEMA)
            snapshot.save(db, mine, time.time())
        finally:
            db.close()
        os.replace(tmp, path)
    except (OSError, sqlite3.Error):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def pre_receive(  # noqa: C901 (the hook: one branch per kind of ref update)
    config_path: str,
    database: str,
    stdin_text: str,
    out: TextIO = sys.stderr,
    now: datetime | None = None,
) -> int:
    """Judge every environment-branch update in the push; 0 accepts the push, 1 refuses all of it."""
    updates = read_updates(stdin_text)
    repo_path = os.getcwd()
    said = io.StringIO()
    found = gate_config(config_path, database, repo_path, said)
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
    reserved = [(u, reserved_refusal(u, repo.name)) for u in updates if is_reserved(u.ref)]
    for update, verdict in reserved:
        print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
    if reserved:
        report_refusals(config, repo_path, [("", v.rule_id) for _u, v in reserved])
        return 1
    requests = [u for u in updates if u.ref.startswith(promotion.REQUEST_PREFIX)]
    if requests:
        return promotion_request(config, config_path, database, repo, repo_path, updates, requests[0], out, now)
    env_updates = [(u, env) for u in updates if u.branch for env in [repo.environment_for_branch(u.branch)] if env is not None]
    env_refs = {u.ref for u, _env in env_updates}
    branch_commits = tuple(u.new for u in updates if u.branch and u.new != gitcli.ZERO and u.ref not in env_refs)
    ruled = [
        (u, repo.branch_rules[u.branch])
        for u in updates
        if u.branch in repo.branch_rules and u.new != gitcli.ZERO and u.ref not in env_refs
    ]
    if ruled and unsigned_on_branches(config, config_path, repo_path, ruled, out):
        return 1
    if not env_updates:
        # Feature branches and main belong to the developers. The daemon hears who pushed what, for CI
        # (a trigger names the pusher) and self-approval; it sees the refs move by itself.
        announce_branches(config, repo_path, branch_commits)
        return 0
    identity = pusher(config.identity_env, repo_path)
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
            )
            verdicts.append((update, env, verdict))
    except sqlite3.Error as exc:
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
    config: snapshot.GateConfig, config_path: str, repo_path: str, ruled: list[tuple[RefUpdate, signatures.Rule]], out: TextIO
) -> bool:
    """Say why (and return True) when the push adds commits to main that its `signatures:` refuses."""
    from .signatures import judge as judge_signatures

    refused = []
    for update, rule in ruled:
        branch = update.branch or ""
        found = judge_signatures(repo_path, rule, branch, branch, update.new, [update.old])
        if found is not None:
            print("\n".join(policy.refuse("signature", *found).refusal_lines(update.ref, config_path)), file=out)
            refused.append(("", "signature"))
    if refused:
        report_refusals(config, repo_path, refused)
    return bool(refused)


def certified_pusher(
    env_updates: list[tuple[RefUpdate, snapshot.GateEnvironment]], repo_path: str, config_path: str, out: TextIO
) -> str | None:
    """The push certificate's signer when an environment pushed to has `signed_push: required`; '' when none has;
    None (after saying why) when the certificate is missing, replayed or signed by a key that is not allowed."""
    signer = ""
    for update, env in env_updates:
        rule = env.signatures
        if rule is None or not rule.signed_push:
            continue
        from .signatures import push_certificate

        found, why = push_certificate(repo_path, rule)
        if found is None:
            verdict = policy.refuse(
                "signed-push",
                f"{env.name} only takes signed pushes (git push --signed) by an allowed signer, with a fresh certificate",
                [why],
                [
                    f"push again, signed: git push --signed origin {update.ref}",
                    "a key that is not allowed: ask an operator to add yours to the allowed signers",
                ],
            )
            print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
            return None
        signer = signer or found
    return signer


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


def report_refusals(config: snapshot.GateConfig, repo_path: str, refusals: list[tuple[str, str]]) -> None:
    """Tell the daemon which rules refused this push, by environment (its metrics count them). Never waits."""
    nudge.send(config.nudge_socket, nudge.Nudge(repo=repo_path, trigger=nudge.REFUSED, refusals=tuple(refusals)), wait=0.0)


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


def promotion_request(
    config: snapshot.GateConfig,
    config_path: str,
    database: str,
    repo: snapshot.GateRepository,
    repo_path: str,
    updates: list[RefUpdate],
    update: RefUpdate,
    out: TextIO,
    now: datetime | None = None,
) -> int:
    """A push to refs/promote/<env>: make the exact-tree promotion to <env> here, as `gitopsd promote` does.

    The pushed commit says what to promote: the head of <env>'s source branch on the server, or a
    commit on the server whose tree the source environment runs now. The request ref itself never
    lands: this returns 1 whatever happened, after saying whether <env> moved.
    """
    name = update.ref[len(promotion.REQUEST_PREFIX) :]
    dst = repo.environment(name)

    def refused(rule: str, detail: list[str], instead: list[str]) -> int:
        verdict = policy.refuse("promotion-request", rule, detail, instead)
        print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
        report_refusals(config, repo_path, [(dst.name if dst is not None else "", verdict.rule_id)])
        return 1

    if len(updates) != 1:
        return refused(
            "a promotion request is pushed alone",
            [f"this push also updates {', '.join(u.ref for u in updates if u is not update)}."],
            [f"push the other refs first, then: git push origin <commit>:{update.ref}"],
        )
    if dst is None:
        known = ", ".join(e.name for e in repo.environments)
        return refused(
            f"{update.ref} names no environment of {repo.name}",
            [f"its environments are: {known}."],
            [f"git push origin <source branch>:{promotion.REQUEST_PREFIX}<environment>"],
        )
    source = repo.environment_for_branch(dst.promote_from)
    src_name = source.name if source is not None else dst.promote_from
    src_head = gitcli.branch_head(repo_path, dst.promote_from)
    dst_head = gitcli.branch_head(repo_path, dst.branch)
    example = f"git fetch origin && git push origin origin/{dst.promote_from}:{update.ref}"
    if update.new == gitcli.ZERO or src_head is None or dst_head is None:
        return refused(
            f"{update.ref} asks to promote {src_name} to {dst.name}",
            [
                f"branch {dst.branch if dst_head is None else dst.promote_from} does not exist on the server."
                if update.new != gitcli.ZERO
                else "a request ref is never deleted: it is never kept."
            ],
            [example],
        )
    certified = certified_pusher([(update, dst)], repo_path, config_path, out)
    if certified is None:  # `signed_push: required` holds for a promotion request to it too
        report_refusals(config, repo_path, [(dst.name, "signed-push")])
        return 1
    db = None
    try:
        db = snapshot.connect_readonly(database)
        ledger = snapshot.Ledger(db)
        if update.new != src_head:
            # Not the source branch head: only a commit already on the server whose tree the source runs now.
            runs = policy.rollback_trees(ledger.successes(repo.name, source.name))[0] if source is not None else None
            if (
                runs is None
                or not promotion.in_repository(repo_path, update.new)
                or gitcli.tree_of(repo_path, update.new) != runs
            ):
                return refused(
                    f"a promotion request to {dst.name} pushes what {src_name} has",
                    [
                        f"{update.new[:7]} is not the head of {dst.promote_from} on the server ({src_head[:7]})"
                        + (f", nor a commit here whose tree {source.name} runs now." if source is not None else ".")
                    ],
                    [example, f"or on the server: gitopsd promote {src_name} {dst.name} --repo {repo.name}"],
                )
        identity = certified or pusher(config.identity_env, repo_path)
        done = promotion.promote(
            repo,
            repo_path,
            ledger,
            dst,
            src_name,
            update.new,
            dst_head,
            identity=identity,
            override=push_option("override"),
            now=now,
            announce=lambda commit, reason: nudge.send(
                config.nudge_socket,
                nudge.Nudge(repo=repo_path, trigger="promote", actor=identity, commits=(commit,), reason=reason),
            ),
        )
    except sqlite3.Error as exc:
        unreadable(database, exc, out)
        return 1
    except gitcli.GitError as exc:
        print(f"\ngitopsd: the promotion of {src_name} to {dst.name} could not be made: {exc}\n", file=out)
        return 1
    finally:
        if db is not None:
            db.close()
    if done.state == "refused":
        assert done.verdict is not None
        print("\n".join(done.verdict.refusal_lines(update.ref, config_path)), file=out)
        report_refusals(config, repo_path, [(dst.name, done.verdict.rule_id)])
        return 1
    print(f"\ngitopsd: {done.summary}", file=out)
    if done.state == "moved":
        if done.verdict is not None and done.verdict.override:
            print(f"gitopsd: {dst.name}: {done.verdict.override} (recorded)", file=out)
        print(
            f"gitopsd: promoted by {identity}; "
            + ("the daemon deploys it now" if done.announced else "the daemon deploys it when it is back")
            + f"; fetch it with: git fetch origin {dst.branch}",
            file=out,
        )
    print(f"gitopsd: {update.ref} itself is never kept, so git reports it as declined\n", file=out)
    return 1


def main(argv: list[str]) -> int:
    """`pre-receive --config FILE [--database FILE]`, with Git's ref updates on stdin."""
    args = dict(zip(argv[::2], argv[1::2], strict=False))
    if len(argv) % 2 or not set(args) <= {"--config", "--database"} or not args.get("--config"):
        print(f"gitopsd: {USAGE}", file=sys.stderr)
        return 2
    return pre_receive(args["--config"], args.get("--database", ""), sys.stdin.read())
