"""A run that says its failure is permanent (invalid content) stalls at once: no retries, no automatic rollback.

Fakes as in test_reconciler: Git, the playbook runner, the judge and the clock; the store is real.
"""

from __future__ import annotations

import threading

from gitopsd.core.types import PlaybookRun, RunOutcome
from tests.unit.test_reconciler import head, look, world  # noqa: F401  (the fixture)


def test_invalid_content_stalls_after_one_attempt_without_retries(world):  # noqa: F811
    reconciler, store, git, runner, clock, scheduled = world

    def invalid(run: PlaybookRun, cancel: threading.Event) -> RunOutcome:
        runner.runs.append(run)
        return RunOutcome(False, "failed", 4, "invalid content: YAML parsing failed (playbooks/deploy.yml:6:1)", permanent=True)

    reconciler.tools = type(reconciler.tools)(run_playbook=invalid)
    git.heads["qa"] = head(1)
    look(reconciler)
    failure = store.failure("shop", "qa")
    assert failure.stalled and failure.failures == 1 and failure.next_retry_at is None
    assert "invalid content: YAML parsing failed" in failure.reason
    assert scheduled == [l for l in scheduled if l[0].trigger != "retry"], "no retry is scheduled"
    clock.now += 10_000
    look(reconciler)
    assert len(runner.runs) == 1
