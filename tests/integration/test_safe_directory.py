"""safe.directory in the service user's ~/.gitconfig: gitopsd adds entries for configured repositories only,
once each, and removes the entries it added (and only those) when their repository leaves the config.

Real: the users gt-sd-git (owns the repositories) and gt-sd-svc (the daemon's user, with its home in a
temp folder, so its ~/.gitconfig is a file of this test) created here and removed afterwards;
`gitopsd install-hooks` as root; the daemon as a process whose HOME is that home.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import GITOPSD, Daemon, Sandbox, git, run, service_users

GIT_USER, SVC_USER, GROUP = "gt-sd-git", "gt-sd-svc", "gt-sd"
PERSONS_OWN = "/srv/someone/elses.git"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("useradd", "groupadd", "userdel")),
    reason="real Unix users need root, useradd and groupadd",
)


@pytest.fixture
def users() -> Iterator[Path]:
    """The two users; return the service user's home, whose ~/.gitconfig already has a person's own entry."""
    base = Path(tempfile.mkdtemp(prefix="gt-sd-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with service_users(base, GIT_USER, SVC_USER, GROUP):
            home = base / "home-svc"
            (home / ".gitconfig").write_text(f"[safe]\n\tdirectory = {PERSONS_OWN}\n")
            shutil.chown(home / ".gitconfig", SVC_USER, GROUP)
            yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


def entries(home: Path) -> list[str]:
    return run(
        ["git", "config", "--file", str(home / ".gitconfig"), "--get-all", "safe.directory"], check=False
    ).stdout.splitlines()


def bare(path: Path) -> Path:
    git(path.parent, "init", "-q", "--bare", "--initial-branch=main", str(path))
    return path


def write_config(config: Path, root: Path, *repos: Path) -> None:
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(root / "state"),
                "runtime_dir": str(root / "run"),
                "repositories": [
                    {"name": repo.name.removesuffix(".git"), "path": str(repo), "environments": [{"name": "qa"}]}
                    for repo in repos
                ],
            }
        )
    )


def install_hooks(root: Path, config: Path, repo: Path | str) -> str:
    proc = run(
        [*GITOPSD, "install-hooks", str(repo), "--config", str(config), "--git-user", GIT_USER, "--service-user", SVC_USER],
        env={**os.environ, "HOME": str(root)},
    )
    return proc.stdout


def test_install_hooks_trusts_configured_repositories_once_and_removes_only_its_own_entries_when_they_leave(users, short_tmp):
    home = users
    shop, blog, scratch = bare(short_tmp / "shop.git"), bare(short_tmp / "blog.git"), bare(short_tmp / "scratch.git")
    (short_tmp / "link.git").symlink_to(shop)
    run(["git", "config", "--file", str(home / ".gitconfig"), "--add", "safe.directory", str(blog)])  # a person's
    config = short_tmp / "gitopsd.yml"
    write_config(config, short_tmp, shop, blog)

    assert f"safe.directory: {shop} added to {home / '.gitconfig'}" in install_hooks(short_tmp, config, shop)
    install_hooks(short_tmp, config, shop)
    install_hooks(short_tmp, config, short_tmp / "link.git")  # the same repository by another path
    assert f"{SVC_USER} already trusts {blog}" in install_hooks(short_tmp, config, blog)
    said = install_hooks(short_tmp, config, scratch)
    assert f"safe.directory: not set for {SVC_USER}: {scratch} is not a repository of {config}" in said
    assert entries(home) == [PERSONS_OWN, str(blog), str(shop)]
    assert (home / ".gitconfig").stat().st_uid == (home / ".gitopsd-safe-directories").stat().st_uid == home.stat().st_uid

    write_config(config, short_tmp, blog)  # shop leaves the config; blog's entry was never gitopsd's
    said = install_hooks(short_tmp, config, blog)
    assert f"removed the entries gitopsd had added for {shop} (not in the config any more)" in said
    assert entries(home) == [PERSONS_OWN, str(blog)]
    write_config(config, short_tmp)
    install_hooks(short_tmp, config, blog)
    assert entries(home) == [PERSONS_OWN, str(blog)], "a person's entries stay"


def test_the_daemon_at_start_removes_the_entries_gitopsd_added_for_repositories_that_left_its_config(users, short_tmp):
    home = users
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]}, converged=True)  # the daemon's start is the subject
    blog = bare(short_tmp / "blog.git")
    shop_entry = yaml.safe_load(sandbox.config.read_text())["repositories"][0]
    sandbox.write_config(repositories=[shop_entry, {"name": "blog", "path": str(blog), "environments": [{"name": "qa"}]}])
    install_hooks(short_tmp, sandbox.config, blog)
    assert entries(home) == [PERSONS_OWN, str(blog)]
    sandbox.write_config()  # blog leaves the config
    with Daemon(sandbox, HOME=str(home)) as daemon:
        daemon.wait_for(lambda: "safe.directory entries removed" in daemon.log(), what="the tidy-up")
    assert f"safe.directory entries removed (not in the config any more): {blog}" in daemon.log()
    assert entries(home) == [PERSONS_OWN]
    assert not (home / ".gitopsd-safe-directories").exists()
    assert (home / ".gitconfig").stat().st_uid == home.stat().st_uid
