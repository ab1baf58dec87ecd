"""The server configuration as typed, frozen values: what `config.load` returns and the core reads.

Stdlib only (no YAML, no adapter): config/ parses and validates into these; the reconciler, a
deployment and the checks read them. Each setting has one class (the HTTP and Prometheus checks
are the same objects in the config and when they run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import ConfigurationError
from .lookup import by_branch, by_name, by_path
from .windows import Window


@dataclass(frozen=True)
class SandboxPolicy:
    """What runs may see, from the configuration. `hide` lists gitopsd's own paths."""

    enabled: bool = True
    user: str | None = None  # drop to this user when the daemon is root; None: stay
    read_only: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    hide: tuple[Path, ...] = ()
    known_hosts: Path | None = None  # ssh's only known_hosts file (docs/install.md, "SSH trust"); shown read-only
    requirements_cache: Path | None = None  # roles and collections installed from trees' requirements.yml
    network: bool = False  # CI steps reach the network (playbook runs: playbook_network)
    playbook_network: str = "ssh-only"  # playbook runs: "ssh-only" (SSH through the run's forwarder) | "host"
    daemon_addresses: tuple[tuple[str, int], ...] = ()  # where the daemon listens (API, dashboard): never forwarded to
    shared_hosts: tuple[tuple[str, int], ...] = ()  # SSH hosts earlier environments may reach though later ones name them


class CheckError(ConfigurationError, ValueError):
    """A check that cannot be run as configured: raised before any request is made."""


@dataclass(frozen=True)
class HttpCheck:
    """GET a URL on each host: `url` is a template over the host's variables, e.g.
    "http://{ansible_host}:{app_port}/health". With `json_field` (a dotted path such as
    "build.commit"), the body's field must name the deployed commit. `retries` are attempts
    after the first, `interval` seconds apart; `timeout` is per attempt."""

    url: str
    expect_status: int = 200
    json_field: str | None = None
    timeout: float = 2.0
    retries: int = 3
    interval: float = 0.5

    def __post_init__(self) -> None:
        if not 100 <= self.expect_status <= 599:
            raise CheckError(f"expect_status {self.expect_status} is not an HTTP status")
        if self.timeout <= 0 or self.retries < 0 or self.interval < 0:
            raise CheckError("timeout must be positive, retries and interval not negative")
        if self.json_field is not None and not all(self.json_field.split(".")):
            raise CheckError(f"json_field {self.json_field!r} is not a dotted path like build.commit")


@dataclass(frozen=True)
class PrometheusCheck:
    """An instant query against Prometheus at `url` (e.g. "http://prometheus:9090"); every
    returned sample must lie within [min_value, max_value] (a missing bound is no bound).
    `{commit}` and `{env}` in the query are replaced by the deployed commit and the environment,
    e.g. `sum(rate(http_errors_total{env="{env}",commit="{commit}"}[5m]))`; other braces are
    PromQL's. `name` names the check in results; by default the query itself."""

    url: str
    query: str
    max_value: float | None = None
    min_value: float | None = None
    timeout: float = 5.0
    name: str | None = None
    retries: int = 0  # a watch asks again this often when Prometheus is down or answers garbage

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0:
            raise CheckError("timeout must be positive, retries not negative")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise CheckError(f"min_value {self.min_value} is above max_value {self.max_value}")


@dataclass(frozen=True)
class Rollout:
    """Deploy in batches of hosts; a batch passes when its playbook run and all checks pass through its bake."""

    batches: tuple[int | str, ...] = ("100%",)
    max_fail_percentage: float = 0.0
    bake: float = 0.0


@dataclass(frozen=True)
class Verify:
    http: HttpCheck | None = None
    playbook: str | None = None  # a verification playbook from the tree, run against each batch
    prometheus: PrometheusCheck | None = None

    @property
    def any(self) -> bool:
        return bool(self.http or self.playbook or self.prometheus)


@dataclass(frozen=True)
class Watch:
    """`watch:` after a successful deployment, run these checks every `interval` seconds for `duration`.

    A breach rolls back where auto_rollback is on. A check that cannot get a verdict (Prometheus
    down, garbage answers, after its retries) is inconclusive: `inconclusive` fail treats it as a
    breach, pass ignores it (logged)."""

    duration: float
    interval: float = 30.0
    http: tuple[HttpCheck, ...] = ()
    prometheus: tuple[PrometheusCheck, ...] = ()
    inconclusive: str = "fail"  # fail | pass


@dataclass(frozen=True)
class Drift:
    """`drift:` run the deployed tree's playbook in check mode every `interval` seconds (jittered);
    with `heal`, re-apply the deployed tree when hosts drifted (with backoff)."""

    interval: float = 3600.0
    heal: bool = False


