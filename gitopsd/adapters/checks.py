"""Health checks between the batches of a rollout: an app's HTTP endpoint, a Prometheus query.

Plain urllib, and deliberately narrow: no proxies from the environment, redirects followed only
on the same scheme, host and port, bodies read up to 1 MiB. A check that cannot be built (a URL
template naming a variable the host does not have, a value that would change the URL's shape) is
a CheckError, raised before any request; everything that goes wrong on the wire or in the answer
is a failed CheckResult whose detail says what.
"""

from __future__ import annotations

import json
import math
import re
import string
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..core.settings import CheckError, HttpCheck, PrometheusCheck
from ..core.types import CheckResult, HostInfo

MAX_BODY = 1 << 20
# What a host variable may contain to go into a URL: host names, IP addresses, ports, plain words.
_URL_VALUE = re.compile(r"[A-Za-z0-9._~:\[\]-]+")
_COMMIT = re.compile(r"[0-9a-fA-F]{4,64}")
_ENV = re.compile(r"[A-Za-z0-9_.-]+")
_PLACEHOLDER = re.compile(r"\{(commit|env)\}")
MIN_COMMIT_PREFIX = 7


__all__ = ["CheckError", "CheckResult", "HttpCheck", "PrometheusCheck", "run_http", "run_prometheus"]


