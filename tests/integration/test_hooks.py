"""Real `git push` into real bare repositories through the installed hooks; exact output and exit codes."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gitopsd.adapters.store import Store
from tests.support import GITOPSD, Sandbox, git, run

pytestmark = pytest.mark.sandbox({"qa": ["qa-1"], "staging": ["staging-1"]})


def test_force_pushing_an_environment_branch_is_refused_with_what_to_do_instead(sandbox):
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    sandbox.push("main", "main:qa")
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    sandbox.write("b.txt", "2")
    rewritten = sandbox.commit("rewritten")
    before = sandbox.head("qa")
    proc = sandbox.push("--force", "main:qa", check=False)
    assert proc.returncode == 1
    remote = [line for line in proc.stderr.splitlines() if line.startswith("remote:")]
    text = "\n".join(line.rstrip() for line in remote)
    assert "remote: gitopsd: push to refs/heads/qa refused" in text
    assert "remote:   rule: environment branches only move forward (no force-push, no rewritten history)" in text
    assert f"remote:   {rewritten[:7]} does not contain the current head {before[:7]} of qa." in text
    assert "remote:   what to do instead:" in text
    assert "git revert -m 1 <merge commit>" in text and "gitopsd rollback qa --repo shop" in text
    assert "pre-receive hook declined" in proc.stderr
    assert sandbox.head("qa") == before


def test_deleting_an_environment_branch_is_refused(sandbox):
    before = sandbox.head("staging")
    proc = sandbox.push(":staging", check=False)
    assert proc.returncode == 1
    assert "remote: gitopsd: push to refs/heads/staging refused" in proc.stderr
    assert "remote:   rule: environment branches cannot be deleted" in proc.stderr
    assert sandbox.head("staging") == before


def test_feature_branches_are_not_policed(sandbox):
    sandbox.write("f.txt", "feature")
    sandbox.commit("feature")
    assert sandbox.push("main:feature/x").returncode == 0
    git(sandbox.work, "reset", "--quiet", "--hard", "HEAD~1")
    assert sandbox.push("--force", "main:feature/x").returncode == 0
    assert sandbox.push(":feature/x").returncode == 0


def test_a_push_is_accepted_and_says_so_when_the_daemon_is_down(sandbox):
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    started = time.monotonic()
    proc = sandbox.push("main", "main:qa")
    assert proc.returncode == 0
    assert "remote: gitopsd: the daemon is not running; qa will be deployed when it is back" in proc.stderr
    assert time.monotonic() - started < 5


def test_an_invalid_server_config_refuses_pushes_to_the_policed_repository(sandbox):
    sandbox.config.write_text("repositories: [unclosed\n")
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    proc = sandbox.push("main:qa", check=False)
    assert proc.returncode == 1
    assert "gitopsd configuration is invalid" in proc.stderr and "gitopsd check-config" in proc.stderr


def test_install_hooks_is_idempotent_and_chains_an_existing_hook(short_tmp):
    repo = short_tmp / "r.git"
    git(short_tmp, "init", "-q", "--bare", str(repo))
    existing = repo / "hooks" / "pre-receive"
    marker = short_tmp / "chained-ran"
    existing.write_text(f"#!/bin/sh\ncat > {marker}\nexit 0\n")
    existing.chmod(0o755)
    config = short_tmp / "gitopsd.yml"
    config.write_text(f"repositories:\n  - name: r\n    path: {repo}\n    environments: [{{name: qa}}]\n")
    first = run([*GITOPSD, "install-hooks", str(repo), "--config", str(config)]).stdout
    assert "existing hook kept as pre-receive.chained" in first
    second = run([*GITOPSD, "install-hooks", str(repo), "--config", str(config)]).stdout
    assert f"{repo}/hooks/pre-receive: already installed" in second.splitlines()
    assert (repo / "hooks" / "pre-receive.chained").read_text().startswith("#!/bin/sh\ncat >")
    # Both hooks run on a push: the chained one got the same ref lines.
    work = short_tmp / "w"
    git(short_tmp, "clone", "-q", str(repo), str(work))
    (work / "x").write_text("x")
    git(work, "add", "x")
    git(work, "commit", "-qm", "x")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["git", "push", "-q", "origin", "HEAD:feature"], cwd=work, check=True, env=env)
    assert marker.read_text().strip().endswith("refs/heads/feature")


def test_ref_names_with_shell_or_jinja_syntax_execute_nothing(sandbox):
    canary = sandbox.root / "pwned"
    sandbox.write("a.txt", "1")
    sandbox.commit("one")
    for name in [f"$(touch {canary})", "{{lookup('pipe','touch " + str(canary) + "')}}", f"a;touch {canary}"]:
        sandbox.push(f"main:refs/heads/{name}", check=False)
    assert not canary.exists()


def test_every_module_on_the_hook_path_imports_nothing_heavy():
    """What the hook may import, windows included, under the interpreter flags the shim uses."""
    root = Path(__file__).resolve().parents[2]
    code = (
        f"import sys; sys.path.append({str(root)!r}); "
        "import gitopsd.gate.receive, gitopsd.gate.policy, gitopsd.gate.snapshot, gitopsd.gate.nudge, gitopsd.base.gitcli, "
        "gitopsd.core.windows, gitopsd.gate.promotion; "
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))"
    )
    out = run([sys.executable, "-I", "-S", "-c", code]).stdout.strip()
    assert out == "[]"


def test_install_hooks_retires_an_old_post_receive_shim_and_puts_back_what_it_chained(short_tmp):
    repo = short_tmp / "r.git"
    git(short_tmp, "init", "-q", "--bare", str(repo))
    hooks = repo / "hooks"
    (hooks / "post-receive").write_text("#!/bin/sh\n# gitopsd hook shim: static on purpose.\nexec gitopsd hook post-receive\n")
    (hooks / "post-receive.chained").write_text("#!/bin/sh\necho mail the team\n")
    out = run([*GITOPSD, "install-hooks", str(repo)]).stdout
    assert f"{repo}/hooks/post-receive: gitopsd's shim removed (not needed any more); the hook it chained is back" in out
    assert (hooks / "post-receive").read_text() == "#!/bin/sh\necho mail the team\n"
    assert not (hooks / "post-receive.chained").exists()
    # A post-receive that is not gitopsd's is never touched.
    again = run([*GITOPSD, "install-hooks", str(repo)]).stdout
    assert "post-receive" not in again and (hooks / "post-receive").read_text() == "#!/bin/sh\necho mail the team\n"


def _run_hook_entry(sandbox: Sandbox, old: str, new: str, ref: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the hook exactly as the shim does (python -I -S), recording every module it imports."""
    entry = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.entry").stdout.strip()
    database = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.database").stdout.strip()
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", entry, "--config", str(sandbox.config), "--database", database],
        input=f"{old} {new} {ref}\n",
        cwd=sandbox.repo,
        capture_output=True,
        text=True,
        env=sandbox.environ(),
        check=False,
    )
    modules = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, modules - {"package"}


