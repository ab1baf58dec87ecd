"""The exact-tree promotion: a commit with parents [DST head, SRC head] and exactly SRC head's tree.

One implementation for `gitopsd promote` on the server and for a developer's push to the request
ref `refs/promote/<env>`, which the pre-receive hook turns into the same commit. Both judge it
with `policy.judge`, announce it to the daemon, then move the destination branch by
compare-and-swap. Runs inside pre-receive (promotion_request.py), so it imports only what the hook may.

Inside pre-receive, git runs with the pushed objects in quarantine (GIT_OBJECT_DIRECTORY, ...):
a commit written there is deleted with the quarantine when the push is refused, and git refuses
to move refs from inside it. The promotion commit is built only from objects already in the
repository (the source head and its tree, the destination head), so it is written, and the
branch moved, with the quarantine variables removed: straight into the repository, where it stays.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..base import gitcli, hookenv
from . import policy

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: this runs inside pre-receive
    from collections.abc import Callable

    from .policy import Records
    from .signatures import SshCrypto
    from .snapshot import GateEnvironment, GateRepository

QUARANTINE_VARS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")


class Promotion:
    """What a promotion did. `state` is unchanged | refused | dry-run | moved | raced."""

    __slots__ = ("state", "commit", "tree", "verdict", "summary", "announced")

    def __init__(
        self,
        state: str,
        commit: str = "",
        tree: str = "",
        verdict: policy.Verdict | None = None,
        summary: str = "",
        announced: bool = False,
    ):
        self.state, self.commit, self.tree, self.verdict, self.summary = state, commit, tree, verdict, summary
        self.announced = announced  # the daemon got the nudge


def outside_quarantine() -> dict[str, str]:
    """This process's environment without pre-receive's quarantine: git reads and writes the repository itself."""
    return {k: v for k, v in hookenv.environ().items() if k not in QUARANTINE_VARS}


def in_repository(repo_path: str, commit: str) -> bool:
    """Is `commit` in the repository itself (not only in a push's quarantine)?"""
    return (
        gitcli.run(
            ["git", "-C", repo_path, "cat-file", "-e", "--end-of-options", f"{commit}^{{commit}}"], env=outside_quarantine()
        )[0]
        == 0
    )


def changes(view: GateRepository, repo_path: str, dst_tree: str, tree: str, src_name: str, dst_name: str) -> str:
    """What a promotion would change, before it happens: the files, and the command that says it per host."""
    files = gitcli.git(
        repo_path, "diff", "--name-only", "--no-renames", "--end-of-options", dst_tree, tree, "--", check=False
    ).splitlines()
    said = f"it changes {len(files)} file{'' if len(files) == 1 else 's'} ({', '.join(files[:5])}{', ...' if len(files) > 5 else ''})"
    if src_name.startswith("rc/"):
        return f"{said}; what each host would do: gitopsd preview --rc {src_name[3:]} --repo {view.name}"
    if view.environment(src_name) is not None:
        return f"{said}; what each host would do: gitopsd preview {src_name} {dst_name} --repo {view.name}"
    return said


def promote(
    view: GateRepository,
    repo_path: str,
    ledger: Records,
    dst: GateEnvironment,
    src_name: str,
    src_head: str,
    dst_head: str,
    *,
    identity: str,
    override: str | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    announce: Callable[[str, str | None], bool] = lambda _commit, _reason: False,
    ssh_crypto: SshCrypto | None = None,
) -> Promotion:
    """Promote `src_head` (of `src_name`) to `dst` (a gate environment of `view`) with exactly its tree.

    Write the commit, judge it as the hook judges a push (`ssh_crypto`: as policy.judge), call
    `announce(commit, override) -> bool` (the daemon's nudge: was it sent?) and move the branch from
    `dst_head` by compare-and-swap.
    """
    now = now or datetime.now(UTC)
    tree, dst_tree = gitcli.trees_of(repo_path, src_head, dst_head)
    tree = tree or ""
    if tree == dst_tree:
        return Promotion(
            "unchanged",
            dst_head,
            tree,
            summary=f"{dst.name} already has the tree of {src_name} ({src_head[:7]}): nothing to promote",
        )
    subject = f"Promote {src_name} ({src_head[:7]}) to {dst.name}"
    message = f"{subject}\n\nGitopsd-Promoted-By: {identity}\nGitopsd-Promoted-At: {now.isoformat(timespec='seconds')}\n"
    if override:
        message += f"Gitopsd-Override: {override}\n"
    clean = outside_quarantine()
    ident = gitcli.GITOPSD_IDENTITY
    commit = gitcli.git(
        repo_path,
        *gitcli.signing_args(repo_path),
        "-p",
        dst_head,
        "-p",
        src_head,
        "-F",
        "-",
        "--end-of-options",
        tree,
        input=message,
        env={
            **clean,
            "GIT_AUTHOR_NAME": ident.name,
            "GIT_AUTHOR_EMAIL": ident.email,
            "GIT_COMMITTER_NAME": ident.name,
            "GIT_COMMITTER_EMAIL": ident.email,
        },
    ).strip()
    verdict = policy.judge(
        view,
        repo_path,
        ledger,
        dst,
        dst_head,
        commit,
        identity=identity,
        override_reason=override,
        now=now,
        ssh_crypto=ssh_crypto,
        shown_as=src_head,  # the merge above is never seen unless it lands: name what was promoted
    )
    if not verdict.accepted:
        return Promotion("refused", commit, tree, verdict)
    if dry_run:
        return Promotion(
            "dry-run",
            commit,
            tree,
            verdict,
            f"would promote {src_name} ({src_head[:7]}, tree {tree[:7]}) to {dst.name}: {verdict.rule}\n"
            + changes(view, repo_path, dst_tree or dst_head, tree, src_name, dst.name),
        )
    # Announce the commit before the branch moves, as a push does: the daemon judges it again, but
    # leaves deploy windows to this verdict (it may hold an override) only for an announced commit.
    announced = announce(commit, verdict.override)
    moved = (
        gitcli.run(
            [
                "git",
                "-C",
                repo_path,
                "update-ref",
                "-m",
                f"gitopsd promote {src_name} {dst.name} by {identity}",
                f"refs/heads/{dst.branch}",
                commit,
                dst_head,
            ],
            env=clean,
        )[0]
        == 0
    )
    if not moved:
        return Promotion(
            "raced",
            commit,
            tree,
            verdict,
            f"{dst.branch} moved while the promotion was being made; nothing was changed. Run it again.",
            announced,
        )
    return Promotion(
        "moved",
        commit,
        tree,
        verdict,
        f"{dst.name}: {dst.branch} is now at {commit[:7]} ({subject}); its tree {tree[:7]} is what {src_name} runs.",
        announced,
    )
