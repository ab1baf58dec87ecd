"""`--log-format json` writes Elastic Common Schema lines; the plain format stays as it was.

Real: gitopsd.adapters.logs' formatters and handler filter on a real logging.Logger writing to a StringIO.
"""

from __future__ import annotations

import io
import json
import logging

from gitopsd.adapters import logs
from gitopsd.core.types import Deployment


def capture(fmt: str):
    stream = io.StringIO()
    logs.setup(fmt)
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    return stream


def deployment(result: str = "failed") -> Deployment:
    return Deployment(
        id=12,
        repo="shop",
        env="production",
        commit="a" * 40,
        tree="b" * 40,
        previous_commit="c" * 40,
        kind="deploy",
        result=result,
        trigger="push",
        actor="alice",
        reason=None,
        outcome="task failed on web-1",
        started_at=1_700_000_000.0,
        finished_at=1_700_000_012.5,
        attempt=1,
        workdir=None,
        detail={},
    )


def test_json_lines_carry_ecs_field_names_and_the_deployment_labels():
    stream = capture("json")
    logging.getLogger("gitopsd.reconciler").info(
        "deploying %s", "abc1234", extra={"repo": "shop", "env": "qa", "commit": "abc1234", "deployment": 7}
    )
    doc = json.loads(stream.getvalue())
    assert doc["@timestamp"].endswith("Z") and doc["log.level"] == "info" and doc["message"] == "deploying abc1234"
    assert doc["ecs.version"] and doc["log"]["logger"] == "gitopsd.reconciler"
    assert doc["labels"] == {"repo": "shop", "env": "qa", "commit": "abc1234", "deployment": "7"}


def test_an_exception_goes_to_the_ecs_error_fields():
    stream = capture("json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("gitopsd.x").exception("it broke")
    doc = json.loads(stream.getvalue())
    assert doc["error"]["type"] == "RuntimeError" and doc["error"]["message"] == "boom"
    assert "Traceback" in doc["error"]["stack_trace"]


def test_a_deployment_summary_event_says_action_outcome_duration_in_nanoseconds_kind_trigger_and_actor():
    stream = capture("json")
    logs.deployment_ended(logging.getLogger("gitopsd.deployment"), deployment())
    doc = json.loads(stream.getvalue())
    assert doc["event"]["action"] == "deployment" and doc["event"]["outcome"] == "failure"
    assert doc["event"]["duration"] == 12_500_000_000
    assert doc["gitopsd"]["kind"] == "deploy" and doc["gitopsd"]["trigger"] == "push"
    assert doc["gitopsd"]["actor"] == "alice" and doc["user"]["name"] == "alice"
    assert doc["labels"]["deployment"] == "12" and doc["log.level"] == "warning"


def test_the_plain_format_is_unchanged_and_leaves_the_summary_event_to_json():
    stream = capture("plain")
    logging.getLogger("gitopsd.reconciler").info(
        "deployment succeeded in 2.1s: ok", extra={"repo": "shop", "env": "qa", "commit": "abc1234", "deployment": 7}
    )
    logs.deployment_ended(logging.getLogger("gitopsd.deployment"), deployment("succeeded"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("info: [shop/qa abc1234 #7] deployment succeeded in 2.1s: ok")
