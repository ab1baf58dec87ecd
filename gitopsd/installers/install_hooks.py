"""Installing gitopsd's server-side hook into a bare repository (`gitopsd install-hooks`, `gitopsd init`).

One hook: pre-receive, the promotion gate (gitopsd/gate/receive.py). It also tells the daemon who is
pushing what; the daemon's ref watcher sees the ref move. A post-receive hook would cost a second
Python start on every push for nothing the daemon cannot see by itself, so there is none (an old
gitopsd post-receive shim is removed, and a hook it had chained is put back).
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from ..adapters import ownership
from ..base import gitcli
from ..core.errors import GitError, StoreError, UserError
from ..core.settings import Config, Repository
from ..gate import shimstamp

HOOK_NAMES = ("pre-receive",)
RETIRED_HOOKS = ("post-receive",)
SHIM_MARK = "gitopsd hook shim"


# -- installing the shims ----------------------------------------------------------------------------


def shim_source() -> Path:
    """The static hook shims: shipped in the package (gitopsd/data/hooks), or the checkout's hooks/ folder."""
    package = Path(__file__).resolve().parent.parent  # gitopsd/, where data/ is
    for candidate in (package / "data" / "hooks", package.parent / "hooks"):
        if (candidate / "pre-receive").is_file():
            return candidate
    raise FileNotFoundError(f"the gitopsd hook shim pre-receive was not found in {package / 'data' / 'hooks'}: reinstall gitopsd")


def gitopsd_executable() -> str:
    found = shutil.which("gitopsd")
    local = Path(sys.executable).parent / "gitopsd"
    return str(local) if local.exists() else (found or "gitopsd")


def install_hooks(  # noqa: C901 (one branch per file it owns or chains)
    repo_path: Path,
    config_path: Path | None = None,
    *,
    git_user: str | None = None,
    service_user: str | None = None,
) -> list[str]:
    """Install the shims into REPO/hooks idempotently; keep a foreign hook as `<name>.chained`. Return what was done.

    Also sets up the service layout (docs/install.md, "Permissions") where it can: see `share_with_service`.
    Raise HookError (or FileNotFoundError, FileExistsError) with a line for the operator.
    """
    hooks_dir = repo_path / "hooks"
    if not (repo_path / "objects").is_dir():
        raise FileNotFoundError(f"{repo_path} is not a bare Git repository")
    hooks_dir.mkdir(exist_ok=True)
    done = []
    for name in RETIRED_HOOKS:
        target, chained = hooks_dir / name, hooks_dir / f"{name}.chained"
        if target.is_file() and SHIM_MARK in target.read_text(encoding="utf-8", errors="replace"):
            if chained.exists():
                os.replace(chained, target)
                done.append(f"hooks/{name}: gitopsd's shim removed (not needed any more); the hook it chained is back")
            else:
                target.unlink()
                done.append(f"hooks/{name}: gitopsd's shim removed (not needed any more)")
    source = shim_source()
    for name in HOOK_NAMES:
        target = hooks_dir / name
        shim = (source / name).read_text(encoding="utf-8")
        if target.exists() or target.is_symlink():
            current = target.read_text(encoding="utf-8", errors="replace") if target.is_file() else ""
            if current == shim:
                done.append(f"hooks/{name}: already installed")
                continue
            if SHIM_MARK not in current:
                chained = hooks_dir / f"{name}.chained"
                if chained.exists():
                    raise FileExistsError(f"{target} exists and so does {chained}; merge them by hand first")
                target.rename(chained)
                done.append(f"hooks/{name}: existing hook kept as {chained.name}, runs before gitopsd's")
        tmp = hooks_dir / f".{name}.gitopsd-tmp"
        tmp.write_text(shim, encoding="utf-8")
        tmp.chmod(0o755)
        os.replace(tmp, target)
        done.append(f"hooks/{name}: installed")
    # The shim reads these settings; nothing in a hook file is generated.
    settings = {
        "gitopsd.executable": gitopsd_executable(),
        "gitopsd.python": sys.executable,
        "gitopsd.entry": str(Path(__file__).resolve().parent.parent / "hook_entry.py"),
        # Push options (`git push -o override=...`) reach the hooks only when advertised.
        "receive.advertisePushOptions": "true",
        # Git stores malformed trees (a symlink and a file of the same name) unless told to check:
        # refuse them at the door, before the daemon has to refuse to export them.
        "receive.fsckObjects": "true",
    }
    if get_setting(repo_path, PUSH_LIMIT) is None:
        # Git writes a push to disk before any hook runs: bound it, so that one push cannot fill the disk the state
        # database and the exports live on (an administrator's own value is kept, `0` being no bound).
        settings[PUSH_LIMIT] = PUSH_LIMIT_DEFAULT
    if get_setting(repo_path, "receive.certNonceSeed") is None:
        # `git push --signed` certificates carry a nonce made from this secret: the hook then knows a fresh one
        # from a replayed one (GIT_PUSH_CERT_NONCE_STATUS), for environments with `signed_push: required`.
        settings["receive.certNonceSeed"] = secrets.token_hex(32)
    if get_setting(repo_path, "gpg.ssh.allowedSignersFile") is None:
        # receive-pack checks an SSH push certificate before any hook and says `error:` to the pusher when this is
        # unset; the hook checks it again against each environment's own allowed signers (gate/signatures.py).
        settings["gpg.ssh.allowedSignersFile"] = "/dev/null"
    if config_path is not None:
        settings["gitopsd.config"] = str(Path(config_path).resolve())
        settings.update(signing_settings(recorded_settings(repo_path), configured_signing_key(Path(config_path))))
        database, note = write_gate_snapshot(Path(config_path))
        if database:
            settings["gitopsd.database"] = database
        done.append(f"the hook's config snapshot: {note}")
    for key, value in settings.items():
        set_setting(repo_path, key, value)
    problem = record_shim_rule(repo_path, Path(config_path)) if config_path is not None else None
    if problem:
        done.append(f"warning: {problem}")
    done += share_with_service(repo_path, pushing_user(repo_path, git_user), daemon_user(service_user, config_path), config_path)
    pusher = pushing_user(repo_path, git_user)
    if pusher is not None:
        problem = hook_python_problem(pusher, settings["gitopsd.python"], settings["gitopsd.entry"])
        if problem:
            done.append(f"warning: {problem}; {PYTHON_ADVICE}")
    return done


