"""Repository content runs in the sandbox: real ansible-runner runs and inventory reads in bubblewrap.

What is real: bubblewrap, ansible-runner, ansible-playbook with a local host, the state database.
Each test plays the attacker with push rights: its playbook or inventory tries to reach gitopsd's
own files or to outlive its deployment.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from gitopsd.adapters import runner, sandbox
from gitopsd.adapters.inventory import InventoryError
from gitopsd.adapters.sandbox import SandboxPolicy
from gitopsd.adapters.store import Store

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

LOCAL = """\
all:
  hosts:
    h1: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
"""


class Server:
    """A deploy server's layout in a temp folder: config, state with a real store, a repository, an export."""

    def __init__(self, root: Path):
        self.root = root
        self.config = root / "etc" / "gitopsd" / "gitopsd.yml"
        self.config.parent.mkdir(parents=True)
        self.config.write_text("secret: the config\n")
        self.state = root / "state"
        self.store = Store(self.state / "state.db")
        self.repo = root / "shop.git"
        (self.repo / "objects").mkdir(parents=True)
        self.out = root / "out"
        self.out.mkdir()
        self.out.chmod(0o777)
        self.n = 0

    def policy(self, **changes) -> SandboxPolicy:
        hide = sandbox.hidden_paths(self.config, self.state, self.root / "run", [self.repo])
        return SandboxPolicy(enabled=True, user=sandbox.default_user(), writable=(self.out,), hide=hide, **changes)

    def export(self, files: dict[str, str]) -> Path:
        self.n += 1
        tree = self.state / "deployments" / str(self.n) / "tree"
        for name, text in {"hosts.yml": LOCAL, **files}.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(text)
        return tree

    def run(
        self, playbook: str, files: dict[str, str] | None = None, timeout: int = 60, policy: SandboxPolicy | None = None
    ) -> runner.RunOutcome:
        tree = self.export({"site.yml": playbook, **(files or {})})
        return runner.run_playbook(
            runner.PlaybookRun(
                marker=f"test-{uuid.uuid4().hex[:8]}",
                workdir=tree,
                playbook=tree / "site.yml",
                inventory=tree / "hosts.yml",
                data_dir=tree.parent / "run-1",
                extravars={"gitopsd_env": "qa"},
                timeout=timeout,
            ),
            threading.Event(),
            policy or self.policy(),
        )


def shell_play(command: str) -> str:
    return f"""\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.shell: {command!r}
      delegate_to: localhost
"""


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path)
    yield srv
    srv.store.close()


FORGE = """\
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, started_at)"
           " VALUES ('shop', 'staging', 'c', 'forged', 'deploy', 'succeeded', 'x', 'x', 0)")
db.commit()
"""

SCRIPT_PLAY = """\
- hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.command:
        argv: ["{{ ansible_playbook_python }}", "{{ playbook_dir }}/script.py", "{{ target }}"]
      delegate_to: localhost
"""


def test_a_playbook_cannot_forge_a_deployment_record(server):
    db = str(server.state / "state.db")
    outcome = server.run(SCRIPT_PLAY.replace("{{ target }}", db), {"script.py": FORGE})
    assert not outcome.ok
    assert "unable to open database file" in outcome.stdout.read_text()
    assert not server.store.tree_succeeded("shop", "staging", "forged")
    # The same playbook unsandboxed does forge it: the test can fail.
    unsandboxed = server.run(SCRIPT_PLAY.replace("{{ target }}", db), {"script.py": FORGE}, policy=SandboxPolicy(enabled=False))
    assert unsandboxed.ok, unsandboxed.reason
    assert server.store.tree_succeeded("shop", "staging", "forged")


def test_a_playbook_sees_neither_config_nor_repositories_nor_state_but_writes_where_shown(server):
    report = server.out / "seen"
    outcome = server.run(
        shell_play(
            f"(cat {server.config} || echo no-config; ls {server.repo} || echo no-repo; ls {server.state}; "
            f"ls {server.state / 'deployments'}; id -u) > {report} 2>&1"
        )
    )
    assert outcome.ok, outcome.reason
    seen = report.read_text()
    assert "the config" not in seen and "objects" not in seen and "state.db" not in seen
    assert "no-config" in seen or "No such file" in seen
    if os.geteuid() == 0:
        assert seen.split()[-1] == "65534"  # runs dropped to nobody


