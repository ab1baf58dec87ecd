"""Every table of the state store and every migration, the same steps for SQLite and PostgreSQL (docs/install.md, "PostgreSQL").

The store's tables are declared once (SCHEMA below, and the gate's: the pre-receive hook reads
those without importing the store, so gate/snapshot.py, required.py, approvals.py, locks.py,
rejections.py and attested.py keep theirs; full_schema() puts them together), in SQL both backends read alike
(dialect.py: BIGINT, DOUBLE PRECISION, TEXT; the generated id column is the one difference), with
CREATE ... IF NOT EXISTS: every upgrade creates what is missing, so a table added there needs no
step. Anything else (a column, a changed meaning, moved data) is a numbered step below, run once
per database in order, recorded in `schema_version`. Version 1 is the schema as it was when versions
began; a store written before that (no `schema_version`) is brought to it in place.
`gitopsd db upgrade` runs this; so does every writable open of the store (the daemon's start).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...base.storeerrors import StatementFailure
from ...gate import approvals, attested, locks, rejections, required, snapshot
from .backend import Backend, Dialect

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    previous_commit TEXT,
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    trigger TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    outcome TEXT,
    started_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    attempt BIGINT NOT NULL DEFAULT 1,
    workdir TEXT,
    detail TEXT,
    epoch BIGINT NOT NULL DEFAULT 0   -- the leader's epoch that wrote it (gitopsd/daemon/leadership.py); 0 without PostgreSQL
);
CREATE INDEX IF NOT EXISTS deployments_env ON deployments (repo, env, id);
CREATE INDEX IF NOT EXISTS deployments_tree ON deployments (repo, env, tree, result);
CREATE TABLE IF NOT EXISTS env_status (
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    failures BIGINT NOT NULL,
    next_retry_at DOUBLE PRECISION,
    stalled BIGINT NOT NULL DEFAULT 0,   -- 0 retrying, 1 stalled, 2 failed for good (its automatic rollback failed)
    reason TEXT,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS unwatched_repos (   -- repositories the daemon's ref watcher cannot watch now, and why
    repo TEXT PRIMARY KEY,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS env_heads (    -- each environment branch's head as the daemon last read it
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS env_blocks (   -- a head the daemon's re-judging refused, while it is the head
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    deployed_commit TEXT,                 -- what it was judged against
    reason TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS admissions (   -- commits an operator let past the promotion rule, and why
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    kind TEXT NOT NULL,                   -- override (retry --force) | rollback (rollback --to)
    actor TEXT NOT NULL,                  -- the Unix user who ran the command
    reason TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS admissions_commit ON admissions (repo, env, commit_id);
CREATE TABLE IF NOT EXISTS env_suspensions (   -- `gitopsd suspend`: no deployments here until `resume`
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    since DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS sync_requests (   -- `gitopsd sync`: re-apply this deployed commit once
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS ci_heads (   -- each CI branch's head as the daemon last saw it (gitopsd/ci/heads.py)
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    PRIMARY KEY (repo, branch)
);
CREATE TABLE IF NOT EXISTS bad_trees (
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    tree TEXT NOT NULL,
    reason TEXT NOT NULL,
    marked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (repo, env, tree)
);
CREATE TABLE IF NOT EXISTS commits_seen (   -- when each commit first reached the server (DORA lead time: dora.py)
    repo TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    via TEXT NOT NULL,                      -- the nudge's trigger that brought it (push, branch-push, promote, ...) or found
    PRIMARY KEY (repo, commit_id)
);
CREATE TABLE IF NOT EXISTS seen_refs (      -- the branch heads at the last walk for new commits (firstseen.py)
    repo TEXT PRIMARY KEY,
    tips TEXT NOT NULL                      -- commit ids, one a line
);
CREATE TABLE IF NOT EXISTS commits_deployed (   -- the commits a successful deploy brought to an environment first
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    deployment_id BIGINT NOT NULL,
    deployed_at DOUBLE PRECISION NOT NULL,  -- that deployment's end
    lead DOUBLE PRECISION,                  -- seconds from first seen to deployed_at; NULL: gitopsd made it (no change)
    PRIMARY KEY (repo, env, commit_id)
);
CREATE INDEX IF NOT EXISTS commits_deployed_at ON commits_deployed (env, deployed_at);
CREATE INDEX IF NOT EXISTS commits_deployed_commit ON commits_deployed (repo, commit_id);
CREATE INDEX IF NOT EXISTS commits_deployed_deployment ON commits_deployed (deployment_id);
CREATE TABLE IF NOT EXISTS watches (   -- each environment's post-deploy watch (core/watching.py); a restart resumes it
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    deployment_id BIGINT NOT NULL,
    commit_id TEXT NOT NULL,
    tree TEXT NOT NULL,
    previous_tree TEXT,                    -- what an automatic rollback returns to
    started_at DOUBLE PRECISION NOT NULL,
    until DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,                   -- watching | passed | breached | ended
    reason TEXT,
    hosts TEXT NOT NULL DEFAULT '[]',      -- [[name, {variable: value}]] for the HTTP checks
    checked_at DOUBLE PRECISION,
    PRIMARY KEY (repo, env)
);
CREATE TABLE IF NOT EXISTS drift_reports (   -- drift detection runs (check mode) against the deployed deployment
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    env TEXT NOT NULL,
    deployment_id BIGINT NOT NULL,
    checked_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,                   -- baseline | clean | drifted | unknown
    reason TEXT,
    hosts BIGINT NOT NULL DEFAULT 0,      -- drifted hosts
    changes TEXT NOT NULL DEFAULT '[]'     -- TaskChange.as_json() of each drifted task (a baseline: its own)
);
CREATE INDEX IF NOT EXISTS drift_reports_env ON drift_reports (repo, env, id);
CREATE TABLE IF NOT EXISTS leadership (   -- the leader's lease (PostgreSQL only: gitopsd/daemon/leadership.py); one row
    id INTEGER PRIMARY KEY,
    epoch BIGINT NOT NULL,                -- raised by each daemon that takes the lead; written with each deployment
    holder TEXT NOT NULL,
    since DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS daemons (   -- each gitopsd sharing this database: leader or standby, and when last heard of
    name TEXT PRIMARY KEY,                 -- host:state_dir
    role TEXT NOT NULL,                    -- leader | standby
    epoch BIGINT NOT NULL,
    pid BIGINT NOT NULL,
    api TEXT NOT NULL DEFAULT '',          -- where its HTTP API listens, if it has one
    seen_at DOUBLE PRECISION NOT NULL
);
"""


