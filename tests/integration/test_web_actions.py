"""The dashboard's actions: the same functions and words as the command line, the role first, CSRF always.

Real: `gitopsd run` as a process serving the dashboard with uvicorn on loopback, sessions from API
tokens, forms posted over TCP, pushes through the installed hook, ansible-playbook deploying to
local hosts, and the command line run beside it for comparison. Nothing faked.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, Sandbox, free_port, git
from tests.webclient import Browser, Reply, token, web_up

HX = {"HX-Request": "true"}


@pytest.fixture
def site(short_tmp: Path) -> Iterator[tuple[Sandbox, Daemon, dict[str, Browser]]]:
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["production-1"]},
        env_options={"production": {"approvals": {"required": 1, "approvers": ["group:product"]}}},
        extra={
            "groups": {"ops": ["olga"], "product": ["paula"]},
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"], "deployer": ["group:ops"]}, "production": {"approver": ["group:product"]}}},
        },
        converged=True,
    )
    with Daemon(sandbox) as daemon:
        web_up(daemon)
        for env in ("qa", "staging"):  # production waits for a release candidate with its approval
            daemon.wait_state(env, "in-sync", sandbox.head(env))
        people = {}
        for name in ("olga", "paula", "vera"):  # a deployer, an approver, a viewer
            people[name] = Browser(port)
            signed = people[name].login(
                token(sandbox, f"{name}-laptop", "read", "deployments:write", "approvals:write", owner=name)
            )
            assert signed.status == 303
        yield sandbox, daemon, people


def post(browser: Browser, action: str, htmx: bool = True, **fields: str) -> Reply:
    return browser.post(f"/actions/{action}", {"csrf_token": browser.csrf(), **fields}, headers=HX if htmx else None)


def lines(reply: Reply) -> list[str]:
    return [html.unescape(x) for x in re.findall(r'<p class="result-line">(.*?)</p>', reply.text)]


def refusal_ids(reply: Reply) -> tuple[str, str] | None:
    """The kind and reason id a refusal fragment carries (data-kind, data-reason): the API's vocabulary."""
    found = re.search(r'class="result result-refused" role="alert" data-kind="([^"]*)" data-reason="([^"]*)"', reply.text)
    return (found[1], found[2]) if found else None


def heads(sandbox: Sandbox) -> dict[str, str]:
    return {env: sandbox.head(env) for env in ("qa", "staging", "production")}


def ship_to_qa(sandbox: Sandbox, daemon: Daemon, text: str, state: str = "in-sync") -> str:
    sandbox.write("app.txt", text)
    commit = sandbox.commit(text)
    sandbox.push("main", "main:qa")
    daemon.wait_state("qa", state, commit)
    return commit


def test_forms_without_the_csrf_token_or_from_a_viewer_change_nothing_and_names_are_checked(site):
    sandbox, daemon, people = site
    olga, vera = people["olga"], people["vera"]
    ship_to_qa(sandbox, daemon, "release 2")
    before = heads(sandbox)
    form = {"repo": "shop", "env": "staging"}
    assert olga.post("/actions/promote", form, headers=HX).status == 403
    assert olga.post("/actions/promote", {**form, "csrf_token": "f" * 64}, headers=HX).status == 403
    assert olga.post("/actions/promote", {**form, "csrf_token": vera.csrf()}, headers=HX).status == 403
    refused = post(vera, "promote", **form)
    assert refused.status == 403 and refusal_ids(refused) == ("forbidden", "role_required")
    assert lines(refused) == [
        f"vera may not promote in shop/staging: that needs the deployer role, and vera is a "
        f"viewer there (web.roles in {sandbox.config})"
    ]
    for action in ("rollback", "retry"):
        assert post(vera, action, **form).status == 403
    assert post(olga, "rollback", to="1", **form).status == 403  # back to a chosen deployment: admins only
    assert heads(sandbox) == before

    assert post(olga, "promote", repo="nope", env="staging").status == 404
    missing = post(olga, "promote", repo="shop", env="nope")
    assert missing.status == 404 and "has no environment 'nope'" in lines(missing)[0]
    assert refusal_ids(missing) == ("missing", "env_not_found")
    unheard = post(olga, "unheard-of", repo="shop", env="qa")
    assert unheard.status == 404 and refusal_ids(unheard) == ("missing", "no_endpoint")
    # An unknown release candidate: the dashboard and the API refuse it with one status, kind and reason id.
    unknown = post(people["paula"], "approve", repo="shop", rc="nope", note="x")
    reader = token(sandbox, "reader", "read")
    api = Browser(vera.port).get("/api/v1/repos/shop/rcs/nope", headers={"Authorization": f"Bearer {reader}"})
    body = json.loads(api.text)
    assert sorted(body) == ["field", "kind", "message", "reason"]  # the one error body shape
    assert (
        (unknown.status, refusal_ids(unknown))
        == (api.status, (body["kind"], body["reason"]))
        == (404, ("missing", "rc_not_found"))
    )
    assert post(olga, "promote", repo="shop", env="<script>").text.count("<script>") == 0  # escaped
    assert heads(sandbox) == before


