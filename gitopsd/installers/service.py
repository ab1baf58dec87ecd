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
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..config import read_yaml
from ..core.errors import ConfigurationError
from ..core.words import plural
from ..gate.snapshot import DEFAULT_CONFIG
from .install_hooks import gitopsd_executable

HOME = Path("/var/lib/gitopsd")  # the unit's StateDirectory=gitopsd, also the service user's home
RUNTIME = Path("/run/gitopsd")  # the unit's RuntimeDirectory=gitopsd
DEFAULT_USER = DEFAULT_UNIT = "gitopsd"
# Folders the unit hides from the service: PrivateTmp=yes gives it empty ones, ProtectHome=yes none.
HIDDEN = {
    Path("/tmp"): "PrivateTmp=yes",  # noqa: S108 (a folder the unit hides, not a temporary file)
    Path("/var/tmp"): "PrivateTmp=yes",  # noqa: S108 (a mount point or a folder the unit hides, not a temporary file)
    Path("/home"): "ProtectHome=yes",
    Path("/root"): "ProtectHome=yes",
    Path("/run/user"): "ProtectHome=yes",
}
# What a path in the unit may contain: systemd splits on spaces and expands % and \ in some places.
PLAIN_PATH = re.compile(r"/[A-Za-z0-9/._+,=~@:-]*")
UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The programs the steps run that a minimal system may lack: what each is for, and its Debian package.
PROGRAMS = {
    "openssl": ("makes the service's provenance key with it", "openssl"),
    "ssh-keygen": ("makes the service's SSH signing key with it", "openssh-client"),
    "useradd": ("creates the service user with it", "passwd"),
    "groupadd": ("creates the service's group with it", "passwd"),
}


class InstallError(Exception):
    """install-service cannot go on: one line that says what is wrong and what to do."""


def unit_template() -> Path:
    """The unit shipped in the package (gitopsd/data/systemd), or the checkout's systemd/ folder."""
    package = Path(__file__).resolve().parent.parent  # gitopsd/, where data/ is
    for candidate in (package / "data" / "systemd", package.parent / "systemd"):
        if (candidate / "gitopsd.service").is_file():
            return candidate / "gitopsd.service"
    raise InstallError(f"the systemd unit gitopsd.service was not found in {package / 'data' / 'systemd'}: reinstall gitopsd")


@dataclass(frozen=True)
class Step:
    """One thing install-service does, said in words and done by `apply`."""

    what: str
    argv: tuple[str, ...] = ()
    path: Path | None = None
    content: str | None = None  # write this to `path`
    mode: int = 0o644
    group: str | None = None  # give `path` to this group (looked up under the root when the step runs)
    owner: str | None = None  # make the folder `path` (mode `mode`) and give it and all in it to this user


@dataclass
class Plan:
    """What install-service would do, what must be done before it can, and what will not work as the user expects."""

    steps: list[Step] = field(default_factory=list)
    first: list[str] = field(default_factory=list)  # the install refuses while any of these is left
    warnings: list[str] = field(default_factory=list)
    config: Path = Path(DEFAULT_CONFIG)  # as the service sees it
    pushers: list[str] = field(default_factory=list)  # who owns the configured repositories (init --git-user), not root