HEAVY = {
    "yaml",
    "pygit2",
    "ansible",
    "ansible_runner",
    "inotify_simple",
    "apscheduler",
    "dataclasses",
    "subprocess",
    "json",
    "pathlib",
    "typing",
    "socket",
    "re",
    "argparse",
    "cryptography",
}  # cryptography: signed commits only


def test_the_hook_reads_the_snapshot_and_imports_nothing_heavy_until_the_config_changes(sandbox):
    sandbox.write("a.txt", "1")
    new = sandbox.commit("one")
    sandbox.push("main")
    old = sandbox.head("qa")
    proc, modules = _run_hook_entry(sandbox, old, new, "refs/heads/qa")
    assert proc.returncode == 0, proc.stderr
    assert "gitopsd: the daemon is not running; qa will be deployed when it is back" in proc.stderr
    assert "gitopsd.gate.receive" in modules and "sqlite3" in modules
    assert not modules & HEAVY, sorted(modules & HEAVY)
    # An edit the daemon has not seen makes the snapshot stale: the hook reads the file and obeys it.
    sandbox.env_options["qa"] = {"windows": [{"deny": "* * * * *", "duration": "1h", "name": "freeze"}]}
    sandbox.write_config()
    proc, modules = _run_hook_entry(sandbox, old, new, "refs/heads/qa")
    assert proc.returncode == 1
    assert "rule: promotions to qa are closed now: the deploy window is closed: inside 'freeze'" in proc.stderr
    assert "yaml" in modules


