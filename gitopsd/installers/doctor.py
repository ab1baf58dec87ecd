"""`gitopsd doctor`: check the service layout (docs/install.md, "Permissions") as the daemon and the pushers use it.

Each check says ok, or what is wrong and the command that fixes it. Nothing here changes anything,
and nothing may end in a traceback: a missing user, folder or file is a finding like any other.
File access is judged from the mode bits and the group database (as a new login or push gets
its groups); the hook's Python and the daemon's git are run for real as their users (as root).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..base import gitcli
from ..config import Config, ConfigError, Repository, load
from ..core.errors import ConfigurationError
from ..core.settings import SandboxPolicy
from . import install_hooks


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str | None = None

    def text(self) -> str:
        if self.ok:
            return f"ok       {self.what}"
        return f"PROBLEM  {self.what}" + (f"\n         fix: {self.fix}" if self.fix else "")


def diagnose(config_path: Path, *, git_user: str | None = None, service_user: str | None = None) -> list[Finding]:
    """Run every check; return the findings in order."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        return [
            Finding(
                False,
                f"{config_path}: the configuration has problems: {exc.problems[0]}",
                f"gitopsd check-config --config {config_path}",
            )
        ]
    name = install_hooks.daemon_user(service_user, config_path)
    service = install_hooks._user(name)
    findings = [
        Finding(
            service is not None,
            f"service user {name}"
            if service
            else f"service user {name} does not exist"
            if name
            else f"no service user: the state folder {config.state_dir} is not a service user's "
            "(install-service creates both; or say --service-user)",
            f"gitopsd install-service --config {config.source}",
        )
    ]
    if config.sandbox.enabled:
        findings.append(
            Finding(
                shutil.which("bwrap") is not None, "bubblewrap (bwrap) is installed for the sandbox", "apt-get install bubblewrap"
            )
        )
    findings += _checked("the ref watcher", partial(_watched, config))
    findings += _checked("the inotify watch limit", partial(_inotify_room, config))
    if service is None:
        return findings
    findings += _checked(f"what {service.pw_name} reads, writes and runs", partial(_as_service, config, service))
    pushers: dict[str, list[Repository]] = {}
    for repo in config.repositories:
        pushers.setdefault(install_hooks.pushing_user(repo.path, git_user) or "", []).append(repo)
    for pusher in sorted(pushers):
        findings += _checked(f"the git user {pusher}", partial(_pusher, config, pusher, service))
    for pusher, repos in sorted(pushers.items()):
        for repo in repos:
            findings += _checked(f"repository {repo.path}", partial(_repository, config, repo, pusher, service, git_user))
    return findings


# -- the daemon's own files and its sandbox, tried for real as its user --------------------------------------

PROBE_PLAYBOOK = "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: gitopsd doctor}\n"
PROBE_INVENTORY = "all:\n  hosts:\n    doctor: {ansible_connection: local}\n"


def _as_service(config: Config, service: pwd.struct_passwd) -> list[Finding]:
    """Run `probe` as the daemon's user, as its unit starts it (its home, the unit's umask); return its findings."""
    if os.geteuid() == service.pw_uid:
        return probe(config)
    argv = install_hooks.as_user(service, [sys.executable, "-m", "gitopsd", "doctor", "--probe", "--config", str(config.source)])
    if argv is None:
        return [
            Finding(
                False,
                f"cannot try the daemon's files and sandbox as {service.pw_name}: run gitopsd doctor "
                f"as root or as {service.pw_name}",
            )
        ]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": service.pw_dir, "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd="/", env=env, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Finding(False, f"gitopsd could not be run as {service.pw_name}: {exc}")]
    found = []
    for line in proc.stdout.splitlines():
        try:
            item = json.loads(line)
            found.append(Finding(bool(item["ok"]), str(item["what"]), item.get("fix")))
        except (ValueError, KeyError, TypeError):
            continue
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        found.append(
            Finding(False, f"{sys.executable} -m gitopsd cannot run as {service.pw_name}: {last}", install_hooks.PYTHON_ADVICE)
        )
    return found


