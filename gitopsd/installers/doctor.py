"""`gitopsd doctor`: check the service layout (docs/install.md, "Permissions") as the daemon and the pushers use it.

Each check says ok, or what is wrong and the command that fixes it. Nothing here changes anything,
and nothing may end in a traceback: a missing user, folder or file is a finding like any other.
File access is judged from the mode bits and the group database (as a new login or push gets
its groups); the hook's Python and the daemon's git are run for real as their users (as root).
Here: the entry and what the daemon's user reads and writes; doctor_sandbox.py runs its sandbox,
doctor_access.py checks the pushers' side, doctor_report.py is the finding.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from ..config import Config, ConfigError, Repository, load
from ..core.errors import ConfigurationError
from . import doctor_access, doctor_inventories, doctor_sandbox, install_hooks
from .doctor_report import Finding, checked


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
    findings += checked("the environments' content", partial(_content, config))
    findings += checked("the ref watcher", partial(_watched, config))
    findings += checked("the inotify watch limit", partial(_inotify_room, config))
    findings += checked("the size of a push", partial(push_limits, config))
    findings += checked("hosts shared by environments", partial(doctor_inventories.shared_hosts, config))
    findings += checked("where runs reach later environments' hosts", partial(doctor_inventories.unguarded, config))
    if service is None:
        return findings
    findings += checked(f"what {service.pw_name} reads, writes and runs", partial(_as_service, config, service))
    findings += checked("the runtime folder", lambda: [runtime_folder_finding(config, service.pw_name)])
    pushers: dict[str, list[Repository]] = {}
    for repo in config.repositories:
        pushers.setdefault(install_hooks.pushing_user(repo.path, git_user) or "", []).append(repo)
    for pusher in sorted(pushers):
        findings += checked(f"the git user {pusher}", partial(doctor_access.pusher, config, pusher, service))
    for pusher, repos in sorted(pushers.items()):
        for repo in repos:
            findings += checked(
                f"repository {repo.path}", partial(doctor_access.repository, config, repo, pusher, service, git_user)
            )
    return findings


# -- the daemon's own files, tried for real as its user ------------------------------------------------------


def _as_service(config: Config, service: pwd.struct_passwd) -> list[Finding]:
    """Run `probe` as the daemon's user, as its unit starts it (its home, the unit's umask); return its findings."""
    if os.geteuid() == service.pw_uid:
        return probe(config)
    # The probe reads the config first: one it cannot read is that, not a gitopsd that cannot run as the user.
    group = grp.getgrgid(service.pw_gid).gr_name
    readable = doctor_access.access(service, config.source, os.R_OK, "read the config (the daemon cannot start or reload)", group)
    if not readable.ok:
        return [readable]
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
    found += [writable, control_path_finding(config)]
    if not config.database_url:  # with PostgreSQL the totals are added up at each start, never kept in a file
        found.append(metrics_totals_finding(config, me))
    if config.sandbox.enabled and writable.ok:
        found += checked("the sandbox", partial(doctor_sandbox.sandboxed_runs, config, me))
        found += checked("the runs' ssh-agent", partial(doctor_sandbox.ssh_agent, config, me))
    return found


# ssh's control sockets, in each run's folder (adapters/runner.py: the reaper finds their masters by that path):
# STATE/deployments/<id up to 9 digits>/run-<n>/cp/<10 characters>, and a socket's path fits 107 bytes. A sandboxed
# run sees that folder at a short path of its own (adapters/sandbox.py SSH_CONTROL_DIR), whatever state_dir is.
CONTROL_PATH = "/deployments/123456789/run-1/cp/0123456789"


def control_path_finding(config: Config) -> Finding:
    """Does ssh's control socket fit in a run's folder? A long state_dir fails every SSH connection of every
    unsandboxed run."""
    if config.sandbox.enabled:
        return Finding(True, "ssh's control sockets are at a short path in each run's sandbox, whatever state_dir's length")
    longest = len(os.fsencode(config.state_dir)) + len(CONTROL_PATH)
    return Finding(
        longest <= 107,
        f"ssh's control sockets fit in the runs' folders under {config.state_dir}"
        if longest <= 107
        else f"state_dir {config.state_dir} is too long for ssh: its control socket in a run's folder would be {longest} "
        "bytes, more than a socket's path may be (107): every SSH connection of a deployment fails (ControlPath too long)",
        f"set state_dir to a path of at most {107 - len(CONTROL_PATH)} bytes (the default /var/lib/gitopsd) and move the "
        "state folder there with the daemon stopped",
    )


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


def metrics_totals_finding(config: Config, me: str) -> Finding:
    """The totals /metrics keeps beside state.db (services/metricsfile.py): `me` reads, writes and can use them."""
    from ..adapters.ownership import describe
    from ..services import metricsfile

    path = config.database.with_name(metricsfile.NAME)
    try:
        kept = metricsfile.read(path)
    except metricsfile.Unusable as exc:
        return Finding(
            False,
            f"the metrics totals {path} cannot be used: {exc}; the daemon adds up the whole history at each start instead",
            f"rm {path}   # the daemon adds up the history again and writes it anew",
        )
    except OSError as exc:
        return Finding(
            False, f"{me} cannot read the metrics totals {path} ({describe(path)}): {exc.strerror}", f"chown {me}: {path}"
        )
    if kept is None:
        return Finding(True, f"the metrics totals {path} are not written yet (the daemon writes them in time)")
    if not os.access(path, os.W_OK):
        return Finding(False, f"{me} cannot write the metrics totals {path} ({describe(path)})", f"chown {me}: {path}")
    return Finding(True, f"{me} reads and writes the metrics totals {path}")


def runtime_folder_finding(config: Config, me: str) -> Finding:
    """Only the daemon's user (or root) may write where its sockets are: anyone else could serve the control socket
    in its place (the command line then refuses it: adapters/control.py) or swallow the hooks' nudges."""
    from ..adapters.ownership import Account, describe

    folder = config.runtime_dir
    fix = f"chown {me}: {folder} && chmod 0750 {folder}"
    try:
        info = folder.stat()
    except FileNotFoundError:
        parent = next((p for p in folder.parents if p.exists()), Path("/"))
        if parent.stat().st_mode & 0o002:
            return Finding(
                False,
                f"the runtime folder {folder} does not exist, and anyone may make it in {parent} ({describe(parent)}) "
                "before the daemon does",
                f"mkdir -p {folder} && {fix}   # or keep runtime_dir at /run/gitopsd, which the unit makes",
            )
        return Finding(True, f"the runtime folder {folder} is made by the daemon (or its unit) when it starts")
    if info.st_mode & 0o002 or info.st_uid not in (0, pwd.getpwnam(me).pw_uid):
        who = "anyone" if info.st_mode & 0o002 else f"its owner {describe(folder).split(':')[0]}"
        return Finding(
            False,
            f"{who} may write in the runtime folder {folder} ({describe(folder)}), so another user could serve "
            "sockets in the daemon's place",
            fix,
        )
    others = _group_members(info.st_gid) - {me, "root"} if info.st_mode & 0o020 else set()
    if others:
        group = Account.of_ids(info.st_uid, info.st_gid).group
        return Finding(
            False,
            f"the members of group {group} ({', '.join(sorted(others))}) may write in the runtime folder {folder} "
            f"({describe(folder)}), so one of them could replace the daemon's sockets",
            f"chmod g-w {folder}   # they connect to the sockets through the group; writing the folder is not needed",
        )
    return Finding(True, f"only {me} (and root) may put sockets in the runtime folder {folder}")


