"""The audit notes (refs/notes/gitopsd) `gitopsd db rebuild` reads back into the store (notes_ledger.py).

Notes travel with the repository; a rebuild must restore what it can read and list the rest, never stop.
"""

from __future__ import annotations

import atheris
from _harness import scratch

with atheris.instrument_imports(include=["gitopsd"]):
    from gitopsd.adapters.store import Store
    from gitopsd.core.settings import Environment, Repository
    from gitopsd.services import notes_ledger

FOLDER = scratch("notes")
STORE = Store(FOLDER / "state.db")
REPO = Repository(
    "shop", FOLDER, (Environment("qa", "qa", "main", "i", "p"), Environment("production", "production", "qa", "i", "p"))
)
TEMPLATES = [
    "gitopsd: deploy to qa {w} (deployment #{n}, push by {w}) at {d} UTC: {w}",
    "gitopsd: rollback to production {w} (deployment #{n}, cli by {w}) at {d} UTC",
    "gitopsd: signed off in qa by {w} at {d} UTC: {w}",
    "gitopsd: release candidate rc/{w} for production created by {w} at {d} UTC",
    "gitopsd: rc/{w} approved by {w} at {d} UTC: {w}",
    "{w}",
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    template = fdp.PickValueInList(TEMPLATES)
    words = [
        fdp.PickValueInList(["alice", "succeeded", "2026.1"])
        if fdp.ConsumeBool()
        else fdp.ConsumeUnicodeNoSurrogates(20).replace("\n", " ").strip() or "x"
        for _ in range(3)
    ]
    when = "{:04d}-{:02d}-{:02d} {:02d}:{:02d}".format(*(fdp.ConsumeIntInRange(0, top) for top in (9999, 99, 99, 99, 99)))
    line = template.format(w=words[0], n=fdp.ConsumeIntInRange(0, 2**70), d=when)
    line = line.replace(f"by {words[0]}", f"by {words[1]}", 1).replace(f": {words[0]}", f": {words[2]}", 1)
    report = notes_ledger.Report()
    notes_ledger._restore(STORE, REPO, [("c" * 40, "t" * 40, line)], report)
    report.lines()


if __name__ == "__main__":
    from _harness import run

    run(test_one_input)
