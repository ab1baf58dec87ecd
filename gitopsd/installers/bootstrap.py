"""`gitopsd init`: create or adopt a deployment repository, its environment branches, hooks and config entry."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

from ..base import gitcli
from ..config import add_repository, repository_entry
from ..core.errors import UserError
from ..gate.snapshot import DEFAULT_CONFIG
from . import install_hooks

SAMPLE_PARTS = ("app", "playbooks", "environments")


def sample_root() -> Path:
    """The folder holding the sample: shipped in the package (gitopsd/data/sample), or the checkout itself."""
    package = Path(__file__).resolve().parent.parent  # gitopsd/, where data/ is
    for root in (package / "data" / "sample", package.parent):
        if all((root / part).is_dir() for part in SAMPLE_PARTS):
            return root
    raise FileNotFoundError(
        f"the sample content ({', '.join(SAMPLE_PARTS)}) was not found in {package / 'data' / 'sample'}: reinstall gitopsd"
    )


def seed_main(repo: Path, source: Path, message: str = "Sample app and Ansible content from gitopsd") -> str:
    """Commit the sample content as the first commit of main; return its id."""
    with tempfile.TemporaryDirectory(prefix="gitopsd-seed-") as tmp:
        work = Path(tmp) / "tree"
        work.mkdir()
        for part in SAMPLE_PARTS:
            shutil.copytree(source / part, work / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        tree = gitcli.write_tree_of(repo, work, str(Path(tmp) / "index"))
    commit = gitcli.commit_tree(repo, tree, [], message + "\n")
    if not gitcli.create_branch(repo, "main", commit, "gitopsd init --sample"):
        raise UserError("main appeared while it was being seeded; nothing was overwritten: run gitopsd init again")
    return commit


def trust_in_this_process(repo: Path) -> None:
    """Let this process's git open REPO when another user (the git user) owns it: as root, `init` adopts such a one."""
    count = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    os.environ.update(
        {"GIT_CONFIG_COUNT": str(count + 1), f"GIT_CONFIG_KEY_{count}": "safe.directory", f"GIT_CONFIG_VALUE_{count}": str(repo)}
    )


def init_repository(
    repo: Path,
    config_path: Path,
    *,
    name: str | None = None,
    sample: bool = False,
    git_user: str | None = None,
    service_user: str | None = None,
) -> list[str]:
    """Create or adopt REPO; return the lines to print, ending with the next steps. Raise ConfigEditError, HookError."""
    repo = repo.resolve()
    out = []
    if not repo.exists():
        gitcli.init_bare(repo)
        out.append(f"created bare repository {repo}")
    elif not (repo / "objects").is_dir() or not (repo / "HEAD").is_file():
        raise UserError(f"{repo} exists but is not a bare Git repository")
    else:
        out.append(f"adopted existing repository {repo}")
    if repo.stat().st_uid != os.geteuid():
        trust_in_this_process(repo)
    main = gitcli.branch_head(repo, "main")
    if main is None and sample:
        main = seed_main(repo, sample_root())
        out.append(f"seeded main with the sample app and Ansible content ({main[:7]})")
    repo_name = name or repo.name.removesuffix(".git")
    entry = repository_entry(repo_name, repo)
    first = entry["environments"][0]["name"]
    if main is not None:
        for env, source in ((e["name"], e["promote_from"]) for e in entry["environments"]):
            if gitcli.branch_head(repo, env) is not None:
                continue
            if env == first:  # it takes commits from main: main is what it deploys first
                gitcli.create_branch(repo, env, main, "gitopsd init")
                out.append(f"created branch {env} at main ({main[:7]})")
                continue
            # Not at main: once the first environment has run main's tree, a branch with that tree would
            # pass the promotion rule and deploy unpromoted. An empty placeholder passes nothing.
            placeholder = waiting_commit(repo, env, source)
            gitcli.create_branch(repo, env, placeholder, "gitopsd init")
            out.append(
                f"created branch {env} at an empty placeholder ({placeholder[:7]}): nothing is deployed to "
                f"{env} until its first promotion from {source}"
            )
    else:
        out.append(
            "main does not exist yet: push your content to main, then run `gitopsd init` again to create "
            "the environment branches (or use --sample)"
        )
    service = install_hooks.daemon_user(service_user, config_path if config_path.exists() else None)
    group = pwd.getpwnam(service).pw_gid if service and os.geteuid() == 0 else None
    if add_repository(
        config_path,
        entry,
        defaults={"state_dir": "/var/lib/gitopsd", "runtime_dir": "/run/gitopsd", "sweep_interval": 60},
        new_file_group=group,
    ):
        out.append(f"added repository {repo_name!r} to {config_path}")
    else:
        out.append(f"{config_path} already has a repository named {repo_name!r}; left it as it is")
    # After the config names the repository; as root, also gives it to the git user and the daemon's group.
    out += install_hooks.install_hooks(repo, config_path, git_user=git_user, service_user=service_user)
    return out + next_steps(repo, config_path, install_hooks.pushing_user(repo, git_user), service)


def waiting_commit(repo: Path, env: str, source: str) -> str:
    """A parentless commit with the empty tree: where a new environment branch waits for its first promotion."""
    empty = gitcli.empty_tree(repo)
    return gitcli.commit_tree(
        repo,
        empty,
        [],
        f"gitopsd init: {env} waits for its first promotion\n\n"
        f"Nothing is deployed to {env} until what {source} runs is promoted "
        f"here (gitopsd promote {source} {env}).\n",
    )


def server_name() -> str:
    """This machine's name for a clone URL: its fully qualified name where it has one, else its host name."""
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def next_steps(repo: Path, config_path: Path, pusher: str | None, service: str | None) -> list[str]:
    """What to run next, in order; each works as printed (a test follows them)."""
    exe = install_hooks.gitopsd_executable()
    cfg = "" if config_path.resolve() == Path(DEFAULT_CONFIG) else f" --config {config_path.resolve()}"
    remote = pusher not in (None, "root") and pwd.getpwuid(os.geteuid()).pw_name != pusher
    host = server_name()
    url = f"{pusher}@{host}:{repo}" if remote else str(repo)
    steps = [
        "",
        "next steps:",
        f"  {exe} check-config{cfg}",
        f"  {exe} doctor{cfg}{f' --git-user {pusher}' if pusher else ''}"
        f"{f' --service-user {service}' if service else ''}       # permissions, hook, sandbox",
        f"  {exe} run{cfg}        # or as a service: {exe} install-service{cfg}",
    ]
    if service is None:
        steps.append(
            f"  {exe} install-hooks {repo}{cfg}   # again as root once the service user exists (after "
            "install-service): sets up the permissions (docs/install.md, Permissions)"
        )
    if remote and os.geteuid() == 0:
        steps.append(
            f"  git config --global --add safe.directory {repo}   # once: lets root's git (and so gitopsd "
            f"promote, rollback, status as root) open a repository {pusher} owns"
        )
    steps += [
        f"  git clone {url} && cd {repo.name.removesuffix('.git')}"
        + (f"   # {host}: this server's name as it knows it; use the one your clones reach it by" if remote else ""),
        "  # change something on main, commit, then push it and deploy it to qa (qa takes commits from main):",
        "  git push origin main main:qa",
        "  # once qa is in sync, promote exactly what it runs; staging, then production, wait for this:",
        f"  {exe} promote qa staging{cfg}",
        f"  {exe} status{cfg}",
    ]
    return steps
