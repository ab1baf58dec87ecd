"""`make bench`: gitopsd's speed and footprint, each figure beside a baseline measured in the same run.

(a) push -> playbook-start latency: from `git push` returning to the ansible-playbook process
    existing (its kernel start time), median and p95 over 20+ pushes.
(b) one deployment through gitopsd (push returning -> deployment recorded as succeeded) vs the
    same ansible-playbook command run by hand, interleaved, as a ratio of medians (target <= 1.10).
(c) the idle daemon watching 3 repositories x 3 environments: RSS and CPU over 60 s.
(f) scale: N repositories x 3 environments (--scale 3,30,100): start -> READY, start -> every
    environment deployed, idle RSS, inotify use, and push -> playbook-start latency at that size; above 100 (the store
    filled, not converged) also the reads, /metrics and the dashboard's Pipeline page (bench/bench_reads_beside.py:
    the page and `status --json` beside another checkout).
(g) reads: `status --json` and `history --limit 50` at N repositories x 3 environments (--reads 3,100) with
    100,000 deployments stored, the store as the daemon leaves it; --reads-baseline DIR times another checkout too.
(g) the HTTP API: commit status POSTs at 200 requests/s for 30 s (--api-seconds) with 10,000 statuses
    stored, p50/p99 (target p99 <= 20 ms).
(h) DORA: `gitopsd dora --env production --since 365d` with 100,000 production deployments stored (target <= 1 s).
(k) execution nodes: 30 environments deployed at once on one node vs two (bench/bench_nodes.py).
(l) failover: the leader killed mid-deployment -> the standby deploying, beside one daemon killed and started again
    (bench/bench_failover.py).
(n) a promotion preview of the sample on 4 hosts vs the same `ansible-playbook --check --diff` by hand, as a ratio
    (target <= 1.2; bench/bench_preview.py).
(j) the web dashboard: the Pipeline page's time with 3 repositories x 3 environments and 100,000 deployments stored
    (target p99 <= 100 ms), and a branch move -> the page showing it over server-sent events (target <= 1 s).
(m) signed commits: a push of 500 new SSH-signed commits to an environment with `signatures:` (every one verified
    in the hook), p95, beside the same push into a copy without hooks (target p95 <= 300 ms); `--signed-key
    sk-ed25519` signs with a FIDO key made in Python, as a token would sign (tests/signing.py).
(o) big content: the daemon's peak RSS over idle while it deploys a 200 MiB file (loose, then packed) and a
    100,000-file tree, and during `status` (target <= 30 MiB each; bench/bench_bigtree.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gitopsd.adapters.store import Store  # noqa: E402
from tests.support import Daemon, Sandbox, free_port, run  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def playbook_started_after(t0: float, root: Path, timeout: float = 30) -> float:
    """Wait for an ansible-playbook process of the sandbox in `root` to appear; return when it was first seen, minus t0
    (monotonic). Another's (a test suite's, another bench's) is not this push's: its command line names another folder.

    The kernel's process start times are not comparable with the wall clock inside this container,
    so this polls the process table (a few ms per pass): the figure is an upper bound.
    """
    deadline, own = time.monotonic() + timeout, f"{root}/"
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if any(part.endswith("ansible-playbook") for part in cmd[:2]) and any(own in part for part in cmd):
                return time.monotonic() - t0
        time.sleep(0.001)
    raise RuntimeError("no ansible-playbook process started")


def bench_latency(root: Path, pushes: int, triggers: str) -> dict:
    sandbox = Sandbox(root, {"qa": ["qa-1"]})
    latencies, from_start = [], []
    with Daemon(sandbox, GITOPSD_TRIGGERS=triggers) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        for i in range(pushes):
            sandbox.write("app.txt", f"v{i}")
            commit = sandbox.commit(f"v{i}")
            started = time.monotonic()
            sandbox.push("main", "main:qa")
            returned = time.monotonic()
            seen = returned + playbook_started_after(returned, sandbox.root)
            latencies.append(seen - returned)
            from_start.append(seen - started)
            daemon.wait_state("qa", "in-sync", commit)
    return {
        "pushes": pushes,
        "median_ms": statistics.median(latencies) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "max_ms": max(latencies) * 1000,
        "from_push_start_median_ms": statistics.median(from_start) * 1000,
    }


def deployed(sandbox: Sandbox, commit: str) -> bool:
    import sqlite3

    db = sandbox.state / "state.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT 1 FROM deployments WHERE commit_id = ? AND result = 'succeeded'", (commit,)).fetchone()
    return row is not None


def bench_overhead(root: Path, rounds: int, sandboxed: bool = True) -> dict:
    """One deployment through the daemon (with or without the playbook sandbox) vs the same ansible-playbook by hand."""
    sandbox = Sandbox(root, {"qa": ["qa-1"]}, sandbox_options={} if sandboxed else {"enabled": False})
    checkout = root / "by-hand"
    run(["git", "clone", "-q", str(sandbox.repo), str(checkout)])
    vars_file = root / "vars.json"
    vars_file.write_text(
        json.dumps(
            {
                "gitopsd_env": "qa",
                "gitopsd_commit": "0" * 40,
                "gitopsd_kind": "deploy",
                "gitopsd_deploy_id": "0",
                "gitopsd_workdir": str(checkout),
            }
        )
    )
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    hand, through = [], []
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"))
        for i in range(rounds):
            t0 = time.monotonic()
            run(
                [ansible_playbook, "-i", "environments/qa/hosts.yml", "playbooks/deploy.yml", "-e", f"@{vars_file}"],
                cwd=checkout,
                env=sandbox.environ(),
            )
            hand.append(time.monotonic() - t0)
            sandbox.write("app.txt", f"round {i}")
            commit = sandbox.commit(f"round {i}")
            sandbox.push("main", "main:qa")
            t0 = time.monotonic()
            while not deployed(sandbox, commit):  # polls the store directly: a CLI call costs ~0.2 s
                time.sleep(0.01)
            through.append(time.monotonic() - t0)
    by_hand, gitopsd = statistics.median(hand), statistics.median(through)
    return {"rounds": rounds, "by_hand_s": by_hand, "gitopsd_s": gitopsd, "ratio": gitopsd / by_hand}


def bench_idle(root: Path, seconds: float) -> dict:
    import yaml

    repos = []
    sandboxes = []
    for name in ("a", "b", "c"):
        sb = Sandbox(root / name, {"qa": ["h1"], "staging": ["h2"], "production": ["h3"]})
        sandboxes.append(sb)
        repos.append({"name": name, "path": str(sb.repo), "environments": [{"name": e} for e in ("qa", "staging", "production")]})
    main = sandboxes[0]
    data = yaml.safe_load(main.config.read_text())
    data["repositories"] = repos
    data["sweep_interval"] = 10
    main.config.write_text(yaml.safe_dump(data))
    with Daemon(main) as daemon:
        daemon.wait_for(
            lambda: all(r["state"] == "in-sync" for r in json.loads(main.cli("status", "--json").stdout)),
            120,
            "all 9 environments in sync",
        )
        proc = psutil.Process(daemon.proc.pid)
        time.sleep(2)
        cpu0 = proc.cpu_times()
        t0 = time.monotonic()
        rss = []
        while time.monotonic() - t0 < seconds:
            rss.append(proc.memory_info().rss)
            time.sleep(1)
        cpu1 = proc.cpu_times()
        elapsed = time.monotonic() - t0
    baseline = subprocess.run(
        [sys.executable, "-c", "import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    return {
        "seconds": round(elapsed),
        "rss_mb": max(rss) / 2**20,
        "cpu_s": cpu,
        "cpu_percent": 100 * cpu / elapsed,
        "python_baseline_rss_mb": int(baseline.stdout) / 1024,
    }


def big_history(repo: Path, commits: int) -> None:
    """Fill a bare repository's main with `commits` commits through git fast-import (seconds, not minutes)."""
    stream = []
    parent = run(["git", "--git-dir", str(repo), "rev-parse", "refs/heads/main"]).stdout.strip()
    for i in range(commits):
        msg, data = f"commit {i}".encode(), f"version {i}\n".encode()
        stream += [
            b"commit refs/heads/main\n",
            b"committer Bench <bench@example.com> %d +0000\n" % (1_600_000_000 + i),
            b"data %d\n%s\n" % (len(msg), msg),
        ]
        if i == 0:
            stream.append(b"from %s\n" % parent.encode())
        stream += [b"M 100644 inline VERSION\n", b"data %d\n%s\n" % (len(data), data)]
    subprocess.run(["git", "--git-dir", str(repo), "fast-import", "--quiet"], input=b"".join(stream), check=True)


