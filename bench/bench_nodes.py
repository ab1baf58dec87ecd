"""`make bench` section (k), nodes: 30 environments deployed at once on one execution node vs two (docs/install.md, "Execution nodes").

Each node is a loopback sshd (tests/sshhosts.py) whose sessions run this checkout's `ansible-runner worker`; the
daemon starts with 30 environments that all need their first deployment, every one `execution_node: any`, and
the time from its start to the 30th success is measured with one node, then with two (each node max_parallel
`--node-slots`). Both nodes share this machine's CPUs with the controller, so the ratio shows how placement
spreads the runs, not what a second machine adds: it is measured twice, with a playbook that only uses CPU and
with one whose runs wait (`sleep`, as deployments wait on hosts and networks) for a few seconds.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.sshhosts import start_hosts, stop_all
from tests.support import Daemon, Sandbox, run

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def settled(sandbox: Sandbox) -> tuple[int, int]:
    """(environments deployed successfully, environments whose last deployment failed), from the store."""
    db = sandbox.state / "state.db"
    if not db.exists():
        return 0, 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT result FROM deployments d WHERE id = (SELECT MAX(id) FROM deployments "
                "WHERE repo = d.repo AND env = d.env)"
            ).fetchall()
    except sqlite3.OperationalError:  # the daemon is still creating its tables
        return 0, 0
    return sum(r == "succeeded" for (r,) in rows), sum(r not in ("succeeded", "queued", "running") for (r,) in rows)


def deploy_all(root: Path, node_count: int, envs: int, slots: int, wait: int, timeout: float) -> tuple[float, list[int]]:
    """Seconds from the daemon's start to every environment deployed on `node_count` nodes, and the runs per node."""
    names = [f"e{i:02}" for i in range(envs)]
    sandbox = Sandbox(
        root,
        {name: ["h1"] for name in names},
        sweep_interval=300,
        env_options={name: {"promote_from": "main", "execution_node": "any", "retries": 0, "timeout": 600} for name in names},
    )
    hosts = start_hosts(root, [f"node-{i + 1}" for i in range(node_count)], first_octet=71)
    try:
        for host in hosts:  # the node's sessions find ansible-runner, and write where the test playbook writes
            host.config.write_text(
                host.config.read_text().replace(
                    "SetEnv SHLVL=1", f"SetEnv SHLVL=1 PATH={VENV_BIN}:/usr/bin:/bin GITOPSD_TEST_OUT={sandbox.out}"
                )
            )
            host.stop()
            host.start()
        known = root / "known_hosts"
        known.write_text(
            "".join(f"[{h.address}]:{h.port} {' '.join(Path(f'{h.host_key}.pub').read_text().split()[:2])}\n" for h in hosts)
        )
        sandbox.write_config(
            max_parallel=envs,
            ssh={"known_hosts": str(known)},
            execution_nodes=[
                {
                    "name": f"runner{i + 1}",
                    "ssh": f"{h.user}@{h.address}",
                    "port": h.port,
                    "identity_file": str(h.key),
                    "max_parallel": slots,
                }
                for i, h in enumerate(hosts)
            ],
        )
        if wait:
            sandbox.write("SLEEP", str(wait))
            sandbox.commit("deployments that wait")
            sandbox.push("main")
            for name in names:  # the daemon judges each head again at its start (promote_from main)
                run(["git", "--git-dir", str(sandbox.repo), "update-ref", f"refs/heads/{name}", "refs/heads/main"])
        t0 = time.monotonic()
        with Daemon(sandbox) as daemon:
            while True:
                ok, failed = settled(sandbox)
                if ok + failed >= envs:
                    break
                if time.monotonic() - t0 > timeout or daemon.proc.poll() is not None:
                    raise RuntimeError(f"{ok} of {envs} deployed after {time.monotonic() - t0:.0f} s; log in {daemon.log_path}")
                time.sleep(0.1)
            took = time.monotonic() - t0
            if failed:
                raise RuntimeError(f"{failed} of {envs} deployments failed; log in {daemon.log_path}")
            log = daemon.log()
        return took, [log.count(f"on execution node runner{i + 1}") for i in range(node_count)]
    finally:
        stop_all(hosts)


def bench_nodes(root: Path, envs: int = 30, slots: int = 4, wait: int = 10, timeout: float = 900) -> dict:
    """Throughput of `envs` first deployments on one node vs two, for CPU-only runs and for runs that wait."""
    result: dict = {"environments": envs, "slots_per_node": slots}
    for label, seconds in (("cpu", 0), ("wait", wait)):
        one, _ = deploy_all(root / f"{label}-1", 1, envs, slots, seconds, timeout)
        two, spread = deploy_all(root / f"{label}-2", 2, envs, slots, seconds, timeout)
        print(f"nodes, {label}: one node {one:.1f} s, two nodes {two:.1f} s (runs per node {spread})", flush=True)
        result[label] = {
            "playbook_wait_s": seconds,
            "one_node_s": round(one, 1),
            "two_nodes_s": round(two, 1),
            "one_node_per_min": round(envs / one * 60, 1),
            "two_nodes_per_min": round(envs / two * 60, 1),
            "ratio": round(one / two, 2),
            "runs_per_node": spread,
        }
    return result
