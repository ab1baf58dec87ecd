"""The state store as one package: the `Store` facade, its schema and migrations, and its two backends.

Callers import from here (`from gitopsd.adapters.store import Store`); the modules are the store's insides:
facade.py (the Store), schema.py (tables and migrations), dialect.py (SQLite's and PostgreSQL's SQL),
postgresql.py (the one importer of psycopg, loaded only for a `database: postgresql://...`).
"""
from __future__ import annotations

from .facade import (ACTIVE, KINDS, PG_WRITE_RETRY, RESULTS, SCHEMA, Admission, Block, Deployment, FailureStatus, Hold,
                     Store, file_identity, full_schema, iso, write_backup)

__all__ = ["ACTIVE", "KINDS", "PG_WRITE_RETRY", "RESULTS", "SCHEMA", "Admission", "Block", "Deployment", "FailureStatus",
           "Hold", "Store", "file_identity", "full_schema", "iso", "write_backup"]
