"""The `gitopsd` command line. Imports are lazy: the hook path must stay fast."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import gitopsd

from ..gate import snapshot
from ..core.errors import GitopsdError, StoreError, UserError
from .common import load_config as _config
from .common import repository as _repo
from ..services.readmodels import NO_MARKS, deployment_json, release_marks

DEFAULT_CONFIG = os.environ.get("GITOPSD_CONFIG", snapshot.DEFAULT_CONFIG)

DESCRIPTION = """\
GitOps for ordinary servers: environment branches (qa, staging, production) of a bare Git
repository say what must run where; the gitopsd daemon runs each environment's Ansible playbook
against its inventory whenever the branch head differs from what was last deployed. Reverting
a merge on an environment branch rolls that environment back.
"""

EPILOG = """\
typical use:
  gitopsd init /srv/git/shop.git --config /etc/gitopsd/gitopsd.yml --sample
  gitopsd run                          # the daemon (or run it as a systemd service)
  git push deploy main:qa              # from a clone: deploys qa
  gitopsd status                       # desired vs deployed, per environment
  gitopsd rollback production          # revert production to its previous good tree

The config file defaults to $GITOPSD_CONFIG, else /etc/gitopsd/gitopsd.yml.
"""


def plural(n: int, word: str) -> str:
    """`1 repository`, `2 repositories`, `1 batch`, `3 hosts`."""
    if n == 1:
        return f"{n} {word}"
    if word.endswith("y"):
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}{'es' if word.endswith(('s', 'sh', 'ch', 'x')) else 's'}"


def _read_config(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The config for a read-only command, and {repository: problem} for repositories that cannot be read.

    A missing or unreadable repository must not hide the others from `status`, `history` and `logs`;
    any other problem in the config still stops the command. The daemon's snapshot of the file, while
    it matches, spares parsing and validating it (status.read_config).
    """
    import re

    from ..services.status import read_config
    fast = read_config(Path(args.config))
    if fast is not None:
        return fast
    from ..config import ConfigError, load
    try:
        return load(Path(args.config)), {}
    except ConfigError as exc:
        at = [re.fullmatch(r"repositories\[(\d+)\]\.path", p.key) for p in exc.problems]
        if exc.config is None or not all(at):
            raise UserError(f"the configuration has problems (run `gitopsd check-config --config {args.config}`):\n{exc}") \
                from exc
        unavailable = {}
        for match, problem in zip(at, exc.problems, strict=True):
            assert match is not None
            index = int(match.group(1))
            if index < len(exc.config.repositories):
                unavailable[exc.config.repositories[index].name] = problem.message
        return exc.config, unavailable


def _env_name(config: Any, repo_name: str | None, name: str) -> None:
    """Fail unless some (or the named) repository has an environment `name`: a typo must not print an empty table."""
    repos = [r for r in config.repositories if repo_name in (None, r.name)]
    if not any(r.environment(name) for r in repos):
        known = sorted({e.name for r in repos for e in r.environments})
        where = f"repository {repo_name}" if repo_name else config.source
        raise UserError(f"no environment named {name!r} in {where} (known: {', '.join(known) or 'none'})")


def _env(repo: Any, name: str) -> Any:
    env = repo.environment(name)
    if env is None:
        raise UserError(f"repository {repo.name} has no environment {name!r} "
                   f"(it has: {', '.join(e.name for e in repo.environments)})")
    return env


def cli_identity() -> str:
    """Who runs this command: the Unix user (the sudo caller when run through sudo)."""
    import pwd
    if os.getuid() == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    return pwd.getpwuid(os.getuid()).pw_name


def _nudge(config: Any, repo: Any, trigger: str, commits: tuple[str, ...] = (), reason: str | None = None) -> bool:
    from ..gate.nudge import Nudge, send
    return send(config.nudge_socket, Nudge(repo=str(repo.path), trigger=trigger, actor=cli_identity(), commits=commits,
                                           reason=reason))


def _daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon holding the state folder's lock (daemon.py's lock_state_dir), or None.

    Read from /proc/locks, not by trying the lock: a daemon starting at that instant must not find it taken."""
    try:
        info = os.stat(state_dir / "daemon.lock")
        wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def _unreachable(config: Any) -> str | None:
    """What is true when the daemon's sockets are not there although it runs: its runtime folder was removed."""
    try:
        if config.runtime_dir.exists():
            return None
        pid = _daemon_pid(config.state_dir)
    except (AttributeError, OSError):
        return None
    if pid is None:
        return None
    return (f"the runtime folder {config.runtime_dir} is missing: the daemon (pid {pid}) was started with it and "
            "cannot be reached; restart it: systemctl restart gitopsd")


def _not_told(config: Any, absent: str = "the daemon is not running") -> str:
    """The words for a nudge that could not be sent: `absent`, unless the daemon runs without its runtime folder."""
    return _unreachable(config) or absent


