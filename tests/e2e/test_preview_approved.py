"""The preview a deployment was approved on, and previews for every promotion request into an approvals environment
(issue 25, items 3 and 5): the deployment's history entry and git note name it, `rc evidence` agrees, and a
promotion request queues a preview of its own when none fresh exists, without waiting for it."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.test_rejected_trees import note_of
from tests.support import Daemon, Sandbox

pytestmark = [pytest.mark.slow]


def approvals_sandbox(root) -> Sandbox:  # type: ignore[no-untyped-def]
    me = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    return Sandbox(root, {"staging": ["stg-1"], "production": ["prod-1"]}, env_options={"production": {
        "approvals": {"required": 1, "approvers": [me], "forbid_self_approval": False}}})


def done_preview(sandbox: Sandbox, rc: str) -> dict | None:
    view = json.loads(sandbox.cli("rc", "show", rc, "--json").stdout)["preview"]
    return view if view is not None and view["state"] in ("done", "failed") else None


def test_a_deployment_approved_on_a_preview_names_that_preview_in_its_history_entry_its_note_and_the_evidence(short_tmp):
    sandbox = approvals_sandbox(short_tmp)
    sandbox.write("VERSION", "1")
    v1 = sandbox.commit("v1")
    sandbox.push("main", "main:staging")
    with Daemon(sandbox) as daemon:
        daemon.wait_result("staging", v1, "succeeded", timeout=120)
        sandbox.cli("rc", "create", "--name", "one")
        preview = daemon.wait_for(lambda: done_preview(sandbox, "one"), 300, "the candidate's preview")
        assert preview["state"] == "done", preview
        sandbox.cli("approve", "one", "--note", "seen the preview")
        sandbox.cli("promote", "rc/one", "production")
        promoted = sandbox.head("production")
        final = daemon.wait_result("production", promoted, "succeeded", timeout=180)
        assert (final["rc"], final["preview"]) == ("one", preview["id"]), final
        note = note_of(sandbox, promoted)
        assert "; allowed by rc/one approved by " in note and f"preview #{preview['id']}" in note.split("allowed by")[1]
        evidence = json.loads(sandbox.cli("rc", "evidence", "rc/one").stdout)
        assert evidence["preview"]["id"] == preview["id"], evidence["preview"]
        assert [d["preview"] for d in evidence["deployments"] if d["env"] == "production"] == [preview["id"]]
