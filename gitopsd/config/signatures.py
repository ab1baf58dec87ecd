"""`signatures:` and `signed_push:`: the signed commits and pushes a repository and its environments require."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core.settings import Repository, Signatures
from .human_gates import _identities
from .problems import _Checker, _path_field

MAIN_BRANCH = "main"  # the integration branch a repository's own `signatures:` applies to
SIGNATURES_KEYS = {
    "allowed_signers": "SSH allowed signers file (ssh-keygen(1) ALLOWED SIGNERS)",
    "gpg_home": "OpenPGP keyring holding the allowed public keys",
    "paths": "who may sign changes to what: glob -> identities and group:NAME",
}


def _signatures(
    repo: Repository, raw: dict[str, Any], key: str, groups: dict[str, list[str]], base: Path, check: _Checker
) -> Repository:
    """Each environment's `signatures:` and `signed_push:`, and the repository's own `signatures:` for main
    (docs/trust-model.md, "Signed commits and signed pushes")."""
    if "signatures" in raw:
        repo = replace(repo, signatures=_signature_rule(raw["signatures"], False, key, groups, base, check))
    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list):
        return repo
    envs = list(repo.environments)
    for i, (env, env_raw) in enumerate(zip(envs, envs_raw, strict=True)):
        if not isinstance(env_raw, dict) or not ({"signatures", "signed_push"} & set(env_raw)):
            continue
        at = f"{key}.environments[{i}]"
        signed_push = env_raw.get("signed_push", False)
        if signed_push not in ("required", False):
            check.add(f"{at}.signed_push", f"must be `required` (or false), not {signed_push!r}")
        rule = _signature_rule(env_raw.get("signatures"), bool(signed_push), at, groups, base, check)
        envs[i] = replace(env, signatures=rule, signed_push=signed_push == "required")
    return replace(repo, environments=tuple(envs))


def _signature_rule(
    raw: Any, signed_push: bool, at: str, groups: dict[str, list[str]], base: Path, check: _Checker
) -> Signatures | None:
    """One `signatures:` mapping at `at`: the allowed signers' files (checked, allowed_signers line by line), paths."""
    from ..gate.signatures import allowed_signers_problems

    data = check.mapping(raw, f"{at}.signatures", SIGNATURES_KEYS) if raw is not None else {}
    found: dict[str, Path | None] = {}
    for name, what in (
        ("allowed_signers", "an SSH allowed_signers file (ssh-keygen(1), ALLOWED SIGNERS)"),
        ("gpg_home", "an OpenPGP keyring folder (a GNUPGHOME with the allowed public keys)"),
    ):
        path = _path_field(data[name], f"{at}.signatures.{name}", f"the path of {what}", base, check) if name in data else None
        found[name] = path
        try:
            exists = path is None or (path.is_file() if name == "allowed_signers" else path.is_dir())
        except PermissionError:
            continue  # a hook or a read-only command, as another user: the daemon and check-config see it
        if not exists:
            check.add(f"{at}.signatures.{name}", f"{path} does not exist: it must be {what}, kept outside the repository")
        elif path is not None and name == "allowed_signers":
            for problem in allowed_signers_problems(str(path))[:5]:
                check.add(f"{at}.signatures.allowed_signers", problem)
    if raw is not None and not any(found.values()):
        check.add(f"{at}.signatures", "names no allowed signers: set allowed_signers (SSH) and/or gpg_home (OpenPGP)")
    if signed_push and not any(found.values()):
        check.add(f"{at}.signed_push", "needs signatures.allowed_signers or signatures.gpg_home: who may sign a push")
    paths_raw = data.get("paths", {})
    paths: list[tuple[str, tuple[str, ...]]] = []
    if not isinstance(paths_raw, dict):
        check.add(f"{at}.signatures.paths", "must map path globs to signers, e.g. {'environments/production/**': [group:ops]}")
    else:
        for glob, signers in paths_raw.items():
            if not isinstance(glob, str) or not glob or "\n" in glob:
                check.add(f"{at}.signatures.paths", f"{glob!r} is not a path glob such as environments/production/**")
                continue
            paths.append((glob, _identities(signers, f"{at}.signatures.paths.{glob}", groups, check)))
    return Signatures(found["allowed_signers"], found["gpg_home"], tuple(paths)) if any(found.values()) else None
