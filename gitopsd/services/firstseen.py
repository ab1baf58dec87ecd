"""When each commit first reached the server, and which deployment first brought it to an environment (DORA lead time).

Commit dates are written by whoever made the commit, so they are never read: the daemon notes the time of
each push nudge, and on its next look at the repository walks from the branch heads to the heads of its
previous walk (`git rev-list NEW --not OLD`): every commit found is new to the server and gets that time.
The first walk of a repository only records its heads: commits from before it have no first-seen time
(dora.py falls back to their first deployment's start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..adapters.store import Store
from ..base import gitcli
from ..core.errors import GitError, StoreError
from ..core.types import Deployment, Kind
from .dora import SERVER_MADE

log = logging.getLogger("gitopsd.firstseen")

PENDING_FOR = 60.0  # seconds a nudge's time waits for its commits to appear (a refused push never lands)
MAX_DEPLOYED_COMMITS = 10_000  # commits recorded per deployment at most (a branch reset onto a distant history)


class FirstSeen:
    """Records first-seen times of new commits (`noted` by the listener, `walk` on the loop) and deployed commits."""

    def __init__(self, store: Store, known_trigger: Callable[[str, str], str | None] = lambda _repo, _commit: None):
        self.store = store
        self.known_trigger = known_trigger  # the trigger the daemon knows for a commit it or a command made
        self._pending: dict[str, tuple[float, str]] = {}  # repo -> (earliest nudge time, its trigger) not yet walked
        self._lock = threading.Lock()
        self._walked: dict[str, list[str]] = {}  # repo -> the heads its last walk recorded (or found recorded)

    def noted(self, repo: str, trigger: str, at: float) -> None:
        """A nudge said commits are arriving in `repo` now (pre-receive sends it before the refs move)."""
        with self._lock:
            self._pending.setdefault(repo, (at, trigger))

    def walk(self, repo: str, path: str, now: float | None = None) -> int:
        """Record the commits that reached `repo` since the last walk; return how many. Never raises."""
        now = time.time() if now is None else now
        with self._lock:
            at, via = self._pending.get(repo, (now, "found"))
            if now - at > PENDING_FOR:  # that push never landed (refused): what is new now came otherwise
                self._pending.pop(repo, None)
                at, via = now, "found"
        try:
            heads = gitcli.read_heads(path)  # no git process for each of 1,000 repositories when nothing moved
            if heads is None:
                heads = sorted(set(gitcli.git(path, "for-each-ref", "--format=%(objectname)", "refs/heads/").split()))
            if self._walked.get(repo) == heads:  # nothing moved since the last walk: no query (each sweep, issue 28)
                return 0
            old = self.store.seen_tips(repo)
            if old is None:  # the first walk: a baseline, what is there already has no first-seen time
                self.store.record_seen(repo, [], now, heads)
                self._walked[repo] = heads
                return 0
            new = sorted(set(heads) - set(old))
            if not new:
                if set(heads) != set(old):  # only deletions
                    self.store.record_seen(repo, [], now, heads)
                self._walked[repo] = heads
                return 0
            revs = "\n".join(new + [f"^{c}" for c in old]) + "\n"
            commits = gitcli.git(path, "rev-list", "--ignore-missing", "--stdin", input=revs).split()
            found = [(c, self.known_trigger(repo, c) or via) for c in commits]
            self.store.record_seen(repo, found, at, heads)
            self._walked[repo] = heads
        except (GitError, StoreError, OSError) as exc:  # OSError: out of open files or processes
            log.warning("could not record when new commits reached the server: %s", exc, extra={"repo": repo})
            return 0
        with self._lock:
            self._pending.pop(repo, None)
        return len(commits)

    def deployed(self, path: str, deployment: Deployment, previous: str | None) -> int:
        """Record the commits a successful deploy brought to its environment (those not in `previous`'s history).

        Rollbacks and reapplies bring no change; the first deployment of an environment is its baseline.
        """
        if deployment.kind != Kind.DEPLOY or deployment.result != "succeeded" or not previous:
            return 0
        try:
            out = gitcli.git(
                path,
                "rev-list",
                f"--max-count={MAX_DEPLOYED_COMMITS}",
                "--ignore-missing",
                "--stdin",
                input=f"{deployment.commit}\n^{previous}\n",
            )
            commits = out.split()
            self.store.record_deployed_commits(deployment, commits, tuple(sorted(SERVER_MADE)))
        except (GitError, StoreError) as exc:
            log.warning(
                "could not record which commits this deployment brought: %s",
                exc,
                extra={"repo": deployment.repo, "env": deployment.env, "deployment": deployment.id},
            )
            return 0
        return len(commits)