def test_a_deployer_promotes_with_the_clis_refusal_and_an_approver_approves_as_themselves(site):
    sandbox, daemon, people = site
    olga, paula = people["olga"], people["paula"]
    sandbox.write("FAIL", "all")
    broken = ship_to_qa(sandbox, daemon, "broken", state="stalled")
    cli = sandbox.command("promote", "qa", "staging", check=False)
    assert cli.returncode == 1
    before = heads(sandbox)
    refused = post(olga, "promote", repo="shop", env="staging")
    assert refused.status == 409 and 'class="result result-refused"' in refused.text

    def same(text: str) -> str:  # the promotion commit each one wrote has its own id; trees and rules agree
        return re.sub(r"\b[0-9a-f]{7,40}\b", "<id>", text)

    assert same("\n".join(lines(refused)) + "\n") == same(cli.stderr)  # line for line, blank lines too
    assert sandbox.tree(broken)[:7] in refused.text
    assert heads(sandbox) == before

    sandbox.remove("FAIL")
    fixed = ship_to_qa(sandbox, daemon, "fixed")
    done = post(olga, "promote", repo="shop", env="staging")
    assert done.status == 200, done.text
    said = lines(done)
    assert (
        said[0].startswith(f"staging: staging is now at {sandbox.head('staging')[:7]} (Promote qa ({fixed[:7]}) to staging)")
        and said[1] == "the daemon deploys it now; follow with `gitopsd status`"
    )
    message = git(sandbox.root, "--git-dir", str(sandbox.repo), "log", "-1", "--format=%B", "staging").stdout
    assert "Gitopsd-Promoted-By: olga" in message
    daemon.wait_state("staging", "in-sync", sandbox.head("staging"))

    created = post(olga, "rc-create", repo="shop", name="r1")
    assert created.status == 200 and lines(created)[0].startswith("release candidate rc/r1 created")
    # The deployer may not approve (a role below approver), and the form says nothing about who approves.
    assert post(olga, "approve", repo="shop", rc="r1", kind="approve", note="fine").status == 403
    no_note = post(paula, "approve", repo="shop", rc="r1", kind="approve")
    assert no_note.status == 422 and lines(no_note) == ["say why with --note '...' (it is recorded with your name)"]
    approved = post(paula, "approve", htmx=False, repo="shop", rc="r1", kind="approve", note="go", next="/")
    assert approved.status == 303 and approved.header("location") == "/"
    assert "gitopsd_flash" in approved.set_cookies()
    shown = json.loads(sandbox.command("rc", "show", "r1", "--json").stdout)
    assert [(h["actor"], h["kind"], h["note"]) for h in shown["history"]] == [("paula", "approve", "go")]
    again = post(paula, "approve", repo="shop", rc="r1", note="again")
    assert again.status == 409 and lines(again)[0].startswith("paula already approved rc/r1")


