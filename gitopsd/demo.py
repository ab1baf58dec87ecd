"""`make demo`: a narrated qa -> staging -> production pipeline with a rollback, in a sandbox under .demo/.

Everything is real: a bare repository with gitopsd's hooks, the daemon as a process, git pushes
from a clone, ansible-playbook deploying the sample web app to local hosts, and the app itself
answering over HTTP with the commit it runs.
"""
from __future__ import annotations

import json
import os
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

from .config import read_yaml, write_yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
GITOPSD = [sys.executable, "-m", "gitopsd"]
PORT_BASE = int(os.environ.get("GITOPSD_DEMO_PORT_BASE", "18000"))
HOSTS = {"qa": ["qa-1"], "staging": ["staging-1", "staging-2"],
         "production": ["production-1", "production-2", "production-3", "production-4"]}
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
    from .adapters.sandbox import default_user
    user = default_user()
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if user is not None:   # the folder and those above it, up to hosts_root
            import pwd
            entry = pwd.getpwnam(user)
            for path in [folder, *folder.parents[:len(folder.relative_to(hosts_root).parts)]]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.Popen([sys.executable, str(ROOT / "app" / "launch.py"), "supervise", "--app-root", str(folder)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 10
    while not all((f / "supervisor.alive").exists() for f in folders):
        if time.monotonic() > deadline:
            raise SystemExit("the local hosts' supervisors did not start")
        time.sleep(0.05)


def stop_local_hosts(folders: list[Path]) -> None:
    """Stop the sample app and the supervisor of each host folder (the launcher waits until they are gone)."""
    for folder in folders:
        if folder.is_dir():
            subprocess.run([sys.executable, str(ROOT / "app" / "launch.py"), "stop", "--app-root", str(folder)],
                           capture_output=True, check=False)


class Demo:
    def __init__(self) -> None:
        self.config = DEMO / "gitopsd.yml"
        self.repo = DEMO / "shop.git"
        self.work = DEMO / "work"
        self.hosts_root = DEMO / "hosts"
        self.env = {**os.environ, "GITOPSD_CONFIG": str(self.config), "GITOPSD_SAMPLE_ROOT": str(self.hosts_root),
                    "GITOPSD_SAMPLE_PORT_BASE": str(PORT_BASE),
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                    "GIT_AUTHOR_NAME": "Demo Developer", "GIT_AUTHOR_EMAIL": "dev@example.com",
                    "GIT_COMMITTER_NAME": "Demo Developer", "GIT_COMMITTER_EMAIL": "dev@example.com"}
        self.daemon: subprocess.Popen[str] | None = None

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
        log = open(DEMO / "daemon.log", "w", encoding="utf-8")
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
        # Playbooks run in a sandbox that sees only what it is shown: the local hosts' folders, writable.
        self.config.write_text(write_yaml({"state_dir": str(DEMO / "state"), "runtime_dir": str(DEMO / "run"),
                                           "sweep_interval": 30, "stop_grace": 30,
                                           "sandbox": {"writable": [str(self.hosts_root)]}}))
        self.start_hosts()
        self.run(*GITOPSD, "init", str(self.repo), "--config", str(self.config), "--sample")
        say("Production rolls out in batches (1 host, 25 %, the rest), checks /health after each, rolls back itself")
        data = read_yaml(self.config.read_text())
        production = data["repositories"][0]["environments"][2]
        production.update({
            "auto_rollback": True,
            "rollout": {"batches": [1, "25%", "100%"], "bake": 2},
            "verify": {"http": {"url": "http://127.0.0.1:{app_port}/health", "json_field": "commit"}}})
        self.config.write_text(write_yaml(data))
        for line in write_yaml({"production": production}).splitlines():
            note(f"  {line}")
        self.run(*GITOPSD, "check-config")

    def host_folders(self) -> list[Path]:
        return [self.hosts_root / env / host for env, hosts in HOSTS.items() for host in hosts]

    def start_hosts(self) -> None:
        start_local_hosts(self.hosts_root, self.host_folders())

    def start_daemon(self) -> None:
        say("Starting the daemon (gitopsd run): it deploys main's first commit to qa; staging and production wait")
        self.daemon = subprocess.Popen([*GITOPSD, "run"], env={**self.env, "JOURNAL_STREAM": "demo"}, text=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self.stream_daemon, daemon=True).start()
        first = self.head("main")
        self.wait_in_sync("qa", first)
        note("`gitopsd init` left staging and production at a placeholder: each waits for its first promotion.")
        for src, dst in (("qa", "staging"), ("staging", "production")):
            say(f"First promotion of {src} to {dst}: gitopsd promote makes a commit with exactly {src}'s tree")
            self.run(*GITOPSD, "promote", src, dst)
            self.wait_in_sync(dst, self.head(dst))
        self.show_hosts()

    def change_and_promote(self) -> tuple[str, str]:
        say("A developer changes the app on main")
        self.run("git", "clone", "--quiet", str(self.repo), str(self.work))
        settings = self.work / "app" / "settings.json"
        data = json.loads(settings.read_text())
        data["greeting"] = "Hello from release 2"
        settings.write_text(json.dumps(data, indent=2) + "\n")
        self.git("commit", "--quiet", "-am", "Greet visitors from release 2")
        self.git("push", "--quiet", "origin", "main")
        change = self.head("main")

        say("Promote main to qa: a fast-forward push of main onto the qa branch")
        self.git("push", "origin", "main:qa")
        self.wait_in_sync("qa", change)
        self.show_hosts()

        say("Promote qa to staging: gitopsd promote, a commit with exactly the tree qa runs")
        self.run(*GITOPSD, "promote", "qa", "staging")
        self.wait_in_sync("staging", self.head("staging"))
        self.show_hosts()

        say("Release to production with a merge commit (git merge --no-ff staging), pushed")
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
        self.git("push", "--quiet", "origin", "main", "main:qa")
        broken = self.head("main")
        self.wait_in_sync("qa", broken)
        self.run(*GITOPSD, "promote", "qa", "staging", show=False)
        self.wait_in_sync("staging", self.head("staging"))
        note(f"qa and staging run {broken[:7]} happily: the mistake only bites in production.")
        self.show_hosts()

        say("Promote staging to production: production was reverted, so only an exact-tree promotion is accepted")
        self.run(*GITOPSD, "promote", "staging", "production")
        promoted = self.head("production")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.head("production") != promoted and self.status()["production"]["state"] == "in-sync":
                break
            time.sleep(0.3)
        else:
            raise SystemExit("demo: production did not roll back by itself")
        note("batch 1 (production-1) failed its health check: the rollout stopped, the other hosts never got")
        note("the bad release, and gitopsd reverted the branch and redeployed the last good tree everywhere.")
        self.show_hosts()
        failed = next(d for d in json.loads(self.run(*GITOPSD, "history", "production", "--json", show=False).stdout)
                      if d["commit"] == promoted)
        logs = self.run(*GITOPSD, "logs", str(failed["id"]), show=False).stdout.splitlines()
        note(f"$ gitopsd logs {failed['id']}   (its header)")
        for line in logs[:3]:
            note(f"  {line}")

    def finish(self) -> None:
        say("History of production (gitopsd history production)")
        self.run(*GITOPSD, "history", "production", "--limit", "5")
        say("Stopping the daemon and the sample app")
        self.stop()
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
