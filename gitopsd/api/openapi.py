"""The OpenAPI 3 document served at /api/v1/openapi.json, written by hand beside the routes in api/routes/."""

from __future__ import annotations

from typing import Any

from ..core.errors import STATUS
from ..core.reasons import REASONS
from ..core.settings import STATUS_CONTEXT_MAX
from ..gate.required import STATES
from .statuses import MAX_BODY, MAX_DESCRIPTION, MAX_URL


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _limit(default: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": default},
    }


REPO = _path("repo", "repository name, as in the server configuration")
OWNER = _path("owner", "any name: GitHub's paths name an owner, gitopsd has one namespace (the answers echo it)")
COMMIT = _path("commit", "commit id: 40 hex digits, or an unambiguous abbreviation of at least 7")
ERRORS = {"401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}
NOT_FOUND = {"404": _json(_ref("Error"), "unknown repository, environment or commit")}
INVALID = {"422": _json(_ref("Invalid"), "invalid input; `field` names it")}
RC = _path("name", "release candidate name, e.g. 2026-11-29.1 (its tag is rc/NAME)")
REFUSED = {
    "403": _json(
        _ref("Refusal"),
        "the token's owner may not do this (not in signoff_by or approvers, or it is "
        "their own release candidate), or the token lacks approvals:write",
    ),
    "404": _json(_ref("Error"), "unknown repository, environment or release candidate"),
    "409": _json(
        _ref("Refusal"),
        "the state does not allow it: already done, the name exists, the tree is not "
        "what the environment runs or verified, sign-offs missing",
    ),
    "422": _json(_ref("Refusal"), "a bad field; `message` and `field` say which"),
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
DONE = {"201": _json(_ref("Done"), "recorded (in the state store and as a git note on the commit)")}
STATUS_READ = "scope read, or statuses:write that may report for this repository (GitHub's repo:status)"
REPORT_REFUSED = {
    "403": _json(
        _ref("Error"),
        "the token lacks statuses:write; or the context starts with gitopsd/ "
        "(reserved for gitopsd's built-in CI: use another, e.g. ci/jenkins); or "
        "the token's contexts or repos do not cover it (the message names them)",
    )
}


def _status_paths(prefix: str, where: list[dict[str, Any]]) -> dict[str, Any]:
    """The commit-status paths under `prefix` (gitopsd's /repos/{repo}, or GitHub's /repos/{owner}/{repo})."""
    listed = {
        "summary": f"every status reported for this commit itself, newest first ({STATUS_READ})",
        "parameters": [
            *where,
            COMMIT,
            _limit(100),
            {
                "name": "per_page",
                "in": "query",
                "required": False,
                "schema": {"type": "integer"},
                "description": "GitHub's name for limit",
            },
        ],
        "responses": {"200": _json({"type": "array", "items": _ref("Status")}, "history"), **ERRORS, **NOT_FOUND, **INVALID},
    }
    return {
        f"{prefix}/statuses/{{commit}}": {
            "post": {
                "summary": "report a commit status (scope statuses:write); stored against the commit and its tree",
                "parameters": [*where, COMMIT],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StatusReport")}}},
                "responses": {"201": _json(_ref("Status"), "stored"), **ERRORS, **REPORT_REFUSED, **NOT_FOUND, **INVALID},
            },
            "get": {**listed, "summary": f"GitHub's other path for {listed['summary']}"},
        },
        f"{prefix}/commits/{{commit}}/status": {
            "get": {
                "summary": f"the combined status of a commit: the newest per context for its tree ({STATUS_READ})",
                "parameters": [*where, COMMIT],
                "responses": {"200": _json(_ref("CombinedStatus"), "combined"), **ERRORS, **NOT_FOUND},
            }
        },
        f"{prefix}/commits/{{commit}}/statuses": {"get": listed},
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document; every operation documents a 422 (a URL that is not UTF-8 text gets one)."""
    doc = _document()
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("422", INVALID["422"])
    return doc


def _document() -> dict[str, Any]:
    nullable = ["string", "null"]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "gitopsd",
            "version": "1",
            "description": "Commit statuses by tree (GitHub's fields), and what `gitopsd status` and `history` "
            "show; sign-offs, release candidates and approvals as the token's owner. Every "
            "endpoint but /api/v1/health needs a token: `Authorization: Bearer <token>` (or GitHub's `token "
            "<token>`) from `gitopsd token create NAME --scope read|statuses:write|approvals:write "
            "[--owner USER] [--contexts PATTERN] [--repos PATTERN]`. The status paths also answer "
            "under GitHub's /repos/{owner}/{repo}, for clients built for GitHub; contexts starting "
            "with gitopsd/ are written only by gitopsd's built-in CI.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Unauthorized": _json(_ref("Error"), "no token, or an unknown or revoked one"),
                "Forbidden": _json(_ref("Error"), "the token lacks the scope this needs"),
            },
            "schemas": {
                "Error": _ref("Refusal"),
                "Invalid": _ref("Refusal"),  # one error body shape for every refusal
                "StatusReport": {
                    "type": "object",
                    "required": ["state"],
                    "description": f"GitHub's commit status body; at most {MAX_BODY} bytes",
                    "properties": {
                        "state": {"type": "string", "enum": list(STATES)},
                        "context": {"type": "string", "default": "default", "maxLength": STATUS_CONTEXT_MAX},
                        "target_url": {
                            "type": nullable,
                            "format": "uri",
                            "maxLength": MAX_URL,
                            "description": "http:// or https:// only",
                        },
                        "description": {"type": nullable, "maxLength": MAX_DESCRIPTION},
                    },
                },
                "Status": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "description": "only in the answer to a POST"},
                        "state": {"type": "string", "enum": list(STATES)},
                        "context": {"type": "string"},
                        "target_url": {"type": nullable},
                        "description": {"type": nullable},
                        "commit": {"type": "string", "description": "the commit it was reported for"},
                        "tree": {"type": "string", "description": "only in the answer to a POST"},
                        "reporter": {"type": "string", "description": "the token's name, cli:<user>, or gitopsd"},
                        "creator": _ref("User"),
                        "created_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time", "description": "= created_at"},
                    },
                },
                "User": {
                    "type": "object",
                    "description": "GitHub's user object for the reporter: the token's owner, "
                    "cli:<user>, or gitopsd (type Bot, the built-in CI)",
                    "properties": {
                        "login": {"type": "string"},
                        "id": {"type": "integer", "description": "a stable number made from the login"},
                        "type": {"type": "string", "enum": ["User", "Bot"]},
                    },
                },
                "Repository": {
                    "type": "object",
                    "description": "GitHub's repository object, the fields its clients "
                    "read; ids are stable numbers made from the names",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "full_name": {"type": "string"},
                        "private": {"type": "boolean"},
                        "owner": {"type": "object"},
                        "url": {"type": "string"},
                        "statuses_url": {"type": "string"},
                        "default_branch": {"type": "string"},
                    },
                },
                "Commit": {
                    "type": "object",
                    "description": "GitHub's commit object, only sha, url and commit.tree.sha",
                    "properties": {"sha": {"type": "string"}, "url": {"type": "string"}, "commit": {"type": "object"}},
                },
                "CombinedStatus": {
                    "type": "object",
                    "description": "failure if any context failed or errored; pending if any is pending or none was "
                    "reported; success otherwise. Statuses count per tree: a commit with the same tree "
                    "as a tested one is tested.",
                    "properties": {
                        "state": {"type": "string", "enum": ["pending", "success", "failure"]},
                        "sha": {"type": "string"},
                        "tree": {"type": "string"},
                        "total_count": {"type": "integer"},
                        "statuses": {"type": "array", "items": _ref("Status")},
                    },
                },
                "EnvironmentStatus": {
                    "type": "object",
                    "description": "one row of `gitopsd status --json`",
                    "additionalProperties": True,
                },
                "Deployment": {
                    "type": "object",
                    "description": "one row of `gitopsd history --json`; `rc` and "
                    "`approved_by`: the release candidate whose tree it "
                    "deployed and who had approved it; `signed_off_by`: "
                    "the sign-offs its environment's require_signoff names",
                    "additionalProperties": True,
                },
                "Refusal": {
                    "type": "object",
                    "required": ["message", "kind", "reason", "field"],
                    "description": 'every answer other than success has this shape (docs/api.md, "Errors")',
                    "properties": {
                        "message": {"type": "string", "description": "one line: what is wrong and what to do instead"},
                        "kind": {
                            "type": "string",
                            "enum": list(STATUS),
                            "description": "what the caller does about it; it gives the status",
                        },
                        "reason": {
                            "type": "string",
                            "enum": list(REASONS),
                            "description": "a stable id of the situation to match on (docs/api.md lists them)",
                        },
                        "field": {"type": nullable, "description": "the bad field, for a 422"},
                    },
                },
                "Done": {
                    "type": "object",
                    "required": ["message", "identity"],
                    "properties": {
                        "message": {"type": "string"},
                        "identity": {"type": "string", "description": "who it was recorded as: the token's owner"},
                    },
                },
                "Signoff": {
                    "type": "object",
                    "required": ["note"],
                    "additionalProperties": False,
                    "properties": {
                        "note": {"type": "string", "maxLength": 1000, "description": "what was tested"},
                        "reject": {"type": "boolean", "default": False, "description": "it did not pass manual testing"},
                        "commit": {"type": nullable, "description": "default: what the environment runs; it must have that tree"},
                    },
                },
                "RcCreate": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "from": {"type": nullable, "description": "the tested environment"},
                        "to": {"type": nullable, "description": "default: the first with approvals"},
                        "name": {"type": nullable, "description": "default: the date and a counter"},
                    },
                },
                "Lock": {
                    "type": "object",
                    "required": ["reason"],
                    "additionalProperties": False,
                    "properties": {
                        "repo": {"type": "string"},
                        "env": {"type": "string"},
                        "all": {"type": "boolean"},
                        "reason": {"type": "string"},
                        "until": {"type": "string", "format": "date-time"},
                        "for": {"type": "string", "description": "a duration: 30m, 2h, 1d"},
                    },
                },
                "Override": {
                    "type": "object",
                    "required": ["env", "reason"],
                    "additionalProperties": False,
                    "properties": {"repo": {"type": "string"}, "env": {"type": "string"}, "reason": {"type": "string"}},
                },
                "OverrideConfirm": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"reason": {"type": "string"}},
                },
                "AlertmanagerWebhook": {
                    "type": "object",
                    "required": ["version", "status", "alerts"],
                    "additionalProperties": True,
                    "description": "Alertmanager's webhook_configs notification (version 4); other fields are kept",
                    "properties": {
                        "version": {"type": "string", "example": "4"},
                        "status": {"type": "string", "enum": ["firing", "resolved"]},
                        "alerts": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["status", "labels"],
                                "properties": {
                                    "status": {"type": "string", "enum": ["firing", "resolved"]},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "annotations": {"type": "object"},
                                },
                            },
                        },
                    },
                },
                "Approval": {
                    "type": "object",
                    "required": ["kind"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"type": "string", "enum": ["approve", "reject", "withdraw"]},
                        "note": {"type": "string", "maxLength": 1000, "description": "why; required but for withdraw"},
                    },
                },
                "TreeRejection": {
                    "type": "object",
                    "required": ["kind", "reason"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"type": "string", "enum": ["reject", "unreject"]},
                        "reason": {"type": "string", "maxLength": 1000, "description": "why"},
                        "env": {
                            "type": nullable,
                            "description": "reject: from where (default: "
                            "everywhere); unreject: where (default: wherever it stands)",
                        },
                    },
                },
                "ReleaseCandidate": {
                    "type": "object",
                    "description": "one row of `gitopsd rc list --json`; `gitopsd rc show --json` adds `history`",
                    "additionalProperties": True,
                },
            },
        },
        "paths": {
            "/api/v1/health": {
                "get": {"summary": "is the API up", "security": [], "responses": {"200": _json({"type": "object"}, "ok")}}
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "this document (scope read)",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3"), **ERRORS},
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "desired vs deployed per environment, as `gitopsd status --json` (scope read)",
                    "parameters": [{"name": "repo", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("EnvironmentStatus")}, "every environment"),
                        **ERRORS,
                        **NOT_FOUND,
                    },
                }
            },
            **_status_paths("/api/v1/repos/{repo}", [REPO]),
            **_status_paths("/api/v1/repos/{owner}/{repo}", [OWNER, REPO]),
            "/api/v1/repos/{owner}/{repo}": {
                "get": {
                    "summary": f"GitHub's repository object ({STATUS_READ})",
                    "parameters": [OWNER, REPO],
                    "responses": {"200": _json(_ref("Repository"), "the repository"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{owner}/{repo}/commits/{commit}": {
                "get": {
                    "summary": f"GitHub's commit object ({STATUS_READ})",
                    "parameters": [OWNER, REPO, COMMIT],
                    "responses": {"200": _json(_ref("Commit"), "the commit"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{repo}/environments/{env}/history": {
                "get": {
                    "summary": "deployments of an environment, newest first, as `gitopsd history --json` (scope read)",
                    "parameters": [REPO, _path("env", "environment name"), _limit(20)],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Deployment")}, "deployments"),
                        **ERRORS,
                        **NOT_FOUND,
                        **INVALID,
                    },
                }
            },
            "/api/v1/repos/{repo}/environments/{env}/hosts": {
                "get": {
                    "summary": "per host, the tree it runs, since when, the last check and drift, as `gitopsd hosts ENV "
                    "--json` (scope read)",
                    "parameters": [REPO, _path("env", "environment name")],
                    "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "hosts"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{repo}/where": {
                "get": {
                    "summary": "each environment and host that runs a commit, tree or rc/NAME, as `gitopsd where --json` "
                    "(scope read)",
                    "parameters": [
                        REPO,
                        {
                            "name": "of",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "a commit id, a tree id or rc/NAME",
                        },
                    ],
                    "responses": {"200": _json({"type": "object"}, "its tree and the hosts that run it"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{repo}/previews/{name}": {
                "get": {
                    "summary": "a promotion preview per host and task, as `gitopsd preview --show ID --json` (scope read)",
                    "parameters": [REPO, _path("name", "the preview's number")],
                    "responses": {"200": _json({"type": "object"}, "the preview"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{repo}/environments/{env}/signoffs": {
                "post": {
                    "summary": "sign off (or reject) what the environment runs, as the token's owner (scope "
                    "approvals:write); bound to its tree",
                    "parameters": [REPO, _path("env", "where it was tested")],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Signoff")}}},
                    "responses": {**DONE, **REFUSED},
                }
            },
            "/api/v1/repos/{repo}/rcs": {
                "get": {
                    "summary": "release candidates, newest first, as `gitopsd rc list --json` (scope read)",
                    "parameters": [REPO, _limit(20)],
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("ReleaseCandidate")}, "candidates"),
                        **ERRORS,
                        **NOT_FOUND,
                        **INVALID,
                    },
                },
                "post": {
                    "summary": "tag what the tested environment runs as rc/NAME, as the token's owner (scope approvals:write)",
                    "parameters": [REPO],
                    "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("RcCreate")}}},
                    "responses": {**DONE, **REFUSED},
                },
            },
            "/api/v1/repos/{repo}/rcs/{name}": {
                "get": {
                    "summary": "a release candidate with its approvals, as `gitopsd rc show --json` (scope read)",
                    "parameters": [REPO, RC],
                    "responses": {"200": _json(_ref("ReleaseCandidate"), "the candidate"), **ERRORS, **NOT_FOUND},
                }
            },
            "/api/v1/repos/{repo}/trees/{tree}/rejections": {
                "post": {
                    "summary": "reject a tree for an environment and every later one, or let it through again, as the "
                    "token's owner, who must be in the environment's override_by (scope approvals:write)",
                    "parameters": [REPO, _path("tree", "a tree id, or a commit that has it")],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TreeRejection")}}},
                    "responses": {**DONE, **REFUSED},
                }
            },
            "/api/v1/repos/{repo}/rcs/{name}/approvals": {
                "post": {
                    "summary": "approve, reject or withdraw one's word on a release candidate, as the token's owner "
                    "(scope approvals:write)",
                    "parameters": [REPO, RC],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Approval")}}},
                    "responses": {**DONE, **REFUSED},
                }
            },
            "/api/v1/locks": {
                "get": {
                    "summary": "the locks, alert freezes and break-glass requests in force, as `gitopsd locks "
                    "--json` (scope read)",
                    "responses": {"200": _json({"type": "object"}, "locks and break_glass"), **ERRORS},
                },
                "post": {
                    "summary": "lock an environment (repo, env), a repository (repo) or everything (all) with a "
                    "reason, until a time or for a duration, as the token's owner (scope "
                    "deployments:write)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Lock")}}},
                    "responses": {**DONE, **REFUSED},
                },
            },
            "/api/v1/locks/lift": {
                "post": {
                    "summary": "lift the locks a person set on exactly that scope (scope deployments:write)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Lock")}}},
                    "responses": {**DONE, **REFUSED},
                }
            },
            "/api/v1/overrides": {
                "get": {
                    "summary": "break-glass requests waiting for their second person or in force (scope read)",
                    "responses": {"200": _json({"type": "object"}, "break_glass"), **ERRORS},
                },
                "post": {
                    "summary": "ask for a break-glass in an environment with a reason, as the token's owner, as "
                    "`gitopsd override ENV` (scope deployments:write); the answer names its id",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Override")}}},
                    "responses": {**DONE, **REFUSED},
                },
            },
            "/api/v1/overrides/{id}/confirm": {
                "post": {
                    "summary": "confirm another person's break-glass request, as the token's owner, who must be in the "
                    "environment's override_by (scope deployments:write)",
                    "parameters": [_path("id", "the request's number")],
                    "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("OverrideConfirm")}}},
                    "responses": {**DONE, **REFUSED},
                }
            },
            "/api/v1/alerts": {
                "post": {
                    "summary": "Alertmanager's webhook (webhook_configs): freeze the environments freeze_on names while "
                    "a matching alert fires, lift it when it resolves (scope alerts:write); a payload that is "
                    "not Alertmanager's is a 422 and locks nothing",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AlertmanagerWebhook")}}},
                    "responses": {"200": _json(_ref("Done"), "what was frozen or lifted"), **REFUSED},
                }
            },
        },
    }
