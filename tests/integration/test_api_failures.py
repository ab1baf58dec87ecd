"""The API's and the dashboard's answers when the server itself has a problem: the truth (503 only for what passes by
itself, else a 500 that says the operator must act), one log line, and nothing half written.

Real: the HTTP API and the dashboard served as the daemon serves them (api/server.serve, test_api.Api), the store and
the repository, statements signed by the in-toto library (test_provenance_upload), forms posted by a browser session
(tests/webclient.py), a full disk as a small tmpfs, a read-only file system as a read-only bind mount, a file in the way
of a folder; SQLite's own errors raised by a trigger where a real lock would take the store's 30 s to show.
Mounts need root: without it those tests skip.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from gitopsd.adapters.store import Store
from gitopsd.api.server import serve
from gitopsd.config import load
from gitopsd.web.app import create_web_app
from tests.integration import test_provenance_upload as uploads
from tests.integration.test_api import Api
from tests.integration.test_api_human_gates import Api as DaemonApi
from tests.integration.test_web_actions import HX, refusal_ids
from tests.support import Daemon, Sandbox, free_port, git, mounted
from tests.webclient import Browser, token, web_up

api, ci_key = uploads.api, uploads.ci_key  # its fixtures: the API served with a CI key trusted for provenance

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind needs root")


def failing(db: Path, words: str) -> None:
    """Make every status insert fail with SQLite's error `words`, as the store meets it when the disk is full or locked."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(f"CREATE TRIGGER failing BEFORE INSERT ON commit_statuses BEGIN SELECT RAISE(ABORT, '{words}'); END")
        conn.commit()


def upload(api, ci_key, who: str = "jenkins", subject: str = "shop-1.0.tar.gz"):
    """POST a success of ci/build with a statement signed for `subject` built of main's head, with a new token for `who`;
    (code, headers, body, tree)."""
    token = api.token(who, "statuses:write", "read")
    head = api.sandbox.head("main")
    code, headers, doc = api.post(
        head, token, state="success", context="ci/build", provenance=uploads.in_toto_envelope(ci_key, head, subject)
    )
    return code, headers, doc, api.sandbox.tree(head)


def left_behind(api, tree: str) -> list[str]:
    """Files and folders under the provenance folder, and `tree`'s recorded attestations: what a failure left."""
    folder = api.sandbox.state / "artifacts" / "provenance"
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.is_dir() else []
    with Store(load(api.sandbox.config).database) as store:
        return files + [f"attestation {row[0]}" for row in store.attestations("shop", tree)]


def one_line(doc: dict, kind: str, reason: str) -> None:
    assert doc["kind"] == kind and doc["reason"] == reason, doc
    assert set(doc) == {"message", "kind", "reason", "field"} and "\n" not in doc["message"], doc
    assert "Traceback" not in doc["message"] and "/" + "tmp" not in doc["message"], doc  # no server paths to clients


def test_a_status_whose_recording_fails_after_its_provenance_upload_leaves_no_statement_and_no_attestation(api, ci_key):
    failing(load(api.sandbox.config).database, "database or disk is full")
    code, _h, doc, tree = upload(api, ci_key)
    assert left_behind(api, tree) == []
    assert code == 500, doc
    one_line(doc, "internal", "server_disk_full")


def test_a_locked_store_is_a_503_with_retry_after_and_the_upload_leaves_nothing_behind(api, ci_key):
    failing(load(api.sandbox.config).database, "database is locked")
    code, headers, doc, tree = upload(api, ci_key)
    assert left_behind(api, tree) == []
    assert code == 503 and int(headers["retry-after"]) > 0, (code, headers, doc)
    one_line(doc, "unavailable", "store_unavailable")