def _group_members(gid: int) -> set[str]:
    """Who is in group GID: its listed members and the users whose own group it is."""
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        listed = set()
    return listed | {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}


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


def _content(config: Config) -> list[Finding]:
    """An inventory or playbook path of the config that its branch lacks: every deployment there fails (stalls)."""
    from .content import missing_files, nearest_file

    found = []
    for missing in missing_files(config):
        name, what, branch = f"{missing.repo.name}/{missing.env.name}", missing.what, missing.env.branch
        near = nearest_file(missing)
        fix = (
            f"set {what}: {near} for {name} in {config.source} (branch {branch} has that file), "
            f"or commit {missing.path} to {branch}"
            if near
            else f"commit {missing.path} to {branch}, or set {what}: for {name} in {config.source} to the file it has"
        )
        found.append(
            Finding(
                False,
                f"{name}: the {what} {missing.path} is not in branch {branch}: every deployment to {missing.env.name} fails",
                fix,
            )
        )
    return found or [Finding(True, "every environment's inventory and playbook are in its branch")]


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


def push_limits(config: Config) -> list[Finding]:
    """Repositories a single push may fill the disk of: git writes what is pushed before any hook can refuse it."""
    unbounded = [
        repo.path
        for repo in config.repositories
        if (install_hooks.get_setting(Path(repo.path), install_hooks.PUSH_LIMIT) or "0").strip() in ("0", "")
    ]
    return [
        Finding(
            False,
            f"{path}: a push may be of any size ({install_hooks.PUSH_LIMIT} is unset), enough to fill the disk of the "
            "repositories and the state folder",
            f"git --git-dir {path} config {install_hooks.PUSH_LIMIT} {install_hooks.PUSH_LIMIT_DEFAULT} "
            "(or a size your largest push fits in; gitopsd install-hooks sets 1g where it is unset)",
        )
        for path in unbounded
    ] or [Finding(True, f"every repository bounds the size of a push ({install_hooks.PUSH_LIMIT})")]


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
