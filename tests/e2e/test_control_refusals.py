"""The running daemon's control socket refuses what it cannot do with a registered reason id, and goes on answering.

Real: the daemon as a process, its control socket, raw client sockets and control.call as the command line uses it.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gitopsd.adapters import control
from gitopsd.core.reasons import REASONS
from tests.support import Daemon, Sandbox


def raw(path, data: bytes) -> dict[str, Any]:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    try:
        conn.connect(str(path))
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # answered before the whole request was read (over the limit)
            pass
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    finally:
        conn.close()
    return json.loads(answer)


def test_the_daemons_control_socket_refuses_bad_requests_with_reason_ids_and_then_answers_status(sandbox: Sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        path = sandbox.runtime / "control.sock"
        answers = {
            "unknown op": control.call(path, {"op": "launch-missiles"}),
            "no op": control.call(path, {}),
            "a huge op": control.call(path, {"op": "x" * 60000}),
            "not JSON": raw(path, b"status please"),
            "too large": raw(path, b"{" + b" " * (control.MAX_REQUEST + 1)),
        }
        status = control.call(path, {"op": "status"})
    got = {what: (a["ok"], a.get("kind"), a.get("reason")) for what, a in answers.items()}
    assert got == {
        "unknown op": (False, "invalid", "unknown_request"),
        "no op": (False, "invalid", "unknown_request"),
        "a huge op": (False, "invalid", "unknown_request"),
        "not JSON": (False, "invalid", "bad_request"),
        "too large": (False, "invalid", "request_too_large"),
    }
    for what, answer in answers.items():
        assert answer["reason"] in REASONS and "\n" not in answer["error"] and len(answer["error"]) < 300, (what, answer)
    assert status["ok"] is True and [row["env"] for row in json.loads(status["json"])] == ["qa"]
