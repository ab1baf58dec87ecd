"""Listeners cannot take the daemon down: thousands of idle or slow API connections, idle control-socket peers.

Real: `gitopsd run` with its HTTP API on loopback, its control socket, git push through the installed hook and
ansible-playbook for the deployments. The daemon gets the default limit of 1,024 open files, as a unit without
LimitNOFILE would (or fewer), and cannot raise it.
"""

from __future__ import annotations

import resource
import socket
import threading
import time
import urllib.request

import psutil
import pytest

from tests.support import Daemon, Sandbox, free_port


def api_up(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize(("open_files", "clients"), [(1024, 1), (256, 16)])
def test_a_push_deploys_in_normal_time_while_two_thousand_idle_and_slow_connections_hold_the_api(short_tmp, open_files, clients):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # this test's own sockets
    port = free_port()
    sandbox = Sandbox(
        short_tmp, {"qa": ["qa-1"]}, extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}}
    )
    base = f"http://127.0.0.1:{port}"
    held: list[socket.socket] = []
    stop_trickle = threading.Event()
    try:
        with Daemon(sandbox) as daemon:
            psutil.Process(daemon.proc.pid).rlimit(psutil.RLIMIT_NOFILE, (open_files, open_files))
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            daemon.wait_for(lambda: api_up(base), 30, "the API up")
            for n in range(2000):  # idle: connected, nothing sent; from `clients` loopback addresses
                try:
                    held.append(
                        socket.create_connection(("127.0.0.1", port), timeout=2, source_address=(f"127.0.0.{2 + n % clients}", 0))
                    )
                except OSError:
                    pass
            slow = []
            for _ in range(100):  # slow headers: a request head that never ends
                try:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=2)
                    conn.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
                    slow.append(conn)
                except OSError:
                    pass
            held.extend(slow)

            def trickle() -> None:
                while not stop_trickle.wait(1.0):
                    for conn in slow:
                        try:
                            conn.sendall(b"X-A: b\r\n")
                        except OSError:
                            pass

            threading.Thread(target=trickle, daemon=True).start()
            assert len(held) > 1500
            sandbox.write("app.txt", "under load")
            pushed = sandbox.commit("deployed under load")
            started = time.monotonic()
            sandbox.push("main", "main:qa")
            daemon.wait_result("qa", pushed, "succeeded", timeout=60)
            assert time.monotonic() - started < 60
            assert daemon.proc.poll() is None
            stop_trickle.set()
            for conn in held:
                conn.close()
            held.clear()
            daemon.wait_for(lambda: api_up(base), 30, "the API answering again")
            log = daemon.log()
            assert "Traceback" not in log, log[-4000:]
            assert log.count("Too many open files") <= 5, log[-4000:]
            assert f"the HTTP API on 127.0.0.1:{port} refuses connections" in log
            assert daemon.stop() == 0
    finally:
        stop_trickle.set()
        for conn in held:
            conn.close()


def test_twenty_five_idle_control_socket_connections_do_not_keep_the_daemon_from_answering_a_signoff(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    idle: list[socket.socket] = []
    try:
        with Daemon(sandbox) as daemon:
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            control = sandbox.runtime / "control.sock"
            daemon.wait_for(control.exists, 30, "the control socket")

            def connect() -> None:  # and send nothing; a connect may wait for the daemon to take it
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                idle.append(conn)
                try:
                    conn.connect(str(control))
                except OSError:
                    pass

            for _ in range(25):
                threading.Thread(target=connect, daemon=True).start()
            time.sleep(1.0)
            started = time.monotonic()
            asked = sandbox.command("signoff", "qa", "--note", "looks good", check=False)
            assert time.monotonic() - started < 8
            # The daemon's own answer (this sandbox names no one who may sign off), not "busy" or a timeout.
            assert "may not sign off in qa" in asked.stderr, asked.stderr
            assert daemon.proc.poll() is None
    finally:
        for conn in idle:
            conn.close()
