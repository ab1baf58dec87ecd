"""Each coverage-guided fuzz target (fuzz/fuzz_*.py, atheris) runs for a few seconds without a finding.

Real: atheris and libFuzzer, the parsers each target feeds. `make fuzz` runs them longer (FUZZ_SECONDS each); the
seeds in fuzz/corpus/<target>/ are read here, and what a run adds goes to a temp folder, never into the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = sorted(FUZZ.glob("fuzz_*.py"))
SECONDS = 1  # each; about 10 targets, with their start, stay within half a minute on an idle machine


def test_there_is_a_fuzz_target_for_each_parser_surface():
    assert [t.stem.removeprefix("fuzz_") for t in TARGETS] == [
        "gate_requests",
        "judge_request",
        "notes",
        "nudge",
        "provenance",
        "push_options",
        "ref_updates",
        "status_json",
        "token_header",
        "tokens_file",
        "web_requests",
    ]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.stem)
def test_a_fuzz_target_runs_a_few_seconds_without_a_finding(target, tmp_path, short_tmp):
    seeds = FUZZ / "corpus" / target.stem
    ran = subprocess.run(
        [
            sys.executable,
            str(target),
            f"-max_total_time={SECONDS}",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path),
            *([str(seeds)] if seeds.is_dir() else []),
        ],
        cwd=FUZZ,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GITOPSD_FUZZ_TMP": str(short_tmp)},
    )
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert "Done " in ran.stderr and "Uncaught Python exception" not in ran.stderr
