"""The control socket under idle and slow peers: each holds only its own thread, and only for control.TIMEOUT.

Real: a ControlServer on a Unix socket in a temp folder, real client sockets, control.call as the CLI uses it.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from gitopsd.adapters import control, controlraw
from gitopsd.core.errors import refused_from
from gitopsd.core.reasons import REASONS


def echo(identity: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "message": f"{identity} asked {request.get('op')}"}


def idle_peer(path) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(5)
    conn.connect(str(path))
    return conn


def test_beyond_max_clients_idle_peers_a_caller_hears_at_once_that_the_daemon_is_busy_then_is_answered(short_tmp):
    server = control.ControlServer(short_tmp / "control.sock", echo)
    server.start()
    idle = [idle_peer(server.path) for _ in range(control.MAX_CLIENTS)]
    try:
        time.sleep(0.5)  # each taken by a thread of its own
        started = time.monotonic()
        assert control.call(server.path, {"op": "ping"}, timeout=5) == control.BUSY
        assert time.monotonic() - started < 2
        for conn in idle:
            conn.close()
        time.sleep(0.5)
        assert control.call(server.path, {"op": "ping"}, timeout=5)["ok"] is True
    finally:
        for conn in idle:
            conn.close()
        server.close()


def test_an_idle_or_trickling_peer_is_cut_off_after_the_timeout_and_others_are_answered_meanwhile(short_tmp, monkeypatch):
    monkeypatch.setattr(control, "TIMEOUT", 1.0)
    server = control.ControlServer(short_tmp / "control.sock", echo)
    server.start()
    idle, slow = idle_peer(server.path), idle_peer(server.path)
    try:
        started = time.monotonic()
        assert control.call(server.path, {"op": "ping"}, timeout=5)["ok"] is True
        assert time.monotonic() - started < 0.9  # not after the idle peers' time is up
        cut = None
        while cut is None and time.monotonic() - started < 5:  # a byte every 0.2 s: quick recvs, a slow request
            try:
                slow.sendall(b" ")
                time.sleep(0.2)
            except OSError:
                cut = time.monotonic() - started
        assert cut is not None and cut < 2.5, cut
        assert idle.recv(1024) == b""  # closed, nothing said: it asked nothing
        assert time.monotonic() - started < 3
    finally:
        idle.close()
        slow.close()
        server.close()


def raw_answer(path, data: bytes) -> dict[str, Any]:
    """The daemon's answer to bytes sent as they are (what control.call would never send)."""
    conn = idle_peer(path)
    try:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # answered and closed before reading it all (over the limit): the answer waits
            pass
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    finally:
        conn.close()
    return json.loads(answer)


def test_the_sockets_own_refusals_carry_a_registered_reason_id_of_their_kind_and_say_what_to_do(short_tmp):
    def broken(identity: str, request: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    server = control.ControlServer(short_tmp / "control.sock", echo)
    server.start()
    broken_server = control.ControlServer(short_tmp / "broken.sock", broken)
    broken_server.start()
    try:
        answers = {
            "over the limit": raw_answer(server.path, b" " * (control.MAX_REQUEST + 10)),
            "not JSON": raw_answer(server.path, b"{op: status"),
            "not an object": raw_answer(server.path, b'["status"]'),
            "nested too deeply": raw_answer(server.path, b"[" * 60000),
            "a bug": raw_answer(broken_server.path, b'{"op": "status"}'),
        }
        idle = [idle_peer(server.path) for _ in range(control.MAX_CLIENTS)]
        try:
            time.sleep(0.5)  # each taken by a thread of its own
            answers["busy"] = control.call(server.path, {"op": "ping"}, timeout=5)
        finally:
            for conn in idle:
                conn.close()
    finally:
        server.close()
        broken_server.close()
    reasons = {what: (a["ok"], a.get("kind"), a.get("reason")) for what, a in answers.items()}
    assert reasons == {
        "over the limit": (False, "invalid", "request_too_large"),
        "not JSON": (False, "invalid", "bad_request"),
        "not an object": (False, "invalid", "bad_request"),
        "nested too deeply": (False, "invalid", "bad_request"),
        "a bug": (False, "internal", "internal_error"),
        "busy": (False, "unavailable", "daemon_busy"),
    }
    for what, answer in answers.items():
        assert REASONS[answer["reason"]][0] == answer["kind"], what
        back = refused_from(answer)
        assert (back.kind, back.reason) == (answer["kind"], answer["reason"]), what
        assert "\n" not in answer["error"] and len(answer["error"]) < 300, what
    assert "64 KiB" in answers["over the limit"]["error"]
    assert "one JSON object" in answers["not JSON"]["error"] and "one JSON object" in answers["not an object"]["error"]


def test_an_answer_with_bytes_comes_as_its_line_then_the_bytes_counted_and_one_without_them_is_not_taken(short_tmp):
    """`status --json`'s 2 MB of rows come as they are, not escaped into a JSON string and back (issue 28)."""
    rows = b'[\n{"repo": "shop", "reason": "a \\"quoted\\" word \\u00e9"}\n]' * 40_000

    def handler(identity: str, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("raw") is True:
            return {"ok": True, "stamp": "s1", "raw": rows}
        return {"ok": True, "json": rows.decode()}

    server = control.ControlServer(short_tmp / "control.sock", handler)
    server.start()
    try:
        assert controlraw.ask(server.path, {"op": "status"}, timeout=30, owner=short_tmp) == (
            {"ok": True, "stamp": "s1", "bytes": len(rows)},
            rows,
        )
        assert control.call(server.path, {"op": "status"}, timeout=30) == {"ok": True, "json": rows.decode()}, "as before"
    finally:
        server.close()
    server = control.ControlServer(short_tmp / "control.sock", echo)  # an older daemon: a JSON answer and no bytes
    server.start()
    try:
        assert controlraw.ask(server.path, {"op": "status"}, timeout=30, owner=short_tmp) is None
    finally:
        server.close()
