"""The dashboard's pages: what each shows, read with the functions the command line uses, rendered by Jinja2.

Pipeline reads `status.environment_status` (what `gitopsd status --json` says), Environment reads
`store.history` with `readmodels.release_marks` (as `history --json`), Release candidate reads
`readmodels.rc_shown` (as `rc show --json`), Deployment reads the deployment's Ansible output
folders (as `gitopsd logs`). Nothing here decides anything: no policy in views. This is the one
module that imports Jinja2; autoescaping is on for every template, so a commit message or an
Ansible line is always text, never markup.
"""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..adapters.store import ReleaseCandidate, Store
from ..base import gitcli
from ..ci.heads import ci_globs, matches
from ..core.runfiles import open_own
from ..core.settings import Config, Environment, Repository
from ..core.types import Deployment, DeploymentFolders
from ..gate.rejections import describe, rejection_for
from ..services.readmodels import deployment_json, host_runs, rc_shown, rc_view, release_marks, where_view
from ..services.status import (
    EnvironmentStatus,
    ago,
    environment_status,
    repository_problem,
    unavailable_status,
    with_records,
)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 25
PIPELINE_PAGE = 50  # repositories per Pipeline page

# Each state as a person reads it: a word and a symbol, so it never rests on colour alone (grayscale, colour
# blindness); the CSS class gives the colour and the border style.
STATES: dict[str, tuple[str, str]] = {
    "in-sync": ("✓", "in sync"),
    "deploying": ("↻", "deploying"),
    "queued": ("⋯", "queued"),
    "failed": ("✕", "failed"),
    "stalled": ("■", "stalled"),
    "drifted": ("≠", "drifted"),
    "watching": ("◔", "watching"),
    "watch-failed": ("✕", "watch failed"),
    "blocked": ("⊘", "blocked"),
    "out-of-sync": ("→", "out of sync"),
    "waiting-for-promotion": ("…", "waiting for promotion"),
    "suspended": ("‖", "suspended"),
    "missing-branch": ("?", "no branch"),
    "unavailable": ("!", "unavailable"),
}
RESULTS: dict[str, tuple[str, str]] = {
    "succeeded": ("✓", "in-sync"),
    "running": ("↻", "deploying"),
    "queued": ("⋯", "queued"),
    "failed": ("✕", "failed"),
    "canceled": ("‖", "suspended"),
    "interrupted": ("!", "stalled"),
}


# -- what each page shows ------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One environment of one repository on the Pipeline page (or its `main` column)."""

    env: str
    branch: str
    commit: str | None = None
    tree: str | None = None
    subject: str = ""
    state: str | None = None  # None for the main column: nothing deploys it
    reason: str | None = None
    moved_by: str | None = None
    last: Deployment | None = None
    progress: str | None = None
    hosts: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    signoffs: list[tuple[str, str]] = field(default_factory=list)
    rc: dict[str, Any] | None = None  # the release candidate waiting for approval to come here
    drifted: int = 0
    deployed: str | None = None
    locks: tuple[str, ...] = ()  # locks and alert freezes in force: who, why, until when
    promote_refused: str | None = None  # why the previous column's tree may not come here (a rejected tree)


COMMITS_KEPT = 20_000  # commits whose tree and subject heads() remembers (a commit never changes: no going stale)
_commits: dict[str, tuple[str, str]] = {}  # commit -> (tree, subject)


def heads(repo: Repository, branches: list[str]) -> dict[str, tuple[str, str, str]]:
    """branch -> (commit, tree, subject) of each of `branches` that exists: from the ref files and the commits seen
    before, else one git process for the repository (issue 28: a process per repository was most of a page's time)."""
    commits = gitcli.read_branches(repo.path, branches)
    if commits is not None:
        known: dict[str, tuple[str, str, str]] = {}
        for branch, commit in commits.items():
            seen = _commits.get(commit)  # one look each: another page's thread may empty the dict meanwhile
            if seen is None:
                break
            known[branch] = (commit, *seen)
        else:
            return known
    out = gitcli.git(
        repo.path,
        "for-each-ref",
        "--format=%(refname:strip=2)%00%(objectname)%00%(tree)%00%(contents:subject)",
        *[f"refs/heads/{b}" for b in branches],
        check=False,
    )
    found = {}
    for line in out.splitlines():
        parts = line.split("\0")
        if len(parts) == 4 and parts[0] in branches and parts[2]:
            found[parts[0]] = (parts[1], parts[2], parts[3])
    if len(_commits) > COMMITS_KEPT:
        _commits.clear()
    _commits.update({commit: (tree, subject) for commit, tree, subject in found.values()})
    return found


