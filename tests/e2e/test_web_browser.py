"""The web dashboard in a real browser: people sign in, watch the pipeline move live, act, and are refused.

Real: `gitopsd run` serving the dashboard beside its API, git push through the installed hook,
ansible-playbook deployments, Debian's chromium driven by Playwright (no browser download), and
axe-core (tests/vendor) checking every page. Each test is one step of one story, in order, on one
daemon; screenshots of each page go to $GITOPSD_TEST_ARTIFACTS or tests/artifacts/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Daemon, Sandbox, free_port

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (make deps)"),
]

AXE = ROOT / "tests" / "vendor" / "axe.min.js"
AXE_SHA256 = "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"  # tests/vendor/VENDORED.md
ARTIFACTS = Path(os.environ.get("GITOPSD_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "web"
WAIT = 60_000  # ms: a deployment of the test playbook takes a few seconds; the machine may be loaded


class Story:
    """The daemon, its sandbox, the tokens of the people, and where the dashboard is."""

    def __init__(self, root: Path):
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.sandbox = Sandbox(
            root,
            {"qa": ["qa-1"], "staging": ["staging-1"], "production": ["prod-1", "prod-2", "prod-3"]},
            env_options={"production": {"rollout": {"batches": [1, "100%"], "bake": 4}}},
            extra={
                "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(root / "tokens.yml")},
                "web": {"roles": {"*": {"viewer": ["*"], "deployer": ["dana"]}, "production": {"approver": ["alice", "bob"]}}},
            },
        )
        self.daemon = self.start()
        self.daemon.wait_for(lambda: self.answers("/api/v1/health"), 60, "the API and the dashboard up")
        self.tokens = {
            who: self.sandbox.command(
                "token",
                "create",
                f"{who}-browser",
                "--owner",
                who,
                "--scope",
                "read",
                "--scope",
                "approvals:write",
                "--scope",
                "deployments:write",
            ).stdout.strip()
            for who in ("dana", "alice", "bob", "victor")
        }
        for env in ("qa", "staging", "production"):
            self.daemon.wait_state(env, "in-sync", timeout=90)
        # Production takes approved release candidates from now on: its first release came before the rule.
        self.sandbox.env_options["production"]["approvals"] = {"required": 2, "approvers": ["alice", "bob"]}
        self.sandbox.write_config()
        self.daemon.proc.send_signal(signal.SIGHUP)
        self.daemon.wait_for(lambda: "configuration reloaded" in self.daemon.log(), 30, "the reload")

    def start(self) -> Daemon:
        """The daemon, for the whole module: the conftest's per-test cleanup leaves it to the `story` fixture."""
        daemon = Daemon(self.sandbox)
        Daemon.started.remove(daemon)
        return daemon

    def answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def api(self, method: str, path: str, who: str, body: dict[str, Any]) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.tokens[who]}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    root = Path(tempfile.mkdtemp(prefix="gw-", dir="/tmp"))
    try:
        story = Story(root)
        try:
            yield story
        finally:
            story.daemon.stop()
        assert "Traceback" not in story.daemon.log()
        assert not any(token in story.daemon.log() for token in story.tokens.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")  # not the session's: Playwright's event loop would stay running in this worker
def browser() -> Iterator[Any]:  # for the next file (asyncio.run in the Matrix fixture then refuses to start)
    with playwright.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # chromium's own sandbox refuses to run as root
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def people(story: Story, browser: Any) -> dict[str, Any]:
    """A signed-in page per person, each in its own browser context (its own cookies)."""
    pages = {}
    for who in ("dana", "alice", "bob", "victor"):
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(WAIT)
        page.on("dialog", lambda dialog: dialog.accept())  # every action asks for confirmation: the person says yes
        sign_in(page, story, who)
        pages[who] = page
    return pages


def sign_in(page: Any, story: Story, who: str) -> None:
    page.goto(story.base + "/")
    assert "/login" in page.url
    shoot(page, "login")
    page.fill("input[name=token]", story.tokens[who])
    page.click("button[type=submit]")
    page.wait_for_selector(f"header .user:text-is('{who}')")


def shoot(page: Any, name: str, axe: bool = True) -> None:
    """A screenshot of the page as a test artifact, and axe-core's check: no serious or critical violation."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if not axe:
        return
    source = AXE.read_bytes()
    assert hashlib.sha256(source).hexdigest() == AXE_SHA256, "tests/vendor/axe.min.js is not the vendored file"
    page.evaluate(source.decode() + "\n;0")  # through the DevTools protocol: the page's CSP stays as it is
    violations = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => `${v.id} (${v.impact}): ${v.nodes.map(n => n.target.join(' ')).slice(0, 3).join(', ')}`)""")
    assert violations == [], f"{name}: {violations}"


def lane(env: str) -> str:
    return f"li.lane[data-env={env}]"


