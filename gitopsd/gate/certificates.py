"""Signed pushes at the hook: who signed the push certificate, for environments with `signed_push: required`.

Imported only when a push moves such an environment (receive.py), and by promotion_request.py, for the same rule.
"""

from __future__ import annotations

from . import policy

TYPE_CHECKING = False  # true for mypy and import-linter only: the hook does not import typing

if TYPE_CHECKING:  # annotations only
    from typing import TextIO

    from .push import RefUpdate
    from .snapshot import GateEnvironment


def certified_pusher(
    env_updates: list[tuple[RefUpdate, GateEnvironment]], repo_path: str, config_path: str, out: TextIO
) -> str | None:
    """The push certificate's signer when an environment pushed to has `signed_push: required`; '' when none has;
    None (after saying why) when the certificate is missing, replayed or signed by a key that is not allowed."""
    signer = ""
    for update, env in env_updates:
        rule = env.signatures
        if rule is None or not rule.signed_push:
            continue
        from .signatures import kept_in, push_certificate

        found, why = push_certificate(repo_path, rule)
        if found is None:
            verdict = policy.refuse(
                "signed-push",
                f"{env.name} only takes signed pushes (git push --signed) by an allowed signer, with a fresh certificate",
                [why],
                [
                    f"push again, signed: git push --signed origin {update.ref}",
                    f"a key that is not allowed: ask an operator to add yours to {kept_in(rule) or 'the allowed signers'}",
                ],
            )
            print("\n".join(verdict.refusal_lines(update.ref, config_path)), file=out)
            return None
        signer = signer or found
    return signer
