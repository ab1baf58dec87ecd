#!/usr/bin/env python3
"""gitopsd sample web app: what the sample playbook deploys to every host of an environment.

A stdlib-only HTTP server on 127.0.0.1:PORT (Python 3.8+, no dependencies):

  GET /health  200 {"status": "ok", "commit": ..., "env": ..., "host": ...}
               503 {"status": "failing", "reason": ..., ...} when this release's settings.json
               says "healthy": false or is not valid JSON (the process keeps running: this is how
               a broken release is shipped on purpose, and the playbook's health check catches it)
  GET /        a short text page saying the same, with the greeting from settings.json

commit/env/host come from REVISION.json, written next to this file by playbooks/deploy.yml;
REVISION.json, settings.json and the host's APP_ROOT/app.conf are read once, at startup.

The app writes its pid to APP_ROOT/app.pid once it listens, and exits by itself on SIGTERM or
SIGINT, or within about a second once APP_ROOT (the host's folder) is gone or replaced, so
deleting a test's temporary folder never leaves an orphan. Start it detached with launch.py.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIDFILE = "app.pid"
WATCH_INTERVAL = 0.25   # how often the host folder is checked, in seconds


def read_revision() -> dict:
    try:
        data = json.loads((HERE / "REVISION.json").read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def read_settings(env: str, host_file: Path | None = None) -> tuple[dict, str | None]:
    """Return (settings, why this release is unhealthy or None).

    settings.json holds the defaults; settings.<env>.json, when the release has one, overrides
    them for that environment only (so a production-only mistake passes qa and staging); the
    host's own config file (APP_ROOT/app.conf, JSON, which the playbook writes from the inventory's
    app_settings) overrides both.
    """
    data: dict = {}
    layers = [("settings.json", HERE / "settings.json"), (f"settings.{env}.json", HERE / f"settings.{env}.json")]
    if host_file is not None:
        layers.append((host_file.name, host_file))
    for name, path in layers:
        if name != "settings.json" and not path.exists():
            continue
        try:
            layer = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            return data, f"{name} cannot be read: {exc.strerror}"
        except ValueError as exc:
            return data, f"{name} is not valid JSON: {exc}"
        if not isinstance(layer, dict):
            return data, f"{name} is not a JSON object"
        data.update(layer)
        if layer.get("healthy", True) is not True:
            return data, f"{name} says healthy: false"
    return data, None


def make_handler(revision: dict, settings: dict, problem: str | None) -> type[BaseHTTPRequestHandler]:
    identity = {"commit": str(revision.get("commit", "unknown")), "env": str(revision.get("env", "unknown")),
                "host": str(revision.get("host", "unknown"))}
    greeting = str(settings.get("greeting", "Hello from the gitopsd sample app"))

    class Handler(BaseHTTPRequestHandler):
        server_version = "gitopsd-sample"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/health":
                if problem is None:
                    self.reply(200, "application/json", json.dumps({"status": "ok", **identity}) + "\n")
                else:
                    self.reply(503, "application/json",
                               json.dumps({"status": "failing", "reason": problem, **identity}) + "\n")
            elif path == "/":
                state = "ok" if problem is None else f"FAILING ({problem})"
                self.reply(200 if problem is None else 503, "text/plain; charset=utf-8",
                           f"{greeting}\n\ncommit {identity['commit']}\nenvironment {identity['env']}\n"
                           f"host {identity['host']}\nstatus {state}\n")
            else:
                self.reply(404, "text/plain; charset=utf-8", "not found\n")

        def reply(self, code: int, ctype: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.address_string()} {fmt % args}\n")

    return Handler


class Stop(Exception):
    """Raised by the signal handler to end the main loop's sleep at once."""


def identity_of(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gitopsd sample web app")
    parser.add_argument("--app-root", required=True, help="the host's folder (releases/, current, app.pid)")
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)

    app_root = Path(args.app_root).absolute()
    root_id = identity_of(app_root)
    if root_id is None:
        print(f"app: {app_root} does not exist", file=sys.stderr)
        return 2
    revision = read_revision()
    settings, problem = read_settings(str(revision.get("env", "")), app_root / "app.conf")
    try:
        server = ThreadingHTTPServer((args.bind, args.port), make_handler(revision, settings, problem))
    except OSError as exc:
        print(f"app: cannot listen on {args.bind}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    server.daemon_threads = True

    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    stopping: list[str] = []

    def on_signal(signum: int, _frame) -> None:
        if not stopping:                      # the first signal ends the wait below at once
            stopping.append(signal.Signals(signum).name)
            raise Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pidfile = app_root / PIDFILE
    try:
        # The pid file appears only once the port is open: launch.py waits for it.
        tmp = app_root / f".{PIDFILE}.{os.getpid()}"
        tmp.write_text(f"{os.getpid()}\n", encoding="utf-8")
        os.replace(tmp, pidfile)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} app: pid {os.getpid()} serving commit "
              f"{revision.get('commit', 'unknown')} on http://{args.bind}:{args.port}/ "
              f"({'healthy' if problem is None else 'FAILING: ' + problem}); release {HERE}", file=sys.stderr)
        while not stopping:
            time.sleep(WATCH_INTERVAL)
            if identity_of(app_root) != root_id:
                stopping.append(f"{app_root} is gone")
    except Stop:
        pass
    except OSError as exc:                    # e.g. app_root vanished before the pid file was written
        stopping.append(f"error: {exc}")

    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} app: pid {os.getpid()} stopping ({stopping[0]})", file=sys.stderr)
    server.shutdown()
    server.server_close()
    try:
        if pidfile.read_text(encoding="utf-8").strip() == str(os.getpid()):
            pidfile.unlink()
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
