"""Where a deployment's playbook runs: here, or on an execution node; and `gitopsd node check NAME`.

An environment's `execution_node` is `local` (the default: here, in the sandbox), a node's name
(always that node; when it is down the run fails as `unreachable node` and is retried with the
environment's backoff), or `any`: the least busy of the execution nodes (running runs over its
max_parallel), never the controller itself, so that `any` keeps the deploy server to deciding and
recording. A node that is down is skipped with a log line and remembered as down for DOWN_FOR
seconds, so retries go elsewhere; when every node is down, the run fails as `unreachable node`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..adapters import remote
from ..core.errors import GitopsdError
from ..core.settings import Config, ExecutionNode, SandboxPolicy
from ..core.types import PlaybookRun, RunOutcome

log = logging.getLogger("gitopsd.nodes")

DOWN_FOR = 30.0  # seconds `any` prefers other nodes after one did not answer


class Placement:
    """Places runs on execution nodes and keeps count of what runs where and which nodes went down."""

    def __init__(self, nodes: tuple[ExecutionNode, ...], known_hosts: Path):
        self._cond = threading.Condition()
        self._busy: dict[str, int] = {}
        self._down: dict[str, tuple[float, str]] = {}  # node -> (until when, why)
        self._info: dict[str, remote.NodeInfo] = {}  # what each node said at first use (home, versions)
        self.nodes: dict[str, ExecutionNode] = {}
        self.known_hosts = known_hosts
        self.configure(nodes, known_hosts)

    def configure(self, nodes: tuple[ExecutionNode, ...], known_hosts: Path) -> None:
        """Take a reloaded configuration's nodes; counts of running runs are kept, what nodes said is asked again."""
        with self._cond:
            self.nodes = {n.name: n for n in nodes}
            self.known_hosts = known_hosts
            self._info.clear()

    def busy(self) -> dict[str, int]:
        """Runs in progress per node."""
        with self._cond:
            return {name: self._busy.get(name, 0) for name in self.nodes}

    def run(
        self, run: PlaybookRun, cancel: threading.Event, where: str, policy: SandboxPolicy | None, local: Callable[[], RunOutcome]
    ) -> RunOutcome:
        """Run `run` where `where` says (local | any | a node's name); `local` runs it here."""
        if where == "local":
            return local()
        extra = {
            "repo": run.extravars.get("gitopsd_repo"),
            "env": run.extravars.get("gitopsd_env"),
            "deployment": run.extravars.get("gitopsd_deploy_id"),
        }
        if where != "any" and where not in self.nodes:
            return RunOutcome(
                False,
                "failed",
                None,
                f"execution node {where!r} is not configured: add it to execution_nodes or change execution_node",
                permanent=True,
            )
        tried: list[str] = []
        problems: list[str] = []
        while not cancel.is_set():
            node = self._acquire(where, tried, cancel)
            if node is None:
                break
            try:
                log.info("running %s on execution node %s", run.data_dir.name, node.name, extra=extra)
                result = self._run_on(node, run, cancel, policy)
            finally:
                with self._cond:
                    self._busy[node.name] -= 1
                    self._cond.notify_all()
            if result.problem is not None and result.problem.down:
                with self._cond:
                    self._down[node.name] = (time.monotonic() + DOWN_FOR, str(result.problem))
            if result.problem is not None and not result.reached and where == "any" and not cancel.is_set():
                log.warning("%s; skipped, placing the run elsewhere", result.problem, extra=extra)
                tried.append(node.name)
                problems.append(str(result.problem))
                continue
            return replace(result.outcome, node=node.name)  # the deployment's record says where it ran
        if cancel.is_set():
            return RunOutcome(False, "canceled", None, "run was canceled")
        return RunOutcome(
            False,
            "failed",
            None,
            "unreachable node: no execution node could take the run (" + "; ".join(problems or ["none is configured"]) + ")",
        )

    def reap(self, marker: str, where: str) -> list[str]:
        """After a crash: kill what a run with `marker` left on the node(s) `where` names. Return the nodes reached."""
        targets = (
            []
            if where == "local"
            else list(self.nodes.values())
            if where == "any"
            else [self.nodes[where]]
            if where in self.nodes
            else []
        )
        reached: list[str] = []

        def kill(node: ExecutionNode) -> None:
            if remote.kill_remote(node, self.known_hosts, marker):
                reached.append(node.name)
            else:
                log.warning(
                    "execution node %s: could not reach it to stop what run %s left there; its worker "
                    "stops by itself at the run's timeout",
                    node.name,
                    marker,
                )

        threads = [threading.Thread(target=kill, args=(node,), daemon=True) for node in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(remote.KILL_TIMEOUT + 5)
        return sorted(reached)

    def _acquire(self, where: str, tried: list[str], cancel: threading.Event) -> ExecutionNode | None:
        """The node to run on now (waiting for a free slot), counted as busy; None when every node was tried."""
        with self._cond:
            while not cancel.is_set():
                names = [where] if where != "any" else [n for n in self.nodes if n not in tried]
                candidates = [self.nodes[n] for n in names if n in self.nodes]
                if not candidates or (where != "any" and tried):
                    return None
                candidates.sort(key=self._order)
                best = candidates[0]
                if self._busy.get(best.name, 0) < best.max_parallel:
                    self._busy[best.name] = self._busy.get(best.name, 0) + 1
                    return best
                self._cond.wait(0.5)
            return None

    def _order(self, node: ExecutionNode) -> tuple[bool, float, str]:
        """Least busy first; a node that went down lately comes last (it is tried when nothing else is left)."""
        down = self._down.get(node.name, (0.0, ""))[0] > time.monotonic()
        return down, self._busy.get(node.name, 0) / node.max_parallel, node.name

    def _run_on(
        self, node: ExecutionNode, run: PlaybookRun, cancel: threading.Event, policy: SandboxPolicy | None
    ) -> remote.NodeRun:
        """Ask the node about itself at first use (its home, a matching ansible-runner), then run there."""
        info = self._info.get(node.name)
        if info is None:
            try:
                info = remote.probe(node, self.known_hosts)
            except remote.NodeError as exc:
                return remote.NodeRun(RunOutcome(False, "failed", None, str(exc), permanent=exc.untrusted), False, exc)
            problem = remote.version_problem(node, info)
            if problem:
                return remote.NodeRun(
                    RunOutcome(False, "failed", None, problem, permanent=True), False, remote.NodeError(problem)
                )
            self._info[node.name] = info
        result = remote.run_on_node(node, info, run, cancel, policy, self.known_hosts)
        if result.problem is not None:
            self._info.pop(node.name, None)  # ask again next time: it may come back reinstalled
        return result


class NodeCheckError(GitopsdError):
    """`gitopsd node check` cannot go on: the message says what to do."""


def check(
    config: Config,
    name: str,
    *,
    trust: bool = False,
    yes: bool = False,
    ask: Callable[[str], str] = input,
    say: Callable[[str], None] = print,
) -> int:
    """`gitopsd node check NAME [--trust]`: connect, report the node's versions, refuse a mismatched ansible-runner."""
    node = config.execution_node(name)
    if node is None:
        known = ", ".join(n.name for n in config.execution_nodes) or "none"
        raise NodeCheckError(f"no execution node {name!r} in {config.source} (configured: {known}): add it under execution_nodes")
    if trust and _trust(config, node, yes=yes, ask=ask, say=say) != 0:
        return 1
    try:
        info = remote.probe(node, config.known_hosts, full=True)
    except remote.NodeError as exc:
        say(str(exc))
        return 1
    say(f"{node.name} ({node.destination}, port {node.port}): connected")
    say(
        f"    python {info.ansible_python or info.python or '?'}, ansible-core {info.ansible_core or '?'}, "
        f"ansible-runner {info.runner or '?'}"
    )
    problem = remote.version_problem(node, info)
    if problem:
        say(problem)
        return 1
    say(f"ok: ansible-runner {info.runner} matches the controller's {remote.controller_runner_version()}")
    return 0


def _trust(config: Config, node: ExecutionNode, *, yes: bool, ask: Callable[[str], str], say: Callable[[str], None]) -> int:
    """Record the node's SSH host key in the service's known_hosts after showing its fingerprints (as `hosts trust`)."""
    from . import hosts

    scanned = hosts.scan(node.name, node.host, node.port)
    try:
        existing = config.known_hosts.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        existing = []
    hosts.compare([scanned], existing)
    say(f"{node.name} ({node.host}:{node.port}): host key {scanned.state}")
    for fingerprint in scanned.fingerprints:
        say(f"    {fingerprint}")
    if not scanned.lines:
        return 1
    if scanned.state == "known":
        return 0
    if not yes:
        try:
            answer = ask(f"record the key of {node.name} in {config.known_hosts}? [y/N] ")
        except EOFError:
            raise NodeCheckError(
                "no answer (stdin is not a terminal): check the fingerprints above, then run again with --yes"
            ) from None
        if answer.strip().lower() not in ("y", "yes"):
            say("nothing recorded")
            return 1
    try:
        hosts.record(config.known_hosts, [scanned])
    except OSError as exc:
        raise NodeCheckError(f"cannot write {config.known_hosts}: {exc.strerror}; run this as the daemon's user or root") from exc
    say(f"recorded the key of {node.name} in {config.known_hosts}")
    return 0


def placed(config: Any, run: PlaybookRun) -> str:
    """Where the environment of `run` (named in its extra vars, as the reconciler wrote them) runs its playbooks."""
    return placement_of(config, str(run.extravars.get("gitopsd_repo", "")), str(run.extravars.get("gitopsd_env", "")))


def placement_of(config: Any, repo_name: str, env_name: str) -> str:
    """An environment's execution_node (local when it is not configured)."""
    repo = config.repository(repo_name)
    env = repo.environment(env_name) if repo is not None else None
    return env.execution_node if env is not None else "local"
