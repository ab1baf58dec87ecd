"""gitopsd-gate.stamp: what hooks/pre-receive decides without starting Python (issue 28).

Four lines: the config file, the environment branches, the daemon's judge socket, the identity variables.
A push of only main, feature branches and ordinary tags has nothing to judge: the shim accepts it
when the stamp names the config file and the environment branches, and has the config file's mtime
of when they were read. Any other push the shim hands to the daemon's judge (daemon/judge.py) with
the values of the identity variables named here; Python judges when the daemon does not answer.
install-hooks and the daemon write the stamp, and so does the hook after it read an edited config
itself, so the pushes that follow need no Python again. Stdlib only.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only: the hook never imports the settings' dataclasses
    from ..core.settings import Config, Repository

STAMP_FILE = "gitopsd-gate.stamp"


def shim_rule(repo: Repository | None) -> str:
    """The environment branches (space-separated) the shim checks pushes against; '' when every push needs Python:
    a repository gitopsd does not manage, one whose CI triggers and approvals need to hear who pushed main, or one
    whose own `signatures:` rule judges every commit that reaches main (gate/signatures.py)."""
    if repo is None or repo.ci.any or any(env.approvals for env in repo.environments) or repo.signatures is not None:
        return ""
    return " ".join(env.branch for env in repo.environments)


def contents(config: Config, repo: Repository | None) -> str | None:
    """The stamp of REPO under CONFIG; None for a repository gitopsd does not manage (no stamp: Python sees its pushes).

    The branches line is empty where every push needs judging (`shim_rule`); the judge line is kept even then."""
    if repo is None:
        return None
    names = " ".join(config.identity_env)
    return f"{config.source.resolve()}\n{shim_rule(repo)}\n{config.judge_socket}\n{names}\n"


def write(repo_path: str, text: str | None, mtime_ns: int) -> None:
    """Make REPO/gitopsd-gate.stamp say TEXT (`contents`) as of the config file's MTIME_NS (None: remove it).

    Written whole under a name of this process's own and renamed over the old one, so a shim (or a
    concurrent writer) only ever sees one complete stamp or none. Raise OSError when it cannot.
    """
    stamp = os.path.join(repo_path, STAMP_FILE)
    if text is None:
        try:
            os.unlink(stamp)
        except FileNotFoundError:
            pass
        return
    try:
        with open(stamp, encoding="utf-8") as handle:
            if os.fstat(handle.fileno()).st_mtime_ns == mtime_ns and handle.read() == text:
                return
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    tmp = os.path.join(repo_path, f".{STAMP_FILE}.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            os.fchmod(handle.fileno(), 0o644)  # every pusher's shim reads it, whatever the writer's umask
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, stamp)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
