"""The command line trusts nothing in the runtime folder but what the daemon put there: its control socket only when
the daemon's user serves it, its store-replaced word only as a few printable KiB of a regular file.

Real: the CLI as a process, a Sandbox's store and config, and an imposter: another Unix user (gt-cst-mallory, made and
removed here) serving a socket of its own at the control socket's path in a world-writable runtime folder, as
anyone can where `runtime_dir` is such a place and the daemon is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitopsd.adapters import control, controlraw
from gitopsd.services.readconfig import read_config
from tests.support import GITOPSD, Sandbox, run, setpriv, unix_users

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="an imposter of another uid needs root and setpriv"
)

MALLORY, GROUP = "gt-cst-mallory", "gt-cst"
INSIDER, OUTSIDER, SERVICE_GROUP = "gt-cst-insider", "gt-cst-outsider", "gt-cst-svc"

IMPOSTER = """\
import json, os, socket, sys
path, answer = sys.argv[1], sys.argv[2]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(8)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(5)
        heard = b""
        try:
            while chunk := conn.recv(65536):
                heard += chunk
        except OSError:
            pass
        with open(path + ".heard", "ab") as log:
            log.write(heard + b"\\n")
        try:
            conn.sendall(answer.encode() + b"\\n")
        except OSError:  # the caller went away
            pass
"""


@pytest.fixture
def imposter(short_tmp: Path) -> Iterator[Sandbox]:
    """A Sandbox whose runtime folder is world-writable (1777, as /tmp), with mallory serving the control socket."""
    short_tmp.chmod(0o755)
    box = Sandbox(short_tmp, {"qa": ["qa-1"]})
    box.runtime.mkdir(exist_ok=True)
    box.runtime.chmod(0o1777)
    found = read_config(box.config, check=False)
    assert found is not None
    stamp = found[0].stamp
    answer = {"ok": True, "json": '[{"env": "FAKE", "said": "by mallory"}]', "stamp": stamp, "message": "approved (FAKE)"}
    with unix_users((MALLORY,), GROUP):
        script = short_tmp / "imposter.py"
        script.write_text(IMPOSTER)
        script.chmod(0o644)
        proc = subprocess.Popen(
            [*setpriv(MALLORY), "/usr/bin/python3", str(script), str(box.runtime / "control.sock"), json.dumps(answer)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            yield box
        finally:
            proc.kill()
            proc.wait()


def test_status_json_does_not_print_what_a_socket_served_by_another_user_says(imposter: Sandbox) -> None:
    shown = imposter.cli("status", "--json").stdout
    assert "FAKE" not in shown
    assert [row["env"] for row in json.loads(shown)] == ["qa"]  # the store's rows, as without a daemon


def test_a_request_to_a_socket_served_by_another_user_is_not_sent_and_says_who_serves_it(imposter: Sandbox) -> None:
    path = imposter.runtime / "control.sock"
    with pytest.raises(control.ControlError) as caught:
        control.call(path, {"op": "approve", "rc": "rc-1", "note": "secret note"}, timeout=10, owner=imposter.state)
    said = str(caught.value)
    assert "\n" not in said and f"served by {MALLORY}" in said and "nothing was sent" in said, said
    assert not Path(f"{path}.heard").exists() or b"secret note" not in Path(f"{path}.heard").read_bytes()
    said = imposter.cli("approve", "rc-1", "--note", "secret note", check=False).stderr
    assert f"served by {MALLORY}" in said and "FAKE" not in said, said


ASK = """\
import json, sys
from gitopsd.adapters import control, controlraw
try:
    print(json.dumps(control.call(sys.argv[1], {"op": "status"}, timeout=10)))
except control.ControlError as exc:
    print(exc)
