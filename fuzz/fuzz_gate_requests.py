"""A human gate's request (sign-off, release candidate, approval) as the control socket and the HTTP API hand it to
releases.HumanGates.handle: any JSON object from any local user or token. The answer is {ok, message|error}."""

from __future__ import annotations

import json
import subprocess

import atheris
from _harness import scratch

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.adapters.store import Store
    from gitopsd.config import load
    from gitopsd.services import releases

FOLDER = scratch("gates")
REPO = FOLDER / "shop.git"
subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(REPO)], check=True)
(FOLDER / "gitopsd.yml").write_text(
    json.dumps(
        {
            "state_dir": str(FOLDER / "state"),
            "runtime_dir": str(FOLDER / "run"),
            "repositories": [
                {
                    "name": "shop",
                    "path": str(REPO),
                    "environments": [
                        {"name": "qa", "signoff_by": ["alice"]},
                        {"name": "production", "approvals": {"required": 1, "approvers": ["bob"]}},
                    ],
                }
            ],
        }
    )
)
CONFIG = load(FOLDER / "gitopsd.yml")
GATES = releases.HumanGates(lambda: CONFIG, Store(CONFIG.database), notify=lambda _notify, _event: None)
OPS = ["signoff", "rc-create", "approve", "reject", "withdraw", "other"]
FIELDS = ["env", "note", "reject", "commit", "from", "to", "name", "rc", "repo"]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    request: dict[str, object] = {"op": fdp.PickValueInList(OPS)}
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        value: object = fdp.PickValueInList([fdp.ConsumeUnicodeNoSurrogates(40), fdp.ConsumeInt(4), None, True, [], {}])
        request[fdp.PickValueInList(FIELDS)] = value
    answer = GATES.handle(fdp.PickValueInList(["alice", "bob", "mallory"]), request)
    assert answer["ok"] in (True, False) and ("error" in answer or "message" in answer)
    assert "\n" not in str(answer.get("error", ""))


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
