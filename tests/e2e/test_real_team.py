"""A real team's deploy server, set up as docs/install.md says (Install, Permissions, SSH trust, Ansible setup), in one go.

Real: the Unix users gr-git (the git-shell account everyone pushes to) and gr-svc (the daemon), group
gr-gitopsd, created and removed here; `gitopsd init` as root of a repository the git user then owns; the
daemon as gr-svc (setpriv) with its state folder, its own known_hosts and its SSH key in its home; an sshd
as the git server, where alice and bob push over SSH with `environment="GITOPSD_USER=..."` in
authorized_keys and `PermitUserEnvironment GITOPSD_USER`; two sshd target hosts on loopback trusted with
`gitopsd hosts trust`; a playbook using a role and a collection that requirements.yml installs offline from
a local folder, and an Ansible Vault variable per environment with vault_password_file.

Not real: the role. The public geerlingguy.nginx role cannot be downloaded here (no network), so a role of
the same shape (tasks, handlers, templates, defaults, meta) is built into a tarball, as a team's own
Galaxy mirror would serve it, and installed by ansible-galaxy from a `file://` source.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.test_ansible_setup import BIN as PROJECT_BIN
from tests.integration.test_ansible_setup import build_requirements
from tests.sshhosts import SshHost, interpreter, keygen, skip_without_sshd, start_hosts, stop_all
from tests.support import python_for_everyone, service_users, setpriv, sh

GIT_USER, SVC_USER, GROUP = "gr-git", "gr-svc", "gr-gitopsd"

pytestmark = [
    pytest.mark.slow,
    skip_without_sshd,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "useradd", "groupadd", "git-shell", "bwrap")),
        reason="real Unix users need root, setpriv, useradd, groupadd, git-shell and bubblewrap",
    ),
]

# A role shaped like geerlingguy.nginx: defaults, a templated site config whose change notifies a reload.
ROLE = {
    "defaults/main.yml": "webserver_conf_dir: /etc/webserver\nwebserver_listen_port: 80\n"
    "webserver_server_name: localhost\nwebserver_api_token: ''\n",
    "tasks/main.yml": (
        "- name: Ensure the configuration folder exists\n"
        "  ansible.builtin.file: {path: '{{ webserver_conf_dir }}/conf.d', state: directory, mode: '0755'}\n"
        "- name: Write the site configuration\n"
        "  ansible.builtin.template: {src: site.conf.j2, dest: '{{ webserver_conf_dir }}/conf.d/site.conf', "
        "mode: '0644'}\n"
        "  notify: reload webserver\n"
    ),
    "handlers/main.yml": (
        "- name: reload webserver\n  ansible.builtin.shell: echo reloaded >> {{ webserver_conf_dir }}/reloads\n"
    ),
    "templates/site.conf.j2": (
        "server {\n    listen {{ webserver_listen_port }};\n"
        "    server_name {{ webserver_server_name }};\n"
        '    set $api_token "{{ webserver_api_token }}";\n}\n'
    ),
    "meta/main.yml": (
        "galaxy_info: {role_name: webserver, author: team, description: web server like nginx, "
        "license: MIT, min_ansible_version: '2.9', platforms: []}\ndependencies: []\n"
    ),
}
PLAYBOOK = """\
- name: Web servers
  hosts: all
  gather_facts: false
  roles:
    - role: webserver
      vars:
        webserver_listen_port: {port}
        webserver_server_name: "{{{{ inventory_hostname | acme.tools.shout }}}}"