@dataclass(frozen=True)
class Notify:
    """Who hears about every failed deployment and every rollback: a command (JSON on stdin) and/or a webhook."""

    command: tuple[str, ...] = ()
    webhook: str | None = None


@dataclass(frozen=True)
class CiTrigger:
    """A CI server to tell about every new head of the branches matching `branches` (globs).

    `kind` says how the request is shaped: generic (gitopsd's JSON, also for Jenkins' Generic
    Webhook Trigger), gitlab (pipeline trigger API), circleci (pipeline API), buildbot (its `base`
    change hook). `secret_file` holds the token the kind sends (outside any repository)."""

    url: str
    kind: str = "generic"
    branches: tuple[str, ...] = ("main",)
    secret_file: Path | None = None
    timeout: float = 10.0
    retries: int = 5


@dataclass(frozen=True)
class CiStep:
    """One step of the built-in CI: a command (argv, no shell) run in a fresh export of the commit.

    It reports the commit status `gitopsd/<name>`; `artifacts` are globs relative to the export
    whose files are kept, content-addressed, for every deployment of that tree."""

    name: str
    run: tuple[str, ...]
    artifacts: tuple[str, ...] = ()
    timeout: int = 1800


@dataclass(frozen=True)
class Ci:
    """A repository's continuous integration: CI servers to trigger, and built-in steps to run, on new heads."""

    trigger: tuple[CiTrigger, ...] = ()
    steps: tuple[CiStep, ...] = ()
    branches: tuple[str, ...] = ("main",)  # whose new heads run `steps` (globs)
    keep_artifacts: int = 20  # artifacts of trees never deployed: keep the newest N trees' (deployed: all)
    provenance_keys: tuple[Path, ...] = ()  # PEM public keys of external CI whose uploaded provenance is accepted

    @property
    def any(self) -> bool:
        return bool(self.trigger or self.steps)


@dataclass(frozen=True)
class SignoffRule:
    """`require_signoff: {env: staging, count: 1}`: a tree needs this many sign-offs after manual testing in `env`."""

    env: str
    count: int = 1


@dataclass(frozen=True)
class Approvals:
    """Who must approve a release candidate before an environment takes its tree (docs/human-gates.md).

    `approvers` and `required_groups` are resolved against the config's `groups:`: `approvers` holds
    the identities allowed to approve, `required_groups` (group, members) pairs of which each must
    give at least one approval. `expire_after` seconds (None: approvals do not expire)."""

    required: int = 1
    approvers: tuple[str, ...] = ()
    required_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    forbid_self_approval: bool = True
    expire_after: float | None = None


STATUS_CONTEXT_MAX = 255  # characters of a status context, as GitHub's API


@dataclass(frozen=True)
class Signatures:
    """Who may sign the commits that reach a branch (gate/signatures.py): files on the server, outside the repository."""

    allowed_signers: Path | None = None  # SSH: git's gpg.ssh.allowedSignersFile format
    gpg_home: Path | None = None  # OpenPGP: a GNUPGHOME holding the allowed public keys
    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (glob, signers allowed to touch it), groups resolved


@dataclass(frozen=True)
class Environment:
    """One deployment target: a branch whose head must run on an inventory's hosts."""

    name: str
    branch: str
    promote_from: str
    inventory: str
    playbook: str
    timeout: int = 900
    auto_rollback: bool = False
    retries: int = 3
    retry_backoff: float = 10.0
    retry_backoff_max: float = 300.0
    windows: tuple[Window, ...] = ()  # deploy windows for promotions; rollbacks ignore them
    override_by: tuple[str, ...] = ()  # identities allowed an emergency override of a closed window
    rollout: Rollout | None = None
    verify: Verify = Verify()
    notify: Notify = Notify()
    vault_password_file: Path | None = None  # Ansible Vault password (file or script), outside any repository
    require_checks: tuple[str, ...] = ()  # commit status contexts that must be `success` on a tree it takes
    auto_promote: bool = False  # the daemon promotes promote_from's head once it passes every gate here
    signoff_by: tuple[str, ...] = ()  # identities who may sign off manual testing here (groups resolved)
    require_signoff: SignoffRule | None = None  # sign-offs a tree needs (in another environment) before it comes here
    approvals: Approvals | None = None  # a release candidate with these approvals is needed to come here
    watch: Watch | None = None  # checks that keep running after a successful deployment
    drift: Drift | None = None  # drift detection: check-mode runs of the deployed tree
    execution_node: str = "local"  # where its playbook runs: local | any | a node's name (nodes.py)
    require_provenance: bool = False  # refuse a tree whose artifacts lack valid signed provenance (ci/provenance.py)
    signatures: Signatures | None = None  # every new commit signed by an allowed signer
    signed_push: bool = False  # only `git push --signed` with a fresh nonce and an allowed key


