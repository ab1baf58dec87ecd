"""Provenance at the door: `require_provenance` judged by the hook from what the store recorded, not from signatures.

When CI signs an artifact's provenance (ci/steps.py), or accepts a statement uploaded by external
CI (ci/provenance.accept_upload), it records (tree, artifact, digest kept, digest the statement
signs) here. The hook cannot open the artifacts or the service's keys (another user's files, and
no JSON or cryptography under its import budget): it refuses a tree with no such record, or whose
statement names other bits, and the daemon verifies the signatures before each batch
(ci/provenance.refusal). Stdlib only: the hook imports this.
"""

from __future__ import annotations

TYPE_CHECKING = False  # true for mypy only: the hook does not import typing
if TYPE_CHECKING:
    # An artifact's recorded provenance as ATTESTATIONS reads it: (name, sha256 kept, sha256 signed). A plain tuple,
    # named for mypy only: the hook reads these too and imports no typing.
    Attestation = tuple[str, str, str]

SCHEMA = """
CREATE TABLE IF NOT EXISTS attestations (
    repo TEXT NOT NULL,
    tree TEXT NOT NULL,
    name TEXT NOT NULL,                 -- the artifact's name in the manifest (or the uploaded statement's subject)
    sha256 TEXT NOT NULL,               -- the bits kept (the manifest's digest)
    signed_sha256 TEXT NOT NULL,        -- the digest the signed statement names for it
    statement TEXT NOT NULL,            -- where the DSSE envelope is
    recorded_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, tree, name)
);
"""

ATTESTATIONS = "SELECT name, sha256, signed_sha256 FROM attestations WHERE repo = ? AND tree = ? ORDER BY name"
# (repo, tree, name, sha256, signed_sha256, statement, recorded_at): the store records an attestation (a new one wins)
RECORD = (
    "INSERT INTO attestations (repo, tree, name, sha256, signed_sha256, statement, recorded_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo, tree, name) DO UPDATE SET sha256 = excluded.sha256,"
    " signed_sha256 = excluded.signed_sha256, statement = excluded.statement, recorded_at = excluded.recorded_at"
)


def judge(
    rows: list[Attestation], env_name: str, tree: str, short_new: str, repo_name: str
) -> tuple[str, list[str], list[str]] | None:
    """(rule, detail, instead) of a refusal when `tree`'s artifacts have no recorded provenance or it names other
    bits; None when every recorded artifact is vouched for. policy.judge makes it a Verdict."""
    rule = f"{env_name} only takes trees whose built artifacts have signed provenance (require_provenance)"
    if not rows:
        return (
            rule,
            [f"commit {short_new} has tree {tree[:7]}, for which no provenance statement is recorded."],
            [
                f"let gitopsd's CI build the tree (ci.steps with artifacts), or have external CI upload a statement "
                f"with its status (docs/ci.md), then push again; see: gitopsd ci status {short_new} --repo {repo_name}"
            ],
        )
    other = [
        f"artifact {name}: kept sha256 {str(kept)[:12]}, but its statement signs sha256 {str(signed)[:12]}"
        for name, kept, signed in rows
        if kept != signed
    ]
    if other:
        return (
            rule,
            [f"commit {short_new} has tree {tree[:7]}, whose provenance names other bits:", *other],
            [f"build the tree again (gitopsd ci rerun {short_new} --repo {repo_name}), then push again"],
        )
    return None