def pipeline_view(
    config: Config,
    store: Store,
    repo: str = "",
    state: str = "",
    page: int = 1,
    in_state: Callable[[str], set[str]] | None = None,
    per_page: int = PIPELINE_PAGE,
) -> dict[str, Any]:
    """One page of the Pipeline: repositories whose name contains `repo`, with an environment in `state` when given.

    Only the page's repositories get their cards built (a git process and the store's reads each): at 1,000
    repositories the whole page took seconds (issue 28). The state filter asks `in_state` (the daemon's rows of
    `status --json`, services/statusrows.py), else reads every status at once (all_status).
    """
    names = [r.name for r in config.repositories if repo in r.name]
    if state:
        if in_state is None:
            from ..services.status import all_status

            found = {s.repo for s in all_status(config, store) if s.state == state}
        else:
            found = in_state(state)
        names = [n for n in names if n in found]
    pages = max(1, -(-len(names) // per_page))
    page = min(max(page, 1), pages)
    shown = set(names[(page - 1) * per_page : page * per_page])
    return {
        "rows": pipeline(config, store, shown) if shown else [],
        "page": page,
        "pages": pages,
        "total": len(names),
        "repo": repo,
        "state": state,
    }


def pipeline(config: Config, store: Store, only: set[str] | None = None) -> list[dict[str, Any]]:
    """Each repository (of `only`, when given) with its columns main -> qa -> staging -> production, as `gitopsd status` decides them."""
    now = time.time()
    drifted = store.drifted_hosts()
    if only is not None:  # the page's environments' records read at once: ten queries, not ten per environment
        store = with_records(store, now, sorted(only))
    rows = []
    for repo in config.repositories:
        if only is not None and repo.name not in only:
            continue
        first = repo.environments[0].promote_from if repo.environments else "main"
        problem = repository_problem(repo.path)  # gone or unreadable: unavailable, as `status` says, not missing branches
        known = heads(repo, [first, *(e.branch for e in repo.environments)]) if problem is None else {}
        rcs = store.rcs(repo.name, limit=10) if any(e.approvals for e in repo.environments) else []
        main = Cell(first, first)
        if first in known:
            main.commit, main.tree, main.subject = known[first]
            main.moved_by = ", ".join(sorted(store.pushers(repo.name, [main.commit]))) or None
            main.checks = store.statuses(repo.name, main.tree)
        cells = [main]
        for env in repo.environments:
            status = (
                environment_status(store, repo, env, now, {b: (c, t) for b, (c, t, _s) in known.items()})
                if problem is None
                else unavailable_status(store, repo, env, problem)
            )
            cells.append(cell(store, repo, env, status, known.get(env.branch), rcs, drifted.get((repo.name, env.name), 0)))
            source = cells[-2]
            if source.tree and source.tree != cells[-1].tree:  # no Promote button for a tree that failed here
                rejected = rejection_for(repo, store.rejections(repo.name, source.tree), env.name)
                if rejected is not None:
                    why = f"{source.env}'s tree {source.tree[:7]} is rejected for {env.name}: {describe(rejected)}"
                    cells[-1].promote_refused = why
        # The source column's "Run CI again" (actions.py ci-rerun): when CI runs on its branch; deployer in the first env.
        rows.append(
            {
                "repo": repo.name,
                "cells": cells,
                "first_env": repo.environments[0].name if repo.environments else None,
                "ci": matches(first, ci_globs(repo)),
            }
        )
    return rows


def cell(
    store: Store,
    repo: Repository,
    env: Environment,
    status: EnvironmentStatus,
    head: tuple[str, str, str] | None,
    rcs: list[ReleaseCandidate],
    drifted: int,
) -> Cell:
    """One environment's column: its status plus what its hosts report, its checks, sign-offs and waiting RC."""
    c = Cell(
        env.name,
        env.branch,
        state=status.state,
        reason=status.reason,
        last=status.last,
        deployed=status.deployed,
        drifted=drifted,
        locks=status.locks,
    )
    if head is not None:
        c.commit, c.tree, c.subject = head
    if drifted and c.state == "in-sync":
        c.state = "drifted"
    last = status.last
    if last is not None:
        c.moved_by = f"{last.actor} ({last.trigger})"
        progress = last.progress
        if last.active and progress is not None:
            c.progress = progress.words
        c.hosts = sorted((str(h), str(r)) for h, r in last.detail.get("hosts", {}).items())
    if c.tree is not None:
        c.checks = store.statuses(repo.name, c.tree)
        from ..gate.approvals import newest_by_actor

        c.signoffs = [(a, v) for a, (v, _n, _w) in sorted(newest_by_actor(store.signoffs(repo.name, env.name, c.tree)).items())]
    if env.approvals is not None:
        for rc in rcs:
            if rc.target_env == env.name:
                view = rc_view(repo, store, rc)
                c.rc = view if view["state"] != "approved" or rc.tree != (c.tree or "") else None
                break
    return c


def environment_page(config: Config, store: Store, repo: Repository, env: Environment, before: int | None) -> dict[str, Any]:
    """One page of an environment's history, newest first, with what `history --json` shows per deployment, and per
    host what runs there and since when (as `gitopsd hosts ENV`)."""
    deployments = store.history(repo=repo.name, env=env.name, limit=PAGE_SIZE + 1, before=before)
    more = len(deployments) > PAGE_SIZE
    deployments = deployments[:PAGE_SIZE]
    marks = release_marks(config, store, deployments)
    rows = [{"d": d, "json": deployment_json(d, marks.get(d.id)), "batches": d.batches} for d in deployments]
    return {
        "rows": rows,
        "next_before": deployments[-1].id if more and deployments else None,
        "hosts": host_runs(store, repo.name, env.name),
        "break_glass": [r for r in store.break_glass_requests(time.time()) if (r.repo, r.env) == (repo.name, env.name)],
        "locks": [lock.describe() for lock in store.locks(repo.name, env.name, time.time())],  # as status says them
    }


def rc_page(repo: Repository, store: Store, name: str) -> dict[str, Any] | None:
    """A release candidate as `gitopsd rc show --json` builds it, with its tag's text (changes, checks, sign-offs)
    and each environment and host that runs its tree (as `gitopsd where rc/NAME`)."""
    rc = store.rc(repo.name, name)
    if rc is None:
        return None
    view = rc_shown(repo, store, rc)
    view["message"] = gitcli.git(
        repo.path, "tag", "-l", "--format=%(contents)", "--end-of-options", f"rc/{name}", check=False
    ).rstrip()
    view["checks"] = store.statuses(repo.name, rc.tree)
    view["where"] = where_view(store, repo, rc.tree)
    return view


# -- Ansible output -----------------------------------------------------------------------------------------
_SGR = re.compile(r"\x1b\[([0-9;]*)m")
_OTHER_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|[\x00-\x08\x0b-\x1f\x7f]")
_SGR_PARAMETERS = 16  # a real colour code has one to five; the rest of an absurd one is ignored
_COLOURS = {30: "black", 31: "red", 32: "green", 33: "yellow", 34: "blue", 35: "magenta", 36: "cyan", 37: "white"}


def ansi_to_html(text: str) -> Markup:
    """Ansible's coloured output as HTML: escaped first, then SGR colour codes become spans with classes.

    Only our own class names are ever written, so no byte of the output can become markup. The output is
    the repository's: a parameter of more than three digits, or past the sixteenth, is ignored, not read."""
    out: list[str] = []
    classes: list[str] = []
    pos = 0
    for match in _SGR.finditer(text):
        out.append(html.escape(_OTHER_ESCAPES.sub("", text[pos : match.start()])))
        pos = match.end()
        if classes:
            out.append("</span>")
        parameters = (match.group(1) or "0").split(";", _SGR_PARAMETERS)[:_SGR_PARAMETERS]
        for code in [(int(c) if c else 0) if len(c) <= 3 else -1 for c in parameters]:
            if code == 0:
                classes = []
            elif code == 1:
                classes = [c for c in classes if c != "ansi-bold"] + ["ansi-bold"]
            elif code in _COLOURS or code - 60 in _COLOURS:
                classes = [c for c in classes if not c.startswith("ansi-fg")] + [
                    f"ansi-fg-{_COLOURS[code % 60 if code >= 90 else code]}"
                ]
            elif code == 39:
                classes = [c for c in classes if not c.startswith("ansi-fg")]
        if classes:
            out.append(f'<span class="{" ".join(classes)}">')
    out.append(html.escape(_OTHER_ESCAPES.sub("", text[pos:])))
    if classes:
        out.append("</span>")
    return Markup("".join(out))  # noqa: S704 (every piece of the text went through html.escape above)


def output_sections(state_dir: Path, deployment: Deployment) -> list[tuple[str, Path]]:
    """(heading, stdout file) of each Ansible run of the deployment, in the order they ran (as `gitopsd logs`)."""
    outputs = DeploymentFolders.of(state_dir, deployment.id).outputs()
    many = len({n for _w, n, _p in outputs}) > 1
    return [
        (f"{'verification playbook' if what == 'verify' else 'playbook'}{f', batch {n}' if many else ''}", path)
        for what, n, path in outputs
    ]


class OutputTail:
    """The new complete lines of a deployment's Ansible output files, read from where the last call stopped."""

    def __init__(self, state_dir: Path, deployment: Deployment):
        self.state_dir, self.deployment = state_dir, deployment
        self.offsets: dict[Path, int] = {}

    def read(self) -> list[Markup]:
        """HTML chunks (a heading per file, then its lines) that appeared since the last call."""
        chunks: list[Markup] = []
        for heading, path in output_sections(self.state_dir, self.deployment):
            start = self.offsets.get(path)
            if start is None:
                chunks.append(Markup('<span class="out-heading">— {} —</span>\n').format(heading))
                start = 0
            try:
                # the run wrote its folder: a link it left there must not show what the sandbox hid from it
                with os.fdopen(open_own(DeploymentFolders.of(self.state_dir, self.deployment.id).root, path), "rb") as handle:
                    handle.seek(start)
                    data = handle.read(1 << 20)
            except OSError:
                continue
            end = data.rfind(b"\n") + 1  # whole lines only: a colour code is never cut in two
            if end:
                chunks.append(ansi_to_html(data[:end].decode("utf-8", errors="replace")))
            self.offsets[path] = start + end
        return chunks


# -- live changes ---------------------------------------------------------------------------------------------
class Changes:
    """A number that goes up whenever the store or a watched branch changes: what /events tells the pages.

    One thread compares a cheap fingerprint every `interval` seconds: SQLite's data_version (it moves when
    any other connection commits, in this process or another) and the ref files' times. The daemon may also
    call `bump()` from its own hooks to skip the wait."""

    def __init__(self, database: Path, repositories: Callable[[], list[Path]], interval: float = 0.2):
        self.database, self.repositories, self.interval = database, repositories, interval
        self.version = 0
        self._last: tuple[Any, ...] | None = None
        self._db: sqlite3.Connection | None = None
        self._started = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._thread = threading.Thread(target=self._run, name="web-changes", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching and let go of the database (the server's stop): its thread closes its own connection."""
        self.stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(self.interval + 5)

    def bump(self) -> None:
        self.version += 1

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                now = self.fingerprint()
            except (OSError, sqlite3.Error):
                self._db = None  # the database comes back with the daemon: connect again next time
                continue
            if now != self._last:
                if self._last is not None:
                    self.bump()
                self._last = now
        if self._db is not None:
            self._db.close()
            self._db = None

    def fingerprint(self) -> tuple[Any, ...]:
        if self._db is None:
            from ..gate.snapshot import connect_readonly

            self._db = connect_readonly(str(self.database))
            if self._db is None:
                raise OSError("no database yet")
        parts: list[Any] = [self._db.execute("PRAGMA data_version").fetchone()[0]]
        for path in self.repositories():
            for name in ("packed-refs", "refs/heads"):
                parts.append(_mtime(path / name))
            branches = path / "refs" / "heads"
            if branches.is_dir():  # a branch file replaced by rename leaves its folder's time alone in some cases
                parts.extend(_mtime(p) for p in sorted(branches.iterdir()))
        return tuple(parts)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def sse(event: str, data: str) -> str:
    """One server-sent event; each line of `data` on its own data: line, as the format wants."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


# -- rendering ------------------------------------------------------------------------------------------------
def templates() -> jinja2.Environment:
    """The templates, autoescaped (every value is text unless it is Markup we made), with the dashboard's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda sha: (sha or "")[:7]
    env.filters["ago"] = lambda ts: ago(ts) if ts else "-"
    env.filters["when"] = lambda ts: time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)) if ts else "-"  # with its zone
    env.filters["took"] = lambda d: f"{d.finished_at - d.started_at:.1f}s" if d.finished_at else "-"
    env.filters["ansi"] = ansi_to_html
    env.filters["tojson_attr"] = lambda value: json.dumps(value)
    env.globals["STATES"] = STATES
    env.globals["RESULTS"] = RESULTS
    return env
