"""`gitopsd install-service` for real: the CLI as a process, a temporary root with a copy of this
system's user database, the written unit checked with systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gitopsd.installers import service
from tests.support import GITOPSD, Sandbox, run

EXE = str(Path(sys.executable).parent / "gitopsd")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd")
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def system_root(tmp_path: Path) -> Path:
    """A root folder with this system's user database, as an image being built would have."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), root / "etc" / name)
    return root


def write_config(root: Path, data: dict, mode: int = 0o600) -> Path:
    path = root / "etc/gitopsd/gitopsd.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# the team's comment\n" + yaml.safe_dump(data))
    path.chmod(mode)
    return path


def test_install_service_on_an_empty_root_folder_says_what_is_wrong_in_one_line_and_changes_nothing(tmp_path):
    proc = run([*GITOPSD, "install-service", "--root", str(tmp_path)], check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"{tmp_path} has no etc/passwd and etc/group" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_install_service_without_a_config_writes_none_and_says_to_run_init_first(tmp_path):
    root = system_root(tmp_path)
    before = sorted(root.rglob("*"))
    proc = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"gitopsd: error: {root}/etc/gitopsd/gitopsd.yml does not exist: register a repository first with "
        "`gitopsd init /srv/git/NAME.git --config /etc/gitopsd/gitopsd.yml`, then run install-service again "
        "(nothing was changed)"
    ]
    assert sorted(root.rglob("*")) == before
    # The dry run shows the same thing to do first, and puts install-service again before systemctl.
    dry = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "gitopsd-test"]).stdout
    lines = [line.strip() for line in dry.splitlines()]
    assert lines[lines.index("first:") + 1].startswith(f"{root}/etc/gitopsd/gitopsd.yml does not exist")
    after = lines[lines.index("then:") + 1 :]
    assert after[:3] == [
        "gitopsd install-service --config /etc/gitopsd/gitopsd.yml",
        "systemctl daemon-reload",
        "systemctl enable --now gitopsd",
    ]
    assert sorted(root.rglob("*")) == before


