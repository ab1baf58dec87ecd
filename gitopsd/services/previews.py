"""Promotion previews: what a promotion would change on each host, before anyone approves it (docs/preview.md).

`gitopsd preview SRC DST`, and each new release candidate, asks the daemon to run the candidate tree (what SRC
runs) with `--check --diff` against DST's inventory and vault, sandboxed like a deployment and changing nothing.
Previews run on threads of their own, one per target environment at a time: they never wait for a deployment
nor hold one up, and they are recorded as previews, never as deployments. Per host and task the record keeps
the files that would change with their diff, the packages, the services handlers would restart, the tasks that
cannot run in check mode ("cannot predict") and the hosts that could not be reached; never a `no_log` result
and never a value from the environment's vault. Approvals bind to the preview they saw (gate/approvals.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..adapters.runevents import render_diff
from ..adapters.store import Store
from ..base import gitcli
from ..core.deployment import guarded_by
from ..core.errors import CONFLICT, FORBIDDEN, INVALID, MISSING, GitopsdError, Refused, refusal_answer
from ..core.settings import Config, Environment, Notify, Repository
from ..core.tree import resolve_inside
from ..core.types import PlaybookRun, RunOutcome
from .named import environment, repository
from .releases import add_note, when

log = logging.getLogger("gitopsd.previews")

PACKAGES = {"package", "apt", "dnf", "dnf5", "yum", "pip", "apk", "zypper", "pacman", "snap", "homebrew", "gem", "npm"}
SERVICES = {"service", "systemd", "systemd_service", "sysvinit", "runit", "openrc"}
MAX_DIFF = 20_000  # characters of one task's diff kept
HIDDEN = "[hidden: vault secret]"
_CONDITIONAL_SKIP = re.compile(r'"skip_reason":')

RunWithEvents = Callable[[PlaybookRun, threading.Event, Callable[[dict[str, Any]], None]], RunOutcome]


def short_action(data: dict[str, Any]) -> str:
    """`ansible.builtin.template` -> `template`."""
    return str(data.get("resolved_action") or data.get("task_action") or "").rsplit(".", 1)[-1]


class Collector:
    """Turns a check-mode run's events into a preview: per host, per task, what would happen."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        self.handlers: set[str] = set()  # task uuids of handlers (ansible-runner marks their start `is_conditional`)
        self.hosts: dict[str, dict[str, Any]] = {}
        self.secrets = tuple(sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True))

    def _host(self, name: str) -> dict[str, Any]:
        return self.hosts.setdefault(name, {"state": "ok", "reason": "", "changes": []})

    def hide(self, text: str) -> str:
        """`text` with every vault value of the environment replaced (a template may put one in a file)."""
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event") or "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_task_start" and data.get("is_conditional"):
            self.handlers.add(str(data.get("task_uuid")))
            return
        host = data.get("host")
        if not host or not kind.startswith("runner_on_") or kind in ("runner_on_start", "runner_on_file_diff"):
            return
        raw = data.get("res")
        res: dict[str, Any] = raw if isinstance(raw, dict) else {}
        no_log = bool(res.get("_ansible_no_log")) or "censored" in res
        handler = str(data.get("task_uuid")) in self.handlers
        action = short_action(data)
        entry: dict[str, Any] = {
            "task": str(data.get("task") or action),
            "action": action,
            "handler": handler,
            "kind": "",
            "path": "",
            "diff": "",
            "note": "",
            "no_log": no_log,
        }
        if kind == "runner_on_unreachable":
            mine = self._host(str(host))
            mine["state"], mine["reason"] = "unreachable", self.hide(str(res.get("msg") or "unreachable"))[:500]
            return
        if kind == "runner_on_failed":
            if data.get("ignore_errors"):
                return
            mine = self._host(str(host))
            why = "(hidden: no_log)" if no_log else self.hide(str(res.get("msg") or "failed"))[:500]
            mine["state"], mine["reason"] = "failed", f"stopped at task {entry['task']!r}: {why}"
            entry.update(kind="cannot predict", note=f"failed in check mode: {why}")
        elif kind == "runner_on_skipped":
            if _CONDITIONAL_SKIP.search(str(event.get("stdout") or "")):
                return  # its `when` was false (or its loop empty): nothing would happen
            entry.update(
                kind="handler" if handler else "cannot predict",
                note="would run; cannot run in check mode" if handler else "cannot run in check mode",
            )
        elif kind == "runner_on_ok":
            if not _changed(event, res):
                return
            entry.update(self._change(action, handler, res, no_log))
        else:
            return
        self._host(str(host))["changes"].append(entry)

    def _change(self, action: str, handler: bool, res: dict[str, Any], no_log: bool) -> dict[str, Any]:
        """What a `changed` result says would change: a file and its diff, a package, a service, or a change."""
        diffs: list[Any] = []
        if not no_log:
            diffs += res["diff"] if isinstance(res.get("diff"), list) else [res.get("diff")]
            for item in res.get("results") or []:
                if isinstance(item, dict) and not item.get("_ansible_no_log") and "censored" not in item:
                    diffs += item["diff"] if isinstance(item.get("diff"), list) else [item.get("diff")]
        text = self.hide("".join(render_diff(d) for d in diffs if d))
        if len(text) > MAX_DIFF:
            text = text[:MAX_DIFF] + f"\n[diff cut at {MAX_DIFF} characters]\n"
        path = ""
        for d in diffs:
            if isinstance(d, dict) and (d.get("after_header") or d.get("before_header")):
                path = self.hide(str(d.get("after_header") or d.get("before_header")))
                break
        args = {} if no_log else ((res.get("invocation") or {}).get("module_args") or {})
        if action in SERVICES:
            name = str(args.get("name") or "")
            return {"kind": "service", "path": "", "diff": "", "note": f"{name} {args.get('state') or 'changed'}".strip()}
        if action in PACKAGES:
            names = args.get("name") or args.get("pkg") or []
            names = ", ".join(str(n) for n in names) if isinstance(names, list) else str(names)
            return {"kind": "package", "path": "", "diff": text, "note": self.hide(names)}
        return {
            "kind": "file" if path else "handler" if handler else "change",
            "path": path,
            "diff": text,
            "note": "(no_log: values hidden)" if no_log else "",
        }

    def result(self, outcome: RunOutcome) -> dict[str, Any]:
        """The preview of every host the run reached or tried, the stats' word on each host included."""
        for host, state in outcome.hosts.items():
            mine = self._host(host)
            if state != "ok" and mine["state"] == "ok":
                mine["state"] = state
        return {"hosts": {h: self.hosts[h] for h in sorted(self.hosts)}}


