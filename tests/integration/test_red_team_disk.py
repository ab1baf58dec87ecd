"""One push cannot fill the deploy server's disk: install-hooks bounds a push's size, and doctor names a repository without.

Real: `gitopsd init`/`install-hooks` as processes, a real `git push` of random bytes into the bare repository.
"""

from __future__ import annotations

import os

from gitopsd.config import load
from gitopsd.installers import doctor
from tests.support import GITOPSD, Sandbox, git, run


def test_install_hooks_bounds_the_size_of_a_push_and_keeps_an_administrators_own_bound(short_tmp):
    repo, config = short_tmp / "r.git", short_tmp / "gitopsd.yml"
    run([*GITOPSD, "init", str(repo), "--config", str(config)])
    assert git(short_tmp, "--git-dir", str(repo), "config", "receive.maxInputSize").stdout == "1g\n"
    git(short_tmp, "--git-dir", str(repo), "config", "receive.maxInputSize", "100k")
    run([*GITOPSD, "install-hooks", str(repo), "--config", str(config)])
    assert git(short_tmp, "--git-dir", str(repo), "config", "receive.maxInputSize").stdout == "100k\n"
    work = short_tmp / "work"
    git(short_tmp, "clone", "--quiet", str(repo), str(work))
    (work / "big.bin").write_bytes(os.urandom(400_000))  # random: no compression brings it under the bound
    git(work, "add", "big.bin")
    git(work, "commit", "--quiet", "-m", "a big file")
    pushed = git(work, "push", "origin", "HEAD:refs/heads/big", check=False)
    assert pushed.returncode != 0 and "pack exceeds maximum allowed size" in pushed.stderr, pushed.stderr
    assert git(short_tmp, "--git-dir", str(repo), "rev-parse", "--verify", "--quiet", "refs/heads/big", check=False).returncode


def test_doctor_names_a_repository_where_a_push_may_be_of_any_size_in_one_line(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"]})
    config = load(box.config)
    assert [f.ok for f in doctor.push_limits(config)] == [True]
    git(short_tmp, "--git-dir", str(box.repo), "config", "--unset", "receive.maxInputSize")
    (finding,) = doctor.push_limits(config)
    assert not finding.ok and "\n" not in finding.what
    assert finding.what == (
        f"{box.repo}: a push may be of any size (receive.maxInputSize is unset), enough to fill the disk of the "
        "repositories and the state folder"
    )
    assert finding.fix is not None and finding.fix.startswith(f"git --git-dir {box.repo} config receive.maxInputSize 1g")
