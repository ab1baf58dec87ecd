"""`gitopsd install-service`: the systemd unit with real paths, the service user and its folders.

It runs after `gitopsd init`: the unit's writable folders are the configured repositories (and a
state or runtime folder outside the unit's own), and the service user must be able to read the
config file. `--root DIR` installs into another root (an image being built, a temporary one in
tests); `--dry-run` only says what would be done.
"""
from __future__ import annotations

import grp
import os
import pwd
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .config import read_yaml
from .core.errors import ConfigurationError
from .gate.snapshot import DEFAULT_CONFIG
from .install_hooks import gitopsd_executable

HOME = Path("/var/lib/gitopsd")          # the unit's StateDirectory=gitopsd, also the service user's home
RUNTIME = Path("/run/gitopsd")           # the unit's RuntimeDirectory=gitopsd
# Folders the unit hides from the service: PrivateTmp=yes gives it empty ones, ProtectHome=yes none.
HIDDEN = {Path("/tmp"): "PrivateTmp=yes", Path("/var/tmp"): "PrivateTmp=yes", Path("/home"): "ProtectHome=yes",  # noqa: S108 (a mount point or a folder the unit hides, not a temporary file)
          Path("/root"): "ProtectHome=yes", Path("/run/user"): "ProtectHome=yes"}
# What a path in the unit may contain: systemd splits on spaces and expands % and \ in some places.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._+,=~@:-]*")


class InstallError(Exception):
    """install-service cannot go on: one line that says what is wrong and what to do."""


def unit_template() -> Path:
    """The unit shipped in the package (gitopsd/data/systemd), or the checkout's systemd/ folder."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "data" / "systemd", package.parent / "systemd"):
        if (candidate / "gitopsd.service").is_file():
            return candidate / "gitopsd.service"
    raise InstallError(f"the systemd unit gitopsd.service was not found in {package / 'data' / 'systemd'}: "
                       "reinstall gitopsd")


@dataclass(frozen=True)
class Step:
    """One thing install-service does, said in words and done by `apply`."""

    what: str
    argv: tuple[str, ...] = ()
    path: Path | None = None
    content: str | None = None   # write this to `path`
    mode: int = 0o644
    group: str | None = None     # give `path` to this group (looked up under the root when the step runs)


@dataclass
class Plan:
    """What install-service would do, what must be done before it can, and what will not work as the user expects."""

    steps: list[Step] = field(default_factory=list)
    first: list[str] = field(default_factory=list)      # the install refuses while any of these is left
    warnings: list[str] = field(default_factory=list)
    config: Path = Path(DEFAULT_CONFIG)                 # as the service sees it


def render_unit(executable: str, config: Path, user: str, group: str, writable: tuple[Path, ...] = (),
                template: Path | None = None) -> str:
    """The unit text: the template with this gitopsd's paths, the service user and its writable folders."""
    text = (template or unit_template()).read_text(encoding="utf-8")
    # "-": a missing folder is then check-config's clear problem, not a namespace error at start.
    text = text.replace("@WRITABLE@", " ".join(f"-{p}" for p in writable))
    for key, value in (("@GITOPSD@", executable), ("@CONFIG@", str(config)), ("@USER@", user), ("@GROUP@", group)):
        text = text.replace(key, value)
    return text


def plan(user: str, config: Path, root: Path = Path("/"), executable: str | None = None) -> Plan:
    """Return what installing the service into `root` takes; nothing is changed."""
    exe = executable or gitopsd_executable()
    result = Plan()
    if root != Path("/") and not all((root / "etc" / name).is_file() for name in ("passwd", "group")):
        result.first.append(f"{root} has no etc/passwd and etc/group: --root must be the root folder of a system "
                            "(an image being built)")
    if not config.is_absolute():
        if root != Path("/"):
            result.first.append(f"--config {config} must be an absolute path with --root (the path the service will use)")
        config = Path(os.path.abspath(config))
    result.config = config
    config_file = root / str(config).lstrip("/")
    folders = _configured_folders(config, config_file, root, result)
    if not os.path.isabs(exe):
        result.first.append(f"no gitopsd command next to this Python ({exe!r}): install gitopsd into a virtualenv, "
                            "e.g. /opt/gitopsd (README: Install)")
    programs = [Path(exe), *_interpreters(exe)]
    for path in [*programs, config, *folders]:
        hidden = next((h for h in HIDDEN if path.is_relative_to(h)), None)
        if hidden is None:
            continue
        if path in programs:
            advice = ("the service cannot start it: make the virtualenv in /opt/gitopsd with a Python outside "
                      "/tmp, /home and /root, e.g. /usr/bin/python3 (README: Install)")
        else:
            advice = "the service will not find it: keep repositories, config, state and runtime folders elsewhere"
        result.warnings.append(f"{path} lies under {hidden}, which the unit hides ({HIDDEN[hidden]}): {advice}")
    for path in [Path(exe), config, *folders]:
        if not PLAIN_PATH.fullmatch(str(path)):
            result.first.append(f"{path}: the unit can only carry paths made of letters, digits and / . _ + , = ~ @ : -; "
                                "move it or link it from such a path")

    prefix = ["--prefix", str(root)] if root != Path("/") else []
    if not _exists(user, "group", root):
        result.steps.append(Step(f"create system group {user}", ("groupadd", *prefix, "--system", user)))
    if not _exists(user, "passwd", root):
        result.steps.append(Step(f"create system user {user} (home {HOME}, no login shell)",
                                 ("useradd", *prefix, "--system", "--gid", user, "--home-dir", str(HOME),
                                  "--no-create-home", "--shell", "/usr/sbin/nologin", user)))
    unit_path = root / "etc/systemd/system/gitopsd.service"
    writable = " ".join(map(str, folders)) or "none yet"
    result.steps.append(Step(f"write {unit_path} (ExecStart={exe} run --config {config}; writable besides {HOME} "
                             f"and {RUNTIME}: {writable})",
                             path=unit_path, content=render_unit(exe, config, user, user, tuple(folders))))
    if config_file.is_file() and not _group_can_read(config_file, user, root):
        result.steps.append(Step(f"let group {user} read {config_file} (group {user}, mode 0640)",
                                 path=config_file, mode=0o640, group=user))
    return result


