#!/usr/bin/env python3
"""gitopsd sample app launcher: start, stop or restart app.py fully detached from whoever runs it.

    launch.py restart --app-root DIR --port N [--revision JSON]   stop the running app, start this one
    launch.py start   --app-root DIR --port N [--revision JSON]   start this one (fails if one runs)
    launch.py stop    --app-root DIR                              stop the running app (fine if none)
    launch.py status  --app-root DIR                              exit code 0 if it runs, else 3
    launch.py supervise --app-root DIR                            the host's service manager (see below)

"This one" is the app.py next to this file (this release). --revision first writes the JSON
object app.py reports (commit, env, host, ...) to this release's REVISION.json, atomically.
The app's pid is in DIR/app.pid and its output in DIR/app.log (moved to app.log.1 past 1 MiB).
`start` returns once the app listens, or fails showing the end of app.log if it died (port taken?).
`stop` sends SIGTERM to the pid in app.pid (only if that process is this host's app.py), waits
for it to exit, and uses SIGKILL after 5 s.

Detaching: double fork with setsid, stdin from /dev/null, stdout and stderr to app.log, no other
file descriptors, and an environment without gitopsd's and systemd's per-process variables:
gitopsd kills every process carrying GITOPSD_DEPLOYMENT=<id> when it cancels a deployment, and
this app is meant to outlive the deployment that started it. (Under the systemd unit, which has
KillMode=control-group, it still stops with the service; a real app runs as its own service.)
Stdlib only, so it runs with whatever Python 3.8+ the host has.

Local hosts (folders on the deploy server itself) need `supervise`: gitopsd runs playbooks in a
sandbox whose processes all end with the run, so an app started from inside it would die with
the deployment. `supervise` plays the part systemd plays on a real host: started outside the
sandbox (by the demo, or by you), it stays in the foreground, and a `restart` run by the playbook
hands the restart over to it (a request file in DIR, answered within seconds) instead of starting
the app itself; it only starts a launch.py from DIR/releases/. `stop` stops it too. SSH hosts
need none: their app is started over SSH, outside the deploy server's sandbox.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
PIDFILE = "app.pid"
LOGFILE = "app.log"
LOG_LIMIT = 1 << 20
# Never handed to the app: the deployment marker, and variables meant for the daemon's own supervisor.
DROP_ENV = ("GITOPSD_DEPLOYMENT", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
            "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM")
STOP_TIMEOUT = 5.0
START_TIMEOUT = 10.0
SUPERVISOR_PID = "supervisor.pid"
HEARTBEAT = "supervisor.alive"      # touched by the supervisor twice a second
REQUEST, DONE = "restart.request", "restart.done"
SUPERVISED = "GITOPSD_SAMPLE_SUPERVISED"   # set for the restart the supervisor runs itself


def alive(pid: int) -> bool:
    """Is pid a live process? A zombie nobody reaps (the app is reparented) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_the_app(pid: int, app_root: Path) -> bool:
    """Does pid run app.py for this app_root? Guards against a stale pid file and a reused pid."""
    if not alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True   # no /proc (not Linux): trust the pid file
    return any(a.endswith(b"app.py") for a in argv) and os.fsencode(str(app_root)) in argv


