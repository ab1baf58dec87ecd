"""`gitopsd verify ARTIFACT|DEPLOYMENT`: does the signed provenance of what was built hold (ci/provenance.py)?"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..core.errors import UserError
from .common import load_config


def cmd_verify(args: argparse.Namespace) -> int:
    """Print one line per artifact (or uploaded statement) checked; exit 1 when any does not hold."""
    from ..ci import provenance  # lazily: cryptography and the settings only when verifying (status stays fast)

    config = load_config(args)
    target: str = args.target
    if target.isdigit() and not Path(target).exists():
        from ..adapters.store import Store

        with Store.of(config, readonly=True) as store:
            deployment = store.get(int(target))
        if deployment is None:
            raise UserError(f"no deployment #{target}: see `gitopsd history` for their numbers")
        print(f"deployment #{deployment.id}: {deployment.repo} {deployment.env} tree {deployment.tree[:12]}")
        findings = provenance.verify_tree(config, deployment.repo, deployment.tree)
    elif Path(target).is_file():
        findings = provenance.verify_file(config, Path(target))
    else:
        raise UserError(
            f"{target!r} is neither a deployment number nor a file: give one of them, "
            "e.g. `gitopsd verify 42` or `gitopsd verify /var/lib/gitopsd/artifacts/sha256/<hex>`"
        )
    for finding in findings:
        print(finding.line)
    return 0 if all(f.ok for f in findings) else 1


def add_commands(add: Callable[..., argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Register `verify` on the main parser (cli.build_parser)."""
    p = add(
        "verify",
        "check the signed provenance of an artifact or of what a deployment ran",
        'Check the in-toto provenance of built artifacts (docs/ci.md, "Signed provenance"): for each, that\n'
        "its DSSE envelope is signed by the service's key (or a key in ci.provenance_keys), that it is about\n"
        "the deployed tree, and that the stored file still has the sha256 signed. One line per result;\n"
        "exit code 1 when any does not hold.",
        cmd_verify,
    )
    p.add_argument("target", metavar="ARTIFACT|DEPLOYMENT", help="a kept artifact's file, or a deployment number")
