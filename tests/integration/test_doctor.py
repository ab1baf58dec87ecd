"""`gitopsd doctor` proves, not guesses: as the daemon's user it reads the daemon's files and runs the sandbox for real.

Real: the CLI as root, which runs its probe as the daemon's user (`nobody` here: the owner of the state folder,
as install-service makes it) with a Python every user may run; bubblewrap; ansible-runner. Each test puts back a
defect a new team met on day one and shows that doctor names it, and the command that fixes it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitopsd.adapters import sandbox
from gitopsd.config import load
from gitopsd.installers import doctor
from tests.support import Sandbox, python_for_everyone, sh, unix_users

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("setpriv", "bwrap")),
    reason="running the probe as another user needs root, setpriv and bubblewrap",
)


@pytest.fixture(scope="module")
def everyone() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="gt-doctor-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield python_for_everyone(base / "venv")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server(short_tmp: Path) -> Sandbox:
    """A deploy server whose state folder is nobody's: nobody is the daemon's user."""
    short_tmp.chmod(0o755)
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={"api": {"listen": "127.0.0.1:8479", "tokens_file": "tokens.yml"}},
        sandbox_options={"read_only": [sysconfig.get_paths()["purelib"]]},
    )  # the packages python_for_everyone adds
    box.config.chmod(0o644)
    sh(["chown", "-R", "nobody:", str(box.state)])
    return box


def doctor_says(bin_dir: Path, box: Sandbox) -> str:
    proc = sh(
        [str(bin_dir / "gitopsd"), "doctor", "--config", str(box.config)],
        check=False,
        cwd="/",
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(box.root), "LANG": "C.UTF-8"},
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def test_doctor_names_a_tokens_file_the_daemon_cannot_read_and_token_create_writes_one_it_can(everyone, server):
    tokens = server.config.parent / "tokens.yml"
    tokens.write_text("tokens: []\n")  # as `token create` left it before: root:root 0640
    tokens.chmod(0o640)
    said = doctor_says(everyone, server)
    assert (
        f"PROBLEM  nobody cannot read the API's tokens file {tokens} (root:root 0640): Permission denied\n"
        f"         fix: chgrp nogroup {tokens} && chmod g+r {tokens}"
    ) in said, said
    tokens.unlink()
    sh(
        [str(everyone / "gitopsd"), "token", "create", "jenkins", "--scope", "statuses:write", "--config", str(server.config)],
        env={"PATH": f"{everyone}:/usr/bin:/bin", "HOME": str(server.root)},
    )
    said = doctor_says(everyone, server)
    assert f"ok       nobody reads the API's tokens file {tokens}" in said, said
    assert "ok       nobody writes the state folder" in said
    assert "ok       nobody runs a playbook in the sandbox" in said and "ok       nobody runs a CI step in the sandbox" in said


def test_doctor_names_a_state_folder_the_daemon_cannot_write(everyone, server):
    sh(["chown", "root:", str(server.state / "state.db")])
    said = doctor_says(everyone, server)
    assert f"PROBLEM  nobody cannot write {server.state / 'state.db'} (root:root 06" in said, said
    assert f"fix: chown -R nobody: {server.state}" in said


def test_doctor_fails_the_sandbox_where_the_runs_home_would_cover_its_own_folders(server, monkeypatch):
    """The service user's home is its state folder; a sandbox that mounts the run's private home after the run's
    folders (as gitopsd did) hides them: doctor, run as that user, must say so rather than "all ok"."""
    monkeypatch.setenv("HOME", str(server.state))  # as for the service user: its home is the state folder
    sh(["chown", "-R", "root:", str(server.state)])
    server.sandbox_options["user"] = "root"  # the run keeps the daemon's user, as the service's runs do
    server.write_config()
    config = load(server.config)
    umask = os.umask(0o022)
    try:
        assert [f.what for f in doctor.probe(config) if not f.ok] == []
        real = sandbox.bwrap_args

        def home_last(*args: Any, **kwargs: Any) -> list[str]:
            argv = real(*args, **kwargs)
            at = next(
                i
                for i in range(len(argv) - 2)  # "--bind", <run>/home, <home>
                if argv[i] == "--bind" and argv[i + 1].endswith("/home") and argv[i + 2] == str(server.state)
            )
            return argv[:at] + argv[at + 3 :] + argv[at : at + 3]

        monkeypatch.setattr(sandbox, "bwrap_args", home_last)
        failed = [f.what for f in doctor.probe(config) if not f.ok]
    finally:
        os.umask(umask)
    assert len(failed) == 3 and all("Can't chdir" in what for what in failed), failed
    assert failed[0].startswith("root runs a playbook in the sandbox: ") and failed[1].startswith("root runs a CI step")
    assert failed[2].startswith("root's playbook runs reach SSH hosts only through their forwarder")


def test_doctor_checks_the_provenance_key_is_the_daemons_own_and_the_key_its_public_half_names(everyone, server):
    from gitopsd.adapters import signing

    key = signing.key_path(server.state)
    signing.ensure_key(server.state)
    sh(["chown", "-R", "nobody:", str(server.state)])
    said = doctor_says(everyone, server)
    assert f"nobody signs provenance with {key} (key id {signing.signing_key_id(server.state)[:12]})" in said
    config = load(server.config)
    key.chmod(0o640)
    finding = doctor.provenance_key_finding(config, "nobody")
    assert not finding.ok and finding.what == f"the provenance key {key} can be read by others (mode 0640)"
    key.chmod(0o600)
    other = signing.ensure_key(server.root / "other")  # a public half left from another key
    shutil.copy(server.root / "other" / "signing-key.pub", key.with_suffix(".pub"))
    finding = doctor.provenance_key_finding(config, "nobody")
    assert not finding.ok and finding.what.startswith(
        f"the provenance key's public half {key.with_suffix('.pub')} is not {key}'s"
    ), (finding.what, other.keyid)


def test_doctor_names_a_metrics_totals_file_the_daemon_cannot_read_or_use_and_the_fix(everyone, server):
    from gitopsd.services import metricsfile

    totals = server.state / metricsfile.NAME
    config = load(server.config)
    assert doctor.metrics_totals_finding(config, "nobody").ok  # none yet: the daemon writes it in time
    for content, why in (
        ('{"upto": 3, "witn', "it is not JSON"),
        ("[" * 100000, "it is not JSON"),
        (
            '{"upto": 3, "witness": [], "buckets": [[], []], "totals": {"deployments": [["a", "b", "c", 1]]}}',
            "a row of its deployments",
        ),
    ):
        totals.write_text(content)
        finding = doctor.metrics_totals_finding(config, "nobody")
        assert not finding.ok and finding.what.startswith(f"the metrics totals {totals} cannot be used: {why}"), finding
        assert finding.fix == f"rm {totals}   # the daemon adds up the history again and writes it anew"
    totals.unlink()
    totals.symlink_to(server.state / "state.db")
    finding = doctor.metrics_totals_finding(config, "nobody")
    assert not finding.ok and "symbolic link" in finding.what, finding
    totals.unlink()
    totals.write_text('{"upto": 0, "witness": [], "buckets": [[], []], "totals": {}}')  # as root left it: root 0600
    totals.chmod(0o600)
    said = doctor_says(everyone, server)
    assert (
        f"PROBLEM  nobody cannot read the metrics totals {totals} (root:root 0600): Permission denied\n"
        f"         fix: chown nobody: {totals}"
    ) in said, said


def test_doctor_names_a_runtime_folder_others_may_write_where_someone_could_serve_the_daemons_sockets(server):
    config = load(server.config)
    runtime = config.runtime_dir
    shutil.rmtree(runtime, ignore_errors=True)
    assert doctor.runtime_folder_finding(config, "nobody").ok  # made by the daemon (or its unit) in a folder of root's
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)
    finding = doctor.runtime_folder_finding(config, "nobody")
    assert not finding.ok and finding.what == (
        f"anyone may write in the runtime folder {runtime} (root:root 0777), so another user could serve sockets "
        "in the daemon's place"
    ), finding
    assert finding.fix == f"chown nobody: {runtime} && chmod 0750 {runtime}"
    sh(["chown", "nobody:", str(runtime)])
    runtime.chmod(0o750)
    assert doctor.runtime_folder_finding(config, "nobody").ok
    with unix_users(("gt-doc-rt-ann",), "gt-doc-rt"):  # a group with someone else in it, writing the folder
        sh(["chown", "nobody:gt-doc-rt", str(runtime)])
        runtime.chmod(0o2770)
        finding = doctor.runtime_folder_finding(config, "nobody")
        assert not finding.ok and finding.what == (
            f"the members of group gt-doc-rt (gt-doc-rt-ann) may write in the runtime folder {runtime} "
            "(nobody:gt-doc-rt 2770), so one of them could replace the daemon's sockets"
        ), finding
        assert finding.fix.startswith(f"chmod g-w {runtime}")
        runtime.chmod(0o2750)  # they may connect, not write: as the demo lays it out
        assert doctor.runtime_folder_finding(config, "nobody").ok
        sh(["chown", "nobody:", str(runtime)])
    runtime.rmdir()
    server.root.chmod(0o1777)  # as /tmp: whoever comes first makes the folder
    finding = doctor.runtime_folder_finding(config, "nobody")
    assert not finding.ok and finding.what.startswith(f"the runtime folder {runtime} does not exist, and anyone may make it"), (
        finding
    )
    server.root.chmod(0o755)


def test_doctor_run_as_the_daemons_user_prints_only_its_findings_and_says_to_run_it_as_root_for_what_it_cannot_check(
    everyone, server
):
    """A new team ran doctor as the service user: a refusal the probe asks for on purpose was printed as a warning,
    and the check only root can make (the pusher's Python) was to be fixed by reinstalling gitopsd elsewhere."""
    nobody = pwd.getpwnam("nobody")
    proc = sh(
        [
            "setpriv",
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--init-groups",
            "--",
            str(everyone / "gitopsd"),
            "doctor",
            "--config",
            str(server.config),
            "--git-user",
            "root",
        ],
        check=False,
        cwd="/",
        env={"PATH": f"{everyone}:/usr/bin:/bin", "HOME": str(server.state), "LANG": "C.UTF-8"},
    )
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    at = lines.index(f"PROBLEM  cannot check whether root may run {sys.executable}: run this as root")
    assert lines[at + 1] == f"         fix: sudo {everyone / 'gitopsd'} doctor --config {server.config}", lines[at + 1]
    assert "nobody's playbook runs reach SSH hosts only through their forwarder" in proc.stdout, proc.stdout


def test_doctor_says_a_missing_hook_is_missing_and_that_pushes_go_unjudged(everyone, server):
    """A new team deleted the hook: doctor printed "PROBLEM  .../pre-receive is gitopsd's hook", which reads as fine."""
    hook = server.repo / "hooks" / "pre-receive"
    hook.unlink()
    said = doctor_says(everyone, server)
    assert f"PROBLEM  {hook} does not exist: pushes to environment branches are not judged before they land" in said, said
    assert f"fix: {everyone / 'gitopsd'} install-hooks {server.repo} --config {server.config}" in said, said


def test_doctor_names_a_config_the_daemon_cannot_read_and_the_chgrp_that_fixes_it_not_a_reinstall(everyone, server):
    """A config only root could read was reported as gitopsd not running as the service user, to be fixed by
    installing gitopsd again elsewhere."""
    server.config.chmod(0o600)
    said = doctor_says(everyone, server)
    assert (
        f"PROBLEM  nobody cannot read the config (the daemon cannot start or reload): {server.config} is -rw------- root:root\n"
        f"         fix: chgrp nogroup {server.config} && chmod g+r {server.config}"
    ) in said, said
    assert "virtualenv" not in said, said


def test_doctor_names_an_inventory_missing_from_its_branch_and_the_file_the_branch_has(everyone, server):
    """A wrong `inventory:` in the config: check-config warned, doctor said "all ok", the next deployment stalled."""
    server.env_options["qa"] = {"inventory": "environments/qa/host.yml"}
    server.write_config()
    said = doctor_says(everyone, server)
    assert (
        "PROBLEM  shop/qa: the inventory environments/qa/host.yml is not in branch qa: every deployment to qa fails\n"
        f"         fix: set inventory: environments/qa/hosts.yml for shop/qa in {server.config} (branch qa has that file), "
        "or commit environments/qa/host.yml to qa"
    ) in said, said
    server.env_options["qa"] = {}
    server.write_config()
    assert "ok       every environment's inventory and playbook are in its branch" in doctor_says(everyone, server)


def test_doctor_says_a_state_dir_too_long_for_sshs_control_sockets_of_unsandboxed_runs_before_every_ssh_deployment_fails(
    short_tmp,
):
    from dataclasses import replace

    from gitopsd.config import load
    from gitopsd.installers.doctor import control_path_finding

    config = load(Sandbox(short_tmp, {"qa": ["qa-1"]}, sandbox_options={"enabled": False}).config)
    assert control_path_finding(config).ok
    deep = replace(config, state_dir=Path("/srv/" + "deployment-records/" * 4 + "gitopsd"))
    # Sandboxed runs keep their control sockets at a short path of their own.
    sandboxed = control_path_finding(replace(deep, sandbox=replace(deep.sandbox, enabled=True)))
    assert sandboxed.ok and "at a short path in each run's sandbox" in sandboxed.what
    finding = control_path_finding(deep)
    assert not finding.ok and "every SSH connection of a deployment fails (ControlPath too long)" in finding.what
    assert finding.fix is not None and "at most 65 bytes" in finding.fix