# -- the repository's git config, read and written as a file -------------------------------------------
# `git -C REPO config` refuses a repository another user owns ("dubious ownership"), which is the
# normal case for root and for the daemon's user; `--file` reads and writes the file itself.


class HookError(UserError):
    """The hook or its settings cannot be installed; the message says what to do."""


def set_setting(repo_path: Path, key: str, value: str) -> None:
    try:
        gitcli.config_set(repo_path / "config", key, value)
    except GitError as exc:
        raise HookError(str(exc)) from exc


PUSH_LIMIT, PUSH_LIMIT_DEFAULT = "receive.maxInputSize", "1g"  # the largest pack one push may send


def get_setting(repo_path: Path, key: str) -> str | None:
    return gitcli.config_get(repo_path / "config", key)


def signing_settings(current: dict[str, str], key: Path | None) -> dict[str, str]:
    """The repository's setting that makes every commit gitopsd writes there (promotions, reverts, rollbacks) signed
    with the service's SSH key (gitcli.signing_args); with no key, signing turned off again if it was on.
    `current` is the repository's recorded gitopsd.* settings (recorded_settings; git config keys are lower case)."""
    if key is None:
        return {gitcli.SIGNING_KEY: ""} if current.get(gitcli.SIGNING_KEY.lower()) else {}
    return {gitcli.SIGNING_KEY: str(key)}


