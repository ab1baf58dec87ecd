"""Each environment's `verify:`, `watch:` and `drift:`: the checks after a deployment, and drift between them."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from ..core.settings import Drift, HttpCheck, PrometheusCheck, Verify, Watch
from .problems import _check, _Checker, _duration, _flag, _url

WATCH_KEYS = {
    "for": "how long the watch lasts after a deployment",
    "interval": "time between checks",
    "http": "HTTP checks",
    "prometheus": "Prometheus checks",
    "inconclusive": "fail (the default) or pass: what a check that cannot answer counts as",
}
WATCH_PROMETHEUS_KEYS = {
    "url": "Prometheus' URL",
    "query": "PromQL query with one value",
    "max": "the highest value accepted",
    "min": "the lowest value accepted",
    "name": "the check's name in messages",
    "timeout": "seconds per request",
    "retries": "attempts after a failure",
}
DRIFT_KEYS = {
    "interval": "time between drift checks (check mode)",
    "heal": "deploy the tree again when drift is found",
}
VERIFY_KEYS = {
    "http": "an HTTP check after the deployment",
    "playbook": "a playbook in the tree run after the deployment",
    "prometheus": "a Prometheus query whose value must stay within bounds",
}
HTTP_KEYS = {
    "url": "the URL requested",
    "expect_status": "the status expected (default 200)",
    "json_field": "a field of the JSON body that must name the deployed commit",
    "timeout": "seconds per request",
    "retries": "attempts after a failure",
}
PROMETHEUS_KEYS = {
    "url": "Prometheus' URL",
    "query": "PromQL query with one value",
    "max": "the highest value accepted",
    "min": "the lowest value accepted",
}


def _verify(raw: Any, key: str, check: _Checker) -> Verify:
    data = check.mapping(raw, key, VERIFY_KEYS)
    http = _http_check(data["http"], f"{key}.http", check) if "http" in data else None
    prometheus = _prometheus_check(data["prometheus"], f"{key}.prometheus", check) if "prometheus" in data else None
    playbook = check.relpath(data["playbook"], f"{key}.playbook") if "playbook" in data else None
    return Verify(http=http, playbook=playbook or None, prometheus=prometheus)


def _http_check(raw: Any, key: str, check: _Checker) -> HttpCheck | None:
    """An HTTP check (verify.http, watch.http[i])."""
    h = check.mapping(raw, key, HTTP_KEYS)
    field_ = h.get("json_field")
    made: HttpCheck | None = _check(
        HttpCheck,
        key,
        check,
        url=_url(h.get("url"), f"{key}.url", check),
        expect_status=int(
            check.number(h, "expect_status", key, 200, integer=True, minimum=100, maximum=599, what="an HTTP status")
        ),
        json_field=str(field_) if field_ else None,
        timeout=check.seconds(h, "timeout", key, 2.0, minimum=0.1),
        retries=int(check.number(h, "retries", key, 3, integer=True, minimum=0)),
    )
    return made


def _prometheus_check(
    raw: Any, key: str, check: _Checker, allowed: Collection[str] = PROMETHEUS_KEYS, retries: int = 0
) -> PrometheusCheck | None:
    """A Prometheus check (verify.prometheus; watch.prometheus[i] also takes name, timeout and retries)."""
    p = check.mapping(raw, key, allowed)
    query = p.get("query")
    if not isinstance(query, str) or not query:
        check.add(f"{key}.query", "must be a PromQL query")
        query = ""
    bounds = {b: p.get(b) for b in ("max", "min")}
    for b, v in bounds.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            check.add(f"{key}.{b}", f"must be a number, not {v!r}")
            bounds[b] = None
        elif v is not None and not math.isfinite(v):
            check.add(f"{key}.{b}", f"must be a finite number, not {v!r}")
            bounds[b] = None
    if p.get("max") is None and p.get("min") is None:  # an invalid one is already reported
        check.add(key, "needs max: or min: (the threshold the query result must respect)")
    name = p.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or "\n" in name):
        check.add(f"{key}.name", f"must be a one-line name, not {name!r}")
        name = None
    made: PrometheusCheck | None = _check(
        PrometheusCheck,
        key,
        check,
        url=_url(p.get("url"), f"{key}.url", check),
        query=query,
        max_value=bounds["max"],
        min_value=bounds["min"],
        name=name,
        timeout=check.seconds(p, "timeout", key, 5.0, minimum=0.1),
        retries=int(check.number(p, "retries", key, retries, integer=True, minimum=0, maximum=10)),
    )
    return made


def _watch(raw: Any, key: str, check: _Checker) -> Watch | None:
    """`watch:`: checks that keep running for a while after each successful deployment."""
    data = check.mapping(raw, key, WATCH_KEYS)
    if not data:
        return None
    if "for" not in data:
        check.add(f"{key}.for", "is missing: say how long to watch after a deployment, e.g. 15m")
    duration = _duration(data, "for", key, 900.0, check)
    interval = _duration(data, "interval", key, 30.0, check)
    if interval > duration:
        check.add(
            f"{key}.interval", f"is longer than the watch ({data.get('interval')!r} > {data.get('for')!r}): no check would run"
        )
    checks: dict[str, list[Any]] = {"http": [], "prometheus": []}
    for kind in checks:
        items = data.get(kind, [])
        if isinstance(items, dict):  # one check may be given without a list
            items = [items]
        if not isinstance(items, list):
            check.add(f"{key}.{kind}", f"must be a list of {kind} checks")
            continue
        for i, item in enumerate(items):
            at = f"{key}.{kind}[{i}]"
            built = (
                _http_check(item, at, check)
                if kind == "http"
                else _prometheus_check(item, at, check, WATCH_PROMETHEUS_KEYS, retries=2)
            )
            if built is not None:
                checks[kind].append(built)
    if not data.get("http") and not data.get("prometheus"):
        check.add(key, "names no check: add http: or prometheus: checks to watch")
    inconclusive = data.get("inconclusive", "fail")
    if inconclusive not in ("fail", "pass"):
        check.add(f"{key}.inconclusive", f"must be fail or pass, not {inconclusive!r}")
        inconclusive = "fail"
    return Watch(
        duration=duration,
        interval=interval,
        http=tuple(checks["http"]),
        prometheus=tuple(checks["prometheus"]),
        inconclusive=inconclusive,
    )


def _drift(raw: Any, key: str, check: _Checker) -> Drift:
    """`drift:`: check-mode runs of the deployed tree on a schedule, and whether to heal."""
    data = check.mapping(raw, key, DRIFT_KEYS)
    interval = _duration(data, "interval", key, 3600.0, check)
    return Drift(interval=interval, heal=_flag(data, "heal", key, check))
