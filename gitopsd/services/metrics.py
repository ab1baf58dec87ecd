"""Prometheus metrics for the HTTP API's /metrics (docs/monitoring.md): the one module that imports prometheus_client.

Most figures are read from the state store when Prometheus scrapes, so they survive restarts and
cost nothing between scrapes: finished deployments never change, so their totals are kept here
and each scrape reads only the deployments that finished since (a few grouped queries, none per
row). Only what the daemon alone hears (pushes the hook refused) is counted in memory. Labels are
names from the configuration and short fixed words, never free text.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, ProcessCollector, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from ..adapters.store import Store
from ..core.errors import GitError, StoreError
from ..core.settings import Config
from ..gate.nudge import REFUSAL_RULES
from . import metricsfile
from .exposition import Rendering

log = logging.getLogger("gitopsd.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series: a restart is seen as a counter reset, as Prometheus expects

DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LEAD_TIME_BUCKETS = (300.0, 1800.0, 3600.0, 6 * 3600.0, 86400.0, 3 * 86400.0, 7 * 86400.0, 30 * 86400.0)
BUCKETS = [list(DURATION_BUCKETS), list(LEAD_TIME_BUCKETS)]  # as the totals file holds them: other bounds, added up again
CHECK_TYPES = ("http", "prometheus", "playbook")
KEPT_FILE = metricsfile.NAME  # beside state.db: the finished deployments' totals, kept between starts
SAVE_EVERY = 1000  # deployments added up since the file was written: write it again (a start adds up the rest)

Key = tuple[str, str]  # (repo, env)


@dataclass
class Histogram:
    """Cumulative-ready bucket counts (the last one is +Inf) and the sum of the observations."""

    counts: list[int]
    total: float = 0.0

    def add(self, bucket: int, count: int, seconds: float) -> None:
        self.counts[bucket] += count
        self.total += seconds or 0.0

    def buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
        running, out = 0, []
        for bound, count in zip((*(repr(b) for b in bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass
class Totals:
    """What the finished deployments of an id range add up to."""

    deployments: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    rollbacks: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    checks: dict[tuple[str, str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    durations: dict[Key, Histogram] = field(default_factory=dict)
    lead_times: dict[Key, Histogram] = field(default_factory=dict)
    last_success: dict[Key, float] = field(default_factory=dict)

    def read(self, store: Store, after: int, upto: int) -> None:
        """Add the finished deployments with ids in (after, upto]."""
        for repo, env, kind, result, automatic, bucket, count, seconds, success in store.deployment_totals(
            after, upto, DURATION_BUCKETS
        ):
            self.deployments[(repo, env, kind, result)] += count
            if kind == "rollback":
                self.rollbacks[(repo, env, "automatic" if automatic else "manual")] += count
            _histogram(self.durations, (repo, env), DURATION_BUCKETS).add(bucket, count, seconds)
            if success is not None:
                self.last_success[(repo, env)] = max(success, self.last_success.get((repo, env), 0.0))
        for repo, env, bucket, count, seconds in store.lead_times(after, upto, LEAD_TIME_BUCKETS):
            _histogram(self.lead_times, (repo, env), LEAD_TIME_BUCKETS).add(bucket, count, seconds)
        for repo, env, kind, passed, count in store.check_totals(after, upto):
            self.checks[(repo, env, kind if kind in CHECK_TYPES else "other", "passed" if passed else "failed")] += count

    def as_json(self) -> dict[str, list[list[Any]]]:
        """Every figure as [*key, value] rows ([*key, counts, total] for a histogram): what the totals file keeps."""
        rows: dict[str, list[list[Any]]] = {
            name: [[*key, value] for key, value in getattr(self, name).items()]
            for name in ("deployments", "rollbacks", "checks", "last_success")
        }
        for name in ("durations", "lead_times"):
            rows[name] = [[*key, hist.counts, hist.total] for key, hist in getattr(self, name).items()]
        return rows

    @classmethod
    def of_json(cls, rows: dict[str, list[list[Any]]]) -> Totals:
        out = cls()
        for name in ("deployments", "rollbacks", "checks", "last_success"):
            getattr(out, name).update((tuple(row[:-1]), row[-1]) for row in rows[name])
        for name in ("durations", "lead_times"):
            getattr(out, name).update((tuple(row[:-2]), Histogram(list(row[-2]), float(row[-1]))) for row in rows[name])
        return out

    def plus(self, other: Totals) -> Totals:
        """A new Totals with both added up (neither changes)."""
        out = Totals()
        for part in (self, other):
            for name in ("deployments", "rollbacks", "checks"):
                for key, count in getattr(part, name).items():
                    getattr(out, name)[key] += count
            for name, bounds in (("durations", DURATION_BUCKETS), ("lead_times", LEAD_TIME_BUCKETS)):
                for key, hist in getattr(part, name).items():
                    mine = _histogram(getattr(out, name), key, bounds)
                    mine.counts = [a + b for a, b in zip(mine.counts, hist.counts, strict=True)]
                    mine.total += hist.total
            for key, at in part.last_success.items():
                out.last_success[key] = max(at, out.last_success.get(key, 0.0))
        return out


def _family(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily], name: str, doc: str, labels: list[str], values: Mapping[Any, float]
) -> CounterMetricFamily | GaugeMetricFamily:
    """A counter or gauge family with one sample per key of `values` (label values in the order of `labels`)."""
    family = kind(name, doc, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def _histogram(table: dict[Key, Histogram], key: Key, bounds: tuple[float, ...]) -> Histogram:
    if key not in table:
        table[key] = Histogram([0] * (len(bounds) + 1))
    return table[key]


class StoreCollector(Collector):
    """The store's figures, read at scrape time; finished deployments are added up once and kept."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        drifted: Callable[[], dict[Key, int]] | None = None,
        dora: Callable[[], list[tuple[str, str, dict[str, float | None]]]] | None = None,
    ):
        self.config, self.store = config, store
        # Drift detection's and the DORA figures, where this gitopsd has them (store.drifted_hosts, dora.py).
        self.drifted: Callable[[], dict[Key, int]] = drifted or getattr(store, "drifted_hosts", None) or dict
        self.dora = dora if dora is not None else dora_source(config, store)
        self._lock = threading.Lock()
        self._upto = 0  # every deployment with an id up to here is finished and in _kept
        self._kept = Totals()
        self._saved: int | None = None  # the _upto the totals file holds (None: not read yet)

    def totals(self) -> tuple[Totals, list[tuple[int, str, str, str]]]:
        """Everything finished so far, and the deployments queued or running now."""
        with self._lock:  # two scrapes at once must not add the same range twice
            if self._saved is None:
                self._upto, self._kept = self._read_kept()
                self._saved = self._upto
            top, active = self.store.deployment_ids(self._upto)
            upto = active[0][0] - 1 if active else top
            if upto > self._upto:
                self._kept.read(self.store, self._upto, upto)
                self._upto = upto
                if upto - self._saved >= SAVE_EVERY:
                    self._save_kept()
            tail = Totals()  # finished above a deployment still running: read again next time, until that ends
            if top > upto:
                tail.read(self.store, upto, top)
            return self._kept.plus(tail), active

    def _kept_file(self) -> Path | None:
        """Where the totals are kept between starts: beside a SQLite state.db (with PostgreSQL, added up at each start)."""
        return Path(self.store.path).with_name(KEPT_FILE) if self.store.backend == "sqlite" else None

    def _witness(self, upto: int) -> list[Any] | None:
        """The deployment with id `upto` as the totals file names it: another store (restored, rebuilt) has another."""
        found = self.store.get(upto) if upto else None
        return None if found is None else [found.repo, found.env, found.started_at, found.finished_at, found.result]

    def _read_kept(self) -> tuple[int, Totals]:
        """The totals file's id and totals when they are this store's and these buckets' (else 0 and none: add up)."""
        path = self._kept_file()
        try:
            kept = metricsfile.read(path) if path is not None else None
            if kept is not None and kept["buckets"] == BUCKETS and kept["witness"] == self._witness(kept["upto"]):
                return int(kept["upto"]), Totals.of_json(kept["totals"])
        except (OSError, metricsfile.Unusable) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            log.warning(
                "metrics: %s cannot be used (%s): the history is added up again from the state database "
                "(`gitopsd doctor` says what to do)",
                path,
                why,
            )
        return 0, Totals()

    def _save_kept(self) -> None:
        """Write the totals up to _upto, so the next start adds up only what finished since (issue 28)."""
        path, witness = self._kept_file(), self._witness(self._upto)
        if path is None or witness is None:
            return
        kept = {"upto": self._upto, "witness": witness, "buckets": BUCKETS}
        try:
            metricsfile.write(path, {**kept, "totals": self._kept.as_json()})
            self._saved = self._upto
        except OSError as exc:
            log.warning("metrics: cannot write %s (%s): the next start adds up the history again", path, exc)

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected only when scraped (no store reads when the collector is registered)

    def collect(self) -> Iterator[Any]:
        totals, active = self.totals()
        config = self.config()
        envs = [(r.name, e.name) for r in config.repositories for e in r.environments]
        yield from self._environments(config)
        # Zero series where alerts look for a first increase (a series born at 1 shows Prometheus no increase);
        # the rarer kinds and results appear when they first happen, which keeps a scrape short.
        zeros = {(r, e, k, res): 0 for r, e in envs for k in ("deploy", "rollback") for res in ("succeeded", "failed")}
        yield _family(
            CounterMetricFamily,
            "gitopsd_deployments",
            "Finished deployments by kind and result.",
            ["repo", "env", "kind", "result"],
            {**zeros, **totals.deployments},
        )
        yield _family(
            CounterMetricFamily,
            "gitopsd_rollbacks",
            "Finished rollback deployments, automatic or by a person.",
            ["repo", "env", "cause"],
            {**{(r, e, c): 0 for r, e in envs for c in ("automatic", "manual")}, **totals.rollbacks},
        )
        yield _family(
            CounterMetricFamily,
            "gitopsd_checks",
            "Verification checks run by deployments, by type and result.",
            ["repo", "env", "type", "result"],
            dict(totals.checks),
        )
        for name, doc, table, bounds in (
            ("gitopsd_deployment_duration_seconds", "How long finished deployments took.", totals.durations, DURATION_BUCKETS),
            (
                "gitopsd_lead_time_seconds",
                "From when a commit first reached the server to its first successful deployment in the environment.",
                totals.lead_times,
                LEAD_TIME_BUCKETS,
            ),
        ):
            # Only environments that have deployed: zero-filled buckets for the rest were two thirds of a scrape at 1,000 repositories.
            histogram = HistogramMetricFamily(name, doc, labels=["repo", "env"])
            for pair in sorted(table):
                histogram.add_metric(list(pair), table[pair].buckets(bounds), table[pair].total)
            yield histogram
        yield _family(
            GaugeMetricFamily,
            "gitopsd_last_successful_deployment_timestamp_seconds",
            "When the environment's last successful deployment ended (Unix time).",
            ["repo", "env"],
            dict(totals.last_success),
        )
        for result, doc in (
            ("running", "Deployments running now."),
            ("queued", "Deployments waiting for a free worker (max_parallel)."),
        ):
            counts: dict[tuple[str, ...], float] = {pair: 0 for pair in envs}
            for _id, repo, env, state in active:
                if state == result:
                    counts[(repo, env)] = counts.get((repo, env), 0) + 1
            yield _family(GaugeMetricFamily, f"gitopsd_deployments_{result}", doc, ["repo", "env"], counts)
        yield _family(
            GaugeMetricFamily,
            "gitopsd_drifted_hosts",
            "Hosts whose last drift check found changes.",
            ["repo", "env"],
            {**{pair: 0 for pair in envs}, **self.drifted()},
        )
        yield _family(
            GaugeMetricFamily,
            "gitopsd_environment_locked",
            "Locks in force on the environment, by who set them: a person (gitopsd lock) or a firing alert (freeze_on).",
            ["repo", "env", "source"],
            self._locks(envs),
        )
        if self.dora is not None:
            yield from self._dora(self.dora())

    def _locks(self, envs: list[tuple[str, str]]) -> dict[tuple[str, str, str], float]:
        """(repo, env, source) -> locks in force now; a lock on a repository or on all counts on each environment."""
        counts: dict[tuple[str, str, str], float] = {(r, e, s): 0 for r, e in envs for s in ("person", "alert")}
        for lock in self.store.all_locks(time.time()):
            for repo, env in envs:
                if lock.repo in ("*", repo) and lock.env in ("*", env):
                    counts[(repo, env, lock.source)] += 1
        return counts

    def _environments(self, config: Config) -> Iterator[Any]:
        """gitopsd_environment_info: desired and deployed commit and state, as `gitopsd status` shows them."""
        from .status import all_status

        info = InfoMetricFamily(
            "gitopsd_environment", "Each environment's desired and deployed commit and state.", labels=["repo", "env"]
        )
        try:
            rows = all_status(config, self.store)
        except (StoreError, GitError, OSError) as exc:  # the other figures are still worth a scrape
            log.warning("metrics: cannot read the environments' status: %s", exc)
            rows = []
        for row in rows:
            info.add_metric(
                [row.repo, row.env], {"desired": row.desired or "", "deployed": row.deployed or "", "state": row.state}
            )
        yield info

    @staticmethod
    def _dora(figures: list[tuple[str, str, dict[str, float | None]]]) -> Iterator[Any]:
        """DORA figures per (repo, env), as gitopsd/services/dora.py computes them."""
        names = {
            "per_day": ("gitopsd_dora_deployments_per_day", "Successful deployments per day"),
            "lead_time_median": ("gitopsd_dora_lead_time_median_seconds", "Median lead time for changes"),
            "lead_time_p90": ("gitopsd_dora_lead_time_p90_seconds", "90th percentile lead time for changes"),
            "change_failure_rate": (
                "gitopsd_dora_change_failure_ratio",
                "Deployments that failed or were rolled back, per deployment",
            ),
            "recovery_median": (
                "gitopsd_dora_recovery_time_median_seconds",
                "Median time from a failed deployment to the next successful one",
            ),
            "rework_rate": ("gitopsd_dora_rework_ratio", "Rollbacks and fixes per deployment"),
        }
        for key, (name, doc) in names.items():
            family = GaugeMetricFamily(name, doc + " (production, last 30 days)", labels=["repo", "env"])
            for repo, env, values in figures:
                if values.get(key) is not None:
                    family.add_metric([repo, env], float(values[key] or 0.0))
            yield family