@needs_root
@needs_analyze
def test_install_service_makes_the_configured_repositories_writable_and_the_config_readable_by_the_service(tmp_path):
    root = system_root(tmp_path)
    config = write_config(
        root,
        {
            "state_dir": "/srv/gitopsd-state",
            "repositories": [{"name": "shop", "path": "/srv/git/shop.git"}, {"name": "web", "path": "/data/repos/web.git"}],
        },
    )
    out = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    unit_path = root / "etc/systemd/system/gitopsd.service"
    unit = unit_path.read_text()
    assert f"ExecStart={EXE} run --config /etc/gitopsd/gitopsd.yml" in unit.splitlines()
    assert f"ExecStartPre={EXE} check-config --config /etc/gitopsd/gitopsd.yml" in unit.splitlines()
    # The repositories and the state folder outside /var/lib/gitopsd, nothing hard-coded.
    assert "ReadWritePaths=-/srv/git/shop.git -/data/repos/web.git -/srv/gitopsd-state" in unit.splitlines()
    assert "/srv/git\n" not in unit and not re.search(r"@[A-Z]+@", unit)  # every placeholder filled in
    assert not any(line.startswith("Documentation=http") for line in unit.splitlines())
    assert "User=gitopsd-test" in unit and "Group=gitopsd-test" in unit
    # root:gitopsd-test 0640, with the comment kept.
    gid = next(
        int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines() if line.startswith("gitopsd-test:")
    )
    st = config.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, gid, 0o640)
    assert config.read_text().startswith("# the team's comment\n")
    assert f"done: let group gitopsd-test read {config}" in out
    verify = subprocess.run(["systemd-analyze", "verify", str(unit_path)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=26", str(unit_path)], capture_output=True, text=True
    )
    assert security.returncode == 0, security.stdout[-2000:]
    # Again: nothing left to do but the unit, which is rewritten from the config as it is now.
    again = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    assert "create system" not in again and "read" not in again.split("then:")[0]


def test_the_dry_run_on_this_system_names_the_written_paths_and_warns_about_folders_the_unit_hides(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    proc = run([*GITOPSD, "install-service", "--dry-run", "--config", str(sandbox.config)])
    assert f"write /etc/systemd/system/gitopsd.service (ExecStart={EXE} run --config {sandbox.config}" in proc.stdout
    assert f"{sandbox.repo} {sandbox.state} {sandbox.runtime})" in proc.stdout
    assert not Path("/etc/systemd/system/gitopsd.service").exists() or "would do:" in proc.stdout
    # The sandbox lives under /tmp, which PrivateTmp=yes replaces with an empty folder.
    assert (
        f"gitopsd: warning: {sandbox.repo} lies under /tmp, which the unit hides (PrivateTmp=yes): the service will not find it"
    ) in proc.stderr
    # The ExecStart of the unit it would write is the one the service runs, with real paths.
    unit = next(s for s in service.plan("gitopsd", sandbox.config).steps if s.content).content
    assert f"ReadWritePaths=-{sandbox.repo} -{sandbox.state} -{sandbox.runtime}" in unit.splitlines()
    pre = next(line for line in unit.splitlines() if line.startswith("ExecStartPre="))
    assert run(pre.removeprefix("ExecStartPre=").split(), env=sandbox.environ()).returncode == 0


@pytest.mark.parametrize(
    "exe, hidden, directive",
    [
        ("/home/ops/venv/bin/gitopsd", "/home", "ProtectHome=yes"),
        ("/root/venv/bin/gitopsd", "/root", "ProtectHome=yes"),
        ("/tmp/venv/bin/gitopsd", "/tmp", "PrivateTmp=yes"),
    ],
)
def test_an_exec_start_the_unit_would_hide_is_warned_about(tmp_path, exe, hidden, directive):
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    plan = service.plan("gitopsd", Path("/etc/gitopsd/gitopsd.yml"), root, executable=exe)
    assert plan.first == []
    assert plan.warnings == [
        f"{exe} lies under {hidden}, which the unit hides ({directive}): the service cannot start "
        "it: make the virtualenv in /opt/gitopsd with a Python outside /tmp, /home and /root, "
        "e.g. /usr/bin/python3 (docs/install.md)"
    ]
    assert service.plan("gitopsd", Path("/etc/gitopsd/gitopsd.yml"), root, executable="/opt/gitopsd/bin/gitopsd").warnings == []


def test_a_config_the_service_could_not_start_with_is_refused_before_anything_is_installed(short_tmp, tmp_path):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    sandbox.config.write_text("repositories: []\n")  # what install-service used to write as a starter config
    dry = run([*GITOPSD, "install-service", "--dry-run", "--config", str(sandbox.config)]).stdout
    lines = [line.strip() for line in dry.splitlines()]
    assert lines[lines.index("first:") + 1] == (
        f"{sandbox.config} has 1 problem: fix what `gitopsd check-config "
        f"--config {sandbox.config}` shows, then run install-service again"
    )
    # Under another root the paths are that system's, so only read: an empty list is refused all the same.
    root = system_root(tmp_path)
    write_config(root, {"repositories": []})
    proc = run([*GITOPSD, "install-service", "--root", str(root)], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"gitopsd: error: {root}/etc/gitopsd/gitopsd.yml lists no repositories: register one first with "
        "`gitopsd init /srv/git/NAME.git --config /etc/gitopsd/gitopsd.yml`, then run install-service again "
        "(nothing was changed)"
    ]
    assert not (root / "etc/systemd").exists()


@needs_root
def test_install_service_makes_the_configured_signing_key_once_and_gives_it_to_the_service(tmp_path):
    root = system_root(tmp_path)
    write_config(
        root,
        {
            "state_dir": "/srv/gitopsd-state",
            "signing_key": "/srv/gitopsd-state/signing_key",
            "repositories": [{"name": "shop", "path": "/srv/git/shop.git"}],
        },
    )
    out = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    key = root / "srv/gitopsd-state/signing_key"
    assert f"done: make the service's SSH signing key {key} (signing_key in the config)" in out
    uid = next(
        int(line.split(":")[2]) for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("gitopsd-test:")
    )
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (uid, 0o600)
    assert Path(f"{key}.pub").read_text().startswith("ssh-ed25519 ")
    public = Path(f"{key}.pub").read_text()
    again = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    assert "signing key" not in again and Path(f"{key}.pub").read_text() == public


@needs_root
def test_install_service_makes_the_services_provenance_key_once_in_its_state_folder_and_only_it_reads_it(tmp_path):
    from gitopsd.adapters import signing

    root = system_root(tmp_path)
    write_config(root, {"state_dir": "/srv/gitopsd-state", "repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    out = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    state = root / "srv/gitopsd-state"
    key = state / "signing-key.pem"
    assert f"done: make the service's provenance key {key} (ed25519, mode 0600)" in out
    uid = next(
        int(line.split(":")[2]) for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("gitopsd-test:")
    )
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (uid, 0o600)
    service_key = signing.service_key(state)
    assert service_key is not None and service_key.keyid == signing.signing_key_id(state)  # the daemon signs with it
    again = run([*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"]).stdout
    assert "provenance key" not in again and signing.signing_key_id(state) == service_key.keyid


@needs_analyze
@pytest.mark.parametrize(
    "folders, state_directory, runtime_directory",
    [
        ({}, "gitopsd", "gitopsd"),
        ({"state_dir": "/var/lib/team2-gitopsd", "runtime_dir": "/run/team2-gitopsd"}, "team2-gitopsd", "team2-gitopsd"),
        ({"state_dir": "/srv/gitopsd-state", "runtime_dir": "/run/gitopsd/team2"}, "", "gitopsd/team2"),
    ],
)
def test_the_unit_makes_the_configured_state_and_runtime_folders_and_never_another_services(
    tmp_path, folders, state_directory, runtime_directory
):
    # A second team's gitopsd beside the first: systemd must make its runtime folder at every boot (/run is
    # emptied) and must not give /var/lib/gitopsd, another service's home, to this service's user.
    root = system_root(tmp_path)
    write_config(root, {**folders, "repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    plan = service.plan("team2", Path("/etc/gitopsd/gitopsd.yml"), root, executable=EXE)
    unit = next(s for s in plan.steps if s.content).content
    lines = unit.splitlines()
    assert f"StateDirectory={state_directory}" in lines and f"RuntimeDirectory={runtime_directory}" in lines
    state, runtime = folders.get("state_dir", "/var/lib/gitopsd"), folders.get("runtime_dir", "/run/gitopsd")
    assert f"# {state}: the SQLite state and per-deployment output." in lines
    assert f"# {runtime}: the nudge socket; group-accessible so the pre-receive hook can reach it." in lines
    assert f"{state}/.ssh" in unit and (state == "/var/lib/gitopsd" or "/var/lib/gitopsd" not in unit)
    assert "team2, team2" not in unit and not re.search(r"@[A-Z_]+@", unit)  # the header names no filled-in values
    path = tmp_path / "gitopsd.service"
    path.write_text(unit)
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr


@needs_root
def test_install_service_run_again_without_user_keeps_the_service_user_it_made_and_its_state_folder(tmp_path):
    # docs/install.md's upgrade and "after `gitopsd init` of another repository" run install-service without --user:
    # a team whose service user is not gitopsd must not find its unit, state folder and config moved to gitopsd.
    root = system_root(tmp_path)
    with (root / "etc/passwd").open("a") as passwd:
        passwd.write("team2-svc:x:990:990::/var/lib/team2-gitopsd:/usr/sbin/nologin\n")
    with (root / "etc/group").open("a") as group:
        group.write("team2-svc:x:990:\n")
    write_config(root, {"state_dir": "/var/lib/team2-gitopsd", "repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    state = root / "var/lib/team2-gitopsd"
    state.mkdir(parents=True)
    os.chown(state, 990, 990)
    dry = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root)]).stdout
    assert "create system" not in dry and "gitopsd:gitopsd" not in dry and "group gitopsd" not in dry, dry
    assert "let group team2-svc read" in dry and "usermod -aG team2-svc ACCOUNT" in dry, dry
    # Told, it does what it is told; before install-service made a user, the default is gitopsd.
    assert (
        "let group nobody read" in run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "nobody"]).stdout
    )
    state.rmdir()
    assert "and all in it to gitopsd:gitopsd" in run([*GITOPSD, "install-service", "--dry-run", "--root", str(root)]).stdout


def test_install_service_writes_the_unit_under_the_name_given_and_says_so_in_every_command_it_prints(tmp_path):
    # A second gitopsd on one machine (another team's state, config and user) must not overwrite gitopsd.service.
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    dry = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--unit", "gitopsd-team2"]).stdout
    assert f"write {root}/etc/systemd/system/gitopsd-team2.service (ExecStart=" in dry, dry
    then = [line.strip() for line in dry.split("then:\n", 1)[1].splitlines()]
    assert then[:3] == ["systemctl daemon-reload", "systemctl enable --now gitopsd-team2", "journalctl -u gitopsd-team2 -f"]
    assert then[-1].endswith("--unit gitopsd-team2, then systemctl daemon-reload && systemctl restart gitopsd-team2"), then
    unit = next(s for s in service.plan("team2", Path("/etc/gitopsd/gitopsd.yml"), root, unit="gitopsd-team2").steps if s.content)
    assert "`systemctl edit gitopsd-team2`" in unit.content and "systemctl edit gitopsd`" not in unit.content
    bad = run([*GITOPSD, "install-service", "--root", str(root), "--unit", "../gitopsd"], check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    assert bad.stderr.splitlines() == [
        "gitopsd: error: --unit '../gitopsd': a unit name is letters, digits and _ . - (e.g. gitopsd-shop), "
        "without .service (nothing was changed)"
    ]
    assert not (root / "etc/systemd").exists()


def test_install_service_without_openssl_says_what_to_install_and_changes_nothing(tmp_path):
    # Debian's minimal images have no openssl; the service's provenance key needs it. The error was
    # "[Errno 2] No such file or directory: 'openssl'", after the user and the unit had been made.
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    bin_dir = tmp_path / "bin"  # useradd, groupadd and coreutils, not openssl
    bin_dir.mkdir()
    for tool in ("useradd", "groupadd", "chmod", "chown", "mkdir"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/sbin/{tool}")
    proc = run(
        [*GITOPSD, "install-service", "--root", str(root), "--user", "gitopsd-test"],
        check=False,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.splitlines() == [
        "gitopsd: error: openssl is not installed (install-service makes the service's provenance key with it): "
        "apt-get install openssl, then run install-service again (nothing was changed)"
    ]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_install_service_run_again_without_unit_rewrites_the_unit_it_wrote_for_this_config(tmp_path):
    # The upgrade step (`gitopsd install-service`) after `--unit gitopsd-team2`: rewrite that unit, not a second one.
    root = system_root(tmp_path)
    write_config(root, {"repositories": [{"name": "shop", "path": "/srv/git/shop.git"}]})
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name, config in (("gitopsd-other", "/etc/other/gitopsd.yml"), ("gitopsd-team2", "/etc/gitopsd/gitopsd.yml")):
        plan = service.plan("team2", Path(config), root, executable=EXE, unit=name)
        (units / f"{name}.service").write_text(next(s for s in plan.steps if s.content).content or "")
    dry = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "team2"]).stdout
    assert f"write {units}/gitopsd-team2.service (ExecStart=" in dry and "systemctl restart gitopsd-team2" in dry, dry
    (units / "gitopsd-team2.service").unlink()
    dry = run([*GITOPSD, "install-service", "--dry-run", "--root", str(root), "--user", "team2"]).stdout
    assert f"write {units}/gitopsd.service (ExecStart=" in dry, dry
