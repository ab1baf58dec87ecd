"""The HTTP API as a Starlette app (docs/api.md): commit statuses in, status and history out, as JSON.

Kept thin: each route checks the token and the input, then calls the functions the command line
uses (api/statuses.py, status.all_status, the store). Sign-offs, release candidates and approvals go
to the daemon's HumanGates.handle, as the control socket's requests do, acting as the token's owner.
The blocking parts (git, SQLite) run in
Starlette's thread pool, so one slow request never holds up the others. This is the one module that
imports Starlette.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Awaitable, Callable
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..adapters.store import Store
from ..ci import provenance
from ..core.errors import (FORBIDDEN, INTERNAL, INVALID, MISSING, STATUS, UNAUTHENTICATED, UNAVAILABLE, UNSUPPORTED,
                           ConfigurationError, GitError, Refused, StoreError, error_body, refused_from)
from ..core.settings import Config, Repository
from ..services import changecontrol
from ..services.readmodels import deployment_json, rc_history, rc_view, release_marks   # as `history`, `rc list|show` --json
from ..services.readmodels import host_runs, preview_view, tree_named, where_view   # as `hosts ENV`, `where`, `preview` --json
from ..services.tokens import Token, TokenCheck
from . import breakglass, statuses
from .openapi import document

log = logging.getLogger("gitopsd.api")

MAX_LIMIT = 1000
NOTE_MAX = 1000

APPROVAL_KINDS = ("approve", "reject", "withdraw")

HumanGatesHandler = Callable[[str, dict[str, Any]], dict[str, Any]]


class ApiError(Exception):
    """An answer other than success: a refusal (its kind gives the status, core.errors.STATUS) and headers."""

    def __init__(self, refused: Refused, headers: dict[str, str] | None = None):
        super().__init__(str(refused))
        self.refused, self.status, self.body, self.headers = refused, refused.status, refused.body(), headers or {}


def _refuse(message: str, kind: str, reason: str | None = None, field: str | None = None) -> ApiError:
    """An ApiError of one refusal: its line, kind, stable reason id and the field it is about."""
    return ApiError(Refused(message, kind, reason, field))


def _unprocessable(field: str, message: str) -> ApiError:
    return _refuse(message, INVALID, "bad-field", field)


def create_app(config: Callable[[], Config], store: Store, tokens: TokenCheck,
               on_status: Callable[[str], None] = lambda _repo: None,
               human_gates: HumanGatesHandler | None = None,
               metrics: Callable[[], tuple[bytes, str]] | None = None) -> ASGIApp:
    """The API over the daemon's (current) config and store; `on_status(repo)` after each stored status;
    `human_gates(identity, request)` records sign-offs, release candidates and approvals (HumanGates.handle);
    `metrics()` the Prometheus text for /metrics (no token: it listens where the API does, loopback by default)."""

    def authenticate(request: Request) -> Token:
        token = tokens.authenticate(request.headers.get("authorization"))
        if token is None:   # the same answer for a missing, unknown or revoked token: nothing to learn from it
            raise ApiError(Refused("a valid API token is required (Authorization: Bearer <token>)", UNAUTHENTICATED,
                                   "token-required"), {"WWW-Authenticate": 'Bearer realm="gitopsd"'})
        request.scope["gitopsd.token"] = token.name
        return token

    def authorize(request: Request, scope: str) -> Token:
        token = authenticate(request)
        if scope not in token.scopes:
            raise _refuse(f"this token lacks the scope {scope}", FORBIDDEN, "scope-missing")
        return token

    def status_reader(request: Request) -> tuple[Token, Repository]:
        """The token and repository of a read of statuses: `read`, or as GitHub's `repo:status`, a token that may
        report statuses for the repository (a CI job reads back the combined status it reported to)."""
        token = authenticate(request)
        repo = repository(request.path_params["repo"])
        if "read" not in token.scopes and not token.may_report(repo.name):
            raise _refuse(f"this token lacks the scope read (or statuses:write for {repo.name})", FORBIDDEN, "scope-missing")
        return token, repo

    def owners() -> dict[str, str]:
        """Token name -> owner, for each status's `creator` (a revoked token's statuses show its name)."""
        return {t.name: t.identity for t in tokens.tokens()}

    def repository(name: str) -> Repository:
        repo = config().repository(name)
        if repo is None:
            raise _refuse(f"no repository named {name!r}", MISSING, "no-repository")
        return repo

    async def blocking(fn: Callable[..., Any], *args: Any) -> Any:
        """Run git and SQLite work off the event loop; their failures as answers, not crashes."""
        try:
            return await run_in_threadpool(fn, *args)
        except statuses.UnknownCommit as exc:
            raise _refuse(str(exc), MISSING, "no-commit") from exc
        except (StoreError, GitError, OSError) as exc:
            log.warning("API request failed: %s", exc)
            raise _refuse("the state database or the repository is unavailable; try again", UNAVAILABLE) from exc

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        authorize(request, "read")
        return JSONResponse(document())

    async def post_status(request: Request) -> Response:
        token = authorize(request, "statuses:write")
        repo = repository(request.path_params["repo"])
        try:
            data = _json(await _body(request))
            report = statuses.parse_report(data)
        except statuses.ReservedContext as exc:
            raise _refuse(str(exc), FORBIDDEN, "reserved-context") from exc
        refusal = token.refusal(repo.name, report.context)
        if refusal is not None:
            raise _refuse(refusal, FORBIDDEN, "context-not-allowed")
        shown_as = owners()

        def store_it() -> dict[str, Any]:
            commit, tree = statuses.resolve_commit(repo.path, request.path_params["commit"])
            if isinstance(data, dict) and data.get("provenance") is not None:   # signed by external CI (docs/ci.md)
                cfg = config()
                try:
                    path = provenance.accept_upload(cfg.state_dir, cfg.artifacts_dir, repo.ci.provenance_keys,
                                                    repo.name, commit, tree, report.context, data["provenance"])
                except (provenance.InvalidProvenance, ConfigurationError) as exc:
                    raise _refuse(f"provenance: {exc}", INVALID, "bad-provenance", "provenance") from exc
                for name, sha256 in provenance.subjects(data["provenance"]):   # what the hook's require_provenance reads
                    store.record_attestation(repo=repo.name, tree=tree, name=f"external-{report.context}:{name}",
                                             sha256=sha256, signed_sha256=sha256, statement=str(path), now=time.time())
            return statuses.record(store, repo.name, commit, tree, report, reporter=token.name, owners=shown_as)
        stored = await blocking(store_it)
        try:
            on_status(repo.name)
        except Exception:   # the status is stored; auto-promotion also looks on the next sweep
            log.exception("could not tell the daemon about a new status", extra={"repo": repo.name})
        return JSONResponse(stored, status_code=201)

    async def combined_status(request: Request) -> Response:
        _token, repo = status_reader(request)
        shown_as = owners()

        def read() -> dict[str, Any]:
            commit, tree = statuses.resolve_commit(repo.path, request.path_params["commit"])
            return statuses.combined(store, repo.name, commit, tree, owners=shown_as)
        return JSONResponse(await blocking(read))

    async def commit_statuses(request: Request) -> Response:
        _token, repo = status_reader(request)
        limit = _limit(request, 100, "per_page")
        shown_as = owners()

        def read() -> list[dict[str, Any]]:
            commit, _tree = statuses.resolve_commit(repo.path, request.path_params["commit"])
            return [statuses.status_json(s, shown_as) for s in store.status_history(repo.name, commit, limit)]
        return JSONResponse(await blocking(read))

    async def github_repository(request: Request) -> Response:
        """GitHub's repository object, the fields its clients read (PyGithub's non-lazy get_repo)."""
        _token, repo = status_reader(request)
        owner = request.path_params["owner"]
        return JSONResponse(statuses.repository_json(repo.name, owner, _default_branch(repo),
                                                     str(request.url.replace(query=""))))

    async def github_commit(request: Request) -> Response:
        """GitHub's commit object, the fields its clients read before reporting (PyGithub's non-lazy get_commit)."""
        _token, repo = status_reader(request)
        commit, tree = await blocking(statuses.resolve_commit, repo.path, request.path_params["commit"])
        url = str(request.url.replace(query=""))
        return JSONResponse({"sha": commit, "url": f"{url.rpartition('/')[0]}/{commit}", "commit": {"tree": {"sha": tree}}})

    async def status(request: Request) -> Response:
        authorize(request, "read")
        name = request.query_params.get("repo")
        if name is not None:
            repository(name)
        from ..services.status import all_status   # what `gitopsd status --json` shows, from the same function

        def read() -> list[dict[str, Any]]:
            return [row.as_json() for row in all_status(config(), store, name)]
        return JSONResponse(await blocking(read))

    async def history(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        env = repo.environment(request.path_params["env"])
        if env is None:
            raise _refuse(f"repository {repo.name} has no environment {request.path_params['env']!r}", MISSING, "no-environment")
        limit = _limit(request, 20)

        def read() -> list[dict[str, Any]]:
            deployments = store.history(repo=repo.name, env=env.name, limit=limit)
            marks = release_marks(config(), store, deployments)
            return [deployment_json(d, marks.get(d.id)) for d in deployments]
        return JSONResponse(await blocking(read))

    async def ask_gates(token: Token, ask: dict[str, Any]) -> Response:
        """Hand one human-gate request to the daemon as the token's owner; 201, or the refusal's status."""
        if human_gates is None:
            raise _refuse("sign-offs and approvals are recorded by the daemon, which serves them on "
                          "its own API; this server cannot take them", UNAVAILABLE, "no-daemon")
        answer = await blocking(human_gates, token.identity, ask)
        if not answer.get("ok"):
            raise ApiError(refused_from(answer))
        return JSONResponse({"message": answer.get("message", "done"), "identity": token.identity}, status_code=201)

    async def post_signoff(request: Request) -> Response:
        token = authorize(request, "approvals:write")
        repo = repository(request.path_params["repo"])
        env = repo.environment(request.path_params["env"])
        if env is None:
            raise _refuse(f"repository {repo.name} has no environment {request.path_params['env']!r}", MISSING, "no-environment")
        body = _reason_as_note(await _gate_fields(request, {"note": str, "reason": str, "reject": bool, "commit": str}))
        if "note" not in body:
            raise _refused("note", "is required")
        return await ask_gates(token, {"op": "signoff", "repo": repo.name, "env": env.name, "note": body["note"],
                                         "reject": bool(body.get("reject")), "commit": body.get("commit")})

    async def post_rc(request: Request) -> Response:
        token = authorize(request, "approvals:write")
        repo = repository(request.path_params["repo"])
        body = await _gate_fields(request, {"from": str, "to": str, "name": str})
        return await ask_gates(token, {"op": "rc-create", "repo": repo.name, "from": body.get("from"),
                                         "to": body.get("to"), "name": body.get("name")})

    async def post_approval(request: Request) -> Response:
        token = authorize(request, "approvals:write")
        repo = repository(request.path_params["repo"])
        body = await _gate_fields(request, {"kind": str, "note": str, "reason": str}, required=("kind",))
        if body["kind"] not in APPROVAL_KINDS:
            raise _refused("kind", f"must be one of {', '.join(APPROVAL_KINDS)}, not {body['kind'][:20]!r}")
        body = _reason_as_note(body)
        if body["kind"] != "withdraw" and "note" not in body:
            raise _refused("note", "is required: say why (it is recorded with the token owner's name)")
        return await ask_gates(token, {"op": body["kind"], "repo": repo.name, "rc": request.path_params["name"],
                                         "note": body.get("note")})

    async def lock_fields(request: Request) -> dict[str, Any]:
        body = await _gate_fields(request, {"repo": str, "env": str, "all": bool, "reason": str, "until": str, "for": str})
        if body.get("repo") is not None:
            repository(body["repo"])
        return body

    async def post_lock(request: Request) -> Response:
        token = authorize(request, "deployments:write")   # as promotion: who may deploy may stop deploying
        return await ask_gates(token, {"op": "lock", **await lock_fields(request)})

    async def post_unlock(request: Request) -> Response:
        token = authorize(request, "deployments:write")
        body = await lock_fields(request)
        for ignored in ("until", "for"):
            body.pop(ignored, None)
        return await ask_gates(token, {"op": "unlock", **body})

    async def get_locks(request: Request) -> Response:
        authorize(request, "read")

        def read() -> dict[str, Any]:
            now = time.time()
            return {"locks": [lock.as_json() for lock in store.all_locks(now)],
                    "break_glass": store.break_glass_requests(now)}
        return JSONResponse(await blocking(read))

    async def post_alerts(request: Request) -> Response:
        """Alertmanager's webhook: freeze what freeze_on names while an alert fires (422: not its payload)."""
        token = authorize(request, "alerts:write")
        try:
            payload = _decode(await _body(request), "send Alertmanager's webhook notification (JSON)")
        except ValueError as exc:
            raise _refused("body", str(exc)) from exc
        try:   # judged here too: not Alertmanager's payload is a 422 even while the daemon is away
            changecontrol.parse_alerts(payload)
        except Refused as exc:
            raise _refused("body", str(exc)) from exc
        response = await ask_gates(token, {"op": "alerts", "payload": payload})
        if response.status_code == 201:
            response.status_code = 200   # nothing was created: what was frozen or lifted
        return response

    async def post_rejection(request: Request) -> Response:
        token = authorize(request, "approvals:write")
        repo = repository(request.path_params["repo"])
        body = await _gate_fields(request, {"kind": str, "reason": str, "env": str}, required=("kind", "reason"))
        if body["kind"] not in ("reject", "unreject"):
            raise _refused("kind", f"must be reject or unreject, not {body['kind'][:20]!r}")
        return await ask_gates(token, {"op": f"tree-{body['kind']}", "repo": repo.name, "tree": request.path_params["tree"],
                                         "env": body.get("env"), "reason": body["reason"]})

    async def env_hosts(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        env = repo.environment(request.path_params["env"])
        if env is None:
            raise _refuse(f"repository {repo.name} has no environment {request.path_params['env']!r}", MISSING, "no-environment")
        return JSONResponse(await blocking(lambda: host_runs(store, repo.name, env.name)))

    async def where(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        what = request.query_params.get("of") or ""

        def read() -> dict[str, Any] | None:
            tree = tree_named(store, repo, what)
            return None if tree is None else {"tree": tree, "hosts": where_view(store, repo, tree)}
        found = await blocking(read)
        if found is None:
            raise _refuse(f"no commit, tree or release candidate {what[:80]!r} in {repo.name}: "
                          "give ?of=COMMIT, TREE or rc/NAME", MISSING, "no-such-thing")
        return JSONResponse(found)

    async def preview_show(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        ident = request.path_params["name"]
        rows = await blocking(lambda: store.previews(repo.name, preview_id=int(ident), limit=1)) if ident.isdigit() else []
        if not rows:
            raise _refuse(f"no preview {ident[:20]!r} in {repo.name}", MISSING, "no-preview")
        return JSONResponse(await blocking(lambda: preview_view(store, rows[0])))

    async def rc_list(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        limit = _limit(request, 20)

        def read() -> list[dict[str, Any]]:
            return [rc_view(repo, store, rc) for rc in store.rcs(repo.name, limit=limit)]
        return JSONResponse(await blocking(read))

    async def rc_show(request: Request) -> Response:
        authorize(request, "read")
        repo = repository(request.path_params["repo"])
        name = request.path_params["name"].removeprefix("rc/")

        def read() -> dict[str, Any] | None:
            rc = store.rc(repo.name, name)
            if rc is None:
                return None
            return {**rc_view(repo, store, rc), "history": rc_history(store, repo.name, name)}
        view = await blocking(read)
        if view is None:
            raise _refuse(f"no release candidate rc/{name} in {repo.name}", MISSING, "no-rc")
        return JSONResponse(view)

    async def prometheus(_request: Request) -> Response:
        if metrics is None:
            raise _refuse("this server has no metrics", MISSING, "no-metrics")
        body, content_type = await blocking(metrics)
        return Response(body, media_type=content_type)

    async def api_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, statuses.InvalidStatus)
        return JSONResponse(error_body(exc.message, INVALID, "bad-field", exc.field), status_code=STATUS[INVALID])

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(error_body("no such API endpoint (see /api/v1/openapi.json)", MISSING, "no-endpoint"),
                            status_code=STATUS[MISSING])

    async def not_allowed(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(error_body("method not allowed here (see /api/v1/openapi.json)", UNSUPPORTED),
                            status_code=STATUS[UNSUPPORTED])

    async def internal(_request: Request, _exc: Exception) -> Response:
        return JSONResponse(error_body("internal error; the daemon's log says more", INTERNAL), status_code=STATUS[INTERNAL])

    v1 = "/api/v1"
    app = Starlette(routes=[
        Route(f"{v1}/health", health, methods=["GET"]),
        Route(f"{v1}/openapi.json", openapi, methods=["GET"]),
        Route(f"{v1}/status", status, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/statuses/{{commit}}", post_status, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/commits/{{commit}}/status", combined_status, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/commits/{{commit}}/statuses", commit_statuses, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/history", history, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/signoffs", post_signoff, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/environments/{{env}}/hosts", env_hosts, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/where", where, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/previews/{{name}}", preview_show, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/rcs", rc_list, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/rcs", post_rc, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/rcs/{{name}}", rc_show, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/rcs/{{name}}/approvals", post_approval, methods=["POST"]),
        Route(f"{v1}/locks", get_locks, methods=["GET"]),
        Route(f"{v1}/locks", post_lock, methods=["POST"]),
        Route(f"{v1}/locks/lift", post_unlock, methods=["POST"]),
        Route(f"{v1}/alerts", post_alerts, methods=["POST"]),
        *breakglass.routes(v1, store, human_gates, authorize=authorize, blocking=blocking, fields=_gate_fields,
                           repository=repository, error=ApiError),
        Route(f"{v1}/repos/{{repo}}/trees/{{tree}}/rejections", post_rejection, methods=["POST"]),
        # GitHub's paths, for clients built for GitHub (PyGithub, Buildbot's GitHubStatusPush): any owner, one
        # namespace; after gitopsd's own, so /repos/shop/rcs stays the release candidates of shop. The GET of
        # .../statuses/{commit} is GitHub's other name for a commit's list of statuses.
        Route(f"{v1}/repos/{{repo}}/statuses/{{commit}}", commit_statuses, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}", github_repository, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/statuses/{{commit}}", post_status, methods=["POST"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/statuses/{{commit}}", commit_statuses, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}", github_commit, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}/status", combined_status, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}/statuses", commit_statuses, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ], exception_handlers={ApiError: api_error, statuses.InvalidStatus: invalid, 404: not_found, 405: not_allowed,
                           500: internal})
    return Guard(app)


def create_standby_app(metrics: Callable[[], tuple[bytes, str]], leader: Callable[[], str]) -> ASGIApp:
    """A standby's HTTP answers (docs/install.md, "Standby daemon"): its /metrics (role and process only: the leader's
    scrape has the deployments), and 503 for the rest, naming the leader, so a load balancer's health check on
    /api/v1/health sends requests to the leader."""

    async def prometheus(_request: Request) -> Response:
        body, content_type = await run_in_threadpool(metrics)
        return Response(body, media_type=content_type)

    async def elsewhere(_request: Request) -> Response:
        return JSONResponse({**error_body(f"this gitopsd is the standby; {leader()}", UNAVAILABLE, "standby"),
                             "role": "standby"}, status_code=STATUS[UNAVAILABLE], headers={"Retry-After": "5"})

    return Starlette(routes=[Route("/metrics", prometheus, methods=["GET"]),
                             Route("/{path:path}", elsewhere, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])])


async def _body(request: Request) -> bytes:
    """The request body, refused past MAX_BODY by its Content-Length and by the bytes that really came."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 9 or int(length) > statuses.MAX_BODY):
        raise _unprocessable("body", f"is {length} bytes; at most {statuses.MAX_BODY} are taken")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > statuses.MAX_BODY:
            raise _unprocessable("body", f"is over {statuses.MAX_BODY} bytes; at most that is taken")
        chunks.append(chunk)
    return b"".join(chunks)


class _NotJson(ValueError):
    """A constant JSON does not allow (NaN, Infinity): told apart by its type, not its words."""


def _decode(raw: bytes, send: str) -> Any:
    """Given a request body, return its JSON value. Raise ValueError with the one line that says what is wrong
    (not UTF-8, not JSON, NaN, nested too deep, a number too long to read, a lone surrogate) and what to send."""
    def constant(name: str) -> Any:
        raise _NotJson(f"has {name}, which JSON does not allow; {send}")
    try:
        data = json.loads(raw, parse_constant=constant)
    except RecursionError:
        raise ValueError(f"is nested too deeply to read; {send}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not JSON ({exc.__class__.__name__}); {send}") from None
    except _NotJson:   # NaN, from constant(): its own line
        raise
    except ValueError:   # int()'s limit on digits
        raise ValueError(f"has a number too long to read; {send}") from None
    try:   # a lone surrogate ("\ud800") decodes, and fails later where the text is stored or sent back
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"has a lone surrogate escape (\\ud800 to \\udfff) in a string; {send}") from None
    return data


def _json(body: bytes) -> Any:
    try:
        return _decode(body, "send a JSON object with a state")
    except ValueError as exc:
        raise _unprocessable("body", str(exc)) from exc


def _refused(field: str, message: str) -> ApiError:
    """422 for a human-gate request's bad field: the `message` line names it (and `field` too, as elsewhere)."""
    return _refuse(f"{field} {message}", INVALID, "bad-field", field)


async def _gate_fields(request: Request, types: dict[str, type], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A human-gate request's JSON body (an empty one is {}) with only known fields of the right type. Raise a 422."""
    try:
        raw = await _body(request)
    except ApiError as exc:
        raise _refused("body", str(exc)) from exc
    try:
        body = _decode(raw, "send a JSON object") if raw.strip() else {}
    except ValueError as exc:
        raise _refused("body", str(exc)) from exc
    if not isinstance(body, dict):
        raise _refused("body", f"must be a JSON object with {', '.join(types)}")
    unknown = sorted(set(body) - set(types))
    if unknown:
        raise _refused(str(unknown[0])[:40], f"is not a field here (known: {', '.join(types)})")
    fields = {k: v for k, v in body.items() if v is not None}
    for key, kind in types.items():
        if key not in fields:
            if key in required:
                raise _refused(key, "is required")
            continue
        if not isinstance(fields[key], kind):
            raise _refused(key, f"must be {'true or false' if kind is bool else 'a string'}")
        if kind is str and (len(fields[key]) > NOTE_MAX or any(ord(c) < 32 and c != "\t" for c in fields[key])):
            raise _refused(key, f"must be one line of at most {NOTE_MAX} characters")
    return fields


def _reason_as_note(body: dict[str, Any]) -> dict[str, Any]:
    """`reason` is another name for `note` (every human act carries one: locks and overrides call it reason)."""
    if "note" in body and "reason" in body:
        raise _refused("reason", "is another name for note: give one of them")
    if "reason" in body:
        body["note"] = body.pop("reason")
    return body


def _limit(request: Request, default: int, alias: str = "limit") -> int:
    """`?limit=` (or GitHub's name for it, `alias`, e.g. per_page), 1 to MAX_LIMIT."""
    field = alias if alias in request.query_params else "limit"
    raw = request.query_params.get(field, str(default))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_LIMIT:
        raise _unprocessable(field, f"must be a whole number from 1 to {MAX_LIMIT}, not {raw[:20]!r}")
    return int(raw)


def _default_branch(repo: Repository) -> str:
    """The branch the bare repository's HEAD names (main unless someone changed it)."""
    try:
        head = (repo.path / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "main"
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else "main"


class Guard:
    """Outermost: one DEBUG line per request (method, path, status, time, token), and no exception past it;
    a path that is not printable text once percent-decoded (%FF, %00) is a 422 before any route sees it.

    Starlette answers a bug with a 500 and raises it again for the server to log; the daemon's log
    gets one line here instead of a traceback from the server's logger (the traceback at DEBUG).
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        answered = 0
        garbled = _garbled(scope)
        if garbled:
            await _send_json(send, STATUS[INVALID], error_body("is not printable UTF-8 text once percent-decoded; names "
                                                               "and values in URLs are printable text", INVALID,
                                                               "bad-field", garbled))
            return

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            await send(message)
        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            log.error("API %s %s failed: %s: %s", scope["method"], scope["path"], type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            if not answered:
                await _send_json(send, STATUS[INTERNAL], error_body("internal error; the daemon's log says more", INTERNAL))
                answered = 500
        finally:
            log.debug("API %s %s -> %d in %.1f ms%s", scope["method"], scope["path"], answered,
                      (time.perf_counter() - t0) * 1000,
                      f" (token {scope['gitopsd.token']})" if scope.get("gitopsd.token") else "")


def _garbled(scope: Scope) -> str | None:
    """"path" or "query" if that part of the URL is not printable UTF-8 text once percent-decoded, else None."""
    if "\ufffd" in scope["path"] or not scope["path"].isprintable():   # the server decodes bytes that are not UTF-8 as U+FFFD
        return "path"
    try:
        query = unquote_to_bytes(bytes(scope.get("query_string", b""))).decode("utf-8")
    except UnicodeDecodeError:
        return "query"
    return None if query.isprintable() else "query"


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