def recorded_settings(repo_path: Path) -> dict[str, str]:
    """The gitopsd.* keys in a repository's git config (the daemon reads them for every repository at start).

    The [gitopsd] section as `git config` writes it is read from the file; anything else in that file
    (quotes, escapes, includes, the section twice) is left to one git run."""
    try:
        text = (repo_path / "config").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    plain = bool(text) and "include" not in text.lower()
    if plain and "[gitopsd" not in text.lower():
        return {}
    if plain and text.lower().count("[gitopsd") == 1 and "\n[gitopsd]\n" in text:
        section = text.split("\n[gitopsd]\n", 1)[1].split("\n[", 1)[0]  # other sections may quote (gpg "ssh")
        if any(c in section for c in '"\\'):
            section = "\x00"  # a quote or an escape in it: git reads it
        pairs = [line.strip().partition(" = ") for line in section.splitlines() if line.strip()]
        if all(sep and key.isalnum() and "#" not in value and ";" not in value for key, sep, value in pairs):
            return {f"gitopsd.{key.lower()}": value for key, _sep, value in pairs}
    code, out, _err = gitcli.run(["git", "config", "--file", str(repo_path / "config"), "--get-regexp", r"^gitopsd\."])
    if code != 0:
        return {}
    return {key: value for key, _, value in (line.partition(" ") for line in out.splitlines())}


def configured_signing_key(config_path: Path) -> Path | None:
    """The config's `signing_key`, or None (also when the config cannot be loaded: that is said elsewhere)."""
    from ..config import ConfigError, load

    try:
        return load(config_path).signing_key
    except ConfigError:
        return None


def refresh_settings(
    repo_path: Path, config_path: Path, database: Path, config: Config | None = None, repo: Repository | None = None
) -> tuple[list[str], str | None]:
    """Point an installed hook at this config and database (after `state_dir` changed, say), and at CONFIG's signing
    key; with CONFIG (loaded from config_path) and its REPO at repo_path, also record what the shim decides alone
    (`record_shim_rule`).

    Return (what changed, a problem line or None). Only the gitopsd.* keys install-hooks wrote are
    touched, and only in a repository where they are.
    """
    current = recorded_settings(repo_path)
    wanted = {
        "gitopsd.config": str(Path(config_path).resolve()),
        "gitopsd.database": str(database),
        **signing_settings(current, config.signing_key if config is not None else None),
    }
    if "gitopsd.entry" not in current and "gitopsd.config" not in current:
        return [], None
    stale = {key: value for key, value in wanted.items() if current.get(key.lower()) != value}  # git lowers keys
    try:
        for key, value in stale.items():
            set_setting(repo_path, key, value)
        problem = record_shim_rule(repo_path, config, repo) if config is not None else None
    except HookError:
        return [], (
            f"the hook of {repo_path} still reads {', '.join(f'{k}={current.get(k)}' for k in stale)}"
            f" (now {', '.join(stale.values())}) and this daemon cannot write {repo_path / 'config'}: pushes "
            f"take the slow path until root runs: {gitopsd_executable()} install-hooks {repo_path} "
            f"--config {wanted['gitopsd.config']}"
        )
    return [f"{key}={value}" for key, value in stale.items()], problem


# -- what the shim decides alone ------------------------------------------------------------------------
# A push of only main, feature branches and ordinary tags has nothing to judge: hooks/pre-receive accepts it
# without starting Python (or git) when the repository's gitopsd-gate.stamp names the config file and the
# environment branches, and has the config file's mtime of when they were read.

STAMP_FILE = shimstamp.STAMP_FILE


def record_shim_rule(repo_path: Path, config: Config | Path, repo: Repository | None = None) -> str | None:
    """Write REPO/gitopsd-gate.stamp for the shim, as of CONFIG (loaded, or a file; REPO is its repository at
    repo_path, looked up if not given: a thousand lookups walk a thousand paths each); a problem line or None.

    Written whole with the config's mtime of when it was read (gate/shimstamp.py), so the shim sees a
    complete stamp of one version of the file or none; no stamp sends every push to Python."""
    loaded: Config | None = None
    if isinstance(config, Path):
        from ..config import ConfigError, load

        try:
            loaded = load(config)
        except ConfigError:
            pass
    else:
        loaded = config
    stamp = repo_path / STAMP_FILE
    try:
        if loaded is None or not loaded.stamp:
            stamp.unlink(missing_ok=True)
            return None
        text = shimstamp.contents(loaded, repo if repo is not None else loaded.repository_at(repo_path))
        shimstamp.write(str(repo_path), text, int(loaded.stamp.rsplit(":", 1)[-1]))
    except OSError as exc:
        return f"pushes to feature branches start Python until {stamp} can be written: {exc.strerror or exc}"
    return None


