"""`specfleet bench runtime`: the pure parts on synthetic data, and the command end to end
on a tiny random model (what it writes, not how fast it is: benchmarks are not timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specfleet.bench.random_llama import RANDOM_MODELS, safetensors_weight_bytes, write_random_llama
from specfleet.bench.runtime import OFF, RunResult, StepTotals, batch1_speedups, break_even_concurrency
from specfleet_runtime.engine.api import ForwardTiming, StepReport


def run(c: int, k: int, tps: float, per_step: float = 1.0, fwd: float = 0.01) -> RunResult:
    return RunResult(concurrency=c, k=k, output_tokens=100, wall_seconds=100 / tps, tokens_per_second=tps,
                     mean_tpot_seconds=1 / tps, acceptance_rate=None, tokens_per_sequence_step=per_step,
                     forward_seconds_per_step=fwd)


def test_break_even_is_the_smallest_concurrency_where_no_k_beats_off() -> None:
    results = [run(1, OFF, 100), run(1, 2, 180), run(4, OFF, 300), run(4, 2, 290), run(8, OFF, 500), run(8, 2, 600)]
    assert break_even_concurrency(results) == 4
    assert break_even_concurrency([run(1, OFF, 100), run(1, 1, 150)]) is None


def test_analytic_speedup_is_tokens_per_step_times_the_step_cost_ratio() -> None:
    results = [run(1, OFF, 100, fwd=0.010), run(1, 3, 200, per_step=2.5, fwd=0.0125), run(2, 3, 1)]
    (check,) = batch1_speedups(results)
    assert check.k == 3
    assert check.analytic == pytest.approx(2.5 * 0.010 / 0.0125)
    assert check.measured == pytest.approx(2.0)
    assert check.ratio == pytest.approx(2.0 / 2.0)


def test_step_totals_count_decode_only_steps() -> None:
    totals = StepTotals()
    totals.add(StepReport(decode_batch=0, k=0, prefill_tokens=9, forward_timings=[ForwardTiming("target", 9, 1.0, "prefill", 1)]))
    totals.add(StepReport(decode_batch=2, k=2, prefill_tokens=4))  # a mixed step: prefill cost would distort
    totals.add(StepReport(decode_batch=2, k=2, draft_tokens_per_pos=[2, 2], accepted_per_pos=[2, 1],
                          forward_timings=[ForwardTiming("target", 6, 0.02, "verify", 2), ForwardTiming("draft", 2, 0.01, "decode", 2)]))
    assert (totals.decode_steps, totals.sequence_steps, totals.accepted, totals.drafted) == (1, 2, 3, 4)
    assert totals.tokens_per_sequence_step == 1 + 3 / 2
    assert totals.forward_seconds_per_step == pytest.approx(0.03)


def test_random_llama_has_the_named_shape_and_weight_bytes(tmp_path: Path) -> None:
    shape = RANDOM_MODELS["llama-tiny"]
    folder = write_random_llama(tmp_path / "m", shape)
    config = json.loads((folder / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (128, 2, 512)
    head = shape.hidden // shape.heads
    per_layer = (2 * shape.hidden * shape.hidden + 2 * shape.kv_heads * head * shape.hidden
                 + 3 * shape.hidden * shape.intermediate + 2 * shape.hidden)
    params = 2 * shape.vocab * shape.hidden + shape.layers * per_layer + shape.hidden
    assert safetensors_weight_bytes(folder) == params * 4  # float32
    assert RANDOM_MODELS["llama-1b"].model_dump() == dict(hidden=2048, layers=22, heads=32, kv_heads=4,
                                                          intermediate=5632, vocab=32000, dtype="bfloat16")


def test_bench_runtime_writes_json_and_png_for_every_setting(tmp_path: Path) -> None:
    specfleet = str(Path(sys.executable).with_name("specfleet"))
    result = subprocess.run(
        [specfleet, "bench", "runtime", "--random-model", "llama-tiny", "--concurrency", "1,2", "--k-max", "2",
         "--max-tokens", "8", "--repeats", "1", "--out", str(tmp_path), "--name", "smoke"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "break-even concurrency" in result.stdout
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
    assert sorted((r["concurrency"], r["k"]) for r in report["results"]) == [(c, k) for c in (1, 2) for k in (0, 1, 2)]
    assert all(r["output_tokens"] == 8 * r["concurrency"] and r["tokens_per_second"] > 0 for r in report["results"])
    assert report["options"]["model_dir"] == "random://llama-tiny" and report["options"]["method"] == "ngram"
    assert {"torch", "python", "cpu", "git_commit"} <= set(report["environment"])
    assert [c["k"] for c in report["batch1_speedup"]] == [1, 2]
    assert report["bandwidth"] is None  # measured on CUDA only


def test_bench_runtime_rejects_bad_flags_in_one_line(tmp_path: Path) -> None:
    specfleet = str(Path(sys.executable).with_name("specfleet"))
    result = subprocess.run([specfleet, "bench", "runtime", "--random-model", "llama-tiny", "--concurrency", "1,x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "specfleet bench: error: --concurrency '1,x' is not a comma-separated list of integers"
