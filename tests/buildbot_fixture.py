"""A real Buildbot for the end-to-end tests: a master with the `base` change hook and one local worker, on loopback.

Real: buildbot, buildbot-worker and buildbot-www from PyPI (www serves the change hooks and refuses to
start without buildbot-www, UI or not), their processes, and builds that clone the bare repository
at the change's revision, run the sample app's tests and report a commit status to gitopsd's API
with docs/ci.md's one-line `curl`, and, when asked, Buildbot's own GitHubStatusPush reporter pointed at
gitopsd's GitHub-style API. Ports come from the OS; everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.support import free_port

BIN = Path(sys.executable).parent
WORKER_PASSWORD = "local-worker-pw"  # the worker's login to its master on loopback: not a secret worth keeping

# The test step runs the sample app's own tests; the report steps run docs/ci.md's report line with
# STATE set, as any CI job would. Every step hides its environment: the worker's holds GITOPSD_TOKEN.
MASTER_CFG = """\
from buildbot.plugins import schedulers, steps, util, worker
from twisted.cred import strcred

WWW_PORT, PB_PORT = {www_port}, {pb_port}
REPORT = {report!r}

c = BuildmasterConfig = {{}}
c["title"] = "gitopsd end-to-end"
c["buildbotURL"] = f"http://127.0.0.1:{{WWW_PORT}}/"
c["buildbotNetUsageData"] = None
c["db"] = {{"db_url": "sqlite:///state.sqlite"}}
c["workers"] = [worker.Worker("local", {password!r}, max_builds=1)]
c["protocols"] = {{"pb": {{"port": f"tcp:{{PB_PORT}}:interface=127.0.0.1"}}}}
c["change_source"] = []
c["www"] = {{"port": f"tcp:{{WWW_PORT}}:interface=127.0.0.1", "plugins": {{}},
            "change_hook_dialects": {{"base": True}}, "change_hook_auth": [strcred.makeChecker({hook_auth!r})]}}
{reporter}c["schedulers"] = [schedulers.SingleBranchScheduler(
    name="main", change_filter=util.ChangeFilter(branch="main"), treeStableTimer=None, builderNames=["test"])]


@util.renderer
def build_url(props):
    return props.build.getUrl()


def report(state, passed):
    return steps.ShellCommand(
        name=f"report {{state}}", command=["sh", "-c", REPORT], workdir="src", logEnviron=False, alwaysRun=True,
        doStepIf=lambda step: (step.build.results == util.SUCCESS) == passed,
        env={{"STATE": state, "GITOPSD_COMMIT": util.Property("revision"), "BUILD_URL": build_url}})


factory = util.BuildFactory([
    steps.Git(repourl=util.Property("repository"), mode="full", method="clobber", workdir="src", logEnviron=False,
              haltOnFailure=True),
    steps.ShellCommand(name="test", command=["python3", "-m", "unittest", "discover", "-s", "app", "-v"],
                       workdir="src", logEnviron=False),
    report("success", True),
    report("failure", False),
])
c["builders"] = [util.BuilderConfig(name="test", workernames=["local"], factory=factory)]
"""


# GitHubStatusPush names the repository by the change's project when it is OWNER/NAME (else it parses the
# repository's URL, and gitopsd sends the bare repository's path): the `base` hook's documented custom_class
# names gitopsd's project `shop` as `gitopsd/shop`, which gitopsd's API takes for `shop` (any owner).
GITHUB_REPORTER = """\
from buildbot.plugins import reporters
from buildbot.www.hooks.base import BaseHookHandler


class GitHubStyleProject(BaseHookHandler):
    def getChanges(self, request):
        def named(result):
            changes, src = result
            for change in changes:
                change["project"] = f"gitopsd/{{change['project']}}"
            return changes, src
        return super().getChanges(request).addCallback(named)