@needs_root
def test_a_full_disk_under_the_statements_is_a_500_that_says_so_logged_once_and_nothing_is_left(api, ci_key, caplog):
    artifacts = api.sandbox.state / "artifacts"
    with mounted(artifacts, "-t", "tmpfs", "-o", "size=64k", "tmpfs"):
        (artifacts / "filler").write_bytes(b"")
        with contextlib.suppress(OSError), (artifacts / "filler").open("ab") as filler:
            while True:
                filler.write(b"x" * 4096)
                filler.flush()
        with caplog.at_level(logging.INFO, logger="gitopsd"):
            code, headers, doc, tree = upload(api, ci_key)
        (artifacts / "filler").unlink()
        assert code == 500 and "retry-after" not in {k.lower() for k in headers}, (code, headers, doc)
        one_line(doc, "internal", "server_disk_full")
        assert "disk is full" in doc["message"] and "operator" in doc["message"], doc
        assert left_behind(api, tree) == []
    said = [r for r in caplog.records if r.name.startswith("gitopsd.api") and r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and said[0].exc_info is None, said
    assert "No space left on device" in said[0].getMessage() and "\n" not in said[0].getMessage()


@needs_root
def test_a_read_only_state_folder_is_a_500_for_the_operator_not_a_503_to_retry(api, ci_key):
    artifacts = api.sandbox.state / "artifacts"
    with mounted(artifacts, "--bind", "-o", "ro", str(artifacts)):
        code, headers, doc, tree = upload(api, ci_key)
        assert not (artifacts / "provenance").exists()
    assert code == 500 and "retry-after" not in {k.lower() for k in headers}, (code, headers, doc)
    one_line(doc, "internal", "server_permission")
    assert "Read-only file system" in doc["message"], doc


def test_a_file_in_the_way_of_the_statements_folder_is_a_500_that_names_the_trouble(api, ci_key):
    artifacts = api.sandbox.state / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "provenance").write_text("in the way\n")
    code, _h, doc, tree = upload(api, ci_key)
    assert code == 500, doc
    one_line(doc, "internal", "server_files")
    assert "Not a directory" in doc["message"], doc
    assert (artifacts / "provenance").read_text() == "in the way\n"


def test_a_failed_upload_keeps_the_statement_an_earlier_one_stored_under_the_same_name(api, ci_key):
    code, _h, doc, tree = upload(api, ci_key)
    assert code == 201, doc
    kept = left_behind(api, tree)
    statement = next((api.sandbox.state / "artifacts" / "provenance").rglob("*.intoto.json"))
    before = statement.read_bytes()
    failing(load(api.sandbox.config).database, "database or disk is full")
    code, _h, doc, _tree = upload(api, ci_key, "jenkins-again", "shop-2.0.tar.gz")
    assert statement.read_bytes() == before and left_behind(api, tree) == kept
    assert code == 500, doc


@pytest.fixture
def site(short_tmp):
    """The dashboard beside the API, served in this process as the daemon serves them, and an admin signed in."""
    port = free_port()
    sandbox = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={
            "api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")},
            "web": {"roles": {"*": {"viewer": ["*"], "deployer": ["*"], "admin": ["*"]}}},
        },
    )
    config = load(sandbox.config)
    with Store(config.database) as store:
        server = serve(lambda: config, store, lambda _repo: None, dashboard=create_web_app)
        assert server is not None
        try:
            olga = Browser(port)
            assert olga.login(token(sandbox, "olga-laptop", "read", "deployments:write", owner="olga")).status == 303
            yield sandbox, olga
        finally:
            server.stop()


@needs_root
def test_a_dashboard_action_on_a_read_only_state_folder_is_a_500_for_the_operator_not_a_503_to_retry(site, caplog):
    sandbox, olga = site
    csrf = olga.csrf()
    with mounted(sandbox.state, "--bind", "-o", "ro", str(sandbox.state)), caplog.at_level(logging.INFO, logger="gitopsd"):
        done = olga.post("/actions/retry", {"csrf_token": csrf, "repo": "shop", "env": "qa"}, headers={"HX-Request": "true"})
    assert done.status == 500 and refusal_ids(done) == ("internal", "server_permission"), (done.status, done.text)
    assert "operator" in done.text and "Traceback" not in done.text
    said = [r for r in caplog.records if r.name.startswith("gitopsd.web") and r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0].levelno == logging.ERROR and said[0].exc_info is None, said


