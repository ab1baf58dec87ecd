"""The preview a deployment was approved on, and previews for every promotion request into an approvals environment
(issue 25, items 3 and 5): the deployment's history entry and git note name it, `rc evidence` agrees, and a
promotion request queues a preview of its own when none fresh exists, without waiting for it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_rejected_trees import note_of
from tests.support import Daemon, Sandbox, free_port
from tests.webclient import Browser, token, web_up

pytestmark = [pytest.mark.slow]


def approvals_sandbox(root: Path, **extra: Any) -> Sandbox:
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return Sandbox(
        root,
        {"staging": ["stg-1"], "production": ["prod-1", "prod-2"]},
        env_options={"production": {"approvals": {"required": 1, "approvers": [me], "forbid_self_approval": False}}},
        **extra,
    )


def done_preview(sandbox: Sandbox, rc: str) -> dict | None:
    view = json.loads(sandbox.command("rc", "show", rc, "--json").stdout)["preview"]  # polled: in this process
    return view if view is not None and view["state"] in ("done", "failed") else None


def test_a_deployment_approved_on_a_preview_names_that_preview_in_its_history_entry_its_note_and_the_evidence(short_tmp):
    sandbox = approvals_sandbox(short_tmp)
    sandbox.write("VERSION", "1")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:staging")
    with Daemon(sandbox) as daemon:
        daemon.wait_result("staging", v1, "succeeded", timeout=120)
        sandbox.command("rc", "create", "--name", "one")
        preview = daemon.wait_for(lambda: done_preview(sandbox, "one"), 300, "the candidate's preview")
        assert preview["state"] == "done", preview
        sandbox.command("approve", "one", "--note", "seen the preview")
        sandbox.command("promote", "rc/one", "production")
        promoted = sandbox.head("production")
        final = daemon.wait_result("production", promoted, "succeeded", timeout=180)
        assert (final["rc"], final["preview"]) == ("one", preview["id"]), final
        note = note_of(sandbox, promoted)
        assert "; allowed by rc/one approved by " in note and f"preview #{preview['id']}" in note.split("allowed by")[1]
        evidence = json.loads(sandbox.command("rc", "evidence", "rc/one").stdout)
        assert evidence["preview"]["id"] == preview["id"], evidence["preview"]
        assert [d["preview"] for d in evidence["deployments"] if d["env"] == "production"] == [preview["id"]]


def test_the_candidate_page_and_the_environment_page_show_per_host_what_runs_there_and_since_when(short_tmp):
    port = free_port()
    sandbox = approvals_sandbox(
        short_tmp / "s",
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"]}}},
        },
    )
    sandbox.write("VERSION", "1")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:staging")
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        viewer = Browser(port)
        assert viewer.login(token(sandbox, "vera-laptop", "read", owner="vera")).status == 303
        daemon.wait_result("staging", v1, "succeeded", timeout=120)
        sandbox.command("rc", "create", "--name", "one")
        daemon.wait_for(lambda: done_preview(sandbox, "one"), 300, "the candidate's preview")
        sandbox.command("approve", "one", "--note", "fine")
        sandbox.command("promote", "rc/one", "production")
        deployed = daemon.wait_result("production", sandbox.head("production"), "succeeded", timeout=180)
        where = json.loads(sandbox.command("where", "rc/one", "--json").stdout)["hosts"]
        listed = json.loads(sandbox.command("hosts", "production", "--json").stdout)

        page = viewer.get("/repos/shop/envs/production")
        assert page.status == 200, page.text
        hosts = page.text.split('<h2 id="hosts">', 1)[1].split("</table>", 1)[0]
        for row in listed:
            assert f'<th scope="row">{row["host"]}</th>' in hosts and f"since {_when(row['since'])}" in hosts
        assert sandbox.tree(v1)[:7] in hosts and f'href="/deployments/{deployed["id"]}"' in hosts

        page = viewer.get("/repos/shop/rcs/one")
        assert page.status == 200, page.text
        runs = page.text.split('<h2 id="where">', 1)[1].split("</table>", 1)[0]
        assert sorted((h["env"], h["host"]) for h in where) == [
            ("production", "prod-1"),
            ("production", "prod-2"),
            ("staging", "stg-1"),
        ]
        for row in where:
            assert f'<td>{row["env"]}</td><th scope="row">{row["host"]}</th>' in runs
            assert f"since {_when(row['since'])}" in runs


def _when(at: float) -> str:
    """As the dashboard's `when` filter writes a time (the daemon and the test share the time zone)."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(at))


def test_a_promotion_request_into_an_approvals_environment_queues_a_preview_of_its_tree_unless_a_fresh_one_exists(short_tmp):
    sandbox = approvals_sandbox(short_tmp)
    sandbox.write("VERSION", "1")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:staging")

    def shown(preview_id: int) -> dict | None:
        proc = sandbox.command("preview", "--show", str(preview_id), "--json", check=False)  # polled: in this process
        view = json.loads(proc.stdout) if proc.returncode == 0 else None
        return view if view is not None and view["state"] in ("done", "failed") else None

    with Daemon(sandbox) as daemon:
        daemon.wait_result("staging", v1, "succeeded", timeout=120)
        # A push to refs/promote/production, refused for want of an approved candidate: a preview of staging's tree.
        refused = sandbox.push("main:refs/promote/production", check=False)
        assert "only takes release candidates with their approvals" in refused.stderr, refused.stderr
        first = daemon.wait_for(lambda: shown(1), 300, "the promotion request's preview")
        assert (first["state"], first["tree"], first["target_env"]) == ("done", sandbox.tree(v1), "production"), first
        # Asked again while that preview is fresh: no second one.
        assert sandbox.command("promote", "staging", "production", check=False).returncode == 1

        # A new tree in staging, then `gitopsd promote` (refused the same way): a preview of the new tree.
        sandbox.write("VERSION", "2")
        v2 = sandbox.commit("v2")
        sandbox.push("main", "main:staging")
        daemon.wait_result("staging", v2, "succeeded", timeout=120)
        assert sandbox.command("promote", "staging", "production", check=False).returncode == 1
        second = daemon.wait_for(lambda: shown(2), 300, "the second promotion request's preview")
        assert (second["state"], second["tree"]) == ("done", sandbox.tree(v2)), second
        assert shown(3) is None and sandbox.command("preview", "--show", "3", check=False).returncode == 1
