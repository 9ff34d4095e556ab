"""`specfleet bench fleet` end to end on a one-replica fleet of the bundled pair, at sizes
that finish in about a minute: the report's shape, not its figures (those are benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SPECFLEET = str(Path(sys.executable).with_name("specfleet"))


def test_bench_fleet_reports_every_policy_per_round_and_the_two_headline_ratios(tmp_path: Path) -> None:
    result = subprocess.run(
        [SPECFLEET, "bench", "fleet", "--replicas", "1", "--concurrency", "1,2", "--k-candidates", "2",
         "--seconds", "1", "--warmup", "0.3", "--repeats", "2", "--settle", "1", "--trace", "1:1,2:1",
         "--max-tokens", "8", "--out", str(tmp_path), "--name", "smoke"],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    assert 0 < report["auto_vs_best_static_min_ratio"] == min(report["auto_vs_best_static_by_concurrency"].values())
    assert report["trace_auto_vs_best_single_static"] > 0
    assert set(report["sweep"]) == {"off", "on-k2", "on-k4", "hand-tuned", "auto"}
    assert set(report["compared_static_policies"]) == {"off", "on-k4", "hand-tuned", report["best_fixed_k_policy"]}
    for points in report["sweep"].values():
        assert set(points) == {"1", "2"}
        assert all(len(p["goodput_repeats"]) == 2 and min(p["goodput_repeats"]) > 0 for p in points.values())
    assert set(report["trace"]) == {*report["compared_static_policies"], "auto"}
    assert all(len(t["goodput_repeats"]) == 2 and t["completed"] > 0 for t in report["trace"].values())
    assert report["failed_requests"] == 0 and report["step_overhead"] is True
    assert {"torch", "python", "git_commit"} <= set(report["environment"])


def test_bench_fleet_rejects_a_bad_trace_in_one_line() -> None:
    result = subprocess.run([SPECFLEET, "bench", "fleet", "--trace", "1:x"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "specfleet bench fleet: error: --trace '1:x' is not CONCURRENCY:SECONDS,..."
