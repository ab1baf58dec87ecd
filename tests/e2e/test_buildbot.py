"""A real CI server in the pipeline: gitopsd triggers Buildbot, Buildbot reports back, the gate and auto-promotion act.

Real: the daemon as a process with its HTTP API, pushes through the hook, a Buildbot master and local
worker (tests/buildbot_fixture.py) that clone the bare repository, run the sample app's tests and
report with docs/ci.md's `curl` line, and with Buildbot's own GitHubStatusPush pointed at gitopsd's API.
Nothing is faked; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests import buildbot_fixture
from tests.support import ROOT, Daemon, Sandbox, free_port, git

pytestmark = pytest.mark.buildbot

CONTEXT = "buildbot/test"
REPORTER_CONTEXT = "buildbot/github-status-push"  # what Buildbot's GitHubStatusPush reports, beside the curl line's
# Where curl is missing, the same report in Python (docs/ci.md's line is what runs wherever curl exists).
PYTHON_REPORT = (
    "python3 -c 'import json, os, urllib.request as u; e = os.environ; u.urlopen(u.Request("
    'e["GITOPSD_URL"] + "/api/v1/repos/shop/statuses/" + e["GITOPSD_COMMIT"], method="POST", '
    'data=json.dumps({"state": e["STATE"], "context": "' + CONTEXT + '", "target_url": '
    'e["BUILD_URL"], "description": "make check"}).encode(), headers={"Authorization": '
    '"Bearer " + e["GITOPSD_TOKEN"], "Content-Type": "application/json"}))\''
)


def documented_report_line() -> str:
    """The one-line `curl` docs/ci.md tells every CI job to add, with this test's context."""
    [line] = [
        line.strip()
        for line in (ROOT / "docs" / "ci.md").read_text().splitlines()
        if line.strip().startswith('curl -fsS -X POST -H "Authorization: Bearer $GITOPSD_TOKEN"')
    ][:1]
    assert '\\"context\\": \\"ci/test\\"' in line, line
    return line.replace("ci/test", CONTEXT)


def add_sample_app(sandbox: Sandbox) -> None:
    for path in sorted((ROOT / "app").iterdir()):
        if path.is_file() and path.suffix in (".py", ".json"):
            sandbox.write(f"app/{path.name}", path.read_text())


