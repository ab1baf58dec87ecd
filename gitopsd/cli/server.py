"""Setting up and running the server: init, install-hooks, install-service, doctor, check-config, run,
and the entry points Git and sshd call (hook, git-shell).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from .common import (
    load_config as _config,
)
from .common import (
    plural,
    read_config,
)

if TYPE_CHECKING:
    from ..core.settings import Config
    from ..gate.sshsig import Check


def cmd_check_config(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load

    try:
        config = load(Path(args.config), writable_folders=True)  # as the unit runs it: as the service user
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    for warning in content_warnings(config):
        print(f"gitopsd: warning: {warning}", file=sys.stderr)
    n_envs = sum(len(r.environments) for r in config.repositories)
    print(f"{config.source}: ok ({plural(len(config.repositories), 'repository')}, {plural(n_envs, 'environment')})")
    for repo in config.repositories:
        chain = " -> ".join([repo.environments[0].promote_from] + [e.name for e in repo.environments])
        print(f"  {repo.name}: {repo.path}  [{chain}]")
    return 0


def content_warnings(config: Any) -> list[str]:
    """Inventory and playbook files missing from the environment branch heads: they would fail the next deployment.

    Warnings, not errors: the content moves with every push, the config does not.
    """
    from ..installers.content import missing_files

    return [
        f"{m.repo.name}/{m.env.name}: the {m.what} {m.path} is not in branch {m.env.branch}: "
        "its next deployment fails until a commit adds it"
        for m in missing_files(config)
    ]


def cmd_run(args: argparse.Namespace) -> int:
    import signal

    # Importing the daemon takes a while; a SIGHUP meanwhile would end it. Held until daemon.run keeps them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    from ..adapters import logs
    from ..daemon import main as daemon

    logs.setup(args.log_format, getattr(__import__("logging"), args.log_level.upper()))
    return daemon.run(Path(args.config))


def cmd_hook(args: argparse.Namespace) -> int:
    from ..gate import receive

    def load_config(path: str) -> Config:  # only when the hook's snapshot is stale, as in hook_entry
        from ..config import load

        return load(path)

    def ssh_crypto() -> Check:  # `cryptography`, only when a push has commits to check
        from ..adapters.signing import verify_ssh

        return verify_ssh

    return receive.pre_receive(args.config, args.database or "", sys.stdin.read(), load_config=load_config, ssh_crypto=ssh_crypto)


GIT_SHELL_NAME = r"[a-z_][a-z0-9_.-]{0,63}"


GIT_SHELL_VERBS = ("git-receive-pack", "git-upload-pack", "git-upload-archive")


def cmd_git_shell(args: argparse.Namespace) -> int:
    """An authorized_keys forced command: git-shell for the person the key's line names, never one the client says."""
    if not re.fullmatch(GIT_SHELL_NAME, args.name):
        raise UserError(
            f"git-shell: {args.name!r} is not a user name ([a-z_][a-z0-9_.-]*): fix this key's "
            "command= in the git user's ~/.ssh/authorized_keys"
        )
    asked = os.environ.get("SSH_ORIGINAL_COMMAND")
    if asked is None:
        raise UserError("git-shell: this key only pushes and fetches with git; there is no interactive login")
    found = re.fullmatch(r"(\S+) '([^'\\]+)'", asked)
    if found is None or found.group(1) not in GIT_SHELL_VERBS:
        raise UserError(
            f"git-shell: {asked!r} is not a git push, fetch or archive of one repository; this key only "
            f"runs {', '.join(GIT_SHELL_VERBS)} 'PATH'"
        )
    shell = "/usr/bin/git-shell"
    if not os.access(shell, os.X_OK):
        raise UserError(f"git-shell: {shell} is missing: apt-get install git")
    path = served_repository(_config_for_git_shell(args), found.group(2), args.repos).replace("'", "'\\''")
    # Only the key's line names the pusher, and git reads no variable the client sent (an sshd's `AcceptEnv GIT_*`
    # would hand it GIT_CONFIG_PARAMETERS: uploadpack.packObjectsHook runs a command, core.hooksPath skips the gate).
    env = {k: v for k, v in os.environ.items() if k in GIT_SHELL_ENV or k.startswith("LC_")}
    if re.fullmatch(r"[A-Za-z0-9=:._-]{1,100}", os.environ.get("GIT_PROTOCOL", "")):
        env["GIT_PROTOCOL"] = os.environ["GIT_PROTOCOL"]  # protocol v2, as git's docs ask sshd to pass
    command = f"{found.group(1)} '{path}'"  # git-shell parses it, for the repository found here and no other
    os.execve(shell, ["git-shell", "-c", command], {**env, "GITOPSD_USER": args.name})  # noqa: S606 (argv, no shell)


GIT_SHELL_ENV = ("HOME", "PATH", "USER", "LOGNAME", "SHELL", "LANG", "TZ", "SSH_CONNECTION", "SSH_CLIENT")