@needs_root
def test_a_status_posted_while_the_state_folders_disk_is_full_is_a_500_that_says_the_disk_is_full(short_tmp, caplog):
    """SQLite ends the transaction itself when the disk is full; the store's ROLLBACK after it failed ("no transaction
    is active") and hid the full disk: the client was told of a file out of place, the log of a failed rollback."""
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"]},
        extra={"api": {"listen": f"127.0.0.1:{free_port()}", "tokens_file": str(short_tmp / "tokens.yml")}},
    )
    made = short_tmp / "state-made"
    shutil.copytree(box.state, made)
    with mounted(box.state, "-t", "tmpfs", "-o", "size=512k", "tmpfs"):
        shutil.copytree(made, box.state, dirs_exist_ok=True)
        served = Api(box)
        try:
            token = served.token("jenkins", "statuses:write", "read")
            head = box.head("main")
            with contextlib.suppress(OSError), (box.state / "filler").open("ab") as filler:
                while True:
                    filler.write(b"x" * 1024)
                    filler.flush()
            with caplog.at_level(logging.INFO, logger="gitopsd"):
                code, _h, doc = served.post(head, token, state="success", context="ci/" + "x" * 200, description="d" * 140)
                assert served.combined(head, token)["statuses"] == []  # reading goes on
        finally:
            served.close()
    assert code == 500, doc
    one_line(doc, "internal", "server_disk_full")
    said = [r.getMessage() for r in caplog.records if r.name.startswith("gitopsd.api") and r.levelno >= logging.WARNING]
    assert len(said) == 1 and "the disk is full" in said[0] and "rollback" not in said[0], said


def test_numbers_no_store_holds_in_a_url_or_a_form_get_one_clear_answer_not_a_500_and_a_traceback(site, caplog):
    """'²' is a digit to str.isdigit but not to int(); 10**23 is a number SQLite cannot hold: both were bugs' 500s."""
    sandbox, olga = site
    reader = {"Authorization": f"Bearer {token(sandbox, 'vera-laptop', 'read')}"}
    huge = "1" + "0" * 22
    with caplog.at_level(logging.INFO):
        for ident in ("%C2%B2", huge):
            answer = olga.get(f"/api/v1/repos/shop/previews/{ident}", headers=reader)
            assert answer.status == 404 and json.loads(answer.text)["reason"] == "preview_not_found", (ident, answer)
        pages = {
            f"/deployments/{huge}": 404,
            f"/deployments/{huge}/output": 404,
            "/repos/shop/envs/qa?before=%C2%B2": 404,
            f"/repos/shop/envs/qa?before={huge}": 404,
            "/?page=%C2%B2": 400,
        }
        got = {path: olga.get(path).status for path in pages}
        csrf = olga.csrf()
        rolled = olga.post(
            "/actions/rollback", {"csrf_token": csrf, "repo": "shop", "env": "qa", "to": "²"}, headers={"HX-Request": "true"}
        )
    assert got == pages
    assert rolled.status == 422 and refusal_ids(rolled) == ("invalid", "bad_field"), (rolled.status, rolled.text[:300])
    loud = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert loud == [], [r.getMessage() for r in loud]


def test_a_repository_the_server_cannot_read_is_a_500_for_the_operator_not_a_commit_to_push_again(api, caplog):
    """git failing on the repository ('cannot change to ...: Not a directory') was answered 'no commit ... (push it
    first)', a 404 that sends the CI to push again what is there."""
    sandbox = api.sandbox
    token = api.token("jenkins", "statuses:write", "read")
    head = sandbox.head("main")
    sandbox.repo.rename(sandbox.root / "moved.git")
    sandbox.repo.write_text("in the way\n")
    try:
        with caplog.at_level(logging.INFO, logger="gitopsd"):
            posted = api.post(head, token, state="success", context="ci/build")
            read = api.call("GET", f"/api/v1/repos/shop/commits/{head}/status", token)
    finally:
        sandbox.repo.unlink()
        (sandbox.root / "moved.git").rename(sandbox.repo)
    for code, _h, doc in (posted, read):
        assert code == 500, doc
        one_line(doc, "internal", "repository_failed")
    said = [r.getMessage() for r in caplog.records if r.name.startswith("gitopsd.api") and r.levelno >= logging.WARNING]
    assert len(said) == 2 and all("Not a directory" in line and "\n" not in line for line in said), said


def test_numbers_and_durations_the_daemon_cannot_hold_are_refused_in_one_line_not_answered_with_a_500(short_tmp):
    """A break-glass number past SQLite's integers, a lock for longer than a timedelta holds, and '²' (a digit to
    str.isdigit, not to int()) in a duration were 500s with the daemon's traceback."""
    port = free_port()
    api = {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"api": api}, converged=True)
    with Daemon(box) as daemon:
        web_up(daemon)
        served = DaemonApi(box, f"http://127.0.0.1:{port}")
        ops = served.token("ops", "deployments:write", "read")
        answers = {
            "huge id": served.call("POST", f"/api/v1/overrides/1{'0' * 22}/confirm", ops, {"reason": "x"}),
            "huge for": served.call("POST", "/api/v1/locks", ops, {"env": "qa", "reason": "x", "for": "9" * 19 + "d"}),
            "² for": served.call("POST", "/api/v1/locks", ops, {"env": "qa", "reason": "x", "for": "²d"}),
        }
        log = daemon.log()
    got = {what: (code, doc["reason"]) for what, (code, doc) in answers.items()}
    assert got == {"huge id": (422, "bad_break_glass_id"), "huge for": (422, "bad_time"), "² for": (422, "bad_time")}
    assert all("\n" not in doc["message"] for _c, doc in answers.values())
    assert "Traceback" not in log and "internal" not in log, log[-3000:]