def render_unit(  # noqa: PLR0913 (the unit's values, each filled in as given)
    executable: str,
    config: Path,
    user: str,
    group: str,
    writable: tuple[Path, ...] = (),
    template: Path | None = None,
    state: Path = HOME,
    runtime: Path = RUNTIME,
    unit: str = "gitopsd",
) -> str:
    """The unit text: the template with this gitopsd's paths, the service user, its state, runtime and writable folders."""
    text = (template or unit_template()).read_text(encoding="utf-8")
    # "-": a missing folder is then check-config's clear problem, not a namespace error at start.
    text = text.replace("@WRITABLE@", " ".join(f"-{p}" for p in writable))
    # systemd makes (and gives to User=) the folders under /var/lib and /run the config names, never another
    # service's /var/lib/gitopsd; /run is emptied at boot, so nothing else would make the runtime folder.
    # So is the config's folder under /etc: a second instance's /etc/other, never an empty /etc/gitopsd.
    folders = (("@STATE_DIRECTORY@", state, "/var/lib"), ("@RUNTIME_DIRECTORY@", runtime, "/run"))
    for key, folder, base in (*folders, ("@CONFIGURATION_DIRECTORY@", config.parent, "/etc")):
        text = text.replace(key, str(folder.relative_to(base)) if folder.is_relative_to(base) and folder != Path(base) else "")
    for key, value in (
        ("@GITOPSD@", executable),
        ("@CONFIG@", str(config)),
        ("@USER@", user),
        ("@GROUP@", group),
        ("@STATE@", str(state)),
        ("@RUNTIME@", str(runtime)),
        ("@UNIT@", unit),
    ):
        text = text.replace(key, value)
    return text


