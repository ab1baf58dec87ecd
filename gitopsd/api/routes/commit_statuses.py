"""Commit statuses in and out (docs/api.md), on gitopsd's paths and on GitHub's, for clients built for GitHub."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...adapters.gitrepo import GitRepository
from ...ci import provenance
from ...core.errors import FORBIDDEN, INVALID, ConfigurationError
from ...core.settings import Repository
from ...services.tokens import Token
from .. import inputs, statuses
from ..context import Context
from ..inputs import refuse

log = logging.getLogger("gitopsd.api")


def routes(api: Context, v1: str) -> tuple[list[Route], list[Route]]:
    """(gitopsd's own routes, GitHub's): GitHub's go after every other route, so /repos/shop/rcs stays the
    release candidates of shop and is not GitHub's repository `rcs` of owner `shop`."""
    store = api.store

    async def post_status(request: Request) -> Response:
        token = api.authorize(request, "statuses:write")
        repo = api.repository(request.path_params["repo"])
        try:
            data = inputs.status_json(await inputs.body(request))
            report = statuses.parse_report(data)
        except statuses.ReservedContext as exc:
            raise refuse(str(exc), FORBIDDEN, "reserved_context") from exc
        _may_report(token, repo.name, report.context)
        shown_as = api.owners()

        def store_it() -> dict[str, Any]:
            given = request.path_params["commit"]
            commit, tree = statuses.resolve_commit(repo.path, given, GitRepository(repo.path).commit_tree)
            if not (isinstance(data, dict) and data.get("provenance") is not None):
                return statuses.record(store, repo.name, commit, tree, report, reporter=token.name, owners=shown_as)
            cfg = api.config()  # signed by external CI (docs/ci.md): the statement stays only if the status is stored
            try:
                upload = provenance.accept_upload(
                    cfg.state_dir,
                    cfg.artifacts_dir,
                    repo.ci.provenance_keys,
                    repo.name,
                    commit,
                    tree,
                    report.context,
                    data["provenance"],
                )
            except (provenance.InvalidProvenance, ConfigurationError) as exc:
                raise refuse(f"provenance: {exc}", INVALID, "bad_provenance", "provenance") from exc
            with upload as path:
                signed = tuple(  # what the hook's require_provenance reads, recorded with the status
                    (f"external-{report.context}:{name}", sha256, sha256, str(path))
                    for name, sha256 in provenance.subjects(data["provenance"])
                )
                return statuses.record(
                    store, repo.name, commit, tree, report, reporter=token.name, owners=shown_as, attestations=signed
                )

        stored = await api.blocking(store_it)
        try:
            api.on_status(repo.name)
        except Exception:  # the status is stored; auto-promotion also looks on the next sweep
            log.exception("could not tell the daemon about a new status", extra={"repo": repo.name})
        return JSONResponse(stored, status_code=201)

    async def combined_status(request: Request) -> Response:
        _token, repo = api.status_reader(request)
        shown_as = api.owners()

        def read() -> dict[str, Any]:
            commit, tree = statuses.resolve_commit(repo.path, request.path_params["commit"])
            return statuses.combined(store, repo.name, commit, tree, owners=shown_as)

        return JSONResponse(await api.blocking(read))

    async def commit_statuses(request: Request) -> Response:
        _token, repo = api.status_reader(request)
        limit = inputs.limit(request, 100, "per_page")
        shown_as = api.owners()

        def read() -> list[dict[str, Any]]:
            commit, _tree = statuses.resolve_commit(repo.path, request.path_params["commit"])
            return [statuses.status_json(s, shown_as) for s in store.status_history(repo.name, commit, limit)]

        return JSONResponse(await api.blocking(read))

    async def github_repository(request: Request) -> Response:
        """GitHub's repository object, the fields its clients read (PyGithub's non-lazy get_repo)."""
        _token, repo = api.status_reader(request)
        owner = request.path_params["owner"]
        return JSONResponse(statuses.repository_json(repo.name, owner, _default_branch(repo), str(request.url.replace(query=""))))

    async def github_commit(request: Request) -> Response:
        """GitHub's commit object, the fields its clients read before reporting (PyGithub's non-lazy get_commit)."""
        _token, repo = api.status_reader(request)
        commit, tree = await api.blocking(statuses.resolve_commit, repo.path, request.path_params["commit"])
        url = str(request.url.replace(query=""))
        return JSONResponse({"sha": commit, "url": f"{url.rpartition('/')[0]}/{commit}", "commit": {"tree": {"sha": tree}}})

    own = [
        Route(f"{v1}/repos/{{repo}}/statuses/{{commit}}", post_status, methods=["POST"]),
        Route(f"{v1}/repos/{{repo}}/commits/{{commit}}/status", combined_status, methods=["GET"]),
        Route(f"{v1}/repos/{{repo}}/commits/{{commit}}/statuses", commit_statuses, methods=["GET"]),
    ]
    # GitHub's paths, for clients built for GitHub (PyGithub, Buildbot's GitHubStatusPush): any owner, one
    # namespace. The GET of .../statuses/{commit} is GitHub's other name for a commit's list of statuses.
    github = [
        Route(f"{v1}/repos/{{repo}}/statuses/{{commit}}", commit_statuses, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}", github_repository, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/statuses/{{commit}}", post_status, methods=["POST"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/statuses/{{commit}}", commit_statuses, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}", github_commit, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}/status", combined_status, methods=["GET"]),
        Route(f"{v1}/repos/{{owner}}/{{repo}}/commits/{{commit}}/statuses", commit_statuses, methods=["GET"]),
    ]
    return own, github


def _may_report(token: Token, repo: str, context: str) -> None:
    """Refuse a token limited to other repositories (repo_not_allowed) or other contexts (context_not_allowed)."""
    refusal = token.refusal(repo, context)
    if refusal is not None and not token.may_report(repo):
        raise refuse(refusal, FORBIDDEN, "repo_not_allowed")
    if refusal is not None:
        raise refuse(refusal, FORBIDDEN, "context_not_allowed")


def _default_branch(repo: Repository) -> str:
    """The branch the bare repository's HEAD names (main unless someone changed it)."""
    try:
        head = (repo.path / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "main"
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else "main"