def probe(config: Config) -> list[Finding]:
    """As the daemon's user: read every file the daemon reads, write its state folder, run a sandboxed no-op
    playbook and a sandboxed no-op CI step where the daemon runs them. Changes nothing it does not remove."""
    os.umask(0o027)  # the unit's UMask=
    me = pwd.getpwuid(os.geteuid()).pw_name
    found = [_readable(config.source, me, "the config")]
    if config.api is not None:
        found.append(_readable(Path(config.api.tokens_file), me, "the API's tokens file", missing_ok=True))
    for repo in config.repositories:
        for env in repo.environments:
            if env.vault_password_file is not None:
                found.append(_readable(env.vault_password_file, me, f"{repo.name}/{env.name}'s vault password file"))
    if config.notifications.matrix is not None:  # approvals from the chat room (chatroom.py) log in with it
        found.append(_readable(config.notifications.matrix.password_file, me, "the Matrix password file"))
    if config.known_hosts.exists():
        found.append(_readable(config.known_hosts, me, "the known hosts"))
    found += signing_key_findings(config, me)
    found.append(provenance_key_finding(config, me))
    writable = _state_writable(config, me)
    found.append(writable)
    if config.sandbox.enabled and writable.ok:
        found += _checked("the sandbox", partial(_sandboxed_runs, config, me))
        found += _checked("the runs' ssh-agent", partial(_agent, config, me))
    return found


def signing_key_findings(config: Config, me: str) -> list[Finding]:
    """The service's signing key: it signs (as `me`), and every environment that checks SSH signatures allows it."""
    key = config.signing_key
    if key is None:
        return []
    readable = _readable(key, me, "the signing key")
    if not readable.ok:
        return [readable]
    proc = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", "git", "-f", str(key)],
        input=b"gitopsd doctor\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        why = (proc.stderr.decode(errors="replace").strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return [
            Finding(
                False,
                f"{me} cannot sign with the signing key {key}: {why}",
                f"make a new one: ssh-keygen -t ed25519 -N '' -f {key} (then add {key}.pub to allowed_signers)",
            )
        ]
    found = [Finding(True, f"{me} signs gitopsd's own commits with {key}")]
    try:
        public = Path(f"{key}.pub").read_text(encoding="utf-8").split()[:2]
    except OSError as exc:
        return [
            *found,
            Finding(
                False,
                f"the signing key's public half {key}.pub cannot be read ({exc.strerror})",
                f"ssh-keygen -y -f {key} > {key}.pub",
            ),
        ]
    for repo in config.repositories:
        for env in repo.environments:
            signers = env.signatures.allowed_signers if env.signatures else None
            if signers is None:
                continue
            try:
                lines = signers.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue  # check-config says so
            if not any(" ".join(public) in line for line in lines):
                found.append(
                    Finding(
                        False,
                        f"{repo.name}/{env.name}: {signers} does not allow gitopsd's signing key, "
                        "so its own commits there (promotions, reverts) would be refused",
                        f'add the line: gitopsd@localhost namespaces="git" {" ".join(public)}',
                    )
                )
    return found


def provenance_key_finding(config: Config, me: str) -> Finding:
    """The service's provenance key (ci/provenance.py): `me` reads it, no one else may, and its public half (what
    `gitopsd verify` and the daemon check statements with) is the key's own."""
    from ..adapters import signing

    key = signing.key_path(config.state_dir)
    readable = _readable(key, me, "the provenance key", missing_ok=True)
    if not readable.ok or not key.exists():
        return readable
    remake = f"rm {key} {key.with_suffix('.pub')} && gitopsd install-service   # what it signed then no longer verifies"
    if key.stat().st_mode & 0o077:
        return Finding(
            False, f"the provenance key {key} can be read by others (mode {key.stat().st_mode & 0o777:04o})", f"chmod 600 {key}"
        )
    try:
        keyid = signing.signing_key_id(config.state_dir)
        listed = signing.service_key(config.state_dir)
    except ConfigurationError as exc:
        return Finding(False, str(exc), remake)
    if listed is None or listed.keyid != keyid:
        return Finding(
            False,
            f"the provenance key's public half {key.with_suffix('.pub')} is not {key}'s: what the daemon signs would not verify",
            f"rm {key.with_suffix('.pub')}   # the daemon writes it again",
        )
    return Finding(True, f"{me} signs provenance with {key} (key id {keyid[:12]})")


