"""A repository's `ci:`: the trigger that starts a CI server and the steps gitopsd runs itself."""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path
from typing import Any

from ..core.settings import STATUS_CONTEXT_MAX, Ci, CiStep, CiTrigger
from .problems import NAME_RE, _Checker, _url

CI_KEYS = {
    "trigger": "CI servers told of each new commit",
    "steps": "commands gitopsd runs itself on each new tree, in the sandbox",
    "branches": "branches CI runs for (globs)",
    "keep_artifacts": "how many builds' artifacts are kept (default 20)",
    "provenance_keys": "PEM public keys of CI servers whose signed provenance is accepted",
}
CI_TRIGGER_KEYS = {
    "url": "the CI server's URL",
    "kind": "generic, jenkins, gitlab, circleci or buildbot",
    "branches": "branches that trigger it (globs)",
    "secret_file": "file holding the token or secret sent with the request",
    "timeout": "seconds per request",
    "retries": "attempts after a failed request",
}
CI_TRIGGER_KINDS = ("generic", "jenkins", "gitlab", "circleci", "buildbot")
CI_STEP_KEYS = {
    "name": "the step's name (its check context)",
    "run": "argv of the command",
    "artifacts": "files kept from the step (globs)",
    "timeout": "seconds the step may take",
}


def _globs(value: Any, key: str, check: _Checker, default: tuple[str, ...]) -> tuple[str, ...]:
    """A list of branch name globs such as [main, "feature/*"]."""
    if value is None:
        return default
    if not (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) and v and "\0" not in v and not v.startswith("-") for v in value)
    ):
        check.add(key, "must be a non-empty list of branch names or globs, e.g. [main, 'feature/*']")
        return default
    return tuple(value)


def _ci(raw: Any, key: str, check: _Checker) -> Ci:  # noqa: C901 (a config section: one branch per key)
    """A repository's `ci:` section: CI servers to trigger and built-in steps (docs/ci.md, "Continuous integration")."""
    data = check.mapping(raw, key, CI_KEYS)
    branches = _globs(data.get("branches"), f"{key}.branches", check, Ci.branches)
    triggers_raw = data.get("trigger", [])
    if not isinstance(triggers_raw, list):
        check.add(f"{key}.trigger", "must be a list of CI servers, e.g. [{url: 'https://ci.example/hook', kind: jenkins}]")
        triggers_raw = []
    triggers = []
    for i, item in enumerate(triggers_raw):
        at = f"{key}.trigger[{i}]"
        t = check.mapping(item, at, CI_TRIGGER_KEYS)
        if not t:
            continue
        kind = t.get("kind", "generic")
        if kind not in CI_TRIGGER_KINDS:
            check.add(f"{at}.kind", f"must be one of {', '.join(CI_TRIGGER_KINDS)}, not {kind!r}")
            kind = "generic"
        secret = t.get("secret_file")
        if secret is not None and not (isinstance(secret, str) and secret.startswith("/") and "\0" not in secret):
            check.add(f"{at}.secret_file", f"must be an absolute path to a file outside the repository, not {secret!r}")
            secret = None
        if kind in ("gitlab", "circleci") and secret is None:
            check.add(f"{at}.secret_file", f"a {kind} trigger needs the file holding its token")
        triggers.append(
            CiTrigger(
                url=_url(t.get("url"), f"{at}.url", check),
                kind=str(kind),
                branches=_globs(t.get("branches"), f"{at}.branches", check, branches),
                secret_file=Path(posixpath.normpath(secret)) if secret else None,
                timeout=check.seconds(t, "timeout", at, 10.0, minimum=0.1),
                retries=int(check.number(t, "retries", at, 5, integer=True, minimum=0, maximum=20)),
            )
        )
    steps_raw = data.get("steps", [])
    if not isinstance(steps_raw, list):
        check.add(f"{key}.steps", "must be a list of steps, e.g. [{name: test, run: 'make check'}]")
        steps_raw = []
    steps: list[CiStep] = []
    for i, item in enumerate(steps_raw):
        at = f"{key}.steps[{i}]"
        st = check.mapping(item, at, CI_STEP_KEYS)
        if not st:
            continue
        name = st.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            check.add(f"{at}.name", f"must be a plain name (lowercase letters, digits, '-' or '_'), not {name!r}")
            name = ""
        elif any(s.name == name for s in steps):
            check.add(f"{at}.name", f"step {name!r} is defined twice")
        run = st.get("run")
        argv: list[str] = []
        if isinstance(run, str):
            try:
                argv = shlex.split(run)
            except ValueError as exc:
                check.add(f"{at}.run", f"cannot be split into arguments: {exc}")
        elif isinstance(run, list) and all(isinstance(a, str) for a in run):
            argv = list(run)
        if not argv or any("\0" in a for a in argv):
            check.add(
                f"{at}.run",
                "must be a command, e.g. 'make check' or [make, check] (no shell: for pipes or &&, write [sh, -c, '...'])",
            )
            argv = []
        artifacts = st.get("artifacts", [])
        if not (isinstance(artifacts, list) and all(isinstance(a, str) and a for a in artifacts)):
            check.add(f"{at}.artifacts", "must be a list of file globs relative to the tree, e.g. ['dist/*.tar.gz']")
            artifacts = []
        artifacts = [check.relpath(a, f"{at}.artifacts") for a in artifacts]
        steps.append(
            CiStep(
                name=name or "",
                run=tuple(argv),
                artifacts=tuple(a for a in artifacts if a),
                timeout=int(check.seconds(st, "timeout", at, 1800, integer=True, minimum=1)),
            )
        )
    keys = data.get("provenance_keys", [])
    if not (isinstance(keys, list) and all(isinstance(k, str) and k.startswith("/") and "\0" not in k for k in keys)):
        check.add(
            f"{key}.provenance_keys",
            "must be a list of absolute paths to PEM public keys of CI servers whose "
            "signed provenance this repository accepts, e.g. [/etc/gitopsd/ci.pub]",
        )
        keys = []
    return Ci(
        trigger=tuple(triggers),
        steps=tuple(steps),
        branches=branches,
        keep_artifacts=int(check.number(data, "keep_artifacts", key, 20, integer=True, minimum=0)),
        provenance_keys=tuple(Path(posixpath.normpath(k)) for k in keys),
    )


def _contexts(value: Any, key: str, check: _Checker) -> tuple[str, ...]:
    """require_checks: commit status contexts such as [ci/build, ci/test]."""
    if not (
        isinstance(value, list)
        and all(isinstance(v, str) and v.strip() and len(v) <= STATUS_CONTEXT_MAX and "\n" not in v for v in value)
    ):
        check.add(key, "must be a list of commit status contexts, e.g. [ci/build, ci/test]")
        return ()
    return tuple(dict.fromkeys(value))