def _interpreter_for_others() -> str | None:
    """A Python another user can run (this one may live under /root); None if there is none."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            ["setpriv", "--reuid", "54321", "--regid", "54321", "--clear-groups", candidate, "-I", "-S", "-c", "import sqlite3"],
            capture_output=True,
            check=False,
        )
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("groupadd"),
    reason="running the hook as another user needs root, setpriv and groupadd",
)
def test_a_git_user_in_the_daemons_group_is_gated_while_the_daemon_is_stopped_and_others_are_told_why(sandbox):
    """The service layout: state folder 0750 and files 0640 of the daemon's group; the hook runs as the pusher."""
    python = _interpreter_for_others()
    if python is None:
        pytest.skip("no Python that another user may run")
    sandbox.write("a.txt", "1")
    new = sandbox.commit("one")
    sandbox.push("main")
    old = sandbox.head("qa")
    subprocess.run(["groupadd", "-f", "gitopsd-hooktest"], check=True)
    gid = grp.getgrnam("gitopsd-hooktest").gr_gid
    for path in (sandbox.state, *sandbox.state.iterdir()):
        os.chown(path, 0, gid)
        path.chmod(0o750 if path.is_dir() else 0o640)
    sandbox.root.chmod(0o755)
    Store(sandbox.state / "state.db").close()  # as a daemon's clean stop leaves it:
    assert not (sandbox.state / "state.db-wal").exists()  # SQLite has removed its log files
    entry = git(sandbox.root, "--git-dir", str(sandbox.repo), "config", "gitopsd.entry").stdout.strip()
    env = {
        **sandbox.environ(),
        "HOME": "/tmp",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*",
    }  # the repository belongs to root here; on a server, to the git user

    def hook_as(group: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "setpriv",
                "--reuid",
                "54321",
                "--regid",
                str(group),
                "--clear-groups",
                python,
                "-I",
                "-S",
                entry,
                "--config",
                str(sandbox.config),
                "--database",
                str(sandbox.state / "state.db"),
            ],
            input=f"{old} {new} refs/heads/qa\n",
            cwd=sandbox.repo,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    member = hook_as(gid)
    assert member.returncode == 0, member.stderr
    assert "gitopsd: the daemon is not running; qa will be deployed when it is back" in member.stderr
    running = Store(sandbox.state / "state.db")  # as while the daemon runs: log files present
    try:
        member = hook_as(gid)
    finally:
        running.close()
    assert member.returncode == 0, member.stderr
    stranger = hook_as(54321)
    assert stranger.returncode == 1
    assert (
        f"gitopsd: push refused: the deployment records in {sandbox.state / 'state.db'} cannot be read "
        f"(Permission denied: {sandbox.state / 'state.db'})"
    ) in stranger.stderr
    assert "ask an operator to add uid 54321 to the daemon's group (usermod -aG gitopsd-hooktest uid 54321)" in stranger.stderr


def test_a_push_of_a_tree_git_fsck_rejects_is_refused_by_the_server(sandbox):
    """A symlink and a file of the same name: without receive.fsckObjects git stores it, and a naive export follows it."""

    def objects(*args: str, input: str) -> str:
        return run(["git", *args], cwd=sandbox.work, input=input).stdout.strip()

    link = objects("hash-object", "-w", "--stdin", input=str(sandbox.root / "pwned"))
    blob = objects("hash-object", "-w", "--stdin", input="written through the link\n")
    tree = objects("mktree", input=f"120000 blob {link}\tzz\n100644 blob {blob}\tzz\n")
    commit = objects("commit-tree", "-p", "HEAD", "-m", "malformed", tree, input="")
    proc = sandbox.push(f"{commit}:refs/heads/feature/malformed", check=False)
    assert proc.returncode == 1
    assert f"remote: error: object {tree}: duplicateEntries: contains duplicate file entries" in proc.stderr
    assert "unpack failed" in proc.stderr or "unpacker error" in proc.stderr
    assert (
        git(
            sandbox.root,
            "--git-dir",
            str(sandbox.repo),
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/heads/feature/malformed",
            check=False,
        ).returncode
        != 0
    )


def test_init_and_install_hooks_turn_on_fsck_of_pushed_objects_idempotently(short_tmp):
    repo, config = short_tmp / "r.git", short_tmp / "gitopsd.yml"
    run([*GITOPSD, "init", str(repo), "--config", str(config)])
    assert git(short_tmp, "--git-dir", str(repo), "config", "--get-all", "receive.fsckObjects").stdout == "true\n"
    run([*GITOPSD, "install-hooks", str(repo), "--config", str(config)])
    run([*GITOPSD, "init", str(repo), "--config", str(config)])
    assert git(short_tmp, "--git-dir", str(repo), "config", "--get-all", "receive.fsckObjects").stdout == "true\n"
