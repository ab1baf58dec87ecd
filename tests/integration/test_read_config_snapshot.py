"""Read-only commands take the configuration from the daemon's snapshot while it matches the file (issue 17).

What is real: a bare repository with the hook installed (install-hooks saves the snapshot), the
state store, the `gitopsd` command line as a process. Nothing is faked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import yaml

from gitopsd.core.settings import Config
from gitopsd.services.readconfig import control_target
from gitopsd.services.status import DEFAULT_STATE_DIR, read_config
from tests.support import Sandbox, git

PROBE = """\
import contextlib, io, json, sys
from gitopsd.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "yaml": "yaml" in sys.modules,
                  "settings": "gitopsd.core.settings" in sys.modules}))
"""


def probe(sandbox: Sandbox, *args: str) -> dict:
    """Run a command in a fresh interpreter; say what it printed and whether it imported PyYAML and the settings."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args, "--config", str(sandbox.config)],
        capture_output=True,
        text=True,
        env=sandbox.environ(),
        check=True,
    )
    return json.loads(proc.stdout)


def test_status_and_history_answer_from_the_snapshot_without_parsing_the_yaml(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"], "staging": ["s-1"]})
    for command in (["status", "--json"], ["history", "qa", "--limit", "5"], ["history", "--repo", "shop"]):
        got = probe(sandbox, *command)
        assert got["code"] == 0 and not got["yaml"] and not got["settings"], (command, got)
    rows = json.loads(probe(sandbox, "status", "--json")["out"])
    assert [(r["repo"], r["env"], r["desired"]) for r in rows] == [
        ("shop", "qa", sandbox.head("qa")),
        ("shop", "staging", sandbox.head("staging")),
    ]
    # Names are still checked: a typo is an error, not an empty table.
    proc = sandbox.cli("history", "prod", check=False)
    assert proc.returncode == 1 and "no environment named 'prod'" in proc.stderr


def test_an_edited_file_is_read_in_full_until_the_snapshot_is_saved_again(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    other = sandbox.root / "other.git"
    git(sandbox.root, "clone", "-q", "--bare", str(sandbox.repo), str(other))
    data = yaml.safe_load(sandbox.config.read_text())
    data["repositories"].append({"name": "other", "path": str(other), "environments": [{"name": "qa"}]})
    sandbox.config.write_text(yaml.safe_dump(data))
    assert read_config(sandbox.config) is None  # the stamp no longer matches
    got = probe(sandbox, "status", "--json")
    assert got["yaml"] and [r["repo"] for r in json.loads(got["out"])] == ["shop", "other"]
    # An invalid edit is reported, not hidden behind the old snapshot.
    sandbox.config.write_text(sandbox.config.read_text().replace("sweep_interval:", "sweep_intervall:"))
    proc = sandbox.cli("history", check=False)
    assert proc.returncode == 1 and "sweep_intervall" in proc.stderr


def test_a_repository_gone_since_the_snapshot_is_an_unavailable_row(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    other = sandbox.root / "other.git"
    git(sandbox.root, "clone", "-q", "--bare", str(sandbox.repo), str(other))
    data = yaml.safe_load(sandbox.config.read_text())
    data["repositories"].append({"name": "other", "path": str(other), "environments": [{"name": "qa"}]})
    sandbox.config.write_text(yaml.safe_dump(data))
    sandbox.cli("install-hooks", str(sandbox.repo))  # saves the snapshot of this version
    assert read_config(sandbox.config) is not None
    shutil.rmtree(other)
    got = probe(sandbox, "status", "--json")
    rows = {(r["repo"], r["env"]): r for r in json.loads(got["out"])}
    assert not got["yaml"]
    assert rows[("other", "qa")]["state"] == "unavailable"
    assert rows[("other", "qa")]["reason"] == f"no Git repository at {other} (run `gitopsd init {other}` to create one)"
    # A setting the snapshot does not hold (status names the sweep interval for unwatched repositories) loads the file.
    config, _unavailable = read_config(sandbox.config)
    assert config.sweep_interval == sandbox.sweep_interval and config.max_parallel == Config.max_parallel


def test_the_state_folder_is_found_only_where_the_file_says_it_plainly(short_tmp):
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    assert str(Config.state_dir) == DEFAULT_STATE_DIR
    config, _ = read_config(sandbox.config)
    assert config.database == sandbox.state / "state.db"
    # Written some other way (a flow mapping, an anchor...): the file is loaded, never guessed at.
    text = sandbox.config.read_text()
    sandbox.config.write_text(text.replace(f"state_dir: {sandbox.state}", f"state_dir: &s '{sandbox.state}'"))
    sandbox.cli("install-hooks", str(sandbox.repo))
    assert read_config(sandbox.config) is None
    assert sandbox.cli("history").returncode == 0


def test_the_control_socket_and_the_files_stamp_are_read_from_the_snapshot_only_while_it_names_the_file_as_it_is(
    short_tmp,
):
    """What `status --json` needs to ask the daemon, without building the snapshot's 3,000 environments (issue 28)."""
    sandbox = Sandbox(short_tmp, {"qa": ["qa-1"]})
    config, _unavailable = read_config(sandbox.config)
    assert control_target(sandbox.config) == (config.control_socket, config.stamp, config.state_dir)
    assert control_target(sandbox.config, "shop") == (config.control_socket, config.stamp, config.state_dir)
    assert control_target(sandbox.config, "nosuch") is None  # main() says which repositories there are
    with open(sandbox.config, "a") as handle:
        handle.write("# edited\n")
    assert control_target(sandbox.config) is None  # the file as it is now has no snapshot yet
