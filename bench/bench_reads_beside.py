"""The dashboard's Pipeline page and `status --json` at N repositories x 3 environments, this checkout beside another.

One store filled as a converged daemon leaves it (run.filled_sandbox, the dashboard on); in each round a daemon of each
checkout in turn is started on it and asked, signed in, `GET /` (its first 50 repositories) REQUESTS times, then
`GET /?state=failed` a tenth as often, then `status --json` (answered by that daemon, cli/quick.py) beside
`python -c pass`, interleaved, STATUS times. A busy machine slows both checkouts alike in a round: compare the ratios
and the CPU times, not the wall times alone.

    python bench/bench_reads_beside.py --baseline /tmp/before [--repositories 1000] [--rounds 3] [--root DIR]

(`git worktree add --detach /tmp/before HEAD~N` makes the baseline; `--root` keeps the filled store between runs.)
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
from pathlib import Path

import psutil
from run import VIEWERS, _answers, _get, _pages, _signed_in, filled_sandbox, percentile

from tests.support import Sandbox, free_port

HERE = Path(__file__).resolve().parent.parent


def measure(sandbox: Sandbox, port: int, checkout: Path, requests: int, status: int) -> dict:
    """One daemon of `checkout` on the store: the page's times and the daemon's CPU a page, then `status --json`'s."""
    env = {k: v for k, v in sandbox.environ().items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(checkout), PYTHONPYCACHEPREFIX=str(sandbox.root / f"pycache-{checkout.name}"))
    argv = [sys.executable, "-m", "gitopsd"]
    with open(sandbox.root / f"daemon-{checkout.name}.log", "w") as log:
        daemon = subprocess.Popen(
            [*argv, "run", "--config", str(sandbox.config)], cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 600
            while not _answers(lambda: _get(port, "/api/v1/health")):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon of {checkout} did not serve; its log: {log.name}")
                time.sleep(0.5)
            cookie = _signed_in(sandbox, port)
            time.sleep(20)  # the start's own work (its first sweep, the state copy) done before timing
            proc = psutil.Process(daemon.pid)
            cpu0 = sum(proc.cpu_times()[:2])
            pages, body = _pages(port, cookie, "/", requests)
            page_cpu = (sum(proc.cpu_times()[:2]) - cpu0) / (requests + 1)
            filtered, _ = _pages(port, cookie, "/?state=failed", max(1, requests // 10))
            runs = {
                "python": [sys.executable, "-c", "pass"],
                "status": [*argv, "status", "--json", "--config", str(sandbox.config)],
            }
            wall: dict[str, list[float]] = {name: [] for name in runs}
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            for round_ in range(status + 1):
                for name, command in runs.items():
                    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
                    subprocess.run(command, env=env, cwd=checkout, stdout=subprocess.DEVNULL, check=True)
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    if round_:  # the first round writes the bytecode caches
                        wall[name].append(time.monotonic() - t0)
                        cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        finally:
            daemon.terminate()
            daemon.wait(60)
    return {
        "page_p50_ms": percentile(pages, 50) * 1000,
        "page_p99_ms": percentile(pages, 99) * 1000,
        "page_daemon_cpu_ms": page_cpu * 1000,
        "page_bytes": len(body),
        "state_filter_p50_ms": percentile(filtered, 50) * 1000,
        **{f"{name}_ms": statistics.median(t) * 1000 for name, t in wall.items()},
        **{f"{name}_cpu_ms": statistics.median(t) * 1000 for name, t in cpu.items()},
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of gitopsd (e.g. the commit before)")
    parser.add_argument("--repositories", type=int, default=1000)
    parser.add_argument("--history", type=int, default=1_000_000, help="deployments stored")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100, help="GET / a round, per checkout")
    parser.add_argument("--status", type=int, default=15, help="status --json a round, per checkout")
    parser.add_argument("--root", type=Path, help="where the filled store is made, or found from an earlier run")
    args = parser.parse_args()
    if args.root is not None:
        rounds(args, args.root)
        return
    with tempfile.TemporaryDirectory(prefix="gitopsd-beside-", dir="/tmp") as tmp:  # a 1.2 GB store: not left behind
        rounds(args, Path(tmp))


def rounds(args: argparse.Namespace, root: Path) -> None:
    """The store at `root` (filled first unless an earlier run left it), then the rounds, each printed."""
    port_file = root / "port"
    if port_file.exists():
        port = int(port_file.read_text())
        sandbox = Sandbox.__new__(Sandbox)  # the earlier run's: only its folders and files are used
        sandbox.root, sandbox.config, sandbox.out = root, root / "gitopsd.yml", root / "out"
    else:
        port = free_port()
        sandbox = filled_sandbox(root, args.repositories, args.history, port, VIEWERS, sweep_interval=60)
        port_file.write_text(str(port))
    checkouts = {"before": args.baseline.resolve(), "this": HERE}
    for round_ in range(args.rounds):
        for label, checkout in checkouts.items():
            r = measure(sandbox, port, checkout, args.requests, args.status)
            print(
                f"round {round_ + 1} {label} (load {r['loadavg_1m']:.1f}): GET / p50 {r['page_p50_ms']:.0f} ms, p99 "
                f"{r['page_p99_ms']:.0f} ms (target <= 150), daemon CPU {r['page_daemon_cpu_ms']:.0f} ms a page, "
                f"?state=failed p50 {r['state_filter_p50_ms']:.0f} ms; "
                f"status --json {r['status_ms']:.0f} ms (target <= 200), {r['status_ms'] / r['python_ms']:.2f}x a bare "
                f"Python start of {r['python_ms']:.0f} ms (target <= 4), its CPU {r['status_cpu_ms']:.0f} ms, "
                f"{r['status_cpu_ms'] / r['python_cpu_ms']:.2f}x Python's",
                flush=True,
            )
            print(json.dumps({"round": round_ + 1, "checkout": label, **r}), flush=True)


if __name__ == "__main__":
    main()