# -- the service layout (docs/install.md, "Permissions") --------------------------------------------------------

PYTHON_ADVICE = (
    "install gitopsd in a virtualenv every user may run (python3 -m venv /opt/gitopsd; "
    "/opt/gitopsd/bin/pip install gitopsd) and run /opt/gitopsd/bin/gitopsd install-hooks from there"
)
# What the hook needs of its Python, run as the pusher, with the path hook_entry.py sets up.
PYTHON_PROBE = (
    "import os, sys; sys.path.append(os.path.dirname(os.path.dirname(os.path.realpath(sys.argv[1])))); "
    "import sqlite3, gitopsd.gate.receive"
)


def _user(name: str | None) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name) if name else None
    except KeyError:
        return None


def pushing_user(repo_path: Path, name: str | None = None) -> str | None:
    """Who pushes: NAME if given, else the repository's owner unless root, else `git` if that user exists."""
    if name:
        return name
    try:
        owner = repo_path.stat().st_uid
    except OSError:
        owner = 0
    if owner != 0:
        try:
            return pwd.getpwuid(owner).pw_name
        except KeyError:
            return None
    return "git" if _user("git") else None


def daemon_user(name: str | None = None, config_path: Path | None = None) -> str | None:
    """The daemon's user: NAME if given, else the owner of the configured state folder unless root.

    install-service creates that folder for the service user; nothing is guessed from which users
    this machine happens to have (a `gitopsd` user of another installation, say)."""
    if name or config_path is None:
        return name
    from ..config import ConfigError, load

    try:
        state_dir = load(config_path).state_dir
    except ConfigError:
        return None
    account = ownership.daemon_account(state_dir)
    return account.user if account is not None else None


def as_user(user: pwd.struct_passwd, argv: list[str]) -> list[str] | None:
    """ARGV run as USER with its groups (from the group database, as a new login gets them); None if we cannot."""
    if user.pw_uid == os.geteuid():
        return argv
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]


def hook_python_problem(user_name: str, python: str | None, entry: str | None) -> str | None:
    """Can USER run the hook's Python on its entry file? Return None if so, else what is wrong (one line)."""
    user = _user(user_name)
    if user is None:
        return f"there is no user {user_name}"
    if not python or not entry:
        return "the hook's Python is not recorded (gitopsd.python, gitopsd.entry)"
    # Started by a shell, as the shim starts it (a direct exec right after the user switch was seen to
    # pass where the hook's own exec fails).
    argv = as_user(user, ["/bin/sh", "-c", 'exec "$0" "$@"', python, "-I", "-S", "-c", PYTHON_PROBE, entry])
    if argv is None:
        return f"cannot check whether {user_name} may run {python}: run this as root"
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd="/",
            timeout=30,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "LC_ALL": "C.UTF-8"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} could not be started as {user_name}: {exc}"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"the hook's Python {python} cannot run {entry} as {user_name}: {last}"
    return None


def share_with_service(
    repo_path: Path, git_user: str | None, service_user: str | None, config_path: Path | None = None
) -> list[str]:
    """Set up the supported layout: the repository owned by the git user and the daemon's group.

    Folders group-writable and setgid, files group-readable and -writable, core.sharedRepository=group
    (so objects either user writes stay so), and the repository in the daemon user's safe.directory
    (its ~/.gitconfig). Does what this user may (all of it as root); return what was done or why not.
    """
    pusher, service = _user(git_user), _user(service_user)
    if pusher is None or service is None or pusher.pw_uid in (0, service.pw_uid):
        missing = (
            f"no user {git_user}"
            if git_user and pusher is None
            else f"no user {service_user}"
            if service_user and service is None
            else "no git user (say --git-user)"
            if pusher is None
            else "no service user (install-service creates gitopsd, or say --service-user)"
            if service is None
            else f"{git_user} pushes and is the daemon's user too"
        )
        return [f"permissions: left as they are ({missing}; docs/install.md, Permissions)"]
    gid = service.pw_gid
    group = grp.getgrgid(gid).gr_name
    set_setting(repo_path, "core.sharedRepository", "group")  # first: the walk below then fixes the file's owner
    done, refused = [], 0
    for path in [repo_path, *_tree(repo_path)]:
        try:
            info = path.lstat()
            if os.geteuid() == 0 and (info.st_uid, info.st_gid) != (pusher.pw_uid, gid):
                os.lchown(path, pusher.pw_uid, gid)
            elif info.st_gid != gid:
                os.lchown(path, -1, gid)
            if not path.is_symlink():
                mode = stat.S_IMODE(info.st_mode)
                wanted = mode | (0o2070 if path.is_dir() else 0o060 | (0o010 if mode & 0o100 else 0))
                if wanted != mode:
                    os.chmod(path, wanted)
        except OSError:
            refused += 1
    if refused:
        done.append(
            f"permissions: {refused} {'file or folder' if refused == 1 else 'files or folders'} could not be given to {pusher.pw_name}:{group} with "
            f"group write: run install-hooks as root"
        )
    else:
        done.append(f"permissions: {repo_path} belongs to {pusher.pw_name}:{group}, group-writable, setgid folders")
    done.append(_trust(repo_path, service, config_path))
    return done


