"""The state store as one package: the `Store` facade, its schema and migrations, and its two backends.

Callers import from here (`from gitopsd.adapters.store import Store`). Inside: facade.py opens the connection and
composes the queries, grouped by concern (deployments.py, holds.py, checks.py, human.py, ledger.py, watches.py,
trees.py) over base.py; schema.py holds every table and migration. They run on a backend.py `Backend`: sqlite.py
(the one importer of sqlite3 here) or postgresql.py (of psycopg, loaded only for `database: postgresql://...`);
dialect.py names where their SQL differs.
"""

from __future__ import annotations

from ...core.types import Admission, Block, Deployment, FailureStatus, Hold, iso
from .base import file_identity
from .deployments import ACTIVE, KINDS, RESULTS
from .facade import PG_WRITE_RETRY, DaemonSeen, EnvironmentRecords, Store
from .holds import BreakGlassRequest, LockRecord
from .human import Preview, ReleaseCandidate
from .ledger import DoraDeployment
from .schema import SCHEMA, full_schema
from .sqlite import write_backup

__all__ = [
    "ACTIVE",
    "KINDS",
    "LockRecord",
    "PG_WRITE_RETRY",
    "Preview",
    "RESULTS",
    "ReleaseCandidate",
    "SCHEMA",
    "Admission",
    "Block",
    "DaemonSeen",
    "BreakGlassRequest",
    "Deployment",
    "DoraDeployment",
    "EnvironmentRecords",
    "FailureStatus",
    "Hold",
    "Store",
    "file_identity",
    "full_schema",
    "iso",
    "write_backup",
]
