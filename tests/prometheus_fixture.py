"""A real Prometheus (Debian's `prometheus` package, `make deps`) on loopback, scraping a gitopsd's /metrics.

It scrapes and evaluates rules every second, keeps its data in a folder of its own, and is always
stopped (the context manager kills it if it does not stop by itself): it never outlives a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.support import free_port, serving


class Prometheus:
    """A running Prometheus: its address, its queries and its alerts."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) of `expr` now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def wait_for(self, expr: str, timeout: float = 60) -> list[dict[str, Any]]:
        """Wait until `expr` has a sample; return its result."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.query(expr)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never had data for {expr}:\n{self.log.read_text()[-3000:]}")


@contextmanager
def prometheus(root: Path, target: str, rules: list[Path] = (), alertmanager: str | None = None) -> Iterator[Prometheus]:
    """Prometheus scraping http://`target`/metrics every second, with `rules` loaded (and its alerts sent to the
    Alertmanager at host:port `alertmanager`), until the block ends."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError("prometheus is not installed: run `make deps` as root (Debian's prometheus package)")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                "rule_files": [str(r) for r in rules],
                "scrape_configs": [
                    {"job_name": "gitopsd", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
                ],
                **({"alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}} if alertmanager else {}),
            }
        )
    )
    port, log = free_port(), root / "prometheus.log"
    url = f"http://127.0.0.1:{port}"
    with serving(
        "Prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--rules.alert.resend-delay=1s",  # firing alerts to Alertmanager every second, not every minute
            "--log.level=warn",
        ],
        f"{url}/-/ready",
        log,
    ) as proc:
        yield Prometheus(proc, url, log)