def _changed(event: dict[str, Any], res: dict[str, Any]) -> bool:
    """Whether a runner_on_ok says changed (a no_log result keeps only the line Ansible printed)."""
    if "censored" in res and "changed" not in res:
        return re.sub(r"\x1b\[[0-9;]*m", "", str(event.get("stdout") or "")).lstrip().startswith("changed:")
    return bool(res.get("changed"))


def digest(result: dict[str, Any]) -> str:
    """The same changes give the same digest (approvals carry over between such previews)."""
    shown = sorted(
        (host, c["task"], c["kind"], c["path"], c["diff"], c["note"])
        for host, h in (result.get("hosts") or {}).items()
        for c in h.get("changes", [])
    )
    states = sorted((host, h.get("state", "")) for host, h in (result.get("hosts") or {}).items())
    return hashlib.sha256(json.dumps([shown, states]).encode()).hexdigest()


def summary(result: dict[str, Any]) -> str:
    """One line: per host, how many files, packages, service restarts and unpredictable tasks."""
    parts = []
    for host, h in sorted((result.get("hosts") or {}).items()):
        if h.get("state") == "unreachable":
            parts.append(f"{host}: unreachable")
            continue
        counts: dict[str, int] = {}
        for c in h.get("changes", []):
            key = "service restart" if c["kind"] in ("service", "handler") else c["kind"]
            counts[key] = counts.get(key, 0) + 1
        words = (
            ", ".join(f"{n} {k}{'s' if n != 1 and not k.endswith('predict') else ''}" for k, n in sorted(counts.items()))
            or "no change"
        )
        parts.append(f"{host}: {words}" + (" (stopped early)" if h.get("state") == "failed" else ""))
    return "; ".join(parts) or "no hosts"