def _agent(config: Config, me: str) -> list[Finding]:
    """Playbook runs get the service's SSH keys through an ssh-agent: start one as a run does and give it the keys."""
    from ..adapters import runner

    keys = runner.identity_files()
    if not keys:
        return []
    folder = Path(tempfile.mkdtemp(prefix=".doctor-", dir=config.state_dir))
    try:
        agent, socket_path = runner.start_agent(folder, f"gitopsd-doctor-agent-{os.getpid()}", None, keys)
        runner.stop_agent(agent, socket_path)
    except runner.AgentError as exc:
        return [Finding(False, str(exc))]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return [
        Finding(
            True,
            f"{me}'s ssh-agent takes the SSH key{'s' if len(keys) > 1 else ''} "
            f"{', '.join(str(k) for k in keys)} for playbook runs",
        )
    ]


def _readable(path: Path, me: str, what: str, missing_ok: bool = False) -> Finding:
    from ..adapters.ownership import describe

    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        return Finding(
            missing_ok,
            f"{what} {path} does not exist" + (" yet" if missing_ok else ""),
            None if missing_ok else f"create it, readable by {me}",
        )
    except OSError as exc:
        group = grp.getgrgid(pwd.getpwnam(me).pw_gid).gr_name
        return Finding(
            False,
            f"{me} cannot read {what} {path} ({describe(path)}): {exc.strerror}",
            f"chgrp {group} {path} && chmod g+r {path}",
        )
    return Finding(True, f"{me} reads {what} {path}")


def _state_writable(config: Config, me: str) -> Finding:
    """The daemon writes its records and every run's folder there."""
    from ..adapters.ownership import describe

    state = config.state_dir
    fix = f"chown -R {me}: {state}   # the daemon's own folder (install-service makes it)"
    if not state.is_dir():
        return Finding(False, f"the state folder {state} does not exist", fix)
    for path in (state, *(Path(f"{config.database}{suffix}") for suffix in ("", "-wal", "-shm"))):
        if path.exists() and not os.access(path, os.W_OK):
            return Finding(False, f"{me} cannot write {path} ({describe(path)})", fix)
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Finding(False, f"{me} cannot write in the state folder {state} ({describe(state)}): {exc.strerror}", fix)
    return Finding(True, f"{me} writes the state folder {state}")


def _sandboxed_runs(config: Config, me: str) -> list[Finding]:
    """A no-op playbook and a no-op CI step, each in the sandbox and in a folder where the daemon puts its own."""
    import threading

    from ..adapters import runner, sandbox
    from ..core.types import PlaybookRun

    policy = sandbox.for_config(config)
    folder = Path(tempfile.mkdtemp(prefix=".doctor-", dir=config.state_dir))
    found = []
    try:
        tree = folder / "deployment" / "tree"
        tree.mkdir(parents=True)
        (tree / "site.yml").write_text(PROBE_PLAYBOOK, encoding="utf-8")
        (tree / "hosts.yml").write_text(PROBE_INVENTORY, encoding="utf-8")
        outcome = runner.run_playbook(
            PlaybookRun(
                marker=f"gitopsd-doctor-{os.getpid()}",
                workdir=tree,
                playbook=tree / "site.yml",
                inventory=tree / "hosts.yml",
                data_dir=folder / "deployment" / "run",
                extravars={},
                timeout=120,
            ),
            threading.Event(),
            policy,
        )
        why = outcome.reason
        if not outcome.ok and outcome.stdout is not None and outcome.stdout.exists():
            why = (outcome.stdout.read_text(errors="replace").strip().splitlines() or [why])[-1]
        found.append(
            Finding(
                outcome.ok,
                f"{me} runs a playbook in the sandbox" + ("" if outcome.ok else f": {why}"),
                None if outcome.ok else "gitopsd check-config, and the sandbox section of docs (Trust model)",
            )
        )
        work = folder / "ci" / "work"
        step_tree = work / "tree"
        step_tree.mkdir(parents=True)
        argv = sandbox.command_prefix(policy, project=step_tree, run_dir=work, network=policy.network) + ["true"]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=step_tree,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work / "home"), "LANG": "C.UTF-8"},
        )
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        found.append(
            Finding(proc.returncode == 0, f"{me} runs a CI step in the sandbox" + ("" if proc.returncode == 0 else f": {last}"))
        )
        found.append(_playbook_network(policy, step_tree, folder / "net", me))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return found


