"""`gitopsd db rebuild`: the records the promotion rule trusts, read back from the audit trail in refs/notes/gitopsd.

Every deployment's end, sign-off, release candidate and approval is noted on its commit (releases.py), and the
notes travel with the repository: a state database lost with no backup is rebuilt from them. The notes carry
minutes, not seconds, and no pushers, so self-approval identities beyond a candidate's creator are not restored.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ..adapters.store import Store
from ..base import gitcli
from ..core.errors import GitError
from ..core.settings import Config, Repository
from ..core.words import plural
from .releases import NOTES_REF

WHEN = r"(\d{4}-\d\d-\d\d \d\d:\d\d) UTC"
DEPLOYMENT = re.compile(
    r"gitopsd: (deploy|rollback|reapply) to (\S+) (\w+) \(deployment #(\d+), (\S+) by (.+?)\) at " + WHEN + r"(?:: (.*))?"
)
SIGNOFF = re.compile(r"gitopsd: (signed off|rejected|withdrew their sign-off) in (\S+) by (.+?) at " + WHEN + r"(?:: (.*))?")
RC_CREATED = re.compile(r"gitopsd: release candidate rc/(\S+) for (\S+) created by (.+?) at " + WHEN)
APPROVAL = re.compile(
    r"gitopsd: rc/(\S+) (approved|rejected|(?:approval|rejection|word) withdrawn|withdrew their word on) by (.+?) at "
    + WHEN
    + r"(?:: (.*))?"
)
# What built-in CI built and where its signed provenance is (ci/steps.py): evidence, nothing the rule trusts to restore.
BUILT = re.compile(r"gitopsd: built \S+ sha256:[0-9a-f]{64} \(CI run #\d+\), provenance .+")
SIGNOFF_VERDICT = {"signed off": "signoff", "rejected": "reject", "withdrew their sign-off": "withdraw"}
APPROVAL_KIND = {
    "approved": "approve",
    "rejected": "reject",
    "approval withdrawn": "withdraw",
    "rejection withdrawn": "withdraw",
    "word withdrawn": "withdraw",
    "withdrew their word on": "withdraw",  # as notes said it before
}


@dataclass
class Report:
    """What a rebuild restored, per repository and environment, and the lines it could not read."""

    deployments: dict[tuple[str, str], int] = field(default_factory=dict)
    already: int = 0
    signoffs: dict[str, int] = field(default_factory=dict)
    rcs: dict[str, int] = field(default_factory=dict)
    approvals: dict[str, int] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)
    no_notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for (repo, env), n in sorted(self.deployments.items()):
            out.append(f"{repo}/{env}: {plural(n, 'deployment')} restored")
        for repo in sorted(set(self.signoffs) | set(self.rcs) | set(self.approvals)):
            out.append(
                f"{repo}: {plural(self.signoffs.get(repo, 0), 'sign-off')}, "
                f"{plural(self.rcs.get(repo, 0), 'release candidate')}, {plural(self.approvals.get(repo, 0), 'approval')} restored"
            )
        if self.already:
            out.append(f"{self.already} record{'s were' if self.already != 1 else ' was'} already in the store: kept")
        for repo in self.no_notes:
            out.append(f"{repo}: no {NOTES_REF}: nothing to restore")
        if not out:
            out.append("nothing to restore: no gitopsd notes in the configured repositories")
        if self.unread:
            out.append(f"{len(self.unread)} note line{'s' if len(self.unread) != 1 else ''} could not be read (not restored):")
            out.extend(f"  {line}" for line in self.unread[:50])
        out.append("times are to the minute, as the notes give them; start the daemon again (systemctl start gitopsd)")
        return out


MAX_ID = 2**63 - 1  # the largest deployment number the store (SQLite, PostgreSQL bigint) keeps


def _unreadable(line: str) -> bool:
    """A note edited by hand whose time is no date (a month 13) or whose number no store keeps: listed, not restored."""
    for pattern, when in ((DEPLOYMENT, 7), (SIGNOFF, 4), (RC_CREATED, 4), (APPROVAL, 4)):
        if m := pattern.fullmatch(line):
            try:
                _at(m[when])
            except ValueError:
                return True
            return pattern is DEPLOYMENT and int(m[4]) > MAX_ID
    return False


def _at(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def _minute(ts: float) -> float:
    """A recorded time as a note gives it: a record already in the store is not written twice."""
    return float(int(ts // 60) * 60)


def noted(repo: Repository) -> list[tuple[str, str, str]]:
    """Every (commit, tree, line) of the repository's gitopsd notes; [] when it has none."""
    if gitcli.rev_parse(repo.path, NOTES_REF) is None:
        return []
    listing = gitcli.git(repo.path, "notes", f"--ref={NOTES_REF}", "list")
    commits = [line.split()[1] for line in listing.splitlines() if len(line.split()) == 2]
    if not commits:
        return []
    out = gitcli.git(
        repo.path,
        "log",
        f"--notes={NOTES_REF}",
        "--no-walk=unsorted",
        "--stdin",
        "--format=%H %T%n%N%x1e",
        input="\n".join(commits) + "\n",
    )
    found: list[tuple[str, str, str]] = []
    for record in out.split("\x1e"):
        head, _, body = record.strip("\n").partition("\n")
        if len(head.split()) != 2:
            continue
        commit, tree = head.split()
        found.extend((commit, tree, line.strip()) for line in body.splitlines() if line.strip())
    return found


