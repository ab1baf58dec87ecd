"""The daemon's parts, named and typed once: what each concern's methods (statedb, events, lifecycle, ...) may use."""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import queue
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from .. import config as config_mod
    from ..adapters.annotations import AnnotationSender
    from ..adapters.control import ControlServer
    from ..adapters.listener import Listener
    from ..adapters.store import Store
    from ..adapters.sweep import Periodic, Sweeper
    from ..adapters.systemd import Notifier
    from ..adapters.watch import RefWatcher
    from ..api.server import ApiServer
    from ..ci.heads import HeadEvent, NewHeads
    from ..ci.promote import AutoPromoter
    from ..ci.steps import StepRunner
    from ..ci.triggers import TriggerSender
    from ..config import Config
    from ..core.reconcile import Look, Reconciler
    from ..services import nodes
    from ..services.changecontrol import ChangeControl
    from ..services.chatroom import ChatRoom
    from ..services.firstseen import FirstSeen
    from ..services.metrics import Metrics
    from ..services.previews import Previewer
    from ..services.releases import HumanGates
    from ..services.statusrows import StatusRows
    from ..services.sweepplan import SweepPlan
    from .judge import Judge
    from .leadership import Leadership


class Parts:
    """Set by main.Daemon's __init__ (see there what each is for); the concerns' classes only name them here."""

    config: Config
    notifier: Notifier
    leadership: Leadership | None
    _lost_said: bool
    requests: queue.SimpleQueue[Look]
    timers: list[tuple[float, int, Look]]
    _timer_seq: int
    _timer_lock: threading.Lock
    _status_looks: set[str]  # repositories with a ci-status look scheduled (events.py, status_reported)
    stopping: threading.Event
    reload_requested: threading.Event
    _lock_handle: IO[str]
    store: Store
    pool: ThreadPoolExecutor
    monitor: ThreadPoolExecutor
    placement: nodes.Placement
    reconciler: Reconciler
    promoter: AutoPromoter
    chat: ChatRoom
    human_gates: HumanGates
    change_control: ChangeControl
    previewer: Previewer
    first_seen: FirstSeen
    annotations: AnnotationSender
    control: ControlServer | None
    status_rows: StatusRows
    sweep_plan: SweepPlan
    _adopting: int
    _unwatched_recorded: dict[str, str] | None
    listener: Listener | None
    judge: Judge | None
    _nudge_lock: threading.Lock
    watcher: RefWatcher | None
    sweeper: Sweeper | None
    drift_timer: Periodic | None
    api: ApiServer | None
    metrics: Metrics | None
    ci_heads: NewHeads
    ci_sinks: list[Callable[[config_mod.Repository, HeadEvent], None]]
    ci_triggers: TriggerSender
    ci_steps: StepRunner
    store_lost: str | None
    _store_lost_lock: threading.Lock
    _next_backup: float