def _playbook_network(policy: SandboxPolicy, tree: Path, run_dir: Path, me: str) -> Finding:
    """With sandbox.playbook_network ssh-only, a run's ssh reaches its forwarder, and the forwarder refuses a host
    outside the inventory (here every host: the probe has none)."""
    from ..adapters import sandbox, sshgate

    if policy.playbook_network == "host":
        return Finding(
            True,
            "playbook runs use this machine's network (sandbox.playbook_network: host): their tasks "
            "reach its loopback services, the API and the dashboard too",
        )
    run_dir.mkdir()
    helper = Path(sandbox.__file__).resolve().parent.parent / "libexec" / "ssh-proxy"
    with sshgate.Forwarder(
        run_dir / sshgate.SOCKET_NAME, set, set(policy.daemon_addresses), "doctor", sandbox.run_as(policy)
    ) as gate:
        argv = sandbox.command_prefix(policy, project=tree, run_dir=run_dir, network=False, ssh_gate=gate.path) + [
            sys.executable,
            "-I",
            "-S",
            str(helper),
            "127.0.0.1",
            "22",
            sandbox.SSH_GATE_SOCKET,
        ]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            cwd=tree,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    ok = last.startswith("gitopsd: refused: 127.0.0.1:22 is not a host of this deployment's inventory")
    return Finding(
        ok,
        f"{me}'s playbook runs reach SSH hosts only through their forwarder (sandbox.playbook_network: "
        f"ssh-only)" + ("" if ok else f": {last}"),
        None if ok else "gitopsd check-config, and the sandbox section of docs (Trust model)",
    )


def _watched(config: Config) -> list[Finding]:
    """Repositories the running daemon could not watch (it says so in the store; the sysctl is in its log)."""
    if not config.database.exists():
        return []
    from ..adapters.store import Store

    with Store.of(config, readonly=True) as store:
        unwatched = store.unwatched()
    return [
        Finding(
            False,
            f"the daemon does not watch {repo}'s branches ({why}); pushes still deploy through the nudge and the sweep",
            "raise fs.inotify.max_user_watches / max_user_instances "
            "(sysctl -w ..., and a file in /etc/sysctl.d/), then systemctl reload gitopsd",
        )
        for repo, why in unwatched.items()
    ] or [Finding(True, "the daemon watches every repository's branches")]


def _inotify_room(config: Config, limit: int | None = None) -> list[Finding]:
    """Will the ref watcher's inotify watches fit (one per repository folder and per folder under refs/heads)?

    The limit (fs.inotify.max_user_watches, or LIMIT) is per user and shared by every process of the daemon's
    user, so more than half of it is a warning before repositories go unwatched (docs/operate.md, "Many repositories")."""
    from ..adapters.watch import SYSCTL, WATCH_LIMIT, _read_sysctl

    limit = limit if limit is not None else _read_sysctl(SYSCTL[WATCH_LIMIT])
    if limit is None:
        return []
    needed = 0
    for repo in config.repositories:
        needed += 1 + sum(1 for _folder in os.walk(Path(repo.path) / "refs" / "heads"))
    wanted = max(65536, 1 << (needed * 4 - 1).bit_length())
    return [
        Finding(
            needed * 2 <= limit,
            f"the ref watcher needs {needed} inotify watches for {len(config.repositories)} "
            f"repositories; {SYSCTL[WATCH_LIMIT]} is {limit} for all of the daemon user's processes",
            f"sysctl -w {SYSCTL[WATCH_LIMIT]}={wanted}; echo {SYSCTL[WATCH_LIMIT]}={wanted} > "
            "/etc/sysctl.d/90-gitopsd.conf; then systemctl reload gitopsd",
        )
    ]


