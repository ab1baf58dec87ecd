"""What no inventory shows: where a run of qa can still reach production's hosts, said by `gitopsd doctor`.

Real: a bare repository with its branches and a config loaded as the daemon loads it.
"""

from __future__ import annotations

from gitopsd.config import load
from gitopsd.installers import doctor_inventories
from tests.support import Sandbox

ENVS = {"qa": ["qa-1"], "staging": ["stg-1"], "production": ["prod-1"]}
NODES = {"execution_nodes": [{"name": "runner1", "ssh": "gitopsd@runner1.example.com"}]}


def test_doctor_says_in_one_line_each_that_runs_on_an_execution_node_are_not_kept_from_later_environments_hosts(short_tmp):
    box = Sandbox(
        short_tmp, ENVS, env_options={"qa": {"execution_node": "runner1"}, "staging": {"execution_node": "any"}}, extra=NODES
    )
    findings = doctor_inventories.unguarded(load(box.config))
    problems = [(f.what, f.fix) for f in findings if not f.ok]
    assert problems == [
        (
            "shop/qa runs its playbooks on execution node runner1, outside this machine's sandbox: nothing keeps a push "
            "to qa from staging, production's hosts there",
            "set execution_node: local for qa, or give its node a network from which staging, production's hosts cannot "
            "be reached (doctor cannot see a node's network)",
        ),
        (
            "shop/staging runs its playbooks on any execution node, outside this machine's sandbox: nothing keeps a push "
            "to staging from production's hosts there",
            "set execution_node: local for staging, or give its node a network from which production's hosts cannot "
            "be reached (doctor cannot see a node's network)",
        ),
    ]
    # The last environment has none after it: a node of its own is no news.
    box = Sandbox(short_tmp / "last", ENVS, env_options={"production": {"execution_node": "runner1"}}, extra=NODES)
    assert all(f.ok for f in doctor_inventories.unguarded(load(box.config)))


def test_doctor_says_what_the_forwarder_cannot_see_and_what_playbook_network_host_gives_up(short_tmp):
    said = [(f.ok, f.what) for f in doctor_inventories.unguarded(load(Sandbox(short_tmp, ENVS).config))]
    assert said == [
        (
            True,
            "shop: a run's SSH forwarder judges only its first hop: a host of qa's inventory from which production's "
            "hosts take the service's key (ProxyJump, ProxyCommand, a forwarded agent) lets a push to qa reach them "
            "(not checked: doctor cannot see your network)",
        )
    ]
    box = Sandbox(short_tmp / "host", ENVS, sandbox_options={"playbook_network": "host"})
    said = [(f.ok, f.what) for f in doctor_inventories.unguarded(load(box.config))]
    assert said == [(True, "shop: with sandbox.playbook_network: host a push to qa reaches production's hosts too")]