"""


def test_only_members_of_the_daemons_group_reach_the_control_socket_as_the_unit_lays_it_out(short_tmp: Path) -> None:
    """The unit's RuntimeDirectory (0750, the daemon's user and group) and the socket's 0660: a member is answered under
    their own name; anyone else cannot connect and is told in one line to ask for the group."""
    from tests.support import python_for_everyone, sh

    short_tmp.chmod(0o755)
    bin_dir = python_for_everyone(short_tmp / "venv")
    with unix_users((INSIDER,), SERVICE_GROUP), unix_users((OUTSIDER,), f"{SERVICE_GROUP}-x"):
        runtime = short_tmp / "run"
        runtime.mkdir(mode=0o750)
        shutil.chown(runtime, "root", SERVICE_GROUP)
        runtime.chmod(0o750)
        server = control.ControlServer(runtime / "control.sock", lambda who, request: {"ok": True, "identity": who})
        shutil.chown(server.path, "root", SERVICE_GROUP)  # the daemon's own group, as its primary group gives it
        server.start()
        try:
            script = short_tmp / "ask.py"
            script.write_text(ASK)
            script.chmod(0o644)
            asked = {
                user: sh([*setpriv(user), str(bin_dir / "python"), str(script), str(server.path)], cwd="/").stdout
                for user in (INSIDER, OUTSIDER)
            }
        finally:
            server.close()
    assert json.loads(asked[INSIDER]) == {"ok": True, "identity": INSIDER}
    assert asked[OUTSIDER] == (
        f"you may not use {runtime / 'control.sock'}: ask an operator to add you to the daemon's group "
        f"(usermod -aG {SERVICE_GROUP} {OUTSIDER}), then log in again\n"
    )


def test_what_another_user_left_as_the_store_replaced_marker_neither_hangs_status_nor_reaches_the_terminal(
    short_tmp: Path,
) -> None:
    """The daemon's word about a lost state database lives in the runtime folder: where others may write there, a FIFO
    in its place must not hang `status`, escape sequences must not reach the operator's terminal, and a symlink planted
    as its temporary file must not be written through."""
    from gitopsd.adapters.backups import replaced_marker, say_replaced

    box = Sandbox(short_tmp, {"qa": ["qa-1"]})
    box.runtime.mkdir(exist_ok=True)
    marker = replaced_marker(box.runtime)
    os.mkfifo(marker)
    try:
        shown = run([*GITOPSD, "status", "--config", str(box.config)], env=box.environ(), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("`gitopsd status` hung on a FIFO in the store-replaced marker's place")
    assert "store-replaced" not in shown.stdout + shown.stderr
    marker.unlink()
    marker.write_text("1\n\x1b]0;owned\x07\x1b[2Jthe state database was replaced\n")  # pid 1 lives: taken as said
    shown = box.cli("status")
    assert "store-replaced:" in shown.stdout and "\x1b" not in shown.stdout + shown.stderr, shown.stdout
    marker.unlink()
    victim = short_tmp / "victim"
    victim.write_text("not gitopsd's\n")
    marker.with_name(f".{marker.name}.tmp").symlink_to(victim)
    say_replaced(box.runtime, "the state database was replaced")
    assert victim.read_text() == "not gitopsd's\n"
    assert marker.read_text().endswith("\nthe state database was replaced\n")


def test_a_user_who_cannot_enter_the_runtime_folder_reads_no_store_replaced_word_and_no_error(short_tmp: Path) -> None:
    """With PostgreSQL (or a runtime folder of 0700) a user may read the store but not the runtime folder: `status`
    then has nothing to say about a lost state database, rather than failing on it."""
    from tests.support import python_for_everyone, sh

    short_tmp.chmod(0o755)
    bin_dir = python_for_everyone(short_tmp / "venv")
    runtime = short_tmp / "run"
    runtime.mkdir(mode=0o700)
    (runtime / "store-replaced").write_text(f"{os.getpid()}\nthe state database was replaced\n")
    ask = "import sys; from pathlib import Path; from gitopsd.adapters.backups import replaced_said; print(replaced_said(Path(sys.argv[1])))"
    with unix_users((MALLORY,), GROUP):
        said = sh([*setpriv(MALLORY), str(bin_dir / "python"), "-c", ask, str(runtime)], cwd="/", check=False)
    assert (said.returncode, said.stdout, said.stderr) == (0, "None\n", "")


def test_status_jsons_raw_client_takes_no_rows_from_a_socket_another_user_serves_and_sends_it_nothing(
    imposter: Sandbox,
) -> None:
    path = imposter.runtime / "control.sock"
    assert controlraw.ask(path, {"op": "status", "secret": "s3cret"}, timeout=10, owner=imposter.state) is None
    time.sleep(0.5)  # what it heard, if anything, is written once the connection closes
    heard = Path(f"{path}.heard")
    assert not heard.exists() or b"s3cret" not in heard.read_bytes()