def plan(  # noqa: C901 (install-service's plan: one branch per step it may skip)
    user: str, config: Path, root: Path = Path("/"), executable: str | None = None, unit: str = "gitopsd"
) -> Plan:
    """Return what installing the service into `root` as the unit UNIT takes; nothing is changed."""
    exe = executable or gitopsd_executable()
    result = Plan()
    if not UNIT_NAME.fullmatch(unit) or unit.endswith(".service"):
        result.first.append(f"--unit {unit!r}: a unit name is letters, digits and _ . - (e.g. gitopsd-shop), without .service")
        unit = "gitopsd"
    if root != Path("/") and not all((root / "etc" / name).is_file() for name in ("passwd", "group")):
        result.first.append(
            f"{root} has no etc/passwd and etc/group: --root must be the root folder of a system (an image being built)"
        )
    if not config.is_absolute():
        if root != Path("/"):
            result.first.append(f"--config {config} must be an absolute path with --root (the path the service will use)")
        config = Path(os.path.abspath(config))
    result.config = config
    config_file = root / str(config).lstrip("/")
    folders = _configured_folders(config, config_file, root, result)
    if not os.path.isabs(exe):
        result.first.append(
            f"no gitopsd command next to this Python ({exe!r}): install gitopsd into a virtualenv, "
            "e.g. /opt/gitopsd (docs/install.md)"
        )
    programs = [Path(exe), *_interpreters(exe)]
    for path in [*programs, config, *folders]:
        hidden = next((h for h in HIDDEN if path.is_relative_to(h)), None)
        if hidden is None:
            continue
        if path in programs:
            advice = (
                "the service cannot start it: make the virtualenv in /opt/gitopsd with a Python outside "
                "/tmp, /home and /root, e.g. /usr/bin/python3 (docs/install.md)"
            )
        else:
            advice = "the service will not find it: keep repositories, config, state and runtime folders elsewhere"
        result.warnings.append(f"{path} lies under {hidden}, which the unit hides ({HIDDEN[hidden]}): {advice}")
    for path in [Path(exe), config, *folders]:
        if not PLAIN_PATH.fullmatch(str(path)):
            result.first.append(
                f"{path}: the unit can only carry paths made of letters, digits and / . _ + , = ~ @ : -; "
                "move it or link it from such a path"
            )

    prefix = ["--prefix", str(root)] if root != Path("/") else []
    if not _exists(user, "group", root):
        result.steps.append(Step(f"create system group {user}", ("groupadd", *prefix, "--system", user)))
    # The service user's home is its state folder: its ~/.ssh and ~/.gitconfig live there (ProtectHome=yes).
    home = _state_folder(config, config_file)
    runtime = _state_folder(config, config_file, "runtime_dir", RUNTIME)
    if not _exists(user, "passwd", root):
        result.steps.append(
            Step(
                f"create system user {user} (home {home}, no login shell)",
                (
                    "useradd",
                    *prefix,
                    "--system",
                    "--gid",
                    user,
                    "--home-dir",
                    str(home),
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ),
            )
        )
    unit_path = root / "etc/systemd/system" / f"{unit}.service"
    writable = " ".join(map(str, folders)) or "none yet"
    result.steps.append(
        Step(
            f"write {unit_path} (ExecStart={exe} run --config {config}; writable besides {home} and {runtime}: {writable})",
            path=unit_path,
            content=render_unit(exe, config, user, user, tuple(folders), state=home, runtime=runtime, unit=unit),
        )
    )
    # The files the daemon reads as its user: the config and the API's tokens file, its group's with group read
    # (`token create` keeps that group); world-readable is not enough for a tokens file created later.
    tokens = _tokens_path(config_file, root)
    for path in (p for p in (config_file, tokens) if p is not None):
        if path.is_file() and not _readable_by(path, user, root):
            mode = (path.stat().st_mode & (0o7700 if path == tokens else 0o7707)) | 0o040
            result.steps.append(
                Step(f"let group {user} read {path} (group {user}, mode {mode:04o})", path=path, mode=mode, group=user)
            )
        elif path == tokens and path.is_file() and path.stat().st_mode & 0o007:
            # The tokens' hashes are the API's keys to guess at offline: the service's group reads them, nobody else.
            mode = path.stat().st_mode & 0o7770
            result.steps.append(
                Step(
                    f"let only its owner and group read {path} (mode {mode:04o}: the API tokens' hashes)",
                    ("chmod", f"{mode:04o}", "--", str(path)),
                )
            )
    # The state folder, the service user's home: made here, not by systemd at the first start, so that what
    # init, install-hooks and token create write there as root meanwhile is the service's too.
    state = _under(root, home)
    if not _owned_by(state, user, root):
        result.steps.append(
            Step(
                f"give {state} and all in it to {user}:{user} (mode 0750; the state folder, {user}'s home)",
                path=state,
                mode=0o750,
                owner=user,
            )
        )
    result.steps += _provenance_key(state, user)
    key = _signing_key(config, config_file)
    if key is not None and not _under(root, key).exists():
        # The service's own key for the commits it writes (promotions, reverts): made once, the service's alone.
        made = _under(root, key)
        if not made.parent.is_dir():
            result.steps.append(Step(f"make the folder {made.parent}", ("mkdir", "-p", "--", str(made.parent))))
        result.steps.append(
            Step(
                f"make the service's SSH signing key {made} (signing_key in the config)",
                ("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{user}@gitopsd", "-f", str(made)),
            )
        )
        if key.is_relative_to(home):
            result.steps.append(Step(f"give {made} to {user}", path=state, mode=0o750, owner=user))
        else:
            result.steps.append(Step(f"give {made} to {user}", ("chown", f"{user}:{user}", str(made), f"{made}.pub")))
    # A program missing halfway would leave half an install: name it before anything is done.
    for program in dict.fromkeys(s.argv[0] for s in result.steps if s.argv):
        if shutil.which(program) is None:
            why, package = PROGRAMS.get(program, ("runs it", "coreutils"))
            result.first.append(
                f"{program} is not installed (install-service {why}): apt-get install {package}, then run install-service again"
            )
    return result


def service_user(config: Path, root: Path = Path("/")) -> str:
    """The user install-service made before: the owner of the configured state folder (not root); else gitopsd.

    Run again (an upgrade, another repository) without --user, it keeps the service where it is.
    """
    config = Path(os.path.abspath(config))
    return _owner(_under(root, _state_folder(config, root / str(config).lstrip("/"))), root) or DEFAULT_USER


