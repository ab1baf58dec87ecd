"""The rollout tests' helpers: a production of four local hosts rolled out in batches, a real HTTP server standing
in for an app's health or Prometheus, and the batches a deployment recorded."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support import Sandbox

HOSTS = ["p-1", "p-2", "p-3", "p-4"]


class Server:
    """A real HTTP server on 127.0.0.1; `answer(path)` returns (status, JSON body)."""

    def __init__(self, answer):
        outer = self
        self.requests: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                status, body = answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                outer.requests.append(self.rfile.read(length).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def rollout_sandbox(root: Path, **options) -> Sandbox:
    """Production on HOSTS in batches of 1, 25 % and the rest; without OPTIONS already deployed once (converged: the
    test's checks name ports of its own, and a converged sandbox is shared only by sandboxes with the same config)."""
    env = {"auto_rollback": True, "rollout": {"batches": [1, "25%", "100%"]}, **options}
    return Sandbox(root, {"production": HOSTS}, env_options={"production": env}, converged=not options)


def batches_of(deployment: dict, sandbox: Sandbox) -> list[dict]:
    with sqlite3.connect(sandbox.state / "state.db") as db:
        detail = db.execute("SELECT detail FROM deployments WHERE id = ?", (deployment["id"],)).fetchone()[0]
    return json.loads(detail)["batches"]
