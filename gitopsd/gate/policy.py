"""The promotion rule, one implementation for the pre-receive hook and `gitopsd promote`.

A new head of an environment branch is accepted only if its tree is
  (a) the tree of a commit on the `promote_from` branch that, where that source is an
      environment, was deployed and verified successfully there; or
  (b) a rollback (always possible, also during a freeze): the tree the environment runs now
      (e.g. reverting a head that failed), or the rollback target, the tree that ran there
      before the current one (`rollback_trees`). Any earlier tree is a rollback only through
      `gitopsd rollback ENV --to DEPLOYMENT_ID`, an operator's command the daemon admits.
Environment branches are never deleted, created (except by `gitopsd init`) or rewritten.

This runs on every push: it imports only the standard library's light modules, `gitcli` (git
subprocesses) and `snapshot` (the configuration as the rule sees it); deploy windows are imported
only for an environment that has some. `tests/integration/test_hooks.py` holds it to that.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..base import gitcli
from ..core.constants import EMPTY_TREE
from . import snapshot
from .snapshot import GateEnvironment, GateRepository

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: the hook does not import typing
    from typing import Protocol

    from .attested import Attestation
    from .locks import BreakGlass, Lock
    from .rejections import Rejection
    from .required import Status
    from .signatures import SshCrypto

    class Records(Protocol):
        """What the rule reads of the deployment records: snapshot.Ledger in the hook, adapters.store.Store elsewhere."""

        def tree_succeeded(self, repo: str, env: str, tree: str) -> bool: ...
        def successes(self, repo: str, env: str) -> list[tuple[str, str]]: ...
        def statuses(self, repo: str, tree: str) -> list[Status]: ...
        def signoffs(self, repo: str, env: str, tree: str) -> list[tuple[str, str, str, float]]: ...
        def rcs_for_tree(self, repo: str, tree: str, target_env: str) -> list[tuple[str, float]]: ...
        def approval_rows(self, repo: str, rc: str) -> list[tuple[str, str, str, float]]: ...
        def locks(self, repo: str, env: str, now: float) -> list[Lock]: ...
        def break_glass(self, repo: str, env: str, now: float) -> BreakGlass | None: ...
        def rejections(self, repo: str, tree: str) -> list[Rejection]: ...
        def attestations(self, repo: str, tree: str) -> list[Attestation]: ...
        def preview_marks(self, repo: str, rc: str, env: str) -> tuple[list[tuple[int, int, float, str]], int, float | None]: ...


SCAN_LIMIT = 5000  # how far back on the source branch a matching tree is looked for


class Verdict:
    """How the policy judged one ref update. `kind` is promotion | rollback | unchanged | refused.

    `rule` is the line a person reads; a refusal's `rule_id` is its short stable id (one of
    nudge.REFUSAL_RULES, the metrics label), so rewording `rule` never moves the count.
    """

    __slots__ = ("accepted", "kind", "rule", "detail", "instead", "override", "rule_id")

    def __init__(
        self,
        accepted: bool,
        kind: str,
        rule: str,
        detail: list[str] | None = None,
        instead: list[str] | None = None,
        override: str | None = None,
        rule_id: str = "",
    ):
        self.accepted, self.kind, self.rule, self.rule_id = accepted, kind, rule, rule_id
        self.detail, self.instead, self.override = detail or [], instead or [], override

    def __repr__(self) -> str:
        return f"Verdict({self.kind}: {self.rule})"

    def refusal_lines(self, ref: str, config: str | None = None) -> list[str]:
        """The refusal as `remote:` lines; with a non-default `config`, the advised commands name it."""
        out = ["", f"gitopsd: push to {ref} refused", f"  rule: {self.rule}"]
        out += [f"  {line}" for line in self.detail]
        if self.instead:
            out.append("  what to do instead:")
            out += [f"    {with_config(line, config)}" for line in self.instead]
        return out + [""]


def with_config(advice: str, config: str | None) -> str:
    """Advice ending in a `gitopsd` command gets `--config FILE` when the config is not the default one."""
    if not config or config == snapshot.DEFAULT_CONFIG:
        return advice
    at = advice.rfind("gitopsd ")
    if at < 0 or any(c in advice[at:] for c in "()&|;<"):
        return advice  # no gitopsd command last on the line (or a compound one): leave it as it is
    return f"{advice} --config {config}"


def refuse(rule_id: str, rule: str, detail: list[str], instead: list[str]) -> Verdict:
    """A refusal by the rule `rule_id` (one of nudge.REFUSAL_RULES), said as `rule`, `detail` and `instead`."""
    return Verdict(False, "refused", rule, detail, instead, rule_id=rule_id)


def tree_on_branch(repo_path: str, branch: str, commit: str, tree: str, head: str | None = None) -> bool:
    """Is `tree` the tree of a commit on `branch` (the commit itself, the head, or recent history)?"""
    head = head or gitcli.branch_head(repo_path, branch)
    if head is None:
        return False
    if head == commit:
        return True
    if gitcli.tree_of(repo_path, head) == tree or gitcli.is_ancestor(repo_path, commit, head):
        return True
    trees = gitcli.git(repo_path, "log", f"-n{SCAN_LIMIT}", "--format=%T", "--end-of-options", head, check=False)
    return tree in trees.split()


def rollback_trees(successes: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """Given an environment's successful deployments as (kind, tree), oldest first, return (current, target).

    The deployments make a stack: a deploy or reapply of tree T pushes T unless T is on top; a
    rollback to T pops down to T (or pushes it, when it fell off the bounded history). The top is
    the tree that runs now; the rollback target is the entry under it, the tree that ran before.
    So going back to the bad release after a rollback is not a rollback again.
    """
    stack: list[str] = []
    for kind, tree in successes:
        if kind == "rollback" and tree in stack:
            del stack[len(stack) - stack[::-1].index(tree) :]
        elif not stack or stack[-1] != tree:
            stack.append(tree)
    return (stack[-1] if stack else None), (stack[-2] if len(stack) > 1 else None)


def judge(  # noqa: C901 (the gate's rules in the order docs/trust-model.md gives them)
    repo: GateRepository,
    repo_path: str,
    store: Records,
    env: GateEnvironment,
    old: str | None,
    new: str,
    *,
    identity: str,
    override_reason: str | None = None,
    now: datetime | None = None,
    pending: dict[str, str] | None = None,
    check_windows: bool = True,
    ssh_crypto: SshCrypto | None = None,
    shown_as: str | None = None,
) -> Verdict:
    """Judge moving `env`'s branch from `old` to `new`. Pure reads: Git and the store.

    `pending` maps branches moved by the same push to their new heads: `git push origin main main:qa`
    promotes a commit that reaches main in that very push (pre-receive refuses all or nothing).
    `old` None (the daemon, before anything was deployed) skips the history checks; `check_windows`
    False leaves deploy windows out (the daemon, for heads a judged push announced). `ssh_crypto` checks SSH
    signatures in this process (signatures.SshCrypto); without it git does. `shown_as`: the commit of the same tree a
    person knows this move by (what they promoted), named where a refusal means the tree.
    """
    now = now or datetime.now(UTC)
    branch, short_old, short_new = env.branch, (old or "")[:7], (shown_as or new)[:7]
    rollback_cmd = f"gitopsd rollback {env.name} --repo {repo.name}"
    if new == gitcli.ZERO:
        return refuse(
            "delete",
            "environment branches cannot be deleted",
            [f"{branch} is the record of what runs in {env.name}; it is at {short_old}."],
            [
                f"to take {env.name} back to an earlier state: {rollback_cmd}",
                "or revert on top of the branch and push: git revert -m 1 <merge commit>",
            ],
        )
    if old == gitcli.ZERO:
        return refuse(
            "create",
            "environment branches are created by `gitopsd init` only",
            [f"{branch} does not exist on the server."],
            [f"ask an operator to run: gitopsd init {repo_path}"],
        )
    # One git run tells whether the move is forward and reads both trees (gitcli.forward).
    ahead, tree, old_tree = (
        gitcli.forward(repo_path, old, new) if old is not None else (True, gitcli.tree_of(repo_path, new), None)
    )
    if old is not None and not ahead:
        if old_tree == EMPTY_TREE and not gitcli.parents(repo_path, old):
            promote = f"gitopsd promote {env.promote_from} {env.name}" + (f" --repo {repo.name}" if repo.name else "")
            return refuse(
                "first-promotion",
                f"{env.name} waits for its first promotion",
                [f"{branch} is at the placeholder `gitopsd init` left ({short_old}); nothing runs there yet."],
                [
                    f"promote what {env.promote_from} runs, with exactly its tree: {promote}",
                    f"or from a clone: git push origin origin/{env.promote_from}:refs/promote/{env.name}",
                ],
            )
        return refuse(
            "non-fast-forward",
            "environment branches only move forward (no force-push, no rewritten history)",
            [f"{short_new} does not contain the current head {short_old} of {branch}."],
            [
                f"fetch {branch}, put your change on top of it and push again: "
                f"git fetch origin {branch} && git rebase origin/{branch}",
                f"to undo a deployment, revert instead of rewriting: git revert -m 1 <merge commit>, or {rollback_cmd}",
            ],
        )
    if env.signatures is not None and env.signatures.signed_commits:
        # Before any rule that accepts (an unchanged tree, a rollback): every commit this move adds is judged.
        # The daemon, before anything was deployed here (`old` None), can only judge the head itself.
        from .signatures import judge as judge_signatures

        settled = env.promote_from if repo.environment_for_branch(env.promote_from) is not None else None
        refusal = judge_signatures(
            repo_path, env.signatures, env.name, branch, new, [old] if old else [], ssh_crypto, upstream=settled
        )
        if refusal is not None:
            return refuse("signature", *refusal)
    tree = tree or ""
    if tree == old_tree:
        return Verdict(True, "unchanged", "the tree is unchanged: nothing new would run")
    current, target = rollback_trees(store.successes(repo.name, env.name))
    if tree == current:
        return Verdict(True, "rollback", f"tree {tree[:7]} is what {env.name} runs now (rollback)")
    if tree == target:
        return Verdict(True, "rollback", f"tree {tree[:7]} ran in {env.name} before the current one (rollback)")
    # Refusals below say so when the tree ran here long ago: only an operator may go back that far.
    further = (
        [
            f"{tree[:7]} ran in {env.name} earlier, but only the tree before the current one is a rollback; "
            f"to go back further: gitopsd rollback {env.name} --to <deployment id> (see gitopsd history {env.name})"
        ]
        if store.tree_succeeded(repo.name, env.name, tree)
        else []
    )
    rejected = rejection(repo, store, env, tree, short_new)
    if rejected is not None:
        return rejected
    source = repo.environment_for_branch(env.promote_from)
    if source is not None:
        if not store.tree_succeeded(repo.name, source.name, tree):
            return refuse(
                "not-verified-upstream",
                f"{env.name} only takes trees that were deployed and verified in {source.name}",
                [
                    f"commit {short_new} has tree {tree[:7]}, which was never deployed successfully to {source.name}.",
                    "A merge made by hand gets a new tree when the branches differ (after a revert, for example).",
                ],
                [
                    f"promote what {source.name} runs, with exactly its tree: gitopsd promote {source.name} {env.name}"
                    + (f" --repo {repo.name}" if repo.name else ""),
                    f"or deploy this change to {source.name} first: git push origin {short_new}:{source.branch}",
                    f"while {env.branch} has not diverged, a fast-forward also works: "
                    f"git push origin origin/{source.branch}:{env.branch}",
                    *further,
                ],
            )
    elif not tree_on_branch(repo_path, env.promote_from, new, tree, (pending or {}).get(env.promote_from)):
        return refuse(
            "not-on-source",
            f"{env.name} only takes trees from {env.promote_from}",
            [f"commit {short_new} has tree {tree[:7]}, which no commit on {env.promote_from} has."],
            [
                f"push the change to {env.promote_from} first, then promote it: "
                f"git push origin {short_new}:{env.promote_from} && git push origin {env.promote_from}:{env.branch}",
                f"or: gitopsd promote {env.promote_from} {env.name} --repo {repo.name}",
                *further,
            ],
        )
    if env.require_checks:
        from .required import unmet

        failing = unmet(env.require_checks, store.statuses(repo.name, tree))
        if failing:
            return refuse(
                "required-checks",
                f"{env.name} only takes trees that passed its required checks ({', '.join(env.require_checks)})",
                [f"commit {short_new} has tree {tree[:7]}; its checks:", *[f"  {line}" for line in failing]],
                [
                    "wait for CI to report success on this commit (or any commit with the same tree), then push again",
                    "a failed check needs a fixed commit: push it to " + env.promote_from + ", let CI test it, promote that",
                    f"see the checks: gitopsd ci status {short_new} --repo {repo.name}",
                    *further,
                ],
            )
    if env.require_provenance:
        from .attested import judge as judge_provenance

        unvouched = judge_provenance(store.attestations(repo.name, tree), env.name, tree, short_new, repo.name)
        if unvouched is not None:
            return refuse("provenance", *unvouched)
    human = human_gates(repo, store, env, tree, short_new, now, further)
    if isinstance(human, Verdict):
        return human
    passed = f"tree {tree[:7]} passed {env.promote_from}{human}"
    held = store.locks(repo.name, env.name, now.timestamp())
    if held:
        glass = store.break_glass(repo.name, env.name, now.timestamp())
        if glass is None:
            return locked(env, held, rollback_cmd, further)
        passed = f"{passed}; {held[0].describe()}"
    if not env.windows or not check_windows:
        return through_glass(store, repo, env, passed, now) if held else Verdict(True, "promotion", passed)
    from ..core.windows import next_opening, promotion_allowed

    allowed, window = promotion_allowed(env.windows, now)
    if allowed:
        return through_glass(store, repo, env, passed, now) if held else Verdict(True, "promotion", passed)
    assert window is not None
    opens = next_opening(env.windows, now)
    when = opens.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if opens else None
    opens_again = f"promotion opens again at {when}" if when else "promotion does not open again within the next 8 days"
    wait = f"wait until {when}" if when else "wait for the deploy window to open (not within the next 8 days)"
    closed = f"the deploy window is closed: {'outside' if window.allow else 'inside'} '{window.name}'"
    if store.break_glass(repo.name, env.name, now.timestamp()) is not None:
        return through_glass(store, repo, env, f"{passed}; {closed}", now)
    two = (
        f"break glass with two people: gitopsd override {env.name} --reason '<why>', then a second identity in "
        f"override_by ({', '.join(env.override_by) or 'nobody yet'}) runs gitopsd override confirm <id>"
    )
    if override_reason:
        if identity in env.override_by:  # one person's word is no longer enough (docs/change-control.md)
            return refuse(
                "deploy-window",
                f"{closed}; an emergency override needs two people",
                [f"{identity} may override {env.name}'s deploy windows, with a second identity confirming."],
                [two, f"or wait: {opens_again}", f"rollbacks are still accepted: {rollback_cmd}"],
            )
        return refuse(
            "deploy-window",
            f"{closed}; {identity} may not override it",
            [f"only {', '.join(env.override_by) or 'nobody'} may override {env.name}'s deploy windows."],
            [f"wait: {opens_again}", f"rollbacks are still accepted: {rollback_cmd}"],
        )
    return refuse(
        "deploy-window",
        f"promotions to {env.name} are closed now: {closed}",
        [f"{opens_again}."],
        [wait, f"rollbacks are still accepted: {rollback_cmd}", *further, f"in an emergency, {two}"],
    )


def locked(env: GateEnvironment, held: list[Lock], rollback_cmd: str, further: list[str]) -> Verdict:
    """The refusal of a promotion into a locked or frozen environment: who locked it, why and until when."""
    alerts = [lock for lock in held if lock.source == "alert"]
    people = [lock for lock in held if lock.source != "alert"]
    what = "frozen by a firing alert" if alerts and not people else "locked"
    wait = (
        [f"wait for the alert to resolve ({', '.join(sorted({a.actor for a in alerts}))}): its resolve lifts the freeze"]
        if alerts
        else []
    )
    if alerts and env.override_by:  # a resolve that never comes: the freeze expires, or one of them lifts it
        wait += [f"or one of {', '.join(env.override_by)} lifts the freeze: gitopsd unlock {env.name} --reason '<why>'"]
    wait += [
        f"wait until {lock.until[6:]} or ask {lock.actor} to unlock it: gitopsd unlock "
        + (env.name if lock.env != "*" else "--all" if lock.repo == "*" else f"--repo {lock.repo}")
        for lock in people
    ]
    return refuse(
        "locked",
        f"promotions to {env.name} are stopped: it is {what}",
        [lock.describe() for lock in held],
        [
            *wait,
            f"rollbacks are still accepted: {rollback_cmd}",
            *further,
            f"in an emergency, break glass with two people: gitopsd override {env.name} --reason '<why>', "
            "then a second identity in override_by runs gitopsd override confirm <id>",
        ],
    )


def through_glass(store: Records, repo: GateRepository, env: GateEnvironment, passed: str, now: datetime) -> Verdict:
    """Accept past a lock, freeze or closed window on the confirmed break-glass in force (refused without one)."""
    glass = store.break_glass(repo.name, env.name, now.timestamp())
    if glass is None:  # it lapsed between the two reads: judge as if it never was
        return refuse(
            "locked",
            f"promotions to {env.name} are stopped and the break-glass override lapsed",
            [passed],
            [f"ask again: gitopsd override {env.name} --reason '<why>'"],
        )
    return Verdict(True, "promotion", f"{passed}; {glass.describe()}", override=glass.describe())


def rejection(repo: GateRepository, store: Records, env: GateEnvironment, tree: str, short_new: str) -> Verdict | None:
    """The refusal of a tree that failed (or was rejected) in `env` or an environment before it, or None."""
    rows = store.rejections(repo.name, tree)
    if not rows:
        return None
    from .rejections import describe, rejection_for

    row = rejection_for(repo, rows, env.name)
    if row is None:
        return None
    where = repo.environment(row[0]) or env  # the unreject is for where it failed: that environment's override_by may
    who = ", ".join(where.override_by) or f"nobody yet (add override_by: to {where.name} in the config)"
    return refuse(
        "rejected",
        f"tree {tree[:7]} is rejected for {env.name}: {describe(row)}",
        [f"commit {short_new} has that tree; a rejected tree stays out of {row[0]} and every later environment."],
        [
            f"fix it and promote the fix: push to {env.promote_from} first",
            f"if it is safe after all, one of {who} runs: gitopsd release unreject {tree[:7]} "
            f"--env {row[0]} --reason '<why>' --repo {repo.name}",
        ],
    )


def human_gates(
    repo: GateRepository, store: Records, env: GateEnvironment, tree: str, short_new: str, now: datetime, further: list[str]
) -> Verdict | str:
    """The sign-offs and release-candidate approvals `env` requires of `tree`: a refusal, or what passed ('' for none)."""
    if env.signoff is None and env.approvals is None:
        return ""
    from .approvals import bound_approval_state, signoff_unmet

    need, passed = env.signoff, ""
    if need is not None:
        missing = signoff_unmet(need, store.signoffs(repo.name, need.env, tree))
        if missing:
            return refuse(
                "signoff",
                f"{env.name} only takes trees signed off after manual testing in {need.env}",
                [f"commit {short_new} has tree {tree[:7]}:", *[f"  {line}" for line in missing]],
                [
                    f"after testing what {need.env} runs, one of {', '.join(need.signers)} runs: "
                    f"gitopsd signoff {need.env} --note '<what was tested>' --repo {repo.name}",
                    *further,
                ],
            )
    policy = env.approvals
    if policy is None:
        return passed
    rcs = store.rcs_for_tree(repo.name, tree, env.name)
    if not rcs:
        return refuse(
            "approvals",
            f"{env.name} only takes release candidates with their approvals",
            [f"tree {tree[:7]} (commit {short_new}) is the tree of no release candidate for {env.name}."],
            [
                f"create one from what {env.promote_from} runs: gitopsd rc create --to {env.name} --repo {repo.name}",
                "then have it approved: gitopsd approve <rc> --note '<why>'",
                *further,
            ],
        )
    problems: list[str] = []
    for name, _created in rcs:
        _valid, problems = bound_approval_state(policy, store, repo.name, name, env.name, now.timestamp())
        if not problems:
            return f"; release candidate rc/{name} is approved"
    newest = rcs[0][0]
    from .approvals import newest_by_actor

    words = newest_by_actor(store.approval_rows(repo.name, newest)).items()
    against = sorted(actor for actor, (kind, _note, _at) in words if kind == "reject")  # approving lifts none of them
    return refuse(
        "approvals",
        f"{env.name} only takes release candidates with their approvals",
        [f"tree {tree[:7]} is release candidate rc/{newest}, which is not approved:", *[f"  {line}" for line in problems]],
        [
            *(
                [
                    f"a rejection holds until its author takes it back: {', '.join(against)} runs "
                    f"gitopsd withdraw {newest} --repo {repo.name}"
                ]
                if against
                else []
            ),
            f"ask an approver: gitopsd approve {newest} --note '<why>' --repo {repo.name}",
            f"see it: gitopsd rc show {newest} --repo {repo.name}",
            *further,
        ],
    )