# Always open, but the hook must work that out: an allow window in a named time zone and a deny window.
WINDOWS = [
    {"allow": "* * * * *", "duration": "8h", "timezone": "Europe/Berlin", "name": "always"},
    {"deny": "0 0 29 2 *", "duration": "2d", "timezone": "Europe/Berlin", "name": "leap day freeze"},
]


def _passed(store: Store | None, commit: str, tree: str) -> None:
    """Both of the hooks bench's required checks reported successful for COMMIT (nothing without `require_checks`)."""
    if store is None:
        return
    for context in ("ci/build", "ci/test"):
        store.add_status(
            repo="shop", commit=commit, tree=tree, context=context, state="success", reporter="bench", now=time.time()
        )


def bench_hooks(
    root: Path,
    commits: int,
    pushes: int,
    windows: bool = False,
    checks: bool = False,
    database_url: str = "",
    edited: bool = False,
    daemon_up: bool = True,
) -> dict:
    """The same pushes (main and main:qa; then main alone, which the shim decides without Python) into a hooked and a
    bare copy of one big repository, interleaved.

    `checks`: qa requires two commit statuses (10,000 others stored), reported for each commit before its push.
    `edited`: the config file is edited (a comment) after the hook's snapshot was saved, as before a daemon reload.
    `database_url`: the records in PostgreSQL, written through the daemon's store, which copies what the hook reads
    into its SQLite file (the hook never connects to PostgreSQL).
    `daemon_up`: the daemon runs (and judges the pushes for the shim: daemon/judge.py); each push's deployment is
    waited for, untimed, before the next round. Without it the hook's own Python judges, as when the daemon is down."""
    options: dict = {"windows": WINDOWS} if windows else {}
    if checks:
        options["require_checks"] = ["ci/build", "ci/test"]
    sandbox = Sandbox(
        root / "hooked", {"qa": ["qa-1"]}, env_options={"qa": options}, extra={"database": database_url} if database_url else {}
    )
    hook_file = sandbox.state / ("hook-ledger.db" if database_url else "state.db")
    store = Store(hook_file, url=database_url) if checks else None
    for i in range(5000 if store is not None else 0):  # other trees' statuses, as a busy CI leaves them
        _passed(store, f"{i:040x}", f"{i:040x}")
    big_history(sandbox.repo, commits)
    run(["git", "--git-dir", str(sandbox.repo), "update-ref", "refs/heads/qa", "refs/heads/main"])
    # qa's first head passed its checks too: the daemon deploys it at its start
    _passed(store, *run(["git", "--git-dir", str(sandbox.repo), "rev-parse", "main", "main^{tree}"]).stdout.split())
    bare, floor, shell = root / "bare.git", root / "floor.git", root / "shell.git"
    for copy in (bare, floor, shell):
        run(["git", "clone", "-q", "--bare", "--no-local", str(sandbox.repo), str(copy)])
        for hook in (copy / "hooks").iterdir():
            hook.unlink()
    # The floor of any hook in Python: a shell that starts `python -I -S`, which reads the refs and judges nothing.
    (floor / "hooks" / "pre-receive").write_text(f"#!/bin/sh\nexec {sys.executable} -I -S -c 'import sys; sys.stdin.read()'\n")
    (floor / "hooks" / "pre-receive").chmod(0o755)
    # The floor of any hook at all, for pushes the shim decides alone: a shell that reads the refs and accepts them.
    (shell / "hooks" / "pre-receive").write_text("#!/bin/sh\nwhile read -r line; do :; done\n")
    (shell / "hooks" / "pre-receive").chmod(0o755)
    run(["git", "fetch", "-q", "origin"], cwd=sandbox.work)
    run(["git", "reset", "-q", "--hard", "origin/main"], cwd=sandbox.work)
    run(["git", "remote", "add", "bare", str(bare)], cwd=sandbox.work)
    run(["git", "remote", "add", "floor", str(floor)], cwd=sandbox.work)
    run(["git", "remote", "add", "shell", str(shell)], cwd=sandbox.work)
    if edited:
        sandbox.config.write_text(sandbox.config.read_text() + "# edited\n")
    daemon = Daemon(sandbox) if daemon_up else None
    if daemon is not None:
        daemon.wait_ready()
        daemon.wait_result("qa", sandbox.head("qa"), "succeeded", timeout=300)
    hooked, plain, hooked_feature, plain_feature, floored, shelled = [], [], [], [], [], []
    cpu: dict[str, list[float]] = {"origin": [], "bare": [], "floor": [], "origin main": [], "bare main": [], "shell main": []}
    # ^ CPU time of the push and all it started (wall time follows the machine's load; CPU time much less)
    env = sandbox.environ()
    for i in range(pushes):
        sandbox.write("VERSION", f"bench {i}")
        commit = sandbox.commit(f"bench {i}")
        _passed(store, commit, run(["git", "rev-parse", f"{commit}^{{tree}}"], cwd=sandbox.work).stdout.strip())
        for remote, times in (("origin", hooked), ("bare", plain), ("floor", floored)):
            used, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            run(["git", "push", "-q", remote, "main", "main:qa"], cwd=sandbox.work, env=env)
            times.append(time.monotonic() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[remote].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
        sandbox.commit(f"feature {i}")
        pair = [("origin", hooked_feature), ("bare", plain_feature), ("shell", shelled)]
        for remote, times in pair if i % 2 else pair[::-1]:  # each first by turns: the first may pay for the others
            used, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
            run(["git", "push", "-q", remote, "main"], cwd=sandbox.work, env=env)
            times.append(time.monotonic() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[f"{remote} main"].append(after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime)
        if daemon is not None:  # the deployment's Ansible run is not part of the push: over before the next one
            daemon.wait_result("qa", commit, "succeeded", timeout=300)
            time.sleep(1)  # and what the daemon writes after it (the ledger's note, a backup)
    if daemon is not None:
        daemon.stop()
    count = int(run(["git", "--git-dir", str(bare), "rev-list", "--count", "main"]).stdout)
    return {
        "commits": count,
        "pushes": pushes,
        "hooked_ms": statistics.median(hooked) * 1000,
        "bare_ms": statistics.median(plain) * 1000,
        "ratio": statistics.median(hooked) / statistics.median(plain),
        "feature_hooked_ms": statistics.median(hooked_feature) * 1000,
        "feature_bare_ms": statistics.median(plain_feature) * 1000,
        "feature_ratio": statistics.median(hooked_feature) / statistics.median(plain_feature),
        "feature_cpu_ratio": statistics.mean(cpu["origin main"]) / statistics.mean(cpu["bare main"]),
        "shell_ratio": statistics.median(shelled) / statistics.median(plain_feature),
        "shell_cpu_ratio": statistics.mean(cpu["shell main"]) / statistics.mean(cpu["bare main"]),
        "floor_ms": statistics.median(floored) * 1000,
        "floor_ratio": statistics.median(floored) / statistics.median(plain),
        "cpu_ratio": statistics.mean(cpu["origin"]) / statistics.mean(cpu["bare"]),
        "floor_cpu_ratio": statistics.mean(cpu["floor"]) / statistics.mean(cpu["bare"]),
        "loadavg_1m": os.getloadavg()[0],
    }


def bench_rollback(root: Path, rounds: int) -> dict:
    """Through the daemon, with the sample app on 4 local hosts: deploying a new release vs rolling back to one."""
    import shutil

    import yaml

    root.mkdir(parents=True)
    config = root / "gitopsd.yml"
    config.write_text(
        yaml.safe_dump(
            {"state_dir": str(root / "state"), "runtime_dir": str(root / "run"), "sandbox": {"writable": [str(root / "hosts")]}}
        )
    )
    from gitopsd.installers.demo import start_local_hosts, stop_local_hosts

    hosts = [root / "hosts" / "production" / f"production-{n}" for n in range(1, 5)]
    start_local_hosts(root / "hosts", hosts)
    env = {
        **os.environ,
        "GITOPSD_SAMPLE_ROOT": str(root / "hosts"),
        "GITOPSD_SAMPLE_PORT_BASE": "19400",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GITOPSD_CONFIG": str(config),
    }
    gitopsd = [sys.executable, "-m", "gitopsd"]
    repo = root / "shop.git"
    run([*gitopsd, "init", str(repo), "--sample"], env=env)
    data = yaml.safe_load(config.read_text())  # production takes trees from main: the daemon admits each new head
    data["repositories"][0]["environments"][2]["promote_from"] = "main"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    # init leaves production at a placeholder for its first promotion; here it starts at main.
    run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/production", "refs/heads/main"])
    proc = subprocess.Popen([*gitopsd, "run"], env=env, stderr=subprocess.DEVNULL)
    work = root / "work"
    deploys, rollbacks = [], []

    def head() -> str:
        return run(["git", "--git-dir", str(repo), "rev-parse", "refs/heads/production"]).stdout.strip()

    def wait_done(commit: str) -> dict:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            rows = json.loads(run([*gitopsd, "history", "production", "--json", "--limit", "1"], env=env).stdout)
            if rows and rows[0]["commit"] == commit and rows[0]["result"] not in ("queued", "running"):
                return rows[0]
            time.sleep(0.2)
        raise RuntimeError(f"no deployment of {commit}")

    def took(row: dict) -> float:
        """The deployment's duration from the store (the JSON output rounds to seconds)."""
        import sqlite3

        with sqlite3.connect(f"file:{root / 'state' / 'state.db'}?mode=ro", uri=True) as db:
            started, finished = db.execute(
                "SELECT started_at, finished_at FROM deployments WHERE id = ?", (row["id"],)
            ).fetchone()
        return finished - started

    try:
        wait_done(head())
        run(["git", "clone", "-q", str(repo), str(work)])
        for i in range(rounds):
            settings = work / "app" / "settings.json"
            data = json.loads(settings.read_text())
            data["greeting"] = f"release {i}"
            settings.write_text(json.dumps(data))
            run(["git", "-c", "user.email=b@example.com", "-c", "user.name=B", "commit", "-qam", f"release {i}"], cwd=work)
            run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, env=env)
            # Straight to production for the benchmark (production promotes from main here, see above).
            run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/production", "refs/heads/main"])
            deploys.append(took(wait_done(head())))
            run([*gitopsd, "rollback", "production"], env=env)
            row = wait_done(head())
            assert row["kind"] == "rollback", row
            rollbacks.append(took(row))
            run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/main", "refs/heads/production"])
            run(["git", "fetch", "-q", "origin"], cwd=work)
            run(["git", "reset", "-q", "--hard", "origin/main"], cwd=work)
    finally:
        proc.terminate()
        proc.wait(60)
        stop_local_hosts(hosts)
        shutil.rmtree(root / "hosts", ignore_errors=True)
    deploy, rollback = statistics.median(deploys), statistics.median(rollbacks)
    return {"rounds": rounds, "deploy_s": deploy, "rollback_s": rollback, "ratio": rollback / deploy}


ENVS = ("qa", "staging", "production")


def inotify_use(pid: int) -> tuple[int, int]:
    """(inotify instances, watches) a process holds, from /proc."""
    instances = watches = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        instances += 1
        watches += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return instances, watches


def settled(sandbox: Sandbox) -> tuple[int, int]:
    """(environments deployed successfully, environments whose last deployment failed), from the store."""
    import sqlite3

    db = sandbox.state / "state.db"
    if not db.exists():
        return 0, 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT result FROM deployments d WHERE id = (SELECT MAX(id) FROM deployments WHERE repo = d.repo AND env = d.env)"
        ).fetchall()
    return sum(r == "succeeded" for (r,) in rows), sum(r not in ("succeeded", "queued", "running") for (r,) in rows)


