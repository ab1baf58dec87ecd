"""Commit statuses as the API and `gitopsd ci report|status` take and show them (docs/api.md).

One validation and one way to find a commit and its tree, for the HTTP API and the command line, so
the two cannot disagree. Stdlib only (no web framework): the CLI imports this.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ..adapters.store import Store
from ..base import gitcli
from ..core.errors import GitError, StalledError, UserError
from ..core.settings import STATUS_CONTEXT_MAX
from ..core.types import iso
from ..gate.required import STATES, Status, combined_state

MAX_BODY = 64 * 1024  # bytes of a POSTed status
MAX_DESCRIPTION = 1000  # characters (GitHub cuts at 140; ours is a limit, not a cut)
MAX_URL = 2048
HEX = re.compile(r"[0-9a-f]{7,40}")
# Contexts only the daemon's built-in CI writes (ci/steps.py, straight to the store): a required
# `gitopsd/test` must mean gitopsd ran the tests, so no token and no `gitopsd ci report` may write one.
RESERVED_PREFIX = "gitopsd/"
BUILTIN_REPORTER = "gitopsd"
NO_OWNERS: Mapping[str, str] = MappingProxyType({})


class InvalidStatus(UserError):
    """A status report that cannot be stored: `field` names what is wrong (422 in the API)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class ReservedContext(UserError):
    """A report of a context under gitopsd/, which only the built-in CI writes (403 in the API)."""


class UnknownCommit(UserError):
    """A commit the repository does not have, or an abbreviation that names several (404 in the API)."""


@dataclass(frozen=True)
class Report:
    """A validated status report (GitHub's fields)."""

    state: str
    context: str = "default"
    target_url: str | None = None
    description: str | None = None