def test_nothing_a_deployment_started_outlives_it(server):
    tag = f"31{uuid.uuid4().int % 10**6:06d}"
    outcome = server.run(shell_play(f"env -i setsid sleep {tag} > /dev/null 2>&1 < /dev/null & echo started"))
    assert outcome.ok, outcome.reason
    time.sleep(0.3)
    survivors = [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and tag in p.info["cmdline"]]
    assert survivors == []


def test_an_inventory_is_read_in_the_sandbox_time_limited_and_reaped(server):
    tree = server.export({"group_vars/all.yml": "app_port: \"{{ lookup('pipe', 'sleep 319') }}\"\n"})
    started = time.monotonic()
    with pytest.raises(InventoryError, match="after 2s"):
        runner.read_hosts(
            tree / "hosts.yml",
            ("app_port",),
            workdir=tree,
            data_dir=tree.parent / "inv",
            marker=f"test-{uuid.uuid4().hex[:8]}",
            timeout=2,
            cancel=threading.Event(),
            policy=server.policy(),
        )
    assert time.monotonic() - started < 10
    assert not [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "319" in p.info["cmdline"]]


def test_an_inventory_lookup_cannot_read_the_config(server):
    tree = server.export({"group_vars/all.yml": f"secret: \"{{{{ lookup('file', '{server.config}') }}}}\"\n"})
    with pytest.raises(InventoryError, match="secret"):
        runner.read_hosts(
            tree / "hosts.yml",
            ("secret",),
            workdir=tree,
            data_dir=tree.parent / "inv",
            marker=f"test-{uuid.uuid4().hex[:8]}",
            timeout=30,
            cancel=threading.Event(),
            policy=server.policy(),
        )


def test_an_inventory_gives_its_hosts_and_variables(server):
    tree = server.export({"group_vars/all.yml": 'app_port: "{{ 18000 + 11 }}"\n'})
    hosts = runner.read_hosts(
        tree / "hosts.yml",
        ("app_port", "ansible_host"),
        workdir=tree,
        data_dir=tree.parent / "inv",
        marker=f"test-{uuid.uuid4().hex[:8]}",
        timeout=30,
        cancel=threading.Event(),
        policy=server.policy(),
    )
    assert [(h.name, h.vars) for h in hosts] == [("h1", {"app_port": "18011", "ansible_host": "h1"})]


def test_check_config_refuses_a_sandbox_without_bubblewrap(monkeypatch):
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-that-is-not-installed")
    with pytest.raises(sandbox.SandboxError, match="apt-get install bubblewrap"):
        sandbox.check(SandboxPolicy(enabled=True))
    sandbox.check(SandboxPolicy(enabled=False))


def test_a_run_works_where_the_service_users_home_is_the_state_folder_as_install_service_makes_it(server, monkeypatch):
    """install-service gives the service user its home in the state folder, so every run's folder and tree lie
    beneath $HOME; the run's private home must not cover them ("bwrap: Can't chdir to .../tree")."""
    monkeypatch.setenv("HOME", str(server.state))  # the daemon's user's home, as for the service user
    report = server.out / "home"
    policy = SandboxPolicy(
        enabled=True,
        user="root",
        writable=(server.out,),  # keeps the daemon's user, as a service does
        hide=sandbox.hidden_paths(server.config, server.state, server.root / "run", [server.repo]),
    )
    outcome = server.run(
        shell_play(f"(pwd; echo $HOME; ls $HOME; ls {server.state / 'state.db'} || echo no-db) > {report} 2>&1"), policy=policy
    )
    assert outcome.ok, outcome.reason + outcome.stdout.read_text()[-2000:]
    cwd, home, *rest = report.read_text().split("\n")
    assert cwd == str(server.state / "deployments" / str(server.n) / "tree") and home == str(server.state)
    assert "no-db" in rest  # the state folder is still hidden: $HOME is the run's own private one