def bench_scale(root: Path, repositories: int, pushes: int, timeout: float, history_rows: int = 100_000) -> dict:
    """The daemon with `repositories` x 3 environments: start, converge, idle, then pushes to one repository."""
    import yaml

    from tests.e2e.test_service import NotifySocket

    sandbox = Sandbox(
        root,
        {env: [f"{env}-1"] for env in ENVS},
        sweep_interval=60,
        env_options={env: {"promote_from": "main"} for env in ENVS[1:]},
    )
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for i in range(1, repositories):  # copies of the sandbox's repository: same branches, no hook (never pushed to)
        path = root / f"r{i:03}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": f"r{i:03}", "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    envs = repositories * len(ENVS)
    notify = NotifySocket(root / "notify.sock")
    t0 = time.monotonic()
    with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path)) as daemon:
        ready = notify.wait("READY=1", timeout) - t0
        while True:
            ok, failed = settled(sandbox)
            if ok + failed >= envs or time.monotonic() - t0 > timeout:
                break
            if daemon.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited:\n{daemon.log()[-3000:]}")
            time.sleep(0.2)
        converged = time.monotonic() - t0
        if ok < envs:
            raise RuntimeError(
                f"{ok} of {envs} environments deployed ({failed} failed) after {converged:.0f} s; log in {daemon.log_path}"
            )
        proc = psutil.Process(daemon.proc.pid)
        time.sleep(3)  # let the last deployments' threads and buffers go
        samples = []
        for _ in range(5):
            samples.append(proc.memory_info().rss)
            time.sleep(0.2)
        rss = max(samples)
        instances, watches = inotify_use(daemon.proc.pid)
        latencies = []
        for i in range(pushes):
            sandbox.write("app.txt", f"v{i}")
            commit = sandbox.commit(f"v{i}")
            sandbox.push("main", "main:qa")
            latencies.append(playbook_started_after(time.monotonic(), sandbox.root))
            while not deployed(sandbox, commit):
                time.sleep(0.01)
        unwatched = [line for line in daemon.log().splitlines() if "are not watched" in line]
        reads = bench_reads(sandbox, history_rows)
    return {
        "repositories": repositories,
        "environments": envs,
        "ready_s": ready,
        "converged_s": converged,
        "idle_rss_mb": rss / 2**20,
        "inotify_instances": instances,
        "inotify_watches": watches,
        "unwatched_log_lines": len(unwatched),
        "pushes": pushes,
        "push_to_playbook_p50_ms": statistics.median(latencies) * 1000,
        "push_to_playbook_p95_ms": percentile(latencies, 95) * 1000,
        **reads,
    }


def bench_scale_filled(
    root: Path, repositories: int, history_rows: int, idle_seconds: float, scrapes: int = 10, pushes: int = 10
) -> dict:
    """A converged daemon restarted at `repositories` x 3 environments (the store filled as it leaves it: filled_sandbox,
    no Ansible runs): start -> READY, what it redeploys (nothing), idle RSS/CPU, fds, threads, inotify, reads, /metrics.

    A first run leaves what a converged daemon leaves (its state copy, the /metrics totals file); the restart after it
    is measured, its idle CPU over `idle_seconds` from READY with the sweep at its default interval (60 s)."""
    import http.client
    import sqlite3

    from tests.e2e.test_service import NotifySocket

    port = free_port()
    sandbox = filled_sandbox(root, repositories, history_rows, port, sweep_interval=60)
    config = (sandbox.repo / "config").read_text()
    hooked = config[config.index("[gitopsd]") :].split("\n[", 1)[0] + "\n"  # each repository's hook settings, as
    for clone in root.glob("r*.git"):  # install-hooks leaves them
        with open(clone / "config", "a") as f:
            f.write(hooked)
    notify = NotifySocket(root / "notify.sock")
    t0 = time.monotonic()
    with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path)) as daemon:  # the run before: what it leaves, it leaves
        first_ready = notify.wait("READY=1", 600) - t0
        daemon.wait_for(lambda: "state database copied to" in daemon.log(), 900, "the first state copy")
        daemon.wait_for(lambda: (sandbox.state / "metrics-totals.json").exists(), 900, "the /metrics totals kept")
    notify.messages.clear()
    t0 = time.monotonic()
    with Daemon(sandbox, NOTIFY_SOCKET=str(notify.path)) as daemon:
        ready = notify.wait("READY=1", 600) - t0
        proc = psutil.Process(daemon.proc.pid)
        cpu0, t1 = sum(proc.cpu_times()[:2]), time.monotonic()  # from READY: the work a start leaves for after it counts
        rss = []
        while time.monotonic() - t1 < idle_seconds:
            rss.append(proc.memory_info().rss)
            time.sleep(1)
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (time.monotonic() - t1) * 100
        instances, watches = inotify_use(daemon.proc.pid)
        fds, threads = len(os.listdir(f"/proc/{daemon.proc.pid}/fd")), proc.num_threads()

        def get(path: str = "/metrics") -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, answer.read()

        daemon.wait_for(lambda: _answers(lambda: get("/api/v1/health")), 60, "the API up")
        print(
            f"(f) {repositories} repositories: READY after {ready:.1f} s, idle RSS {max(rss) / 2**20:.0f} MiB, CPU "
            f"{cpu:.2f} %, {fds} fds, {threads} threads, {watches} inotify watches",
            flush=True,
        )
        t2 = time.monotonic()
        get()
        first = time.monotonic() - t2
        # Until the history is added up after the start, a scrape has the daemon's own figures only: time full ones.
        daemon.wait_for(lambda: b"gitopsd_deployments_total{" in get()[1], 600, "the store's figures in /metrics")
        added_up = time.monotonic() - t2
        times = []
        for _ in range(scrapes):
            t2 = time.monotonic()
            status, body = get()
            times.append(time.monotonic() - t2)
        db = sqlite3.connect(f"file:{sandbox.state / 'state.db'}?mode=ro", uri=True)
        redeployed = db.execute("SELECT count(*) FROM deployments WHERE actor != 'bench'").fetchone()[0]
        db.close()
        reads = bench_reads(sandbox, history_rows)
        latencies = []  # push -> playbook running in one repository while the others idle
        for i in range(pushes):
            sandbox.write("app.txt", f"v{i}")
            commit = sandbox.commit(f"v{i}")
            sandbox.push("main", "main:qa")
            latencies.append(playbook_started_after(time.monotonic(), sandbox.root))
            daemon.wait_for(lambda c=commit: deployed(sandbox, c), 300, f"{commit[:7]} deployed")
    dashboard = bench_pipeline_page(sandbox, port)
    return {
        "repositories": repositories,
        "environments": repositories * 3,
        "ready_s": ready,
        "first_ready_s": first_ready,
        "redeployed": redeployed,
        "idle_seconds": idle_seconds,
        "idle_rss_mb": max(rss) / 2**20,
        "idle_cpu_percent": cpu,
        "fds": fds,
        "threads": threads,
        "inotify_instances": instances,
        "inotify_watches": watches,
        "inotify_max_user_watches": _read_int("/proc/sys/fs/inotify/max_user_watches"),
        "metrics_first_ms": first * 1000,
        "metrics_added_up_s": added_up,
        "metrics_p99_ms": percentile(times, 99) * 1000,
        "metrics_bytes": len(body),
        "pushes": pushes,
        "push_to_playbook_p50_ms": statistics.median(latencies) * 1000 if latencies else None,
        "push_to_playbook_p95_ms": percentile(latencies, 95) * 1000 if latencies else None,
        **reads,
        **dashboard,
    }