def _text(data: dict[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidStatus(field, f"must be a string, not {type(value).__name__}")
    return value


def parse_report(data: Any) -> Report:
    """Given a decoded JSON body (or the CLI's options as a dict), return the report. Raise InvalidStatus."""
    if not isinstance(data, dict):
        raise InvalidStatus("body", 'must be a JSON object such as {"state": "success", "context": "ci/test"}')
    state = _text(data, "state")
    if state not in STATES:
        raise InvalidStatus("state", f"must be one of {', '.join(STATES)}, not {state!r}")
    context = _text(data, "context")
    context = "default" if context is None else context
    if not context.strip() or len(context) > STATUS_CONTEXT_MAX or not context.isprintable():
        raise InvalidStatus(
            "context", f"must be 1 to {STATUS_CONTEXT_MAX} printable characters (got {len(context)}), e.g. ci/test"
        )
    target_url = _text(data, "target_url")
    if target_url is not None:
        try:
            parts = urlsplit(target_url)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or len(target_url) > MAX_URL
            or not target_url.isprintable()
            or " " in target_url
        ):
            raise InvalidStatus(
                "target_url",
                f"must be an http:// or https:// URL of at most {MAX_URL} characters, e.g. https://ci.example.com/job/42",
            )
    if context.lower().startswith(RESERVED_PREFIX):
        raise ReservedContext(
            f"the context {context[:80]!r} is reserved: contexts starting with {RESERVED_PREFIX} are "
            "written only by gitopsd's built-in CI; report yours under another context, e.g. ci/jenkins"
        )
    description = _text(data, "description")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise InvalidStatus("description", f"must be at most {MAX_DESCRIPTION} characters (got {len(description)})")
    return Report(state=str(state), context=context, target_url=target_url or None, description=description or None)


# A commit's tree never changes: a CI job reports several statuses for one commit (pending, then each
# context's result), and git is asked once. Bounded; only full ids that resolved are kept.
_TREES: dict[tuple[str, str], str] = {}
_TREES_MAX = 4096


def resolve_commit(repo_path: Path, given: str, read: Callable[[str], tuple[str, str] | None] | None = None) -> tuple[str, str]:
    """Given a full or abbreviated (>= 7 hex digits) commit id, return (commit, tree) as git reads them.

    `read` (the daemon's GitRepository.commit_tree) answers for a full id in this process: a git process
    per commit cost more than the rest of a status POST. The command line goes without (no pygit2 import).

    Only objects count, never refs: a branch named like an abbreviation must not redirect a report.
    Raise UnknownCommit when the repository has no such commit, or several match; GitError when git cannot read it.
    """
    given = given.lower()
    if not HEX.fullmatch(given):
        raise UnknownCommit(f"{given[:80]!r} is not a commit id (7 to 40 hex digits)")
    known = _TREES.get((str(repo_path), given))
    if known is not None:
        return given, known
    if len(given) == 40:
        try:
            found_here = read(given) if read is not None else None
        except (GitError, StalledError):  # a repository the reader refuses (its owner): git is asked below
            found_here = None
        if found_here is not None:
            _remember(repo_path, found_here)
            return found_here
        candidates = [given]
    else:  # every object with that prefix (never a ref), then the commits among them
        _code, out, _err = gitcli.run(["git", "-C", str(repo_path), "rev-parse", f"--disambiguate={given}"])
        candidates = [line for line in out.split() if HEX.fullmatch(line) and len(line) == 40]
    # Names on stdin: `%(objecttype)` of each candidate itself, then its tree.
    code, out, err = gitcli.run(
        ["git", "-C", str(repo_path), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
        input="".join(f"{c}\n{c}^{{tree}}\n" for c in candidates),
    )
    if code != 0:  # git says "missing" of an unknown object and exits 0: this is the repository itself failing
        raise GitError(f"git cannot read the repository {repo_path}: {err.strip() or f'exit code {code}'}")
    lines = out.splitlines()
    found = []
    if code == 0 and len(lines) == 2 * len(candidates):
        for i, commit in enumerate(candidates):
            kind, tree = lines[2 * i].split(" ")[-1], lines[2 * i + 1].split(" ")
            if kind == "commit" and tree[-1] == "tree":
                found.append((commit, tree[0]))
    if len(found) > 1:
        raise UnknownCommit(f"{given} names {len(found)} commits in this repository: give more digits")
    if not found:
        raise UnknownCommit(f"no commit {given} in this repository (push it first)")
    _remember(repo_path, found[0])
    return found[0]


def _remember(repo_path: Path, found: tuple[str, str]) -> None:
    """Keep a resolved commit's tree for the next status about it (bounded)."""
    if len(_TREES) >= _TREES_MAX:
        _TREES.clear()
    _TREES[(str(repo_path), found[0])] = found[1]


def record(
    store: Store,
    repo: str,
    commit: str,
    tree: str,
    report: Report,
    reporter: str,
    now: float | None = None,
    owners: Mapping[str, str] = NO_OWNERS,
    attestations: tuple[tuple[str, str, str, str], ...] = (),
) -> dict[str, Any]:
    """Store a report against the commit and its tree (with the `attestations` of a statement uploaded with it, in the
    same transaction: Store.add_status); return it as the API shows it."""
    now = time.time() if now is None else now
    row = store.add_status(
        repo=repo,
        commit=commit,
        tree=tree,
        context=report.context,
        state=report.state,
        reporter=reporter,
        now=now,
        target_url=report.target_url,
        description=report.description,
        attestations=attestations,
    )
    shown = status_json(
        Status(report.context, report.state, report.target_url, report.description, commit, reporter, now), owners
    )
    return {"id": row, **shown, "tree": tree}


def creator(reporter: str, owners: Mapping[str, str] = NO_OWNERS) -> dict[str, Any]:
    """GitHub's user object for a reporter: a token's owner (`owners`: token name -> owner), a cli:<user>, or gitopsd.

    GitHub's clients want a number as the id; gitopsd has none, so it is a stable one made from the login."""
    login = owners.get(reporter, reporter)
    return {
        "login": login,
        "id": int(hashlib.sha256(login.encode()).hexdigest()[:12], 16),
        "type": "Bot" if reporter == BUILTIN_REPORTER else "User",
    }


def status_json(status: Status, owners: Mapping[str, str] = NO_OWNERS) -> dict[str, Any]:
    """One status in GitHub's words, its `creator` too (plus who reported it and for which commit)."""
    created = iso(status.created_at)
    return {
        "state": status.state,
        "context": status.context,
        "target_url": status.target_url,
        "description": status.description,
        "commit": status.commit,
        "reporter": status.reporter,
        "creator": creator(status.reporter, owners),
        "created_at": created,
        "updated_at": created,
    }


def combined(
    store: Store, repo: str, commit: str, tree: str, required: tuple[str, ...] = (), owners: Mapping[str, str] = NO_OWNERS
) -> dict[str, Any]:
    """GitHub's combined status of a commit: the newest status per context reported for its tree."""
    statuses = store.statuses(repo, tree)
    return {
        "state": combined_state(statuses, required),
        "sha": commit,
        "tree": tree,
        "total_count": len(statuses),
        "statuses": [status_json(s, owners) for s in statuses],
    }


def repository_json(name: str, owner: str, default_branch: str, url: str) -> dict[str, Any]:
    """GitHub's repository object with the fields its clients read, for the owner the client asked for (gitopsd has
    one namespace: any owner names the same repository). Ids are stable numbers made from the names."""

    def number(text: str) -> int:
        return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)

    return {
        "id": number(f"repo:{name}"),
        "name": name,
        "full_name": f"{owner}/{name}",
        "private": True,
        "owner": {"login": owner, "id": number(f"owner:{owner}"), "type": "Organization"},
        "url": url,
        "statuses_url": f"{url}/statuses/{{sha}}",
        "default_branch": default_branch,
    }