def _tree(root: Path) -> list[Path]:
    paths = []
    for folder, dirs, files in os.walk(root):
        paths += [Path(folder) / name for name in dirs + files]
    return paths


def safe_directories(user: pwd.struct_passwd) -> list[str]:
    """The safe.directory entries in USER's global git config (~/.gitconfig)."""
    return gitcli.config_get_all(Path(user.pw_dir) / ".gitconfig", "safe.directory")


def trust_command(repo_path: Path, user_name: str) -> str:
    return f"runuser -u {user_name} -- git config --global --add safe.directory {repo_path}"


def _trust(repo_path: Path, service: pwd.struct_passwd, config_path: Path | None) -> str:
    """Add REPO to the service user's safe.directory, so its git and pygit2 open a repository the git user owns.

    Only a repository the config lists gets an entry; entries gitopsd added for repositories that left
    the config (or that no longer exist) are removed first (see `tidy_safe_directories`).
    """
    path = str(repo_path.resolve())
    listed = _configured_repositories(config_path)
    if config_path is None or listed is None:
        return f"safe.directory: not set for {service.pw_name}: the config cannot be read (gitopsd check-config)"
    if path not in listed:
        return (
            f"safe.directory: not set for {service.pw_name}: {path} is not a repository of {config_path} "
            "(add it there, then run install-hooks again)"
        )
    if os.geteuid() not in (0, service.pw_uid):
        if {path, "*"} & {_resolved(entry) for entry in safe_directories(service)}:
            return f"safe.directory: {service.pw_name} already trusts {path}"
        return f"safe.directory: not set for {service.pw_name}: run as root: {trust_command(repo_path, service.pw_name)}"
    home, gitconfig = Path(service.pw_dir), Path(service.pw_dir) / ".gitconfig"
    if not home.exists():
        home.mkdir(mode=0o750, parents=True)
        os.chown(home, service.pw_uid, service.pw_gid)
    ours = (path, str(config_path.resolve()))
    try:
        removed = tidy_safe_directories(home, config_path, listed)
        if {path, "*"} & {_resolved(entry) for entry in safe_directories(service)}:
            if path in {repo for repo, _config in _ledger(home)}:  # gitopsd's entry: this config needs it too
                _write_ledger(home, [*_ledger(home), ours])
            return f"safe.directory: {service.pw_name} already trusts {path}" + _removed_note(removed)
        gitcli.config_set(gitconfig, "safe.directory", path, add=True)
        os.chown(gitconfig, service.pw_uid, service.pw_gid)
        _write_ledger(home, [*_ledger(home), ours])
    except (GitError, OSError) as exc:
        return f"safe.directory: could not write {gitconfig}: {str(exc).split(': ', 1)[-1]}"
    return f"safe.directory: {path} added to {gitconfig} ({service.pw_name} opens repositories others own)" + _removed_note(
        removed
    )


# -- safe.directory entries gitopsd added, and only those, are removed again ---------------------------
# git config files keep no owner per line, so gitopsd lists what it added in a file of its own beside
# the ~/.gitconfig it describes (in the documented layout that home is the state folder): one
# `<repository>\t<config file>` line each. An entry a person wrote is never in that list, so never removed.

