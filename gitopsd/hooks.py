"""Server-side hooks: pre-receive (the policy gate) and post-receive (the nudge).

Runs on every push, so it imports only the standard library, PyYAML (the config) and SQLite;
never pygit2, ansible, watchdog or APScheduler. Git runs it with the bare repository as the
working directory and, in pre-receive, the pushed objects in quarantine: plain `git`
subprocesses inherit that environment and see them.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from . import gitcli, nudge
from .config import Config, ConfigError
from .config import load as load_config

HOOK_NAMES = ("pre-receive", "post-receive")
SHIM_MARK = "gitopsd hook shim"


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def branch(self) -> str | None:
        return self.ref[len("refs/heads/"):] if self.ref.startswith("refs/heads/") else None


def read_updates(stdin: TextIO) -> list[RefUpdate]:
    updates = []
    for line in stdin:
        parts = line.split()
        if len(parts) == 3:
            updates.append(RefUpdate(*parts))
    return updates


def pusher(config: Config | None) -> str:
    """Who pushed: the transport's variable (GL_USER, REMOTE_USER, ...) or the Unix user; never commit metadata."""
    names = config.identity_env if config else ("GL_USER", "GITOPSD_USER", "REMOTE_USER")
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return pwd.getpwuid(os.getuid()).pw_name


def push_option(name: str) -> str | None:
    """A push option (`git push -o name=value`); pusher-controlled, so only ever a request."""
    for i in range(int(os.environ.get("GIT_PUSH_OPTION_COUNT", "0") or 0)):
        key, _, value = os.environ.get(f"GIT_PUSH_OPTION_{i}", "").partition("=")
        if key in (name, f"gitopsd.{name}") and value.strip():
            return value.strip()[:200]
    return None


def _load(config_path: Path | None) -> Config:
    return load_config(config_path or Path(os.environ.get("GITOPSD_CONFIG", "/etc/gitopsd/gitopsd.yml")))


def pre_receive(config_path: Path | None, stdin: TextIO = sys.stdin, out: TextIO = sys.stderr) -> int:
    """Refuse the whole push if any environment-branch update breaks the policy."""
    updates = read_updates(stdin)
    try:
        config = _load(config_path)
    except ConfigError as exc:
        print("\ngitopsd: push refused: the deploy server's gitopsd configuration is invalid, so environment\n"
              "branches cannot be checked. Ask an operator to run `gitopsd check-config`:", file=out)
        for problem in exc.problems[:5]:
            print(f"  {problem}", file=out)
        return 1
    repo_path = Path.cwd()
    repo = config.repository_at(repo_path)
    if repo is None:
        return 0
    from . import policy          # only pre-receive needs the policy and the store
    from .state import Store
    store = Store(config.database, readonly=True)
    identity = pusher(config)
    refused = False
    pending = {u.branch: u.new for u in updates if u.branch and u.new != gitcli.ZERO}
    for update in updates:
        env = repo.environment_for_branch(update.branch) if update.branch else None
        if env is None:
            continue  # not an environment branch: feature branches belong to the developers
        verdict = policy.judge(repo, repo_path, store, env, update.old, update.new, identity=identity,
                               override_reason=push_option("override"), pending=pending)
        if not verdict.accepted:
            refused = True
            print("\n".join(verdict.refusal_lines(update.ref)), file=out)
        elif verdict.override:
            print(f"gitopsd: {env.name}: {verdict.override} (recorded)", file=out)
    return 1 if refused else 0


def post_receive(config_path: Path | None, stdin: TextIO = sys.stdin, out: TextIO = sys.stderr) -> int:
    """Nudge the daemon about what landed and return at once. Never fails the push."""
    updates = read_updates(stdin)
    try:
        config = _load(config_path)
        repo = config.repository_at(Path.cwd())
        if repo is None:
            return 0
        landed = [u for u in updates if u.branch and repo.environment_for_branch(u.branch) and u.new != gitcli.ZERO]
        if not landed:
            return 0
        override = push_option("override")
        sent = nudge.send(config.nudge_socket, nudge.Nudge(
            repo=str(Path.cwd()), trigger="push", actor=pusher(config), commits=tuple(u.new for u in landed),
            reason=f"emergency override by {pusher(config)}: {override}" if override else None))
        names = ", ".join(sorted(u.branch or "" for u in landed))
        if sent:
            print(f"gitopsd: {names} will be deployed now; follow it with `gitopsd status`", file=out)
        else:
            print(f"gitopsd: the daemon is not running; {names} will be deployed when it is back", file=out)
    except Exception as exc:  # a nudge is a courtesy: the sweep converges anyway
        print(f"gitopsd: could not notify the daemon ({exc}); the periodic sweep will pick this push up", file=out)
    return 0


# -- installing the shims ----------------------------------------------------------------------------

def shim_source() -> Path:
    """The static hook shims shipped in the project's hooks/ folder."""
    for candidate in (Path(__file__).resolve().parent.parent / "hooks", Path(sys.prefix) / "share" / "gitopsd" / "hooks"):
        if (candidate / "pre-receive").is_file():
            return candidate
    raise FileNotFoundError("the gitopsd hook shims (hooks/pre-receive) were not found next to the package")


def gitopsd_executable() -> str:
    found = shutil.which("gitopsd")
    local = Path(sys.executable).parent / "gitopsd"
    return str(local) if local.exists() else (found or "gitopsd")


def install_hooks(repo_path: Path, config_path: Path | None = None) -> list[str]:
    """Install the shims into REPO/hooks idempotently; keep a foreign hook as `<name>.chained`. Return what was done."""
    hooks_dir = repo_path / "hooks"
    if not (repo_path / "objects").is_dir():
        raise FileNotFoundError(f"{repo_path} is not a bare Git repository")
    hooks_dir.mkdir(exist_ok=True)
    done = []
    source = shim_source()
    for name in HOOK_NAMES:
        target = hooks_dir / name
        shim = (source / name).read_text(encoding="utf-8")
        if target.exists() or target.is_symlink():
            current = target.read_text(encoding="utf-8", errors="replace") if target.is_file() else ""
            if current == shim:
                done.append(f"{name}: already installed")
                continue
            if SHIM_MARK not in current:
                chained = hooks_dir / f"{name}.chained"
                if chained.exists():
                    raise FileExistsError(f"{target} exists and so does {chained}; merge them by hand first")
                target.rename(chained)
                done.append(f"{name}: existing hook kept as {chained.name}, runs before gitopsd's")
        tmp = hooks_dir / f".{name}.gitopsd-tmp"
        tmp.write_text(shim, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, target)
        done.append(f"{name}: installed")
    # The shims read these two settings; nothing in a hook file is generated.
    subprocess.run(["git", "-C", str(repo_path), "config", "gitopsd.executable", gitopsd_executable()], check=True)
    # Push options (`git push -o override=...`) reach the hooks only when advertised.
    subprocess.run(["git", "-C", str(repo_path), "config", "receive.advertisePushOptions", "true"], check=True)
    if config_path is not None:
        subprocess.run(["git", "-C", str(repo_path), "config", "gitopsd.config", str(Path(config_path).resolve())],
                       check=True)
    return done
