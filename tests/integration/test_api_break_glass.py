"""Break-glass over the HTTP API: one token owner asks, a second in override_by confirms, the list shows both, with
promotion's scope (deployments:write) and refusals in core/errors.py's one body.

Real: `gitopsd run` as a process serving uvicorn on loopback, `gitopsd token create --owner`, HTTP through urllib,
pushes through the installed hook, ansible-playbook, `gitopsd promote` beside it. Nothing faked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_api_human_gates import Api
from tests.support import Daemon, Sandbox, free_port

ASKER, CONFIRMER = "gb-bob", "gb-carol"  # token owners (identities), not Unix users


@pytest.fixture
def server(short_tmp: Path) -> Iterator[tuple[Sandbox, Daemon, Api]]:
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"]},
        env_options={"staging": {"override_by": [ASKER, CONFIRMER]}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}},
        converged=True,
    )
    api = Api(sandbox, f"http://127.0.0.1:{port}")
    with Daemon(sandbox) as daemon:
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        daemon.wait_for(lambda: "HTTP API listening" in daemon.log(), 30, "the API up")
        yield sandbox, daemon, api


def test_a_promotion_into_a_locked_environment_passes_once_a_second_token_owner_confirms_the_first_ones_break_glass(server):
    sandbox, daemon, api = server
    bob = api.token("bob-laptop", "read", "deployments:write", owner=ASKER)
    carol = api.token("carol-laptop", "read", "deployments:write", owner=CONFIRMER)
    olga = api.token("olga-laptop", "read", "deployments:write", owner="gb-olga")  # may deploy, not in override_by
    reader = api.token("dashboard", "read")
    assert api.call("POST", "/api/v1/locks", olga, {"env": "staging", "reason": "incident 42"})[0] == 201
    sandbox.write("app.txt", "the fix")
    commit = sandbox.commit("the fix")
    sandbox.push("main", "main:qa")
    daemon.wait_state("qa", "in-sync", commit)
    assert "locked by gb-olga" in sandbox.command("promote", "qa", "staging", check=False).stderr

    # Asking needs promotion's scope; the answer names the request's number.
    code, body = api.call("POST", "/api/v1/overrides", reader, {"env": "staging", "reason": "the fix"})
    assert (code, body) == (
        403,
        {
            "message": "this token lacks the scope deployments:write",
            "kind": "forbidden",
            "reason": "token_scope",
            "field": None,
        },
    )
    code, asked = api.call("POST", "/api/v1/overrides", bob, {"env": "staging", "reason": "the fix for incident 42"})
    assert code == 201 and asked["identity"] == ASKER and isinstance(asked["id"], int), asked
    assert f"break-glass #{asked['id']} for shop/staging asked by {ASKER}" in asked["message"]
    number = asked["id"]

    code, listed = api.call("GET", "/api/v1/overrides", reader)
    assert code == 200 and [(r["id"], r["asked_by"], r["confirmed_by"]) for r in listed["break_glass"]] == [(number, ASKER, None)]

    # The asker cannot confirm their own; a deployer outside override_by may not; the second person does, once.
    code, body = api.call("POST", f"/api/v1/overrides/{number}/confirm", bob, {})
    assert code == 403 and "the same person cannot confirm their own" in body["message"], body
    assert set(body) == {"message", "kind", "reason", "field"} and body["kind"] == "forbidden"
    code, body = api.call("POST", f"/api/v1/overrides/{number}/confirm", olga, {"reason": "looks fine"})
    assert (
        code == 403 and f"gb-olga may not confirm a break-glass in staging; who may: {ASKER}, {CONFIRMER}" in body["message"]
    ), body
    code, done = api.call("POST", f"/api/v1/overrides/{number}/confirm", carol, {"reason": "read the diff"})
    assert code == 201 and f"break-glass #{number} confirmed by {CONFIRMER}" in done["message"], done
    code, body = api.call("POST", f"/api/v1/overrides/{number}/confirm", carol, {})
    assert code == 409 and "confirmed already" in body["message"], body

    promoted = sandbox.command("promote", "qa", "staging")
    assert f"break-glass #{number} asked by {ASKER}, confirmed by {CONFIRMER} (read the diff)" in promoted.stdout
    deployed = daemon.wait_result("staging", sandbox.head("staging"), "succeeded", timeout=120)
    assert f"break-glass #{number} asked by {ASKER}, confirmed by {CONFIRMER}" in deployed["reason"], deployed


def test_break_glass_requests_over_http_that_make_no_sense_get_one_line_and_the_status_that_fits(server):
    _sandbox, _daemon, api = server
    bob = api.token("bob-laptop", "deployments:write", owner=ASKER)
    cases = [
        (("POST", "/api/v1/overrides", {"env": "staging"}), 422, "reason is required"),
        (("POST", "/api/v1/overrides", {"env": "staging", "reason": "x", "until": "soon"}), 422, "until is not a field"),
        (("POST", "/api/v1/overrides", {"env": "nowhere", "reason": "x"}), 404, "has no environment 'nowhere'"),
        (("POST", "/api/v1/overrides", {"env": "qa", "reason": "x"}), 403, "its override_by is empty"),
        (("POST", "/api/v1/overrides", {"repo": "cart", "env": "qa", "reason": "x"}), 404, "no repository named 'cart'"),
        (("POST", "/api/v1/overrides/x1/confirm", {}), 422, "is not a break-glass request number"),
        (("POST", "/api/v1/overrides/999/confirm", {}), 404, "no break-glass request #999"),
    ]
    for (method, path, body), status, words in cases:
        code, answer = api.call(method, path, bob, body)
        assert code == status and words in answer["message"] and "\n" not in answer["message"], (path, body, answer)
        assert set(answer) == {"message", "kind", "reason", "field"}, answer
    assert api.call("GET", "/api/v1/overrides", bob)[0] == 403  # listing is a read: the read scope
