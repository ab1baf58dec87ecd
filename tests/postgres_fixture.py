"""A real PostgreSQL on loopback (the postgres, initdb and pg_ctl of Debian's `postgresql`, `make deps`).

One server per test session (`postgres_server`), a fresh database per test (`postgres_url`). Run as
root, the server runs as `nobody` in a folder of its own (PostgreSQL refuses to run as root).
Trust authentication on 127.0.0.1 only; the server is stopped when the session ends. A test that
stops the server (a database lost mid-deployment) starts its own with `PgServer`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port


def binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres; None when PostgreSQL is not installed."""
    for folder in ["/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if all(os.access(os.path.join(folder, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


class PgServer:
    """One PostgreSQL cluster in a temp folder, on 127.0.0.1:port."""

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            pytest.skip("PostgreSQL is not installed (initdb, pg_ctl, postgres): make deps installs it")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="gitopsd-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root: as nobody, in a folder nobody owns
            os.chown(self.root, 65534, 65534)
            self._as = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        self._run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ]
        )
        self.start()

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(self._as + argv, capture_output=True, text=True, timeout=120, cwd=self.root)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}\n{done.stderr}"

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def running(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.base_url + "/postgres", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return f"{self.base_url}/{name}"

    def close(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except AssertionError:
                pass
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    server = PgServer()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> str:
    """A fresh, empty database on the session's server."""
    if not postgres_server.running():  # a test stopped it: bring it back for the next
        postgres_server.start()
    return postgres_server.create_database()