"""


@pytest.fixture(scope="module")
def team() -> Iterator[dict[str, Path]]:
    """The users, their homes, and a Python every user may run (the README's /opt/gitopsd), in /tmp."""
    base = Path(tempfile.mkdtemp(prefix="gr-team-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with service_users(base, GIT_USER, SVC_USER, GROUP):
            yield {"base": base, "bin": python_for_everyone(base / "opt-gitopsd")}
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Server:
    """The deploy server's paths, and gitopsd run as root, as the service user, or as the daemon."""

    def __init__(self, base: Path, bin_dir: Path):
        self.base, self.bin = base, bin_dir
        self.repo = base / "srv" / "git" / "shop.git"
        self.config = base / "etc" / "gitopsd" / "gitopsd.yml"
        self.state, self.runtime = base / "state", base / "run"
        self.root_home = base / "root-home"  # root's HOME here: its ~/.gitconfig is the test's, not the machine's
        self.root_home.mkdir()
        self.svc_home = Path(pwd.getpwnam(SVC_USER).pw_dir)
        self.daemon: subprocess.Popen[str] | None = None
        self.log = base / "daemon.log"
        self.git_hosts: list[SshHost] = []  # the git server's sshd, stopped with the daemon

    def env(self, home: Path) -> dict[str, str]:
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}

    def gitopsd(self, *args: str, user: str = "root", check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / "gitopsd"), *args, "--config", str(self.config)]
        if user == "root":
            return sh(argv, check=check, env=self.env(self.root_home), cwd="/")
        return sh([*setpriv(user), *argv], check=check, env=self.env(Path(pwd.getpwnam(user).pw_dir)), cwd="/")

    def status(self) -> dict[str, dict[str, Any]]:
        return {row["env"]: row for row in json.loads(self.gitopsd("status", "--json", user=SVC_USER).stdout)}

    def history(self, env: str) -> list[dict[str, Any]]:
        return json.loads(self.gitopsd("history", env, "--json", "--limit", "50", user=SVC_USER).stdout)

    def rev_parse(self, rev: str) -> str:
        return sh(["git", "--git-dir", str(self.repo), "rev-parse", rev], env=self.env(self.root_home)).stdout.strip()

    def head(self, branch: str) -> str:
        return self.rev_parse(f"refs/heads/{branch}")

    def tree(self, rev: str) -> str:
        return self.rev_parse(f"{rev}^{{tree}}")

    def start(self) -> None:
        self.daemon = subprocess.Popen(
            [
                *setpriv(SVC_USER),
                str(self.bin / "python"),
                "-m",
                "gitopsd",
                "run",
                "--config",
                str(self.config),
                "--log-level",
                "debug",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            env=self.env(self.svc_home),
            cwd="/",
            start_new_session=True,
        )
        self.wait_for(lambda: (self.runtime / "nudge.sock").exists(), "the daemon's socket")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()

    def wait_for(self, predicate: Any, what: str, timeout: float = 120) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.daemon is None or self.daemon.poll() is None, f"daemon exited:\n{self.log.read_text()}"
            time.sleep(0.3)
        runs = "".join(p.read_text()[-2000:] for p in sorted(self.state.glob("deployments/*/*/artifacts/run/stdout")))
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()[-6000:]}\n{runs}")

    def wait_state(self, env: str, state: str, desired: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = self.status()[env]
            return row if row["state"] == state and row["desired"] == desired else None

        return self.wait_for(check, f"{env} {state} at {desired[:7]}")


class Developer:
    """A person with an SSH key and a clone, pushing to the git user over SSH."""

    def __init__(self, name: str, folder: Path):
        folder.mkdir(parents=True)
        self.name, self.key = name, keygen(folder / "id_ed25519", f"{name}@laptop")
        self.work = folder / "shop"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITOPSD_"))}
        # The author names someone else on purpose: who deployed comes from the transport, never from here.
        return {
            **env,
            "GIT_AUTHOR_NAME": "Mallory",
            "GIT_AUTHOR_EMAIL": "mallory@example.com",
            "GIT_COMMITTER_NAME": "Mallory",
            "GIT_COMMITTER_EMAIL": "mallory@example.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_SSH_COMMAND": f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no "
            f"-o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -i {self.key}",
        }

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(["git", *args], check=check, cwd=self.work if self.work.exists() else self.work.parent, env=self.env())

    def write(self, files: dict[str, str]) -> None:
        for path, text in files.items():
            (self.work / path).parent.mkdir(parents=True, exist_ok=True)
            (self.work / path).write_text(text)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").stdout.strip()


def git_server(base: Path, people: dict[str, Developer], user: str = GIT_USER, first_octet: int = 31) -> SshHost:
    """An sshd for the git user: one authorized_keys line per person naming them, git-shell as the shell."""
    (server,) = start_hosts(base / "git-server", ["git-server"], first_octet=first_octet, user=user)
    ready = server.authorized_keys.read_text().strip()  # the fixture's own key: only to see sshd come back
    lines = [
        f'environment="GITOPSD_USER={name}",no-port-forwarding,no-agent-forwarding,no-pty '
        f"{Path(f'{dev.key}.pub').read_text().strip()}"
        for name, dev in people.items()
    ]
    server.authorized_keys.write_text("\n".join([*lines, ready]) + "\n")
    server.stop()
    server.config.write_text(server.config.read_text() + "PermitUserEnvironment GITOPSD_USER\n")  # as docs/trust-model.md
    server.start()
    server.authorized_keys.write_text("\n".join(lines) + "\n")
    sh(["usermod", "-s", shutil.which("git-shell") or "/usr/bin/git-shell", user])  # after sshd's `true` check
    return server


def inventory(env: str, hosts: list[SshHost], targets: Path) -> str:
    """Hosts over SSH as a team writes them: no key path, no host-key options (the service's key and known_hosts)."""
    return yaml.safe_dump(
        {
            "all": {
                "vars": {
                    "ansible_user": hosts[0].user,
                    "ansible_python_interpreter": interpreter(),
                    "ansible_pipelining": True,
                    "webserver_conf_dir": f"{targets}/{env}/{{{{ inventory_hostname }}}}",
                },
                "hosts": {h.name: {"ansible_host": h.address, "ansible_port": h.port} for h in hosts},
            }
        },
        sort_keys=False,
    )


def vaulted(password: Path, value: str) -> str:
    """A group_vars file with webserver_api_token encrypted by ansible-vault with that password file."""
    return sh(
        [
            str(PROJECT_BIN / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(password),
            value,
            "--name",
            "webserver_api_token",
        ]
    ).stdout


def test_a_team_deploys_a_role_over_ssh_as_pushed_by_each_person_promotes_and_is_stopped_where_it_must(team, ssh_hosts):
    base = team["base"]
    server = Server(base, team["bin"])
    targets = base / "targets"
    targets.mkdir()
    try:
        _scenario(server, base, targets, ssh_hosts)
    finally:
        server.stop()
        stop_all(server.git_hosts)


def _scenario(server: Server, base: Path, targets: Path, ssh_hosts: Any) -> None:
    hosts = ssh_hosts(["web-1", "web-2"])

    # -- Permissions: state and runtime folders as the unit makes them, the config readable by the group.
    for folder in (server.state, server.runtime):
        folder.mkdir(mode=0o750)
        shutil.chown(folder, SVC_USER, GROUP)
    # SSH trust: the service's own key, in its home (the runs see its ~/.ssh read-only).
    ssh_dir = server.svc_home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    shutil.copy(hosts[0].key, ssh_dir / "id_ed25519")
    for path in (ssh_dir, ssh_dir / "id_ed25519"):
        shutil.chown(path, SVC_USER, GROUP)
    (ssh_dir / "id_ed25519").chmod(0o600)
    # Ansible setup: a vault password per environment beside the config, the daemon's only; a local "Galaxy".
    vault = server.config.parent / "vault"
    vault.mkdir(parents=True)
    passwords = {env: vault / f"{env}.pass" for env in ("qa", "staging")}
    for env, path in passwords.items():
        path.write_text(f"pw-{env}-s3cret\n")
        path.chmod(0o600)
    galaxy = base / "galaxy"
    galaxy.mkdir()
    build_requirements(galaxy)  # the collection acme.tools (filter `shout`), as test_ansible_setup builds it
    role_src = base / "role-src" / "webserver"
    for path, text in ROLE.items():
        (role_src / path).parent.mkdir(parents=True, exist_ok=True)
        (role_src / path).write_text(text)
    sh(["tar", "-C", str(role_src.parent), "-czf", str(galaxy / "webserver.tar.gz"), "webserver"])
    (galaxy / "webserver.tar.gz").chmod(0o644)
    server.config.write_text(
        "# the team's deploy server\n"
        f"state_dir: {server.state}\nruntime_dir: {server.runtime}\nsweep_interval: 300\nstop_grace: 5\n"
        f"sandbox:\n  read_only: [{sysconfig.get_paths()['purelib']}, {galaxy}]   # gitopsd's Python; the Galaxy\n"
        "repositories: []   # gitopsd init adds them\n"
    )
    shutil.chown(server.config, "root", GROUP)
    server.config.chmod(0o640)

    # -- The git server and the people.
    alice = Developer("alice", base / "dev" / "alice")
    bob = Developer("bob", base / "dev" / "bob")
    git_host = git_server(base, {"alice": alice, "bob": bob})
    server.git_hosts.append(git_host)
    url = f"ssh://{GIT_USER}@{git_host.address}:{git_host.port}{server.repo}"
    shell = sh(
        [*alice.env()["GIT_SSH_COMMAND"].split(), "-p", str(git_host.port), f"{GIT_USER}@{git_host.address}", "id"], check=False
    )
    assert shell.returncode != 0 and "unrecognized command" in shell.stderr, shell  # git-shell: git only

    # -- `gitopsd init` as root creates the repository and gives it to the git user.
    server.repo.parent.mkdir(parents=True)
    init = server.gitopsd("init", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    assert "Traceback" not in init.stderr and "warning" not in init.stdout, init.stdout
    assert server.repo.stat().st_uid == pwd.getpwnam(GIT_USER).pw_uid
    trust_root = next(s for s in init.stdout.splitlines() if "safe.directory" in s and "git config" in s)
    sh(trust_root.split("#")[0].split(), env=server.env(server.root_home))  # the printed step, as root

    # alice pushes the content to main, over SSH as the git user; then init makes the environment branches.
    alice.git("clone", "-q", url, str(alice.work))
    alice.git("checkout", "-q", "-b", "main")
    alice.write(
        {
            "playbooks/deploy.yml": PLAYBOOK.format(port=8080),
            "requirements.yml": (
                f"roles:\n  - src: file://{galaxy}/webserver.tar.gz\n    name: webserver\n"
                f"collections:\n  - name: {galaxy}/acme-tools-1.0.0.tar.gz\n    type: file\n"
            ),
            **{f"environments/{env}/hosts.yml": inventory(env, hosts, targets) for env in ("qa", "staging")},
            **{f"environments/{env}/group_vars/all.yml": vaulted(path, f"token-{env}") for env, path in passwords.items()},
        }
    )
    alice.commit("web servers with the webserver role")
    alice.git("push", "-q", "origin", "main")
    init = server.gitopsd("init", str(server.repo), "--git-user", GIT_USER, "--service-user", SVC_USER)
    assert "created branch qa at main" in init.stdout, init.stdout

    # The operator's edits: each environment's vault password file, quick retries.
    data = yaml.safe_load(server.config.read_text())
    for entry in data["repositories"][0]["environments"]:
        entry.update({"retries": 1, "retry_backoff": 1})
        if entry["name"] in passwords:
            entry["vault_password_file"] = str(passwords[entry["name"]])
    server.config.write_text("# the team's deploy server\n" + yaml.safe_dump(data, sort_keys=False))
    server.gitopsd("check-config")
    for path in passwords.values():  # the daemon's, 0600; root made them
        shutil.chown(path, SVC_USER, GROUP)

    # -- SSH trust, as root: the keys of qa's hosts (staging's are the same hosts).
    trusted = server.gitopsd("hosts", "trust", "qa", "--yes")
    for host in hosts:
        assert f"{host.name} ({host.address}:{host.port}): new" in trusted.stdout, trusted.stdout
    known_hosts = server.state / ".ssh" / "known_hosts"  # the service's own, though root wrote it
    assert {known_hosts.stat().st_uid, known_hosts.parent.stat().st_uid} == {pwd.getpwnam(SVC_USER).pw_uid}

    # -- The daemon as the service user deploys qa at main.
    server.start()
    first = server.head("qa")
    server.wait_state("qa", "in-sync", first)
    for host in hosts:
        conf = (targets / "qa" / host.name / "conf.d" / "site.conf").read_text()
        assert "listen 8080;" in conf and f"server_name {host.name.upper()}!;" in conf, conf
        assert 'set $api_token "token-qa";' in conf  # decrypted with qa's vault password
    assert server.status()["staging"]["state"] == "waiting-for-promotion"

    # -- alice's change to main and qa: deployed to both hosts, recorded as hers (not the author's).
    alice.write({"playbooks/deploy.yml": PLAYBOOK.format(port=8081)})
    change = alice.commit("listen on 8081")
    pushed = alice.git("push", "origin", "main", "main:qa")
    assert "remote: gitopsd: qa will be deployed" in pushed.stderr, pushed.stderr
    server.wait_state("qa", "in-sync", change)
    row = next(d for d in server.history("qa") if d["commit"] == change)
    assert row["result"] == "succeeded" and row["actor"] == f"alice (via {GIT_USER})", row
    for host in hosts:
        assert "listen 8081;" in (targets / "qa" / host.name / "conf.d" / "site.conf").read_text()
        assert (targets / "qa" / host.name / "reloads").read_text() == "reloaded\nreloaded\n"  # the handler ran

    # -- Promotion as root, exactly qa's tree, with staging's own vault password.
    promoted = server.gitopsd("promote", "qa", "staging")
    assert "Traceback" not in promoted.stderr
    staging = server.head("staging")
    server.wait_state("staging", "in-sync", staging)
    assert server.tree(staging) == server.tree(change)
    assert server.history("staging")[0]["actor"] == "root"
    for host in hosts:
        conf = (targets / "staging" / host.name / "conf.d" / "site.conf").read_text()
        assert "listen 8081;" in conf and 'set $api_token "token-staging";' in conf

    # -- The healthy setup: doctor finds nothing to fix.
    doctor = server.gitopsd("doctor", "--git-user", GIT_USER, "--service-user", SVC_USER, check=False)
    assert doctor.returncode == 0 and doctor.stdout.splitlines()[-1] == "all ok", doctor.stdout + doctor.stderr

    # -- bob's force-push to qa is refused, with what to do instead.
    bob.git("clone", "-q", url, str(bob.work))
    bob.git("reset", "-q", "--hard", "HEAD~1")
    bob.write({"README": "a shortcut\n"})
    bob.commit("rewrite qa")
    refused = bob.git("push", "--force", "origin", "HEAD:qa", check=False)
    assert refused.returncode != 0 and server.head("qa") == change
    assert "remote: " in refused.stderr and "environment branches only move forward" in refused.stderr, refused.stderr
    assert "git fetch origin qa && git rebase origin/qa" in refused.stderr

    # -- web-2 is reinstalled (a new host key): qa's next deployment stalls, naming it; trusted again, it deploys.
    web2 = hosts[1]
    web2.stop()
    web2.host_key.unlink()
    Path(f"{web2.host_key}.pub").unlink()
    web2.start()
    alice.write({"playbooks/deploy.yml": PLAYBOOK.format(port=8082)})
    third = alice.commit("listen on 8082")
    alice.git("push", "-q", "origin", "main", "main:qa")
    row = server.wait_state("qa", "stalled", third)
    failed = next(d for d in server.history("qa") if d["commit"] == third)
    assert f"host key of web-2 ({web2.address}:{web2.port}) changed" in failed["outcome"], failed
    assert "gitopsd hosts trust qa" in failed["outcome"]
    # The service user records it this time (docs/install.md, SSH trust: root or the service user): root's first run left it the file.
    again = server.gitopsd("hosts", "trust", "qa", "--yes", user=SVC_USER, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"web-2 ({web2.address}:{web2.port}): changed" in again.stdout, again.stdout
    server.gitopsd("retry", "qa")
    server.wait_state("qa", "in-sync", third)

    log = server.log.read_text()
    assert "Traceback" not in log
    assert not [p for p in passwords.values() if p.read_text().strip() in log], "a vault password in the log"