def running_pid(app_root: Path) -> int | None:
    try:
        pid = int((app_root / PIDFILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and is_the_app(pid, app_root) else None


def stop(app_root: Path) -> int:
    pidfile = app_root / PIDFILE
    pid = running_pid(app_root)
    if pid is None:
        if pidfile.exists():
            pidfile.unlink()
            print(f"app not running (removed stale {pidfile})")
        else:
            print("app not running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    how = "stopped"
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        how = f"killed (still running {STOP_TIMEOUT:.0f}s after SIGTERM)"
        while alive(pid) and time.monotonic() < deadline + 2:
            time.sleep(0.02)
    try:
        if pidfile.read_text(encoding="utf-8").strip() == str(pid):
            pidfile.unlink()
    except OSError:
        pass
    print(f"app pid {pid} {how}")
    return 0


def spawn(app_root: Path, port: int) -> int:
    """Double-fork app.py into its own session; return its pid."""
    log = app_root / LOGFILE
    try:
        if log.stat().st_size > LOG_LIMIT:
            os.replace(log, app_root / (LOGFILE + ".1"))
    except OSError:
        pass
    env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
    argv = [sys.executable, str(APP), "--app-root", str(app_root), "--port", str(port)]
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null_fd = os.open(os.devnull, os.O_RDONLY)
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        try:
            os.close(rfd)
            os.setsid()
            grandchild = os.fork()
            if grandchild:
                os.write(wfd, str(grandchild).encode())
                os._exit(0)
            os.close(wfd)
            os.chdir("/")
            os.umask(0o022)
            os.dup2(null_fd, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.closerange(3, max(65536, os.sysconf("SC_OPEN_MAX")))
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(argv[0], argv, env)
        except BaseException as exc:  # noqa: BLE001 (nothing may escape a forked child)
            try:
                os.write(2, f"launch: cannot start the app: {exc}\n".encode())
            finally:
                os._exit(127)
    os.close(wfd)
    os.close(log_fd)
    os.close(null_fd)
    data = b""
    while True:
        chunk = os.read(rfd, 64)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    os.waitpid(child, 0)
    if not data:
        raise SystemExit("launch: the detaching child failed")
    return int(data)


def write_revision(text: str) -> None:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise SystemExit("launch: --revision must be a JSON object")
    tmp = HERE / f".REVISION.json.{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, HERE / "REVISION.json")


def start(app_root: Path, port: int) -> int:
    pid = running_pid(app_root)
    if pid is not None:
        print(f"launch: the app already runs (pid {pid}); use restart", file=sys.stderr)
        return 1
    log = app_root / LOGFILE
    offset = log.stat().st_size if log.exists() else 0
    pid = spawn(app_root, port)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if (app_root / PIDFILE).read_text(encoding="utf-8").strip() == str(pid):
                print(f"app pid {pid} started on port {port} from {HERE}")
                return 0
        except OSError:
            pass
        if not alive(pid):
            break
        time.sleep(0.01)
    try:
        with open(log, "rb") as f:
            f.seek(offset if offset <= log.stat().st_size else 0)
            tail = f.read().decode("utf-8", "replace").strip()
    except OSError:
        tail = ""
    state = "died" if not alive(pid) else f"did not listen within {START_TIMEOUT:.0f}s"
    print(f"launch: the app (pid {pid}) {state}; {log}:\n{tail}", file=sys.stderr)
    return 1


def supervisor_alive(app_root: Path) -> bool:
    try:
        return time.time() - (app_root / HEARTBEAT).stat().st_mtime < 3.0
    except OSError:
        return False


def restart_through_supervisor(app_root: Path, port: int) -> int:
    """Ask the host's supervisor to restart the app from this release; wait for its answer."""
    nonce = f"{os.getpid()}-{time.time_ns()}"
    tmp = app_root / f".{REQUEST}.{nonce}"
    tmp.write_text(json.dumps({"nonce": nonce, "release": str(HERE), "port": port}), encoding="utf-8")
    os.replace(tmp, app_root / REQUEST)
    wait = START_TIMEOUT + STOP_TIMEOUT + 5
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            answer = json.loads((app_root / DONE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            answer = {}
        if answer.get("nonce") == nonce:
            print(answer.get("output", "").strip())
            return int(answer.get("code", 1))
        time.sleep(0.02)
    print(f"launch: the supervisor of {app_root} did not answer within {wait:.0f}s", file=sys.stderr)
    return 1


def supervise(app_root: Path) -> int:
    """Serve restart requests for the app in app_root until stopped or app_root is gone."""
    (app_root / SUPERVISOR_PID).write_text(f"{os.getpid()}\n", encoding="utf-8")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    beat = 0.0
    while not stopping and app_root.is_dir():
        if time.monotonic() - beat > 0.5:
            (app_root / HEARTBEAT).touch()
            beat = time.monotonic()
        try:
            request = json.loads((app_root / REQUEST).read_text(encoding="utf-8"))
            (app_root / REQUEST).unlink()
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        release = Path(os.path.realpath(str(request.get("release", ""))))
        if release.parent != Path(os.path.realpath(app_root / "releases")) or not (release / "launch.py").is_file():
            code, output = 1, f"launch: refused to restart from {release}: not a release of {app_root}"
        else:
            try:
                done = subprocess.run([sys.executable, str(release / "launch.py"), "restart", "--app-root",
                                       str(app_root), "--port", str(int(request.get("port", 0)))],
                                      capture_output=True, text=True, env={**os.environ, SUPERVISED: "1"})
                code, output = done.returncode, done.stdout + done.stderr
            except (OSError, ValueError) as exc:   # the supervisor itself must never die of a request
                code, output = 1, f"launch: the supervisor could not restart the app: {exc}"
        tmp = app_root / f".{DONE}.{os.getpid()}"
        tmp.write_text(json.dumps({"nonce": request.get("nonce"), "code": code, "output": output}), encoding="utf-8")
        os.replace(tmp, app_root / DONE)
    for name in (HEARTBEAT, SUPERVISOR_PID):
        try:
            (app_root / name).unlink()
        except OSError:
            pass
    return 0


def stop_supervisor(app_root: Path) -> None:
    try:
        pid = int((app_root / SUPERVISOR_PID).read_text(encoding="utf-8").strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if b"supervise" in argv and os.fsencode(str(app_root)) in argv:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="start/stop the gitopsd sample app, detached")
    parser.add_argument("action", choices=("start", "stop", "restart", "status", "supervise"))
    parser.add_argument("--app-root", required=True, help="the host's folder")
    parser.add_argument("--port", type=int, help="port to listen on (start, restart)")
    parser.add_argument("--revision", help="JSON object to write to this release's REVISION.json (start, restart)")
    args = parser.parse_args(argv)
    app_root = Path(os.path.realpath(args.app_root))
    if args.action in ("start", "restart") and args.port is None:
        parser.error(f"{args.action} needs --port")
    if not app_root.is_dir():
        if args.action in ("stop", "status"):
            print("app not running")
            return 0 if args.action == "stop" else 3
        parser.error(f"{app_root} is not a folder")
    if args.action == "supervise":
        return supervise(app_root)
    if args.action == "status":
        pid = running_pid(app_root)
        print(f"app pid {pid} running" if pid else "app not running")
        return 0 if pid else 3
    if args.revision is not None and args.action in ("start", "restart"):
        write_revision(args.revision)
    if args.action == "restart" and not os.environ.get(SUPERVISED) and supervisor_alive(app_root):
        return restart_through_supervisor(app_root, args.port)
    if args.action == "stop":
        stop_supervisor(app_root)
    if args.action in ("stop", "restart"):
        stop(app_root)
    if args.action in ("start", "restart"):
        return start(app_root, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