@dataclass(frozen=True)
class Repository:
    """A bare deployment repository and its environments, in promotion order."""

    name: str
    path: Path
    environments: tuple[Environment, ...]
    ci: Ci = Ci()
    signatures: Signatures | None = None  # `signatures:` of the repository: every new commit on main signed

    def environment(self, name: str) -> Environment | None:
        return by_name(self.environments, name)

    def environment_for_branch(self, branch: str) -> Environment | None:
        return by_branch(self.environments, branch)


@dataclass(frozen=True)
class Api:
    """The daemon's HTTP API (off unless configured): where it listens and where its tokens are kept (hashed)."""

    host: str = "127.0.0.1"
    port: int = 8470
    tokens_file: Path = Path("/etc/gitopsd/tokens.yml")


ROLES = ("viewer", "deployer", "approver", "admin")  # the web dashboard's roles, each allowing what the one before does


@dataclass(frozen=True)
class RoleGrant:
    """`web.roles` entry: `role` on environments matching `where` ("*", ENV, REPO/ENV or REPO/*) for these people."""

    where: str
    role: str  # one of ROLES
    identities: tuple[str, ...] = ()  # user names, `groups:` members resolved; "*" is everyone signed in
    groups: tuple[str, ...] = ()  # group:NAME entries as named (also matched against the proxy's groups)

    def matches(self, repo: str, env: str) -> bool:
        return self.where in ("*", env, f"{repo}/{env}", f"{repo}/*")


@dataclass(frozen=True)
class Web:
    """`web:` the dashboard on the API's address: who you are (a trusted proxy's header, or a login with an API token)
    and what you may do (roles per environment). docs/web.md."""

    auth: str = "login"  # login | proxy
    proxy_header: str = "X-Forwarded-User"
    proxy_groups_header: str | None = None  # e.g. X-Forwarded-Groups: comma-separated group names
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # networks whose requests may carry those headers
    proxy_secret_file: Path | None = None  # the secret the proxy sends in X-Gitopsd-Proxy-Secret
    grants: tuple[RoleGrant, ...] = (RoleGrant("*", "viewer", ("*",)),)
    secure_cookies: str = "auto"  # auto (when the request came over TLS) | true | false
    session_hours: float = 12.0


@dataclass(frozen=True)
class Backup:
    """`backup:` the daemon's copies of its SQLite state database (adapters/backups.py); `dir` None: state_dir/backups."""

    interval: float = 3600.0
    keep: int = 24
    dir: Path | None = None


@dataclass(frozen=True)
class FreezeRule:
    """`freeze_on:` one entry: while an alert named `alert` with these `labels` fires, `envs` are frozen (gate/locks.py)."""

    alert: str
    envs: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()
    repos: tuple[str, ...] = ()  # none: every repository that has such an environment

    def matches(self, labels: dict[str, str]) -> bool:
        """Does an alert with these labels (alertname among them) match this rule?"""
        return labels.get("alertname") == self.alert and all(labels.get(k) == v for k, v in self.labels)


@dataclass(frozen=True)
class AlertFreezes:
    """`alert_freezes:` when a freeze whose alert Alertmanager stopped sending expires (its resolve may never come)."""

    repeat_interval: float = 14400.0  # the route's repeat_interval: a firing alert is sent again this often
    grace: float = 900.0  # more time before the freeze expires (group_interval, a slow delivery)


@dataclass(frozen=True)
class BreakGlass:
    """`break_glass:` how long a request waits for its second person, and how long a confirmed one holds."""

    confirm_within: float = 900.0
    lasts: float = 3600.0


@dataclass(frozen=True)
class Grafana:
    """`grafana:` where the daemon posts an annotation at each deployment's end (adapters/annotations.py)."""

    url: str  # Grafana's base URL, e.g. http://grafana:3000
    token_file: Path  # a service account token, one line (sent as a Bearer token)
    dashboard_uid: str | None = None  # annotate this dashboard only; None: an organization-wide annotation
    timeout: float = 3.0


@dataclass(frozen=True)
class Matrix:
    """`notifications.matrix`: the room where approval requests are posted and approvers answer (gitopsd/services/chatroom.py).

    `accounts` maps Matrix user ids (@alice:example.org, which the homeserver vouches for) to identities;
    a display name is never trusted."""

    homeserver: str  # the client-server API's base URL, e.g. https://matrix.example.org
    user: str  # gitopsd's own account, e.g. @gitopsd:example.org
    password_file: Path  # its password, one line (outside any repository)
    room: str  # a room id (!abc:example.org) or alias (#deploys:example.org)
    accounts: tuple[tuple[str, str], ...] = ()  # (Matrix user id, identity)
    timeout: float = 10.0  # seconds for each request (a sync waits this much longer)

    def identity(self, account: str) -> str | None:
        return dict(self.accounts).get(account)


