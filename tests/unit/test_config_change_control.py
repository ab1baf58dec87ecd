"""Config `freeze_on:` and `break_glass:` (docs/change-control.md): parsed into core.settings, every problem said with its key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load
from gitopsd.core.settings import BreakGlass, FreezeRule


def config(tmp_path: Path, extra: str) -> Path:
    repo = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    path = tmp_path / "gitopsd.yml"
    path.write_text(f"repositories:\n  - name: shop\n    path: {repo}\n{extra}")
    return path


def test_no_alert_freezes_anything_and_break_glass_has_its_defaults_unless_configured(tmp_path):
    loaded = load(config(tmp_path, ""))
    assert loaded.freeze_on == () and loaded.break_glass == BreakGlass(confirm_within=900.0, lasts=3600.0)


def test_a_freeze_rule_names_an_alert_its_labels_and_the_environments_it_freezes(tmp_path):
    loaded = load(
        config(
            tmp_path,
            "freeze_on:\n  - alert: CheckoutErrors\n    labels: {severity: page}\n"
            "    envs: [production]\nbreak_glass: {confirm_within: 5m, lasts: 30m}\n",
        )
    )
    rule = loaded.freeze_on[0]
    assert rule == FreezeRule("CheckoutErrors", ("production",), (("severity", "page"),), ())
    assert rule.matches({"alertname": "CheckoutErrors", "severity": "page", "instance": "web-1"})
    assert not rule.matches({"alertname": "CheckoutErrors", "severity": "ticket"})
    assert not rule.matches({"alertname": "DiskFull", "severity": "page"})
    assert loaded.break_glass == BreakGlass(confirm_within=300.0, lasts=1800.0)


def test_each_problem_of_freeze_on_and_break_glass_is_said_with_its_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(
            config(
                tmp_path,
                "freeze_on:\n  - alert: ''\n    labels: [a]\n    envs: [prod]\n    repos: [cart]\n"
                "    when: now\nbreak_glass: {confirm_within: soon, lasts: 3d}\n",
            )
        )
    said = "\n".join(str(p) for p in info.value.problems)
    for key in (
        "freeze_on[0].alert",
        "freeze_on[0].labels",
        "freeze_on[0].repos",
        "freeze_on[0].when",
        "break_glass.confirm_within",
        "break_glass.lasts",
    ):
        assert key in said, said
    assert "no repository named 'cart'" in said
    with pytest.raises(ConfigError) as info:
        load(config(tmp_path, "freeze_on:\n  - alert: X\n    envs: [prod]\n"))
    assert "freeze_on[0].envs" in str(info.value.problems[0]) and "no repository has an environment 'prod'" in str(
        info.value.problems[0]
    )
