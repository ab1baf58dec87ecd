"""What holds an environment: locks, alert freezes and break-glass overrides (gate/locks.py), suspensions, sync requests."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ...base.storeerrors import StatementFailure
from ...core.types import Hold
from ...gate.locks import ACTIVE_BREAK_GLASS, ACTIVE_LOCKS, BreakGlass, Lock
from .backend import Row
from .base import StoreBase


@dataclass(frozen=True)
class BreakGlassRequest:
    """A break-glass request: who asked to deploy into a lock and why, and the second person who confirmed it, if any."""

    id: int
    repo: str
    env: str
    asked_by: str
    reason: str
    asked_at: float
    confirm_before: float  # an unconfirmed request lapses then
    lasts: float  # seconds it holds once confirmed
    confirmed_by: str | None
    confirm_reason: str | None
    confirmed_at: float | None
    expires_at: float | None  # confirmed_at + lasts

    @classmethod
    def of(cls, row: Row) -> BreakGlassRequest:
        return cls(*(row[name] for name in cls.__dataclass_fields__))

    def as_json(self) -> dict[str, Any]:
        """As `gitopsd locks --json`, GET /api/v1/locks and GET /api/v1/overrides show it: every column by name."""
        return asdict(self)


@dataclass(frozen=True)
class LockRecord:
    """A lock or alert freeze as recorded, in force or lifted: who set it and why, and who lifted it, when and why."""

    id: int
    repo: str
    env: str
    source: str  # person | alert
    alert: str
    actor: str
    reason: str
    created_at: float
    expires_at: float | None
    lifted_at: float | None
    lifted_by: str | None  # 'expired': an alert's freeze that Alertmanager did not send again in time
    lift_reason: str | None

    @classmethod
    def of(cls, row: Row) -> LockRecord:
        return cls(*(row[name] for name in cls.__dataclass_fields__))

    def lock(self) -> Lock:
        """The lock it was while in force (its scope and the line that describes it)."""
        return Lock(
            self.id, self.repo, self.env, self.source, self.alert, self.actor, self.reason, self.created_at, self.expires_at
        )

    def as_json(self) -> dict[str, Any]:
        """As `gitopsd locks --history N --json` shows it: every column by name."""
        return asdict(self)


class Holds(StoreBase):
    """Locks, freezes, break-glass requests, suspensions and sync requests."""

    def add_lock(
        self,
        *,
        repo: str,
        env: str,
        source: str,
        actor: str,
        reason: str,
        now: float,
        expires_at: float | None = None,
        alert: str = "",
    ) -> int:
        """Record a lock on `env` of `repo` ('*' for every one) by a person or a firing alert."""
        assert source in ("person", "alert"), source
        cur = self._write(
            "INSERT INTO env_locks (repo, env, source, alert, actor, reason, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (repo, env, source, alert, actor, reason, now, expires_at),
        )
        return int(cur.lastrowid or 0)

    def lift_locks(self, *, repo: str, env: str, by: str, now: float, alert: str | None = None, reason: str | None = None) -> int:
        """Lift the people's locks of exactly this scope (or, with `alert`, that alert's freezes); how many."""
        if alert is None:
            return self._write(
                "UPDATE env_locks SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE lifted_at IS NULL"
                " AND source = 'person' AND repo = ? AND env = ?",
                (now, by, reason, repo, env),
            ).rowcount
        return self._write(
            "UPDATE env_locks SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE lifted_at IS NULL"
            " AND source = 'alert' AND alert = ?",
            (now, by, reason, alert),
        ).rowcount

    def lift_lock(self, lock_id: int, *, by: str, now: float, reason: str) -> bool:
        """Lift one lock in force (a person lifting an alert's freeze); False when it was lifted meanwhile."""
        return (
            self._write(
                "UPDATE env_locks SET lifted_at = ?, lifted_by = ?, lift_reason = ? WHERE id = ? AND lifted_at IS NULL",
                (now, by, reason, lock_id),
            ).rowcount
            == 1
        )

    def extend_alert_lock(self, *, alert: str, repo: str, env: str, now: float, until: float) -> bool:
        """Move the end of this alert's freeze in force on `env` of `repo` to `until` (Alertmanager sent it again)."""
        return (
            self._write(
                "UPDATE env_locks SET expires_at = ? WHERE lifted_at IS NULL AND source = 'alert'"
                " AND alert = ? AND repo = ? AND env = ? AND (expires_at IS NULL OR expires_at > ?)",
                (until, alert, repo, env, now),
            ).rowcount
            > 0
        )

    def expire_alert_locks(self, now: float) -> list[LockRecord]:
        """Record each alert freeze whose time ran out as lifted then by `expired`; the rows recorded by this call."""
        try:
            rows = [
                LockRecord.of(r)
                for r in self._rows(
                    "SELECT * FROM env_locks WHERE lifted_at IS NULL AND source = 'alert' AND expires_at <= ? ORDER BY id", (now,)
                )
            ]
        except StatementFailure:  # a store written by an older daemon
            return []
        return [
            r
            for r in rows
            if self._write(
                "UPDATE env_locks SET lifted_at = expires_at, lifted_by = 'expired', lift_reason = ? WHERE id = ?"
                " AND lifted_at IS NULL",
                ("Alertmanager did not send the alert again before the freeze's end", r.id),
            ).rowcount
            == 1
        ]

    def lock_history(self, limit: int = 20) -> list[LockRecord]:
        """Locks and freezes, in force or lifted, newest first: who set and lifted each, and why."""
        try:
            return [LockRecord.of(r) for r in self._rows("SELECT * FROM env_locks ORDER BY id DESC LIMIT ?", (limit,))]
        except StatementFailure:  # a store written by an older daemon
            return []

    def locks(self, repo: str, env: str, now: float) -> list[Lock]:
        """The locks in force on `env` of `repo` now, oldest first (the promotion rule's question)."""
        try:
            return [Lock.of(tuple(r)) for r in self._rows(ACTIVE_LOCKS, (now, repo, env))]
        except StatementFailure:  # a store written by an older daemon
            return []

    def all_locks(self, now: float) -> list[Lock]:
        """Every lock in force now, oldest first (status, the dashboard, /metrics)."""
        try:
            rows = self._rows(
                "SELECT id, repo, env, source, alert, actor, reason, created_at, expires_at FROM env_locks"
                " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id",
                (now,),
            )
        except StatementFailure:  # a store written by an older daemon
            return []
        return [Lock.of(tuple(r)) for r in rows]

    def break_glass(self, repo: str, env: str, now: float) -> BreakGlass | None:
        """The confirmed break-glass override in force on `env` of `repo` now, if any."""
        try:
            rows = self._rows(ACTIVE_BREAK_GLASS, (repo, env, now))
        except StatementFailure:  # a store written by an older daemon
            return None
        return BreakGlass(*tuple(rows[0])) if rows else None

    def ask_break_glass(
        self, *, repo: str, env: str, asked_by: str, reason: str, now: float, confirm_within: float, lasts: float
    ) -> int:
        cur = self._write(
            "INSERT INTO break_glass (repo, env, asked_by, reason, asked_at, confirm_before, lasts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (repo, env, asked_by, reason, now, now + confirm_within, lasts),
        )
        return int(cur.lastrowid or 0)

    def break_glass_request(self, request_id: int) -> BreakGlassRequest | None:
        rows = self._rows("SELECT * FROM break_glass WHERE id = ?", (request_id,))
        return BreakGlassRequest.of(rows[0]) if rows else None

    def break_glass_requests(self, now: float) -> list[BreakGlassRequest]:
        """Break-glass requests still waiting for their second person, or confirmed and in force, oldest first."""
        try:
            rows = self._rows(
                "SELECT * FROM break_glass WHERE (confirmed_by IS NULL AND confirm_before > ?) OR expires_at > ? ORDER BY id",
                (now, now),
            )
        except StatementFailure:  # a store written by an older daemon
            return []
        return [BreakGlassRequest.of(r) for r in rows]

    def confirm_break_glass(self, request_id: int, *, by: str, reason: str | None, now: float) -> bool:
        """Confirm an unconfirmed, unlapsed request; False when someone else did first or it lapsed."""
        return (
            self._write(
                "UPDATE break_glass SET confirmed_by = ?, confirm_reason = ?, confirmed_at = ?,"
                " expires_at = ? + lasts WHERE id = ? AND confirmed_by IS NULL AND confirm_before > ?",
                (by, reason, now, now, request_id, now),
            ).rowcount
            == 1
        )

    def suspend(self, repo: str, env: str, *, actor: str, reason: str | None, now: float) -> None:
        self._write(
            "INSERT INTO env_suspensions (repo, env, actor, reason, since) VALUES (?, ?, ?, ?, ?) ON CONFLICT (repo, env)"
            " DO UPDATE SET actor = excluded.actor, reason = excluded.reason, since = excluded.since",
            (repo, env, actor, reason, now),
        )

    def resume(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM env_suspensions WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0

    def suspension(self, repo: str, env: str) -> Hold | None:
        try:
            rows = self._rows("SELECT * FROM env_suspensions WHERE repo = ? AND env = ?", (repo, env))
        except StatementFailure:  # a store written by an older daemon, read by `status`
            return None
        return Hold(rows[0]["actor"], rows[0]["reason"], rows[0]["since"]) if rows else None

    def request_sync(self, repo: str, env: str, *, commit: str, actor: str, reason: str | None, now: float) -> None:
        self._write(
            "INSERT INTO sync_requests (repo, env, commit_id, actor, reason, created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (repo, env) DO UPDATE SET commit_id = excluded.commit_id, actor = excluded.actor,"
            " reason = excluded.reason, created_at = excluded.created_at",
            (repo, env, commit, actor, reason, now),
        )

    def sync_request(self, repo: str, env: str) -> Hold | None:
        try:
            rows = self._rows("SELECT * FROM sync_requests WHERE repo = ? AND env = ?", (repo, env))
        except StatementFailure:  # a store written by an older daemon
            return None
        r = rows[0] if rows else None
        return Hold(r["actor"], r["reason"], r["created_at"], r["commit_id"]) if r else None

    def clear_sync(self, repo: str, env: str) -> bool:
        return self._write("DELETE FROM sync_requests WHERE repo = ? AND env = ?", (repo, env)).rowcount > 0
