"""(o) Memory with big content: the daemon's RSS while it deploys a 200 MiB file and a 100,000-file tree.

A real daemon, real pushes through the hooks, the test playbook. Before each step the daemon's peak
RSS (VmHWM) is reset to its current RSS (`/proc/PID/clear_refs`), and after it the peak is read and
set beside the RSS the idle daemon had: only the daemon's own process, not git or Ansible beside it.
Target (issue 28): each growth <= 30 MiB.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import Daemon, Sandbox, git, run  # noqa: E402

MIB = 1 << 20


def many_files(sandbox: Sandbox, files: int) -> str:
    """Commit `files` small distinct files (100 folders) on the clone's main with git fast-import; return the commit."""
    parent = git(sandbox.work, "rev-parse", "HEAD").stdout.strip()
    message = f"{files} files\n"
    stream = [f"commit refs/heads/main\ncommitter Dev <dev@example.com> {int(time.time())} +0000\ndata {len(message)}\n{message}"]
    stream.append(f"from {parent}\n")
    for i in range(files):
        content = f"file {i}\n"
        stream.append(f"M 100644 inline many/{i % 100:02d}/f{i}.txt\ndata {len(content)}\n{content}\n")
    run(["git", "fast-import", "--quiet"], cwd=sandbox.work, input="".join(stream))
    git(sandbox.work, "reset", "--quiet", "--hard", "main")
    return git(sandbox.work, "rev-parse", "HEAD").stdout.strip()


def bench_bigtree(root: Path, big_mib: int = 200, files: int = 100_000, timeout: float = 900) -> dict:
    sandbox = Sandbox(root, {"qa": ["qa-1"]})
    steps: dict[str, float] = {}
    after: dict[str, float] = {}  # the RSS left once the step is over, over idle: what the next step starts from
    with Daemon(sandbox) as daemon:
        daemon.wait_state("qa", "in-sync", sandbox.head("qa"), timeout=120)
        time.sleep(3)
        idle = daemon.memory("VmRSS")

        def step(name: str, action: Callable[[], object]) -> None:
            daemon.reset_peak_memory()
            action()
            steps[name] = (daemon.memory("VmHWM") - idle) / MIB
            after[name] = (daemon.memory("VmRSS") - idle) / MIB
            print(
                f"    {name}: the daemon's peak RSS {steps[name]:.1f} MiB over idle, {after[name]:.1f} MiB after",
                file=sys.stderr,
                flush=True,
            )

        def deploy(commit: str) -> None:
            sandbox.push("main", "main:qa")
            daemon.wait_state("qa", "in-sync", commit, timeout=timeout)

        with open(sandbox.work / "big.bin", "wb") as big:  # sparse: costs no disk and no time to make
            big.truncate(big_mib * MIB)
        commit = sandbox.commit("a big file")
        step("big file (loose), push -> deployed", lambda: deploy(commit))
        step("big file, status", lambda: sandbox.cli("status", "--json"))
        run(["git", "--git-dir", str(sandbox.repo), "repack", "-adq"])  # as `git gc` leaves it
        sandbox.write("app.txt", "after repack")
        commit = sandbox.commit("after the repack")
        step("big file (packed), push -> deployed", lambda: deploy(commit))
        sandbox.remove("big.bin")
        sandbox.commit("the big file gone")
        commit = many_files(sandbox, files)
        step(f"{files} files, push -> deployed", lambda: deploy(commit))
        step(f"{files} files, status", lambda: sandbox.cli("status", "--json"))
    return {"big_mib": big_mib, "files": files, "idle_rss_mib": idle / MIB, "growth_mib": steps, "after_mib": after}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gb-", dir="/tmp") as tmp:
        print(json.dumps(bench_bigtree(Path(tmp) / "bigtree"), indent=1))
