"""Health checks against real HTTP servers on 127.0.0.1: an app's /health and a fake Prometheus."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gitopsd.adapters.checks import (
    CheckError,
    HttpCheck,
    PrometheusCheck,
    commit_matches,
    render_query,
    render_url,
    run_http,
    run_prometheus,
)
from gitopsd.adapters.inventory import HostInfo
from tests.support import free_port

COMMIT = "5d1c2e9a0b7f3c4d5e6f708192a3b4c5d6e7f809"
OTHER = "8a0b7f3c4d5e6f708192a3b4c5d6e7f8095d1c2e"

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Server:
    """A real HTTP server on 127.0.0.1 answering every GET with `answer(path)`; records the paths."""

    answer: Callable[[str], Answer]
    paths: list[str] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return self.httpd.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, name: str = "production-2") -> HostInfo:
        return HostInfo(name, {"ansible_host": "127.0.0.1", "app_port": str(self.port)})


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(answer: Callable[[str], Answer]) -> Server:
        server = Server(answer)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.paths.append(self.path)
                status, headers, body = server.answer(self.path)
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.httpd.serve_forever, args=(0.01,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.httpd.shutdown()
        server.httpd.server_close()


def health(commit: str, status: int = 200) -> Callable[[str], Answer]:
    return lambda path: (status, {}, json.dumps({"commit": commit, "build": {"commit": commit}}).encode())


CHECK = HttpCheck("http://{ansible_host}:{app_port}/health", json_field="commit", retries=0)


# --- HTTP ---------------------------------------------------------------------------------


def test_a_healthy_host_reporting_the_deployed_commit_passes(serve):
    app = serve(health(COMMIT))
    result = run_http(CHECK, app.host(), COMMIT)
    assert result.ok and result.name == "http production-2"
    assert f"{app.base}/health answered 200 with commit {COMMIT[:12]}" == result.detail
    assert app.paths == ["/health"]


def test_a_short_commit_of_at_least_7_digits_matches_and_a_shorter_one_does_not(serve):
    assert run_http(CHECK, serve(health(COMMIT[:7])).host(), COMMIT).ok
    assert not run_http(CHECK, serve(health(COMMIT[:6])).host(), COMMIT).ok
    assert commit_matches(COMMIT.upper(), COMMIT) and not commit_matches(COMMIT[:7], OTHER)


def test_a_dotted_json_field_is_followed(serve):
    app = serve(health(COMMIT))
    assert run_http(HttpCheck(CHECK.url, json_field="build.commit", retries=0), app.host(), COMMIT).ok
    missing = run_http(HttpCheck(CHECK.url, json_field="build.version", retries=0), app.host(), COMMIT)
    assert not missing.ok and "without the field 'build.version'" in missing.detail


def test_without_a_json_field_the_status_alone_decides(serve):
    app = serve(lambda path: (204, {}, b""))
    assert run_http(HttpCheck(CHECK.url, expect_status=204, retries=0), app.host(), COMMIT).ok


def test_a_503_fails_with_the_status_in_the_detail(serve):
    app = serve(health(COMMIT, status=503))
    result = run_http(HttpCheck(CHECK.url, json_field="commit", retries=1, interval=0.01), app.host(), COMMIT)
    assert not result.ok and result.name == "http production-2"
    assert result.detail == f"{app.base}/health answered 503, expected 200 (after 2 attempts)"
    assert len(app.paths) == 2


def test_the_wrong_commit_fails_and_says_which_it_got(serve):
    result = run_http(CHECK, serve(health(OTHER)).host(), COMMIT)
    assert not result.ok
    assert f"reports commit '{OTHER}', expected {COMMIT[:12]}" in result.detail


def test_a_host_that_fails_twice_then_recovers_passes_on_the_third_attempt(serve):
    answers = iter([health(COMMIT, 503), health(OTHER)])
    app = serve(lambda path: next(answers, health(COMMIT))(path))
    started = time.monotonic()
    result = run_http(HttpCheck(CHECK.url, json_field="commit", retries=3, interval=0.05), app.host(), COMMIT)
    assert result.ok and result.detail.endswith("(attempt 3)")
    assert len(app.paths) == 3 and time.monotonic() - started >= 0.1


def test_retries_are_attempts_after_the_first(serve):
    app = serve(health(COMMIT, status=500))
    result = run_http(HttpCheck(CHECK.url, retries=2, interval=0.01), app.host(), COMMIT)
    assert not result.ok and result.detail.endswith("(after 3 attempts)") and len(app.paths) == 3


def test_nothing_listening_fails_with_cannot_connect(serve):
    app = serve(health(COMMIT))
    host = app.host()
    app.httpd.shutdown()
    app.httpd.server_close()
    result = run_http(CHECK, host, COMMIT)
    assert not result.ok and "cannot connect" in result.detail


def test_a_slow_host_times_out(serve):
    def slow(path: str) -> Answer:
        time.sleep(0.5)
        return 200, {}, b"{}"

    result = run_http(HttpCheck(CHECK.url, timeout=0.1, retries=0), serve(slow).host(), COMMIT)
    assert not result.ok and "timed out" in result.detail


def test_a_redirect_on_the_same_host_is_followed_and_to_another_host_is_not(serve):
    other = serve(health(COMMIT))
    same = serve(lambda path: (302, {"Location": "/ready"}, b"") if path == "/health" else health(COMMIT)(path))
    assert run_http(CHECK, same.host(), COMMIT).ok and same.paths == ["/health", "/ready"]
    away = serve(lambda path: (302, {"Location": f"http://localhost:{other.port}/health"}, b""))
    result = run_http(CHECK, away.host(), COMMIT)
    assert not result.ok and "another host: not followed" in result.detail
    assert other.paths == []


def test_proxy_settings_in_the_environment_are_ignored(serve, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert run_http(CHECK, serve(health(COMMIT)).host(), COMMIT).ok


def test_a_url_needing_a_variable_the_host_lacks_is_a_check_error_naming_it():
    with pytest.raises(CheckError, match="'app_port', which host web-1 does not have"):
        run_http(CHECK, HostInfo("web-1", {"ansible_host": "10.0.0.1"}), COMMIT)


@pytest.mark.parametrize("value", ["127.0.0.1/evil", "user@127.0.0.1", "127.0.0.1 ", "{app_port}", "a?b", "a#b"])
def test_values_that_would_change_the_urls_shape_are_refused(value):
    with pytest.raises(CheckError, match="may go into a URL"):
        render_url(CHECK.url, HostInfo("web-1", {"ansible_host": value, "app_port": "80"}))


def test_url_templates_take_plain_names_only_and_must_give_an_http_url():
    host = HostInfo("web-1", {"ansible_host": "10.0.0.1", "app_port": "80"})
    assert render_url("https://{inventory_hostname}.example.com/", host) == "https://web-1.example.com/"
    for bad in (
        "http://{ansible_host.__class__}/",
        "http://{ansible_host!r}/",
        "http://{0}/",
        "file:///{app_port}",
        "http://{ansible_host",
    ):
        with pytest.raises(CheckError):
            render_url(bad, host)


# --- Prometheus ---------------------------------------------------------------------------

QUERY = 'sum(rate(http_errors_total{env="{env}",commit="{commit}"}[5m])) / sum(rate(http_requests_total[5m]))'


def prometheus(
    values: list[str] | None = None, kind: str = "vector", status: int = 200, document: dict | None = None
) -> Callable[[str], Answer]:
    def answer(path: str) -> Answer:
        if not path.startswith("/api/v1/query?"):
            return 404, {}, b"{}"
        if document is not None:
            return status, {}, json.dumps(document).encode()
        if kind == "scalar":
            result: object = [1700000000.0, values[0]]
        else:
            result = [{"metric": {"instance": f"web-{i}"}, "value": [1700000000.0, v]} for i, v in enumerate(values or [])]
        body = {"status": "success", "data": {"resultType": kind, "result": result}}
        return status, {}, json.dumps(body).encode()

    return answer


def sent_query(server: Server) -> str:
    [path] = server.paths
    return urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)["query"][0]


def test_an_error_rate_within_the_bound_passes_and_the_placeholders_were_filled(serve):
    prom = serve(prometheus(["0.02", "0.01"]))
    result = run_prometheus(PrometheusCheck(prom.base, QUERY, max_value=0.05, name="error_rate"), COMMIT, "production")
    assert result.ok and result.name == "prometheus error_rate"
    assert result.detail == "2 samples within bounds: 0.02, 0.01"
    assert sent_query(prom) == (
        f'sum(rate(http_errors_total{{env="production",commit="{COMMIT}"}}[5m])) / sum(rate(http_requests_total[5m]))'
    )


def test_a_breached_threshold_fails_naming_the_series(serve):
    prom = serve(prometheus(["0.02", "0.2"]))
    result = run_prometheus(PrometheusCheck(prom.base, QUERY, max_value=0.05, name="error_rate"), COMMIT, "production")
    assert not result.ok and result.detail == '{instance="web-1"} = 0.2 is above the maximum 0.05'


def test_a_minimum_bound_and_a_scalar_answer(serve):
    prom = serve(prometheus(["3"], kind="scalar"))
    check = PrometheusCheck(prom.base + "/", "scalar(up)", min_value=4)
    result = run_prometheus(check, COMMIT, "qa")
    assert not result.ok and result.detail == "scalar = 3 is below the minimum 4"
    assert result.name == "prometheus scalar(up)"
    assert run_prometheus(PrometheusCheck(prom.base, "scalar(up)", min_value=3), COMMIT, "qa").ok


def test_an_empty_result_is_no_data(serve):
    prom = serve(prometheus([]))
    result = run_prometheus(PrometheusCheck(prom.base, QUERY, max_value=0.05, name="error_rate"), COMMIT, "staging")
    assert not result.ok and result.detail == "query returned no data"


def test_nan_is_never_within_bounds(serve):
    prom = serve(prometheus(["NaN"]))
    result = run_prometheus(PrometheusCheck(prom.base, QUERY, max_value=0.05), COMMIT, "staging")
    assert not result.ok and "is NaN" in result.detail


def test_a_prometheus_error_is_a_failure_with_its_message(serve):
    prom = serve(
        prometheus(status=400, document={"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected"})
    )
    result = run_prometheus(PrometheusCheck(prom.base, "sum(", max_value=1), COMMIT, "qa")
    assert not result.ok
    assert result.detail == f"{prom.base} answered 400: Prometheus error bad_data: 1:5: parse error: unexpected"


@pytest.mark.parametrize(
    "answer, words",
    [
        (lambda path: (502, {}, b"<html>bad gateway</html>"), "answered 502"),
        (lambda path: (200, {}, b"not json"), "not JSON"),
        (prometheus(document={"status": "success", "data": {"resultType": "matrix", "result": []}}), "instant vector"),
        (
            prometheus(document={"status": "success", "data": {"resultType": "vector", "result": [{"value": 1}]}}),
            "unexpected answer",
        ),
    ],
)
def test_unusable_answers_fail_with_a_clear_detail(serve, answer, words):
    prom = serve(answer)
    result = run_prometheus(PrometheusCheck(prom.base, "up", max_value=1), COMMIT, "qa")
    assert not result.ok and words in result.detail


def test_an_unreachable_prometheus_fails():
    port = free_port()  # a port nothing listens on
    result = run_prometheus(PrometheusCheck(f"http://127.0.0.1:{port}", "up", timeout=1), COMMIT, "qa")
    assert not result.ok and "cannot connect" in result.detail


def test_values_that_could_break_out_of_a_promql_string_are_refused():
    with pytest.raises(CheckError):
        render_query(QUERY, 'abc"} or vector(0) #', "qa")
    with pytest.raises(CheckError):
        render_query(QUERY, COMMIT, 'qa"')
    with pytest.raises(CheckError):
        run_prometheus(PrometheusCheck("ftp://prometheus", "up"), COMMIT, "qa")
    assert render_query("{env}{commit}{other}", "abcdef1", "qa") == "qaabcdef1{other}"


def test_impossible_check_settings_are_refused_when_the_check_is_made():
    for bad in ({"expect_status": 42}, {"timeout": 0}, {"retries": -1}, {"json_field": "build..commit"}):
        with pytest.raises(CheckError):
            HttpCheck(CHECK.url, **bad)
    with pytest.raises(CheckError):
        PrometheusCheck("http://prometheus:9090", "up", min_value=2, max_value=1)
