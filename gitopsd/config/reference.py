"""The configuration reference's table: each place in the YAML and the keys its parser accepts (tools/gen_config_docs.py)."""

from __future__ import annotations

from .api_web import API_KEYS, GRAFANA_KEYS, WEB_KEYS
from .checks import DRIFT_KEYS, HTTP_KEYS, PROMETHEUS_KEYS, VERIFY_KEYS, WATCH_KEYS, WATCH_PROMETHEUS_KEYS
from .ci import CI_KEYS, CI_STEP_KEYS, CI_TRIGGER_KEYS
from .human_gates import APPROVALS_KEYS, SIGNOFF_KEYS
from .nodes import NODE_KEYS
from .notifications import MATRIX_KEYS, NOTIFICATIONS_KEYS
from .repositories import ENV_KEYS, NOTIFY_KEYS, REPO_KEYS, ROLLOUT_KEYS, WINDOW_KEYS
from .sandbox import SANDBOX_KEYS, SSH_KEYS
from .signatures import SIGNATURES_KEYS
from .top import ALERT_FREEZES_KEYS, BACKUP_KEYS, BREAK_GLASS_KEYS, FREEZE_KEYS, TOP_KEYS

_ENV = "repositories[].environments[]"
# (where in the file, its keys -> one line each); a parser's new key set goes here too (tests/unit/test_docs.py).
SECTIONS: list[tuple[str, dict[str, str]]] = [
    ("(top level)", TOP_KEYS),
    ("repositories[]", REPO_KEYS),
    ("repositories[].ci", CI_KEYS),
    ("repositories[].ci.trigger[]", CI_TRIGGER_KEYS),
    ("repositories[].ci.steps[]", CI_STEP_KEYS),
    (_ENV, ENV_KEYS),
    (f"{_ENV}.windows[]", WINDOW_KEYS),
    (f"{_ENV}.rollout", ROLLOUT_KEYS),
    (f"{_ENV}.verify", VERIFY_KEYS),
    (f"{_ENV}.verify.http, {_ENV}.watch.http[]", HTTP_KEYS),
    (f"{_ENV}.verify.prometheus", PROMETHEUS_KEYS),
    (f"{_ENV}.watch", WATCH_KEYS),
    (f"{_ENV}.watch.prometheus[]", WATCH_PROMETHEUS_KEYS),
    (f"{_ENV}.drift", DRIFT_KEYS),
    (f"{_ENV}.notify", NOTIFY_KEYS),
    (f"{_ENV}.approvals", APPROVALS_KEYS),
    (f"{_ENV}.require_signoff", SIGNOFF_KEYS),
    (f"repositories[].signatures, {_ENV}.signatures", SIGNATURES_KEYS),
    ("sandbox", SANDBOX_KEYS),
    ("ssh", SSH_KEYS),
    ("execution_nodes[]", NODE_KEYS),
    ("api", API_KEYS),
    ("web", WEB_KEYS),
    ("grafana", GRAFANA_KEYS),
    ("notifications", NOTIFICATIONS_KEYS),
    ("notifications.matrix", MATRIX_KEYS),
    ("backup", BACKUP_KEYS),
    ("freeze_on[]", FREEZE_KEYS),
    ("break_glass", BREAK_GLASS_KEYS),
    ("alert_freezes", ALERT_FREEZES_KEYS),
]
