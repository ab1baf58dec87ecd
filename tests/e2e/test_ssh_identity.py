"""Identity over plain SSH: every pusher logs in as the same account, and authorized_keys names the person.

Real: an sshd (tests/sshhosts.py) with `PermitUserEnvironment GITOPSD_USER`, or a forced command
`gitopsd git-shell NAME` taken from docs/trust-model.md's line, a `git push` over SSH into the bare repository
through the installed hook, the daemon as a process recording who pushed; `sshd -t` on its sshd_config.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.sshhosts import SSHD
from tests.support import ROOT, Daemon, Sandbox, git, run

TRUST_MODEL = (ROOT / "docs" / "trust-model.md").read_text()


def test_a_push_over_ssh_records_the_person_authorized_keys_names_and_no_other_variable_gets_through(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    (server,) = ssh_hosts(["git-server"])
    key = server.authorized_keys.read_text().strip()
    # What an admin writes per person; GL_USER is not in PermitUserEnvironment's list, so sshd drops it.
    server.authorized_keys.write_text(f'environment="GITOPSD_USER=alice",environment="GL_USER=mallory" {key}\n')
    server.stop()
    server.config.write_text(server.config.read_text() + "PermitUserEnvironment GITOPSD_USER\n")
    server.start()
    assert "PermitUserEnvironment" not in server.log_tail(), "OpenSSH accepts a pattern list there"
    ssh = (
        f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-o IdentitiesOnly=yes -i {server.key}"
    )
    git(sandbox.work, "remote", "set-url", "origin", f"ssh://{server.user}@{server.address}:{server.port}{sandbox.repo}")
    sandbox.write("a.txt", "over ssh")
    commit = sandbox.commit("over ssh")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync")
        proc = run(["git", "push", "origin", "main", "main:qa"], cwd=sandbox.work, env=sandbox.environ(GIT_SSH_COMMAND=ssh))
        assert "remote: gitopsd: qa will be deployed" in proc.stderr
        row = daemon.wait_result("qa", commit, "succeeded")
    assert row["actor"] == f"alice (via {server.user})", row
    assert "mallory" not in str(sandbox.history())


def ssh_command(server) -> str:
    return (
        f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
        f"-o IdentitiesOnly=yes -i {server.key}"
    )


def test_a_push_through_the_documented_forced_command_records_the_person_and_nothing_else_runs(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)
    (server,) = ssh_hosts(["git-server"])
    key = server.authorized_keys.read_text().strip()
    # docs/trust-model.md's line, with this checkout's gitopsd for /opt/gitopsd's and the test's key for the example key.
    line = re.search(
        r'^command="/opt/gitopsd/bin/gitopsd (git-shell alice)",(\S+) ssh-ed25519 AAAA\.\.\. alice@laptop$', TRUST_MODEL, re.M
    )
    assert line, "docs/trust-model.md's authorized_keys line for the forced command"
    gitopsd = Path(sys.executable).parent / "gitopsd"
    # The config is the sandbox's, not /etc/gitopsd/gitopsd.yml: git-shell serves only the repositories it names.
    server.authorized_keys.write_text(f'command="{gitopsd} {line.group(1)} --config {sandbox.config}",{line.group(2)} {key}\n')
    login = run([*ssh_command(server).split(), "-p", str(server.port), f"{server.user}@{server.address}", "id"], check=False)
    assert login.returncode == 1 and login.stdout == "", login
    assert login.stderr.strip().splitlines()[-1] == (
        "gitopsd: error: git-shell: 'id' is not a git push, fetch or "
        "archive of one repository; this key only runs git-receive-pack, "
        "git-upload-pack, git-upload-archive 'PATH'"
    )
    git(sandbox.work, "remote", "set-url", "origin", f"ssh://{server.user}@{server.address}:{server.port}{sandbox.repo}")
    sandbox.write("a.txt", "over ssh, forced command")
    commit = sandbox.commit("over ssh, forced command")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync")
        proc = run(
            ["git", "push", "origin", "main", "main:qa"],
            cwd=sandbox.work,
            env=sandbox.environ(GIT_SSH_COMMAND=ssh_command(server), GL_USER="mallory"),
        )
        assert "remote: gitopsd: qa will be deployed" in proc.stderr
        row = daemon.wait_result("qa", commit, "succeeded")
    assert row["actor"] == f"alice (via {server.user})", row
    fetched = run(["git", "fetch", "origin"], cwd=sandbox.work, env=sandbox.environ(GIT_SSH_COMMAND=ssh_command(server)))
    assert fetched.returncode == 0


def test_sshd_accepts_the_documented_sshd_config_and_refuses_it_inside_a_match_block(short_tmp, ssh_hosts):
    (server,) = ssh_hosts(["git-server"])
    block = TRUST_MODEL.split("# /etc/ssh/sshd_config, before any Match block\n", 1)[1].split("# ~git/", 1)[0]
    assert block.strip() == "PermitUserEnvironment GITOPSD_USER", block
    base = server.config.read_text()
    config = short_tmp / "sshd_config"
    config.write_text(base + block + "Match User nobody\n    PermitTTY no\n")
    checked = run([str(SSHD), "-t", "-f", str(config)], check=False)
    assert checked.returncode == 0 and checked.stderr == "", checked
    config.write_text(base + "Match User nobody\n    " + block)
    refused = run([str(SSHD), "-t", "-f", str(config)], check=False)
    assert refused.returncode != 0 and "PermitUserEnvironment" in refused.stderr, refused
