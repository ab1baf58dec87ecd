"""A run sees no secret file the config names: not another environment's vault password, not the API's tokens.

Real: bubblewrap, ansible-runner, ansible-playbook with a local host, the sandbox built from a real config
(`config.load`, `sandbox.for_config`). The secrets lie in a folder runs may read (`sandbox.read_only`, where the
docs put SSH keys), owned by the user runs run as (the service user in install.md's layout; `nobody` here as root).
"""

from __future__ import annotations

import os
import shutil

import pytest

from gitopsd.adapters import sandbox
from gitopsd.config import load
from tests.integration.test_sandbox import Server, shell_play
from tests.support import Sandbox, free_port

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def test_a_qa_run_reads_neither_productions_vault_password_nor_any_other_secret_file_the_config_names(tmp_path, short_tmp):
    keys = short_tmp / "keys"
    keys.mkdir()
    keys.chmod(0o755)
    secrets = {name: keys / name for name in ("production.vault", "qa.vault", "tokens.yml")}
    owner = sandbox.run_as(sandbox.SandboxPolicy(enabled=True, user=sandbox.default_user()))
    for name, path in secrets.items():
        path.write_text(f"secret of {name}\n")
        path.chmod(0o600)
        if owner is not None:
            os.chown(path, *owner)
    box = Sandbox(
        short_tmp,
        {"qa": ["qa-1"], "production": ["production-1"]},
        env_options={
            "qa": {"vault_password_file": str(secrets["qa.vault"])},
            "production": {"vault_password_file": str(secrets["production.vault"])},
        },
        sandbox_options={"read_only": [str(keys)]},
        extra={"api": {"listen": f"127.0.0.1:{free_port()}", "tokens_file": str(secrets["tokens.yml"])}},
    )
    policy = sandbox.for_config(load(box.config))
    report = box.out / "seen"
    paths = " ".join(str(p) for p in secrets.values())
    outcome = Server(tmp_path).run(shell_play(f"(cat {paths}; ls {keys}) > {report} 2>&1 || true"), policy=policy)
    assert outcome.ok, outcome.reason
    seen = report.read_text()
    assert "secret of" not in seen, seen
    assert "production.vault" in seen, "the folder itself is still shown: " + seen