def bench_pipeline_page(sandbox: Sandbox, port: int, requests: int = 100, filtered: int = 10) -> dict:
    """GET / (the Pipeline page: its first 50 repositories) signed in, `requests` times, and `?state=failed` (every
    environment's status read to filter them) `filtered` times, by a daemon started again with the dashboard on."""
    import yaml

    data = yaml.safe_load(sandbox.config.read_text())
    sandbox.config.write_text(yaml.safe_dump({**data, **VIEWERS}, sort_keys=False))  # on here only: the figures
    with Daemon(sandbox) as daemon:  # above (idle RSS, ...) are a daemon's without the dashboard, as before
        daemon.wait_for(lambda: _answers(lambda: _get(port, "/api/v1/health")), 600, "the API up")
        cookie = _signed_in(sandbox, port)
        times, body = _pages(port, cookie, "/", requests)
        proc = psutil.Process(daemon.proc.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        _pages(port, cookie, "/", requests)
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (requests + 1)
        state_times, _ = _pages(port, cookie, "/?state=failed", filtered)
    return {
        "pipeline_page_p50_ms": percentile(times, 50) * 1000,
        "pipeline_page_p99_ms": percentile(times, 99) * 1000,
        "pipeline_page_daemon_cpu_ms": cpu * 1000,
        "pipeline_page_bytes": len(body),
        "pipeline_state_filter_p50_ms": percentile(state_times, 50) * 1000,
        "pipeline_loadavg_1m": os.getloadavg()[0],
    }


def _get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path)
    answer = conn.getresponse()
    return answer.status, answer.read()


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


