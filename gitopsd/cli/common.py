"""What every command group shares (cli.py, human_commands.py): the config --config names, the repository --repo names.

Below the command groups so that none of them imports another: cli.py registers them, they import only this.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..core.errors import UserError


def load_config(args: argparse.Namespace) -> Any:
    """The configuration --config names, or one line saying to run check-config."""
    from ..config import ConfigError, load
    try:
        return load(Path(args.config))
    except ConfigError as exc:
        raise UserError(f"the configuration has problems (run `gitopsd check-config --config {args.config}`):\n{exc}") from exc


def repository(config: Any, name: str | None) -> Any:
    """The repository --repo names (or the only one), or one line naming those there are."""
    if name is None:
        if len(config.repositories) == 1:
            return config.repositories[0]
        names = ", ".join(r.name for r in config.repositories)
        raise UserError(f"several repositories are configured ({names}): say which with --repo NAME")
    repo = config.repository(name)
    if repo is None:
        known = ", ".join(r.name for r in config.repositories) or "none"
        raise UserError(f"no repository named {name!r} in {config.source} (known: {known})")
    return repo