@dataclass(frozen=True)
class Notifications:
    """`notifications:` approval requests to the team's chat: a Matrix room and/or a Slack-compatible incoming webhook.
    `link` is the dashboard's address as people reach it (a candidate's page is linked from there)."""

    link: str | None = None
    slack_webhook: str | None = None
    matrix: Matrix | None = None


@dataclass(frozen=True)
class ExecutionNode:
    """`execution_nodes[i]`: a machine that runs playbooks through `ansible-runner worker` over SSH (nodes.py)."""

    name: str
    user: str
    host: str
    port: int = 22
    identity_file: Path | None = None  # ssh -i; None: ssh's own defaults for the daemon's user
    max_parallel: int = 4  # deployments at once on this node; more wait for a slot

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"


@dataclass(frozen=True)
class Config:
    """The whole server configuration, validated."""

    source: Path
    stamp: str = ""  # gate.file_stamp() of the file, taken before it was read
    state_dir: Path = Path("/var/lib/gitopsd")
    runtime_dir: Path = Path("/run/gitopsd")
    sweep_interval: float = 60.0
    max_parallel: int = 4
    stop_grace: float = 60.0
    keep_workdirs: int = 5
    identity_env: tuple[str, ...] = ("GL_USER", "GITOPSD_USER", "REMOTE_USER")
    repositories: tuple[Repository, ...] = field(default_factory=tuple)
    sandbox: SandboxPolicy = (
        SandboxPolicy()
    )  # what playbook runs may see (adapters/sandbox.py); `hide` is filled in by the daemon
    known_hosts: Path = Path("/var/lib/gitopsd/.ssh/known_hosts")  # the only host keys ssh accepts (docs/install.md, "SSH trust")
    database_url: str = ""  # `database: postgresql://...` (docs/install.md, "PostgreSQL"); "": SQLite in state_dir
    api: Api | None = None  # the HTTP API; None: off
    grafana: Grafana | None = None  # deployment annotations in Grafana; None: off
    execution_nodes: tuple[ExecutionNode, ...] = ()  # remote runners (docs/install.md, "Execution nodes"); none: all local
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # `groups:` name -> identities (for signoff_by, approvers)
    web: Web | None = None  # the web dashboard (served with the API); None: off
    backup: Backup = Backup()  # scheduled copies of the SQLite state database
    notifications: Notifications = Notifications()  # approval requests to chat rooms; approvals from Matrix
    signing_key: Path | None = None  # SSH private key gitopsd signs its own commits with (promote, revert)
    freeze_on: tuple[FreezeRule, ...] = ()  # alerts that freeze environments while they fire (docs/change-control.md)
    break_glass: BreakGlass = BreakGlass()  # two-person overrides of locks, freezes and deny windows
    alert_freezes: AlertFreezes = AlertFreezes()  # when a freeze whose alert is no longer sent expires

    @property
    def control_socket(self) -> Path:
        """Where the daemon takes commands whose caller's identity matters (SO_PEERCRED): sign-offs, approvals."""
        return self.runtime_dir / "control.sock"

    @property
    def backup_dir(self) -> Path:
        return self.backup.dir or self.state_dir / "backups"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def ci_dir(self) -> Path:
        return self.state_dir / "ci"

    def repository(self, name: str) -> Repository | None:
        return self._by_name.get(name)

    @cached_property
    def _by_name(self) -> dict[str, Repository]:
        """The repositories by name, made once: each look asks, and a scan of 1,000 cost 7 % of a sweep (issue 28)."""
        return {r.name: r for r in reversed(self.repositories)}  # the first of a name wins, as by_name's scan

    def execution_node(self, name: str) -> ExecutionNode | None:
        return by_name(self.execution_nodes, name)

    def repository_at(self, path: Path) -> Repository | None:
        return by_path(self.repositories, path)

    @property
    def nudge_socket(self) -> Path:
        return self.runtime_dir / "nudge.sock"

    @property
    def judge_socket(self) -> Path:
        """Where the daemon judges pushes for the hook's shim (daemon/judge.py)."""
        return self.runtime_dir / "judge.sock"

    @property
    def database(self) -> Path:
        """The SQLite file the pre-receive hook reads: the whole store, or with PostgreSQL the hook's copy of it."""
        return self.state_dir / ("hook-ledger.db" if self.database_url else "state.db")
