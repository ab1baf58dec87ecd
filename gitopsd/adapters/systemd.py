"""The systemd notify protocol: a few lines over an AF_UNIX datagram socket, no library needed.

The socket address is taken once, at start, and removed from the environment so that no child
(Ansible above all) can ever talk to systemd in the daemon's name.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000 / 3  # ping at a third of the deadline
        if self.address and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never waits (as libsystemd's sd_notify): a deployment thread must not hang on a status line
                # when the receiver's queue is full; that line is dropped, the next one says the news.
                sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, self.address)
        except OSError:
            pass  # systemd gone, socket unreachable or its queue full: never fatal

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", "STATUS=reloading configuration")
