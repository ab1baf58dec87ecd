"""Break-glass on the dashboard: a deployer asks with a reason on the environment's page, a second person in
override_by confirms there, the asker cannot; forms carry the CSRF token as every other dashboard form does.

Real: `gitopsd run` as a process serving the dashboard with uvicorn on loopback, sessions from API tokens, forms posted
over TCP, pushes through the installed hook, ansible-playbook, `gitopsd promote` beside it. Nothing faked.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_web_actions import HX, lines, post
from tests.support import Daemon, Sandbox, free_port
from tests.webclient import Browser, token, web_up


@pytest.fixture
def site(short_tmp: Path) -> Iterator[tuple[Sandbox, Daemon, dict[str, Browser]]]:
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"]},
        env_options={"staging": {"override_by": ["wb-olga", "wb-oscar"]}},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"], "deployer": ["wb-olga", "wb-oscar", "wb-otto"]}}},
        },
        converged=True,
    )
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        daemon.wait_state("staging", "in-sync", sandbox.head("staging"))
        people = {}
        for name in ("wb-olga", "wb-oscar", "wb-otto", "wb-vera"):  # deployers (otto not in override_by), a viewer
            people[name] = Browser(port)
            assert people[name].login(token(sandbox, f"{name}-laptop", "read", "deployments:write", owner=name)).status == 303
        yield sandbox, daemon, people


def test_a_deployer_asks_to_break_glass_on_the_environment_page_and_a_second_person_confirms_it_there(site):
    sandbox, daemon, people = site
    olga, oscar, otto, vera = (people[n] for n in ("wb-olga", "wb-oscar", "wb-otto", "wb-vera"))
    assert post(olga, "lock", repo="shop", env="staging", reason="incident 42").status == 200
    sandbox.write("app.txt", "the fix")
    commit = sandbox.commit("the fix")
    sandbox.push("main", "main:qa")
    daemon.wait_state("qa", "in-sync", commit)

    page = olga.get("/repos/shop/envs/staging").text
    assert 'action="/actions/override"' in page and 'name="reason" required' in page
    # Without the session's CSRF token nothing is asked; a viewer may not ask; a reason is required.
    assert olga.post("/actions/override", {"repo": "shop", "env": "staging", "reason": "x"}, headers=HX).status == 403
    refused = post(vera, "override", repo="shop", env="staging", reason="x")
    assert refused.status == 403 and "that needs the deployer role" in lines(refused)[0], lines(refused)
    assert post(olga, "override", repo="shop", env="staging").status == 422

    asked = post(olga, "override", repo="shop", env="staging", reason="the fix for incident 42")
    assert asked.status == 200 and "break-glass #1 for shop/staging asked by wb-olga" in lines(asked)[0], lines(asked)

    # The request is on the page with a Confirm form for the others, not for the one who asked.
    assert "Confirm break-glass #1" not in olga.get("/repos/shop/envs/staging").text
    page = html.unescape(oscar.get("/repos/shop/envs/staging").text)
    assert "#1 asked by wb-olga: the fix for incident 42" in page and "Confirm break-glass #1" in page
    assert re.search(r'<form method="post" action="/actions/override-confirm".*?name="csrf_token" value="[0-9a-f]+"', page, re.S)
    own = post(olga, "override-confirm", id="1")
    assert own.status == 403 and "the same person cannot confirm their own" in lines(own)[0], lines(own)
    outside = post(otto, "override-confirm", id="1", reason="fine")
    assert outside.status == 403 and "wb-otto may not confirm a break-glass in staging" in lines(outside)[0]
    assert post(oscar, "override-confirm", id="x").status == 422
    assert post(oscar, "override-confirm", id="7").status == 404

    done = post(oscar, "override-confirm", id="1", reason="read the diff")
    assert done.status == 200 and "break-glass #1 confirmed by wb-oscar" in lines(done)[0], lines(done)
    assert "(confirmed by wb-oscar; promotions pass until" in html.unescape(vera.get("/repos/shop/envs/staging").text)

    promoted = sandbox.command("promote", "qa", "staging")
    assert "break-glass #1 asked by wb-olga, confirmed by wb-oscar (read the diff)" in promoted.stdout
    deployed = daemon.wait_result("staging", sandbox.head("staging"), "succeeded", timeout=120)
    assert "break-glass #1 asked by wb-olga, confirmed by wb-oscar" in deployed["reason"], deployed
