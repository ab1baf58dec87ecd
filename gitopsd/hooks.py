"""Installing gitopsd's server-side hook into a bare repository (`gitopsd install-hooks`, `gitopsd init`).

One hook: pre-receive, the promotion gate (gitopsd/receive.py). It also tells the daemon who is
pushing what; the daemon's ref watcher sees the ref move. A post-receive hook would cost a second
Python start on every push for nothing the daemon cannot see by itself, so there is none (an old
gitopsd post-receive shim is removed, and a hook it had chained is put back).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

HOOK_NAMES = ("pre-receive",)
RETIRED_HOOKS = ("post-receive",)
SHIM_MARK = "gitopsd hook shim"


# -- installing the shims ----------------------------------------------------------------------------

def shim_source() -> Path:
    """The static hook shims: shipped in the package (gitopsd/data/hooks), or the checkout's hooks/ folder."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "data" / "hooks", package.parent / "hooks"):
        if (candidate / "pre-receive").is_file():
            return candidate
    raise FileNotFoundError(f"the gitopsd hook shim pre-receive was not found in {package / 'data' / 'hooks'}: "
                            "reinstall gitopsd")


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
    settings = {"gitopsd.executable": gitopsd_executable(), "gitopsd.python": sys.executable,
                "gitopsd.entry": str(Path(__file__).resolve().parent / "hook_entry.py"),
                # Push options (`git push -o override=...`) reach the hooks only when advertised.
                "receive.advertisePushOptions": "true",
                # Git stores malformed trees (a symlink and a file of the same name) unless told to check:
                # refuse them at the door, before the daemon has to refuse to export them.
                "receive.fsckObjects": "true"}
    if config_path is not None:
        settings["gitopsd.config"] = str(Path(config_path).resolve())
        database, note = write_gate_snapshot(Path(config_path))
        if database:
            settings["gitopsd.database"] = database
        done.append(f"the hook's config snapshot: {note}")
    for key, value in settings.items():
        subprocess.run(["git", "-C", str(repo_path), "config", key, value], check=True)
    return done


def write_gate_snapshot(config_path: Path) -> tuple[str | None, str]:
    """Save the gate's part of the config for the hook; return (state database, a note for the operator).

    The daemon also does this at start and on every reload. Here it is done only where it cannot
    leave a file the daemon cannot write: into a store we own, or a new one in a state folder we own.
    """
    from . import gate
    from .config import ConfigError, load
    from .state import Store
    try:
        config = load(config_path)
    except ConfigError:
        return None, "not saved: the config is invalid, so pushes to environment branches are refused until it is fixed"
    database = config.database
    owner = database if database.exists() else config.state_dir
    mine = owner.exists() and owner.stat().st_uid == os.geteuid()
    if not mine:
        why = (f"{owner} belongs to another user" if owner.exists()
               else f"the daemon creates {config.state_dir} when it first starts")
        return str(database), (f"left to the daemon, which saves it at start and on reload ({why}); "
                               "until then the hook reads the config file: slower, same rule")
    try:
        store = Store(database)
        try:
            store.save_gate(gate.from_config(config))
        finally:
            store.close()
    except (OSError, sqlite3.Error) as exc:
        return str(database), f"not saved in {database} ({exc}); the hook reads the config file until the daemon saves it"
    return str(database), f"saved in {database}"
