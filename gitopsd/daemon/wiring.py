"""The reconciler's ports over the real adapters: Git through pygit2, the policy judge, Ansible and the checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from .. import config as config_mod
from ..adapters import runner, sandbox, signing
from ..adapters.gitrepo import GitRepository
from ..adapters.store import Store
from ..ci import provenance
from ..ci.artifacts import ArtifactStore
from ..config import Config
from ..core.deployment import Toolbox
from ..core.ports import Verdict
from ..core.settings import HttpCheck, PrometheusCheck, SandboxPolicy
from ..core.types import CheckResult, Deployment, DeploymentFolders, Head, HostInfo, PlaybookRun, RunOutcome
from ..gate import policy, snapshot
from ..services import nodes
from ..services.revert import make_revert


class PygitPort:
    """The reconciler's view of Git, over pygit2."""

    REUSE_FOR = 1.0  # seconds a thread's open repository serves its next head reads (refs are read anew each time)

    def __init__(self) -> None:
        self._last = threading.local()  # (path, opened at, GitRepository holding its handle): handles are per thread

    def head(self, repo: config_mod.Repository, branch: str) -> Head | None:
        """The branch head, through the repository this thread opened for its last head read if it is the same and
        recent: a look at 3 environments opens it once, not 3 times (a third of a sweep's CPU at 1,000, issue 28)."""
        path, at, opened = getattr(self._last, "repo", (None, 0.0, None))
        now = time.monotonic()
        if opened is None or path != repo.path or now - at > self.REUSE_FOR:
            opened = GitRepository(repo.path, keep_open=True)
            self._last.repo = (repo.path, now, opened)
        return opened.head(branch)

    def export(self, repo: config_mod.Repository, commit: str, dest: Path) -> None:
        GitRepository(repo.path).export(commit, dest)

    def revert(self, repo: config_mod.Repository, branch: str, head: str, good_tree: str, *, reason: str) -> str | None:
        """The automatic rollback's revert commit, written and moved through the git CLI (revert.py)."""
        return make_revert(repo.path, branch, head, good_tree, requested_by="gitopsd", reason=reason, automatic=True)


class PolicyJudge:
    """`policy.judge`, as the hook runs it, over this daemon's store and Git (through the git CLI)."""

    def __init__(self, config: Callable[[], Config], store: Store):
        self.config, self.store = config, store
        self._gate: tuple[Config, snapshot.GateConfig] | None = None

    def gate_config(self) -> snapshot.GateConfig:
        """The gate's view of the running configuration (rebuilt after a reload)."""
        config = self.config()
        gate = self._gate
        if gate is None or gate[0] is not config:
            gate = self._gate = (config, snapshot.from_config(config))
        return gate[1]

    def __call__(
        self,
        repo: config_mod.Repository,
        env: config_mod.Environment,
        desired: Head,
        deployed: Deployment | None,
        check_windows: bool,
    ) -> Verdict:
        view = self.gate_config().repository(repo.name)
        gate_env = view.environment(env.name) if view else None
        if view is None or gate_env is None:
            return policy.refuse(
                "other", "the configuration changed meanwhile", [f"{repo.name}/{env.name} is not configured"], []
            )
        return policy.judge(
            view,
            str(repo.path),
            self.store,
            gate_env,
            deployed.commit if deployed else None,
            desired.commit,
            identity="gitopsd",
            check_windows=check_windows,
            ssh_crypto=signing.ssh_crypto,
        )


def sandbox_policy(config: Config) -> SandboxPolicy:
    """What playbook runs and inventory reads may see: the config's sandbox, with gitopsd's own paths hidden."""
    return sandbox.for_config(config)


def real_toolbox(config: Config, placement: nodes.Placement | None = None) -> Toolbox:
    """Ansible (in the sandbox, or on an execution node), its inventory parser (in the sandbox) and the checks, for real."""
    from ..adapters import checks

    sandboxed = sandbox_policy(config)
    placement = placement or nodes.Placement(config.execution_nodes, config.known_hosts)

    def run_playbook(run: PlaybookRun, cancel: threading.Event) -> RunOutcome:
        return placement.run(
            run, cancel, nodes.placed(config, run), sandboxed, lambda: runner.run_playbook(run, cancel, sandboxed)
        )

    def hosts_of(run: PlaybookRun, names: tuple[str, ...], cancel: threading.Event) -> list[HostInfo]:
        return runner.read_hosts(
            run.inventory,
            names,
            workdir=run.workdir,
            data_dir=DeploymentFolders(run.data_dir.parent).inventory,
            marker=run.marker,
            timeout=run.timeout,
            cancel=cancel,
            policy=sandboxed,
        )

    def http(check: HttpCheck, host: HostInfo, commit: str) -> CheckResult:
        try:
            return checks.run_http(check, host, commit)
        except checks.CheckError as exc:  # e.g. the URL names a variable the host does not have
            return CheckResult(False, f"http {host.name}", str(exc))

    def prometheus(check: PrometheusCheck, commit: str, env: str) -> CheckResult:
        try:
            return checks.run_prometheus(check, commit, env)
        except checks.CheckError as exc:
            return CheckResult(False, "prometheus", str(exc))

    return Toolbox(
        run_playbook=run_playbook,
        hosts_of=hosts_of,
        check_http=http,
        check_prometheus=prometheus,
        artifacts=ArtifactStore(config.artifacts_dir).for_deployment,
        provenance=lambda repo, tree: provenance.refusal(config, repo, tree),
    )
