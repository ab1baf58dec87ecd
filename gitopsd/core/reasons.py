"""Every refusal's stable reason id, with its kind and one line on the situation it names (docs/api.md lists them).

A client matches on the id where the kind is not fine enough; the words of a refusal may change, an id does not.
`Refused` (core/errors.py) takes only these, each with its one kind; tests/unit/test_refusals.py checks every raise
site, and tools/gen_reason_docs.py writes the table in docs/api.md. No imports: the pre-receive hook loads this.
"""

REASONS: dict[str, tuple[str, str]] = {
    # invalid (422): the request itself is wrong; asking again the same way cannot help
    "bad_field": ("invalid", "a field of the request is missing or malformed: `field` names it"),
    "unknown_request": ("invalid", "the daemon's control socket has no such request (`op`)"),
    "bad_request": ("invalid", "a control socket request that is not one JSON object"),
    "request_too_large": ("invalid", "a control socket request over its size limit (64 KiB)"),
    "repo_ambiguous": ("invalid", "several repositories are configured: name one (`--repo`, `repo`)"),
    "bad_source": ("invalid", "a promotion's source is no environment, source branch or release candidate"),
    "preview_rc_mismatch": ("invalid", "the environments given differ from the release candidate's own"),
    "preview_same_env": ("invalid", "a preview compares two environments, not one with itself"),
    "bad_time": ("invalid", "`--until`/`--for` is not a time, lies in the past, or both are given"),
    "bad_alert_payload": ("invalid", "the body is not an Alertmanager webhook notification (version 4)"),
    "bad_lock_scope": ("invalid", "a lock names no scope, or `--all` together with an environment or repository"),
    "note_required": ("invalid", "the action is recorded with a reason: give one (`--reason`, `--note`)"),
    "bad_note": ("invalid", "a reason or note is not one line of at most 1000 characters"),
    "bad_break_glass_id": ("invalid", "a break-glass request is named by its number"),
    "bad_rc_name": ("invalid", "not a valid release candidate name (letters, digits, '.', '_', '-')"),
    "bad_provenance": ("invalid", "a commit status's provenance cannot be read"),
    "no_ci": ("invalid", "the repository has no CI (neither `ci.steps` nor `ci.trigger`) to run again"),
    # unauthenticated (401)
    "token_required": ("unauthenticated", "no valid identity: an API token (or a dashboard sign-in) is required"),
    # forbidden (403): this identity may not; another may
    "token_scope": ("forbidden", "the token lacks the scope this request needs"),
    "role_required": ("forbidden", "the dashboard user lacks the role (`web.roles`) the action needs there"),
    "signoff_not_allowed": ("forbidden", "the identity is not in the environment's `signoff_by`"),
    "approval_not_allowed": ("forbidden", "the identity is not in the environment's `approvals.approvers`"),
    "approval_by_author": ("forbidden", "an approval of one's own release candidate, and `forbid_self_approval` is on"),
    "override_not_allowed": ("forbidden", "the identity is not in the environment's `override_by` (or it is empty)"),
    "break_glass_by_asker": ("forbidden", "a break-glass is confirmed by a second identity, not the one who asked"),
    "reserved_context": ("forbidden", "the status context is gitopsd's own (`gitopsd/...`)"),
    "context_not_allowed": ("forbidden", "the token may not report this status context for this repository"),
    "repo_not_allowed": ("forbidden", "the token may report statuses only for other repositories (its `repos:`)"),
    "daemon_stopping": ("forbidden", "the daemon is stopping and takes no new work: ask again once it runs"),
    # missing (404): nothing by that name
    "repo_not_found": ("missing", "no repository by that name in the configuration"),
    "env_not_found": ("missing", "the repository has no environment by that name"),
    "branch_not_found": ("missing", "an environment's branch does not exist in the repository yet"),
    "commit_not_found": ("missing", "no commit or tree (or release candidate, where one may be named) by that name"),
    "rc_not_found": ("missing", "no release candidate by that name in the repository"),
    "preview_not_found": ("missing", "no preview by that number in the repository"),
    "break_glass_not_found": ("missing", "no break-glass request by that number"),
    "ci_head_not_found": ("missing", "neither a CI branch of the repository nor the commit at the head of one"),
    "no_endpoint": ("missing", "no such API endpoint or dashboard action"),
    "no_metrics": ("missing", "this server serves no metrics"),
    # conflict (409): not now, not in this state
    "not_deploying": ("conflict", "nothing is deploying in the environment now: there is nothing to cancel"),
    "nothing_deployed": ("conflict", "the environment runs nothing deployed and verified yet"),
    "tree_not_verified": ("conflict", "the tree never ran successfully in the environment it would come from"),
    "tree_too_old": ("conflict", "the tree ran in its environment too long ago to preview: promote it again"),
    "tree_not_running": ("conflict", "a sign-off names a tree other than the one the environment runs"),
    "tree_rejected": ("conflict", "the tree is rejected for the target environment"),
    "signoffs_missing": ("conflict", "the tree lacks the sign-offs the target environment requires"),
    "no_approvals": ("conflict", "no environment (or not the one named) takes approvals, so release candidates have no use"),
    "rc_exists": ("conflict", "a release candidate by that name exists already"),
    "rc_tag_failed": ("conflict", "git could not create the release candidate's tag"),
    "nothing_changed": ("conflict", "already so, or nothing to withdraw, lift or unreject: nothing changed"),
    "break_glass_closed": ("conflict", "the break-glass request was confirmed already or lapsed"),
    "branch_moved": ("conflict", "the branch moved while the change was being made: nothing changed, run it again"),
    "policy_refused": ("conflict", "the promotion rule (the pre-receive hook's judge) refused the new head"),
    "refused": ("conflict", "a refusal that names no finer reason (a command's own error, an answer without an id)"),
    # unsupported (405), internal (500), unavailable (503)
    "method_not_allowed": ("unsupported", "the endpoint takes another HTTP method"),
    "internal_error": ("internal", "a bug: the daemon's log says where"),
    "server_permission": ("internal", "the server may not write its own files (permission, a read-only mount): an operator acts"),
    "server_disk_full": ("internal", "the server's disk or quota is full: an operator frees space"),
    "server_files": (
        "internal",
        "a server file is not as needed (a folder in the way, a name too long, damaged): an operator acts",
    ),
    "repository_failed": (
        "internal",
        "git failed on the repository on the server: an operator fixes it (the log has git's words)",
    ),
    "store_unavailable": ("unavailable", "the state database or the repository is busy or out of reach now: try again"),
    "no_daemon": ("unavailable", "this server does not record sign-offs and approvals: the daemon does"),
    "standby": ("unavailable", "this gitopsd is the standby: ask the leader"),
    "daemon_busy": ("unavailable", "the daemon's control socket has as many connections open as it serves: try again"),
    "store_replaced": ("unavailable", "the daemon's state database was deleted or replaced: its log says what to do"),
}