class Previewer:
    """Runs previews for the daemon: asked on the control socket (`op: preview`) and for each new release candidate."""

    def __init__(
        self,
        config: Callable[[], Config],
        store: Store,
        *,
        export: Callable[[Repository, str, Path], None],
        run: RunWithEvents,
        artifacts: Callable[[str, str], dict[str, dict[str, str]]],
        secrets: Callable[[PlaybookRun, threading.Event], tuple[str, ...]],
        marker: Callable[[int], str],
        notify: Callable[[Notify, dict[str, Any]], None],
        on_change: Callable[[str], None] = lambda _repo: None,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.store, self.export, self.run, self.artifacts = config, store, export, run, artifacts
        self.secrets, self.marker, self.notify, self.on_change, self.clock = secrets, marker, notify, on_change, clock
        self._queues: dict[tuple[str, str], ThreadPoolExecutor] = {}  # one preview per target at a time
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        for repo in config().repositories:  # a preview the last daemon left unfinished will never finish
            for row in store.previews(repo.name, limit=50):
                if row.state in ("queued", "running"):
                    store.update_preview(row.id, state="failed", now=clock(), reason="interrupted: the daemon stopped")

    def stop(self) -> None:
        """Cancel running previews and take no more."""
        self._cancel.set()
        with self._lock:
            for pool in self._queues.values():
                pool.shutdown(wait=False, cancel_futures=True)

    # -- asking ---------------------------------------------------------------------------------------------
    def request(self, identity: str, request: dict[str, Any]) -> dict[str, Any]:
        """Queue a preview as asked over the control socket; one line saying what was queued, or why not."""
        try:
            preview_id, line = self._queue(identity, request)
        except Refused as exc:
            return refusal_answer(exc)
        return {"ok": True, "message": line, "preview": preview_id, "identity": identity}

    def for_rc(self, repo_name: str, rc_name: str, identity: str) -> None:
        """A release candidate was created: preview it against its target, in the background."""
        try:
            self._queue(identity, {"repo": repo_name, "rc": rc_name})
        except Refused as exc:
            log.warning("no preview of rc/%s: %s", rc_name, exc, extra={"repo": repo_name})

    def for_promotion(self, repo_name: str, env_name: str, identity: str) -> None:
        """A promotion request into an environment with `approvals:` was refused for want of them: preview what its
        source runs against it (bound to that tree's newest candidate), in the background, unless a fresh one exists."""
        from .readmodels import preview_view

        repo = self.config().repository(repo_name)
        target = repo.environment(env_name) if repo is not None else None
        source = repo.environment_for_branch(target.promote_from) if repo is not None and target is not None else None
        deployed = self.store.deployed(repo_name, source.name) if source is not None else None
        if target is None or target.approvals is None or source is None or deployed is None:
            return
        for row in self.store.previews(repo_name, target_env=target.name, limit=20):
            if row.tree == deployed.tree and (
                row.state in ("queued", "running") or (row.state == "done" and not preview_view(self.store, row)["stale"])
            ):
                return  # a fresh one exists (or is on its way)
        rcs = [rc for rc in self.store.rcs(repo_name) if rc.target_env == target.name and rc.tree == deployed.tree]
        request = {"repo": repo_name, "rc": rcs[0].name} if rcs else {"repo": repo_name, "from": source.name, "to": target.name}
        try:
            self._queue(identity, request)
        except Refused as exc:
            log.warning("no preview for the promotion request to %s: %s", target.name, exc, extra={"repo": repo_name})

    def _queue(self, identity: str, request: dict[str, Any]) -> tuple[int, str]:
        config = self.config()
        repo = repository(config, request.get("repo"))
        rc_name = str(request.get("rc") or "").removeprefix("rc/")
        if rc_name:
            rc = self.store.rc(repo.name, rc_name)
            if rc is None:
                raise Refused(f"no release candidate rc/{rc_name} in {repo.name} (see gitopsd rc list)", MISSING, "rc_not_found")
            source, target = environment(repo, rc.source_env), environment(repo, rc.target_env)
            for given, env in ((request.get("from"), source), (request.get("to"), target)):
                if given and given != env.name:
                    raise Refused(
                        f"rc/{rc_name} goes from {source.name} to {target.name}, not {given}: "
                        f"gitopsd preview {source.name} {target.name} --rc {rc_name}",
                        INVALID,
                        "preview_rc_mismatch",
                    )
            commit, tree = rc.commit_id, rc.tree
        else:
            source, target = environment(repo, request.get("from")), environment(repo, request.get("to"))
            commit, tree = self._candidate(repo, source, request.get("tree"))
        if source.name == target.name:
            raise Refused(
                f"preview what {source.name} runs against another environment, not {target.name} itself",
                INVALID,
                "preview_same_env",
            )
        self._promotable(repo, target, tree)
        preview_id = self.store.add_preview(
            repo=repo.name,
            source_env=source.name,
            target_env=target.name,
            commit=commit,
            tree=tree,
            rc=rc_name,
            requested_by=identity,
            target_deployment=self.store.target_deployment(repo.name, target.name, tree),
            now=self.clock(),
        )
        with self._lock:
            if self._cancel.is_set():
                raise Refused("the daemon is stopping: ask again once it runs", FORBIDDEN, "daemon_stopping")
            pool = self._queues.get((repo.name, target.name))
            if pool is None:
                pool = self._queues[(repo.name, target.name)] = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"preview-{target.name}"
                )
            pool.submit(self._guarded, preview_id, repo.name, source.name, target.name, commit, tree, rc_name)
        what = f"rc/{rc_name}" if rc_name else f"{source.name}'s tree {tree[:7]}"
        log.info(
            "preview #%d of %s against %s asked by %s",
            preview_id,
            what,
            target.name,
            identity,
            extra={"repo": repo.name, "env": target.name, "commit": commit[:7]},
        )
        return preview_id, (
            f"preview #{preview_id} of {what} (commit {commit[:7]}) against {target.name}'s hosts "
            f"queued; see it: gitopsd preview --show {preview_id}"
        )

    def _promotable(self, repo: Repository, target: Environment, tree: str) -> None:
        """Raise Refused unless `tree` could be promoted into `target`: a preview runs it against target's hosts (a
        task with `check_mode: false` changes them), so a tree only qa ran may not reach production's hosts by it."""
        before = repo.environment_for_branch(target.promote_from)
        if before is None or any(self.store.tree_succeeded(repo.name, e.name, tree) for e in (before, target)):
            return
        raise Refused(
            f"tree {tree[:7]} never ran successfully in {before.name}, which {target.name} is promoted from: a preview "
            f"against {target.name}'s hosts runs only what may be promoted there (gitopsd preview {before.name} {target.name})",
            CONFLICT,
            "tree_not_verified",
        )

    def _candidate(self, repo: Repository, source: Environment, asked: Any) -> tuple[str, str]:
        """(commit, tree) to preview: what `source` runs, or a tree (or commit) it ran successfully."""
        if not asked:
            deployed = self.store.deployed(repo.name, source.name)
            if deployed is None or not self.store.tree_succeeded(repo.name, source.name, deployed.tree):
                raise Refused(
                    f"{source.name} runs nothing deployed and verified yet: nothing to preview (gitopsd status {source.name})",
                    CONFLICT,
                    "nothing_deployed",
                )
            return deployed.commit, deployed.tree
        text = str(asked)
        tree = gitcli.rev_parse(repo.path, f"{text}^{{tree}}") if re.fullmatch(r"[0-9a-fA-F]{4,64}", text) else None
        if tree is None:
            raise Refused(
                f"no commit or tree {text[:80]!r} in {repo.name}: give a commit or tree id", MISSING, "commit_not_found"
            )
        if not self.store.tree_succeeded(repo.name, source.name, tree):
            raise Refused(
                f"tree {tree[:7]} never ran successfully in {source.name}: preview only what {source.name} "
                f"runs or ran (gitopsd history {source.name})",
                CONFLICT,
                "tree_not_verified",
            )
        for d in self.store.history(repo=repo.name, env=source.name, limit=500):
            if d.tree == tree and d.result == "succeeded":
                return d.commit, tree
        raise Refused(
            f"tree {tree[:7]} ran in {source.name} too long ago to preview: promote it again first", CONFLICT, "tree_too_old"
        )

    # -- running --------------------------------------------------------------------------------------------
    def _guarded(self, preview_id: int, repo_name: str, source: str, target: str, commit: str, tree: str, rc: str) -> None:
        try:
            self._run(preview_id, repo_name, source, target, commit, tree, rc)
        except Exception as exc:  # a preview that cannot run says so in its record, never kills its thread
            log.exception("preview #%d crashed", preview_id, extra={"repo": repo_name, "env": target})
            self.store.update_preview(preview_id, state="failed", now=self.clock(), reason=f"internal error: {exc}")
        self.on_change(repo_name)

    def _run(self, preview_id: int, repo_name: str, source: str, target: str, commit: str, tree: str, rc: str) -> None:
        config = self.config()
        repo = repository(config, repo_name)
        env = environment(repo, target)
        deployed = self.store.deployed(repo.name, env.name)
        self.store.update_preview(
            preview_id, state="running", target_deployment=self.store.target_deployment(repo.name, env.name, tree)
        )
        folder = config.state_dir / "previews" / str(preview_id)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        started = time.monotonic()
        extra = {"repo": repo.name, "env": env.name, "commit": commit[:7]}
        try:
            workdir = folder / "tree"
            self.export(repo, commit, workdir)
            run = PlaybookRun(
                marker=f"{self.marker(0)}-preview-{preview_id}",
                workdir=workdir,
                playbook=resolve_inside(workdir, env.playbook),
                inventory=resolve_inside(workdir, env.inventory),
                data_dir=folder / "run",
                timeout=env.timeout,
                vault_password_file=env.vault_password_file,
                check_mode=True,
                verbose=True,
                guarded=guarded_by(repo, env),  # as a deployment there: a later environment's hosts stay out of reach
                extravars={
                    "gitopsd_env": env.name,
                    "gitopsd_repo": repo.name,
                    "gitopsd_commit": commit,
                    "gitopsd_tree": tree,
                    "gitopsd_previous_commit": deployed.commit if deployed else "",
                    "gitopsd_deploy_id": f"preview-{preview_id}",
                    "gitopsd_kind": "deploy",
                    "gitopsd_workdir": str(workdir),
                    "gitopsd_artifacts": self.artifacts(repo.name, tree),
                },
            )
            secrets = self.secrets(run, self._cancel) if env.vault_password_file is not None else ()
            collector = Collector(secrets)
            outcome = self.run(run, self._cancel, collector.handle)
            result = collector.result(outcome)
        except GitopsdError as exc:  # an export or an inventory that cannot be read says nothing about the hosts
            outcome, result = RunOutcome(False, "failed", None, str(exc)), {"hosts": {}}
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # the run's output holds what the record must not
        hosts = result["hosts"]
        unreachable = sorted(h for h, v in hosts.items() if v["state"] == "unreachable")
        if outcome.status in ("timeout", "canceled") or (not hosts and not outcome.ok):
            state, reason = "failed", outcome.reason
        elif unreachable:
            state, reason = "failed", f"unreachable: {', '.join(unreachable)}; the preview covers only the other hosts"
        else:
            state, reason = "done", summary(result)
        now = self.clock()
        self.store.update_preview(
            preview_id, state=state, now=now, reason=reason, digest=digest(result), result=json.dumps(result)
        )
        took = time.monotonic() - started
        (log.info if state == "done" else log.warning)(
            "preview #%d %s in %.1fs: %s", preview_id, state, took, reason, extra=extra
        )
        what = f"rc/{rc}" if rc else f"{source}'s tree {tree[:7]}"
        line = f"gitopsd: preview #{preview_id} of {what} against {env.name} at {when(now)}: {state}: {reason}"
        add_note(str(repo.path), commit, line if len(line) <= 1000 else line[:997] + "...")
        self.notify(
            env.notify,
            {
                "event": "preview-finished",
                "repo": repo.name,
                "env": env.name,
                "preview": preview_id,
                "rc": rc or None,
                "source": source,
                "commit": commit,
                "tree": tree,
                "state": state,
                "summary": reason,
            },
        )
