"""The state database: db upgrade, copy, backup, restore, rebuild."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .common import (
    load_config as _config,
)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Bring the state database's schema to this gitopsd's version (the daemon does it at start too)."""
    from ..adapters.dbcopy import open_spec
    from ..adapters.store import Store

    store = open_spec(args.database, readonly=False) if args.database else Store.of(_config(args))
    with store:
        before, after = store.versions
        if before == after:
            print(f"{store.location}: the schema is at version {after}, nothing to do")
        else:
            print(
                f"{store.location}: the schema went from version {before} to {after}"
                + (" (a store from before schema versions, upgraded in place)" if before == 0 else "")
            )
    return 0


def cmd_db_copy(args: argparse.Namespace) -> int:
    """Copy every table of one state database into another (SQLite to PostgreSQL, or back)."""
    from ..adapters import dbcopy

    with dbcopy.open_spec(args.source, readonly=True) as source, dbcopy.open_spec(args.target, readonly=False) as target:
        if source.location == target.location:
            raise UserError(f"--from and --to are the same database ({source.location})")
        copied = dbcopy.copy(source, target, force=args.force)
        total = sum(copied.values())
        print(
            f"copied {total} row{'s' if total != 1 else ''} in {len(copied)} tables from {source.location} "
            f"to {target.location}{' (its records were replaced: --force)' if args.force else ''}"
        )
        for table, rows in copied.items():
            if rows:
                print(f"  {table}: {rows}")
        print("The source is unchanged. To run on the copy, set `database:` in the config to it, then restart the daemon.")
    return 0


def _sqlite_only(config: Any, what: str) -> None:
    if getattr(config, "database_url", ""):
        raise UserError(
            f"`gitopsd db {what}` is for the SQLite state database; with PostgreSQL use its own tools (pg_dump, pg_restore)"
        )


def cmd_db_backup(args: argparse.Namespace) -> int:
    """Copy the state database while the daemon runs (SQLite's online backup)."""
    from ..adapters import backups

    config = _config(args)
    _sqlite_only(config, "backup")
    target = Path(args.to) if args.to else backups.folder(config.backup_dir, config.state_dir)
    made = backups.backup(config.database, target)
    print(
        f"copied the state database {config.database} to {made}; restore it with `gitopsd db restore {made}` "
        f"(with the daemon stopped)"
    )
    return 0


def cmd_db_restore(args: argparse.Namespace) -> int:
    """Put a backup in place of the state database, the current one kept beside it; the daemon must be stopped."""
    import time

    from ..adapters import backups

    config = _config(args)
    _sqlite_only(config, "restore")
    source = Path(args.file).absolute()
    backups.check_store_file(source)  # before anything else: a wrong file changes nothing
    with backups.daemon_stopped(config.state_dir, f"gitopsd db restore {source}"):
        deployments, aside = backups.restore(source, config.database, time.time())
    print(f"restored {config.database} from {source} ({deployments} deployment{'s' if deployments != 1 else ''})")
    if aside is not None:
        print(f"the file it replaced was moved to {aside}")
    print("start the daemon again (systemctl start gitopsd)")
    return 0


def cmd_db_rebuild(args: argparse.Namespace) -> int:
    """Rebuild the deployment records, sign-offs, release candidates and approvals from the git notes."""
    import time

    from ..adapters import backups
    from ..services import notes_ledger

    config = _config(args)
    _sqlite_only(config, "rebuild")
    with backups.daemon_stopped(config.state_dir, "gitopsd db rebuild"):
        report = notes_ledger.rebuild(config, time.time())
    print("\n".join(report.lines()))
    return 0


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register these commands on the main parser (cli/main.py, build_parser)."""
    p = add(
        "db",
        "upgrade, copy, back up, restore or rebuild the state database",
        "`upgrade` brings the state database's schema to this gitopsd's version (the daemon does it at\n"
        "start too). `copy` copies every table, ids kept, from one state database to another: a SQLite\n"
        "file (sqlite:/var/lib/gitopsd/state.db) or PostgreSQL (postgresql://user@host/name). Stop the\n"
        'daemon first; the target must be empty unless --force (docs/install.md, "PostgreSQL").\n'
        "`backup` copies the SQLite store while the daemon runs; `restore FILE` puts a copy back and\n"
        "`rebuild` writes back what refs/notes/gitopsd records, both with the daemon stopped.",
        cmd_db_upgrade,
    )
    db = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = db.add_parser("upgrade", parents=[common], help="bring the schema to this version (also run at start)")
    d.set_defaults(func=cmd_db_upgrade)
    d.add_argument("--database", metavar="DB", help="sqlite:PATH or postgresql://... (default: the config's)")
    d = db.add_parser("copy", parents=[common], help="copy every table into another database")
    d.set_defaults(func=cmd_db_copy)
    d.add_argument("--from", dest="source", required=True, metavar="DB", help="sqlite:PATH or postgresql://...")
    d.add_argument("--to", dest="target", required=True, metavar="DB", help="sqlite:PATH or postgresql://...")
    d.add_argument("--force", action="store_true", help="replace the target's records if it has any")
    d = db.add_parser("backup", parents=[common], help="copy the SQLite state database now (the daemon may run)")
    d.set_defaults(func=cmd_db_backup)
    d.add_argument("--to", metavar="FILE", help="where to write the copy (default: <state_dir>/backups/state-TIME.db)")
    d = db.add_parser(
        "restore", parents=[common], help="put a backup in place of the state database (the daemon stopped; the old file kept)"
    )
    d.set_defaults(func=cmd_db_restore)
    d.add_argument("file", metavar="FILE", help="a copy `gitopsd db backup` or the daemon made")
    d = db.add_parser(
        "rebuild",
        parents=[common],
        help="rebuild the deployment records and approvals from refs/notes/gitopsd (the daemon stopped)",
    )
    d.set_defaults(func=cmd_db_rebuild)
