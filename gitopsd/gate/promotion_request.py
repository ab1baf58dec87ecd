"""A promotion request: a push to refs/promote/<env>, which the hook turns into the exact-tree promotion to <env>.

Imported only for such a push (receive.py). The promotion itself is `promotion.promote`, as for `gitopsd promote`.
"""

from __future__ import annotations

import sqlite3

from ..base import gitcli
from . import nudge, policy, promotion, snapshot
from .certificates import certified_pusher
from .push import REQUEST_PREFIX, push_option, pusher, report_refusals

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: typing and datetime cost the hook time
    from datetime import datetime
    from typing import TextIO

    from .push import RefUpdate
    from .signatures import SshCrypto


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
    ssh_crypto: SshCrypto | None = None,
) -> int:
    """A push to refs/promote/<env>: make the exact-tree promotion to <env> here, as `gitopsd promote` does.

    The pushed commit says what to promote: the head of <env>'s source branch on the server, or a
    commit on the server whose tree the source environment runs now. The request ref itself never
    lands: this returns 1 whatever happened, after saying whether <env> moved.
    """
    name = update.ref[len(REQUEST_PREFIX) :]
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
            [f"git push origin <source branch>:{REQUEST_PREFIX}<environment>"],
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
    # A tag pushed as the request (`git push origin rc/NAME:refs/promote/ENV`) asks for the commit it names.
    wanted = update.new if update.new == src_head else gitcli.rev_parse(repo_path, f"{update.new}^{{commit}}") or update.new
    certified = certified_pusher([(update, dst)], repo_path, config_path, out)
    if certified is None:  # `signed_push: required` holds for a promotion request to it too
        report_refusals(config, repo_path, [(dst.name, "signed-push")])
        return 1
    db = None
    try:
        db = snapshot.connect_readonly(database)
        ledger = snapshot.Ledger(db)
        if wanted != src_head:
            # Not the source branch head: only a commit already on the server whose tree the source runs now.
            runs = policy.rollback_trees(ledger.successes(repo.name, source.name))[0] if source is not None else None
            if runs is None or not promotion.in_repository(repo_path, wanted) or gitcli.tree_of(repo_path, wanted) != runs:
                return refused(
                    f"a promotion request to {dst.name} pushes what {src_name} has",
                    [
                        f"{wanted[:7]} is not the head of {dst.promote_from} on the server ({src_head[:7]})"
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
            wanted,
            dst_head,
            identity=identity,
            override=push_option("override"),
            now=now,
            ssh_crypto=ssh_crypto,
            announce=lambda commit, reason: nudge.send(
                config.nudge_socket,
                nudge.Nudge(repo=repo_path, trigger="promote", actor=identity, commits=(commit,), reason=reason),
            ),
        )
    except sqlite3.Error as exc:
        from .messages import unreadable

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
