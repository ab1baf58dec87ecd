"""`gitopsd install-service`: the systemd unit with real paths, the service user and its folders.

`--root DIR` installs into another root (a temporary one in tests, an image being built);
`--dry-run` only says what would be done.
"""
from __future__ import annotations

import grp
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .hooks import gitopsd_executable

UNIT_TEMPLATE = Path(__file__).resolve().parent.parent / "systemd" / "gitopsd.service"


@dataclass(frozen=True)
class Step:
    """One thing install-service does, said in words and done by `apply`."""

    what: str
    argv: tuple[str, ...] = ()
    path: Path | None = None
    content: str | None = None
    mode: int = 0o644


def render_unit(executable: str, config: Path, user: str, group: str, template: Path = UNIT_TEMPLATE) -> str:
    text = template.read_text(encoding="utf-8")
    for key, value in (("@GITOPSD@", executable), ("@CONFIG@", str(config)), ("@USER@", user), ("@GROUP@", group)):
        text = text.replace(key, value)
    return text


def _exists(name: str, database: str, root: Path) -> bool:
    """Is there an entry `name` in /etc/passwd or /etc/group (`database`) under `root`?"""
    if root == Path("/"):
        try:
            (pwd.getpwnam if database == "passwd" else grp.getgrnam)(name)
            return True
        except KeyError:
            return False
    path = root / "etc" / database
    return path.exists() and any(line.split(":", 1)[0] == name for line in path.read_text().splitlines())


def plan(user: str, config: Path, root: Path = Path("/"), executable: str | None = None) -> list[Step]:
    """Return the steps that install the service; nothing is changed."""
    exe = executable or gitopsd_executable()
    prefix = ["--prefix", str(root)] if root != Path("/") else []
    steps = []
    if not _exists(user, "group", root):
        steps.append(Step(f"create system group {user}", ("groupadd", *prefix, "--system", user)))
    if not _exists(user, "passwd", root):
        steps.append(Step(f"create system user {user} (home /var/lib/gitopsd, no login shell)",
                          ("useradd", *prefix, "--system", "--gid", user, "--home-dir", "/var/lib/gitopsd",
                           "--no-create-home", "--shell", "/usr/sbin/nologin", user)))
    unit = render_unit(exe, config, user, user)
    unit_path = root / "etc/systemd/system/gitopsd.service"
    steps.append(Step(f"write {unit_path} (ExecStart={exe} run --config {config})", path=unit_path, content=unit))
    config_path = root / str(config).lstrip("/")
    if not config_path.exists():
        steps.append(Step(f"write a starter {config_path} (add repositories with `gitopsd init REPO --config {config}`)",
                          path=config_path, content=STARTER_CONFIG, mode=0o640))
    return steps


STARTER_CONFIG = """\
# gitopsd server configuration. Add repositories with:
#   gitopsd init /srv/git/NAME.git --config /etc/gitopsd/gitopsd.yml
state_dir: /var/lib/gitopsd
runtime_dir: /run/gitopsd
sweep_interval: 60
repositories: []
"""


def apply(steps: list[Step]) -> None:
    for step in steps:
        if step.argv:
            subprocess.run(list(step.argv), check=True)
        elif step.path is not None and step.content is not None:
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.path.write_text(step.content, encoding="utf-8")
            step.path.chmod(step.mode)


def next_commands(user: str) -> list[str]:
    return ["systemctl daemon-reload",
            "systemctl enable --now gitopsd",
            "journalctl -u gitopsd -f",
            f"# let git users reach the nudge socket: usermod -aG {user} git"]
