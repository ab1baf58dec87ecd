"""README.md's "Everyday use" block, run line by line in the order written, on one repository.

Real: the command lines are read from the README's ```sh block under "## Everyday use" (so the two
cannot drift: a line this test does not know fails it), a bare repository with the installed hook,
a clone pushing to it, the daemon as a process deploying to local hosts. Substituted, and only
these: `<merge>` (production's promotion commit) and `42` (a real deployment id); `gitopsd` runs
as this checkout's `python -m gitopsd` with the sandbox's config in GITOPSD_CONFIG (one repository:
no `--repo` needed); `status --watch` gets a Ctrl-C after two redraws. Between lines the test only
waits for the daemon, commits changes on main (pushing main alone), fetches, checks out production
for the revert, promotes once more before `gitopsd rollback` (so there is a release to roll back),
and checks that the first line is refused once gitopsd wrote on qa, as the README says.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable

from tests.support import GITOPSD, ROOT, Daemon, Sandbox, git, run, sigint_as_at_a_terminal

CHAIN = {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]}


def everyday_commands() -> list[str]:
    """The command lines of README.md's first ```sh block under "## Everyday use", comments removed."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Everyday use\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block, "README.md's Everyday use section has no ```sh block"
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readmes_everyday_commands_work_in_the_order_written(short_tmp):
    sandbox = Sandbox(short_tmp, CHAIN, converged=True)  # every environment deployed: the README's lines are the subject
    commands = everyday_commands()
    with Daemon(sandbox) as daemon:
        for env in CHAIN:
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        sandbox.write("feature.txt", "a feature")
        feature = sandbox.commit("a feature")
        ids: dict[str, str] = {}
        release = {
            "qa": feature,
            "tree": git(sandbox.work, "rev-parse", "HEAD^{tree}").stdout.strip(),
        }  # what goes on to staging and production

        def do(line: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
            """Run one README line (its `&&` parts in turn): git in the clone, gitopsd as this checkout's."""
            proc = None
            for part in line.split(" && "):
                argv = shlex.split(part)
                argv = [*GITOPSD, *argv[1:]] if argv[0] == "gitopsd" else argv
                proc = run(argv, cwd=sandbox.work, env=sandbox.environ(), check=False)
                assert proc.returncode == expect, (
                    f"README line `{line}`: {part} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
                )
            assert proc is not None
            return proc

        def steps() -> dict[str, Callable[[str], object]]:
            """What the test does for each README line, keyed by the line itself (a new line must be taught here)."""
            return {
                "git push origin main main:qa": lambda line: (do(line), daemon.wait_state("qa", "in-sync", feature)),
                "gitopsd promote main qa": promote_to_qa,
                "git push origin origin/qa:refs/heads/staging": lambda line: (
                    do(line),
                    daemon.wait_state("staging", "in-sync", release["qa"]),
                ),
                "gitopsd promote staging production": promote,
                "git revert -m 1 <merge> && git push": revert,
                "gitopsd rollback production": rollback,
                "gitopsd status": lambda line: assert_has(do(line).stdout, "qa", "in-sync"),
                "gitopsd history production": lambda line: assert_has(do(line).stdout, "rollback", "deploy"),
                "gitopsd logs 42": lambda line: assert_has(do(line.replace("42", ids["rollback"])).stdout, "PLAY RECAP"),
                # Nothing hangs here: the daemon says so in one line (tests/e2e/test_cancel.py cancels a hung run).
                "gitopsd cancel qa": lambda line: assert_has(
                    do(line, expect=1).stderr, "nothing is deploying in shop/qa now, so there is nothing to cancel"
                ),
                "gitopsd retry qa": lambda line: assert_has(
                    do(line).stdout, "shop/qa: nothing was stalled; the daemon looks at it now"
                ),
                "git push origin origin/staging:refs/promote/production": request,
                "gitopsd suspend production --reason 'db migration'": lambda line: (
                    assert_has(do(line).stdout, "suspended by"),
                    daemon.wait_state("production", "suspended"),
                ),
                "gitopsd resume production": lambda line: (
                    assert_has(do(line).stdout, "resumed"),
                    daemon.wait_state("production", "in-sync", sandbox.head("production")),
                ),
                "gitopsd sync production": sync,
                "gitopsd wait qa --timeout 600": lambda line: assert_has(do(line).stdout, sandbox.head("qa")[:7]),
                "gitopsd status --watch": watch,
            }

        def promote_to_qa(line: str) -> None:
            sandbox.write("second.txt", "a second change")
            sandbox.commit("a second change")
            sandbox.push("main")
            assert_has(do(line).stdout, "is what main runs")
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            # What the README says: now that gitopsd wrote on qa, the first line is refused ...
            proc = do(commands[0], expect=1)
            assert re.search(r"\[rejected\] +main -> qa", proc.stderr), proc.stderr  # git refuses it before the hook
            # ... and a request from the clone promotes main's next change as `gitopsd promote` does.
            sandbox.write("third.txt", "a third change")
            third = sandbox.commit("a third change")
            sandbox.push("main")
            assert_has(sandbox.push("main:refs/promote/qa", check=False).stderr, "qa is now at")
            assert sandbox.tree(sandbox.head("qa")) == sandbox.tree(third)
            daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
            git(sandbox.work, "fetch", "-q", "origin")  # origin/qa: the commit gitopsd wrote, for the next line
            release["qa"] = sandbox.head("qa")
            release["tree"] = sandbox.tree(third)

        def promote(line: str) -> None:
            before = sandbox.head("production")
            assert_has(do(line).stdout, "is what staging runs")
            ids["merge"] = sandbox.head("production")
            assert ids["merge"] != before and sandbox.tree(ids["merge"]) == release["tree"]
            daemon.wait_state("production", "in-sync", ids["merge"])

        def revert(line: str) -> None:
            git(sandbox.work, "fetch", "-q", "origin")
            git(sandbox.work, "checkout", "-q", "-b", "production", "origin/production")
            do(line.replace("<merge>", ids["merge"]))
            reverted = sandbox.head("production")
            assert sandbox.tree(reverted) == sandbox.tree(f"{ids['merge']}^1")
            row = daemon.wait_result("production", reverted, "succeeded")
            assert row["kind"] == "rollback"
            git(sandbox.work, "checkout", "-q", "main")
            # Release again (the promote line once more), so that the next line has something to roll back.
            promote("gitopsd promote staging production")

        def rollback(line: str) -> None:
            do(line)
            rolled = sandbox.head("production")
            row = daemon.wait_result("production", rolled, "succeeded")
            assert row["kind"] == "rollback" and sandbox.tree(rolled) != release["tree"]
            ids["rollback"] = str(row["id"])

        def request(line: str) -> None:
            proc = do(line, expect=1)  # the request ref itself is never kept: git reports it as declined
            assert_has(proc.stderr, "is what staging runs", "refs/promote/production itself is never kept")
            daemon.wait_state("production", "in-sync", sandbox.head("production"))
            assert sandbox.tree(sandbox.head("production")) == release["tree"]

        def sync(line: str) -> None:
            head = sandbox.head("production")
            assert_has(do(line).stdout, "kind reapply")
            daemon.wait_for(
                lambda: any(
                    d["commit"] == head and d["kind"] == "reapply" and d["result"] == "succeeded"
                    for d in sandbox.history("production")
                ),
                what="the reapply",
            )

        def watch(line: str) -> None:
            proc = subprocess.Popen(
                [*GITOPSD, *shlex.split(line)[1:]],
                cwd=sandbox.work,
                env=sandbox.environ(PYTHONFAULTHANDLER="1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=sigint_as_at_a_terminal,
            )
            time.sleep(2.5)
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:  # once, at load 4 on 2 cores: where was it? (faulthandler's dump)
                proc.send_signal(signal.SIGABRT)
                out, err = proc.communicate(timeout=30)
                raise AssertionError(f"`{line}` went on after Ctrl-C; its threads when aborted:\n{err[-4000:]}") from None
            assert proc.returncode == 0 and "Traceback" not in err, err
            assert out.count("gitopsd status, every 1s") >= 2 and "production" in out

        known = steps()
        assert [c for c in commands if c not in known] == [], "README lines this test does not run yet"
        for line in commands:
            known[line](line)


def assert_has(text: str, *parts: str) -> None:
    for part in parts:
        assert part in text, f"{part!r} not in:\n{text}"
