"""What of Ansible's own setup a deployment honours (docs/install.md, "Ansible setup"), with real sandboxed runs.

What is real: ansible-runner and ansible-playbook in bubblewrap (as `nobody` when the tests run as root),
ansible-vault and ansible-galaxy, a collection built with `ansible-galaxy collection build` and a role
tarball, installed offline from a local folder. Each test's tree is an export in a state folder that the
sandbox hides, as the daemon's are.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from gitopsd.adapters import sandbox
from gitopsd.adapters.runner import PlaybookRun, RunOutcome, run_playbook
from gitopsd.adapters.sandbox import SandboxPolicy

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
BIN = Path(sys.executable).parent
LOCAL = """\
all:
  hosts:
    h1: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
"""


TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # every run here deploys "the same tree" (the requirements cache's key)


class Server:
    """A deploy server's layout: config and state folders (hidden from runs), a folder runs may write."""

    def __init__(self, root: Path):
        self.root = root
        self.config = root / "etc" / "gitopsd" / "gitopsd.yml"
        self.config.parent.mkdir(parents=True)
        self.config.write_text("{}\n")
        self.state = root / "state"
        self.out = root / "out"
        self.out.mkdir(parents=True)
        self.out.chmod(0o777)
        self.shared = root / "shared"  # a local "galaxy": what sandbox.read_only shows
        self.shared.mkdir()

    def policy(self) -> SandboxPolicy:
        hide = sandbox.hidden_paths(self.config, self.state, self.root / "run", [])
        return SandboxPolicy(
            enabled=True,
            user=sandbox.default_user(),
            read_only=(self.shared,),
            writable=(self.out,),
            hide=hide,
            known_hosts=self.state / ".ssh" / "known_hosts",
            requirements_cache=self.state / "requirements",
        )

    def run(self, files: dict[str, str], **options) -> RunOutcome:
        folder = self.state / "deployments" / uuid.uuid4().hex[:8]
        tree = folder / "tree"
        for name, text in {"hosts.yml": LOCAL, **files}.items():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            (tree / name).write_text(text)
        run = PlaybookRun(
            marker=f"setup-{uuid.uuid4().hex}",
            workdir=tree,
            playbook=tree / "playbooks" / "deploy.yml",
            inventory=tree / "hosts.yml",
            data_dir=folder / "run",
            timeout=120,
            extravars={"gitopsd_env": "qa", "gitopsd_tree": TREE, "gitopsd_workdir": str(tree), "out": str(self.out)},
            **options,
        )
        return run_playbook(run, threading.Event(), self.policy())


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def play(*tasks: str, handlers: str = "") -> str:
    body = "".join(f"    - {t}\n" for t in tasks)
    return f"- hosts: all\n  gather_facts: false\n  tasks:\n{body}" + (f"  handlers:\n{handlers}" if handlers else "")


def describe(outcome: RunOutcome) -> str:
    return f"{outcome.reason}\n{outcome.stdout.read_text() if outcome.stdout else ''}"


# -- ansible.cfg ---------------------------------------------------------------------------------------


def test_the_trees_ansible_cfg_is_honoured_except_the_keys_gitopsd_sets(server):
    cfg = "[defaults]\nforks = 3\ntimeout = 17\npoll_interval = 7\nhost_key_checking = False\nretry_files_enabled = True\n"
    settings = ("DEFAULT_FORKS", "DEFAULT_TIMEOUT", "DEFAULT_POLL_INTERVAL", "HOST_KEY_CHECKING", "RETRY_FILES_ENABLED")
    line = " ".join(f"{{{{ lookup('ansible.builtin.config', '{s}') }}}}" for s in settings)
    outcome = server.run(
        {
            "ansible.cfg": cfg,
            "playbooks/deploy.yml": play(f"ansible.builtin.copy: {{dest: '{{{{ out }}}}/settings', content: \"{line}\"}}"),
        }
    )
    assert outcome.ok, describe(outcome)
    forks, timeout, poll_interval, host_key_checking, retry_files = (server.out / "settings").read_text().split()
    assert (forks, timeout, poll_interval) == ("3", "17", "7")
    assert (host_key_checking, retry_files) == ("True", "False"), "gitopsd's settings win over the tree's"


# -- Ansible Vault ---------------------------------------------------------------------------------------


