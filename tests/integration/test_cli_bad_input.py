"""The command line answers bad input in one line: numbers out of range, arguments that are not UTF-8, a config
file that is not UTF-8, not a regular file or far too big. Never a traceback, never "internal error", never a hang.

Real: `gitopsd` over a sandbox's repository, config and state folder: as a process where the bytes of argv or the
console script's start matter (`run`), in this process (cli.main) for the rest. Nothing faked.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support import GITOPSD, Sandbox, in_process, run

HUGE = "1" + "0" * 30


pytestmark = pytest.mark.sandbox({"qa": ["qa-1"]})


def one_line(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """Exit `code`, and one error line saying `words` (argparse puts its usage before it), nothing else."""
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == code and len(errors) == 1 and words in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("history", "--limit", HUGE),
        ("history", "--limit", "²"),
        ("history", "--limit", "0"),
        ("logs", HUGE),
        ("logs", "--ci", HUGE),
        ("rollback", "qa", "--to", HUGE),
        ("rc", "list", "--limit", HUGE),
        ("history", "--limit", "-5"),
    ],
)
def test_a_count_or_an_id_out_of_range_is_one_line_saying_the_range(sandbox: Sandbox, args: tuple[str, ...]) -> None:
    one_line(sandbox.command(*args, check=False), 2, "must be a whole number from 1 to 1000000000")


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e400", "-1"])
def test_a_duration_that_is_not_a_number_of_seconds_is_one_line(sandbox: Sandbox, timeout: str) -> None:
    one_line(sandbox.command("wait", "qa", "--timeout", timeout, check=False), 2, "must be a number of seconds")


@pytest.mark.parametrize(
    "args, named",
    [
        (("suspend", "qa", "--reason", "b\udcffd"), "the value of --reason"),
        (("suspend", "qa", "--reason=b\udcffd"), "the value of --reason"),
        (("rc", "show", "\udcff\udcfe"), "an argument"),
        (("approve", "r1", "--note", "ok\udce9"), "the value of --note"),
        (("signoff", "qa\udcff", "--note", "ok"), "an argument"),
        (("history", "--repo", "sh\udcffop"), "the value of --repo"),
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line_naming_it(sandbox: Sandbox, args: tuple[str, ...], named: str) -> None:
    # Python hands bytes that are not UTF-8 to the program as lone surrogates; subprocess sends back the bytes.
    proc = sandbox.cli(*args, check=False)
    one_line(proc, 2, f"{named} is not valid UTF-8")
    assert "\\x" in proc.stderr  # the bad byte is shown, escaped


def gitopsd(sandbox: Sandbox, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`gitopsd COMMAND ARGS`: `run` as the console script (the daemon's start is what is tested), others in this process."""
    if command == "run":
        return run([*GITOPSD, command, *args], env=sandbox.environ(), check=False, timeout=30)
    return in_process([command, *args], env=sandbox.environ(), check=False)


def test_a_config_that_is_not_utf8_is_reported_with_file_and_line(sandbox: Sandbox) -> None:
    text = sandbox.config.read_bytes().replace(b"name: shop", b"name: sh\xe9op")
    sandbox.config.write_bytes(text)
    line = text[: text.index(b"\xe9")].count(b"\n") + 1
    for command in ("check-config", "status", "run"):
        proc = gitopsd(sandbox, command, "--config", str(sandbox.config))
        where = f"{sandbox.config}:{line}: is not UTF-8 text (byte 0xe9"
        assert proc.returncode in (1, 2) and where in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_a_config_that_is_not_a_regular_file_or_is_huge_is_refused_in_one_line_without_hanging(sandbox: Sandbox) -> None:
    fifo = sandbox.root / "fifo.yml"
    os.mkfifo(fifo)
    huge = sandbox.root / "huge.yml"
    with open(huge, "wb") as handle:
        handle.truncate(11 * 2**20)  # sparse: 11 MiB that take no disk
    for config, words in (
        ("/dev/zero", "is not a regular file"),
        (str(fifo), "is not a regular file"),
        (str(huge), "is over 10 MiB"),
    ):
        for command in ("check-config", "status", "run"):
            proc = gitopsd(sandbox, command, "--config", config)
            assert proc.returncode in (1, 2) and f"{config}: {words}" in proc.stderr, proc.stderr
            assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
            assert len([line for line in proc.stderr.splitlines() if words in line]) == 1
