"""(n) A promotion preview of the sample on 4 hosts (docs/preview.md) vs the same `ansible-playbook --check --diff` by hand.

The sample app runs on 4 local production hosts; qa runs a newer release. Each round times `gitopsd preview qa
production` (the command asking the daemon and waiting for the recorded result) and, interleaved, the same
playbook over the same inventory with --check --diff run by hand in an export of qa's tree. Target: <= 1.2x.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import run  # noqa: E402


def bench_preview(root: Path, rounds: int = 5) -> dict:
    import yaml

    root.mkdir(parents=True)
    config = root / "gitopsd.yml"
    config.write_text(
        yaml.safe_dump(
            {"state_dir": str(root / "state"), "runtime_dir": str(root / "run"), "sandbox": {"writable": [str(root / "hosts")]}}
        )
    )
    from gitopsd.installers.demo import start_local_hosts, stop_local_hosts

    hosts = [root / "hosts" / "production" / f"production-{n}" for n in range(1, 5)] + [root / "hosts" / "qa" / "qa-1"]
    start_local_hosts(root / "hosts", hosts)
    env = {
        **os.environ,
        "GITOPSD_SAMPLE_ROOT": str(root / "hosts"),
        "GITOPSD_SAMPLE_PORT_BASE": "19500",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GITOPSD_CONFIG": str(config),
    }
    gitopsd = [sys.executable, "-m", "gitopsd"]
    repo = root / "shop.git"
    run([*gitopsd, "init", str(repo), "--sample"], env=env)
    data = yaml.safe_load(config.read_text())  # production takes trees from main, so it starts deployed
    data["repositories"][0]["environments"][2]["promote_from"] = "main"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/production", "refs/heads/main"])
    proc = subprocess.Popen([*gitopsd, "run"], env=env, stderr=subprocess.DEVNULL)
    work, export = root / "work", root / "by-hand"
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")

    def deployed(env_name: str, commit: str) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            rows = json.loads(run([*gitopsd, "history", env_name, "--json", "--limit", "5"], env=env).stdout)
            if any(r["commit"] == commit and r["result"] == "succeeded" for r in rows):
                return
            time.sleep(0.5)
        raise RuntimeError(f"{env_name} did not deploy {commit[:7]}")

    through, hand, recorded = [], [], []
    try:
        deployed("production", run(["git", "--git-dir", str(repo), "rev-parse", "production"]).stdout.strip())
        run(["git", "clone", "-q", str(repo), str(work)])
        settings = work / "app" / "settings.json"
        values = json.loads(settings.read_text())
        values["greeting"] = "a newer release"
        settings.write_text(json.dumps(values))
        run(["git", "-c", "user.email=b@example.com", "-c", "user.name=B", "commit", "-qam", "newer"], cwd=work)
        run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, env=env)
        run(["git", "--git-dir", str(repo), "update-ref", "refs/heads/qa", "refs/heads/main"])
        commit = run(["git", "--git-dir", str(repo), "rev-parse", "qa"]).stdout.strip()
        deployed("qa", commit)
        export.mkdir()
        archive = subprocess.run(["git", "--git-dir", str(repo), "archive", commit], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(export)], input=archive.stdout, check=True)
        vars_file = root / "vars.json"
        vars_file.write_text(
            json.dumps(
                {
                    "gitopsd_env": "production",
                    "gitopsd_repo": "shop",
                    "gitopsd_commit": commit,
                    "gitopsd_tree": run(["git", "--git-dir", str(repo), "rev-parse", f"{commit}^{{tree}}"]).stdout.strip(),
                    "gitopsd_previous_commit": "",
                    "gitopsd_deploy_id": "0",
                    "gitopsd_kind": "deploy",
                    "gitopsd_workdir": str(export),
                    "gitopsd_artifacts": {},
                }
            )
        )
        for _ in range(rounds):
            t0 = time.monotonic()
            run(
                [
                    ansible_playbook,
                    "-i",
                    "environments/production/hosts.yml",
                    "playbooks/deploy.yml",
                    "--check",
                    "--diff",
                    "-e",
                    f"@{vars_file}",
                ],
                cwd=export,
                env=env,
            )
            hand.append(time.monotonic() - t0)
            t0 = time.monotonic()
            shown = json.loads(run([*gitopsd, "preview", "qa", "production", "--json"], env=env).stdout)
            through.append(time.monotonic() - t0)
            assert shown["state"] == "done" and len(shown["hosts"]) == 4, shown
            recorded.append(shown["finished_at"] - shown["requested_at"])
    finally:
        proc.terminate()
        proc.wait(60)
        stop_local_hosts(hosts)
        shutil.rmtree(root / "hosts", ignore_errors=True)
    by_hand, command, daemon = statistics.median(hand), statistics.median(through), statistics.median(recorded)
    return {
        "rounds": rounds,
        "hosts": 4,
        "by_hand_s": by_hand,
        "preview_command_s": command,
        "preview_recorded_s": daemon,
        "ratio": command / by_hand,
        "ratio_recorded": daemon / by_hand,
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gb-", dir="/tmp") as tmp:
        print(json.dumps(bench_preview(Path(tmp) / "preview"), indent=2))
