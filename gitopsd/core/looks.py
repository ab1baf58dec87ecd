"""What the reconcile loop is asked and keeps: looks, causes, admissions, the deployments running; retry backoff."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from .ports import Verdict
from .settings import Environment
from .types import Action, Progress, Trigger

# Nudges sent by code that judged the head with the deploy windows just before it moved the branch.
ANNOUNCING_TRIGGERS = (Trigger.PUSH, Trigger.PROMOTE)
IN_SYNC_ACTIONS = (Action.IN_SYNC, Action.WATCHING, Action.WATCH_FAILED, Action.DRIFTED)


@dataclass(frozen=True)
class Admitted:
    """An operator's admission (retry --force, rollback --to), standing in for the rule's verdict."""

    accepted: bool
    kind: str
    rule: str
    detail: list[str]


@dataclass(frozen=True)
class Look:
    """A request to look at one environment (or every environment of a repository)."""

    repo: str
    env: str | None
    trigger: str


@dataclass(frozen=True)
class Cause:
    """Who or what moved a branch to a commit, as the daemon learned it (never from commit metadata)."""

    actor: str
    trigger: str
    reason: str | None = None
    proven: bool = True  # False: a nudge the daemon cannot take for its hook's (daemon._listen): it announces nothing

    @classmethod
    def unannounced(cls, trigger: str) -> Cause:
        """The cause of a head nobody announced: the daemon's own start when its first sweep found it, else unknown."""
        return cls("gitopsd", Trigger.STARTUP) if trigger == Trigger.STARTUP else cls("unknown", trigger)

    def described(self) -> str:
        """Who or what, as a log line says it: "caused by the daemon's start", "caused by alice"."""
        return "the daemon's start" if (self.actor, self.trigger) == ("gitopsd", Trigger.STARTUP) else self.actor


def backoff(env: Environment, failures: int, rng: random.Random) -> float:
    """Capped exponential backoff with +-20% jitter, in seconds."""
    base = min(env.retry_backoff_max, env.retry_backoff * (2 ** max(0, failures - 1)))
    return float(base * rng.uniform(0.8, 1.2))


@dataclass
class RunningDeployment:
    """A deployment the reconciler started: queued for a worker, then running; canceled through `cancel`."""

    deployment_id: int
    commit: str
    cancel: threading.Event
    progress: Progress | None = None
    started: bool = False  # False while queued for a worker (max_parallel deployments run at once)
    kind: str = ""
    superseded_by: str | None = None  # the newer head that canceled this rollout's remaining batches
    canceled_by: str | None = None  # the operator who canceled it (`gitopsd cancel`): the environment then stalls


def blocked_reason(verdict: Verdict) -> str:
    """A refused verdict in one line: its rule, then its detail."""
    return " ".join([verdict.rule + ":", *(line.strip() for line in verdict.detail)]) if verdict.detail else verdict.rule