def test_a_deployer_watches_a_push_move_through_qa_and_staging_live(story, people):
    dana = people["dana"]
    dana.goto(story.base + "/")
    dana.wait_for_selector("#connection[data-state=live]")
    dana.evaluate("window.notReloaded = true")
    box = story.sandbox
    box.write("app.txt", "release 2")
    commit = box.commit("Checkout button <script>alert('x')</script>")
    box.push("main")
    box.push("main:qa")
    dana.wait_for_selector(f"{lane('qa')} code[title='{commit}']")
    dana.wait_for_selector(f"{lane('qa')} .badge.st-in-sync")
    assert "Checkout button <script>alert('x')</script>" in dana.inner_text(lane("qa"))  # shown as text
    assert dana.evaluate("window.notReloaded") is True and dana.evaluate("typeof alert === 'function'")
    shoot(dana, "pipeline-qa")
    dana.click(f"{lane('staging')} button:has-text('Promote qa')")
    dana.wait_for_function(f"""() => {{
        const lane = document.querySelector("{lane("staging")}");
        return lane && lane.querySelector(".badge.st-in-sync") && lane.textContent.includes("{box.tree("main")[:7]}"); }}""")
    assert dana.evaluate("window.notReloaded") is True
    assert story.sandbox.status()["staging"]["state"] == "in-sync"


def test_a_viewer_sees_no_action_and_unknown_names_are_not_found(story, people):
    victor = people["victor"]
    victor.goto(story.base + "/")
    assert victor.locator("form.act").count() == 0
    for path in ("/repos/nope/envs/qa", "/repos/shop/envs/nope", "/deployments/99999", "/repos/shop/rcs/nope"):
        answer = victor.goto(story.base + path)
        assert answer is not None and answer.status == 404, path
    shoot(victor, "not-found")


def test_a_promotion_to_production_without_approvals_is_refused_with_the_rules_words(story, people):
    dana = people["dana"]
    dana.goto(story.base + "/")
    before = story.sandbox.head("production")
    dana.click(f"{lane('production')} button:has-text('Promote staging')")
    refusal = dana.wait_for_selector("#flash .result-refused")
    assert "approv" in refusal.inner_text()
    shoot(dana, "refusal")
    assert story.sandbox.head("production") == before


def test_two_approvers_approve_the_release_candidate(story, people):
    code, answer = story.api("POST", "/api/v1/repos/shop/rcs", "dana", {"to": "production"})
    assert code == 201, answer
    rc = json.loads(story.sandbox.command("rc", "list", "--json").stdout)[0]["name"]
    dana = people["dana"]
    dana.goto(story.base + "/")
    dana.wait_for_selector(f"{lane('production')} .rc a:has-text('rc/{rc}')")
    for who in ("alice", "bob"):
        page = people[who]
        page.goto(f"{story.base}/repos/shop/rcs/{rc}")
        page.fill("#rc-note", f"{who}: checked the release notes")
        page.click("button[value=approve]")
        page.wait_for_selector(f".approvals li:has-text('{who}')")
    page.wait_for_selector(".badge.rc-approved")
    shoot(page, "release-candidate")
    dana.wait_for_selector(f"{lane('production')} .rc:has-text('approved by alice, bob')")


def test_production_rolls_out_batch_by_batch_then_is_rolled_back(story, people, browser):
    dana = people["dana"]
    dana.goto(story.base + "/")
    dana.evaluate("window.notReloaded = true")
    dana.click(f"{lane('production')} button:has-text('Promote staging')")
    dana.wait_for_selector(f"{lane('production')} [data-progress]:has-text('batch 1 of 2')")
    shoot(dana, "pipeline-rollout", axe=False)
    shutil.copy(ARTIFACTS / "pipeline-rollout.png", ARTIFACTS / "dashboard.png")
    # The deployment's own page streams its Ansible output while it runs.
    deployment = story.sandbox.history("production")[0]
    assert deployment["result"] == "running"
    watcher = dana.context.new_page()
    watcher.set_default_timeout(WAIT)
    watcher.goto(f"{story.base}/deployments/{deployment['id']}")
    watcher.wait_for_selector("#output:has-text('PLAY RECAP')")
    dana.wait_for_selector(f"{lane('production')} [data-progress]:has-text('batch 2 of 2')")
    dana.wait_for_selector(f"{lane('production')} .badge.st-in-sync")
    assert dana.evaluate("window.notReloaded") is True
    watcher.wait_for_selector("#output[data-ended=true]")
    shoot(watcher, "deployment")
    watcher.close()

    dana.click(f"{lane('production')} button:has-text('Roll back')")
    dana.wait_for_selector(f"{lane('production')} a:has-text('rollback')")
    dana.wait_for_selector(f"{lane('production')} .badge.st-in-sync")
    shoot(dana, "pipeline")
    dana.goto(f"{story.base}/repos/shop/envs/production")
    rows = dana.locator("table.history tbody tr")
    assert "rollback" in rows.nth(0).inner_text() and "batch 2" in rows.nth(1).inner_text()
    shoot(dana, "environment")


def test_the_page_says_reconnecting_while_the_daemon_restarts_and_catches_up(story, people):
    dana = people["dana"]
    dana.goto(story.base + "/")
    dana.wait_for_selector("#connection[data-state=live]")
    story.daemon.stop(signal.SIGTERM)
    dana.wait_for_selector("#connection[data-state=reconnecting]")
    shoot(dana, "reconnecting", axe=False)
    story.daemon = story.start()
    story.daemon.wait_for(lambda: story.answers("/api/v1/health"), 60, "the dashboard back")
    dana.wait_for_selector("#connection[data-state=live]", timeout=30_000)
    if "/login" not in dana.url:  # sessions may not outlive the daemon; the page still came back by itself
        assert dana.locator(lane("production")).count() == 1


def test_the_dashboard_fits_a_phone(story, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(WAIT)
    sign_in(page, story, "victor")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the pipeline is {width}px wide on a 390px phone"
    shoot(page, "pipeline-phone")
    context.close()