def test_a_deployer_locks_an_environment_from_the_dashboard_with_a_reason_a_viewer_may_not_and_unlock_lifts_it(site):
    sandbox, daemon, people = site
    olga, vera = people["olga"], people["vera"]
    assert post(vera, "lock", repo="shop", env="staging", reason="mine").status == 403
    assert "lacks" not in sandbox.command("locks").stdout and "nothing is locked" in sandbox.command("locks").stdout
    assert "is in the past" in lines(post(olga, "lock", repo="shop", env="staging", reason="x", until="2001-01-01T00:00"))[0]
    done = post(olga, "lock", repo="shop", env="staging", reason="load test tonight", **{"for": "2h"})
    assert done.status == 200 and "shop/staging locked by olga until " in lines(done)[0], lines(done)
    page = olga.get("/").text
    assert "shop/staging locked by olga until" in html.unescape(page) and "load test tonight" in html.unescape(page)
    ship_to_qa(sandbox, daemon, "release 2")
    refused = post(olga, "promote", repo="shop", env="staging")
    assert refused.status == 409 and any("locked by olga" in line for line in lines(refused)), lines(refused)
    lifted = post(olga, "unlock", repo="shop", env="staging", reason="load test moved")
    assert lifted.status == 200 and lines(lifted) == ["shop/staging unlocked by olga"]
    assert post(olga, "promote", repo="shop", env="staging").status == 200


def test_a_viewer_filters_the_pipeline_by_repository_and_state_and_a_wrong_state_is_named(site):
    _sandbox, _daemon, people = site
    vera = people["vera"]
    synced = vera.get("/?state=in-sync&repo=sh")
    assert synced.status == 200 and 'data-env="qa"' in synced.text and 'hx-get="/?state=in-sync&amp;repo=sh"' in synced.text
    assert "No repository matches these filters." in vera.get("/?repo=nope").text
    wrong = vera.get("/?state=sideways")
    assert wrong.status == 400 and "state must be one of in-sync, deploying" in wrong.text
    assert vera.get("/?page=x").status == 400


def test_the_state_filter_takes_the_daemons_status_rows_so_a_repository_it_cannot_read_is_found_as_unavailable(site):
    """The filter read every environment's status per request (0.2-0.4 s at 1,000 repositories, issue 28), without the
    repositories the daemon cannot read: `?state=unavailable` never matched. It now asks the rows `status --json` gives."""
    sandbox, _daemon, people = site
    vera = people["vera"]
    assert "No repository matches these filters." in vera.get("/?state=unavailable").text
    moved = sandbox.repo.with_name("moved-away.git")
    sandbox.repo.rename(moved)
    try:
        rows = json.loads(sandbox.command("status", "--json").stdout)
        assert {row["state"] for row in rows} == {"unavailable"}, rows
        found = vera.get("/?state=unavailable")
        assert found.status == 200 and '<h2 id="repo-1">shop</h2>' in found.text, found.text[:3000]
        assert "No repository matches these filters." in vera.get("/?state=in-sync").text
    finally:
        moved.rename(sandbox.repo)


def test_an_environments_page_offers_the_deployer_an_unlock_form_with_a_reason_which_lifting_an_alerts_freeze_needs(site):
    sandbox, _daemon, people = site
    olga = people["olga"]
    assert post(olga, "lock", repo="shop", env="staging", reason="load test tonight").status == 200
    page = html.unescape(olga.get("/repos/shop/envs/staging").text)
    form = page.split('action="/actions/unlock"', 1)[1].split("</form>", 1)[0] if 'action="/actions/unlock"' in page else ""
    assert 'name="reason"' in form and 'name="env" value="staging"' in form, page[:3000]
    assert 'action="/actions/unlock"' not in people["vera"].get("/repos/shop/envs/staging").text
    lifted = post(olga, "unlock", repo="shop", env="staging", reason="load test moved")
    assert lifted.status == 200 and lines(lifted) == ["shop/staging unlocked by olga"]
    assert "nothing is locked" in sandbox.command("locks").stdout