class _RedirectRefused(Exception):
    def __init__(self, location: str):
        super().__init__(location)
        self.location = location


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (old.scheme, old.netloc) != (new.scheme, new.netloc):
            raise _RedirectRefused(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _SameOriginRedirects())


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    """GET url; return (status, body) for any HTTP answer, error statuses included.
    Raise OSError (URLError, timeouts), _RedirectRefused or ValueError (body too large)."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "gitopsd"})  # noqa: S310 (http(s) only: the scheme is checked before)
    try:
        with _opener().open(request, timeout=timeout) as response:
            return response.status, _read_limited(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, _read_limited(error)


def _read_limited(response: Any) -> bytes:
    body = bytes(response.read(MAX_BODY + 1))
    if len(body) > MAX_BODY:
        raise ValueError(f"body larger than {MAX_BODY} bytes")
    return body


def _problem(exc: BaseException) -> str:
    if isinstance(exc, _RedirectRefused):
        return f"redirected to {exc.location}, another host: not followed"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


# --- HTTP ---------------------------------------------------------------------------------


def render_url(template: str, host: HostInfo) -> str:
    """Given a URL template and a host, return the URL with each `{name}` replaced by the host's
    variable (`inventory_hostname` is the host's name unless set). Only plain `{name}` fields.

    Raise CheckError for a variable the host does not have, a value with characters that could
    change the URL's shape (anything but letters, digits and `. _ ~ : [ ] -`), a malformed
    template, or a result that is not an http(s) URL with a host.
    """
    values = {"inventory_hostname": host.name, **host.vars}
    parts: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise CheckError(f"bad URL template {template!r}: {exc}") from exc
    for literal, field, spec, conversion in parsed:
        parts.append(literal)
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise CheckError(f"bad URL template {template!r}: use plain {{name}} fields, not {{{field}...}}")
        if field not in values:
            raise CheckError(f"URL {template!r} needs variable {field!r}, which host {host.name} does not have")
        value = values[field]
        if not _URL_VALUE.fullmatch(value):
            raise CheckError(
                f"variable {field!r} of host {host.name} is {value!r}: only letters, digits and '. _ ~ : [ ] -' may go into a URL"
            )
        parts.append(value)
    url = "".join(parts)
    split = urllib.parse.urlsplit(url)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise CheckError(f"URL {url!r} (from {template!r}) is not an http(s) URL with a host")
    return url


def commit_matches(reported: str, commit: str) -> bool:
    """Given the commit an app reports and the deployed one, return whether they name the same
    commit: equal, or one a prefix of the other of at least 7 hex digits. Case-insensitive."""
    reported, commit = reported.strip().lower(), commit.strip().lower()
    shorter, longer = sorted((reported, commit), key=len)
    return len(shorter) >= MIN_COMMIT_PREFIX and longer.startswith(shorter)


def _field(document: Any, path: str) -> Any:
    """Follow a dotted path through mappings (and lists, by index); raise KeyError when absent."""
    value = document
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise KeyError(key)
    return value


def _judge_http(check: HttpCheck, url: str, status: int, body: bytes, commit: str) -> tuple[bool, str]:
    if status != check.expect_status:
        return False, f"{url} answered {status}, expected {check.expect_status}"
    if check.json_field is None:
        return True, f"{url} answered {status}"
    try:
        document = json.loads(body)
    except ValueError:
        return False, f"{url} answered {status} with a body that is not JSON"
    try:
        reported = _field(document, check.json_field)
    except KeyError:
        return False, f"{url} answered without the field {check.json_field!r}"
    if not isinstance(reported, str) or not commit_matches(reported, commit):
        return False, f"{url} reports {check.json_field} {reported!r}, expected {commit[:12]}"
    return True, f"{url} answered {status} with {check.json_field} {reported[:12]}"


def run_http(check: HttpCheck, host: HostInfo, commit: str) -> CheckResult:
    """Given an HTTP check, a host and the deployed commit, return whether the host answers as
    expected: `expect_status` and, with `json_field`, that field naming `commit`. A failed
    attempt is retried `check.retries` times, `check.interval` seconds apart; the detail of a
    failure is the last attempt's.

    Raise CheckError when the URL cannot be built for this host (see render_url).
    """
    url = render_url(check.url, host)
    name = f"http {host.name}"
    attempts = check.retries + 1
    detail = ""
    for attempt in range(1, attempts + 1):
        try:
            status, body = _get(url, check.timeout)
            ok, detail = _judge_http(check, url, status, body, commit)
        except (OSError, ValueError, _RedirectRefused) as exc:
            ok, detail = False, f"{url}: {_problem(exc)}"
        if ok:
            return CheckResult(True, name, detail + (f" (attempt {attempt})" if attempt > 1 else ""))
        if attempt < attempts:
            time.sleep(check.interval)
    return CheckResult(False, name, detail + (f" (after {attempts} attempts)" if attempts > 1 else ""))


# --- Prometheus ---------------------------------------------------------------------------


def render_query(query: str, commit: str, env: str) -> str:
    """Given a PromQL query, return it with `{commit}` and `{env}` replaced (in one pass).

    Raise CheckError unless the commit is 4 to 64 hex digits and the environment name letters,
    digits and `_ . -`: nothing that could end a PromQL string literal.
    """
    if not _COMMIT.fullmatch(commit):
        raise CheckError(f"commit {commit!r} is not a hex commit id")
    if not _ENV.fullmatch(env):
        raise CheckError(f"environment name {env!r} may not go into a query")
    return _PLACEHOLDER.sub(lambda m: commit if m.group(1) == "commit" else env, query)


def query_url(check: PrometheusCheck, query: str) -> str:
    """The instant-query URL for `query` on the check's Prometheus. Raise CheckError for a
    Prometheus URL that is not http(s) with a host."""
    split = urllib.parse.urlsplit(check.url)
    if split.scheme not in ("http", "https") or not split.hostname or split.query or split.fragment:
        raise CheckError(f"Prometheus URL {check.url!r} must be http(s)://host[:port][/prefix]")
    return check.url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})


def _samples(document: Any) -> list[tuple[str, float]]:
    """(series label, value) pairs of an instant-query answer; raise ValueError for another shape."""
    if not isinstance(document, dict):
        raise ValueError("answer is not a JSON object")
    if document.get("status") != "success":
        raise ValueError(f"Prometheus error {document.get('errorType', '?')}: {document.get('error', document.get('status'))}")
    data = document.get("data")
    if not isinstance(data, dict):
        raise ValueError("answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [("scalar", float(result[1]))]
    if kind == "vector" and isinstance(result, list):
        return [(_series(sample.get("metric", {})), float(sample["value"][1])) for sample in result]
    raise ValueError(f"result type {kind!r}: the query must give an instant vector or a scalar")


def _series(metric: dict[str, str]) -> str:
    name = metric.get("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{labels}}}" if labels or not name else name


def _out_of_bounds(check: PrometheusCheck, value: float) -> str | None:
    if math.isnan(value):
        return "is NaN"
    if check.max_value is not None and value > check.max_value:
        return f"is above the maximum {check.max_value:g}"
    if check.min_value is not None and value < check.min_value:
        return f"is below the minimum {check.min_value:g}"
    return None


def run_prometheus(check: PrometheusCheck, commit: str, env: str) -> CheckResult:
    """Given a Prometheus check, the deployed commit and the environment, run the instant query
    and return ok when it gives at least one sample and every sample is within the bounds (a NaN
    never is). No data, an HTTP or Prometheus error or an unexpected answer is a failed result;
    the last two (Prometheus down or answering garbage) are marked inconclusive: no verdict.

    Raise CheckError for a bad Prometheus URL, commit or environment name.
    """
    name = f"prometheus {check.name or check.query}"
    url = query_url(check, render_query(check.query, commit, env))
    try:
        status, body = _get(url, check.timeout)
    except (OSError, ValueError, _RedirectRefused) as exc:
        return CheckResult(False, name, f"{check.url}: {_problem(exc)}", inconclusive=True)
    try:
        document = json.loads(body)
    except ValueError:
        tail = "" if status != 200 else " with a body that is not JSON"
        return CheckResult(False, name, f"{check.url} answered {status}{tail}", inconclusive=True)
    try:
        samples = _samples(document)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else f"unexpected answer ({type(exc).__name__})"
        return CheckResult(False, name, f"{check.url} answered {status}: {detail}", inconclusive=True)
    if status != 200:
        return CheckResult(False, name, f"{check.url} answered {status}", inconclusive=True)
    if not samples:
        return CheckResult(False, name, "query returned no data")
    bad = [(series, value, why) for series, value in samples if (why := _out_of_bounds(check, value))]
    if bad:
        series, value, why = bad[0]
        more = f" (and {len(bad) - 1} more series)" if len(bad) > 1 else ""
        return CheckResult(False, name, f"{series} = {value:g} {why}{more}")
    values = ", ".join(f"{value:g}" for _, value in samples[:5]) + (", ..." if len(samples) > 5 else "")
    return CheckResult(True, name, f"{len(samples)} sample{'s' if len(samples) != 1 else ''} within bounds: {values}")