def _config_for_git_shell(args: argparse.Namespace) -> Any:
    """The repositories of --config: from the daemon's snapshot while it matches the file (what the hook reads too, as
    the git account), else from the file."""
    try:
        return read_config(args, check=False)[0]
    except UserError as exc:
        raise UserError(
            f"git-shell: the server's configuration {args.config} has problems; nothing is served until an "
            "administrator fixes it (`gitopsd check-config`)"
        ) from exc


def served_repository(config: Any, asked: str, names: list[str] | None = None) -> str:
    """The real path of the configured repository (of `names`, if given) `asked` names as git would find it (relative
    to the account's home, `.git` optional); one line for any other path (`~user/`, `..` out of it, an option)."""
    known = {r.name: r for r in config.repositories}
    for name in names or ():
        if name not in known:
            raise UserError(
                f"git-shell: no repository named {name!r} in {config.source} (known: {', '.join(known)}): "
                "fix this key's command= in the git user's ~/.ssh/authorized_keys"
            )
    usable = [known[name] for name in names] if names else list(config.repositories)
    if not asked.startswith(("-", "~")) and asked.isprintable():
        managed = {os.path.realpath(r.path) for r in usable}
        base = os.path.join(os.getcwd(), asked)
        for candidate in (base + "/.git", base, base + ".git/.git", base + ".git"):  # git's enter_repo order
            if os.path.isdir(candidate) and os.path.realpath(candidate) in managed:
                return os.path.realpath(candidate)
    what = "this key may use" if names else "gitopsd manages"
    reach = ", ".join(str(r.path) for r in usable) or "none"
    raise UserError(f"git-shell: {asked!r} is not a repository {what}; it reaches only these: {reach}")


