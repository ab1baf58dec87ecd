"""Config: execution_nodes at the top and execution_node per environment, and their mistakes said at once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitopsd.config import ConfigError, load


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "shop.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gitopsd.yml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(path)
    return [str(p) for p in info.value.problems]


def test_nodes_and_placements_are_read_with_their_defaults(tmp_path, repo):
    config = load(
        write(
            tmp_path,
            f"""
execution_nodes:
  - {{name: runner1, ssh: deployer@10.0.0.5}}
  - {{name: runner2, ssh: deployer@runner2.example.com, port: 2222, identity_file: keys/id, max_parallel: 8}}
repositories:
  - name: shop
    path: {repo}
    environments:
      - {{name: qa, execution_node: any}}
      - {{name: staging, execution_node: runner2}}
      - {{name: production}}
""",
        )
    )
    one, two = config.execution_nodes
    assert (one.name, one.user, one.host, one.port, one.identity_file, one.max_parallel) == (
        "runner1",
        "deployer",
        "10.0.0.5",
        22,
        None,
        4,
    )
    assert (two.port, two.identity_file, two.max_parallel) == (2222, (tmp_path / "keys/id").resolve(), 8)
    assert [e.execution_node for e in config.repositories[0].environments] == ["any", "runner2", "local"]
    assert config.execution_node("runner2") is two and config.execution_node("runner3") is None


def test_every_mistake_in_nodes_and_placements_is_said_at_once_with_its_key(tmp_path, repo):
    found = problems(
        write(
            tmp_path,
            f"""
execution_nodes:
  - {{name: runner1, ssh: deployer@10.0.0.5}}
  - {{name: runner1, ssh: "-oProxyCommand=x@host"}}
  - {{name: local, ssh: deployer@10.0.0.6, port: 70000, max_parallel: 0, colour: red}}
repositories:
  - name: shop
    path: {repo}
    environments:
      - {{name: qa, execution_node: runner9}}
      - {{name: staging, execution_node: [runner1]}}
""",
        )
    )
    text = "\n".join(found)
    assert "execution_nodes[1].name: execution node 'runner1' is defined twice" in text
    assert "execution_nodes[1].ssh: must be user@host" in text
    assert "execution_nodes[2].name: must be a plain name" in text and "other than local and any" in text
    assert "execution_nodes[2].port: must be at most 65535" in text
    assert "execution_nodes[2].max_parallel: must be at least 1" in text
    assert "execution_nodes[2].colour: unknown key" in text
    assert ("repositories[0].environments[0].execution_node: 'runner9' is not an execution node (configured: runner1)") in text
    assert "repositories[0].environments[1].execution_node: must be local, any or the name" in text
    assert all(":" in line.split(" ")[0] for line in found)  # file:line: key: ...


def test_any_without_nodes_is_refused(tmp_path, repo):
    found = problems(
        write(
            tmp_path,
            f"""
repositories:
  - name: shop
    path: {repo}
    environments: [{{name: qa, execution_node: any}}]
""",
        )
    )
    assert any("execution_node: any places on the execution nodes, and there are none" in p for p in found)
