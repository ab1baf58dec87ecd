"""The OpenAPI 3 document served at /api/v1/openapi.json, written by hand beside the routes in api/app.py."""
from __future__ import annotations

from typing import Any

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
    return {"name": "limit", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": default}}


REPO = _path("repo", "repository name, as in the server configuration")
COMMIT = _path("commit", "commit id: 40 hex digits, or an unambiguous abbreviation of at least 7")
ERRORS = {"401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}
NOT_FOUND = {"404": _json(_ref("Error"), "unknown repository, environment or commit")}
INVALID = {"422": _json(_ref("Invalid"), "invalid input; `field` names it")}
RC = _path("name", "release candidate name, e.g. 2026-11-29.1 (its tag is rc/NAME)")
REFUSED = {"403": _json(_ref("Refusal"), "the token's owner may not do this (not in signoff_by or approvers, or it is "
                                           "their own release candidate), or the token lacks approvals:write"),
           "404": _json(_ref("Error"), "unknown repository, environment or release candidate"),
           "409": _json(_ref("Refusal"), "the state does not allow it: already done, the name exists, the tree is not "
                                          "what the environment runs or verified, sign-offs missing"),
           "422": _json(_ref("Refusal"), "a bad field; `error` says which"),
           "401": {"$ref": "#/components/responses/Unauthorized"}}
DONE = {"201": _json(_ref("Done"), "recorded (in the state store and as a git note on the commit)")}


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    nullable = ["string", "null"]
    return {
        "openapi": "3.1.0",
        "info": {"title": "gitopsd", "version": "1",
                 "description": "Commit statuses by tree (GitHub's fields), and what `gitopsd status` and `history` "
                                "show; sign-offs, release candidates and approvals as the token's owner. Every "
                                "endpoint but /api/v1/health needs a token: `Authorization: Bearer <token>` from "
                                "`gitopsd token create NAME --scope read|statuses:write|approvals:write [--owner USER]`."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Unauthorized": _json(_ref("Error"), "no token, or an unknown or revoked one"),
                "Forbidden": _json(_ref("Error"), "the token lacks the scope this needs"),
            },
            "schemas": {
                "Error": {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
                "Invalid": {"type": "object", "required": ["field", "message"],
                            "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
                "StatusReport": {
                    "type": "object", "required": ["state"],
                    "description": f"GitHub's commit status body; at most {MAX_BODY} bytes",
                    "properties": {
                        "state": {"type": "string", "enum": list(STATES)},
                        "context": {"type": "string", "default": "default", "maxLength": STATUS_CONTEXT_MAX},
                        "target_url": {"type": nullable, "format": "uri", "maxLength": MAX_URL,
                                       "description": "http:// or https:// only"},
                        "description": {"type": nullable, "maxLength": MAX_DESCRIPTION}}},
                "Status": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer", "description": "only in the answer to a POST"},
                        "state": {"type": "string", "enum": list(STATES)}, "context": {"type": "string"},
                        "target_url": {"type": nullable}, "description": {"type": nullable},
                        "commit": {"type": "string", "description": "the commit it was reported for"},
                        "tree": {"type": "string", "description": "only in the answer to a POST"},
                        "reporter": {"type": "string", "description": "the token's name, or cli:<user>"},
                        "created_at": {"type": "string", "format": "date-time"}}},
                "CombinedStatus": {
                    "type": "object",
                    "description": "failure if any context failed or errored; pending if any is pending or none was "
                                   "reported; success otherwise. Statuses count per tree: a commit with the same tree "
                                   "as a tested one is tested.",
                    "properties": {"state": {"type": "string", "enum": ["pending", "success", "failure"]},
                                   "sha": {"type": "string"}, "tree": {"type": "string"},
                                   "total_count": {"type": "integer"},
                                   "statuses": {"type": "array", "items": _ref("Status")}}},
                "EnvironmentStatus": {"type": "object", "description": "one row of `gitopsd status --json`",
                                      "additionalProperties": True},
                "Deployment": {"type": "object", "description": "one row of `gitopsd history --json`; `rc` and "
                                                                  "`approved_by`: the release candidate whose tree it "
                                                                  "deployed and who had approved it; `signed_off_by`: "
                                                                  "the sign-offs its environment's require_signoff names",
                               "additionalProperties": True},
                "Refusal": {"type": "object", "required": ["error"],
                            "properties": {"error": {"type": "string", "description": "one line: what is wrong and "
                                                                                      "what to do instead"},
                                           "field": {"type": "string", "description": "the bad field, for a 422"}}},
                "Done": {"type": "object", "required": ["message", "identity"],
                         "properties": {"message": {"type": "string"},
                                        "identity": {"type": "string", "description": "who it was recorded as: the "
                                                                                      "token's owner"}}},
                "Signoff": {"type": "object", "required": ["note"], "additionalProperties": False,
                            "properties": {"note": {"type": "string", "maxLength": 1000, "description": "what was tested"},
                                           "reject": {"type": "boolean", "default": False,
                                                      "description": "it did not pass manual testing"},
                                           "commit": {"type": nullable, "description": "default: what the environment "
                                                                                       "runs; it must have that tree"}}},
                "RcCreate": {"type": "object", "additionalProperties": False,
                             "properties": {"from": {"type": nullable, "description": "the tested environment"},
                                            "to": {"type": nullable, "description": "default: the first with approvals"},
                                            "name": {"type": nullable, "description": "default: the date and a counter"}}},
                "Approval": {"type": "object", "required": ["kind"], "additionalProperties": False,
                             "properties": {"kind": {"type": "string", "enum": ["approve", "reject", "withdraw"]},
                                            "note": {"type": "string", "maxLength": 1000,
                                                     "description": "why; required but for withdraw"}}},
                "ReleaseCandidate": {"type": "object", "description": "one row of `gitopsd rc list --json`; "
                                                                      "`gitopsd rc show --json` adds `history`",
                                     "additionalProperties": True},
            },
        },
        "paths": {
            "/api/v1/health": {"get": {"summary": "is the API up", "security": [],
                                       "responses": {"200": _json({"type": "object"}, "ok")}}},
            "/api/v1/openapi.json": {"get": {"summary": "this document (scope read)",
                                             "responses": {"200": _json({"type": "object"}, "OpenAPI 3"), **ERRORS}}},
            "/api/v1/status": {"get": {
                "summary": "desired vs deployed per environment, as `gitopsd status --json` (scope read)",
                "parameters": [{"name": "repo", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": _json({"type": "array", "items": _ref("EnvironmentStatus")}, "every environment"),
                              **ERRORS, **NOT_FOUND}}},
            "/api/v1/repos/{repo}/statuses/{commit}": {"post": {
                "summary": "report a commit status (scope statuses:write); stored against the commit and its tree",
                "parameters": [REPO, COMMIT],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StatusReport")}}},
                "responses": {"201": _json(_ref("Status"), "stored"), **ERRORS, **NOT_FOUND, **INVALID}}},
            "/api/v1/repos/{repo}/commits/{commit}/status": {"get": {
                "summary": "the combined status of a commit: the newest per context for its tree (scope read)",
                "parameters": [REPO, COMMIT],
                "responses": {"200": _json(_ref("CombinedStatus"), "combined"), **ERRORS, **NOT_FOUND}}},
            "/api/v1/repos/{repo}/commits/{commit}/statuses": {"get": {
                "summary": "every status reported for this commit itself, newest first (scope read)",
                "parameters": [REPO, COMMIT, _limit(100)],
                "responses": {"200": _json({"type": "array", "items": _ref("Status")}, "history"), **ERRORS,
                              **NOT_FOUND, **INVALID}}},
            "/api/v1/repos/{repo}/environments/{env}/history": {"get": {
                "summary": "deployments of an environment, newest first, as `gitopsd history --json` (scope read)",
                "parameters": [REPO, _path("env", "environment name"), _limit(20)],
                "responses": {"200": _json({"type": "array", "items": _ref("Deployment")}, "deployments"), **ERRORS,
                              **NOT_FOUND, **INVALID}}},
            "/api/v1/repos/{repo}/environments/{env}/signoffs": {"post": {
                "summary": "sign off (or reject) what the environment runs, as the token's owner (scope "
                           "approvals:write); bound to its tree",
                "parameters": [REPO, _path("env", "where it was tested")],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Signoff")}}},
                "responses": {**DONE, **REFUSED}}},
            "/api/v1/repos/{repo}/rcs": {
                "get": {"summary": "release candidates, newest first, as `gitopsd rc list --json` (scope read)",
                        "parameters": [REPO, _limit(20)],
                        "responses": {"200": _json({"type": "array", "items": _ref("ReleaseCandidate")}, "candidates"),
                                      **ERRORS, **NOT_FOUND, **INVALID}},
                "post": {"summary": "tag what the tested environment runs as rc/NAME, as the token's owner (scope "
                                    "approvals:write)",
                         "parameters": [REPO],
                         "requestBody": {"required": False,
                                         "content": {"application/json": {"schema": _ref("RcCreate")}}},
                         "responses": {**DONE, **REFUSED}}},
            "/api/v1/repos/{repo}/rcs/{name}": {"get": {
                "summary": "a release candidate with its approvals, as `gitopsd rc show --json` (scope read)",
                "parameters": [REPO, RC],
                "responses": {"200": _json(_ref("ReleaseCandidate"), "the candidate"), **ERRORS, **NOT_FOUND}}},
            "/api/v1/repos/{repo}/rcs/{name}/approvals": {"post": {
                "summary": "approve, reject or withdraw one's word on a release candidate, as the token's owner "
                           "(scope approvals:write)",
                "parameters": [REPO, RC],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Approval")}}},
                "responses": {**DONE, **REFUSED}}},
        },
    }