def cmd_install_hooks(args: argparse.Namespace) -> int:
    from ..installers import install_hooks

    repo = Path(args.repo).resolve()
    try:
        done = install_hooks.install_hooks(repo, Path(args.config), git_user=args.git_user, service_user=args.service_user)
    except (FileNotFoundError, FileExistsError, PermissionError, install_hooks.HookError) as exc:
        raise UserError(str(exc)) from exc
    for line in done:
        print(f"{repo}/{line}" if line.startswith("hooks/") else line)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ..config import ConfigEditError
    from ..installers.bootstrap import init_repository
    from ..installers.install_hooks import HookError

    try:
        lines = init_repository(
            Path(args.repo),
            Path(args.config),
            name=args.name,
            sample=args.sample,
            git_user=args.git_user,
            service_user=args.service_user,
        )
    except (ConfigEditError, HookError, FileExistsError) as exc:
        raise UserError(str(exc)) from exc
    for line in lines:
        print(line)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..installers.doctor import diagnose, probe

    if args.probe:  # as the daemon's user, for a doctor run as root: its findings, one JSON object a line
        for finding in probe(_config(args)):
            print(json.dumps({"ok": finding.ok, "what": finding.what, "fix": finding.fix}), flush=True)
        return 0
    findings = diagnose(Path(args.config), git_user=args.git_user, service_user=args.service_user)
    for finding in findings:
        print(finding.text())
    problems = sum(1 for f in findings if not f.ok)
    print(f"{problems} problem{'s' if problems != 1 else ''}" if problems else "all ok")
    return 1 if problems else 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from ..installers import service

    root = Path(args.root).resolve()
    try:
        args.user = args.user or service.service_user(Path(args.config), root)
        args.unit = args.unit or service.installed_unit(Path(args.config), root)
        plan = service.plan(args.user, Path(args.config), root, unit=args.unit)
        if args.dry_run:
            print("would do:")
            for step in plan.steps:
                print(f"  {step.what}" + (f"\n    $ {' '.join(step.argv)}" if step.argv else ""))
            if plan.first:
                print("first:")
                for line in plan.first:
                    print(f"  {line}")
        else:
            if plan.first:
                raise UserError("; ".join(plan.first) + " (nothing was changed)")
            if os.geteuid() != 0 and root == Path("/"):
                raise UserError("install-service needs root (it creates a system user and writes /etc/systemd/system)")
            service.apply(plan.steps, root)
            for step in plan.steps:
                print(f"done: {step.what}")
    except service.InstallError as exc:
        raise UserError(str(exc)) from exc
    for warning in plan.warnings:
        print(f"gitopsd: warning: {warning}", file=sys.stderr)
    print("then:")
    for line in service.next_commands(
        args.user, plan.config, again=bool(plan.first), unit=args.unit, pushers=tuple(plan.pushers)
    ):
        print(f"  {line}")
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "init",
        "create or adopt a deployment repository and register it",
        "Create the bare repository REPO (or adopt an existing one), create missing environment branches\n"
        "(the first at main, the later ones at an empty placeholder until their first promotion), install\n"
        "the hooks, and add a repository entry with the default environments (qa, staging, production)\n"
        "to the config file, creating it if needed.",
        cmd_init,
    )
    p.add_argument("repo", metavar="REPO", help="path of the bare repository, e.g. /srv/git/shop.git")
    p.add_argument("--name", help="repository name in the config (default: REPO's folder name without .git)")
    p.add_argument(
        "--sample",
        action="store_true",
        help="seed main with gitopsd's sample web app and Ansible content (only if main does not exist)",
    )

    def add_users(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--git-user", metavar="USER", help="the user pushes arrive as (default: the repository's owner unless root, else git)"
        )
        p.add_argument(
            "--service-user",
            metavar="USER",
            help="the daemon's user (default: the owner of the configured state folder, which install-service makes)",
        )

    add_users(p)

    p = add(
        "install-hooks",
        "install gitopsd's pre-receive hook (the promotion gate) into a repository",
        "Install the static pre-receive shim into REPO/hooks and record in REPO's git config what it runs\n"
        "(this Python, the config file, the state database). Idempotent; a hook that was there before is\n"
        "kept as pre-receive.chained and runs first. Also saves the hook's snapshot of the config when it\n"
        "can (the daemon does at start and on reload), so pushes need not parse YAML. As root, sets up the\n"
        "permissions of docs/install.md's Permissions section: REPO owned by the git user and the daemon's group,\n"
        "group-writable, core.sharedRepository=group, REPO in the daemon user's safe.directory.",
        cmd_install_hooks,
    )
    p.add_argument("repo", metavar="REPO", help="path of the bare repository")
    add_users(p)

    p = add(
        "doctor",
        "check permissions, hook and sandbox as the service and the pushers use them",
        "Check each configured repository and the service as they are used: the repository owned by the\n"
        "git user and the daemon's group, group-writable (the daemon writes rollback commits), the git\n"
        "user in the daemon's group (it reads the state database, sends nudges on the socket), the hook\n"
        "installed with a Python the git user can run and the config's database, the daemon user's\n"
        "safe.directory, bubblewrap; and, as the daemon's user for real, every file the daemon reads\n"
        "(config, tokens, vault passwords, known hosts), its state folder written, a no-op playbook and\n"
        "a no-op CI step run in the sandbox. Prints ok or the problem with the command that fixes it.\n"
        "Exit code 1 if there is any problem. Run it as root to check as the other users.",
        cmd_doctor,
    )
    add_users(p)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)  # the part run as the daemon's user

    p = add(
        "run",
        "run the daemon in the foreground",
        "Run the reconciler daemon in the foreground, logging to stderr. It refuses to start on an invalid\n"
        "config. SIGHUP reloads the config (a bad one is refused, the old one kept); SIGTERM stops it,\n"
        "letting running deployments finish within stop_grace seconds.",
        cmd_run,
    )
    p.add_argument(
        "--log-format",
        choices=("plain", "json"),
        default="plain",
        help="plain lines (no timestamps under journald) or JSON lines for log shippers",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")

    p = add(
        "install-service",
        "install gitopsd as a systemd service",
        "Write the hardened systemd unit with the real path of this gitopsd and the configured repositories\n"
        "as its writable folders, create the service user and group, let that group read the config file;\n"
        "then print the systemctl commands to enable it. Run it after `gitopsd init` (the config must\n"
        "exist and be valid), and again after adding a repository.",
        cmd_install_service,
    )
    p.add_argument(
        "--user",
        help="service user and group (default: the owner of the configured state folder, which an earlier "
        "install-service made; else gitopsd)",
    )
    p.add_argument(
        "--unit",
        metavar="NAME",
        help="write the unit as /etc/systemd/system/NAME.service (default: the unit an earlier install-service "
        "wrote for this config, else gitopsd; another name for a second gitopsd on one machine, with its own "
        "config, state_dir, runtime_dir and --user)",
    )
    p.add_argument("--root", default="/", metavar="DIR", help="install into another root folder (default: /)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")

    add(
        "check-config",
        "validate the configuration file",
        "Validate the configuration and report every problem at once with file, line and key.\n"
        "Exit code 1 if there is any problem.",
        cmd_check_config,
    )


def add_entry_points(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register what Git and sshd run (hook, git-shell): last in --help, they are not for people."""
    p = add(
        "git-shell",
        "the SSH forced command that names the pusher (in authorized_keys, not for people)",
        "Run git-shell for a push, fetch or archive over SSH with GITOPSD_USER=NAME, as a forced command in\n"
        'the git user\'s ~/.ssh/authorized_keys: command="/opt/gitopsd/bin/gitopsd git-shell alice",restrict ...\n'
        "Refuses any other command (SSH_ORIGINAL_COMMAND), a repository --config does not list, and an\n"
        "interactive login; git gets no variable the client sent.",
        cmd_git_shell,
    )
    p.add_argument("name", metavar="NAME", help="who this key belongs to ([a-z_][a-z0-9_.-]*)")
    p.add_argument(
        "--repo", dest="repos", action="append", metavar="REPO", help="a repository this key may use (repeat; default: all)"
    )

    p = add(
        "hook",
        "entry point of the hook shims (used by Git, not by people)",
        "Run a server-side hook; Git calls this through the shims installed by install-hooks.",
        cmd_hook,
    )
    p.add_argument("name", choices=("pre-receive",))
    p.add_argument("--database", metavar="FILE", help="state database holding the hook's config snapshot")