def _configured_folders(config: Path, config_file: Path, root: Path, result: Plan) -> list[Path]:
    """The folders the service writes besides its own: repositories (rollback commits), a state_dir or runtime_dir elsewhere.

    On this system the config is checked as `check-config` does; under another root only read,
    since its paths are that system's.
    """
    if not config_file.is_file():
        result.first.append(f"{config_file} does not exist: register a repository first with "
                            f"`gitopsd init /srv/git/NAME.git --config {config}`, then run install-service again")
        return []
    if root == Path("/"):
        from .config import ConfigError, load
        try:
            loaded = load(config_file)
        except ConfigError as exc:
            result.first.append(f"{config_file} has {len(exc.problems)} problem(s): fix what "
                                f"`gitopsd check-config --config {config}` shows, then run install-service again")
            return []
        repos, state, runtime = [r.path for r in loaded.repositories], loaded.state_dir, loaded.runtime_dir
    else:
        try:
            data = read_yaml(config_file.read_text(encoding="utf-8")) or {}
            repos = [Path(config.parent, r["path"]) for r in data.get("repositories") or []]
            state = Path(config.parent, data.get("state_dir", str(HOME)))
            runtime = Path(config.parent, data.get("runtime_dir", str(RUNTIME)))
        except (OSError, UnicodeError, ConfigurationError, AttributeError, KeyError, TypeError) as exc:
            result.first.append(f"{config_file}: cannot read the repositories' paths ({exc}); "
                                "fix it with `gitopsd check-config` on the target system")
            return []
        if not repos:
            result.first.append(f"{config_file} lists no repositories: register one first with "
                                f"`gitopsd init /srv/git/NAME.git --config {config}`, then run install-service again")
            return []
    folders = list(dict.fromkeys(Path(os.path.normpath(p)) for p in repos))
    for own, path in ((HOME, state), (RUNTIME, runtime)):
        if not Path(os.path.normpath(path)).is_relative_to(own):
            folders.append(Path(os.path.normpath(path)))
    return folders


def _interpreters(exe: str) -> list[Path]:
    """The Python a console script starts (its #! line), and where that link leads: the unit must see both."""
    try:
        with open(exe, "rb") as script:
            first = script.readline(4096)
    except OSError:
        return []
    if not first.startswith(b"#!"):
        return []
    python = Path(os.fsdecode(first[2:].split()[0])) if first[2:].split() else None
    return [python, Path(os.path.realpath(python))] if python else []


def _entry(name: str, database: str, root: Path) -> list[str] | None:
    """The fields of `name` in /etc/passwd or /etc/group (`database`) under `root`, or None."""
    if root == Path("/"):
        try:
            entry = (pwd.getpwnam if database == "passwd" else grp.getgrnam)(name)
        except KeyError:
            return None
        return [name, "x", str(entry[2])]
    path = root / "etc" / database
    if not path.is_file():
        return None
    return next((line.split(":") for line in path.read_text().splitlines() if line.split(":", 1)[0] == name), None)


def _exists(name: str, database: str, root: Path) -> bool:
    return _entry(name, database, root) is not None


def _group_can_read(path: Path, group: str, root: Path) -> bool:
    """Can members of `group` read `path`: world-readable, or group-readable and owned by that group?"""
    st = path.stat()
    entry = _entry(group, "group", root)
    return bool(st.st_mode & 0o004) or (entry is not None and st.st_gid == int(entry[2]) and bool(st.st_mode & 0o040))


def apply(steps: list[Step], root: Path = Path("/")) -> None:
    """Do the steps in order. Raise InstallError on the first that fails."""
    for step in steps:
        if step.argv:
            proc = subprocess.run(list(step.argv), capture_output=True, text=True)
            if proc.returncode != 0:
                why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                raise InstallError(f"{step.what} failed: {' '.join(step.argv)}: {why}")
        elif step.path is not None and step.content is not None:
            step.path.parent.mkdir(parents=True, exist_ok=True)
            step.path.write_text(step.content, encoding="utf-8")
            step.path.chmod(step.mode)
        elif step.path is not None and step.group is not None:
            entry = _entry(step.group, "group", root)
            if entry is None:
                raise InstallError(f"{step.what} failed: there is no group {step.group} in {root / 'etc/group'}")
            os.chown(step.path, -1, int(entry[2]))
            step.path.chmod(step.mode)


def next_commands(user: str, config: Path, again: bool) -> list[str]:
    """What to run after install-service, in order; with `again`, install-service itself first (after `first:`)."""
    return [*([f"gitopsd install-service --config {config}"] if again else []),
            "systemctl daemon-reload",
            "systemctl enable --now gitopsd",
            "journalctl -u gitopsd -f",
            f"# let git users reach the nudge socket: usermod -aG {user} git",
            f"# after `gitopsd init` of another repository: gitopsd install-service --config {config}, "
            "then systemctl daemon-reload && systemctl restart gitopsd"]
