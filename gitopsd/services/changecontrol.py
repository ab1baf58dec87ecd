"""Change control in the daemon: locks, freezes raised by firing alerts, and two-person break-glass (docs/change-control.md).

Requests come over the control socket (identity: SO_PEERCRED), the HTTP API and the dashboard (the token's
owner, the signed-in user), as HumanGates' do; each answer is {"ok": bool, "message": ...} or a refusal with its
kind. The rule that holds environments to them is gate/policy.py, read from the tables of gate/locks.py by the
hook and by the daemon's re-judging. Every lock, unlock, break-glass request and confirmation carries a reason,
recorded in the store and as a git note on what the environment runs.

A freeze cannot get stuck when its resolve never comes (Alertmanager restarted, the rule deleted, the notification
lost): Alertmanager sends a firing alert again every repeat_interval, so each notification moves the freeze's end to
its endsAt, or (Alertmanager's webhook leaves endsAt empty while an alert fires) repeat_interval from now, plus
`alert_freezes.grace`; one not sent again by then expires, recorded as expired. A person in `override_by` may lift it
with a reason; the alert's next firing notification freezes again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..adapters.store import Store
from ..base import gitcli
from ..core.errors import CONFLICT, FORBIDDEN, INVALID, MISSING, Refused, refusal_answer
from ..core.settings import Config, Environment, Notify, Repository
from ..core.windows import WindowError, parse_duration
from ..gate.locks import Lock, utc
from .named import NOTE_MAX, environment, repository
from .releases import add_note

log = logging.getLogger("gitopsd.changecontrol")

OPS = ("lock", "unlock", "locks", "override", "override-confirm", "alerts")
MAX_ALERTS = 1000  # alerts in one notification (Alertmanager groups them; more is not a notification)
LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lock_until(until: Any, for_: Any, now: float) -> float | None:
    """When a lock asked `--until TIME` or `--for DURATION` ends (None: until unlocked). Raise Refused (invalid)."""
    if until not in (None, "") and for_ not in (None, ""):
        raise Refused("give either --until or --for, not both", INVALID, "bad_time")
    if for_ not in (None, ""):
        try:
            return now + parse_duration(for_).total_seconds()
        except WindowError as exc:
            raise Refused(f"--for: {exc}", INVALID, "bad_time") from exc
    if until in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(until).strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Refused(
            f"--until {str(until)[:40]!r} is not a time: give one like 2026-12-24T18:00 (UTC unless it says +01:00), or --for 2h",
            INVALID,
            "bad_time",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.timestamp() <= now:
        raise Refused(
            f"--until {moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC is in the past (now is {utc(now)}): "
            "give a time to come, or --for 2h",
            INVALID,
            "bad_time",
        )
    return moment.timestamp()


def alert_key(labels: dict[str, str]) -> str:
    """An alert's identity across its firing and its resolve: its name and labels, as Prometheus writes them."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "alertname")
    return f"{labels.get('alertname', '')}{{{inner}}}"[:1000]


def parse_alerts(payload: Any) -> list[tuple[str, dict[str, str], dict[str, str], float | None, float | None]]:
    """(status, labels, annotations, startsAt, endsAt) of each alert in an Alertmanager webhook payload. Raise Refused (invalid)
    when it is not one, before anything is locked: a version, a status and a list of alerts with labels."""

    def bad(why: str) -> Refused:
        return Refused(
            f"not an Alertmanager webhook payload: {why} (send Alertmanager's webhook_configs notification, version 4)",
            INVALID,
            "bad_alert_payload",
        )

    if not isinstance(payload, dict):
        raise bad("the body is not a JSON object")
    if not isinstance(payload.get("version"), str) or payload.get("status") not in ("firing", "resolved"):
        raise bad("it has no version, or its status is neither firing nor resolved")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts or len(alerts) > MAX_ALERTS:
        raise bad(f"alerts must be a list of 1 to {MAX_ALERTS} alerts")
    found = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or alert.get("status") not in ("firing", "resolved"):
            raise bad(f"alerts[{i}] has no status firing or resolved")
        labels, notes = alert.get("labels"), alert.get("annotations", {})
        if not (
            isinstance(labels, dict)
            and all(isinstance(k, str) and LABEL.match(k) and isinstance(v, str) for k, v in labels.items())
            and labels.get("alertname")
        ):
            raise bad(f"alerts[{i}].labels must map label names to strings, alertname among them")
        if not (isinstance(notes, dict) and all(isinstance(v, str) for v in notes.values())):
            raise bad(f"alerts[{i}].annotations must map names to strings")
        found.append(
            (
                str(alert["status"]),
                dict(labels),
                {str(k): str(v) for k, v in notes.items()},
                _moment(alert.get("startsAt")),
                _moment(alert.get("endsAt")),
            )
        )
    return found


