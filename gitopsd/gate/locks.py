"""Locks, freezes raised by firing alerts, and two-person break-glass: their tables and how the rule reads them.

A lock holds promotions out of an environment (ENV), of a repository's every environment (env '*') or of
every repository (repo '*') until it is lifted or its time runs out; rollbacks always pass (gate/policy.py).
A person sets one with `gitopsd lock`; an Alertmanager notification sets one per firing alert that matches
`freeze_on`, and its resolve lifts that one only; one that Alertmanager stops sending expires (alert_freezes), and a
person in `override_by` may lift it (gitopsd/services/changecontrol.py). A break-glass override, asked
by one identity and confirmed by another in `override_by`, lets promotions through locks, freezes and deny
windows until it expires. Only the daemon writes these rows; the hook and the daemon read them through
`Records.locks` and `Records.break_glass`. Stdlib only: the hook imports this.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS env_locks (      -- gitopsd lock, and freezes raised by firing alerts (gate/locks.py)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,                     -- '*': every repository (lock --all)
    env TEXT NOT NULL,                      -- '*': every environment of the repository (lock --repo)
    source TEXT NOT NULL,                   -- person | alert
    alert TEXT NOT NULL DEFAULT '',         -- an alert's name and labels (source alert): its resolve lifts it
    actor TEXT NOT NULL,                    -- who locked: a Unix user, a token's owner, or the alert's name
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,            -- NULL: until lifted (an alert's: moved on each time it is sent again)
    lifted_at DOUBLE PRECISION,
    lifted_by TEXT,
    lift_reason TEXT
);
CREATE INDEX IF NOT EXISTS env_locks_open ON env_locks (lifted_at, repo, env);
CREATE TABLE IF NOT EXISTS break_glass (    -- one identity asks, a second in override_by confirms (gitopsd override)
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    asked_by TEXT NOT NULL,
    reason TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL,
    confirm_before DOUBLE PRECISION NOT NULL, -- an unconfirmed request lapses then
    lasts DOUBLE PRECISION NOT NULL,        -- seconds it holds once confirmed
    confirmed_by TEXT,
    confirm_reason TEXT,
    confirmed_at DOUBLE PRECISION,
    expires_at DOUBLE PRECISION             -- confirmed_at + lasts
);
CREATE INDEX IF NOT EXISTS break_glass_env ON break_glass (repo, env, id);
"""

ACTIVE_LOCKS = (
    "SELECT id, repo, env, source, alert, actor, reason, created_at, expires_at FROM env_locks"
    " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) AND repo IN (?, '*')"
    " AND env IN (?, '*') ORDER BY id"
)
ACTIVE_BREAK_GLASS = (
    "SELECT id, asked_by, reason, confirmed_by, confirm_reason, confirmed_at, expires_at"
    " FROM break_glass WHERE repo = ? AND env = ? AND confirmed_by IS NOT NULL AND expires_at > ?"
    " ORDER BY id DESC LIMIT 1"
)


def utc(ts: float) -> str:
    """A moment as people read it in a refusal (the hook imports no datetime for this)."""
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


class Lock:
    """One lock in force: its scope (repo, env; '*' for all), who set it and why, and until when."""

    __slots__ = ("id", "repo", "env", "source", "alert", "actor", "reason", "created_at", "expires_at")

    def __init__(
        self,
        id: int,
        repo: str,
        env: str,
        source: str,
        alert: str,
        actor: str,
        reason: str,
        created_at: float,
        expires_at: float | None,
    ):
        self.id, self.repo, self.env, self.source, self.alert = id, repo, env, source, alert
        self.actor, self.reason, self.created_at, self.expires_at = actor, reason, created_at, expires_at

    @classmethod
    def of(cls, row: tuple[int, str, str, str, str, str, str, float, float | None]) -> Lock:
        return cls(*row)

    @property
    def scope(self) -> str:
        if self.repo == "*":
            return "every repository"
        return f"{self.repo}/{self.env}" if self.env != "*" else f"every environment of {self.repo}"

    @property
    def until(self) -> str:
        return f"until {utc(self.expires_at)}" if self.expires_at is not None else "until unlocked"

    def describe(self) -> str:
        """One line: what is locked, by whom, until when and why."""
        if self.source == "alert":
            ends = f"; expires {utc(self.expires_at)} unless sent again" if self.expires_at is not None else ""
            return f"{self.scope} frozen by alert {self.actor} (firing since {utc(self.created_at)}{ends}): {self.reason}"
        return f"{self.scope} locked by {self.actor} {self.until} (since {utc(self.created_at)}): {self.reason}"

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "repo": self.repo,
            "env": self.env,
            "source": self.source,
            "actor": self.actor,
            "reason": self.reason,
            "since": self.created_at,
            "until": self.expires_at,
            "line": self.describe(),
        }


class BreakGlass:
    """A confirmed break-glass override in force: who asked, who confirmed, why, until when."""

    __slots__ = ("id", "asked_by", "reason", "confirmed_by", "confirm_reason", "confirmed_at", "expires_at")

    def __init__(
        self,
        id: int,
        asked_by: str,
        reason: str,
        confirmed_by: str,
        confirm_reason: str | None,
        confirmed_at: float,
        expires_at: float,
    ):
        self.id, self.asked_by, self.reason, self.confirmed_by = id, asked_by, reason, confirmed_by
        self.confirm_reason, self.confirmed_at, self.expires_at = confirm_reason, confirmed_at, expires_at

    def describe(self) -> str:
        """The line recorded with the deployment it lets through (history, notes)."""
        confirmed = self.confirmed_by + (f" ({self.confirm_reason})" if self.confirm_reason else "")
        return f"break-glass #{self.id} asked by {self.asked_by}, confirmed by {confirmed}: {self.reason}"