def full_schema() -> str:
    """Every table of the store, the gate's included, as both backends read it (migrations create them where missing)."""
    return (
        SCHEMA
        + snapshot.SCHEMA
        + required.SCHEMA
        + approvals.SCHEMA
        + locks.SCHEMA
        + rejections.SCHEMA
        + approvals.PREVIEW_SCHEMA
        + attested.SCHEMA
    )


VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL, description TEXT NOT NULL)"


def _v1(db: Backend, dialect: Dialect) -> None:
    """Stores from before versions: the hook snapshot's columns added since (the tables were created above)."""
    if dialect.name == "sqlite":
        snapshot.migrate(db)


# PostgreSQL fences the leader's records (gitopsd/daemon/leadership.py): a daemon that took the lead sets `gitopsd.epoch`
# on its connections; a row it writes (or deletes) in a table below while another daemon holds a newer epoch is
# refused (SQLSTATE GDF01), and each deployment row carries the epoch that wrote it. Row-locking the lease's row
# (FOR SHARE) makes a takeover wait for the old leader's write in flight. Commands (no `gitopsd.epoch`) pass.
FENCED_TABLES = (
    "deployments",
    "env_status",
    "env_heads",
    "env_blocks",
    "bad_trees",
    "watches",
    "drift_reports",
    "commits_deployed",
    "ci_heads",
)
FENCE = (
    """
CREATE OR REPLACE FUNCTION gitopsd_fence() RETURNS trigger LANGUAGE plpgsql AS $fence$
DECLARE
    mine text := current_setting('gitopsd.epoch', true);
    current_epoch bigint;
BEGIN
    IF mine IS NOT NULL AND mine <> '' THEN
        SELECT epoch INTO current_epoch FROM leadership WHERE id = 1 FOR SHARE;
        IF current_epoch IS DISTINCT FROM mine::bigint THEN
            RAISE EXCEPTION 'gitopsd fenced: this daemon led epoch %, the leader now leads epoch %', mine, current_epoch
                USING ERRCODE = 'GDF01';
        END IF;
        IF TG_TABLE_NAME = 'deployments' AND TG_OP <> 'DELETE' THEN
            NEW.epoch := mine::bigint;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fence$""",
) + tuple(
    statement
    for table in FENCED_TABLES
    for statement in (
        f"DROP TRIGGER IF EXISTS gitopsd_fence ON {table}",
        f"CREATE TRIGGER gitopsd_fence BEFORE INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW"
        f" EXECUTE FUNCTION gitopsd_fence()",
    )
)