# -- commands --------------------------------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load
    try:
        config = load(Path(args.config), writable_folders=True)   # as the unit runs it: as the service user
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

    Warnings, not errors: the content moves with every push, the config does not. One git process per repository.
    """
    from ..base import gitcli
    from ..core.types import EMPTY_TREE
    warnings = []
    for repo in config.repositories:
        envs = repo.environments
        files = [(env, what, path) for env in envs for what, path in (("inventory", env.inventory), ("playbook", env.playbook))]
        # Names on stdin (never taken for options): each branch's tree, then `refs/heads/B:PATH` for each file;
        # git answers "<name> missing" for what is absent.
        asked = [f"refs/heads/{env.branch}^{{tree}}" for env in envs] + [f"refs/heads/{e.branch}:{p}" for e, _w, p in files]
        code, out, _err = gitcli.run(["git", "-C", str(repo.path), "cat-file", "--batch-check=%(objectname) %(objecttype)"],
                                     input="".join(f"{name}\n" for name in asked))
        answers = out.splitlines()
        if code != 0 or len(answers) != len(asked):
            continue   # an unreadable repository is a problem of the config, reported as such
        trees = {env.branch: answers[i].split()[0] for i, env in enumerate(envs) if not answers[i].endswith(" missing")}
        for (env, what, path), answer in zip(files, answers[len(envs):], strict=True):
            # A branch init left at the empty placeholder has nothing yet: its first promotion brings the files.
            if trees.get(env.branch, EMPTY_TREE) != EMPTY_TREE and answer.endswith(" missing"):
                warnings.append(f"{repo.name}/{env.name}: the {what} {path} is not in branch {env.branch}: "
                                "its next deployment fails until a commit adds it")
    return warnings


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    # Importing the daemon takes a while; a SIGHUP meanwhile would end it. Held until daemon.run keeps them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP, signal.SIGTERM, signal.SIGINT})
    from ..daemon import main as daemon
    from ..adapters import logs
    logs.setup(args.log_format, getattr(__import__("logging"), args.log_level.upper()))
    return daemon.run(Path(args.config))


def cmd_hook(args: argparse.Namespace) -> int:
    from ..gate import receive
    return receive.pre_receive(args.config, args.database or "", sys.stdin.read())


GIT_SHELL_NAME = r"[a-z_][a-z0-9_.-]{0,63}"
GIT_SHELL_VERBS = ("git-receive-pack", "git-upload-pack", "git-upload-archive")


def cmd_git_shell(args: argparse.Namespace) -> int:
    """An authorized_keys forced command: git-shell for the person the key's line names, never one the client says."""
    import re
    if not re.fullmatch(GIT_SHELL_NAME, args.name):
        raise UserError(f"git-shell: {args.name!r} is not a user name ([a-z_][a-z0-9_.-]*): fix this key's "
                        "command= in the git user's ~/.ssh/authorized_keys")
    asked = os.environ.get("SSH_ORIGINAL_COMMAND")
    if asked is None:
        raise UserError("git-shell: this key only pushes and fetches with git; there is no interactive login")
    found = re.fullmatch(r"(\S+) '([^'\\]+)'", asked)
    if found is None or found.group(1) not in GIT_SHELL_VERBS:
        raise UserError(f"git-shell: {asked!r} is not a git push, fetch or archive of one repository; this key only "
                        f"runs {', '.join(GIT_SHELL_VERBS)} 'PATH'")
    shell = "/usr/bin/git-shell"
    if not os.access(shell, os.X_OK):
        raise UserError(f"git-shell: {shell} is missing: apt-get install git")
    # Only the key's line names the pusher: other identity variables are dropped (GL_USER would win).
    env = {k: v for k, v in os.environ.items() if k not in ("GL_USER", "REMOTE_USER", "SSH_ORIGINAL_COMMAND")}
    command = f"{found.group(1)} '{found.group(2)}'"   # git-shell parses it; a path with a quote or backslash was refused
    os.execve(shell, ["git-shell", "-c", command], {**env, "GITOPSD_USER": args.name})  # noqa: S606 (argv, no shell)


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
    from ..installers.bootstrap import init_repository
    from ..config import ConfigEditError
    from ..installers.install_hooks import HookError
    try:
        lines = init_repository(Path(args.repo), Path(args.config), name=args.name, sample=args.sample,
                                git_user=args.git_user, service_user=args.service_user)
    except (ConfigEditError, HookError, FileExistsError) as exc:
        raise UserError(str(exc)) from exc
    for line in lines:
        print(line)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from ..installers.doctor import diagnose, probe
    if args.probe:   # as the daemon's user, for a doctor run as root: its findings, one JSON object a line
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
        plan = service.plan(args.user, Path(args.config), root)
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
    for line in service.next_commands(args.user, plan.config, again=bool(plan.first)):
        print(f"  {line}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config, unavailable = _read_config(args)
    if args.repo:
        _repo(config, args.repo)
    if not args.watch:
        return _show_status(args, config, unavailable)
    import time
    try:
        while True:
            print("\033[H\033[2J", end="")   # home and clear: a plain terminal redraw, no curses
            print(f"gitopsd status, every 1s (Ctrl-C to stop)  {time.strftime('%H:%M:%S')}\n")
            _show_status(args, config, unavailable)
            sys.stdout.flush()
            time.sleep(1)
    except KeyboardInterrupt:
        return 0


def _say_store_lost(config: Any, out: Any) -> None:
    """The running daemon's word that its state database was deleted or replaced: what is read here is not its record."""
    from ..adapters.backups import replaced_said
    lost = replaced_said(config.runtime_dir)
    if lost is not None:
        print(f"gitopsd: store-replaced: {lost} (the daemon's log says what to do)", file=out)


def _show_status(args: argparse.Namespace, config: Any, unavailable: dict[str, str]) -> int:
    from ..adapters.store import Store
    from ..services.status import all_status, ago
    store = Store.of(config, readonly=True)
    try:
        rows = all_status(config, store, args.repo, unavailable)
        unwatched = {r: why for r, why in store.unwatched().items() if args.repo in (None, r)}
        daemons = store.daemons()   # a leader and its standby, with PostgreSQL (docs/install.md, "Standby daemon")
    finally:
        store.close()
    _say_store_lost(config, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
        return 0
    table = [("REPO", "ENV", "BRANCH", "DESIRED", "DEPLOYED", "STATE", "LAST DEPLOYMENT")]
    for r in rows:
        last = "-"
        if r.last:
            last = f"#{r.last.id} {r.last.kind} {r.last.result} {ago(r.last.finished_at or r.last.started_at)}"
        table.append((r.repo, r.env, r.branch, (r.desired or "-")[:7], (r.deployed or "-")[:7], r.state, last))
    _print_table(table)
    for r in rows:
        if r.reason:
            print(f"{r.repo}/{r.env}: {r.reason}")
    for repo, why in unwatched.items():
        print(f"{repo}: branch moves are not watched ({why}); the push nudge and the sweep every "
              f"{config.sweep_interval:g}s still find them (`gitopsd doctor`, or the daemon's log, says how to fix it)")
    if daemons:
        print("\ndaemons:")
        for d in daemons:
            heard = (f"heard from {d['seen_ago']:.0f}s ago" if d["seen_ago"] < 30
                     else f"not heard from for {ago(0, d['seen_ago']).removesuffix(' ago')}: stopped or cut off?")
            epoch = f"epoch {d['epoch']}, " if d["role"] == "leader" else ""
            api = f", API {d['api']}" if d["api"] else ""
            print(f"  {d['role']:<8} {d['name']} ({epoch}pid {d['pid']}, {heard}{api})")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    from ..services.status import ago
    config, _unavailable = _read_config(args)
    if args.repo:
        _repo(config, args.repo)
    if args.env:
        _env_name(config, args.repo, args.env)
    with Store.of(config, readonly=True) as store:
        deployments = store.history(repo=args.repo, env=args.env, limit=args.limit)
        admissions = store.admissions(repo=args.repo, env=args.env, limit=args.limit)
        marks = release_marks(config, store, deployments)
    _say_store_lost(config, sys.stderr)
    if args.json:
        print(json.dumps([deployment_json(d, marks.get(d.id)) for d in deployments], indent=2))
        return 0
    table = [("ID", "REPO", "ENV", "KIND", "RESULT", "COMMIT", "STARTED", "TOOK", "TRIGGER", "BY")]
    for d in deployments:
        took = f"{d.finished_at - d.started_at:.1f}s" if d.finished_at else "-"
        table.append((str(d.id), d.repo, d.env, d.kind, d.result, d.commit[:7], ago(d.started_at), took, d.trigger, d.actor))
    _print_table(table)
    for d in deployments:
        if d.reason:
            print(f"#{d.id}: {d.reason}")
        mark = marks.get(d.id, NO_MARKS)
        gates = ([f"rc/{mark['rc']} approved by {', '.join(mark['approved_by']) or 'nobody'}"] if mark["rc"] else []) \
            + ([f"signed off by {', '.join(mark['signed_off_by'])}"] if mark["signed_off_by"] else [])
        if gates:
            print(f"#{d.id}: {'; '.join(gates)}")
        if d.outcome and d.result != "succeeded":
            print(f"#{d.id}: {d.result}: {d.outcome}")
    if admissions:
        print("\nadmitted past the promotion rule by an operator:")
        for a in admissions:
            print(f"  {a.repo}/{a.env} {a.commit[:7]} ({a.kind}) by {a.actor} {ago(a.created_at)}: {a.reason}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from ..core.types import DeploymentFolders
    from ..adapters.store import Store
    config, _unavailable = _read_config(args)
    if args.ci is not None or args.deployment_id is None:
        return _ci_logs(config, args.ci)
    with Store.of(config, readonly=True) as store:
        dep = store.get(args.deployment_id)
    if dep is None:
        raise UserError(f"no deployment #{args.deployment_id} (see `gitopsd history`)")
    print(f"# deployment #{dep.id}: {dep.repo}/{dep.env} {dep.kind} of {dep.commit} -> {dep.result}"
          + (f": {dep.outcome}" if dep.outcome else ""))
    if dep.reason:
        print(f"# why: {dep.reason}")
    batches = dep.batches
    for batch in batches:
        checks = "; ".join(f"{c.name}: {'ok' if c.ok else 'FAILED'} ({c.detail})" for c in batch.checks)
        print(f"# batch {batch.batch}: {batch.result} on {', '.join(batch.hosts) or 'all hosts'}"
              + (f"; checks: {checks}" if checks else ""))
    outputs = DeploymentFolders.of(config.state_dir, dep.id).outputs()
    if not outputs:
        print("# no Ansible output was recorded (the run did not start, or its folder was removed)")
    for what, number, stdout in outputs:
        print(f"# --- {'verification playbook' if what == 'verify' else 'playbook'}, "
              f"{f'batch {number}' if len(batches) > 1 else 'run'} ---")
        sys.stdout.write(stdout.read_text(encoding="utf-8", errors="replace"))
    return 0


def _ci_logs(config: Any, run_id: int | None) -> int:
    """`logs --ci RUN_ID`: a built-in CI run's steps and their output (gitopsd/ci/runs.py)."""
    from ..ci import runs
    if run_id is None:
        raise UserError("say which deployment (`gitopsd logs DEPLOYMENT_ID`) or CI run (`gitopsd logs --ci RUN_ID`)")
    try:
        lines = runs.describe(config.ci_dir, run_id)
    except LookupError as exc:
        raise UserError(str(exc)) from exc
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from ..services import operations
    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    who = cli_identity()
    return _said(operations.rollback(lambda: Store.of(config, readonly=args.to is None), repo, args.env, who,
                                     to=args.to, announce=_announcer(config, repo)), config)


def cmd_promote(args: argparse.Namespace) -> int:
    from ..services import operations
    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    return _said(operations.promote(config, lambda: Store.of(config, readonly=True), repo, args.src, args.dst,
                                    cli_identity(), override=args.override, dry_run=args.dry_run,
                                    announce=_announcer(config, repo)), config)


def cmd_retry(args: argparse.Namespace) -> int:
    from ..services import operations
    from ..gate.nudge import user_name
    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    # --force: the Unix user as the kernel says (no variable can claim another), checked against override_by
    who = user_name(os.getuid())
    return _said(operations.retry(config, lambda: Store.of(config), repo, args.env, who, force=args.force,
                                  reason=args.reason, announce=_announcer(config, repo)))


def _announcer(config: Any, repo: Any) -> Any:
    """The operations' announce: the nudge to the daemon, as the Unix user who runs the command."""
    return lambda trigger, commits, reason: _nudge(config, repo, trigger, commits, reason=reason)


def _said(outcome: Any, config: Any = None) -> int:
    """Print an operation's lines (stdout when done, stderr when refused); its exit code. With `config`, a daemon
    that could not be told although it runs (its runtime folder removed) is said to be so, not to be stopped."""
    from ..services.operations import nudged
    lines = list(outcome.lines)
    if config is not None and nudged(False) in lines:
        lines = [_not_told(config, line) if line == nudged(False) else line for line in lines]
    print("\n".join(lines), file=sys.stdout if outcome.ok else sys.stderr)
    return 0 if outcome.ok else 1


def cmd_suspend(args: argparse.Namespace) -> int:
    import time

    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    who = cli_identity()
    store = Store.of(config)
    store.suspend(repo.name, env.name, actor=who, reason=args.reason, now=time.time())
    running = store.last(repo.name, env.name)
    store.close()
    _nudge(config, repo, "suspend")
    busy = running is not None and running.active
    print(f"{repo.name}/{env.name}: suspended by {who}" + (f" ({args.reason})" if args.reason else "")
          + ": no deployment starts until `gitopsd resume " + env.name + "`"
          + (f"; deployment #{running.id} still runs to its end" if busy and running else ""))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    store = Store.of(config)
    was = store.resume(repo.name, env.name)
    store.close()
    if not was:
        print(f"{repo.name}/{env.name}: was not suspended")
        return 0
    sent = _nudge(config, repo, "resume")
    print(f"{repo.name}/{env.name}: resumed; " + ("the daemon looks at it now" if sent else _not_told(config)))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    import time

    from ..base import gitcli
    from ..adapters.store import Store
    config = _config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    store = Store.of(config)
    try:
        deployed = store.deployed(repo.name, env.name)
        if deployed is None:
            raise UserError(f"nothing was ever deployed successfully to {env.name}: there is nothing to re-apply")
        head = gitcli.branch_head(repo.path, env.branch)
        if head != deployed.commit:
            raise UserError(f"{env.branch} is at {(head or 'nothing')[:7]}, not at the deployed {deployed.commit[:7]}: the "
                       f"daemon deploys the head, not a re-apply (see `gitopsd status`; `gitopsd retry {env.name}` "
                       "after a stall)")
        hold = store.suspension(repo.name, env.name)
        if hold is not None:
            raise UserError(f"{env.name} is suspended by {hold.actor}: `gitopsd resume {env.name}` first")
        store.request_sync(repo.name, env.name, commit=head, actor=cli_identity(), reason=args.reason, now=time.time())
    finally:
        store.close()
    sent = _nudge(config, repo, "sync")
    print(f"{repo.name}/{env.name}: re-applying {head[:7]} (kind reapply); "
          + ("the daemon starts it now; follow with `gitopsd status`" if sent
             else _not_told(config, "the daemon is not running: it starts it when it is back")))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a commit's deployment to succeed (0), fail (1) or for the timeout (2), saying so in one line."""
    import time

    from ..base import gitcli
    from ..adapters.store import Store
    from ..services.status import environment_status
    config = _config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    commit = gitcli.branch_head(repo.path, env.branch) if args.commit is None else \
        gitcli.rev_parse(repo.path, f"{args.commit}^{{commit}}")
    if commit is None:
        raise UserError(f"{args.commit or env.branch} is not a commit in {repo.path}")
    deadline = time.monotonic() + args.timeout
    where = f"{repo.name}/{env.name}"
    while True:
        store = Store.of(config, readonly=True)
        try:
            # The sync request first: the daemon records the reapply before it drops the request, so a sync
            # (`gitopsd sync` just before) is seen either pending or as the newest deployment of the commit.
            sync = store.sync_request(repo.name, env.name)
            done = [d for d in store.history(repo=repo.name, env=env.name, limit=200) if d.commit == commit]
            row = environment_status(store, repo, env)
            failure = store.failure(repo.name, env.name)
        finally:
            store.close()
        pending = (sync is not None and sync.commit == commit) or (bool(done) and done[0].active)
        good = done[0] if done and not pending and done[0].result == "succeeded" else None
        if good is not None:
            print(f"{where}: {commit[:7]} deployed and verified (deployment #{good.id}, {good.kind})")
            return 0
        # "failed" while retries remain is not the end; failed for good (its automatic rollback failed too) is,
        # and so is a failed reapply of what runs (nothing retries it).
        given_up = row.state in ("stalled", "blocked") or (row.state == "failed" and not pending and (
            (failure is not None and failure.failed) or row.deployed == commit))
        if row.desired == commit and given_up:
            print(f"{where}: {commit[:7]} {row.state}: {row.reason or '-'}")
            return 1
        if row.desired != commit and not (row.state == "deploying" and row.last and row.last.commit == commit):
            failed = next((d for d in done if not d.active), None)
            why = (f"its deployment #{failed.id} {failed.result}: {failed.outcome}" if failed
                   else "it was never deployed")
            print(f"{where}: {commit[:7]} is no longer the head of {env.branch} ({(row.desired or 'none')[:7]} is); {why}")
            return 1
        if time.monotonic() >= deadline:
            print(f"{where}: timed out after {args.timeout:g}s waiting for {commit[:7]} ({row.state})")
            return 2
        time.sleep(0.5)


def cmd_hosts(args: argparse.Namespace) -> int:
    from ..services.hosts import TrustError, trust
    config = _config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    try:
        return trust(config, repo, env, yes=args.yes, ref=args.ref)
    except TrustError as exc:
        raise UserError(str(exc)) from exc


def cmd_node(args: argparse.Namespace) -> int:
    """`node check NAME [--trust]`: connect to an execution node, show its versions, refuse a mismatched ansible-runner."""
    from ..services.nodes import NodeCheckError, check
    config = _config(args)
    try:
        return check(config, args.name, trust=args.trust, yes=args.yes)
    except NodeCheckError as exc:
        raise UserError(str(exc)) from exc


def cmd_drift(args: argparse.Namespace) -> int:
    """What the newest drift check found in ENV: per host, the tasks that would change and their diffs."""
    from ..adapters.store import Store
    from ..services.status import ago
    config, _unavailable = _read_config(args)
    repo = _repo(config, args.repo)
    env = _env(repo, args.env)
    with Store.of(config, readonly=True) as store:
        report = store.drift_report(repo.name, env.name)
        deployed = store.deployed(repo.name, env.name)
    stale = report is not None and (deployed is None or report.deployment_id != deployed.id)
    if args.json:
        print(json.dumps(None if report is None else {**report.as_json(), "current": not stale}, indent=2))
        return 0
    where = f"{repo.name}/{env.name}"
    if report is None:
        print(f"{where}: no drift check yet (`drift: {{interval: 1h}}` on the environment turns them on)")
        return 0
    state = {"baseline": "no drift (this was the baseline run)", "clean": "no drift", "drifted": "drifted",
             "unknown": "drift unknown"}.get(report.state, report.state)
    print(f"{where}: {state}, checked {ago(report.checked_at)} against deployment #{report.deployment_id}"
          + (" (an older deployment: the one running now was not checked yet)" if stale else ""))
    if report.reason:
        print(f"  {report.reason}")
    if report.state != "drifted":
        return 0
    for host in report.hosts:
        print(f"\n{host}:")
        for change in (c for c in report.changes if c.host == host):
            place = change.key.partition("|")[2]
            print(f"  {change.task}" + (f" ({place})" if place else "") + ": would change")
            if change.no_log:
                print("    (no_log: values hidden)")
            for line in change.diff.splitlines():
                print(f"    {line}")
    return 0


def _tokens_file(config: Any) -> Path:
    if config.api is None:
        raise UserError(f"the HTTP API is not configured: add `api: {{listen: \"127.0.0.1:8470\", tokens_file: "
                        f"tokens.yml}}` to {config.source} (docs/api.md)")
    return Path(config.api.tokens_file)


def _daemon_group(config: Any) -> int:
    """The group the daemon reads its files with: its state folder's owner's (install-service), else the config's."""
    from ..adapters.ownership import daemon_account
    account = daemon_account(config.state_dir)
    return account.gid if account is not None else os.stat(config.source).st_gid


def cmd_token_create(args: argparse.Namespace) -> int:
    from ..services.tokens import create
    config = _config(args)
    path = _tokens_file(config)
    contexts, repos = _patterns(args.contexts), _patterns(args.repos)
    secret = create(path, args.name, args.scope or [], created_by=cli_identity(), group=_daemon_group(config),
                    owner=args.owner, contexts=contexts, repos=repos)
    print(secret)
    print(f"token {args.name} created with scope {', '.join(dict.fromkeys(args.scope))}"
          + (f", acting as {args.owner or args.name} for sign-offs and approvals" if "approvals:write" in args.scope else "")
          + (f", reporting only contexts {', '.join(contexts)}" if contexts else "")
          + (f", only for repositories {', '.join(repos)}" if repos else "")
          + f" in {path}. The secret above "
          "is shown only this once: put it in your CI's secret store (the daemon takes it from its next request).",
          file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from ..services.tokens import read_tokens
    path = _tokens_file(_config(args))
    tokens = read_tokens(path)
    if not tokens:
        print(f"no API tokens in {path} (create one with `gitopsd token create NAME --scope read`)")
        return 0
    _print_table([("NAME", "SCOPES", "OWNER", "CONTEXTS", "REPOS", "CREATED", "BY")]
                 + [(t.name, ",".join(t.scopes), t.identity, ",".join(t.contexts) or "*", ",".join(t.repos) or "*",
                     t.created_at, t.created_by) for t in tokens])
    return 0


def _patterns(given: list[str] | None) -> tuple[str, ...]:
    """`--contexts`/`--repos` as given, each repeatable and comma-separated: the glob patterns, in order."""
    return tuple(p.strip() for value in given or () for p in value.split(",") if p.strip())


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from ..services.tokens import read_tokens, revoke
    config = _config(args)
    path = _tokens_file(config)
    if not revoke(path, args.name, _daemon_group(config)):
        known = ", ".join(t.name for t in read_tokens(path)) or "none"
        raise UserError(f"no API token named {args.name!r} in {path} (known: {known})")
    print(f"token {args.name} revoked: the daemon refuses it from its next request")
    return 0


CI_REPORT_OPTIONS = {"state": "--state", "context": "--context", "target_url": "--url", "description": "--description"}


def cmd_ci_report(args: argparse.Namespace) -> int:
    """Store a commit status as the API does (same checks), reported as cli:<user>, and nudge the daemon."""
    from ..adapters.store import Store
    from ..api.statuses import InvalidStatus, parse_report, record, resolve_commit
    config = _config(args)
    repo = _repo(config, args.repo)
    try:
        report = parse_report({"state": args.state, "context": args.context, "target_url": args.url,
                               "description": args.description})
    except InvalidStatus as exc:
        raise UserError(f"{CI_REPORT_OPTIONS.get(exc.field, exc.field)}: {exc.message}") from exc
    commit, tree = resolve_commit(repo.path, args.commit)
    reporter = f"cli:{cli_identity()}"
    with Store.of(config) as store:
        record(store, repo.name, commit, tree, report, reporter)
    sent = _nudge(config, repo, "ci-status")
    print(f"{repo.name}: {report.context} {report.state} for {commit[:7]} (tree {tree[:7]}), reported by {reporter}"
          + ("; the daemon looks at it now" if sent else f"; {_not_told(config)}"))
    return 0


def cmd_ci_status(args: argparse.Namespace) -> int:
    """The combined state of a commit's tree, each context's state and URL, and what each environment still needs."""
    from ..adapters.store import Store
    from ..api.statuses import combined, resolve_commit
    from ..gate.required import Status, unmet
    from ..services.status import ago
    config = _config(args)
    repo = _repo(config, args.repo)
    commit, tree = resolve_commit(repo.path, args.commit)
    with Store.of(config, readonly=True) as store:
        shown = combined(store, repo.name, commit, tree)
        statuses = store.statuses(repo.name, tree)
    needs = {env.name: {"require_checks": list(env.require_checks),
                        "unmet": unmet(env.require_checks, statuses)}
             for env in repo.environments if env.require_checks}
    if args.json:
        print(json.dumps({**shown, "environments": needs}, indent=2))
        return 0
    print(f"{repo.name} {commit[:7]} (tree {tree[:7]}): {shown['state']}"
          + ("" if statuses else " (no status reported for this tree)"))
    if statuses:
        by_context: dict[str, Status] = {s.context: s for s in statuses}
        _print_table([("CONTEXT", "STATE", "BY", "WHEN", "URL")]
                     + [(s.context, s.state, s.reporter + ("" if s.commit == commit else f" on {s.commit[:7]}"),
                         ago(s.created_at), s.target_url or "-") for s in by_context.values()])
    for env, need in needs.items():
        print(f"{env} requires {', '.join(need['require_checks'])}: "
              + ("all passed" if not need["unmet"] else "; ".join(need["unmet"])))
    return 0


def cmd_ci_rerun(args: argparse.Namespace) -> int:
    """Ask the daemon (its control socket: the kernel says who asks) to run CI again on a head, recorded with that name."""
    from .human import _ask
    return _ask(args, {"op": "ci-rerun", "head": args.head})


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# -- parser ----------------------------------------------------------------------------------------

def cmd_dora(args: argparse.Namespace) -> int:
    import time

    from ..services import dora
    from ..adapters.store import Store
    config, _unavailable = _read_config(args)
    repos = [_repo(config, args.repo)] if args.repo else list(config.repositories)
    env = args.env
    if env is None:   # the last environment in promotion order (production in the default layout)
        lasts = sorted({r.environments[-1].name for r in repos if r.environments})
        if len(lasts) != 1:
            raise UserError(f"the repositories end in different environments ({', '.join(lasts) or 'none'}): "
                            "say which with --env NAME")
        env = lasts[0]
    _env_name(config, args.repo, env)
    try:
        window = dora.parse_span(args.since)
    except ValueError as exc:
        raise UserError(f"--since: {exc}") from exc
    now = time.time()
    with Store.of(config, readonly=True) as store:
        figures = dora.figures(store, args.repo, env, now - window, now)
    if args.json:
        print(json.dumps(figures.as_json(), indent=2))
    else:
        print("\n".join(dora.text(figures, args.since)))
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Bring the state database's schema to this gitopsd's version (the daemon does it at start too)."""
    from ..adapters.dbcopy import open_spec
    from ..adapters.store import Store
    store = open_spec(args.database, readonly=False) if args.database else Store.of(_config(args))
    with store:
        before, after = store.versions
        if before == after:
            print(f"{store.location}: the schema is at version {after}, nothing to do")
        else:
            print(f"{store.location}: the schema went from version {before} to {after}"
                  + (" (a store from before schema versions, upgraded in place)" if before == 0 else ""))
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    """Copy every table of one state database into another (SQLite to PostgreSQL, or back)."""
    from ..adapters import dbcopy
    with dbcopy.open_spec(args.source, readonly=True) as source, dbcopy.open_spec(args.target, readonly=False) as target:
        if source.location == target.location:
            raise UserError(f"--from and --to are the same database ({source.location})")
        copied = dbcopy.copy(source, target, force=args.force)
        total = sum(copied.values())
        print(f"copied {total} row{'s' if total != 1 else ''} in {len(copied)} tables from {source.location} "
              f"to {target.location}{' (its records were replaced: --force)' if args.force else ''}")
        for table, rows in copied.items():
            if rows:
                print(f"  {table}: {rows}")
        print("The source is unchanged. To run on the copy, set `database:` in the config to it, then restart "
              "the daemon.")
    return 0


def _sqlite_only(config: Any, what: str) -> None:
    if getattr(config, "database_url", ""):
        raise UserError(f"`gitopsd db {what}` is for the SQLite state database; with PostgreSQL use its own tools "
                        f"(pg_dump, pg_restore)")


def cmd_db_backup(args: argparse.Namespace) -> int:
    """Copy the state database while the daemon runs (SQLite's online backup)."""
    from ..adapters import backups
    config = _config(args)
    _sqlite_only(config, "backup")
    target = Path(args.to) if args.to else backups.folder(config.backup_dir, config.state_dir)
    made = backups.backup(config.database, target)
    print(f"copied the state database {config.database} to {made}; restore it with `gitopsd db restore {made}` "
          f"(with the daemon stopped)")
    return 0


def cmd_db_restore(args: argparse.Namespace) -> int:
    """Put a backup in place of the state database, the current one kept beside it; the daemon must be stopped."""
    import time
    from ..adapters import backups
    config = _config(args)
    _sqlite_only(config, "restore")
    source = Path(args.file).absolute()
    backups.check_store_file(source)   # before anything else: a wrong file changes nothing
    with backups.daemon_stopped(config.state_dir, f"gitopsd db restore {source}"):
        deployments, aside = backups.restore(source, config.database, time.time())
    print(f"restored {config.database} from {source} ({deployments} deployment{'s' if deployments != 1 else ''})")
    if aside is not None:
        print(f"the file it replaced was moved to {aside}")
    print("start the daemon again (systemctl start gitopsd)")
    return 0


def cmd_db_rebuild(args: argparse.Namespace) -> int:
    """Rebuild the deployment records, sign-offs, release candidates and approvals from the git notes."""
    import time
    from ..services import notes_ledger
    from ..adapters import backups
    config = _config(args)
    _sqlite_only(config, "rebuild")
    with backups.daemon_stopped(config.state_dir, "gitopsd db rebuild"):
        report = notes_ledger.rebuild(config, time.time())
    print("\n".join(report.lines()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitopsd", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gitopsd {gitopsd.__version__}")
    # Global options go before or after the command: the default is filled in after parsing (main), so
    # a subcommand's unset option cannot overwrite one given before the command.
    debug: dict[str, Any] = {"action": "store_true", "default": argparse.SUPPRESS, "help": "show the full traceback of an error"}
    config: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": "FILE",
              "help": "server configuration file (default: $GITOPSD_CONFIG or /etc/gitopsd/gitopsd.yml)"}
    parser.add_argument("--debug", **debug)
    parser.add_argument("--config", **config)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", **debug)
    common.add_argument("--config", **config)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, helptext: str, description: str, func: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=helptext, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("init", "create or adopt a deployment repository and register it",
            "Create the bare repository REPO (or adopt an existing one), create missing environment branches\n"
            "from main, install the hooks, and add a repository entry with the default environments\n"
            "(qa, staging, production) to the config file, creating it if needed.", cmd_init)
    p.add_argument("repo", metavar="REPO", help="path of the bare repository, e.g. /srv/git/shop.git")
    p.add_argument("--name", help="repository name in the config (default: REPO's folder name without .git)")
    p.add_argument("--sample", action="store_true",
                   help="seed main with gitopsd's sample web app and Ansible content (only if main does not exist)")

    def add_users(p: argparse.ArgumentParser) -> None:
        p.add_argument("--git-user", metavar="USER",
                       help="the user pushes arrive as (default: the repository's owner unless root, else git)")
        p.add_argument("--service-user", metavar="USER", help="the daemon's user (default: the owner of the configured state folder, which install-service makes)")
    add_users(p)

    p = add("install-hooks", "install gitopsd's pre-receive hook (the promotion gate) into a repository",
            "Install the static pre-receive shim into REPO/hooks and record in REPO's git config what it runs\n"
            "(this Python, the config file, the state database). Idempotent; a hook that was there before is\n"
            "kept as pre-receive.chained and runs first. Also saves the hook's snapshot of the config when it\n"
            "can (the daemon does at start and on reload), so pushes need not parse YAML. As root, sets up the\n"
            "permissions of docs/install.md's Permissions section: REPO owned by the git user and the daemon's group,\n"
            "group-writable, core.sharedRepository=group, REPO in the daemon user's safe.directory.",
            cmd_install_hooks)
    p.add_argument("repo", metavar="REPO", help="path of the bare repository")
    add_users(p)

    p = add("doctor", "check permissions, hook and sandbox as the service and the pushers use them",
            "Check each configured repository and the service as they are used: the repository owned by the\n"
            "git user and the daemon's group, group-writable (the daemon writes rollback commits), the git\n"
            "user in the daemon's group (it reads the state database, sends nudges on the socket), the hook\n"
            "installed with a Python the git user can run and the config's database, the daemon user's\n"
            "safe.directory, bubblewrap; and, as the daemon's user for real, every file the daemon reads\n"
            "(config, tokens, vault passwords, known hosts), its state folder written, a no-op playbook and\n"
            "a no-op CI step run in the sandbox. Prints ok or the problem with the command that fixes it.\n"
            "Exit code 1 if there is any problem. Run it as root to check as the other users.", cmd_doctor)
    add_users(p)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)   # the part run as the daemon's user

    p = add("run", "run the daemon in the foreground",
            "Run the reconciler daemon in the foreground, logging to stderr. It refuses to start on an invalid\n"
            "config. SIGHUP reloads the config (a bad one is refused, the old one kept); SIGTERM stops it,\n"
            "letting running deployments finish within stop_grace seconds.", cmd_run)
    p.add_argument("--log-format", choices=("plain", "json"), default="plain",
                   help="plain lines (no timestamps under journald) or JSON lines for log shippers")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")

    p = add("install-service", "install gitopsd as a systemd service",
            "Write the hardened systemd unit with the real path of this gitopsd and the configured repositories\n"
            "as its writable folders, create the service user and group, let that group read the config file;\n"
            "then print the systemctl commands to enable it. Run it after `gitopsd init` (the config must\n"
            "exist and be valid), and again after adding a repository.",
            cmd_install_service)
    p.add_argument("--user", default="gitopsd", help="service user and group (default: gitopsd)")
    p.add_argument("--root", default="/", metavar="DIR", help="install into another root folder (default: /)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done and change nothing")

    p = add("status", "show desired vs deployed commit and state per environment",
            "For each repository and environment: the branch head (desired), the last successfully deployed\n"
            "commit (deployed), the state (in-sync, deploying, out-of-sync, failed, stalled, blocked,\n"
            "missing-branch) and the last deployment. Works with or without the daemon running.", cmd_status)
    p.add_argument("--repo", metavar="NAME", help="only this repository")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", action="store_true", help="show it again every second until Ctrl-C")

    p = add("history", "list deployments, newest first",
            "List deployments, newest first: id, repo, env, commit, kind (deploy, rollback, reapply), result\n"
            "(running, succeeded, failed, canceled, interrupted), times, trigger and who caused it.", cmd_history)
    p.add_argument("env", nargs="?", metavar="ENV", help="only this environment")
    p.add_argument("--repo", metavar="NAME", help="only this repository")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="show at most N deployments (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("logs", "print the Ansible output of one deployment, or the output of a CI run's steps",
            "Print the Ansible output of one deployment; with --ci, each step of a built-in CI run and its output.",
            cmd_logs)
    p.add_argument("deployment_id", type=int, nargs="?", metavar="DEPLOYMENT_ID",
                   help="a deployment id from `gitopsd history`")
    p.add_argument("--ci", type=int, metavar="RUN_ID",
                   help="a built-in CI run instead (its id is in its gitopsd/<step> statuses and the daemon's log)")

    p = add("rollback", "roll an environment back to its previous good state",
            "Make a revert commit on the environment branch whose tree is the tree that ran before the current\n"
            "one (earlier rollbacks undone first), or the current tree when the head has not run; move the\n"
            "branch there (compare-and-swap: a concurrent push is never overwritten) and nudge the daemon,\n"
            "which deploys it as a rollback. --to goes back to any earlier successful deployment's tree.",
            cmd_rollback)
    p.add_argument("env", metavar="ENV", help="environment name, e.g. production")
    p.add_argument("--to", type=int, metavar="DEPLOYMENT_ID",
                   help="roll back to the tree of this successful deployment (from `gitopsd history ENV`); recorded")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("promote", "promote what one environment runs to the next, with exactly its tree",
            "Make the canonical promotion commit on DST: parents [DST head, SRC head], tree exactly SRC head's\n"
            "tree, after checking the same rule as the pre-receive hook (the tree was deployed and verified in\n"
            "SRC, the deploy window is open). Moves DST by compare-and-swap and nudges the daemon.\n"
            "SRC is an environment, DST's source branch (main for the first environment), or a release\n"
            "candidate rc/NAME (for an environment with approvals: docs/human-gates.md).", cmd_promote)
    p.add_argument("src", metavar="SRC", help="source environment, main, or rc/NAME")
    p.add_argument("dst", metavar="DST", help="destination environment")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--dry-run", action="store_true", help="show the decision without moving anything")
    p.add_argument("--override", metavar="REASON",
                   help="emergency override of a closed deploy window (only identities in override_by)")

    p = add("retry", "clear a stalled environment so the daemon tries again",
            "Clear the failure count and stall of an environment (and the trees marked bad there by an\n"
            "automatic rollback) and nudge the daemon to try the branch head again. --force also deploys a\n"
            "head the daemon blocked (only identities in the environment's override_by; recorded).", cmd_retry)
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--force", action="store_true",
                   help="admit the branch head past the promotion rule (override_by only; shown by history)")
    p.add_argument("--reason", metavar="TEXT", help="why, recorded with --force")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("suspend", "stop deployments to an environment until `resume` (shown in status)",
            "Suspend ENV: the daemon starts no deployment there (not for a push, a retry, a rollback or a sync)\n"
            "until `gitopsd resume ENV`. A deployment already running finishes. Pushes are still judged and\n"
            "accepted; status shows `suspended` with who suspended it and why.", cmd_suspend)
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--reason", metavar="TEXT", help="why, shown by status")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("resume", "let the daemon deploy to a suspended environment again",
            "Resume ENV after `gitopsd suspend` and nudge the daemon, which deploys the branch head at once\n"
            "if it differs from what is deployed.", cmd_resume)
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("sync", "re-apply what an environment runs now (a `reapply` deployment)",
            "Run ENV's playbook again with the commit it runs now, although it is in sync: a deployment of kind\n"
            "reapply (e.g. after a host was rebuilt or changed by hand). Only when the branch head is what is\n"
            "deployed; recorded with who asked.", cmd_sync)
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--reason", metavar="TEXT", help="why, recorded with the deployment")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("wait", "wait until a commit is deployed to an environment (for CI scripts)",
            "Wait until COMMIT (default: the branch head now) is deployed and verified in ENV. Prints one line.\n"
            "Exit code 0: deployed and verified; 1: its deployment failed, stalled or was blocked, or the branch\n"
            "moved on without it; 2: --timeout passed first.", cmd_wait)
    p.add_argument("env", metavar="ENV", help="environment name")
    p.add_argument("--commit", metavar="COMMIT", help="the commit to wait for (default: the branch head)")
    p.add_argument("--timeout", type=float, default=600, metavar="SECONDS", help="give up after this long (default 600)")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")

    p = add("hosts", "trust the SSH host keys of an environment's hosts (prints fingerprints first)",
            "trust ENV: read ENV's inventory from its branch head (in the sandbox, as a deployment does), ask each\n"
            "SSH host for its host keys with ssh-keyscan, print their fingerprints and whether they are new or\n"
            "changed, and after confirmation record them in the known_hosts file playbook runs check against\n"
            "(ssh.known_hosts in the config). Exit code 1 if a host did not answer or nothing was recorded (0 when\n"
            "every host's keys were recorded already). Before an environment's first promotion its branch has no\n"
            "inventory: --ref names what would be promoted (e.g. --ref staging).",
            cmd_hosts)
    p.add_argument("action", choices=("trust",), help="trust: record the hosts' current keys")
    p.add_argument("env", metavar="ENV", help="environment name, e.g. production")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--yes", action="store_true", help="record without asking (check the fingerprints some other way)")
    p.add_argument("--ref", metavar="REF", help="read ENV's inventory from this commit or branch instead of ENV's "
                   "branch head (the tree that would be promoted)")

    p = add("node", "check an execution node: connect, show its Python, ansible-core and ansible-runner",
            "check NAME: connect to the execution node NAME over SSH (its host key checked against ssh.known_hosts),\n"
            "print its Python, ansible-core and ansible-runner versions, and refuse (exit code 1) an ansible-runner\n"
            "whose major.minor differs from the controller's. --trust first records the node's host key after\n"
            "showing its fingerprint (docs/install.md, \"Execution nodes\").",
            cmd_node)
    p.add_argument("action", choices=("check",), help="check: connect and compare versions")
    p.add_argument("name", metavar="NAME", help="the execution node's name in execution_nodes")
    p.add_argument("--trust", action="store_true", help="record the node's SSH host key first (shows its fingerprint)")
    p.add_argument("--yes", action="store_true", help="with --trust: record without asking")

    p = add("drift", "what drift detection found on an environment's hosts (tasks and diffs per host)",
            "Show the newest drift check of ENV (docs/operate.md, \"Drift detection\"): the deployed tree's playbook run\n"
            "in check mode with diff; per host, the tasks that would change outside the baseline taken right\n"
            "after the deployment, with their diffs (never the values of no_log tasks). `drift unknown` means\n"
            "the check-mode run itself failed. Reads the state database only.", cmd_drift)
    p.add_argument("env", metavar="ENV", help="environment name, e.g. production")
    p.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("token", "create, list or revoke tokens of the HTTP API",
            "Tokens of the daemon's HTTP API (docs/api.md): named, scoped (statuses:write to report\n"
            "and read back commit statuses, limited by --contexts and --repos, never gitopsd/ contexts, the built-in\n"
            "CI's; read for status and history; approvals:write for sign-offs, release candidates and\n"
            "approvals as the token's --owner), kept as sha256 only in api.tokens_file. `create`\n"
            "prints the secret once; the daemon reads the file again when it changes (no restart).",
            cmd_token_list)
    token = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = token.add_parser("create", parents=[common], help="create a token and print its secret once")
    t.set_defaults(func=cmd_token_create)
    t.add_argument("name", metavar="NAME", help="who uses it, e.g. jenkins (recorded as the reporter of its statuses)")
    t.add_argument("--scope", "--scopes", action="append", metavar="SCOPE",
                   help="statuses:write (also reads statuses back, as GitHub's repo:status), read or approvals:write; "
                        "repeat for several")
    t.add_argument("--owner", metavar="USER",
                   help="the identity its requests act as for sign-offs and approvals (default: NAME)")
    t.add_argument("--contexts", action="append", metavar="PATTERN",
                   help="glob patterns of the status contexts it may report, e.g. 'ci/*' (default: any but gitopsd/...)")
    t.add_argument("--repos", action="append", metavar="PATTERN",
                   help="glob patterns of the repositories it may report for, e.g. shop (default: any)")
    t = token.add_parser("list", parents=[common], help="list tokens: name, scopes, created (never secrets)")
    t.set_defaults(func=cmd_token_list)
    t = token.add_parser("revoke", parents=[common], help="delete a token (refused from the next request)")
    t.set_defaults(func=cmd_token_revoke)
    t.add_argument("name", metavar="NAME")

    p = add("dora", "DORA figures of an environment from gitopsd's own history",
            "Deployment frequency, lead time for changes (from when each commit first reached the server to its\n"
            "first successful deployment in ENV), change failure rate, failed deployment recovery time and rework\n"
            "rate of one environment over a window (docs/monitoring.md, \"DORA figures\", defines each). Reads the state\n"
            "database only.", cmd_dora)
    p.add_argument("--env", metavar="ENV", help="the environment (default: the last in promotion order, e.g. production)")
    p.add_argument("--since", default="90d", metavar="SPAN", help="the window: 90d, 12h, 2w (default 90d)")
    p.add_argument("--repo", metavar="NAME", help="only this repository (default: every repository with ENV)")
    p.add_argument("--json", action="store_true", help="machine-readable output (times in seconds)")

    p = add("ci", "report or show commit statuses (CI results) by tree",
            "Commit statuses, as the HTTP API takes them: `report` stores one for a commit and its tree (for\n"
            "jobs on the deploy server) and nudges the daemon; `status` shows a commit's combined state, each\n"
            "context's state and URL, and which required checks each environment still misses; `rerun` asks\n"
            "the daemon to run CI again on a head (as you: the control socket says who asks).", cmd_ci_status)
    ci = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = ci.add_parser("report", parents=[common], help="store a commit status (reporter cli:<user>)")
    c.set_defaults(func=cmd_ci_report)
    c.add_argument("--commit", required=True, metavar="COMMIT", help="commit id (40 hex digits or at least 7)")
    c.add_argument("--context", default="default", metavar="CONTEXT",
                   help="e.g. ci/test (default: default); gitopsd/... are the built-in CI's alone")
    c.add_argument("--state", required=True, metavar="STATE", help="pending, success, failure or error")
    c.add_argument("--url", metavar="URL", help="http(s) link to the job's output")
    c.add_argument("--description", metavar="TEXT", help="one line on the result")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c = ci.add_parser("status", parents=[common], help="a commit's combined state and each context's state and URL")
    c.set_defaults(func=cmd_ci_status)
    c.add_argument("commit", metavar="COMMIT", help="commit id (40 hex digits or at least 7)")
    c.add_argument("--repo", metavar="NAME", help="repository name (needed when several are configured)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c = ci.add_parser("rerun", parents=[common],
                      help="run CI again on a head: the built-in steps anew and the CI triggers sent again")
    c.set_defaults(func=cmd_ci_rerun)
    c.add_argument("repo", metavar="REPO", help="repository name")
    c.add_argument("head", metavar="HEAD", help="a CI branch (e.g. main) or the commit at its head")

    p = add("db", "upgrade, copy, back up, restore or rebuild the state database",
            "`upgrade` brings the state database's schema to this gitopsd's version (the daemon does it at\n"
            "start too). `copy` copies every table, ids kept, from one state database to another: a SQLite\n"
            "file (sqlite:/var/lib/gitopsd/state.db) or PostgreSQL (postgresql://user@host/name). Stop the\n"
            "daemon first; the target must be empty unless --force (docs/install.md, \"PostgreSQL\").\n"
            "`backup` copies the SQLite store while the daemon runs; `restore FILE` puts a copy back and\n"
            "`rebuild` writes back what refs/notes/gitopsd records, both with the daemon stopped.", cmd_db_upgrade)
    db = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = db.add_parser("upgrade", parents=[common], help="bring the schema to this version (also run at start)")
    d.set_defaults(func=cmd_db_upgrade)
    d.add_argument("--database", metavar="DB", help="sqlite:PATH or postgresql://... (default: the config's)")
    d = db.add_parser("copy", parents=[common], help="copy every table into another database")
    d.set_defaults(func=cmd_db_copy)
    d.add_argument("--from", dest="source", required=True, metavar="DB", help="sqlite:PATH or postgresql://...")
    d.add_argument("--to", dest="target", required=True, metavar="DB", help="sqlite:PATH or postgresql://...")
    d.add_argument("--force", action="store_true", help="replace the target's records if it has any")
    d = db.add_parser("backup", parents=[common], help="copy the SQLite state database now (the daemon may run)")
    d.set_defaults(func=cmd_db_backup)
    d.add_argument("--to", metavar="FILE", help="where to write the copy (default: <state_dir>/backups/state-TIME.db)")
    d = db.add_parser("restore", parents=[common],
                      help="put a backup in place of the state database (the daemon stopped; the old file kept)")
    d.set_defaults(func=cmd_db_restore)
    d.add_argument("file", metavar="FILE", help="a copy `gitopsd db backup` or the daemon made")
    d = db.add_parser("rebuild", parents=[common],
                      help="rebuild the deployment records and approvals from refs/notes/gitopsd (the daemon stopped)")
    d.set_defaults(func=cmd_db_rebuild)

    from .human import add_commands
    add_commands(add, common)

    add("check-config", "validate the configuration file",
        "Validate the configuration and report every problem at once with file, line and key.\n"
        "Exit code 1 if there is any problem.", cmd_check_config)

    p = add("git-shell", "the SSH forced command that names the pusher (in authorized_keys, not for people)",
            "Run git-shell for a push, fetch or archive over SSH with GITOPSD_USER=NAME, as a forced command in\n"
            "the git user's ~/.ssh/authorized_keys: command=\"/opt/gitopsd/bin/gitopsd git-shell alice\",restrict ...\n"
            "Refuses any other command (SSH_ORIGINAL_COMMAND) and an interactive login.", cmd_git_shell)
    p.add_argument("name", metavar="NAME", help="who this key belongs to ([a-z_][a-z0-9_.-]*)")

    p = add("hook", "entry point of the hook shims (used by Git, not by people)",
            "Run a server-side hook; Git calls this through the shims installed by install-hooks.", cmd_hook)
    p.add_argument("name", choices=("pre-receive",))
    p.add_argument("--database", metavar="FILE", help="state database holding the hook's config snapshot")
    _bound_numbers(parser)
    return parser


