"""The dashboard's actions: promote, roll back, retry, sign off, approve/reject/withdraw, create a release candidate,
run CI again.

Each is a POST to /actions/NAME with form fields, runs the function the command line runs
(operations.py for promote, rollback and retry; the daemon's control request handler for the human
gates and CI reruns, as `gitopsd approve` and `gitopsd ci rerun` reach it) as the signed-in user, and answers with the same lines the command line prints, refusals
included. The role the user holds in the environment (roles.role) is checked first; the rules of
the action itself (override_by, signoff_by, approvers) still apply on top: a role never widens them.
The CSRF token was checked by auth's middleware before any of this runs.

With `HX-Request` the answer is an HTML fragment (a `result` block, status 200 when done, else the
refusal's: 403, 404, 409, 422); without, a redirect back to the page with the lines as a flash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from html import escape
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..adapters.store import Store
from ..core.errors import (
    CONFLICT,
    FORBIDDEN,
    INVALID,
    MISSING,
    STATUS,
    UNAUTHENTICATED,
    UNAVAILABLE,
    GitError,
    Refused,
    StoreError,
    UserError,
    error_body,
    refused_from,
)
from ..core.settings import Config, Environment, Repository
from ..services import failures, operations
from . import auth, breakglass, roles

log = logging.getLogger("gitopsd.web")

APPROVAL_KINDS = ("approve", "reject", "withdraw")
FIELD_MAX = 1000
YES = ("on", "true", "1", "yes")

HumanGatesHandler = Callable[[str, dict[str, Any]], dict[str, Any]]


class Answer(Exception):
    """An action's end other than success: its refusal kind and reason id (the API's, core/errors.py: the status is
    STATUS's, `body` the API's error body) and the lines to show."""

    def __init__(self, kind: str, reason: str, *lines: str):
        super().__init__(lines[0] if lines else "")
        self.status, self.lines, self.body = STATUS[kind], list(lines), error_body(lines[0] if lines else "", kind, reason)


def result_html(ok: bool, lines: list[str], body: dict[str, str | None] | None = None) -> str:
    """The `result` fragment htmx puts in the page: each line escaped, as the command line would print it; a refusal's
    kind and reason id (its `body`, the API's) in data-kind and data-reason."""
    kind = "result-ok" if ok else "result-refused"
    ids = f' data-kind="{escape(str(body["kind"]))}" data-reason="{escape(str(body["reason"]))}"' if body else ""
    return (
        f'<div class="result {kind}" role="{"status" if ok else "alert"}"{ids}>'
        + "".join(f'<p class="result-line">{escape(line)}</p>' for line in lines)
        + "</div>"
    )


def routes(  # noqa: C901 (a route table: each nested route counts toward its maker)
    config: Callable[[], Config],
    store: Store,
    *,
    human_gates: HumanGatesHandler | None = None,
    render: Any = None,
) -> list[Route]:
    """POST /actions/{promote,rollback,retry,signoff,approve,reject,withdraw,rc-create,ci-rerun} over the daemon's config and
    store (read-only: writes open the store themselves, as the command line does); `human_gates` is the daemon's
    HumanGates.handle. (`render` is not needed: answers are fragments or redirects.)"""

    def repository(fields: dict[str, str]) -> Repository:
        repo = config().repository(fields.get("repo", ""))
        if repo is None:
            raise Answer(MISSING, "repo_not_found", f"no repository named {fields.get('repo', '')[:100]!r}")
        return repo

    def environment(repo: Repository, name: str | None) -> Environment:
        env = repo.environment(name or "")
        if env is None:
            raise Answer(
                MISSING,
                "env_not_found",
                f"repository {repo.name} has no environment {(name or '')[:100]!r} "
                f"(it has: {', '.join(e.name for e in repo.environments)})",
            )
        return env

    def need(user: roles.WebUser, repo: Repository, env: Environment, role: str, doing: str, scope: str | None = None) -> None:
        """Refuse (403) unless the user holds `role` in that environment and, signed in with a token, the scope that
        writes it (the role's, or `scope`): the dashboard allows a token no more than the API does."""
        scope = scope or roles.ROLE_SCOPE.get(role)
        if not roles.scoped(user, scope):
            raise Answer(
                FORBIDDEN,
                "token_scope",
                f"{user.name} may not {doing} with the token {user.token}: it lacks the scope {scope} "
                f"(sign in with a token made with `gitopsd token create NAME --scope read --scope {scope}`)",
            )
        if not roles.allows(user, repo.name, env.name, role):
            have = roles.role(user, repo.name, env.name)
            raise Answer(
                FORBIDDEN,
                "role_required",
                f"{user.name} may not {doing} in {repo.name}/{env.name}: that needs the {role} role, and "
                f"{user.name} {'is a ' + have if have else 'has no role'} there "
                f"(web.roles in {config().source})",
            )

    def announcer(repo: Repository, identity: str) -> operations.Announce:
        """Tell the daemon, as the command line's nudge does, naming the web user."""
        from ..gate.nudge import Nudge, send

        return lambda trigger, commits, reason: send(
            str(config().nudge_socket),
            Nudge(repo=str(repo.path), trigger=trigger, actor=identity, commits=commits, reason=reason),
        )

    def writable() -> Any:
        return Store.of(config())

    def outcome(done: operations.Outcome) -> list[str]:
        if not done.ok:
            raise Answer(CONFLICT, "policy_refused", *done.lines)
        return list(done.lines)

    def ask_gates(identity: str, request: dict[str, Any]) -> list[str]:
        if human_gates is None:
            raise Answer(
                UNAVAILABLE, "no_daemon", "sign-offs and approvals are recorded by the daemon; this server cannot take them"
            )
        answer = human_gates(identity, request)
        if not answer.get("ok"):
            refused = refused_from(answer)
            raise Answer(refused.kind, refused.reason, str(refused))
        return [str(answer.get("message", "done"))]

    # -- each action: (user, fields) -> lines, raising Answer -----------------------------------------------------
    def promote(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        dst = environment(repo, f.get("env"))
        need(user, repo, dst, "deployer", "promote")
        source = repo.environment_for_branch(dst.promote_from)
        src = f.get("from") or (source.name if source is not None else dst.promote_from)
        return outcome(
            operations.promote(
                config(),
                lambda: nullcontext(store),
                repo,
                src,
                dst.name,
                user.name,
                override=f.get("override") or None,
                announce=announcer(repo, user.name),
            )
        )

    def rollback(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        env = environment(repo, f.get("env"))
        need(user, repo, env, "deployer", "roll back")
        to = None
        if f.get("to"):
            need(user, repo, env, "admin", "roll back to a chosen deployment")
            if not (f["to"].isascii() and f["to"].isdigit() and len(f["to"]) <= 18):  # '²' is a digit to isdigit
                raise Answer(INVALID, "bad_field", f"to must be a deployment number from the history, not {f['to'][:20]!r}")
            to = int(f["to"])
        return outcome(
            operations.rollback(
                (lambda: nullcontext(store)) if to is None else writable,
                repo,
                env.name,
                user.name,
                to=to,
                announce=announcer(repo, user.name),
            )
        )

    def retry(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        env = environment(repo, f.get("env"))
        need(user, repo, env, "deployer", "retry")
        return outcome(
            operations.retry(
                config(),
                writable,
                repo,
                env.name,
                user.name,
                force=f.get("force") in YES,
                reason=f.get("reason") or None,
                announce=announcer(repo, user.name),
            )
        )

    def signoff(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        env = environment(repo, f.get("env"))
        need(user, repo, env, "viewer", "sign off", "approvals:write")  # who may sign off is signoff_by's: the gates check it
        return ask_gates(
            user.name,
            {
                "op": "signoff",
                "repo": repo.name,
                "env": env.name,
                "note": f.get("note"),
                "reject": f.get("reject") in YES,
                "commit": f.get("commit") or None,
            },
        )

    def approval(user: roles.WebUser, f: dict[str, str], kind: str) -> list[str]:
        repo = repository(f)
        name = f.get("rc", "").removeprefix("rc/")
        rc = store.rc(repo.name, name)
        if rc is None:
            raise Answer(MISSING, "rc_not_found", f"no release candidate rc/{name[:100]} in {repo.name} (see gitopsd rc list)")
        target = environment(repo, rc.target_env)
        need(user, repo, target, "approver", kind)  # and the approvers: list, which the gates check
        return ask_gates(user.name, {"op": kind, "repo": repo.name, "rc": name, "note": f.get("note")})

    def rc_create(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        gated = [e for e in repo.environments if e.approvals is not None]
        target = environment(repo, f["to"]) if f.get("to") else (gated[0] if gated else repo.environments[-1])
        need(user, repo, target, "deployer", "create a release candidate", "approvals:write")
        return ask_gates(
            user.name,
            {
                "op": "rc-create",
                "repo": repo.name,
                "from": f.get("from") or None,
                "to": f.get("to") or None,
                "name": f.get("name") or None,
            },
        )

    def ci_rerun(user: roles.WebUser, f: dict[str, str]) -> list[str]:
        repo = repository(f)
        if not repo.environments:
            raise Answer(MISSING, "env_not_found", f"repository {repo.name} has no environments")
        # Running CI again feeds the first promotion: the deployer role there, as for promoting into it.
        need(user, repo, repo.environments[0], "deployer", "run CI again")
        return ask_gates(user.name, {"op": "ci-rerun", "repo": repo.name, "head": f.get("head", "")})

    def lock(user: roles.WebUser, f: dict[str, str], op: str) -> list[str]:
        repo = repository(f)
        env = environment(repo, f.get("env"))
        need(user, repo, env, "deployer", op)  # as promotion: who may deploy may stop deploying
        return ask_gates(
            user.name,
            {
                "op": op,
                "repo": repo.name,
                "env": env.name,
                "reason": f.get("reason") or None,
                **({"for": f.get("for") or None, "until": f.get("until") or None} if op == "lock" else {}),
            },
        )

    actions: dict[str, Callable[[roles.WebUser, dict[str, str]], list[str]]] = {
        "promote": promote,
        "rollback": rollback,
        "retry": retry,
        "signoff": signoff,
        "rc-create": rc_create,
        "ci-rerun": ci_rerun,
        "lock": lambda u, f: lock(u, f, "lock"),
        "unlock": lambda u, f: lock(u, f, "unlock"),
        "approve": lambda u, f: approval(u, f, f.get("kind") or "approve"),
        "reject": lambda u, f: approval(u, f, "reject"),
        "withdraw": lambda u, f: approval(u, f, "withdraw"),
    }
    actions.update(breakglass.actions(store, ask_gates, repository, environment, need))  # override, override-confirm

    def run(action: str, user: roles.WebUser, fields: dict[str, str]) -> list[str]:
        if fields.get("kind") and fields["kind"] not in APPROVAL_KINDS:
            raise Answer(INVALID, "bad_field", f"kind must be one of {', '.join(APPROVAL_KINDS)}, not {fields['kind'][:20]!r}")
        try:
            return actions[action](user, fields)
        except Refused as exc:
            raise Answer(exc.kind, exc.reason, str(exc)) from exc
        except UserError as exc:
            raise Answer(CONFLICT, "refused", str(exc)) from exc
        except (StoreError, GitError, OSError) as exc:
            refused = failures.server_failure(exc, log, f"web action {action} by {user.name}")
            raise Answer(refused.kind, refused.reason, str(refused)) from exc

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        user = auth.current_user(request)
        body, fields = None, {}
        try:
            try:
                form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=auth.FORM_FIELDS)
            except ValueError as exc:  # parse_qs's answer to more fields than max_num_fields
                raise Answer(INVALID, "bad_field", f"the form has more than {auth.FORM_FIELDS} fields") from exc
            fields = {k: v[0][:FIELD_MAX] for k, v in form.items()}
            if action not in actions:
                raise Answer(MISSING, "no_endpoint", f"no action {action[:40]!r} (there are: {', '.join(actions)})")
            if user is None:  # the middleware lets nobody here unsigned: kept in case it is mounted without it
                raise Answer(UNAUTHENTICATED, "token_required", "sign in first")
            ok, status, lines = True, 200, await run_in_threadpool(run, action, user, fields)
            log.info("web: %s by %s: %s", action, user.name, lines[0] if lines else "done")
        except Answer as exc:
            ok, status, lines, body = False, exc.status, exc.lines, exc.body
            who = user.name if user else "nobody"
            log.info("web: %s by %s refused (%d): %s", action, who, exc.status, exc.lines[0] if exc.lines else "")
        if request.headers.get("hx-request") == "true":
            return HTMLResponse(result_html(ok, lines, body), status_code=status, headers=auth.HEADERS)
        response = RedirectResponse(back(request, fields), status_code=303)
        response.headers.append("set-cookie", auth.flash_cookie(request, ok, lines))
        return response

    return [Route("/actions/{action}", act, methods=["POST"])]


def back(request: Request, fields: dict[str, str]) -> str:
    """Where a form without htmx goes after acting: its `next` field, else the page it was on (same site), else /."""
    wanted = fields.get("next", "")
    if wanted.startswith("/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc and referer.netloc == request.headers.get("host") and referer.path.startswith("/"):
        return referer.path + (f"?{referer.query}" if referer.query else "")
    return "/"
