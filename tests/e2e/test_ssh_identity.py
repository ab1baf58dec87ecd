"""Identity over plain SSH: every pusher logs in as the same account, and authorized_keys names the person.

Real: an sshd (tests/sshhosts.py) with `PermitUserEnvironment GITOPSD_USER`, a `git push` over SSH into the
bare repository through the installed hook, the daemon as a process recording who pushed.
"""
from __future__ import annotations


from tests.support import Daemon, Sandbox, git, run


def test_a_push_over_ssh_records_the_person_authorized_keys_names_and_no_other_variable_gets_through(
        short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    key = server.authorized_keys.read_text().strip()
    # What an admin writes per person; GL_USER is not in PermitUserEnvironment's list, so sshd drops it.
    server.authorized_keys.write_text(f'environment="GITOPSD_USER=alice",environment="GL_USER=mallory" {key}\n')
    server.stop()
    server.config.write_text(server.config.read_text() + "PermitUserEnvironment GITOPSD_USER\n")
    server.start()
    assert "PermitUserEnvironment" not in server.log_tail(), "OpenSSH accepts a pattern list there"
    ssh = (f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           f"-o IdentitiesOnly=yes -i {server.key}")
    git(sandbox.work, "remote", "set-url", "origin", f"ssh://{server.user}@{server.address}:{server.port}{sandbox.repo}")
    sandbox.write("a.txt", "over ssh")
    commit = sandbox.commit("over ssh")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync")
        proc = run(["git", "push", "origin", "main", "main:qa"], cwd=sandbox.work,
                   env=sandbox.environ(GIT_SSH_COMMAND=ssh))
        assert "remote: gitopsd: qa will be deployed" in proc.stderr
        row = daemon.wait_result("qa", commit, "succeeded")
    assert row["actor"] == f"alice (via {server.user})", row
    assert "mallory" not in str(sandbox.history())