def test_a_tokens_file_the_server_cannot_read_is_its_operators_500_not_the_clients_bad_token(site, caplog):
    """Every request was told its token is not valid (401, and a failed sign-in counted against its address), when the
    server's own file was broken: the client rotates a good token, the operator never hears of it."""
    sandbox, _olga = site
    secret = token(sandbox, "jenkins", "read")
    tokens_file = sandbox.root / "tokens.yml"
    tokens_file.write_text(tokens_file.read_text().replace("tokens:", "tokens: 5\nx:", 1))
    browser = Browser(int(load(sandbox.config).api.port))
    with caplog.at_level(logging.INFO, logger="gitopsd"):
        asked = browser.get("/api/v1/status", headers={"Authorization": f"Bearer {secret}"})
        signed = browser.login(secret)
    assert asked.status == 500, asked
    one_line(json.loads(asked.text), "internal", "server_files")
    assert "tokens file" in asked.text and "operator" in asked.text
    assert signed.status == 500 and "tokens file" in signed.text, (signed.status, signed.text[:500])
    said = [r for r in caplog.records if r.levelno >= logging.ERROR]  # once by each reader of the file (API, sign-in)
    assert len({r.getMessage() for r in said}) == 1 and "tokens" in said[0].getMessage(), said
    assert all(r.exc_info is None for r in said)


def test_a_form_with_more_fields_than_the_dashboard_reads_is_refused_in_one_page_not_a_500_and_a_traceback(site, caplog):
    """parse_qs's max_num_fields raises ValueError past its limit: the CSRF check, the sign-in and the actions let it
    through as a bare 'Internal Server Error' and a traceback from the server's logger."""
    sandbox, olga = site
    many = {f"field{i}": "x" for i in range(60)}
    with caplog.at_level(logging.INFO):
        csrf = olga.csrf()
        form = olga.post("/actions/retry", {"csrf_token": csrf, "repo": "shop", "env": "qa", **many})
        header = olga.post("/actions/retry", {"repo": "shop", "env": "qa", **many}, headers={"X-CSRF-Token": csrf, **HX})
        stranger = Browser(olga.port)
        stranger.get("/login")
        login = stranger.post("/login", {"csrf_token": stranger.cookies["gitopsd_login"], "token": "x", **many})
    assert (form.status, header.status, login.status) == (413, 422, 413), (form.text[:300], header.text[:300], login.text[:300])
    assert refusal_ids(header) == ("invalid", "bad_field") and "more than 50 fields" in header.text
    assert all("fields" in reply.text for reply in (form, login))
    loud = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert loud == [], [r.getMessage() for r in loud]


def test_a_csrf_token_or_session_cookie_that_is_not_ascii_is_refused_like_a_wrong_one_not_a_500(site, caplog):
    """hmac.compare_digest raises TypeError for str with non-ASCII characters: a header, form field or cookie of one
    such character was a bare 'Internal Server Error' and a traceback."""
    _sandbox, olga = site
    with caplog.at_level(logging.INFO):
        olga.csrf()
        header = olga.post("/actions/retry", {"repo": "shop", "env": "qa"}, headers={"X-CSRF-Token": "ÿ", **HX})
        stranger = Browser(olga.port)
        stranger.get("/login")
        login = stranger.post("/login", {"csrf_token": "é", "token": "x"})
        forged = Browser(olga.port, cookies={**olga.cookies, "gitopsd_session": "e30.ÿ"})
        page = forged.get("/")
    assert (header.status, login.status, page.status) == (403, 403, 303), (header.text[:300], login.text[:300])
    assert "CSRF" in header.text and "stale" in login.text and page.header("location").startswith("/login")
    loud = [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]
    assert loud == [], [r.getMessage() for r in loud]


