"""`gitopsd init`: create or adopt a deployment repository, its environment branches, hooks and config entry."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import gitcli, hooks
from .config import DEFAULT_ENVIRONMENTS, add_repository, repository_entry

SAMPLE_PARTS = ("app", "playbooks", "environments")


def sample_root() -> Path:
    """The folder holding the sample: shipped in the package (gitopsd/data/sample), or the checkout itself."""
    package = Path(__file__).resolve().parent
    for root in (package / "data" / "sample", package.parent):
        if all((root / part).is_dir() for part in SAMPLE_PARTS):
            return root
    raise FileNotFoundError(f"the sample content ({', '.join(SAMPLE_PARTS)}) was not found in "
                            f"{package / 'data' / 'sample'}: reinstall gitopsd")


def seed_main(repo: Path, source: Path, message: str = "Sample app and Ansible content from gitopsd") -> str:
    """Commit the sample content as the first commit of main; return its id."""
    with tempfile.TemporaryDirectory(prefix="gitopsd-seed-") as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        for part in SAMPLE_PARTS:
            shutil.copytree(source / part, work / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        subprocess.run(["git", f"--git-dir={repo}", f"--work-tree={work}", "add", "-A", "."], env=env, check=True,
                       capture_output=True)
        tree = subprocess.run(["git", f"--git-dir={repo}", "write-tree"], env=env, check=True, capture_output=True,
                              text=True).stdout.strip()
    commit = gitcli.commit_tree(repo, tree, [], message + "\n")
    if not gitcli.create_branch(repo, "main", commit, "gitopsd init --sample"):
        raise RuntimeError("main appeared while it was being seeded; nothing was overwritten")
    return commit


def init_repository(repo: Path, config_path: Path, *, name: str | None = None, sample: bool = False) -> list[str]:
    """Create or adopt REPO; return the lines to print, ending with the next steps."""
    repo = repo.resolve()
    out = []
    if not repo.exists():
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(repo)], check=True)
        out.append(f"created bare repository {repo}")
    elif not (repo / "objects").is_dir() or not (repo / "HEAD").is_file():
        raise SystemExit(f"gitopsd: error: {repo} exists but is not a bare Git repository")
    else:
        out.append(f"adopted existing repository {repo}")
    main = gitcli.branch_head(repo, "main")
    if main is None and sample:
        main = seed_main(repo, sample_root())
        out.append(f"seeded main with the sample app and Ansible content ({main[:7]})")
    repo_name = name or repo.name.removesuffix(".git")
    entry = repository_entry(repo_name, repo)
    if main is not None:
        for env in DEFAULT_ENVIRONMENTS:
            if gitcli.branch_head(repo, env) is None:
                gitcli.create_branch(repo, env, main, "gitopsd init")
                out.append(f"created branch {env} at main ({main[:7]})")
    else:
        out.append("main does not exist yet: push your content to main, then run `gitopsd init` again to create "
                   "the environment branches (or use --sample)")
    if add_repository(config_path, entry, defaults={"state_dir": "/var/lib/gitopsd", "runtime_dir": "/run/gitopsd",
                                                     "sweep_interval": 60}):
        out.append(f"added repository {repo_name!r} to {config_path}")
    else:
        out.append(f"{config_path} already has a repository named {repo_name!r}; left it as it is")
    for line in hooks.install_hooks(repo, config_path):   # after the config names the repository
        out.append(line)
    out += ["", "next steps:",
            f"  gitopsd check-config --config {config_path}",
            f"  gitopsd run --config {config_path}        # or install it as a service",
            f"  git clone {repo} && cd {repo.name.removesuffix('.git')}",
            "  # change something on main, push it, then promote: git push origin main:qa",
            f"  gitopsd status --config {config_path}"]
    return out
