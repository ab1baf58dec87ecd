"""`make demo`: a narrated qa -> staging -> production pipeline with a rollback, in a sandbox under .demo/.

Everything is real: a bare repository with gitopsd's hooks, the daemon as a process, git pushes
from a clone, ansible-playbook deploying the sample web app to local hosts, and the app itself
answering over HTTP with the commit it runs.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..config import read_yaml, write_yaml

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / ".demo"
GITOPSD = [sys.executable, "-m", "gitopsd"]
PORT_BASE = int(os.environ.get("GITOPSD_DEMO_PORT_BASE", "18000"))
HOSTS = {
    "qa": ["qa-1"],
    "staging": ["staging-1", "staging-2"],
    "production": ["production-1", "production-2", "production-3", "production-4"],
}
DEMO_GROUP = "gitopsd-demo"
DEMO_PEOPLE = {"tester": "gitopsd-demo-ann", "approver": "gitopsd-demo-ben", "second": "gitopsd-demo-cat"}
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def port_of(host: str) -> int:
    env, n = host.rsplit("-", 1)
    return PORT_BASE + {"qa": 10, "staging": 20, "production": 30}[env] + int(n)


def say(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def start_local_hosts(hosts_root: Path, folders: list[Path]) -> None:
    """The sample's local hosts: a folder each, owned by the user sandboxed playbooks run as, and a supervisor.

    The supervisor (app/launch.py supervise) is what systemd is on a real host: playbooks run in
    a sandbox whose processes all end with the run, so they ask it to (re)start the app.
    """
    from ..adapters.sandbox import default_user

    user = default_user()
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if user is not None:  # the folder and those above it, up to hosts_root
            import pwd

            entry = pwd.getpwnam(user)
            for path in [folder, *folder.parents[: len(folder.relative_to(hosts_root).parts)]]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.Popen(
            [sys.executable, str(ROOT / "app" / "launch.py"), "supervise", "--app-root", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 10
    while not all((f / "supervisor.alive").exists() for f in folders):
        if time.monotonic() > deadline:
            raise SystemExit("the local hosts' supervisors did not start")
        time.sleep(0.05)


def stop_local_hosts(folders: list[Path]) -> None:
    """Stop the sample app and the supervisor of each host folder (the launcher waits until they are gone)."""
    for folder in folders:
        if folder.is_dir():
            subprocess.run(
                [sys.executable, str(ROOT / "app" / "launch.py"), "stop", "--app-root", str(folder)],
                capture_output=True,
                check=False,
            )


class Demo:
    def __init__(self) -> None:
        self.config = DEMO / "gitopsd.yml"
        self.repo = DEMO / "shop.git"
        self.work = DEMO / "work"
        self.hosts_root = DEMO / "hosts"
        self.env = {
            **os.environ,
            "GITOPSD_CONFIG": str(self.config),
            "GITOPSD_SAMPLE_ROOT": str(self.hosts_root),
            "GITOPSD_SAMPLE_PORT_BASE": str(PORT_BASE),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "GIT_AUTHOR_NAME": "Demo Developer",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Demo Developer",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
        }
        self.daemon: subprocess.Popen[str] | None = None
        self.people: dict[str, str] = {}  # role -> Unix user, for the human gates (root only)

    # -- helpers -----------------------------------------------------------------------------------
    def run(self, *cmd: str, cwd: Path | None = None, show: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
        if show:
            shown = " ".join(cmd).replace(sys.executable + " -m gitopsd", "gitopsd")
            note(f"{DIM}$ {shown}{RESET}")
        proc = subprocess.run(list(cmd), cwd=cwd, env=self.env, capture_output=True, text=True)
        if show:
            for line in (proc.stdout + proc.stderr).splitlines():
                if line.strip():
                    note(f"  {line.rstrip()}")
        if check and proc.returncode != 0:
            raise SystemExit(f"demo: command failed ({proc.returncode}): {' '.join(cmd)}")
        return proc

    def git(self, *args: str, show: bool = True) -> str:
        return self.run("git", *args, cwd=self.work, show=show).stdout.strip()

    def status(self) -> dict[str, dict[str, Any]]:
        out = self.run(*GITOPSD, "status", "--json", show=False).stdout
        return {row["env"]: row for row in json.loads(out)}

    def head(self, branch: str) -> str:
        return self.run("git", "--git-dir", str(self.repo), "rev-parse", f"refs/heads/{branch}", show=False).stdout.strip()

    def wait_in_sync(self, env: str, commit: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status()[env]
            if row["state"] == "in-sync" and row["deployed"] == commit:
                return row
            if row["state"] == "stalled":
                raise SystemExit(f"demo: {env} stalled: {row['reason']}")
            time.sleep(0.3)
        raise SystemExit(f"demo: {env} did not reach {commit[:7]} within {timeout:.0f}s")

    def tree(self, commit: str) -> str:
        return self.run("git", "--git-dir", str(self.repo), "rev-parse", f"{commit}^{{tree}}", show=False).stdout.strip()

    def wait_tree(self, env: str, tree: str, timeout: float = 120) -> None:
        """Wait until `env` runs a commit with `tree` (a promotion commit the daemon made has its own id)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status()[env]
            if row["state"] == "in-sync" and row["deployed"] and self.tree(row["deployed"]) == tree:
                return
            if row["state"] == "stalled":
                raise SystemExit(f"demo: {env} stalled: {row['reason']}")
            time.sleep(0.3)
        raise SystemExit(f"demo: {env} did not get tree {tree[:7]} within {timeout:.0f}s")

    def wait_checks(self, commit: str, state: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(*GITOPSD, "ci", "status", commit, "--json", show=False, check=False).stdout
            try:
                if json.loads(out).get("state") == state:
                    return
            except ValueError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"demo: CI did not report {state} for {commit[:7]} within {timeout:.0f}s")

    def as_person(self, role: str, *args: str, check: bool = True) -> None:
        """Run a gitopsd command as one of the demo's people: the daemon takes the identity from its socket."""
        user = self.people[role]
        entry = pwd.getpwnam(user)
        note(f"{DIM}{user}$ gitopsd {' '.join(args)}{RESET}")
        proc = subprocess.run(
            ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--", *GITOPSD, *args],
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/", "GITOPSD_CONFIG": str(self.config)},
            capture_output=True,
            text=True,
            cwd="/",
        )
        for line in (proc.stdout + proc.stderr).splitlines():
            note(f"  {line.rstrip()}")
        if check and proc.returncode != 0:
            raise SystemExit(f"demo: {user}'s command failed ({proc.returncode})")

    def approve_candidate(self, what: str) -> str:
        """Staging's sign-off, a release candidate of what it runs, and its two approvals; return the candidate."""
        self.as_person("tester", "signoff", "staging", "--note", f"tested {what} by hand")
        self.as_person("tester", "rc", "create")
        name = json.loads(self.run(*GITOPSD, "rc", "list", "--json", show=False).stdout)[0]["name"]
        self.as_person("tester", "approve", name, "--note", "I tested it myself", check=False)
        self.as_person("approver", "approve", name, "--note", "product: ok")
        self.as_person("second", "approve", name, "--note", "project: ok")
        return str(name)

    def release_to_production(self, what: str, show: bool = True) -> None:
        if self.people:
            name = self.approve_candidate(what)
            self.run(*GITOPSD, "promote", f"rc/{name}", "production", show=show)
        else:
            self.run(*GITOPSD, "promote", "staging", "production", show=show)
        if show:
            self.wait_in_sync("production", self.head("production"))

    def served(self, host: str) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port_of(host)}/health", timeout=2) as resp:
                return str(json.load(resp).get("commit", "?"))[:7]
        except (urllib.error.URLError, OSError, ValueError):
            return "down"

    def show_hosts(self) -> None:
        status = self.status()
        note("")
        note(f"{'environment':<12} {'branch head':<12} {'deployed':<9} hosts (commit each app reports on /health)")
        for env, hosts in HOSTS.items():
            row = status[env]
            served = "  ".join(f"{h}={self.served(h)}" for h in hosts)
            note(f"{env:<12} {(row['desired'] or '-')[:7]:<12} {(row['deployed'] or '-')[:7]:<9} {served}")

    def stream_daemon(self) -> None:
        assert self.daemon is not None and self.daemon.stderr is not None
        log = open(DEMO / "daemon.log", "w", encoding="utf-8")  # noqa: SIM115 (open while the daemon runs)
        for line in self.daemon.stderr:
            log.write(line)
            log.flush()
            print(f"   {DIM}daemon | {line.rstrip()}{RESET}", flush=True)

    # -- the story -----------------------------------------------------------------------------------
    def setup(self) -> None:
        say("Setting up a sandbox in .demo/: a bare repository, its config, and gitopsd's hooks")
        self.cleanup_previous()
        shutil.rmtree(DEMO, ignore_errors=True)
        DEMO.mkdir()
        # Playbooks run in a sandbox that sees only what it is shown: the local hosts' folders, writable. The
        # sample's hosts are this machine (their apps on its loopback, which the playbook checks): its network too.
        self.config.write_text(
            write_yaml(
                {
                    "state_dir": str(DEMO / "state"),
                    "runtime_dir": str(DEMO / "run"),
                    "sweep_interval": 30,
                    "stop_grace": 30,
                    "sandbox": {"writable": [str(self.hosts_root)], "playbook_network": "host"},
                }
            )
        )
        self.start_hosts()
        self.make_people()
        self.run(*GITOPSD, "init", str(self.repo), "--config", str(self.config), "--sample")
        data = read_yaml(self.config.read_text())
        repo = data["repositories"][0]
        qa, staging, production = repo["environments"]
        say("Built-in CI: every new head of main is built once and tested; qa takes what passed, by itself")
        repo["ci"] = {
            "branches": ["main"],
            "steps": [
                {"name": "build", "run": "python3 app/build.py", "artifacts": ["dist/app.tar.gz"]},
                {"name": "test", "run": "python3 -m unittest discover -s app"},
            ],
        }
        qa.update({"require_checks": ["gitopsd/build", "gitopsd/test"], "auto_promote": True})
        for line in write_yaml({"ci": repo["ci"], "qa": qa}).splitlines():
            note(f"  {line}")
        say("Production rolls out in batches (1 host, 25 %, the rest), checks /health after each, rolls back itself")
        production.update(
            {
                "auto_rollback": True,
                "rollout": {"batches": [1, "25%", "100%"], "bake": 2},
                "verify": {"http": {"url": "http://127.0.0.1:{app_port}/health", "json_field": "commit"}},
            }
        )
        if self.people:
            say("Human gates: a tester signs off staging; two approvers approve a release candidate for production")
            data["groups"] = {"approvers": [self.people["approver"], self.people["second"]]}
            staging["signoff_by"] = [self.people["tester"]]
            production.update(
                {
                    "require_signoff": {"env": "staging", "count": 1},
                    "approvals": {"required": 2, "approvers": ["group:approvers"], "forbid_self_approval": True},
                }
            )
            for line in write_yaml({"groups": data["groups"], "staging": {"signoff_by": staging["signoff_by"]}}).splitlines():
                note(f"  {line}")
        else:
            note("(the human gates need Unix users for the approvers and so root: this run leaves them out)")
        for line in write_yaml({"production": production}).splitlines():
            note(f"  {line}")
        self.config.write_text(write_yaml(data))
        self.run(*GITOPSD, "check-config")

    def make_people(self) -> None:
        """Three Unix users (a tester, two approvers) in a group that may use the daemon's sockets: root only."""
        if os.geteuid() != 0 or not all(shutil.which(t) for t in ("useradd", "groupadd", "setpriv")):
            return
        self.remove_people()
        subprocess.run(["groupadd", DEMO_GROUP], check=True, capture_output=True)
        for role, user in DEMO_PEOPLE.items():
            subprocess.run(
                ["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-G", DEMO_GROUP, user],
                check=True,
                capture_output=True,
            )
            self.people[role] = user
        probe = subprocess.run(
            [
                "setpriv",
                f"--reuid={pwd.getpwnam(DEMO_PEOPLE['tester']).pw_uid}",
                "--clear-groups",
                "--",
                sys.executable,
                "-c",
                "import gitopsd",
            ],
            capture_output=True,
            cwd="/",
        )
        if probe.returncode != 0:  # the checkout is not readable by other users (e.g. under /root)
            note(f"(other users cannot run {sys.executable}: the human gates are left out)")
            self.remove_people()
            return
        runtime = DEMO / "run"
        runtime.mkdir(mode=0o2750, exist_ok=True)
        shutil.chown(runtime, "root", DEMO_GROUP)
        # The sockets take the folder's group, so the people may use them; only the daemon may put them there (a
        # member who could write here could replace them).
        runtime.chmod(0o2750)
        note(f"users {', '.join(DEMO_PEOPLE.values())} (removed at the end) play the tester and two approvers")

    def remove_people(self) -> None:
        for user in DEMO_PEOPLE.values():
            subprocess.run(["userdel", user], capture_output=True, check=False)
        subprocess.run(["groupdel", DEMO_GROUP], capture_output=True, check=False)
        self.people = {}

    def host_folders(self) -> list[Path]:
        return [self.hosts_root / env / host for env, hosts in HOSTS.items() for host in hosts]

    def start_hosts(self) -> None:
        start_local_hosts(self.hosts_root, self.host_folders())

    def start_daemon(self) -> None:
        say("Starting the daemon (gitopsd run): it deploys main's first commit to qa; staging and production wait")
        self.daemon = subprocess.Popen(
            [*GITOPSD, "run"],
            env={**self.env, "JOURNAL_STREAM": "demo"},
            text=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(target=self.stream_daemon, daemon=True).start()
        first = self.head("main")
        note("qa's first head is main's first commit: it waits until CI has built and tested it.")
        self.wait_in_sync("qa", first)
        self.run(*GITOPSD, "ci", "status", first[:7])
        note("`gitopsd init` left staging and production at a placeholder: each waits for its first promotion.")
        say("First promotion of qa to staging: gitopsd promote makes a commit with exactly qa's tree")
        self.run(*GITOPSD, "promote", "qa", "staging")
        self.wait_in_sync("staging", self.head("staging"))
        say("First release to production" + (": through the human gates" if self.people else ""))
        self.release_to_production("first release")
        self.show_hosts()

    def change_and_promote(self) -> tuple[str, str]:
        say("A developer changes the app on main")
        self.run("git", "clone", "--quiet", str(self.repo), str(self.work))
        settings = self.work / "app" / "settings.json"
        data = json.loads(settings.read_text())
        data["greeting"] = "Hello from release 2"
        settings.write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "--quiet", "-am", "Greet visitors from release 2")
        self.git("push", "origin", "main")
        change = self.head("main")
        say("CI builds and tests it; once both checks are green, the daemon promotes it to qa")
        self.wait_tree("qa", self.tree(change))
        self.run(*GITOPSD, "ci", "status", change[:7])
        self.show_hosts()

        say("A commit that breaks the tests: CI is red, and it never reaches qa")
        data["greeting"] = 42
        settings.write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "--quiet", "-am", "Greeting as a number (breaks a test)")
        self.git("push", "--quiet", "origin", "main")
        red = self.head("main")
        self.wait_checks(red, "failure")
        self.run(*GITOPSD, "ci", "status", red[:7], check=False)
        note(f"qa still runs {self.status()['qa']['deployed'][:7]}; a push of the red commit to qa would be refused.")
        say("The developer reverts it; green again, qa gets the tree that passed")
        self.git("revert", "--no-edit", "HEAD")
        self.git("push", "--quiet", "origin", "main")
        self.wait_tree("qa", self.tree(self.head("main")))

        say("Promote qa to staging: gitopsd promote, a commit with exactly the tree qa runs")
        self.run(*GITOPSD, "promote", "qa", "staging")
        self.wait_in_sync("staging", self.head("staging"))
        self.show_hosts()

        say(
            "Release to production with a merge commit (git merge --no-ff staging), pushed"
            + (", once its release candidate is approved" if self.people else "")
        )
        if self.people:
            self.approve_candidate("greeting from release 2")
        self.git("fetch", "--quiet", "origin")
        self.git("checkout", "--quiet", "-b", "production", "origin/production")
        self.git("merge", "--quiet", "--no-ff", "-m", "Release: greeting from release 2", "origin/staging")
        self.git("push", "origin", "production")
        merge = self.head("production")
        self.wait_in_sync("production", merge)
        self.show_hosts()
        return change, merge

    def rollback(self, merge: str) -> None:
        say("Production must go back: git revert -m 1 of the release merge, pushed")
        self.git("revert", "--no-edit", "-m", "1", merge)
        self.git("push", "origin", "production")
        revert = self.head("production")
        self.wait_in_sync("production", revert)
        note(f"production now runs revert {revert[:7]}: its tree is the one production ran before the release,")
        note("so the hosts switch back to the release folder they still have.")
        self.show_hosts()

    def broken_release(self) -> None:
        say("A release with a production-only mistake: app/settings.production.json says healthy: false")
        self.git("checkout", "--quiet", "main")
        (self.work / "app" / "settings.production.json").write_text('{"healthy": false}\n')
        self.git("add", "app/settings.production.json")
        self.git("commit", "--quiet", "-m", "Tune production settings (with a mistake)")
        self.git("push", "--quiet", "origin", "main")
        broken = self.head("main")
        self.wait_tree("qa", self.tree(broken))
        self.run(*GITOPSD, "promote", "qa", "staging", show=False)
        self.wait_in_sync("staging", self.head("staging"))
        note(f"qa and staging run {broken[:7]} happily: the mistake only bites in production.")
        self.show_hosts()

        say("Promote it to production: production was reverted, so only an exact-tree promotion is accepted")
        self.release_to_production("production settings tuned", show=False)
        promoted = self.head("production")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (
                self.head("production") != promoted
                and self.status()["production"]["state"] == "in-sync"
                and self.status()["production"]["deployed"] == self.head("production")
            ):
                break
            time.sleep(0.3)
        else:
            raise SystemExit("demo: production did not roll back by itself")
        note("batch 1 (production-1) failed its health check: the rollout stopped, the other hosts never got")
        note("the bad release, and gitopsd reverted the branch and redeployed the last good tree everywhere.")
        self.show_hosts()
        failed = next(
            d
            for d in json.loads(self.run(*GITOPSD, "history", "production", "--json", show=False).stdout)
            if d["commit"] == promoted
        )
        logs = self.run(*GITOPSD, "logs", str(failed["id"]), show=False).stdout.splitlines()
        note(f"$ gitopsd logs {failed['id']}   (its header)")
        for line in logs[:3]:
            note(f"  {line}")

    def finish(self) -> None:
        say("History of production (gitopsd history production)")
        self.run(*GITOPSD, "history", "production", "--limit", "5")
        if self.people:
            say("The audit trail travels with the repository: git log --notes=gitopsd")
            out = self.run(
                "git",
                "--git-dir",
                str(self.repo),
                "log",
                "--notes=gitopsd",
                "-n",
                "8",
                "--format=%h %s%n%N",
                "refs/heads/staging",
                show=False,
            ).stdout
            for line in [ln for ln in out.splitlines() if ln.strip()][:14]:
                note(f"  {line}")
        say("Stopping the daemon and the sample app")
        self.stop()
        say("DORA figures of production, from the demo's own history (gitopsd dora)")
        self.run(*GITOPSD, "dora", "--env", "production", "--since", "1d")
        note("done: the sandbox stays in .demo/ (daemon log: .demo/daemon.log); `make demo` starts afresh.")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        self.cleanup_previous()
        if self.people:
            self.remove_people()

    def cleanup_previous(self) -> None:
        """Stop any sample app and supervisor left by this or an earlier demo, with the app's own launcher (it waits until they are gone)."""
        stop_local_hosts(self.host_folders())


def main() -> int:
    demo = Demo()
    started = time.monotonic()
    try:
        demo.setup()
        demo.start_daemon()
        _change, merge = demo.change_and_promote()
        demo.rollback(merge)
        demo.broken_release()
        demo.finish()
    except BaseException:
        demo.stop()
        raise
    print(f"\n{BOLD}demo finished in {time.monotonic() - started:.0f}s{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