def rebuild(config: Config, now: float) -> Report:
    """Write what the notes of every configured repository say into the state database. The daemon is stopped."""
    report = Report()
    with Store(config.database) as store:
        for repo in config.repositories:
            try:
                lines = noted(repo)
            except GitError as exc:
                report.unread.append(f"{repo.name}: cannot read its notes: {exc}")
                continue
            if not lines:
                report.no_notes.append(repo.name)
            _restore(store, repo, lines, report)
    return report


def _restore(store: Store, repo: Repository, lines: list[tuple[str, str, str]], report: Report) -> None:
    envs = {e.name: e for e in repo.environments}
    deployments: list[tuple[int, Any]] = []
    for commit, tree, line in lines:
        if _unreadable(line):
            report.unread.append(f"{repo.name} {commit[:7]}: {line[:200]}")
        elif (m := DEPLOYMENT.fullmatch(line)) and m[2] in envs:
            deployments.append((int(m[4]), (commit, tree, m)))
        elif (m := SIGNOFF.fullmatch(line)) and m[2] in envs:
            verdict, at = SIGNOFF_VERDICT[m[1]], _at(m[4])
            if (m[3], verdict, at) in {(a, v, _minute(t)) for a, v, _n, t in store.signoffs(repo.name, m[2], tree)}:
                report.already += 1
                continue
            store.add_signoff(
                repo=repo.name, env=m[2], commit=commit, tree=tree, actor=m[3], verdict=verdict, note=m[5] or "", now=at
            )
            report.signoffs[repo.name] = report.signoffs.get(repo.name, 0) + 1
        elif (m := RC_CREATED.fullmatch(line)) and m[2] in envs:
            target = envs[m[2]]
            order = [e.name for e in repo.environments]
            source = target.promote_from or (order[order.index(target.name) - 1] if order.index(target.name) else "")
            if store.add_rc(
                repo=repo.name,
                name=m[1],
                commit=commit,
                tree=tree,
                source_env=source,
                target_env=target.name,
                created_by=m[3],
                self_identities=[m[3]],
                now=_at(m[4]),
            ):
                report.rcs[repo.name] = report.rcs.get(repo.name, 0) + 1
            else:
                report.already += 1
        elif m := APPROVAL.fullmatch(line):
            kind, at = APPROVAL_KIND[m[2]], _at(m[4])
            if (m[3], kind, at) in {(a, k, _minute(t)) for a, k, _n, t in store.approval_rows(repo.name, m[1])}:
                report.already += 1
                continue
            store.add_approval(repo=repo.name, rc=m[1], tree=tree, actor=m[3], kind=kind, note=m[5] or "", now=at)
            report.approvals[repo.name] = report.approvals.get(repo.name, 0) + 1
        elif BUILT.fullmatch(line):
            continue
        else:
            report.unread.append(f"{repo.name} {commit[:7]}: {line[:200]}")
    previous: dict[str, str] = {}
    for dep_id, (commit, tree, m) in sorted(deployments, key=lambda d: d[0]):
        kind, env, result, trigger, actor, at, why = m[1], m[2], m[3], m[5], m[6], _at(m[7]), m[8]
        if store.restore_deployment(
            dep_id,
            repo=repo.name,
            env=env,
            commit=commit,
            tree=tree,
            previous_commit=previous.get(env),
            kind=kind,
            result=result,
            trigger=trigger,
            actor=actor,
            outcome=why,
            at=at,
        ):
            report.deployments[(repo.name, env)] = report.deployments.get((repo.name, env), 0) + 1
        else:
            report.already += 1
        if result == "succeeded":
            previous[env] = commit