DORA_ENV = "production"
DORA_WINDOW = 30 * 86400.0
DORA_CACHE = 60.0  # seconds: the figures read the whole window's history; kept a minute unless production moved


def dora_source(config: Callable[[], Config], store: Store) -> Callable[[], list[tuple[str, str, dict[str, Any]]]] | None:
    """The DORA figures of each repository's production over the last 30 days (gitopsd/services/dora.py), kept for a
    minute unless a production deployment began or ended meanwhile (then the next rendering has them); None where
    this gitopsd has no dora.py."""
    try:
        from . import dora
    except ImportError:
        return None
    if not hasattr(store, "dora_deployments"):
        return None
    cached: list[tuple[float, object, list[tuple[str, str, dict[str, Any]]]]] = []

    def moved() -> object:
        """Each repository's last production deployment and its result: one indexed row each, so a changed figure is
        shown by the next rendering instead of up to a minute later."""
        last = ((r.name, store.last(r.name, DORA_ENV)) for r in config().repositories if r.environment(DORA_ENV) is not None)
        return tuple((name, d.id, d.result) if d else (name, None, None) for name, d in last)

    def figures() -> list[tuple[str, str, dict[str, Any]]]:
        now = time.time()
        try:
            mark: object = moved()
        except Exception:  # noqa: BLE001 (the figures below say what is wrong, or the age alone decides)
            mark = None
        if cached and now - cached[0][0] < DORA_CACHE and mark is not None and mark == cached[0][1]:
            return cached[0][2]
        try:
            found = [
                (r.name, DORA_ENV, dora.figures(store, r.name, DORA_ENV, now - DORA_WINDOW, now=now).as_json())
                for r in config().repositories
                if r.environment(DORA_ENV) is not None
            ]
        except Exception as exc:  # noqa: BLE001 (the other figures are still worth a scrape; tried again in a minute)
            log.warning("metrics: the DORA figures cannot be computed: %s: %s", type(exc).__name__, exc)
            found = []
        cached[:] = [(now, mark, found)]
        return found

    return figures