@needs_root
def test_a_release_candidate_whose_record_fails_leaves_no_tag_behind_and_can_be_created_again(short_tmp):
    """The tag rc/NAME was made before the store's row: when the row failed (the state folder's disk full) the tag
    stayed, and asking again was refused 'a release candidate by that name exists already' until someone deleted the
    tag by hand."""
    port = free_port()
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "staging": ["staging-1"]},
        env_options={"staging": {"approvals": {"required": 1, "approvers": ["olga"]}}},
        extra={"api": {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}},
        converged=True,
    )
    made = short_tmp / "state-made"
    shutil.copytree(box.state, made)
    with mounted(box.state, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        shutil.copytree(made, box.state, dirs_exist_ok=True)
        with Daemon(box) as daemon:
            web_up(daemon)
            daemon.wait_state("qa", "in-sync", box.head("qa"))
            served = DaemonApi(box, f"http://127.0.0.1:{port}")
            olga = served.token("olga-laptop", "approvals:write", owner="olga")
            filler = box.state / "filler"
            with contextlib.suppress(OSError), filler.open("ab") as out:
                while True:
                    out.write(b"x" * 4096)
                    out.flush()
            failed = served.rc_create(olga, **{"from": "qa", "to": "staging", "name": "r1"})
            tags = git(box.root, "-C", str(box.repo), "tag", "--list", "rc/*").stdout.split()
            filler.unlink()
            again = served.rc_create(olga, **{"from": "qa", "to": "staging", "name": "r1"})
    assert failed[0] == 500 and failed[1]["reason"] == "server_disk_full", failed
    assert tags == []
    assert again[0] == 201, again


def test_a_status_posted_after_the_state_database_was_replaced_is_not_called_a_permission_problem(short_tmp):
    """A daemon whose state.db was deleted or replaced records nothing more (StoreUnusable without an OS error under
    it); the API told the client 'permission denied: fix owner, mode or mount', which sends the operator the wrong way."""
    port = free_port()
    api = {"listen": f"127.0.0.1:{port}", "tokens_file": str(short_tmp / "tokens.yml")}
    box = Sandbox(short_tmp, {"qa": ["qa-1"]}, extra={"api": api}, converged=True)
    with Daemon(box) as daemon:
        web_up(daemon)
        daemon.wait_state("qa", "in-sync", box.head("qa"))
        served = DaemonApi(box, f"http://127.0.0.1:{port}")
        ci = served.token("ci", "statuses:write")
        head = box.head("main")
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            if (box.state / name).exists():
                (box.state / name).rename(box.state / f"moved-{name}")
        box.write("app.txt", "v2\n")
        box.commit("v2")
        box.push("main")  # the daemon looks at the repository, and at its store
        daemon.wait_for(lambda: "no deployment starts until it is restored" in daemon.log(), 60, "the lost store noticed")
        code, doc = served.call("POST", f"/api/v1/repos/shop/statuses/{head}", ci, {"state": "success", "context": "ci/x"})
    assert code == 500, doc
    one_line(doc, "internal", "server_files")
    assert "permission" not in doc["message"], doc


def test_the_status_of_a_repository_the_server_cannot_read_says_unavailable_as_the_daemons_rows_do(api):
    """The API's /status read the branches of a repository that is not there any more as missing ('branch qa does
    not exist'): `gitopsd status` and the daemon's rows say the repository is unavailable, and why."""
    sandbox = api.sandbox
    token = api.token("reader", "read")
    sandbox.repo.rename(sandbox.root / "moved.git")
    sandbox.repo.write_text("in the way\n")
    try:
        code, _h, rows = api.call("GET", "/api/v1/status", token)
    finally:
        sandbox.repo.unlink()
        (sandbox.root / "moved.git").rename(sandbox.repo)
    assert code == 200, rows
    assert [(r["env"], r["state"]) for r in rows] == [("qa", "unavailable")], rows
    assert rows[0]["reason"].startswith("no Git repository at"), rows


def test_the_pipeline_page_shows_a_repository_the_server_cannot_read_as_unavailable_not_as_missing_branches(site):
    sandbox, olga = site
    sandbox.repo.rename(sandbox.root / "moved.git")
    sandbox.repo.write_text("in the way\n")
    try:
        page = olga.get("/")
    finally:
        sandbox.repo.unlink()
        (sandbox.root / "moved.git").rename(sandbox.repo)
    assert page.status == 200
    assert 'class="lane st-unavailable" data-env="qa"' in page.text and "st-missing-branch" not in page.text, page.text