def test_a_vaulted_variable_is_decrypted_with_the_environments_password_file_which_runs_never_keep(server):
    password = server.root / "etc" / "gitopsd" / "vault" / "qa.pass"  # beside the config: hidden from runs
    password.parent.mkdir()
    password.write_text("pw-s3cret-for-qa\n")
    password.chmod(0o600)
    encrypted = subprocess.run(
        [
            str(BIN / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(password),
            "the-secret-value",
            "--name",
            "secret",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    outcome = server.run(
        {
            "group_vars/all.yml": encrypted.stdout,
            "playbooks/deploy.yml": play(
                "ansible.builtin.copy: {dest: '{{ out }}/secret', content: '{{ secret }}'}",
                "ansible.builtin.shell: cat /proc/self/mountinfo > {{ out }}/mounts",
            ),
        },
        vault_password_file=password,
    )
    assert outcome.ok, describe(outcome)
    assert (server.out / "secret").read_text() == "the-secret-value"
    run_dir = outcome.stdout.parents[2]
    assert not (run_dir / "vault-password").exists(), "the run's copy of the password is deleted after the run"
    written = "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())
    assert "pw-s3cret-for-qa" not in written, "the password is in no output, event or artifact"
    assert str(password.parent) not in (server.out / "mounts").read_text()

    password.unlink()  # gone at run time: one line saying which file and what to do, and no retries
    outcome = server.run(
        {"group_vars/all.yml": encrypted.stdout, "playbooks/deploy.yml": play("ansible.builtin.debug: {msg: '{{ secret }}'}")},
        vault_password_file=password,
    )
    assert not outcome.ok and outcome.permanent
    assert outcome.reason.startswith(f"vault_password_file {password} cannot be read (No such file or directory)")
    assert "gitopsd retry" in outcome.reason


# -- requirements.yml --------------------------------------------------------------------------------


def build_requirements(shared: Path) -> None:
    """A collection acme.tools (a filter `shout`) built into a tarball, and a role `greet` as a tarball."""
    source = shared / "src"
    galaxy = str(BIN / "ansible-galaxy")
    subprocess.run([galaxy, "collection", "init", "acme.tools", "--init-path", str(source)], check=True, capture_output=True)
    (source / "acme" / "tools" / "plugins" / "filter").mkdir(parents=True, exist_ok=True)
    (source / "acme" / "tools" / "plugins" / "filter" / "shout.py").write_text(
        "def shout(value):\n    return str(value).upper() + '!'\n\n\nclass FilterModule:\n"
        "    def filters(self):\n        return {'shout': shout}\n"
    )
    subprocess.run(
        [galaxy, "collection", "build", str(source / "acme" / "tools"), "--output-path", str(shared)],
        check=True,
        capture_output=True,
    )
    role = source / "greet"
    (role / "tasks").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "tasks" / "main.yml").write_text(
        "- ansible.builtin.copy: {dest: '{{ out }}/greeted', content: \"{{ 'hello' | acme.tools.shout }}\"}\n"
    )
    (role / "meta" / "main.yml").write_text(
        "galaxy_info: {author: t, description: t, license: MIT, min_ansible_version: '2.9', platforms: []}\ndependencies: []\n"
    )
    subprocess.run(["tar", "-C", str(source), "-czf", str(shared / "greet.tar.gz"), "greet"], check=True)
    for path in [shared, *shared.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_requirements_are_installed_in_the_sandbox_once_per_tree_and_content_and_used_by_the_playbook(server):
    build_requirements(server.shared)
    requirements = (
        f"roles:\n  - src: file://{server.shared}/greet.tar.gz\n    name: greet\n"
        f"collections:\n  - name: {server.shared}/acme-tools-1.0.0.tar.gz\n    type: file\n"
    )
    files = {"requirements.yml": requirements, "playbooks/deploy.yml": "- hosts: all\n  gather_facts: false\n  roles: [greet]\n"}
    first = server.run(files)
    assert first.ok, describe(first)
    assert (server.out / "greeted").read_text() == "HELLO!"
    cached = list((server.state / "requirements").iterdir())
    assert len(cached) == 1 and (cached[0] / "roles" / "greet").is_dir()
    assert (cached[0] / "collections" / "ansible_collections" / "acme" / "tools").is_dir()
    assert cached[0].stat().st_uid == os.geteuid(), "the cache is the daemon's, not the run's user's"
    assert list(first.stdout.parents[2].glob("galaxy-*.log")), "ansible-galaxy ran for the first tree"

    (server.out / "greeted").unlink()
    second = server.run(files)  # another export of the same tree (a promotion, a retry)
    assert second.ok, describe(second)
    assert (server.out / "greeted").read_text() == "HELLO!"
    assert not list(second.stdout.parents[2].glob("galaxy-*.log")), "the second tree used the cached install"


def test_a_list_form_requirements_file_installs_its_roles_and_no_collections_are_asked_of_it(server):
    build_requirements(server.shared)
    files = {
        "requirements.yml": f"# the classic roles format\n---\n- src: file://{server.shared}/greet.tar.gz\n  name: greet\n",
        "collections/requirements.yml": f"collections:\n  - name: {server.shared}/acme-tools-1.0.0.tar.gz\n    type: file\n",
        "playbooks/deploy.yml": "- hosts: all\n  gather_facts: false\n  roles: [greet]\n",
    }
    outcome = server.run(files)
    assert outcome.ok, describe(outcome)
    assert (server.out / "greeted").read_text() == "HELLO!"
    logs = sorted(p.name for p in outcome.stdout.parents[2].glob("galaxy-*.log"))
    assert logs == [
        "galaxy-collection-collections-requirements.yml.log",
        "galaxy-role-collections-requirements.yml.log",
        "galaxy-role-requirements.yml.log",
    ]


def test_requirements_that_cannot_be_installed_fail_the_run_saying_what_galaxy_said(server):
    outcome = server.run(
        {
            "roles/requirements.yml": f"- src: file://{server.shared}/nosuch.tar.gz\n  name: nosuch\n",
            "playbooks/deploy.yml": play("ansible.builtin.debug: msg=hi"),
        }
    )
    assert not outcome.ok and "installing roles/requirements.yml (roles) with ansible-galaxy failed" in outcome.reason
    assert not (server.state / "requirements").exists() or not list((server.state / "requirements").iterdir())


# -- retries that lie ---------------------------------------------------------------------------------


def test_a_playbook_ansible_cannot_load_fails_at_once_as_invalid_content_naming_the_place(server):
    outcome = server.run({"playbooks/deploy.yml": play("ansible.builtin.nosuchmodule: msg=hi")})
    assert not outcome.ok and outcome.permanent
    assert outcome.reason.startswith("invalid content: couldn't resolve module/action 'ansible.builtin.nosuchmodule'")
    assert "(playbooks/deploy.yml:4:7)" in outcome.reason
    broken_yaml = server.run({"playbooks/deploy.yml": "- hosts: all\n  tasks: [\n"})
    assert broken_yaml.permanent and broken_yaml.reason.startswith("invalid content: YAML parsing failed")


def test_a_failed_task_or_an_unreachable_host_is_not_permanent(server):
    failed = server.run({"playbooks/deploy.yml": play("ansible.builtin.fail: msg=no")})
    unreachable = server.run(
        {
            "hosts.yml": "all:\n  hosts:\n    ghost: {ansible_host: 127.0.0.1, ansible_port: 1}\n",
            "playbooks/deploy.yml": play("ansible.builtin.ping:"),
        }
    )
    assert not failed.ok and not failed.permanent
    assert not unreachable.ok and not unreachable.permanent


def test_handlers_notified_before_a_failing_task_still_run(server):
    """Else a retry finds the change made ("ok", nothing notified), succeeds, and the restart never happens."""
    playbook = play(
        "ansible.builtin.copy: {dest: '{{ out }}/app.conf', content: v2}\n      notify: restart app",
        "ansible.builtin.fail: {msg: flaky}\n      when: (out + '/flaky') is not exists",
        handlers="    - name: restart app\n      ansible.builtin.copy: {dest: '{{ out }}/restarted', content: yes}\n",
    )
    first = server.run({"playbooks/deploy.yml": playbook})
    assert not first.ok
    assert (server.out / "restarted").exists(), "the handler ran although a later task failed"
    (server.out / "restarted").unlink()
    (server.out / "flaky").write_text("")
    retry = server.run({"playbooks/deploy.yml": playbook})
    assert retry.ok and not (server.out / "restarted").exists(), "the retry changed nothing, so notified nothing"