Role = Callable[[], tuple[bool, int]]  # (is this daemon the leader, its lease's epoch): gitopsd/daemon/leadership.py


class RoleCollector(Collector):
    """gitopsd_leader and gitopsd_leader_epoch: which daemon of a leader and its standby leads (docs/install.md, "Standby daemon")."""

    def __init__(self, role: Role):
        self.role = role

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        leads, epoch = self.role()
        yield GaugeMetricFamily(
            "gitopsd_leader", "1 when this gitopsd leads (deploys), 0 when it is the standby.", value=1 if leads else 0
        )
        yield GaugeMetricFamily(
            "gitopsd_leader_epoch", "The leader's lease epoch this gitopsd last saw (raised by each takeover).", value=epoch
        )


def standby_exposition(role: Role) -> Callable[[], tuple[bytes, str]]:
    """A standby's /metrics: its role and its process, nothing from the store (the leader's scrape has that once)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoleCollector(role))
    ProcessCollector(registry=registry, namespace="gitopsd")
    return lambda: (generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4)


class _Gauge(Collector):
    """One gauge computed at scrape time."""

    def __init__(self, family: Callable[[], Any]):
        self.family = family

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        yield self.family()


class Metrics:
    """The daemon's metrics: the store's figures at scrape time, and the refused pushes the hook reports."""

    def __init__(self, config: Callable[[], Config], store: Store, role: Role | None = None, **sources: Any):
        self.config = config
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = StoreCollector(config, store, **sources)
        self.registry.register(self.collector)
        self.store_replaced = False  # the daemon found its state database deleted or replaced (Daemon.check_store)
        # A scrape renders the daemon's own figures itself, the store's only when that is quick (exposition.py).
        self._store = CollectorRegistry(auto_describe=False)
        self._store.register(self.collector)
        self._own = CollectorRegistry(auto_describe=False)
        self._refused = Counter(
            "gitopsd_pushes_refused", "Pushes the pre-receive hook refused, by rule.", ["repo", "env", "rule"], registry=None
        )
        for own in (
            RoleCollector(role or (lambda: (True, 0))),  # without a standby: the one daemon leads
            ProcessCollector(registry=None, namespace="gitopsd"),  # the daemon's own CPU, memory, files
            _Gauge(
                lambda: GaugeMetricFamily(
                    "gitopsd_store_replaced",
                    "1 when the state database file was deleted or replaced while the "
                    "daemon ran: it deploys nothing until restored.",
                    value=1 if self.store_replaced else 0,
                )
            ),
            self._refused,
        ):
            self.registry.register(own)
            self._own.register(own)
        self.rendering = Rendering(
            lambda: generate_latest(self._store), lambda: generate_latest(self._own), getattr(store, "data_version", lambda: None)
        )
        # The whole history is added up once, about a second per 100,000 deployments: at start, not in a scrape.
        # The store's figures are first rendered for the first scrape: a daemon nobody scrapes renders nothing (at
        # 1,000 repositories that rendering was most of the CPU of an idle daemon's first five minutes, issue 28).
        threading.Thread(target=self._warm, name="metrics", daemon=True).start()

    def _warm(self) -> None:
        try:
            self.collector.totals()
        except StoreError as exc:  # the first scrape tries again
            log.warning("metrics: cannot read the deployment history: %s", exc)

    def close(self) -> None:
        """Let go of the store (the daemon's stop, after its API: nothing scrapes any more)."""
        self.collector.store.close()

    def refused(self, repo: str, env: str, rule: str) -> None:
        """Count one refused push to `env` of `repo` (env '' for refs outside environments)."""
        known = {e.name for r in self.config().repositories if r.name == repo for e in r.environments}
        self._refused.labels(repo, env if env in known else "", rule if rule in REFUSAL_RULES else "other").inc()

    def scrape(self) -> tuple[bytes, str]:
        """What GET /metrics answers: the store's figures as last rendered, never 81,000 samples made in the request
        (exposition.py), and the daemon's own figures now."""
        return self.rendering.scrape(), CONTENT_TYPE_PLAIN_0_0_4

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type. Raises StoreError when the store cannot be read."""
        t0 = time.perf_counter()
        body = generate_latest(self.registry)
        log.debug("metrics: %d bytes in %.1f ms", len(body), (time.perf_counter() - t0) * 1000)
        return body, CONTENT_TYPE_PLAIN_0_0_4  # the text format Prometheus 2 reads
