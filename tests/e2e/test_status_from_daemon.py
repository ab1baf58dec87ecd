"""`gitopsd status --json` asked of the running daemon (issue 28), beside the same command reading the store.

Real: the daemon as a process, pushes through the hooks, ansible-runner with local hosts, the command line in this
process and as a process. Faked: nothing; gitopsd.cli.quick.status_json is watched, or switched off to read the store.
"""

from __future__ import annotations

import json

import pytest

from gitopsd.cli import quick
from gitopsd.installers.install_hooks import write_gate_snapshot
from tests.support import Daemon, Sandbox, environment, git

pytestmark = pytest.mark.sandbox(
    {"qa": ["qa-1"], "staging": ["staging-1"]}, env_options={"staging": {"promote_from": "main"}}, converged=True
)


def _asked(sandbox: Sandbox, *args: str) -> tuple[str, list[int | None]]:
    """`status --json ARGS` in this process, and what the daemon's path returned (0: it answered; None: not asked)."""
    seen: list[int | None] = []
    real = quick.status_json
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quick, "status_json", lambda argv, default: seen.append(real(argv, default)) or seen[-1])
        return sandbox.command("status", "--json", *args).stdout, seen


def _from_store(sandbox: Sandbox, *args: str) -> str:
    """`status --json ARGS` read from the store, as when no daemon runs (the daemon's path switched off)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quick, "status_json", lambda argv, default: None)
        return sandbox.command("status", "--json", *args).stdout


def test_status_json_is_asked_of_the_running_daemon_and_gives_the_rows_the_store_gives(sandbox):
    with Daemon(sandbox) as daemon:
        for env in ("qa", "staging"):
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        served, seen = _asked(sandbox)
        assert seen == [0], "the daemon answered"
        assert served == _from_store(sandbox)
        assert [row["env"] for row in json.loads(served)] == ["qa", "staging"]
        assert sandbox.cli("status", "--json").stdout == served, "the console script prints the same"
        assert _asked(sandbox, "--repo", "shop") == (served, [0])

        # A branch moved behind the daemon's back (no hook, no deployment: qa is suspended): the next answer shows it.
        sandbox.command("suspend", "qa")
        sandbox.write("app.txt", "v2")
        new = sandbox.commit("v2")
        git(sandbox.work, "push", "--quiet", "origin", "main")
        git(sandbox.root, "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", new)
        served, seen = _asked(sandbox)
        assert seen == [0]
        rows = {row["env"]: row for row in json.loads(served)}
        assert rows["qa"]["desired"] == new and rows["qa"]["state"] == "suspended"
        assert served == _from_store(sandbox)
    served, seen = _asked(sandbox)
    assert seen == [None], "no daemon: status reads the store"
    assert served == _from_store(sandbox)
    assert json.loads(served)[0]["desired"] == new


def test_status_json_reads_the_store_while_the_daemon_has_not_read_the_configuration_file_as_it_is_now(sandbox):
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        with open(sandbox.config, "a") as config:
            config.write("# edited, not reloaded\n")
        with environment(sandbox.environ()):  # what install-hooks saves: the snapshot of the file as it is now
            write_gate_snapshot(sandbox.config)
        served, seen = _asked(sandbox)
        assert seen == [None], "the daemon's rows come from the file as it was"
        assert served == _from_store(sandbox)