SAFE_LEDGER = ".gitopsd-safe-directories"


def _resolved(path: str) -> str:
    return path if path == "*" else os.path.realpath(path)


def _configured_repositories(config_path: Path | None) -> set[str] | None:
    """The resolved paths of the repositories CONFIG lists; None if it cannot be read."""
    from ..config import ConfigError, load

    if config_path is None:
        return None
    try:
        return {os.path.realpath(repo.path) for repo in load(config_path).repositories}
    except (ConfigError, OSError):
        return None


def _ledger(home: Path) -> list[tuple[str, str]]:
    try:
        lines = (home / SAFE_LEDGER).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [(repo, config) for repo, _, config in (line.partition("\t") for line in lines) if repo]


def _write_ledger(home: Path, entries: list[tuple[str, str]]) -> None:
    """Write the list (each entry once), owned like the home's ~/.gitconfig: that user may tidy it later too."""
    ledger, owner = home / SAFE_LEDGER, home.stat()
    unique = list(dict.fromkeys(entries))
    if not unique:
        ledger.unlink(missing_ok=True)
        return
    tmp = home / f".{SAFE_LEDGER}.tmp"
    tmp.write_text("".join(f"{repo}\t{config}\n" for repo, config in unique), encoding="utf-8")
    if os.geteuid() == 0:
        os.chown(tmp, owner.st_uid, owner.st_gid)
    os.replace(tmp, ledger)


def tidy_safe_directories(home: Path, config_path: Path, listed: set[str]) -> list[str]:
    """Remove from HOME/.gitconfig the safe.directory entries gitopsd added whose repository left CONFIG_PATH
    (which lists LISTED now), whose config file is gone, or which no longer exists; return the removed paths."""
    config = str(config_path.resolve())
    entries = _ledger(home)
    keep = [
        (repo, cfg) for repo, cfg in entries if os.path.isdir(repo) and os.path.exists(cfg) and (cfg != config or repo in listed)
    ]
    gone = sorted({repo for repo, _cfg in entries} - {repo for repo, _cfg in keep})
    gitconfig = home / ".gitconfig"
    if gone and gitconfig.exists():
        owner = gitconfig.stat()
        for repo in gone:
            code, _out, err = gitcli.run(
                ["git", "config", "--file", str(gitconfig), "--fixed-value", "--unset-all", "safe.directory", repo]
            )
            if code not in (0, 5):  # 5: not there any more (a person removed it)
                raise GitError(f"cannot remove safe.directory {repo} from {gitconfig}: {err.strip()}")
        if os.geteuid() == 0:
            os.chown(gitconfig, owner.st_uid, owner.st_gid)  # git rewrote it as a new file
    if keep != entries:
        _write_ledger(home, keep)
    return gone


def _removed_note(removed: list[str]) -> str:
    return f"; removed the entries gitopsd had added for {', '.join(removed)} (not in the config any more)" if removed else ""


def write_gate_snapshot(config_path: Path) -> tuple[str | None, str]:
    """Save the gate's part of the config for the hook; return (state database, a note for the operator).

    The daemon also does this at start and on every reload. Here it is done only where it cannot
    leave a file the daemon cannot write: into a store we own, or a new one in a state folder we own.
    """
    from ..adapters.store import Store
    from ..config import ConfigError, load
    from ..gate import snapshot

    try:
        config = load(config_path)
    except ConfigError:
        return None, "not saved: the config is invalid, so pushes to environment branches are refused until it is fixed"
    database = config.database
    owner = database if database.exists() else config.state_dir
    mine = owner.exists() and owner.stat().st_uid == os.geteuid()
    if not mine:
        why = (
            f"{owner} belongs to another user"
            if owner.exists()
            else f"the daemon creates {config.state_dir} when it first starts"
        )
        return str(database), (
            f"left to the daemon, which saves it at start and on reload ({why}); "
            "until then the hook reads the config file: slower, same rule"
        )
    try:
        store = Store(database)
        try:
            store.save_gate(snapshot.from_config(config))
        finally:
            store.close()
    except (OSError, StoreError) as exc:
        return str(database), f"not saved in {database} ({exc}); the hook reads the config file until the daemon saves it"
    return str(database), f"saved in {database}"
