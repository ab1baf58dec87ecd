"""/metrics' totals of finished deployments kept in a file between starts (issue 28: a start added up a million rows).

Real: SQLite stores in a temp folder, prometheus_client's text output. Faked: nothing; metrics.SAVE_EVERY is lowered
so that a handful of deployments is worth keeping, and the file is edited to show which numbers a start used.
"""

from __future__ import annotations

import json

from gitopsd.adapters.store import Store
from gitopsd.services import metrics, metricsfile
from gitopsd.services.metrics import KEPT_FILE, Metrics
from tests.integration.test_metrics import config, deploy, samples

QA_SUCCEEDED = 'gitopsd_deployments_total{env="qa",kind="deploy",repo="shop",result="succeeded"}'


def _doctored(path, count: int) -> None:
    """Make the kept file say `count` deployments to qa succeeded: a start that shows it read the file."""
    kept = json.loads(path.read_text())
    kept["totals"]["deployments"] = [
        [*row[:-1], count] if row[:4] == ["shop", "qa", "deploy", "succeeded"] else row for row in kept["totals"]["deployments"]
    ]
    path.write_text(json.dumps(kept))


def test_a_start_takes_the_totals_kept_in_the_file_and_adds_up_only_what_finished_since(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "SAVE_EVERY", 1)
    cfg = config(tmp_path)
    with Store(cfg.database) as store:
        for n in range(1, 4):
            deploy(store, "qa", n, "succeeded")
        first = samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
        assert first[QA_SUCCEEDED] == 3
        kept = tmp_path / KEPT_FILE
        assert json.loads(kept.read_text())["upto"] == 3
        assert samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True))) == first, "the same figures from the file"
        _doctored(kept, 1000)
        deploy(store, "qa", 4, "succeeded")
        restarted = samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
    assert restarted[QA_SUCCEEDED] == 1001, "the file's 1,000 and the one deployment since: nothing added up twice"


def test_totals_kept_for_another_store_are_added_up_again(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "SAVE_EVERY", 1)
    cfg = config(tmp_path)
    with Store(cfg.database) as store:
        for n in range(1, 4):
            deploy(store, "qa", n, "succeeded")
    samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
    _doctored(tmp_path / KEPT_FILE, 1000)
    for suffix in ("", "-wal", "-shm"):  # another store in its place (a restore, a rebuild): other deployments
        tmp_path.joinpath(f"state.db{suffix}").unlink(missing_ok=True)
    with Store(cfg.database) as store:
        for n in range(11, 15):
            deploy(store, "qa", n, "succeeded")
        assert samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))[QA_SUCCEEDED] == 4


def _three_deployments_kept(tmp_path, monkeypatch):
    """A store with three successful qa deployments and their totals kept in the file (as the daemon writes it)."""
    monkeypatch.setattr(metrics, "SAVE_EVERY", 1)
    cfg = config(tmp_path)
    with Store(cfg.database) as store:
        for n in range(1, 4):
            deploy(store, "qa", n, "succeeded")
    samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
    return cfg, tmp_path / KEPT_FILE


def test_a_kept_file_that_is_garbled_huge_or_a_symlink_is_said_in_one_line_and_the_history_added_up_again(
    tmp_path, monkeypatch, caplog
):
    cfg, kept = _three_deployments_kept(tmp_path, monkeypatch)
    good = json.loads(kept.read_text())
    _doctored(kept, 1000)  # were it read, qa would show 1,000 successes
    doctored = kept.read_text()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(doctored)
    wrong_types = {**good, "totals": {**good["totals"], "deployments": [["shop", "qa", "deploy", "succeeded", "many"]]}}
    short_histogram = {**good, "totals": {**good["totals"], "durations": [["shop", "qa", [1], 2.0]]}}
    shapes = {
        "nested too deeply": lambda: kept.write_text("[" * 100000),
        "values of the wrong type": lambda: kept.write_text(json.dumps(wrong_types)),
        "a histogram of the wrong length": lambda: kept.write_text(json.dumps(short_histogram)),
        "a symlink to a file elsewhere": lambda: kept.symlink_to(elsewhere),
        "an upto beyond SQLite's integers": lambda: kept.write_text(json.dumps({**good, "upto": 2**64})),
        "larger than any totals file": lambda: kept.write_text(doctored + " " * 4096),
    }
    monkeypatch.setattr(metricsfile, "MAX_SIZE", 4096)
    for what, make in shapes.items():
        kept.unlink(missing_ok=True)
        make()
        caplog.clear()
        figures = samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
        assert figures[QA_SUCCEEDED] == 3, what
        said = [r.getMessage() for r in caplog.records if KEPT_FILE in r.getMessage()]
        assert len(said) == 1 and "\n" not in said[0] and "added up again" in said[0], (what, said)


def test_the_kept_files_temporary_file_planted_as_a_symlink_is_not_followed(tmp_path, monkeypatch):
    cfg, kept = _three_deployments_kept(tmp_path, monkeypatch)
    victim = tmp_path / "victim"
    victim.write_text("not gitopsd's\n")
    kept.unlink()
    kept.with_name(f".{KEPT_FILE}.tmp").symlink_to(victim)
    samples(Metrics(lambda: cfg, Store(cfg.database, readonly=True)))
    assert victim.read_text() == "not gitopsd's\n"
    assert json.loads(kept.read_text())["upto"] == 3