def bench_reads(sandbox: Sandbox, history_rows: int, rounds: int = 10, baseline: Path | None = None) -> dict:
    """`status --json` and `history --limit 50` with `history_rows` deployments stored, beside a bare Python start.

    Rounds interleave the commands (and, with `baseline`, the same commands run from that checkout
    of gitopsd, e.g. an older commit) so a busy machine slows them all alike; medians are compared.
    Bytecode is cached in a folder of its own, as an installed package's is.
    """
    import sqlite3

    db = sqlite3.connect(sandbox.state / "state.db", timeout=30)
    have = db.execute("SELECT count(*) FROM deployments").fetchone()[0]
    now = time.time()
    db.executemany(
        "INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, outcome, started_at,"
        " finished_at, attempt, detail) VALUES ('shop', ?, ?, ?, 'deploy', ?, 'push', 'bench', 'ok', ?, ?, 1, ?)",
        [
            (
                ENVS[i % len(ENVS)],
                f"{i:040x}",
                f"{i:040x}",
                "failed" if i % 7 == 0 else "succeeded",
                now - 1e6 + i,
                now - 1e6 + i + 2,
                '{"hosts": {"h": "ok"}, "batches": []}',
            )
            for i in range(max(0, history_rows - have))
        ],
    )
    db.commit()
    db.close()
    env = {k: v for k, v in sandbox.environ().items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(sandbox.root / "pycache")
    config = ["--config", str(sandbox.config)]
    commands = {"status_json": ["status", "--json", *config], "history_50": ["history", "--limit", "50", *config]}
    runs: dict[str, tuple[list[str], Path | None]] = {"python_start": ([sys.executable, "-c", "pass"], None)}
    for name, args in commands.items():
        runs[name] = ([sys.executable, "-m", "gitopsd", *args], None)
        if baseline is not None:  # `-m` puts the working folder first on sys.path: that checkout's gitopsd runs
            runs[f"baseline_{name}"] = ([sys.executable, "-m", "gitopsd", *args], baseline)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, (argv, cwd) in runs.items():
            t0 = time.monotonic()
            subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
            if round_:  # the first round writes the bytecode caches
                times[name].append(time.monotonic() - t0)
    return {
        "stored_deployments": max(history_rows, have),
        "rounds": rounds,
        "loadavg_1m": os.getloadavg()[0],
        **{f"{name}_ms": statistics.median(t) * 1000 for name, t in times.items()},
    }


def bench_reads_only(root: Path, repositories: int, history_rows: int, rounds: int, baseline: Path | None) -> dict:
    """`status` and `history` at N repositories x 3 environments without converging them through Ansible first.

    The store is filled as the daemon leaves it: each head recorded and deployed, the hook's config snapshot saved.
    """
    import yaml

    from gitopsd.adapters.store import Store
    from gitopsd.base import gitcli
    from gitopsd.config import load
    from gitopsd.gate import snapshot

    sandbox = Sandbox(root, {env: [f"{env}-1"] for env in ENVS}, env_options={env: {"promote_from": "main"} for env in ENVS[1:]})
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for i in range(1, repositories):
        path = root / f"r{i:03}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": f"r{i:03}", "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    config = load(sandbox.config)
    with Store(config.database) as store:
        for repo in config.repositories:
            heads = gitcli.branch_heads(repo.path, [e.branch for e in repo.environments])
            for env in repo.environments:
                commit, tree = heads[env.branch]
                store.record_head(repo.name, env.name, commit, tree)
                dep = store.begin(
                    repo=repo.name,
                    env=env.name,
                    commit=commit,
                    tree=tree,
                    previous_commit=None,
                    kind="deploy",
                    trigger="startup",
                    actor="bench",
                    now=time.time(),
                )
                store.finish(dep, "succeeded", now=time.time())
        store.save_gate(snapshot.from_config(config))
    return {"repositories": repositories, **bench_reads(sandbox, history_rows, rounds, baseline)}


def fill_dora_history(db_path: Path, deployments: int, now: float) -> None:
    """`deployments` production deployments over a year, as the daemon records them: every 10th failed and followed
    by a rollback, two commits brought by each successful deploy, each first seen by a push hours before."""
    import random
    import sqlite3

    rng = random.Random(14)
    db = sqlite3.connect(db_path, timeout=30)
    rows, seen, brought = [], [], []
    step = 365 * 86_400 / deployments
    for i in range(deployments):
        started = now - 365 * 86_400 + i * step
        kind = "rollback" if i % 10 == 1 else "deploy"
        result = "failed" if i % 10 == 0 else "succeeded"
        rows.append(
            (
                i + 1,
                "shop",
                "production",
                f"{i:040x}",
                f"{i:040x}",
                kind,
                result,
                "push",
                "bench",
                started,
                started + 30 + rng.random() * 60,
            )
        )
        if kind == "deploy" and result == "succeeded":
            for c in range(2):
                commit, pushed = f"{i:038x}{c:02x}", started - rng.random() * 86_400
                seen.append(("shop", commit, pushed, "branch-push"))
                brought.append(("shop", "production", commit, i + 1, rows[-1][-1], rows[-1][-1] - pushed))
    db.executemany(
        "INSERT INTO deployments (id, repo, env, commit_id, tree, kind, result, trigger, actor, started_at,"
        " finished_at, attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        rows,
    )
    db.executemany("INSERT INTO commits_seen (repo, commit_id, first_seen, via) VALUES (?, ?, ?, ?)", seen)
    db.executemany(
        "INSERT INTO commits_deployed (repo, env, commit_id, deployment_id, deployed_at, lead) VALUES (?, ?, ?, ?, ?, ?)", brought
    )
    db.commit()
    db.close()


def bench_dora(root: Path, deployments: int, rounds: int) -> dict:
    """`gitopsd dora --env production --since 365d` (and --json) with `deployments` stored, beside a bare Python start."""
    sandbox = Sandbox(root, {env: [f"{env}-1"] for env in ENVS}, env_options={env: {"promote_from": "main"} for env in ENVS[1:]})
    Store(sandbox.state / "state.db").close()  # the schema, as the daemon makes it
    fill_dora_history(sandbox.state / "state.db", deployments, time.time())
    env = {k: v for k, v in sandbox.environ().items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(sandbox.root / "pycache")
    config = ["--config", str(sandbox.config)]
    runs = {
        "python_start": [sys.executable, "-c", "pass"],
        "dora": [sys.executable, "-m", "gitopsd", "dora", "--env", "production", "--since", "365d", *config],
        "dora_json": [sys.executable, "-m", "gitopsd", "dora", "--env", "production", "--since", "365d", "--json", *config],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(rounds + 1):
        for name, argv in runs.items():
            t0 = time.monotonic()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            if round_:  # the first round writes the bytecode caches
                times[name].append(time.monotonic() - t0)
    return {
        "deployments": deployments,
        "rounds": rounds,
        "loadavg_1m": os.getloadavg()[0],
        **{f"{name}_ms": statistics.median(t) * 1000 for name, t in times.items()},
        **{f"{name}_max_ms": max(t) * 1000 for name, t in times.items()},
    }


def filled_sandbox(
    root: Path, repositories: int, history_rows: int, port: int, extra: dict | None = None, sweep_interval: float = 300
) -> Sandbox:
    """`repositories` x 3 environments with the API on `port` and `history_rows` deployments stored, as a long-running
    daemon leaves the store (deployments with checks, pushes); the heads deployed last, so nothing converges."""
    import sqlite3

    import yaml

    from gitopsd.base import gitcli

    sandbox = Sandbox(
        root,
        {env: [f"{env}-1"] for env in ENVS},
        env_options={env: {"promote_from": "main"} for env in ENVS[1:]},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(root / "tokens.yml")}, **(extra or {})},
        sweep_interval=sweep_interval,
    )
    data = yaml.safe_load(sandbox.config.read_text())
    [shop] = data["repositories"]
    for i in range(1, repositories):
        path = root / f"r{i:03}.git"
        run(["git", "clone", "--quiet", "--bare", str(sandbox.repo), str(path)])
        data["repositories"].append({**shop, "name": f"r{i:03}", "path": str(path)})
    sandbox.config.write_text(yaml.safe_dump(data, sort_keys=False))
    names = [r["name"] for r in data["repositories"]]
    now = time.time()
    checks = json.dumps(
        {
            "hosts": {"h": "ok"},
            "batches": [
                {
                    "checks": [
                        {"ok": True, "name": "playbook playbooks/verify.yml", "detail": ""},
                        {"ok": True, "name": "http h", "detail": ""},
                    ]
                }
            ],
        }
    )
    with Store(sandbox.state / "state.db"):
        pass  # the schema
    db = sqlite3.connect(sandbox.state / "state.db", timeout=30)
    db.executemany(
        "INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, outcome, started_at,"
        " finished_at, attempt, detail) VALUES (?, ?, ?, ?, ?, ?, 'push', 'bench', 'ok', ?, ?, 1, ?)",
        [
            (
                names[i % repositories],
                ENVS[i // repositories % 3],
                f"{i // 3:040x}",
                f"{i // 3:040x}",
                "rollback" if i % 50 == 1 else "deploy",
                "failed" if i % 7 == 0 else "succeeded",
                now - 1e6 + i * 9,
                now - 1e6 + i * 9 + 2 + i % 300,
                checks,
            )
            for i in range(history_rows)
        ],
    )
    db.executemany(
        "INSERT OR IGNORE INTO pushes (repo, commit_id, branch, pusher, pushed_at) VALUES (?, ?, 'main', 'dev', ?)",
        [(names[i % repositories], f"{i // 3:040x}", now - 1e6 + i * 9 - 3600) for i in range(0, history_rows, 3)],
    )
    for repo in data["repositories"]:  # what runs now, deployed last: the daemon finds every environment in sync
        heads = gitcli.branch_heads(repo["path"], list(ENVS))
        for env in ENVS:
            commit, tree = heads[env]
            db.execute(
                "INSERT INTO deployments (repo, env, commit_id, tree, kind, result, trigger, actor, started_at,"
                " finished_at) VALUES (?, ?, ?, ?, 'deploy', 'succeeded', 'startup', 'bench', ?, ?)",
                (repo["name"], env, commit, tree, now - 10, now - 8),
            )
    db.commit()
    db.close()
    return sandbox


def bench_metrics(root: Path, repositories: int = 10, history_rows: int = 100_000, scrapes: int = 300) -> dict:
    """GET /metrics from the daemon with `repositories` x 3 environments and `history_rows` deployments stored.

    The store is filled as a long-running daemon leaves it (filled_sandbox); scrapes are sequential, as
    Prometheus makes them. The first scrape after a start reads the whole history once; it is reported
    apart from the p50/p99.
    """
    import http.client

    port = free_port()
    sandbox = filled_sandbox(root, repositories, history_rows, port)
    with Daemon(sandbox) as daemon:

        def get(path: str = "/metrics") -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            answer = conn.getresponse()
            return answer.status, answer.read()

        daemon.wait_for(lambda: _answers(lambda: get("/api/v1/health")), 60, "the API up")
        t0 = time.monotonic()
        status, body = get()
        first = time.monotonic() - t0
        assert status == 200, body[:200]
        times = []
        for _ in range(scrapes):
            t0 = time.monotonic()
            status, body = get()
            times.append(time.monotonic() - t0)
            assert status == 200
        deploying = "deploying" in daemon.log()
    return {
        "environments": repositories * 3,
        "stored_deployments": history_rows + repositories * 3,
        "scrapes": scrapes,
        "first_ms": first * 1000,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "max_ms": max(times) * 1000,
        "bytes": len(body),
        "loadavg_1m": os.getloadavg()[0],
        "deployed_meanwhile": deploying,
    }


def bench_web(root: Path, requests: int = 300, moves: int = 10, history_rows: int = 100_000) -> dict:
    """The web dashboard: GET / (the Pipeline page) with 3 repositories x 3 environments and `history_rows`
    deployments stored, sequentially, signed in (target p99 <= 100 ms); and a branch move -> the page shows
    it: from `git push` of main starting to the page, fetched again on its server-sent `change` event, having
    the new commit (target <= 1 s)."""
    import http.client
    import queue
    import threading

    port = free_port()
    sandbox = filled_sandbox(root, 3, history_rows, port, VIEWERS)

    def request(method: str, path: str, cookie: str = "", body: str | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Cookie": cookie} if cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse()

    with Daemon(sandbox) as daemon:
        daemon.wait_for(lambda: _answers(lambda: (request("GET", "/api/v1/health").status, b"")), 60, "the API up")
        cookie = _signed_in(sandbox, port)

        def page() -> bytes:
            answer = request("GET", "/", cookie)
            body = answer.read()
            assert answer.status == 200, (answer.status, body[:300])
            return body

        times, body = _pages(port, cookie, "/", requests)

        changes: queue.Queue[float] = queue.Queue()
        stream = request("GET", "/events", cookie)
        assert stream.status == 200

        def listen() -> None:
            for line in stream:
                if line.startswith(b"event: change"):
                    changes.put(time.monotonic())

        threading.Thread(target=listen, daemon=True).start()
        shown, return_to_shown = [], []
        for i in range(moves):
            time.sleep(0.5)
            while not changes.empty():
                changes.get()
            sandbox.write("app.txt", f"move {i}")
            commit = sandbox.commit(f"move {i}")
            t0 = time.monotonic()
            sandbox.push("main")
            returned = time.monotonic()
            while True:
                changes.get(timeout=10)
                if commit[:7].encode() in page():
                    break
            shown.append(time.monotonic() - t0)
            return_to_shown.append(time.monotonic() - returned)
    return {
        "stored_deployments": history_rows + 9,
        "requests": requests,
        "p50_ms": percentile(times, 50) * 1000,
        "p99_ms": percentile(times, 99) * 1000,
        "max_ms": max(times) * 1000,
        "bytes": len(body),
        "moves": moves,
        "move_shown_median_ms": statistics.median(shown) * 1000,
        "move_shown_max_ms": max(shown) * 1000,
        "push_return_to_shown_median_ms": statistics.median(return_to_shown) * 1000,
        "loadavg_1m": os.getloadavg()[0],
    }


VIEWERS = {"web": {"roles": {"*": {"viewer": ["*"]}}}}  # the dashboard on, every signed-in user a viewer


def _signed_in(sandbox: Sandbox, port: int) -> str:
    """The Cookie header of a session signed in to the dashboard on `port` with a new read token."""
    import http.client
    import urllib.parse

    def request(method: str, path: str, cookie: str = "", body: str | None = None) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Cookie": cookie} if cookie else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        return conn.getresponse()

    token = sandbox.cli("token", "create", f"bench-web-{time.monotonic_ns()}", "--owner", "bench", "--scope", "read")
    login = request("GET", "/login")
    login.read()
    cookies = [c.split(";")[0] for c in login.headers.get_all("Set-Cookie") or []]
    cookie = "; ".join(cookies)
    login_csrf = next((c.split("=", 1)[1] for c in cookies if c.startswith("gitopsd_login=")), "")
    form = {"csrf_token": login_csrf, "token": token.stdout.split()[0], "next": "/"}
    answer = request("POST", "/login", cookie, urllib.parse.urlencode(form))
    answer.read()
    return "; ".join([cookie, *(c.split(";")[0] for c in answer.headers.get_all("Set-Cookie") or [])]).strip("; ")


def _pages(port: int, cookie: str, path: str, requests: int) -> tuple[list[float], bytes]:
    """The times of `requests` sequential GETs of `path` as the signed-in `cookie` (after one untimed), and a body."""
    import http.client

    def get() -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.request("GET", path, headers={"Cookie": cookie})
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 200, (answer.status, body[:300])
        return body

    body = get()
    times = []
    for _ in range(requests):
        t0 = time.monotonic()
        body = get()
        times.append(time.monotonic() - t0)
    return times, body


def _answers(get: Callable[[], tuple[int, bytes]]) -> bool:
    try:
        return get()[0] == 200
    except OSError:
        return False


def bench_api(root: Path, seconds: float, rate: int = 200, stored: int = 10_000, workers: int = 8) -> dict:
    """Status POSTs to the daemon's HTTP API at `rate` per second (open loop) with `stored` statuses in the store.

    Each latency runs from the request's scheduled start to its answer read, so a slow answer also
    counts against the requests queued behind it. Client and daemon share this machine's CPUs.
    """
    import http.client
    import sqlite3
    import threading

    port = free_port()
    sandbox = Sandbox(
        root,
        {"qa": ["qa-1"]},
        env_options={"qa": {"require_checks": ["ci/test"]}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(root / "tokens.yml")}},
    )
    token = sandbox.cli("token", "create", "bench", "--scope", "statuses:write").stdout.strip()
    # As CI jobs report: six statuses per commit (pending and a result for three contexts), then the next commit.
    total = int(seconds * rate)
    big_history(sandbox.repo, total // 6 + 1)
    commits = run(["git", "--git-dir", str(sandbox.repo), "rev-list", "main"]).stdout.split()
    with Daemon(sandbox) as daemon:

        def up() -> bool:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/v1/health")
                return conn.getresponse().status == 200
            except OSError:
                return False

        daemon.wait_for(up, 60, "the API up")
        db = sqlite3.connect(sandbox.state / "state.db", timeout=30)
        now = time.time()
        db.executemany(
            "INSERT INTO commit_statuses (repo, commit_id, tree, context, state, target_url, description,"
            " reporter, created_at) VALUES ('shop', ?, ?, ?, ?, 'https://ci.example.com/job', 'bench', 'bench', ?)",
            [
                (f"{i // 4:040x}", f"{i // 4:040x}", f"ci/{i % 4}", ("success", "failure")[i % 2], now - stored + i)
                for i in range(stored)
            ],
        )
        db.commit()
        db.close()
        bodies = [
            json.dumps(
                {"state": state, "context": context, "target_url": "https://ci.example.com/job/1", "description": "bench"}
            ).encode()
            for context in ("ci/build", "ci/test", "ci/lint")
            for state in ("pending", "success")
        ]
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        next_index = iter(range(total))
        proc = psutil.Process(daemon.proc.pid)
        cpu0 = proc.cpu_times()
        t0 = time.monotonic() + 0.5

        def work() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            while True:
                with lock:
                    i = next(next_index, None)
                if i is None:
                    break
                due = t0 + i / rate
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    conn.request(
                        "POST",
                        f"/api/v1/repos/shop/statuses/{commits[i // 6 % len(commits)]}",
                        body=bodies[i % 6],
                        headers=headers,
                    )
                    response = conn.getresponse()
                    response.read()
                    ok = response.status == 201
                except OSError as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    ok, response = False, None
                    errors.append(str(exc))
                took = time.monotonic() - due
                with lock:
                    latencies.append(took)
                    if not ok and response is not None:
                        errors.append(str(response.status))
            conn.close()

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - t0
        cpu = proc.cpu_times()
        # The daemon's CPU while the statuses came, with the git processes it started and waited for.
        spent = sum(cpu[:4]) - sum(cpu0[:4])
        rows = (
            sqlite3.connect(f"file:{sandbox.state / 'state.db'}?mode=ro", uri=True)
            .execute("SELECT count(*) FROM commit_statuses")
            .fetchone()[0]
        )
    return {
        "requests": total,
        "seconds": round(elapsed, 1),
        "rate_per_s": total / elapsed,
        "stored_before": stored,
        "stored_after": rows,
        "errors": len(errors),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "daemon_cpu_s": cpu.user + cpu.system,
        "daemon_cpu_ms_per_request": spent * 1000 / total,
        "loadavg_1m": os.getloadavg()[0],
    }


def bench_signed(root: Path, commits: int, pushes: int, kind: str = "ed25519") -> dict:
    """Pushes of `commits` new SSH-signed commits each to main:qa, qa checking every signature, vs a bare copy; signed
    with an ed25519 key (`git commit`), or a FIDO sk-ed25519 key (sk-ed25519: commits signed in Python, as a token would)."""
    from tests.signing import allowed_signers, sign_with, sk_commits, sk_key, ssh_key

    root.mkdir(parents=True, exist_ok=True)
    signers = root / "allowed_signers"
    if kind == "sk-ed25519":
        fido = sk_key("ed25519")
        signers.write_text(f'bench@example.com namespaces="git" {fido.public_line}\n')
    else:
        key = ssh_key(root / "keys", "bench")
        allowed_signers(signers, ("bench@example.com", key))
    sandbox = Sandbox(root / "signed", {"qa": ["qa-1"]}, env_options={"qa": {"signatures": {"allowed_signers": str(signers)}}})
    if kind != "sk-ed25519":
        sign_with(sandbox.work, key)
    bare = root / "bare.git"
    run(["git", "clone", "-q", "--bare", "--no-local", str(sandbox.repo), str(bare)])
    for hook in (bare / "hooks").iterdir():
        hook.unlink()
    run(["git", "remote", "add", "bare", str(bare)], cwd=sandbox.work)
    env = sandbox.environ()
    hooked, plain = [], []
    for i in range(pushes):
        if kind == "sk-ed25519":
            sk_commits(sandbox.work, fido, [f"signed {i}.{n}" for n in range(commits)])
        else:
            for n in range(commits):
                run(["git", "commit", "-q", "--allow-empty", "-m", f"signed {i}.{n}"], cwd=sandbox.work)
        for remote, times in (("origin", hooked), ("bare", plain)):
            run(["git", "push", "-q", remote, "main"], cwd=sandbox.work, env=env)  # main has no rule: not timed
            t0 = time.monotonic()
            run(["git", "push", "-q", remote, "main:qa"], cwd=sandbox.work, env=env)
            times.append(time.monotonic() - t0)
    return {
        "key": kind,
        "commits": commits,
        "pushes": pushes,
        "p95_ms": percentile(hooked, 95) * 1000,
        "median_ms": statistics.median(hooked) * 1000,
        "bare_ms": statistics.median(plain) * 1000,
        "per_commit_ms": statistics.median(hooked) * 1000 / commits,
    }


def main() -> int:  # noqa: C901 (the bench's command line: one branch per section it can run)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument(
        "--scale-idle",
        type=float,
        default=60,
        metavar="SECONDS",
        help="scale above 100: idle CPU measured over this long after READY (the target is over 300)",
    )
    parser.add_argument("--hook-pushes", type=int, default=30)
    parser.add_argument("--history", type=int, default=20_000, help="commits in the hook benchmark's repository")
    parser.add_argument("--rollback-rounds", type=int, default=3)
    parser.add_argument("--scale", default="3,30", help="repository counts for the scale section, comma-separated")
    parser.add_argument("--scale-pushes", type=int, default=10)
    parser.add_argument(
        "--scale-history",
        type=int,
        default=1_000_000,
        help="deployments stored for a scale above 100 (filled, not converged through Ansible)",
    )
    parser.add_argument("--scale-timeout", type=float, default=1800, help="seconds to wait for convergence")
    parser.add_argument(
        "--api-seconds",
        type=float,
        default=30,
        help="how long the API section sends status POSTs at 200/s (e.g. 5 for a quick run)",
    )
    parser.add_argument("--reads", default="3,100", help="repository counts for the reads section, comma-separated")
    parser.add_argument("--reads-rounds", type=int, default=15)
    parser.add_argument(
        "--reads-baseline",
        type=Path,
        metavar="DIR",
        help="also time the reads with the gitopsd of this checkout (e.g. a git worktree of an older commit)",
    )
    parser.add_argument("--dora-rounds", type=int, default=10)
    parser.add_argument(
        "--only",
        choices=(
            "latency",
            "overhead",
            "idle",
            "hooks",
            "rollback",
            "scale",
            "api",
            "reads",
            "metrics",
            "dora",
            "web",
            "nodes",
            "failover",
            "signed",
            "preview",
            "bigtree",
        ),
    )
    parser.add_argument("--signed-commits", type=int, default=500, help="signed section: new commits per push")
    parser.add_argument("--signed-pushes", type=int, default=5, help="signed section: pushes")
    parser.add_argument(
        "--signed-key", choices=("ed25519", "sk-ed25519"), default="ed25519", help="signed section: the key that signs"
    )
    parser.add_argument(
        "--node-wait",
        type=int,
        default=10,
        help="nodes section: seconds each waiting playbook waits (as deployments wait on hosts)",
    )
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="hooks section: also with the records in a PostgreSQL started on loopback (docs/install.md, PostgreSQL)",
    )
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="gb-", dir="/tmp") as tmp:
        root = Path(tmp)
        if args.only in (None, "latency"):
            for label, triggers in (("all triggers", "nudge,watch,sweep"), ("nudge only", "nudge")):
                results[f"latency {label}"] = r = bench_latency(root / f"lat-{triggers}", args.pushes, triggers)
                print(
                    f"(a) push returned -> playbook started, {label}, {r['pushes']} pushes: median "
                    f"{r['median_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, max {r['max_ms']:.0f} ms "
                    f"(from the start of `git push`: median {r['from_push_start_median_ms']:.0f} ms)",
                    flush=True,
                )
        if args.only in (None, "overhead"):
            for label, sandboxed in (("sandboxed", True), ("without the sandbox", False)):
                results[f"overhead {label}"] = r = bench_overhead(root / f"ovh-{sandboxed}", args.rounds, sandboxed)
                print(
                    f"(b) one deployment, {label}, median of {r['rounds']}: by hand {r['by_hand_s']:.2f} s, "
                    f"through gitopsd (push -> recorded) {r['gitopsd_s']:.2f} s, ratio {r['ratio']:.2f} "
                    f"(target <= 1.10)",
                    flush=True,
                )
        if args.only in (None, "idle"):
            results["idle"] = r = bench_idle(root / "idle", args.idle_seconds)
            print(
                f"(c) idle daemon, 3 repos x 3 environments, {r['seconds']} s: RSS {r['rss_mb']:.0f} MiB "
                f"(bare python {r['python_baseline_rss_mb']:.0f} MiB), CPU {r['cpu_s']:.2f} s = "
                f"{r['cpu_percent']:.2f} %",
                flush=True,
            )
        if args.only in (None, "hooks"):
            for label, windows, checks, edited, up in (
                ("", False, False, False, True),
                (", qa with deploy windows", True, False, False, True),
                (", qa with require_checks", False, True, False, True),
                (", after a config edit the daemon has not read", False, False, True, True),
                (", the daemon down (the hook's Python judges)", False, False, False, False),
            ):
                results[f"hooks{label}"] = r = bench_hooks(
                    root / f"hooks-{windows}-{checks}-{edited}-{up}",
                    args.history,
                    args.hook_pushes,
                    windows,
                    checks,
                    edited=edited,
                    daemon_up=up,
                )
                print(
                    f"(d) push of main and main:qa into a {r['commits']}-commit repository{label}, median of "
                    f"{r['pushes']}: through gitopsd's hooks {r['hooked_ms']:.0f} ms, no hooks {r['bare_ms']:.0f} ms, "
                    f"ratio {r['ratio']:.2f} (target <= {2 if edited else 1.6 if up else 'none: the fallback'}); main alone (no environment "
                    f"branch): {r['feature_hooked_ms']:.0f} ms, no hooks {r['feature_bare_ms']:.0f} ms, ratio "
                    f"{r['feature_ratio']:.2f} (target <= 1.1), CPU ratio {r['feature_cpu_ratio']:.2f} (the floor of any hook, "
                    f"a shell that reads the refs: {r['shell_ratio']:.2f}, CPU {r['shell_cpu_ratio']:.2f}); load {r['loadavg_1m']:.1f}",
                    flush=True,
                )
                print(
                    f"    CPU time of the push and all it starts: ratio {r['cpu_ratio']:.2f}; the floor, a hook that only "
                    f"starts `python -I -S`: {r['floor_ms']:.0f} ms, ratio {r['floor_ratio']:.2f} (CPU "
                    f"{r['floor_cpu_ratio']:.2f})",
                    flush=True,
                )
            if args.postgresql:  # the records in PostgreSQL: the hook reads the daemon's SQLite copy of its part
                from tests.postgres_fixture import PgServer

                server = PgServer()
                try:
                    for label, checks in (("", False), (", qa with require_checks", True)):
                        results[f"hooks, postgresql{label}"] = r = bench_hooks(
                            root / f"hooks-pg-{checks}", args.history, args.hook_pushes, False, checks, server.create_database()
                        )
                        print(
                            f"(d) the same with database: postgresql://{label}: through gitopsd's hooks "
                            f"{r['hooked_ms']:.0f} ms, no hooks {r['bare_ms']:.0f} ms, ratio {r['ratio']:.1f} "
                            f"(target <= 3)",
                            flush=True,
                        )
                finally:
                    server.close()
        if args.only in (None, "signed"):
            results["signed"] = r = bench_signed(root / "signed", args.signed_commits, args.signed_pushes, args.signed_key)
            print(
                f"(m) push of {r['commits']} new {r['key']}-signed commits to qa (signatures:), {r['pushes']} pushes: p95 "
                f"{r['p95_ms']:.0f} ms, median {r['median_ms']:.0f} ms ({r['per_commit_ms']:.1f} ms a commit), "
                f"no hooks {r['bare_ms']:.0f} ms (target p95 <= 300 ms)",
                flush=True,
            )
        if args.only in (None, "rollback"):
            results["rollback"] = r = bench_rollback(root / "rb", args.rollback_rounds)
            print(
                f"(e) sample app on 4 hosts, median of {r['rounds']}: new release {r['deploy_s']:.2f} s, rollback "
                f"{r['rollback_s']:.2f} s, ratio {r['ratio']:.2f} (target <= 1.0)",
                flush=True,
            )
        if args.only in (None, "scale"):
            for n in (int(part) for part in args.scale.split(",")):
                if n > 100:  # 3,000 Ansible runs do not fit a bench: the store is filled as a converged daemon leaves it
                    results[f"scale {n}"] = r = bench_scale_filled(
                        root / f"scale-{n}", n, args.scale_history, args.scale_idle, pushes=args.scale_pushes
                    )
                    print(
                        f"(f) {n} repositories x 3 environments, converged, {r['stored_deployments']} deployments "
                        f"stored (load {r['loadavg_1m']:.1f}): restarted, READY after {r['ready_s']:.1f} s (target <= 10; "
                        f"its first start {r['first_ready_s']:.1f} s), "
                        f"{r['redeployed']} redeployed (target 0); idle {r['idle_seconds']:g} s from READY, sweeps every "
                        f"60 s: RSS {r['idle_rss_mb']:.0f} MiB (target <= 120), CPU {r['idle_cpu_percent']:.2f} % (target "
                        f"<= 0.5 over 300 s: --scale-idle 300); "
                        f"{r['fds']} fds, {r['threads']} threads, {r['inotify_watches']} inotify watches of "
                        f"{r['inotify_max_user_watches']}; status --json {r['status_json_ms']:.0f} ms (target <= 200), "
                        f"{r['status_json_ms'] / r['python_start_ms']:.1f}x a bare Python start of "
                        f"{r['python_start_ms']:.0f} ms (target <= 4), history --limit 50 {r['history_50_ms']:.0f} ms "
                        f"(target <= 100); GET /metrics p99 {r['metrics_p99_ms']:.0f} ms (target <= 100), the first "
                        f"{r['metrics_first_ms']:.0f} ms (the store's figures in it {r['metrics_added_up_s']:.0f} s after), "
                        f"{r['metrics_bytes']} bytes; the dashboard's Pipeline page (50 repositories) p50 "
                        f"{r['pipeline_page_p50_ms']:.0f} ms, p99 {r['pipeline_page_p99_ms']:.0f} ms (target <= 150), "
                        f"{r['pipeline_page_daemon_cpu_ms']:.0f} ms of the daemon's CPU a page (load "
                        f"{r['pipeline_loadavg_1m']:.1f}), filtered by state p50 {r['pipeline_state_filter_p50_ms']:.0f} ms; "
                        f"push -> playbook running in one repository, {r['pushes']} pushes: p50 "
                        f"{r['push_to_playbook_p50_ms']:.0f} ms, p95 {r['push_to_playbook_p95_ms']:.0f} ms (target <= 50)",
                        flush=True,
                    )
                    print(json.dumps(r), flush=True)
                    continue
                results[f"scale {n}"] = r = bench_scale(root / f"scale-{n}", n, args.scale_pushes, args.scale_timeout)
                print(
                    f"(f) {n} repositories x 3 environments: READY after {r['ready_s']:.1f} s, all {r['environments']} "
                    f"deployed after {r['converged_s']:.0f} s, idle RSS {r['idle_rss_mb']:.0f} MiB, "
                    f"{r['inotify_instances']} inotify instance / {r['inotify_watches']} watches; push -> playbook "
                    f"start over {r['pushes']} pushes: p50 {r['push_to_playbook_p50_ms']:.0f} ms, "
                    f"p95 {r['push_to_playbook_p95_ms']:.0f} ms; with {r['stored_deployments']} deployments stored: "
                    f"status --json {r['status_json_ms']:.0f} ms, history --limit 50 {r['history_50_ms']:.0f} ms "
                    f"(a bare Python start: {r['python_start_ms']:.0f} ms)",
                    flush=True,
                )
                print(json.dumps(r), flush=True)
        if args.only in (None, "reads"):
            for n in (int(part) for part in args.reads.split(",")):
                results[f"reads {n}"] = r = bench_reads_only(
                    root / f"reads-{n}", n, 100_000, args.reads_rounds, args.reads_baseline
                )
                before = (
                    f"; {args.reads_baseline}: status --json {r['baseline_status_json_ms']:.0f} ms, history "
                    f"{r['baseline_history_50_ms']:.0f} ms"
                    if args.reads_baseline
                    else ""
                )
                print(
                    f"(g) reads at {n} repositories x 3 environments, {r['stored_deployments']} deployments stored, "
                    f"median of {r['rounds']} (load {r['loadavg_1m']:.1f}), no daemon running: status --json "
                    f"{r['status_json_ms']:.0f} ms = {r['status_json_ms'] / r['python_start_ms']:.1f}x a bare Python start "
                    f"(target <= 4x), "
                    f"history --limit 50 {r['history_50_ms']:.0f} ms{before} (a bare Python start: "
                    f"{r['python_start_ms']:.0f} ms)",
                    flush=True,
                )
        if args.only in (None, "metrics"):
            results["metrics"] = r = bench_metrics(root / "metrics")
            print(
                f"(i) GET /metrics with {r['environments']} environments and {r['stored_deployments']} deployments "
                f"stored, {r['scrapes']} scrapes: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max "
                f"{r['max_ms']:.0f} ms (target p99 <= 50 ms); the first after the start {r['first_ms']:.0f} ms; "
                f"{r['bytes']} bytes",
                flush=True,
            )
        if args.only in (None, "api"):
            results["api"] = r = bench_api(root / "api", args.api_seconds)
            print(
                f"(g) status POST to the HTTP API at 200/s for {r['seconds']:g} s ({r['requests']} requests, "
                f"{r['errors']} errors) with {r['stored_before']} statuses stored: p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms (target p99 <= 20 ms); the daemon's CPU (with the git "
                f"it starts) {r['daemon_cpu_ms_per_request']:.2f} ms a request; load {r['loadavg_1m']:.1f}",
                flush=True,
            )
        if args.only in (None, "dora"):
            results["dora"] = r = bench_dora(root / "dora", 100_000, args.dora_rounds)
            print(
                f"(h) gitopsd dora over {r['deployments']} production deployments, median of {r['rounds']} (load "
                f"{r['loadavg_1m']:.1f}): {r['dora_ms']:.0f} ms (max {r['dora_max_ms']:.0f} ms), --json "
                f"{r['dora_json_ms']:.0f} ms (a bare Python start: {r['python_start_ms']:.0f} ms; target <= 1 s)",
                flush=True,
            )
        if args.only in (None, "web"):
            results["web"] = r = bench_web(root / "web")
            print(
                f"(j) web dashboard, 3 repositories x 3 environments, {r['stored_deployments']} deployments stored: "
                f"GET / (Pipeline) x {r['requests']}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max "
                f"{r['max_ms']:.0f} ms (target p99 <= 100 ms); branch move -> page shows it, {r['moves']} pushes of "
                f"main: median {r['move_shown_median_ms']:.0f} ms, max {r['move_shown_max_ms']:.0f} ms from the push "
                f"starting ({r['push_return_to_shown_median_ms']:.0f} ms after it returned; target <= 1 s)",
                flush=True,
            )
        if args.only in (None, "nodes"):
            from bench_nodes import bench_nodes

            results["nodes"] = r = bench_nodes(root / "nodes", wait=args.node_wait)
            for label in ("cpu", "wait"):
                n = r[label]
                print(
                    f"(k) {r['environments']} environments deployed at once, execution_node: any, "
                    f"{r['slots_per_node']} slots per node, playbook waiting {n['playbook_wait_s']} s: one node "
                    f"{n['one_node_s']} s, two nodes {n['two_nodes_s']} s: {n['ratio']}x (target >= 1.7; both nodes "
                    "share this machine's CPUs)",
                    flush=True,
                )
        if args.only in (None, "failover"):
            from bench_failover import bench_failover

            results["failover"] = r = bench_failover(root / "failover")
            print(
                f"(l) failover, {r['rounds']} rounds: leader killed mid-deployment -> the standby deploying: median "
                f"{r['failover_median_s']} s, max {r['failover_max_s']} s (target <= 10 s); one daemon killed and started "
                f"again at once: median {r['restart_median_s']} s; ratio {r['ratio']}",
                flush=True,
            )
        if args.only in (None, "preview"):
            from bench_preview import bench_preview

            results["preview"] = r = bench_preview(root / "preview")
            print(
                f"(n) preview of the sample on {r['hosts']} hosts, median of {r['rounds']}: by hand (ansible-playbook "
                f"--check --diff) {r['by_hand_s']:.2f} s, `gitopsd preview` {r['preview_command_s']:.2f} s, ratio "
                f"{r['ratio']:.2f} (target <= 1.2; the daemon's run alone {r['preview_recorded_s']:.2f} s, ratio "
                f"{r['ratio_recorded']:.2f})",
                flush=True,
            )
        if args.only in (None, "bigtree"):
            from bench_bigtree import bench_bigtree

            results["bigtree"] = r = bench_bigtree(root / "bigtree")
            for step, grew in r["growth_mib"].items():
                print(
                    f"(o) {step}: the daemon's peak RSS {grew:.1f} MiB over its idle {r['idle_rss_mib']:.0f} MiB "
                    f"(target <= 30 MiB)",
                    flush=True,
                )
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
