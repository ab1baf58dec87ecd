"""Installing gitopsd as a team would: a wheel built from this checkout, installed (not editable)
into a fresh virtualenv made by the system's Python, then used from there with no checkout in sight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dist import build_dist
from tests.support import git, run


def system_python() -> str:
    """Debian's python3 when it is 3.11+, as docs/install.md's Install section uses; else the one running the tests."""
    probe = (
        subprocess.run(
            ["/usr/bin/python3", "-c", "import sys, venv; print(sys.version_info >= (3, 11))"], capture_output=True, text=True
        )
        if Path("/usr/bin/python3").exists()
        else None
    )
    return "/usr/bin/python3" if probe and probe.stdout.strip() == "True" else sys._base_executable


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_wheel_installed_into_a_fresh_virtualenv_inits_a_sample_repository_whose_hook_judges_a_real_push(tmp_path):
    _sdist, wheel = build_dist()  # the release's wheel (from its sdist), built once per test run
    venv = tmp_path / "opt" / "gitopsd"
    run([system_python(), "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)], timeout=180)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GITOPSD_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(
        GIT_AUTHOR_NAME="Ops",
        GIT_AUTHOR_EMAIL="ops@example.com",
        GIT_COMMITTER_NAME="Ops",
        GIT_COMMITTER_EMAIL="ops@example.com",
        PATH=f"{venv / 'bin'}:/usr/bin:/bin",
    )
    gitopsd = str(venv / "bin" / "gitopsd")
    package = Path(
        run([str(venv / "bin" / "python"), "-c", "import gitopsd; print(gitopsd.__file__)"], cwd=tmp_path, env=env).stdout.strip()
    ).parent
    assert package.is_relative_to(venv)
    # The sandbox refuses to start a helper without its executable bit.
    assert os.access(package / "libexec" / "sandboxed-ansible-playbook", os.X_OK)

    config = tmp_path / "etc" / "gitopsd.yml"
    config.parent.mkdir()
    config.write_text(f"state_dir: {tmp_path / 'state'}\nruntime_dir: {tmp_path / 'run'}\n")
    repo = tmp_path / "srv" / "shop.git"
    out = run([gitopsd, "init", str(repo), "--config", str(config), "--sample"], cwd=tmp_path, env=env).stdout
    assert "seeded main with the sample app and Ansible content" in out and "hooks/pre-receive: installed" in out
    tree = git(tmp_path, "--git-dir", str(repo), "ls-tree", "-r", "--name-only", "main").stdout.split()
    assert {"app/app.py", "playbooks/deploy.yml", "environments/production/hosts.yml"} <= set(tree)
    assert not [name for name in tree if "__pycache__" in name or name.endswith(".pyc")]
    hook_python = git(tmp_path, "--git-dir", str(repo), "config", "gitopsd.python").stdout.strip()
    hook_entry = git(tmp_path, "--git-dir", str(repo), "config", "gitopsd.entry").stdout.strip()
    assert Path(hook_python).parent == venv / "bin" and Path(hook_entry).is_relative_to(package)

    assert (
        "ok (1 repository, 3 environments)"
        in run([gitopsd, "check-config", "--config", str(config)], cwd=tmp_path, env=env).stdout
    )
    dry = run([gitopsd, "install-service", "--dry-run", "--config", str(config)], cwd=tmp_path, env=env)
    assert (
        f"write /etc/systemd/system/gitopsd.service (ExecStart={gitopsd} run --config {config}; "
        f"writable besides {tmp_path / 'state'} and {tmp_path / 'run'}: {repo} {tmp_path / 'state'} {tmp_path / 'run'})"
        in dry.stdout
    )
    assert f"gitopsd: warning: {gitopsd} lies under /tmp, which the unit hides (PrivateTmp=yes)" in dry.stderr

    # A real push through the installed hook: main and qa are accepted, production is judged and refused.
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", str(repo), str(work))
    (work / "app" / "settings.json").write_text('{"greeting": "installed from a wheel"}\n')
    git(work, "commit", "--quiet", "-am", "change the greeting")
    run(["git", "push", "--quiet", "origin", "main", "main:qa"], cwd=work, env=env)
    # production waits at init's placeholder for its first promotion: only a forced push could replace it.
    refused = run(["git", "push", "--force", "origin", "main:production"], cwd=work, env=env, check=False)
    assert refused.returncode != 0 and "pre-receive hook declined" in refused.stderr, refused.stderr
    assert "remote:   rule: production waits for its first promotion" in refused.stderr
    assert "gitopsd promote staging production --repo shop" in refused.stderr