def _v2(db: Backend, dialect: Dialect) -> None:
    """The leader's lease and epoch: `deployments.epoch`, the lease's row and, in PostgreSQL, the fence."""
    if "epoch" not in dialect.columns(db, "deployments"):
        db.execute("ALTER TABLE deployments ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0")
    db.execute("INSERT INTO leadership (id, epoch, holder, since) VALUES (1, 0, '', 0) ON CONFLICT DO NOTHING")
    if dialect.name == "postgresql":
        for statement in FENCE:
            db.execute(statement)


def _add_gate_column(db: Backend, dialect: Dialect, name: str, declaration: str) -> None:
    """Add `name` to the hook snapshot's gate_environments unless a store already has it (either backend)."""
    if name not in dialect.columns(db, "gate_environments"):
        db.execute(f"ALTER TABLE gate_environments ADD COLUMN {name} {declaration}")


def _v3(db: Backend, dialect: Dialect) -> None:
    """Signed commits and pushes: the hook snapshot's `gate_environments.signatures` (gate/signatures.py)."""
    _add_gate_column(db, dialect, "signatures", "TEXT NOT NULL DEFAULT ''")


def _v4(db: Backend, dialect: Dialect) -> None:
    """Locks, alert freezes and break-glass overrides (gate/locks.py): new tables only, created above."""


def _v5(db: Backend, dialect: Dialect) -> None:
    """Provenance at the door: `gate_environments.require_provenance` (table attestations created above)."""
    _add_gate_column(db, dialect, "require_provenance", "BIGINT NOT NULL DEFAULT 0")


def _v6(db: Backend, dialect: Dialect) -> None:
    """The deployments still queued or running, found without reading the whole history: the start (mark_interrupted)
    scanned a million rows for them at 1,000 repositories (issue 28). Building it reads the table once."""
    db.execute("CREATE INDEX IF NOT EXISTS deployments_active ON deployments (id) WHERE result IN ('queued', 'running')")


def _v7(db: Backend, dialect: Dialect) -> None:
    """The deployments whose exported tree is still on disk, found without reading the whole history: after every
    deployment the prune scanned a million rows for them at 1,000 repositories (1.3 s; the next push's look waited on
    it: issue 28's push -> playbook). Few rows have a work folder (`keep_workdirs` per environment)."""
    db.execute("CREATE INDEX IF NOT EXISTS deployments_workdir ON deployments (repo, env, id) WHERE workdir IS NOT NULL")


STEPS: list[tuple[int, str, Callable[[Backend, Dialect], None]]] = [
    (1, "the schema when versions began (tables created if missing, the hook snapshot's newer columns added)", _v1),
    (2, "the leader's lease and epoch; PostgreSQL refuses the records of a daemon that lost the lead", _v2),
    (3, "signed commits and pushes: the hook snapshot's signature rule per environment", _v3),
    (4, "locks, freezes raised by alerts and break-glass overrides (tables env_locks, break_glass)", _v4),
    (5, "provenance at the door: recorded attestations and the hook snapshot's require_provenance", _v5),
    (6, "an index of the deployments still queued or running (the start no longer reads the whole history)", _v6),
    (7, "an index of the deployments whose work folder is kept (pruning them no longer reads the whole history)", _v7),
]
LATEST = STEPS[-1][0]


def current(db: Backend) -> int:
    """The database's schema version: 0 before any (a new or an old store)."""
    try:
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except StatementFailure:  # no such table, on either backend: version 0
        return 0
    return int(row[0] or 0) if row else 0


def upgrade(db: Backend, schema: str) -> tuple[int, int]:
    """Create missing tables, then run every step above the database's version; (version before, version after).

    Raise ValueError when the database was written by a newer gitopsd (its version is above LATEST).
    """
    before = current(db)
    if before > LATEST:
        raise ValueError(
            f"its schema is version {before}, newer than this gitopsd knows ({LATEST}): "
            f"upgrade gitopsd, or use the gitopsd that wrote it"
        )
    dialect = db.dialect
    db.script(dialect.schema(schema + ";\n" + VERSION_TABLE + ";"))
    for version, description, step in STEPS:
        if version <= before:
            continue
        with db.transaction():
            step(db, dialect)
            db.execute(
                "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                (version, time.time(), description),
            )
    return before, max(before, LATEST)