@pytest.fixture(scope="module")
def world():
    """Buildbot, a gitopsd sandbox whose qa requires Buildbot's check and promotes itself, and their tokens."""
    root = Path(tempfile.mkdtemp(prefix="gt-bb-", dir="/tmp"))  # short: the daemon's socket path
    bot = None
    try:
        api_port = free_port()
        sandbox = Sandbox(
            root / "s",
            {"qa": ["qa-1"]},
            env_options={"qa": {"require_checks": [CONTEXT], "auto_promote": True}},
            extra={"api": {"listen": f"127.0.0.1:{api_port}", "tokens_file": str(root / "tokens.yml")}},
        )
        secret = sandbox.command("token", "create", "buildbot", "--scope", "statuses:write").stdout.strip()
        reader = sandbox.command("token", "create", "tester", "--scope", "read").stdout.strip()
        pusher = sandbox.command(
            "token",
            "create",
            "buildbot-push",
            "--scope",
            "statuses:write",
            "--owner",
            "ci-bot",
            "--contexts",
            "buildbot/*",
            "--repos",
            "shop",
        ).stdout.strip()
        hook_secret = root / "buildbot-hook"
        hook_secret.write_text("gitopsd:hook-pw\n")
        report = documented_report_line() if shutil.which("curl") else PYTHON_REPORT
        bot = buildbot_fixture.start(
            root / "buildbot",
            report=report,
            change_hook_auth="gitopsd:hook-pw",
            env={"GITOPSD_TOKEN": secret, "GITOPSD_URL": f"http://127.0.0.1:{api_port}"},
            github={"token": pusher, "base_url": f"http://127.0.0.1:{api_port}/api/v1", "context": REPORTER_CONTEXT},
        )
        config = yaml.safe_load(sandbox.config.read_text())
        config["repositories"][0]["ci"] = {
            "trigger": [{"url": bot.change_hook, "kind": "buildbot", "secret_file": str(hook_secret), "branches": ["main"]}]
        }
        sandbox.config.write_text(yaml.safe_dump(config))
        yield sandbox, bot, secret, reader
    finally:
        if bot is not None:
            bot.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_green_build_promotes_qa_and_a_red_one_leaves_it_and_is_refused_by_name(world):
    sandbox, bot, secret, reader = world
    add_sample_app(sandbox)
    green = sandbox.commit("the sample app with its tests")
    sandbox.push("main")
    with Daemon(sandbox) as daemon:
        # The daemon's first look finds main's head: Buildbot builds it and reports success.
        build = daemon.wait_for(lambda: bot.finished_build(green), 90, f"Buildbot's build of {green[:7]}")
        assert build["results"] == 0, bot.step_log(build, "test")
        daemon.wait_for(lambda: sandbox.tree(sandbox.head("qa")) == sandbox.tree(green), 30, "qa promoted")
        promoted = sandbox.head("qa")
        row = daemon.wait_result("qa", promoted, "succeeded")
        assert row["trigger"] == "auto-promote"
        statuses = json_get(sandbox, f"repos/shop/commits/{green}/statuses", reader)
        [status] = [s for s in statuses if s["context"] == CONTEXT]
        assert status["state"] == "success" and status["target_url"] == build_url(bot, build)
        # GitHubStatusPush reported the build too, pending then success, through GitHub's paths, as its token's owner.
        pushed = daemon.wait_for(lambda: reported(sandbox, green, reader, "success"), 30, "GitHubStatusPush's success")
        assert pushed[0]["target_url"] == build_url(bot, build) and {s["creator"]["login"] for s in pushed} == {"ci-bot"}
        assert len(pushed) > 1 and {s["state"] for s in pushed[1:]} == {"pending"}  # the request's, then the build's

        # A commit whose tests fail: Buildbot reports failure, qa stays, a promotion by hand is refused.
        sandbox.write("app/settings.json", '{"healthy": false, "greeting": "broken on purpose"}\n')
        red = sandbox.commit("an unhealthy release")
        sandbox.push("main")
        build = daemon.wait_for(lambda: bot.finished_build(red), 90, f"Buildbot's build of {red[:7]}")
        assert build["results"] == 2
        # What gitopsd sent reached the build: the tree as a property, the pusher (from the transport) as the author.
        assert build["properties"]["gitopsd_tree"][0] == sandbox.tree(red)
        [change] = [c for c in bot.api("changes")["changes"] if c["revision"] == red]
        # The project is gitopsd/shop: master.cfg's hook names it so for GitHubStatusPush (OWNER/NAME).
        assert change["author"] == pwd.getpwuid(os.getuid()).pw_name and change["project"] == "gitopsd/shop"
        assert "FAILED" in bot.step_log(build, "test")
        daemon.wait_for(
            lambda: any(
                s["context"] == CONTEXT and s["state"] == "failure"
                for s in json_get(sandbox, f"repos/shop/commits/{red}/statuses", reader)
            ),
            30,
            "Buildbot's failure report",
        )
        daemon.wait_for(lambda: reported(sandbox, red, reader, "failure"), 30, "GitHubStatusPush's failure")
        assert sandbox.head("qa") == promoted
        git(sandbox.work, "fetch", "-q", "origin")
        by_hand = git(
            sandbox.work, "commit-tree", "-p", "origin/qa", "-p", red, "-m", "promote by hand", sandbox.tree(red)
        ).stdout.strip()
        refused = sandbox.push(f"{by_hand}:refs/heads/qa", check=False)
        assert refused.returncode == 1
        assert f"{CONTEXT}: failure: make check ({build_url(bot, build)})" in refused.stderr
        assert sandbox.head("qa") == promoted
    log = daemon.log()
    assert f"buildbot trigger {bot.change_hook} told about main at {red[:7]}" in log
    assert secret not in log and "hook-pw" not in log
    # The worker's environment (and so the token) is not in any build log.
    assert secret not in bot.step_log(build, "report failure")


def reported(sandbox: Sandbox, commit: str, token: str, state: str) -> list[dict] | None:
    """GitHubStatusPush's statuses of `commit`, newest first, once the newest is `state`."""
    statuses = [s for s in json_get(sandbox, f"repos/shop/commits/{commit}/statuses", token) if s["context"] == REPORTER_CONTEXT]
    return statuses if statuses and statuses[0]["state"] == state else None


def build_url(bot: buildbot_fixture.Buildbot, build: dict) -> str:
    return f"{bot.url}#/builders/{build['builderid']}/builds/{build['number']}"


def json_get(sandbox: Sandbox, path: str, token: str) -> list[dict]:
    listen = yaml.safe_load(sandbox.config.read_text())["api"]["listen"]
    request = urllib.request.Request(f"http://{listen}/api/v1/{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()))