def _moment(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)[:26].rstrip("Z") + "+00:00").timestamp() if text else None
    except ValueError:
        return None


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ChangeControl:
    """Locks, alert freezes and break-glass overrides, asked for over the control socket, the API or the dashboard."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        notify: Callable[[Notify, dict[str, Any]], None],
        on_change: Callable[[str], None] = lambda _repo: None,
        look_at: Callable[[str, float], None] = lambda _repo, _at: None,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.store, self.notify, self.on_change, self.look_at, self.clock = (
            config,
            store,
            notify,
            on_change,
            look_at,
            clock,
        )
        self._lock = threading.Lock()

    def handle(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """Do one request as `identity`; one at a time (two confirmations racing count once)."""
        actions: dict[str, Callable[[str, dict[str, Any]], str | tuple[str, dict[str, Any]]]] = {
            "lock": self.lock,
            "unlock": self.unlock,
            "locks": self.list_locks,
            "override": self.ask,
            "override-confirm": self.confirm,
            "alerts": self.alerts,
        }
        action = actions.get(str(request.get("op")))
        if action is None:
            return refusal_answer(Refused(f"unknown request {str(request.get('op'))[:60]!r}", INVALID, "unknown_request"))
        with self._lock:
            try:
                answer = action(identity, request)
            except Refused as exc:
                return refusal_answer(exc)
        message, extra = answer if isinstance(answer, tuple) else (answer, {})
        return {"ok": True, "message": message, "identity": identity, **extra}

    # -- what a request names ----------------------------------------------------------------------------
    def _scope(self, request: dict[str, Any]) -> tuple[str, str]:
        """(repo, env) a lock request names: ENV, --repo REPO (env '*') or --all ('*', '*')."""
        if request.get("all"):
            if request.get("env") or request.get("repo"):
                raise Refused("--all locks every repository: give it without an environment or --repo", INVALID, "bad_lock_scope")
            return "*", "*"
        if request.get("env"):
            repo = repository(self.config(), request.get("repo"))
            return repo.name, environment(repo, request["env"]).name
        if request.get("repo"):
            return repository(self.config(), request["repo"]).name, "*"
        raise Refused(
            "name what to lock: an environment (gitopsd lock production), --repo NAME or --all", INVALID, "bad_lock_scope"
        )

    @staticmethod
    def _reason(request: dict[str, Any], required: bool = True) -> str:
        reason = request.get("reason")
        if reason in (None, "") and not required:
            return ""
        if not isinstance(reason, str) or not reason.strip():
            raise Refused(
                "say why with --reason '...' (it is recorded with your name and shown to whoever is refused)",
                INVALID,
                "note_required",
            )
        if len(reason) > NOTE_MAX or any(ord(c) < 32 and c != "\t" for c in reason):
            raise Refused(f"--reason must be one line of at most {NOTE_MAX} characters", INVALID, "bad_note")
        return reason.strip()

    def _envs_of(self, repo_name: str, env_name: str) -> list[tuple[Repository, Environment]]:
        config = self.config()
        return [
            (r, e) for r in config.repositories if repo_name in ("*", r.name) for e in r.environments if env_name in ("*", e.name)
        ]

    def _note(self, repo_name: str, env_name: str, line: str) -> None:
        """The line as a git note on what each environment in scope runs, or else on its branch's head (the audit trail
        travels with the repository)."""
        for repo, env in self._envs_of(repo_name, env_name):
            deployed = self.store.deployed(repo.name, env.name)
            commit = deployed.commit if deployed is not None else gitcli.branch_head(repo.path, env.branch)
            if commit is not None:
                add_note(str(repo.path), commit, line)

    def _changed(self, repo_name: str) -> None:
        for repo in self.config().repositories:
            if repo_name in ("*", repo.name):
                self.on_change(repo.name)

    # -- locks -------------------------------------------------------------------------------------------
    def lock(self, identity: str, request: dict[str, Any]) -> str:
        repo, env = self._scope(request)
        reason = self._reason(request)
        now = self.clock()
        until = lock_until(request.get("until"), request.get("for"), now)
        lock_id = self.store.add_lock(
            repo=repo, env=env, source="person", actor=identity, reason=reason, now=now, expires_at=until
        )
        lock = Lock(lock_id, repo, env, "person", "", identity, reason, now, until)
        self._note(repo, env, f"gitopsd: {lock.describe()}")
        if until is not None:
            for name in {r.name for r, _e in self._envs_of(repo, env)}:
                self.look_at(name, until + 0.5)  # it expires on time: the held heads deploy then
        log.info("%s", lock.describe(), extra={"repo": repo, "env": env})
        return f"{lock.describe()}; rollbacks still pass; `gitopsd unlock` lifts it"

    def unlock(self, identity: str, request: dict[str, Any]) -> str:
        repo, env = self._scope(request)
        reason = self._reason(request, required=False)
        now = self.clock()
        scope = Lock(0, repo, env, "person", "", identity, reason, now, None).scope
        frozen, why_first = self._frozen_for(identity, repo, env, now), ""
        if frozen and not reason:  # a person's own lock lifts without one; an alert's freeze only with one
            why_first = (
                f"lifting the freeze of alert {frozen[0].actor} on {frozen[0].scope} is recorded: say why with --reason '...'"
            )
            frozen = []
        unlocked = self.store.lift_locks(repo=repo, env=env, by=identity, now=now, reason=reason or None)
        thawed: list[str] = []  # said as what they are: an alert's freeze lifted, not a lock
        for lock in frozen:
            if self.store.lift_lock(lock.id, by=identity, now=now, reason=reason):
                thawed.append(f"{lock.scope} freeze by alert {lock.actor} lifted by {identity}")
                self._note(
                    lock.repo,
                    lock.env,
                    f"gitopsd: {lock.scope} freeze by alert {lock.actor} lifted by {identity} at {utc(now)}: {reason}",
                )
                log.warning(
                    "%s freeze by alert %s lifted by %s: %s",
                    lock.scope,
                    lock.actor,
                    identity,
                    reason,
                    extra={"repo": lock.repo, "env": lock.env},
                )
        if not (unlocked or thawed) and why_first:
            raise Refused(why_first, INVALID, "note_required")
        if not (unlocked or thawed):
            left = [lock.describe() for lock in self.store.all_locks(now) if lock.repo == repo and lock.env == env]
            raise Refused(
                f"no lock set by a person on {scope} to lift"
                + (
                    f"; in force: {'; '.join(left)} (an alert's freeze lifts when the alert resolves or is no longer sent, "
                    f"or by a person in override_by with --reason)"
                    if left
                    else ""
                ),
                CONFLICT,
                "nothing_changed",
            )
        if unlocked:
            self._note(repo, env, f"gitopsd: {scope} unlocked by {identity} at {utc(now)}" + (f": {reason}" if reason else ""))
            log.info("%s unlocked by %s%s", scope, identity, f": {reason}" if reason else "", extra={"repo": repo, "env": env})
        self._changed(repo)
        still = [
            lock.describe()
            for repo_, env_ in {(r.name, e.name) for r, e in self._envs_of(repo, env)}
            for lock in self.store.locks(repo_, env_, now)
        ]
        said = [f"{scope} unlocked by {identity}"] if unlocked else []
        if thawed:
            said += [f"{'; '.join(thawed)}: {reason} (the alert's next firing notification freezes again)"]
        return "; ".join(said) + (f"; still in force: {'; '.join(dict.fromkeys(still))}" if still else "")

    def _frozen_for(self, identity: str, repo: str, env: str, now: float) -> list[Lock]:
        """The alert freezes in force in the environments of this scope whose override_by names `identity`."""
        mine = {(r.name, e.name) for r, e in self._envs_of(repo, env) if identity in e.override_by}
        return [lock for lock in self.store.all_locks(now) if lock.source == "alert" and (lock.repo, lock.env) in mine]

    def expire(self) -> list[str]:
        """Record the alert freezes whose alert was not sent again in time as expired (history, notes); run by the
        daemon at each look. The rule already ignored them: a lock past its end holds nothing."""
        with self._lock:
            return self._expire()

    def _expire(self) -> list[str]:
        said = []
        for row in self.store.expire_alert_locks(self.clock()):
            lock = row.lock()
            line = (
                f"{lock.scope} freeze by alert {lock.actor} expired at {utc(row.expires_at or 0.0)}: Alertmanager did not "
                "send the alert again (alert_freezes: repeat_interval + grace)"
            )
            self._note(lock.repo, lock.env, f"gitopsd: {line}")
            log.warning("%s", line, extra={"repo": lock.repo, "env": lock.env})
            said.append(line)
        return said

    def list_locks(self, _identity: str, _request: dict[str, Any]) -> str:
        held = self.store.all_locks(self.clock())
        return "\n".join(lock.describe() for lock in held) or "nothing is locked"

    # -- break-glass ---------------------------------------------------------------------------------------
    def ask(self, identity: str, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """One person asks to let promotions through `env`'s locks, freezes and deny windows; a second confirms."""
        repo = repository(self.config(), request.get("repo"))
        env = environment(repo, request.get("env"))
        reason = self._reason(request)
        if not env.override_by:
            raise Refused(
                f"nobody may confirm a break-glass in {env.name}: its override_by is empty in the config",
                FORBIDDEN,
                "override_not_allowed",
            )
        settings, now = self.config().break_glass, self.clock()
        request_id = self.store.ask_break_glass(
            repo=repo.name,
            env=env.name,
            asked_by=identity,
            reason=reason,
            now=now,
            confirm_within=settings.confirm_within,
            lasts=settings.lasts,
        )
        others = [who for who in env.override_by if who != identity] or ["nobody else"]
        self._note(
            repo.name, env.name, f"gitopsd: break-glass #{request_id} for {env.name} asked by {identity} at {utc(now)}: {reason}"
        )
        self.notify(
            env.notify,
            {
                "event": "break-glass-asked",
                "repo": repo.name,
                "env": env.name,
                "id": request_id,
                "by": identity,
                "reason": reason,
                "confirm_by": others,
                "confirm_before": now + settings.confirm_within,
            },
        )
        log.info("break-glass #%d asked by %s: %s", request_id, identity, reason, extra={"repo": repo.name, "env": env.name})
        return (
            f"break-glass #{request_id} for {repo.name}/{env.name} asked by {identity}: {reason}. A second person "
            f"({', '.join(others)}) confirms it before {utc(now + settings.confirm_within)}: "
            f"gitopsd override confirm {request_id}"
        ), {"id": request_id}

    def confirm(self, identity: str, request: dict[str, Any]) -> str:
        number = str(request.get("id")).removeprefix("#")
        if not (number.isascii() and number.isdigit() and len(number) <= 18):  # '²' is a digit to isdigit, not to int()
            raise Refused(f"{number[:40]!r} is not a break-glass request number", INVALID, "bad_break_glass_id")
        request_id = int(number)
        asked = self.store.break_glass_request(request_id)
        if asked is None:
            raise Refused(
                f"no break-glass request #{request_id} (gitopsd locks lists the open ones)", MISSING, "break_glass_not_found"
            )
        repo = repository(self.config(), asked.repo)
        env = environment(repo, asked.env)
        reason = self._reason(request, required=False) or None
        now = self.clock()
        if identity == asked.asked_by:
            raise Refused(
                f"{identity} asked for break-glass #{request_id}: the same person cannot confirm their own; "
                f"a second identity in override_by ({', '.join(env.override_by)}) must",
                FORBIDDEN,
                "break_glass_by_asker",
            )
        if identity not in env.override_by:
            raise Refused(
                f"{identity} may not confirm a break-glass in {env.name}; who may: {', '.join(env.override_by)}",
                FORBIDDEN,
                "override_not_allowed",
            )
        if asked.confirmed_by:
            raise Refused(
                f"break-glass #{request_id} was confirmed already by {asked.confirmed_by}", CONFLICT, "break_glass_closed"
            )
        if asked.confirm_before <= now:
            raise Refused(
                f"break-glass #{request_id} lapsed at {utc(asked.confirm_before)}, unconfirmed: "
                f"ask again with gitopsd override {env.name} --reason '...'",
                CONFLICT,
                "break_glass_closed",
            )
        if not self.store.confirm_break_glass(request_id, by=identity, reason=reason, now=now):
            raise Refused(f"break-glass #{request_id} was confirmed or lapsed meanwhile", CONFLICT, "break_glass_closed")
        until = now + float(asked.lasts)
        self._note(
            repo.name,
            env.name,
            f"gitopsd: break-glass #{request_id} for {env.name} confirmed by {identity} at "
            f"{utc(now)} (asked by {asked.asked_by}: {asked.reason})" + (f": {reason}" if reason else ""),
        )
        self.notify(
            env.notify,
            {
                "event": "break-glass-confirmed",
                "repo": repo.name,
                "env": env.name,
                "id": request_id,
                "asked_by": asked.asked_by,
                "reason": asked.reason,
                "by": identity,
                "until": until,
            },
        )
        self.on_change(repo.name)
        self.look_at(repo.name, until + 0.5)
        log.warning(
            "break-glass #%d confirmed by %s (asked by %s: %s)",
            request_id,
            identity,
            asked.asked_by,
            asked.reason,
            extra={"repo": repo.name, "env": env.name},
        )
        return (
            f"break-glass #{request_id} confirmed by {identity} (asked by {asked.asked_by}: {asked.reason}): "
            f"promotions to {repo.name}/{env.name} pass its locks, freezes and deploy windows until {utc(until)}"
        )

    # -- freezes raised by alerts ----------------------------------------------------------------------------
    def alerts(self, identity: str, request: dict[str, Any]) -> str:
        """An Alertmanager notification: freeze what `freeze_on` names for each firing alert, lift it at its resolve."""
        found = parse_alerts(request.get("payload"))
        config, now = self.config(), self.clock()
        self._expire()  # a freeze past its end is recorded as expired before the alert freezes anew
        said: list[str] = []
        touched: set[str] = set()
        for status, labels, notes, since, ends in found:
            key = alert_key(labels)
            # Alertmanager sends a firing alert again every repeat_interval: the freeze holds until then (or its endsAt)
            until = (
                ends if ends is not None and ends > now else now + config.alert_freezes.repeat_interval
            ) + config.alert_freezes.grace
            if status == "resolved":
                if self.store.lift_locks(
                    repo="", env="", by=f"alertmanager ({identity})", now=now, alert=key, reason="the alert resolved"
                ):
                    said.append(f"{labels['alertname']} resolved: its freeze is lifted")
                    touched.add("*")
                continue
            for rule in config.freeze_on:
                if not rule.matches(labels):
                    continue
                for repo in config.repositories:
                    if rule.repos and repo.name not in rule.repos:
                        continue
                    for env in (repo.environment(name) for name in rule.envs):
                        if env is None:
                            continue
                        self.look_at(repo.name, until + 0.5)  # it expires unless sent again: recorded, held heads go
                        if self.store.extend_alert_lock(alert=key, repo=repo.name, env=env.name, now=now, until=until):
                            continue
                        why = one_line(notes.get("summary") or notes.get("description") or f"{key} is firing")
                        self.store.add_lock(
                            repo=repo.name,
                            env=env.name,
                            source="alert",
                            actor=labels["alertname"],
                            reason=why,
                            now=since if since and since <= now else now,
                            alert=key,
                            expires_at=until,
                        )
                        self._note(
                            repo.name,
                            env.name,
                            f"gitopsd: {repo.name}/{env.name} frozen by alert {labels['alertname']} at {utc(now)}: {why}",
                        )
                        log.warning(
                            "%s/%s frozen by alert %s: %s",
                            repo.name,
                            env.name,
                            labels["alertname"],
                            why,
                            extra={"repo": repo.name, "env": env.name},
                        )
                        said.append(f"{repo.name}/{env.name} frozen by alert {labels['alertname']}")
                        touched.add(repo.name)
        for name in touched:
            self._changed(name)
        return "; ".join(said) or "nothing to freeze or lift (no freeze_on rule matches these alerts)"
