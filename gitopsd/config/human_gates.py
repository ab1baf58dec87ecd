"""`groups:` and each environment's human gates (approvals, sign-offs): who may say yes to a promotion."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..core.settings import Approvals, Repository, SignoffRule
from ..core.windows import WindowError, parse_duration
from .problems import IDENTITY_RE, NAME_RE, _Checker

APPROVALS_KEYS = {
    "required": "approvals needed",
    "approvers": "identities and group:NAME who may approve",
    "required_groups": "groups that must each give at least one approval",
    "forbid_self_approval": "not who created the candidate or pushed one of its changes",
    "expire_after": "how long an approval holds",
}
SIGNOFF_KEYS = {
    "env": "the environment whose sign-off is needed",
    "count": "sign-offs needed",
}


def _groups(raw: Any, check: _Checker) -> dict[str, list[str]]:
    """`groups: {product: [alice, bob], pm: [carol]}`: names for sets of identities (Unix users, Gitolite names)."""
    if not isinstance(raw, dict):
        check.add("groups", "must be a mapping of group names to lists of identities, e.g. {product: [alice, bob]}")
        return {}
    groups: dict[str, list[str]] = {}
    for name, members in raw.items():
        if not isinstance(name, str) or not NAME_RE.match(name):
            check.add(f"groups.{name}", "a group name is a plain name (lowercase letters, digits, '-' or '_')")
            continue
        if not (isinstance(members, list) and all(isinstance(m, str) and IDENTITY_RE.match(m) for m in members)):
            check.add(f"groups.{name}", "must be a list of identities (user names), e.g. [alice, bob]")
            continue
        groups[name] = list(dict.fromkeys(members))
    return groups


def _identities(value: Any, key: str, groups: dict[str, list[str]], check: _Checker) -> tuple[str, ...]:
    """A list of identities and `group:NAME` entries, resolved to identities."""
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        check.add(key, "must be a list of identities and group:NAME entries, e.g. [alice, group:product]")
        return ()
    found: list[str] = []
    for entry in value:
        if entry.startswith("group:"):
            if entry[6:] not in groups:
                check.add(key, f"{entry} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})")
            else:
                found += groups[entry[6:]]
        elif IDENTITY_RE.match(entry):
            found.append(entry)
        else:
            check.add(key, f"{entry!r} is not an identity (a user name) nor group:NAME")
    return tuple(dict.fromkeys(found))


def _human_gates(  # noqa: C901 (a config section: one branch per key)
    repo: Repository,
    raw: dict[str, Any],
    key: str,
    groups: dict[str, list[str]],
    check: _Checker,
) -> Repository:
    """Each environment's sign-off and approval settings (docs/human-gates.md), with groups resolved."""
    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list):
        return repo
    envs = list(repo.environments)
    for i, (env, env_raw) in enumerate(zip(envs, envs_raw, strict=True)):
        if not isinstance(env_raw, dict):
            continue
        at = f"{key}.environments[{i}]"
        signoff_by = _identities(env_raw.get("signoff_by", []), f"{at}.signoff_by", groups, check)
        rule = None
        if "require_signoff" in env_raw:
            data = check.mapping(env_raw["require_signoff"], f"{at}.require_signoff", SIGNOFF_KEYS)
            where = data.get("env", env.name)
            count = int(check.number(data, "count", f"{at}.require_signoff", 1, integer=True, minimum=1, maximum=100))
            rule = SignoffRule(str(where), count)
        approvals = None
        if "approvals" in env_raw:
            data = check.mapping(env_raw["approvals"], f"{at}.approvals", APPROVALS_KEYS)
            approvers = _identities(data.get("approvers", []), f"{at}.approvals.approvers", groups, check)
            required = int(check.number(data, "required", f"{at}.approvals", 1, integer=True, minimum=1, maximum=100))
            needed_raw = data.get("required_groups", [])
            needed: list[tuple[str, tuple[str, ...]]] = []
            if not (isinstance(needed_raw, list) and all(isinstance(g, str) for g in needed_raw)):
                check.add(f"{at}.approvals.required_groups", "must be a list of group names, e.g. [product]")
            else:
                for g in needed_raw:
                    name = g[6:] if g.startswith("group:") else g
                    if name not in groups:
                        check.add(
                            f"{at}.approvals.required_groups",
                            f"{g} names no group of `groups:` ({', '.join(sorted(groups)) or 'none defined'})",
                        )
                    else:
                        needed.append((name, tuple(groups[name])))
            if not approvers:
                check.add(f"{at}.approvals.approvers", "must name who may approve (identities or group:NAME)")
            elif required > len(approvers):
                check.add(
                    f"{at}.approvals.required",
                    f"{required} approvals can never be given: only "
                    f"{len(approvers)} identit{'y' if len(approvers) == 1 else 'ies'} may approve",
                )
            for name, members in needed:
                if not set(members) & set(approvers):
                    check.add(f"{at}.approvals.required_groups", f"no member of {name} is among the approvers")
            self_ok = data.get("forbid_self_approval", True)
            if not isinstance(self_ok, bool):
                check.add(f"{at}.approvals.forbid_self_approval", f"must be true or false, not {self_ok!r}")
                self_ok = True
            expire = None
            if data.get("expire_after") is not None:
                try:
                    expire = parse_duration(data["expire_after"]).total_seconds()
                except (WindowError, OverflowError) as exc:
                    check.add(f"{at}.approvals.expire_after", str(exc))
            approvals = Approvals(
                required=required,
                approvers=approvers,
                required_groups=tuple(needed),
                forbid_self_approval=self_ok,
                expire_after=expire,
            )
        envs[i] = replace(env, signoff_by=signoff_by, require_signoff=rule, approvals=approvals)
    for i, env in enumerate(envs):
        rule = env.require_signoff
        if rule is None:
            continue
        source = next((e for e in envs if e.name == rule.env), None)
        at = f"{key}.environments[{i}].require_signoff"
        if source is None:
            check.add(f"{at}.env", f"{rule.env!r} names no environment of this repository")
        elif not source.signoff_by:
            check.add(at, f"{rule.env} has no signoff_by: nobody could ever sign off there")
        elif rule.count > len(source.signoff_by):
            check.add(
                f"{at}.count",
                f"{rule.count} sign-offs can never be given: only {len(source.signoff_by)} "
                f"identit{'y' if len(source.signoff_by) == 1 else 'ies'} may sign off in {rule.env}",
            )
    return replace(repo, environments=tuple(envs))