def installed_unit(config: Path, root: Path = Path("/")) -> str:
    """The unit an earlier install-service wrote for this config (its ExecStart runs it); else gitopsd.

    Run again without --unit (an upgrade, another repository), it rewrites that unit instead of adding a second.
    """
    start = f" run --config {Path(os.path.abspath(config))}"
    found = []
    for unit in sorted((root / "etc/systemd/system").glob("*.service")):
        try:
            lines = unit.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        if any(line.startswith("# Installed by `gitopsd install-service`") for line in lines) and any(
            line.startswith("ExecStart=") and line.endswith(start) for line in lines
        ):
            found.append(unit.stem)
    return DEFAULT_UNIT if DEFAULT_UNIT in found or not found else found[0]


def _provenance_key(state: Path, user: str) -> list[Step]:
    """Make the service's ed25519 provenance key (ci/provenance.py) in its state folder when missing: the service's
    alone (0600), and there before the first build, so that `gitopsd doctor` can check it."""
    from ..adapters.signing import KEY_NAME

    key = state / KEY_NAME
    if key.exists():
        return []
    public = key.with_suffix(".pub")
    return [
        Step(
            f"make the service's provenance key {key} (ed25519, mode 0600)",
            ("openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)),
        ),
        Step(f"keep {key} to its owner", ("chmod", "0600", str(key))),
        Step(f"write its public half {public}", ("openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public))),
        Step(f"give {key} to {user}", path=state, mode=0o750, owner=user),
    ]


def _tokens_path(config_file: Path, root: Path) -> Path | None:
    """The API's tokens file the config names (relative to the config's folder), as this system sees it, if any."""
    try:
        data = read_yaml(config_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeError, ConfigurationError):
        return None
    api = data.get("api") if isinstance(data, dict) else None
    tokens = api.get("tokens_file") if isinstance(api, dict) else None
    if not isinstance(tokens, str) or not tokens:
        return None
    return root / tokens.lstrip("/") if tokens.startswith("/") else config_file.parent / tokens


def _owned_by(folder: Path, user: str, root: Path) -> bool:
    """Do `folder` and everything in it belong to `user` already?"""
    entry = _entry(user, "passwd", root)
    if entry is None or not folder.is_dir():
        return False
    uid = int(entry[2])
    return all(p.lstat().st_uid == uid for p in [folder, *folder.rglob("*")])


def _state_folder(config: Path, config_file: Path, key: str = "state_dir", default: Path = HOME) -> Path:
    """The state folder (or the folder KEY) the config names, as the service sees it, or the unit's default."""
    try:
        data = read_yaml(config_file.read_text(encoding="utf-8")) or {}
        state = data.get(key) if isinstance(data, dict) else None
    except (OSError, UnicodeError, ConfigurationError):
        state = None
    return Path(os.path.normpath(Path(config.parent, state))) if isinstance(state, str) and state else default


def _signing_key(config: Path, config_file: Path) -> Path | None:
    """The config's `signing_key` (relative to the config's folder), as the service sees it; None without one."""
    try:
        data = read_yaml(config_file.read_text(encoding="utf-8")) or {}
        key = data.get("signing_key") if isinstance(data, dict) else None
    except (OSError, UnicodeError, ConfigurationError):
        key = None
    return Path(os.path.normpath(Path(config.parent, key))) if isinstance(key, str) and key else None


def _under(root: Path, path: Path) -> Path:
    """PATH as seen from this system when the service's system is mounted at ROOT."""
    return path if root == Path("/") else root / str(path).lstrip("/")


def _readable_by(path: Path, group: str, root: Path) -> bool:
    """Is `path` the group's, with group read (the daemon reads it through its group, whatever others may)?"""
    entry = _entry(group, "group", root)
    st = path.stat()
    return entry is not None and st.st_gid == int(entry[2]) and bool(st.st_mode & 0o040)


def _configured_folders(config: Path, config_file: Path, root: Path, result: Plan) -> list[Path]:
    """The folders the service writes besides its own: repositories (rollback commits), a state_dir or runtime_dir elsewhere.

    On this system the config is checked as `check-config` does; under another root only read,
    since its paths are that system's.
    """
    if not config_file.is_file():
        result.first.append(
            f"{config_file} does not exist: register a repository first with "
            f"`gitopsd init /srv/git/NAME.git --config {config}`, then run install-service again"
        )
        return []
    if root == Path("/"):
        from ..config import ConfigError, load

        try:
            loaded = load(config_file)
        except ConfigError as exc:
            result.first.append(
                f"{config_file} has {plural(len(exc.problems), 'problem')}: fix what "
                f"`gitopsd check-config --config {config}` shows, then run install-service again"
            )
            return []
        repos, state, runtime = [r.path for r in loaded.repositories], loaded.state_dir, loaded.runtime_dir
    else:
        try:
            data = read_yaml(config_file.read_text(encoding="utf-8")) or {}
            repos = [Path(config.parent, r["path"]) for r in data.get("repositories") or []]
            state = Path(config.parent, data.get("state_dir", str(HOME)))
            runtime = Path(config.parent, data.get("runtime_dir", str(RUNTIME)))
        except (OSError, UnicodeError, ConfigurationError, AttributeError, KeyError, TypeError) as exc:
            result.first.append(
                f"{config_file}: cannot read the repositories' paths ({exc}); "
                "fix it with `gitopsd check-config` on the target system"
            )
            return []
        if not repos:
            result.first.append(
                f"{config_file} lists no repositories: register one first with "
                f"`gitopsd init /srv/git/NAME.git --config {config}`, then run install-service again"
            )
            return []
    folders = list(dict.fromkeys(Path(os.path.normpath(p)) for p in repos))
    result.pushers = sorted({name for name in (_owner(_under(root, p), root) for p in folders) if name})
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


def _owner(path: Path, root: Path) -> str | None:
    """Who owns `path` (by the user database under `root`), unless root: a repository's is who pushes to it."""
    try:
        uid = path.stat().st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    if root == Path("/"):
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None
    try:
        rows = [line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()]
    except OSError:
        return None
    return next((row[0] for row in rows if len(row) > 2 and row[2] == str(uid)), None)


def _exists(name: str, database: str, root: Path) -> bool:
    return _entry(name, database, root) is not None


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
        elif step.path is not None and step.owner is not None:
            user, group = _entry(step.owner, "passwd", root), _entry(step.owner, "group", root)
            if user is None or group is None:
                raise InstallError(f"{step.what} failed: there is no user and group {step.owner} under {root}")
            step.path.mkdir(mode=step.mode, parents=True, exist_ok=True)
            step.path.chmod(step.mode)
            for path in [step.path, *step.path.rglob("*")]:
                os.lchown(path, int(user[2]), int(group[2]))
        elif step.path is not None and step.group is not None:
            entry = _entry(step.group, "group", root)
            if entry is None:
                raise InstallError(f"{step.what} failed: there is no group {step.group} in {root / 'etc/group'}")
            os.chown(step.path, -1, int(entry[2]))
            step.path.chmod(step.mode)


def next_commands(user: str, config: Path, again: bool, unit: str = "gitopsd", pushers: tuple[str, ...] = ()) -> list[str]:
    """What to run after install-service, in order; with `again`, install-service itself first (after `first:`).
    `pushers`: who owns the configured repositories (the git user `init --git-user` gave them to), else said in words."""
    named = "" if unit == "gitopsd" else f" --unit {unit}"
    joins = [f"# let {p}, who pushes, reach the nudge socket: usermod -aG {user} {p}" for p in pushers if p != user] or [
        f"# let the account pushes arrive as (e.g. the git-shell user) reach the nudge socket: usermod -aG {user} ACCOUNT"
    ]
    return [
        *([f"gitopsd install-service --config {config}{named}"] if again else []),
        "systemctl daemon-reload",
        f"systemctl enable --now {unit}",
        f"journalctl -u {unit} -f",
        *joins,
        f"# after `gitopsd init` of another repository: gitopsd install-service --config {config}{named}, "
        f"then systemctl daemon-reload && systemctl restart {unit}",
    ]
