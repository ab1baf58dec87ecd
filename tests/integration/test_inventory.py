"""Host variables read with ansible's own inventory and templating, from the sample inventories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitopsd.adapters.inventory import HostInfo, InventoryError, hosts_of

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = ROOT / "environments"


@pytest.fixture(autouse=True)
def port_base(monkeypatch):
    monkeypatch.setenv("GITOPSD_SAMPLE_PORT_BASE", "30000")
    monkeypatch.delenv("GITOPSD_SAMPLE_ROOT", raising=False)


def names(env: str) -> list[str]:
    return [host.name for host in hosts_of(SAMPLES / env / "hosts.yml")]


def test_the_sample_inventories_list_their_hosts_in_inventory_order():
    assert names("qa") == ["qa-1"]
    assert names("staging") == ["staging-1", "staging-2"]
    assert names("production") == ["production-1", "production-2", "production-3", "production-4"]


def test_app_port_is_templated_from_group_vars_and_the_environment():
    hosts = {h.name: h for h in hosts_of(SAMPLES / "production" / "hosts.yml", ("app_port", "app_root"))}
    assert hosts["production-2"].vars["app_port"] == "30032"
    assert hosts["production-4"].vars["app_port"] == "30034"
    assert hosts["production-2"].vars["app_root"] == "/var/tmp/gitopsd-sample/production/production-2"
    assert hosts_of(SAMPLES / "qa" / "hosts.yml", ("app_port",)) == [HostInfo("qa-1", {"app_port": "30011"})]


def test_the_lookups_default_applies_when_the_variable_is_unset(monkeypatch):
    monkeypatch.delenv("GITOPSD_SAMPLE_PORT_BASE")
    [first, second] = hosts_of(SAMPLES / "staging" / "hosts.yml", ("app_port",))
    assert (first.vars, second.vars) == ({"app_port": "18021"}, {"app_port": "18022"})


def test_ansible_host_defaults_to_the_inventory_name_and_other_missing_variables_are_absent():
    [qa] = hosts_of(SAMPLES / "qa" / "hosts.yml", ("ansible_host", "no_such_var", "keep_releases"))
    assert qa.vars == {"ansible_host": "qa-1", "keep_releases": "5"}


def test_magic_variables_template_as_in_a_playbook_run():
    [qa] = hosts_of(SAMPLES / "qa" / "hosts.yml", ("ansible_python_interpreter", "app_python", "inventory_hostname"))
    assert qa.vars == {"ansible_python_interpreter": sys.executable, "app_python": sys.executable, "inventory_hostname": "qa-1"}


def test_hosts_follow_the_order_ansible_gives_the_all_group(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    zeta:\n  children:\n"
        "    web:\n      hosts:\n        web-b:\n        web-a:\n"
        "    db:\n      hosts:\n        db-1:\n        web-a:\n      children:\n        replicas:\n          hosts:\n            db-9:\n"
        "    ungrouped:\n      hosts:\n        alpha:\n"
    )
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "ansible"), "all", "-i", str(inv), "--list-hosts"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[2:]
    assert [h.name for h in hosts_of(inv)] == listed == ["zeta", "alpha", "web-b", "web-a", "db-1", "db-9"]


def test_extra_vars_are_data_that_group_vars_can_use(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1:\n      health: 'http://h1/{{ gitopsd_commit }}'\n      app_port: 8080\n"
        "      enabled: true\n      roles_: [a, b]\n"
    )
    [h1] = hosts_of(inv, ("health", "gitopsd_commit", "app_port", "enabled", "roles_"), {"gitopsd_commit": "abc{{ 6 * 7 }}"})
    assert h1.vars == {
        "health": "http://h1/abc{{ 6 * 7 }}",
        "gitopsd_commit": "abc{{ 6 * 7 }}",
        "app_port": "8080",
        "enabled": "true",
        "roles_": '["a", "b"]',
    }


def test_an_extra_var_may_not_take_a_name_ansible_reserves(tmp_path):
    with pytest.raises(ValueError):
        hosts_of(SAMPLES / "qa" / "hosts.yml", extra_vars={"hosts": "x"})
    with pytest.raises(ValueError):
        hosts_of(SAMPLES / "qa" / "hosts.yml", extra_vars={"not a name": "x"})


def test_a_broken_yaml_inventory_raises_inventory_error_with_where(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    web-1: {ansible_host: 10.0.0.1\n    web-2:\n")
    with pytest.raises(InventoryError) as caught:
        hosts_of(inv)
    message = str(caught.value)
    assert "cannot parse inventory" in message and "YAML" in message and f"{inv}:" in message


def test_a_wrongly_shaped_inventory_raises_inventory_error(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts: [web-1, web-2]\n")
    with pytest.raises(InventoryError, match='Invalid "hosts" entry'):
        hosts_of(inv)


def test_a_missing_inventory_raises_inventory_error(tmp_path):
    with pytest.raises(InventoryError, match="does not exist"):
        hosts_of(tmp_path / "nope.yml")


def test_a_variable_that_fails_to_template_names_itself_and_the_host(tmp_path):
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n      app_port: '{{ base_port + 1 }}'\n")
    with pytest.raises(InventoryError, match="app_port of h1"):
        hosts_of(inv, ("app_port",))
    assert hosts_of(inv, ("ansible_host",)) == [HostInfo("h1", {"ansible_host": "h1"})]  # not asked: not templated


def test_calls_from_several_threads_give_the_same_answers():
    from concurrent.futures import ThreadPoolExecutor

    envs = ["qa", "staging", "production"] * 3
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda env: hosts_of(SAMPLES / env / "hosts.yml", ("app_port",)), envs))
    assert [len(r) for r in results] == [1, 2, 4] * 3
    assert results[2][1] == HostInfo("production-2", {"app_port": "30032"})