c["www"]["change_hook_dialects"] = {{"base": {{"custom_class": GitHubStyleProject}}}}
c["services"] = [reporters.GitHubStatusPush(token={token!r}, baseURL={base_url!r}, context={context!r})]
"""


@dataclass
class Buildbot:
    """A running master and worker; `stop()` ends both and anything they left."""

    root: Path
    www_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.www_port}/"

    @property
    def change_hook(self) -> str:
        return f"{self.url}change_hook/base"

    def api(self, path: str) -> Any:
        """GET Buildbot's REST API (data API v2)."""
        with urllib.request.urlopen(f"{self.url}api/v2/{path}", timeout=10) as response:
            return json.loads(response.read())

    def builds(self) -> list[dict[str, Any]]:
        """Every build, oldest first, with its properties (the revision it built)."""
        return list(self.api("builds?property=revision&property=gitopsd_tree&order=buildid")["builds"])

    def finished_build(self, revision: str) -> dict[str, Any] | None:
        """The finished build of `revision` (its `results`: 0 success, 2 failure), or None yet."""
        self._check_alive()
        for build in self.builds():
            if build["properties"].get("revision", [None])[0] == revision and build["complete"]:
                return build
        return None

    def step_log(self, build: dict[str, Any], step: str) -> str:
        """The stdio of one step of `build`, as plain text."""
        steps = self.api(f"builds/{build['buildid']}/steps")["steps"]
        [number] = [s["number"] for s in steps if s["name"] == step]
        logs = self.api(f"builds/{build['buildid']}/steps/{number}/logs")["logs"]
        with urllib.request.urlopen(f"{self.url}api/v2/logs/{logs[0]['logid']}/raw_inline", timeout=10) as response:
            return str(response.read().decode())

    def logs(self) -> str:
        return "\n".join(f"--- {p}:\n{p.read_text()[-4000:]}" for p in sorted(self.root.glob("*/twistd.log")))

    def _check_alive(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise AssertionError(f"a Buildbot process exited ({proc.returncode}):\n{self.logs()}")

    def stop(self) -> None:
        for proc in reversed(self.processes):  # the worker first: it has nobody left to report to
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Leftovers (a build step's children): every process still working inside our folder.
        for leftover in psutil.process_iter(["cwd"]):
            cwd = leftover.info.get("cwd") or ""
            if cwd == str(self.root) or cwd.startswith(f"{self.root}/"):
                try:
                    leftover.kill()
                except psutil.Error:
                    pass


def start(
    root: Path, *, report: str, change_hook_auth: str, env: dict[str, str], github: dict[str, str] | None = None
) -> Buildbot:
    """Create and start a master and a local worker under `root`; `env` goes to the worker (the token, the API URL).

    `report` is the shell line each build ends with (STATE, GITOPSD_COMMIT and BUILD_URL set);
    `change_hook_auth` is the "user:password" the change hook wants (HTTP basic auth); `github` (token, base_url,
    context) adds GitHubStatusPush reporting each build to that GitHub-style API.
    Return once the worker is connected, so a change that comes next is built at once."""
    root.mkdir(parents=True, exist_ok=True)
    www_port, pb_port = free_port(), free_port()
    master, workdir = root / "master", root / "worker"
    run = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    subprocess.run(
        [str(BIN / "buildbot"), "create-master", "--quiet", str(master)], check=True, env=run, capture_output=True, timeout=120
    )
    (master / "master.cfg").write_text(
        MASTER_CFG.format(
            www_port=www_port,
            pb_port=pb_port,
            report=report,
            password=WORKER_PASSWORD,
            hook_auth=f"file:{master / 'changehook.passwd'}",
            reporter=GITHUB_REPORTER.format(**github) if github else "",
        )
    )
    (master / "changehook.passwd").write_text(f"{change_hook_auth}\n")
    subprocess.run(
        [
            str(BIN / "buildbot-worker"),
            "create-worker",
            "--quiet",
            str(workdir),
            f"127.0.0.1:{pb_port}",
            "local",
            WORKER_PASSWORD,
        ],
        check=True,
        env=run,
        capture_output=True,
        timeout=60,
    )
    bot = Buildbot(root, www_port)
    try:
        # In the foreground (--nodaemon), each in its own session: stop() can end them and what they started.
        bot.processes.append(
            subprocess.Popen(
                [str(BIN / "buildbot"), "start", "--nodaemon", str(master)],
                env=run,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        _wait(lambda: _answers(bot), bot, "the Buildbot master's web service")
        bot.processes.append(
            subprocess.Popen(
                [str(BIN / "buildbot-worker"), "start", "--nodaemon", str(workdir)],
                env={**run, **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        _wait(lambda: any(w["connected_to"] for w in bot.api("workers")["workers"]), bot, "the worker to connect")
    except BaseException:
        bot.stop()
        raise
    return bot


def _answers(bot: Buildbot) -> bool:
    try:
        bot.api("builders")
        return True
    except OSError:
        return False


def _wait(predicate: Any, bot: Buildbot, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        bot._check_alive()
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{bot.logs()}")


def has_curl() -> bool:
    return shutil.which("curl") is not None
