"""What a playbook prints reaches an operator's terminal through `gitopsd logs` as text, never as escape sequences.

Task names, module output and commands are repository content: an escape sequence in them could retitle the
operator's terminal, set their clipboard (OSC 52) or hide and overwrite lines of the log they read. Real: a push
through the installed hook, the daemon as a process, ansible-playbook with a local host, `gitopsd logs`.
"""

from __future__ import annotations

from tests.integration.test_sandbox import Server
from tests.support import Daemon, Sandbox

HOSTILE = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: "\\e]0;owned\\a\\e]52;c;cm0gLXJmIH4=\\a\\e[2J\\e[8mhidden\\e[0m\\x9b2J done"
      ansible.builtin.debug: {msg: "\\e[1A\\e[2Kall fine"}
"""


def test_gitopsd_logs_shows_a_playbooks_escape_sequences_as_text_and_keeps_its_lines(short_tmp):
    box = Sandbox(short_tmp, {"qa": ["qa-1"]})
    box.write("playbooks/deploy.yml", HOSTILE)
    commit = box.commit("a playbook whose output carries escape sequences")
    box.push("main", "main:qa")
    with Daemon(box) as daemon:
        daemon.wait_result("qa", commit, "succeeded", timeout=180)
    logs = box.command("logs", str(box.history("qa")[0]["id"])).stdout
    assert "\x1b" not in logs and "\x07" not in logs and "\x9b" not in logs, repr(logs[-600:])
    assert "owned" in logs and "hidden" in logs and "all fine" in logs
    assert "TASK [" in logs and "PLAY RECAP" in logs


def test_a_deployments_reason_made_of_the_trees_words_keeps_their_escape_sequences_as_text(tmp_path):
    server = Server(tmp_path)
    outcome = server.run('- hosts: all\n  gather_facts: false\n  tasks:\n    - "\\e]0;owned\\a\\e[2Jx": {}\n')
    server.store.close()
    assert not outcome.ok and outcome.permanent
    assert "\x1b" not in outcome.reason and "\x07" not in outcome.reason
    assert "couldn't resolve module/action '\\x1b]0;owned\\x07\\x1b[2Jx'" in outcome.reason