COUNT_MAX = 10**9   # a count or an id past this is a typo; SQLite and int() would fail on it with a traceback


def _count(text: str) -> int:
    """A count or an id: a whole number from 1 to COUNT_MAX (argparse says so in one line)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= COUNT_MAX):
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {COUNT_MAX}, not {text[:20]!r}")
    return int(text)


def _seconds(text: str) -> float:
    """A duration: a number of seconds from 0 to a year (not nan, inf or 1e400)."""
    try:
        value = float(text) if text.isascii() and len(text) <= 20 else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= 366 * 86400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to {366 * 86400}, not {text[:20]!r}")
    return value


def _bound_numbers(parser: argparse.ArgumentParser) -> None:
    """Every int argument of every command (and subcommand) is a count or an id, every float one a duration."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _bound_numbers(child)
        elif action.type is int:
            action.type = _count
        elif action.type is float:
            action.type = _seconds


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The one line for the first argument that is not valid UTF-8 (Python keeps such bytes as surrogates), or None."""
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            option = arg.partition("=")[0] if arg.startswith("--") and "=" in arg else ""
            if not option and i and argv[i - 1].startswith("-") and "=" not in argv[i - 1]:
                option = argv[i - 1]
            named = f"the value of {option[:40]}" if option else "an argument"
            return (f"{named} is not valid UTF-8 ('{shown[:60]}'); gitopsd takes names, text and paths as UTF-8: "
                    "give it again spelled in UTF-8")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    garbled = _not_utf8(sys.argv[1:] if argv is None else argv)
    if garbled:
        print(f"gitopsd: error: {garbled}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = DEFAULT_CONFIG
    try:
        code = int(args.func(args))
        sys.stdout.flush()   # a reader gone meanwhile (`| head -1`) shows here, not in Python's exit
        return code
    except GitopsdError as exc:   # gitopsd's own errors are one line; --debug shows where
        if _reader_gone(exc):
            return _quiet_exit()
        if getattr(args, "debug", False):
            import traceback
            traceback.print_exc()
        # A store error's line already says what is wrong and what to do (adapters/storeerrors.py).
        line = _control_unreachable(args, exc) or str(exc)
        print(f"gitopsd: {'' if isinstance(exc, StoreError) else 'error: '}{line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:   # the one place a failure of the state database, the disk or a bug is told
        if _reader_gone(exc):
            return _quiet_exit()
        import sqlite3
        if getattr(args, "debug", False):
            import traceback
            traceback.print_exc()
        if not isinstance(exc, (sqlite3.Error, OSError)):   # a bug: still one line, never a traceback
            print(f"gitopsd: internal error: {type(exc).__name__}: {exc}"
                  + ("" if getattr(args, "debug", False) else " (--debug shows where)"), file=sys.stderr)
            return 1
        print(f"gitopsd: {_explain(args, exc)}", file=sys.stderr)
        return 1


def _control_unreachable(args: argparse.Namespace, exc: BaseException | None) -> str | None:
    """For a failure to reach the control socket while the daemon runs without its runtime folder, the true line."""
    from ..adapters.control import ControlError
    seen = 0
    while exc is not None and seen < 10 and not isinstance(exc, ControlError):
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    if not isinstance(exc, ControlError):
        return None
    try:
        return _unreachable(_config(args))
    except Exception:   # no config to find the folders by: the original line stands
        return None


def _reader_gone(exc: BaseException | None) -> bool:
    """Whether a failure is, or was caused by, writing to a closed stdout pipe (the store wraps what it meets)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, BrokenPipeError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _quiet_exit() -> int:
    """End as a Unix filter does when its reader went away: no message, and 141 (128 + SIGPIPE) as the status.

    stdout goes to /dev/null first so that Python's own flush at exit finds nowhere to fail.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


def _explain(args: argparse.Namespace, exc: Exception) -> str:
    """One line on a store, file or git error; for the state database, what is wrong with it and what to do."""
    import sqlite3

    from ..base.storeerrors import explain
    try:
        database = str(_config(args).database)
    except Exception:   # no config to name the store by: say what failed, where
        database = ""
    filename = os.path.realpath(getattr(exc, "filename", None) or database or "/")
    about_store = isinstance(exc, sqlite3.Error) or (
        isinstance(exc, OSError) and filename.startswith((database, os.path.dirname(database) + os.sep)))
    if database and about_store:
        return explain(database, exc)
    return f"error: {exc}" + ("" if getattr(args, "debug", False) else " (--debug shows where)")


if __name__ == "__main__":
    sys.exit(main())
