"""A red-team pass over the push path from one developer's SSH key: what the forced command lets through.

Real: an sshd (tests/sshhosts.py) logging the key in to this account with docs/trust-model.md's forced command
`gitopsd git-shell NAME`, `git`/`ssh` clients, the bare repository with its installed hook, a second bare repository
gitopsd does not manage. Nothing is faked; the daemon is not needed (the hook and git-shell are the boundary here).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.e2e.test_ssh_identity import TRUST_MODEL
from tests.support import Sandbox, free_port, git, run

GITOPSD = Path(sys.executable).parent / "gitopsd"


def forced_command(server, sandbox: Sandbox, name: str = "alice") -> None:
    """Give the test's key docs/trust-model.md's line: `gitopsd git-shell NAME`, restrict (with the sandbox's config)."""
    key = server.authorized_keys.read_text().strip().splitlines()[-1]
    server.authorized_keys.write_text(f'command="{GITOPSD} git-shell --config {sandbox.config} {name}",restrict {key}\n')


def url(server, path: str) -> str:
    return f"ssh://{server.user}@{server.address}:{server.port}{path}"


def ssh_command(server, *options: str) -> str:
    return " ".join(
        [
            "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            f"-o IdentitiesOnly=yes -o LogLevel=ERROR -i {server.key}",
            *options,
        ]
    )


def test_git_variables_an_sshd_accepts_never_reach_git_so_a_fetch_runs_no_command_of_the_client(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    # An administrator who lets Git's protocol v2 through with a pattern (`AcceptEnv GIT_*`) lets every GIT_* in.
    server.stop()
    server.config.write_text(server.config.read_text() + "AcceptEnv LANG LC_* GIT_*\n")
    server.start()
    forced_command(server, sandbox)
    marker = short_tmp / "ran-on-the-server"
    client = short_tmp / "ssh-with-git-config"
    # uploadpack.packObjectsHook counts from the command line's config (GIT_CONFIG_PARAMETERS): a shell command.
    client.write_text(
        "#!/bin/sh\n"
        f"GIT_CONFIG_PARAMETERS=\"'uploadpack.packobjectshook'='touch {marker};'\" "
        f"GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=core.hooksPath GIT_CONFIG_VALUE_0=/dev/null "
        f'exec {ssh_command(server, "-o SendEnv=GIT_CONFIG_PARAMETERS -o SendEnv=GIT_CONFIG_*")} "$@"\n'
    )
    client.chmod(0o755)
    env = sandbox.environ(GIT_SSH_COMMAND=str(client))
    cloned = run(["git", "clone", "--quiet", url(server, str(sandbox.repo)), str(short_tmp / "clone")], env=env, check=False)
    assert cloned.returncode == 0, cloned
    assert not marker.exists(), "a GIT_* variable of the client ran a command on the server"
    # core.hooksPath=/dev/null would skip the policy gate: a push to qa of a tree main never had is still refused.
    work = short_tmp / "clone"
    git(work, "config", "user.email", "mallory@example.com")
    git(work, "config", "user.name", "mallory")
    (work / "b.txt").write_text("never verified")
    git(work, "add", "b.txt")
    git(work, "commit", "--quiet", "-m", "straight to qa")
    pushed = run(["git", "push", "origin", "HEAD:qa"], cwd=work, env=env, check=False)
    assert pushed.returncode != 0 and "remote: gitopsd:" in pushed.stderr, pushed


def test_a_key_reaches_only_the_repositories_gitopsd_manages_whatever_path_it_asks_for(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    forced_command(server, sandbox)
    other = short_tmp / "other.git"  # another repository the account can read and write, unknown to gitopsd
    git(short_tmp, "init", "--quiet", "--bare", str(other))
    git(sandbox.work, "push", "--quiet", str(other), "main:secret")
    env = sandbox.environ(GIT_SSH_COMMAND=ssh_command(server))
    refusal = "is not a repository gitopsd manages"
    for path in (str(other), f"{sandbox.repo}/../other.git", str(other)[:-4], f"/~{server.user}/../{other}"):
        listed = run(["git", "ls-remote", url(server, path)], env=env, check=False)
        assert listed.returncode != 0 and "secret" not in listed.stdout, (path, listed)
        assert refusal in listed.stderr.strip().splitlines()[0], (path, listed)
        pushed = run(["git", "push", url(server, path), "main:refs/heads/planted"], cwd=sandbox.work, env=env, check=False)
        assert pushed.returncode != 0 and refusal in pushed.stderr, (path, pushed)
    assert git(other, "for-each-ref", "--format=%(refname)").stdout.split() == ["refs/heads/secret"]
    # What git-shell took for options is refused in gitopsd's own words, one line.
    for asked in ("'--upload-pack=touch x'", "'-c core.sshCommand=touch x'", "'--exec=touch x'", "'a\nb'", "~root/x"):
        for verb in ("git-upload-pack", "git-receive-pack"):
            proc = run(server.ssh_argv(f"{verb} {asked}"), check=False)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("gitopsd: error: git-shell: "), proc
    # A symlink to the managed repository, the path relative to the account's home, and `shop` for `shop.git` still work.
    link = short_tmp / "link.git"
    link.symlink_to(sandbox.repo)
    for path in (str(link), str(sandbox.repo), str(sandbox.repo)[:-4]):
        listed = run(["git", "ls-remote", url(server, path)], env=env, check=False)
        assert listed.returncode == 0 and "refs/heads/qa" in listed.stdout, (path, listed)


def test_a_push_cannot_squat_the_names_gitopsd_writes_its_audit_notes_and_release_candidates_under(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    forced_command(server, sandbox)
    env = sandbox.environ(GIT_SSH_COMMAND=ssh_command(server))
    origin = url(server, str(sandbox.repo))
    head = sandbox.head("main")
    # A ref at refs/notes/gitopsd/x (or refs/tags/rc) would keep git from ever making refs/notes/gitopsd (refs/tags/rc/*):
    # the audit trail would silently stop and `gitopsd rc create` fail. Refused like the names themselves, one by one.
    for ref in ("refs/notes/gitopsd/x", "refs/notes", "refs/tags/rc", "refs/tags/rc/x", "refs/notes/gitopsd"):
        pushed = run(["git", "push", origin, f"{head}:{ref}"], cwd=sandbox.work, env=env, check=False)
        assert pushed.returncode == 1 and f"remote: gitopsd: push to {ref} refused" in pushed.stderr, (ref, pushed)
    assert git(sandbox.repo, "for-each-ref", "--format=%(refname)", "refs/notes", "refs/tags").stdout == ""
    # Held: a developer's own notes and tags, and a tag whose name only begins like rc.
    for ref in ("refs/notes/commits", "refs/notes/gitopsd-mine", "refs/tags/rcx", "refs/tags/v1/rc"):
        pushed = run(["git", "push", origin, f"{head}:{ref}"], cwd=sandbox.work, env=env, check=False)
        assert pushed.returncode == 0, (ref, pushed)
    git(sandbox.repo, "notes", "--ref=gitopsd", "append", "-m", "deployed", head)  # as the daemon writes it


def test_the_documented_environment_line_gives_the_key_no_shell_on_the_account_that_owns_the_repositories(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    server.stop()
    server.config.write_text(server.config.read_text() + "PermitUserEnvironment GITOPSD_USER\n")
    server.start()
    # docs/trust-model.md's other way, as written (the account keeps /bin/sh, as install.md's git user does).
    line = re.search(r"^(.*environment=.*) ssh-ed25519 AAAA\.\.\. alice@laptop$", TRUST_MODEL, re.M)
    assert line, "docs/trust-model.md's authorized_keys line with environment="
    key = server.authorized_keys.read_text().strip().splitlines()[-1]
    server.authorized_keys.write_text(f"{line.group(1)} {key}\n")
    marker = short_tmp / "ran-as-the-git-account"
    shell = run(server.ssh_argv(f"touch {marker}"), check=False)
    assert shell.returncode != 0 and not marker.exists(), shell
    # Held: git still works that way, and the hook records the name the line sets.
    git(sandbox.work, "remote", "set-url", "origin", url(server, str(sandbox.repo)))
    fetched = run(["git", "fetch", "origin"], cwd=sandbox.work, env=sandbox.environ(GIT_SSH_COMMAND=ssh_command(server)))
    assert fetched.returncode == 0, fetched


def test_a_key_limited_to_its_teams_repository_reaches_no_other_gitopsd_manages(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    payments = short_tmp / "payments.git"  # another team's repository, managed by the same gitopsd
    shutil.copytree(sandbox.repo, payments, symlinks=True)
    config = yaml.safe_load(sandbox.config.read_text())
    config["repositories"].append({**config["repositories"][0], "name": "payments", "path": str(payments)})
    sandbox.config.write_text(yaml.safe_dump(config, sort_keys=False))
    (server,) = ssh_hosts(["git-server"])
    key = server.authorized_keys.read_text().strip().splitlines()[-1]
    server.authorized_keys.write_text(
        f'command="{GITOPSD} git-shell --config {sandbox.config} alice --repo shop",restrict {key}\n'
    )
    env = sandbox.environ(GIT_SSH_COMMAND=ssh_command(server))
    listed = run(["git", "ls-remote", url(server, str(payments))], env=env, check=False)
    assert listed.returncode != 0 and listed.stdout == "", listed
    assert listed.stderr.strip().splitlines()[0] == (
        f"gitopsd: error: git-shell: {str(payments)!r} is not a repository this key may use; it reaches only these: "
        f"{sandbox.repo}"
    ), listed
    assert run(["git", "ls-remote", url(server, str(sandbox.repo))], env=env).returncode == 0
    # A name the config does not have is the administrator's mistake, said as such.
    server.authorized_keys.write_text(
        f'command="{GITOPSD} git-shell --config {sandbox.config} alice --repo shp",restrict {key}\n'
    )
    listed = run(["git", "ls-remote", url(server, str(sandbox.repo))], env=env, check=False)
    assert listed.stderr.strip().splitlines()[0] == (
        f"gitopsd: error: git-shell: no repository named 'shp' in {sandbox.config} (known: shop, payments): "
        "fix this key's command= in the git user's ~/.ssh/authorized_keys"
    ), listed


def test_a_key_with_the_forced_command_gets_no_shell_no_file_transfer_and_no_tunnel(short_tmp, ssh_hosts):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    (server,) = ssh_hosts(["git-server"])
    forced_command(server, sandbox)
    marker = short_tmp / "ran"
    for command in (f"sh -c 'touch {marker}'", f"git-upload-pack '{sandbox.repo}'; touch {marker}", "scp -f /etc/hostname"):
        proc = run(server.ssh_argv(command), check=False)
        assert proc.returncode == 1 and proc.stderr.strip().startswith("gitopsd: error: git-shell: "), proc
    options = ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    sftp = run(
        ["sftp", "-b", "-", *options, "-i", str(server.key), "-P", str(server.port), f"{server.user}@{server.address}"],
        check=False,
    )
    assert sftp.returncode != 0, sftp
    assert not marker.exists()
    # `restrict`: a forwarding the client asks for opens nothing (sshd's own port stands for any service on the host).
    port = free_port()
    argv = server.ssh_argv()
    tunnel = subprocess.Popen([*argv[:-1], "-N", "-L", f"127.0.0.1:{port}:{server.address}:{server.port}", argv[-1]])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.settimeout(10)
                    assert conn.recv(100) == b"", "the tunnel reached sshd"
                break
            except ConnectionRefusedError:  # the client does not listen yet
                assert time.monotonic() < deadline and tunnel.poll() is None, "ssh -L never listened"
                time.sleep(0.1)
    finally:
        tunnel.terminate()
        tunnel.wait(10)