def _checked(what: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A check that fails in an unforeseen way is a finding too, never a traceback."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 (doctor must report, not crash)
        return [Finding(False, f"{what}: could not be checked ({type(exc).__name__}: {exc})")]


# -- the git user: the daemon's group, the state and the socket -----------------------------------------


def _pusher(config: Config, name: str, service: pwd.struct_passwd) -> list[Finding]:
    user = install_hooks._user(name)
    if user is None:
        return [
            Finding(
                False,
                f"the git user {name or '(none)'} does not exist: who pushes? (the repository "
                "belongs to root and there is no user git)",
                "gitopsd doctor --git-user USER",
            )
        ]
    group = grp.getgrgid(service.pw_gid).gr_name
    member = service.pw_gid in _groups(user)
    found = [
        Finding(member, f"{name} is in the daemon's group {group} (reads the state, sends nudges)", f"usermod -aG {group} {name}")
    ]
    found.append(_access(user, config.database, os.R_OK, "read the state database", group))
    if config.nudge_socket.exists():
        found.append(_access(user, config.nudge_socket, os.W_OK, "send nudges on the socket", group))
    else:
        found.append(
            Finding(
                False,
                f"the nudge socket {config.nudge_socket} does not exist: the daemon is not "
                "running (pushes are deployed only once it runs)",
                f"systemctl start gitopsd   # or: gitopsd run --config {config.source}",
            )
        )
    return found


def _groups(user: pwd.struct_passwd) -> set[int]:
    return {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}


def _denied(user: pwd.struct_passwd, path: Path, want: int) -> Path | None:
    """The first path on the way to PATH that USER's mode bits refuse (None if none does). Raise OSError."""
    if user.pw_uid == 0:
        return None
    groups = _groups(user)
    path = Path(os.path.realpath(path))
    for step, need in [*((p, os.X_OK) for p in reversed(path.parents)), (path, want)]:
        info = step.stat()
        shift = 6 if info.st_uid == user.pw_uid else 3 if info.st_gid in groups else 0
        if (stat.S_IMODE(info.st_mode) >> shift) & need != need:
            return step
    return None


def _access(user: pwd.struct_passwd, path: Path, want: int, purpose: str, group: str) -> Finding:
    verb = "write" if want & os.W_OK else "read"
    if not path.exists():
        return Finding(
            False,
            f"{user.pw_name} cannot {purpose}: {path} does not exist (the daemon makes it when it starts)",
            "systemctl start gitopsd",
        )
    denied = _denied(user, path, want)
    if denied is None:
        return Finding(True, f"{user.pw_name} may {purpose} ({path})")
    info = denied.stat()
    owner = f"{_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}"
    what = f"{user.pw_name} cannot {purpose}: {denied} is {stat.filemode(info.st_mode)} {owner}"
    bits = "rx" if denied.is_dir() else verb[0]
    if info.st_gid not in _groups(user):
        fix = (
            f"usermod -aG {group} {user.pw_name}"
            if _name(grp.getgrgid, info.st_gid) == group
            else f"chgrp {group} {denied} && chmod g+{bits} {denied}"
        )
    else:
        fix = f"chmod g+{bits} {denied}"
    return Finding(False, what, fix)


def _name(lookup: Callable[[int], object], ident: int) -> str:
    try:
        return str(lookup(ident)[0])  # type: ignore[index]
    except KeyError:
        return str(ident)


# -- one repository ---------------------------------------------------------------------------------------


def _repository(
    config: Config, repo: Repository, pusher_name: str, service: pwd.struct_passwd, git_user: str | None
) -> list[Finding]:
    path = repo.path
    if not (path / "objects").is_dir() or not (path / "config").is_file():
        return [
            Finding(
                False, f"{path} is not a bare Git repository (or cannot be read)", f"gitopsd init {path} --config {config.source}"
            )
        ]
    pusher = install_hooks._user(pusher_name)
    group = grp.getgrgid(service.pw_gid).gr_name
    options = f" --git-user {pusher_name}" if git_user else ""
    options += f" --service-user {service.pw_name}" if service.pw_name != "gitopsd" else ""
    install = f"{install_hooks.gitopsd_executable()} install-hooks {path} --config {config.source}{options}"
    found = [_layout(path, pusher, service, group, install), _writable(path, service, install), _safe_directory(path, service)]
    found += _hook(config, path, pusher, install)
    return found


def _layout(path: Path, pusher: pwd.struct_passwd | None, service: pwd.struct_passwd, group: str, install: str) -> Finding:
    """Owner the git user, group the daemon's, folders group-writable and setgid, core.sharedRepository=group."""
    info = path.stat()
    owner = _name(pwd.getpwuid, info.st_uid)
    wrong = []
    if pusher is not None and info.st_uid != pusher.pw_uid:
        wrong.append(f"it belongs to {owner}, not {pusher.pw_name}")
    shared = install_hooks.get_setting(path, "core.sharedRepository")
    if (shared or "").lower() not in ("group", "true", "1"):
        wrong.append(f"core.sharedRepository is {shared or 'not set'}, not group")
    bad = [p for p in [path, *install_hooks._tree(path)] if not p.is_symlink() and _unshared(p, service.pw_gid)]
    if bad:
        mode = stat.filemode(bad[0].lstat().st_mode)
        wrong.append(
            f"{len(bad)} files or folders are not {group}'s with group access, e.g. {bad[0]} ({mode} "
            f"{_name(pwd.getpwuid, bad[0].lstat().st_uid)}:{_name(grp.getgrgid, bad[0].lstat().st_gid)})"
        )
    if wrong:
        return Finding(False, f"{path}: {'; '.join(wrong)}", f"{install}   # as root")
    return Finding(True, f"{path} belongs to {owner}:{group}, group-writable, setgid folders, shared with the group")


def _unshared(path: Path, gid: int) -> bool:
    info = path.lstat()
    mode = stat.S_IMODE(info.st_mode)
    need = 0o2070 if stat.S_ISDIR(info.st_mode) else 0o040
    return info.st_gid != gid or mode & need != need


def _writable(path: Path, service: pwd.struct_passwd, install: str) -> Finding:
    """The daemon writes revert commits (objects) and moves branches (refs) for automatic rollbacks."""
    folders = [path / "objects", path / "refs"]
    folders += [Path(d) for top in folders for d, _subdirs, _files in os.walk(top)]
    denied = next((d for d in folders if _denied(service, d, os.W_OK | os.X_OK) is not None), None)
    if denied is not None:
        info = denied.stat()
        return Finding(
            False,
            f"{service.pw_name} cannot write {denied} ({stat.filemode(info.st_mode)} "
            f"{_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}): automatic "
            "rollbacks cannot write their revert commit",
            f"{install}   # as root",
        )
    return Finding(True, f"{service.pw_name} may write {path} (automatic rollbacks)")


def _safe_directory(path: Path, service: pwd.struct_passwd) -> Finding:
    """git and pygit2 refuse a repository another user owns unless safe.directory names it."""
    if path.stat().st_uid == service.pw_uid:
        return Finding(True, f"{service.pw_name} owns {path}: no safe.directory needed")
    fix = install_hooks.trust_command(path, service.pw_name)
    prefix = install_hooks.as_user(service, [])
    if prefix is None:  # not root: read its config instead of asking git as that user
        trusted = {str(path), "*"} & set(install_hooks.safe_directories(service))
        return Finding(bool(trusted), f"{service.pw_name}'s safe.directory names {path}", fix)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": service.pw_dir}
    code, stderr = gitcli.opens_as(prefix, path, env)
    if code == 0:
        return Finding(True, f"{service.pw_name}'s git opens {path} (safe.directory)")
    first = (stderr.strip().splitlines() or [f"exit {code}"])[0]
    return Finding(False, f"{service.pw_name}'s git cannot open {path}: {first}", fix if "dubious ownership" in stderr else None)


def _hook(config: Config, path: Path, pusher: pwd.struct_passwd | None, install: str) -> list[Finding]:
    shim = (install_hooks.shim_source() / "pre-receive").read_text(encoding="utf-8")
    target = path / "hooks" / "pre-receive"
    try:
        installed = target.read_text(encoding="utf-8", errors="replace") == shim and os.access(target, os.X_OK)
    except OSError:
        installed = False
    found = [Finding(installed, f"{target} is gitopsd's hook", install)]
    python, entry = install_hooks.get_setting(path, "gitopsd.python"), install_hooks.get_setting(path, "gitopsd.entry")
    if pusher is not None:
        problem = install_hooks.hook_python_problem(pusher.pw_name, python, entry)
        here = install_hooks.hook_python_problem(
            pusher.pw_name, sys.executable, str(Path(install_hooks.__file__).parent.parent / "hook_entry.py")
        )
        fix = (
            f"{Path(sys.executable).parent / 'gitopsd'} install-hooks {path} --config {config.source}"
            if problem and here is None
            else install_hooks.PYTHON_ADVICE
        )
        found.append(Finding(problem is None, problem or f"{pusher.pw_name} can run the hook's Python {python}", fix))
    for key, wanted in (("gitopsd.database", str(config.database)), ("gitopsd.config", str(config.source.resolve()))):
        recorded = install_hooks.get_setting(path, key)
        found.append(
            Finding(
                recorded == wanted,
                f"the hook's {key} is {recorded or 'not set'}"
                + (
                    ""
                    if recorded == wanted
                    else f", but the config says {wanted}: pushes take the slow path (or read the wrong records)"
                ),
                f"systemctl reload gitopsd   # the daemon updates it; or: {install}",
            )
        )
    return found
