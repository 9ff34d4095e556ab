"""Readings of a replica's /metrics text (as the runtime's own metrics layer writes it),
their differences, the demo's per-phase summary and verdict, and the view's schedule text."""

from pathlib import Path

import pytest

from specfleet.contract import MAX_SCHEDULE_BATCH, SpeculationConfig
from specfleet.local.load import BUILTIN_PROMPTS, demo_phases, load_prompts
from specfleet.local.probe import ReplicaCounters, parse_counters, rates
from specfleet.local.report import BEYOND_MAX_BATCH, PhaseRecord, Timeline, plot_timeline, summarize, verdict
from specfleet.local.view import ReplicaView, ViewState, format_schedule, render
from specfleet_runtime.engine.api import StepReport
from specfleet_runtime.metrics import RuntimeMetrics


def exposition_after(steps: list[StepReport]) -> str:
    metrics = RuntimeMetrics("pycode")
    for step in steps:
        metrics.on_step(step)
    return metrics.exposition().decode()


def test_counters_are_read_from_the_runtime_exposition():
    steps = [
        StepReport(decode_batch=1, k=3, generated_tokens=3, num_drafts=1, draft_tokens_per_pos=[1, 1, 1], accepted_per_pos=[1, 1, 0]),
        StepReport(decode_batch=2, k=0, generated_tokens=2),
        StepReport(decode_batch=0, k=0, prefill_tokens=40),  # prefill only: not a decode step
        StepReport(decode_batch=4, k=0, generated_tokens=4),
    ]
    counters = parse_counters(exposition_after(steps), time=10.0)
    assert counters.generation_tokens == 9
    assert counters.decode_steps == 3
    assert counters.decode_batch_sum == 7
    assert counters.step_k_sum == 3
    assert counters.step_k_zero == 2
    assert (counters.draft_tokens, counters.accepted_tokens) == (3, 2)


def test_rates_between_two_readings():
    old = ReplicaCounters(time=0.0, generation_tokens=100, decode_steps=10, decode_batch_sum=10, step_k_sum=40, step_k_zero=0,
                          draft_tokens=40, accepted_tokens=20)
    new = ReplicaCounters(time=2.0, generation_tokens=300, decode_steps=30, decode_batch_sum=170, step_k_sum=40, step_k_zero=20,
                          draft_tokens=40, accepted_tokens=20, running=8)
    r = rates(old, new)
    assert r.tokens_per_s == 100
    assert r.mean_batch == 8  # 160 sequences over 20 steps
    assert r.mean_k == 0 and r.speculating_fraction == 0
    assert r.acceptance is None  # nothing drafted in between
    assert r.running == 8
    idle = rates(new, ReplicaCounters(time=3.0, generation_tokens=300, decode_steps=30, decode_batch_sum=170, step_k_sum=40, step_k_zero=20))
    assert idle.mean_k is None and idle.tokens_per_s == 0


def test_a_restarted_replica_counts_from_zero_not_negative():
    old = ReplicaCounters(time=0.0, generation_tokens=1000, decode_steps=100, decode_batch_sum=100)
    new = ReplicaCounters(time=1.0, generation_tokens=30, decode_steps=10, decode_batch_sum=10)
    assert rates(old, new).tokens_per_s == 30


def phase(name: str, streams: int, start_k: float, end: dict) -> PhaseRecord:
    zero = ReplicaCounters(time=0.0)
    return PhaseRecord(name, streams, 1, 0.0, 0.0, 10.0, {"r0": zero}, {"r0": ReplicaCounters(time=10.0, **end)})


def test_summary_and_verdict_accept_speculation_that_follows_the_load():
    phases = [
        phase("1-low", 1, 0, dict(generation_tokens=200, decode_steps=100, decode_batch_sum=100, step_k_sum=400, draft_tokens=400, accepted_tokens=200)),
        phase("2-high", 8, 0, dict(generation_tokens=800, decode_steps=100, decode_batch_sum=800, step_k_sum=0, step_k_zero=100)),
        phase("3-low", 1, 0, dict(generation_tokens=150, decode_steps=50, decode_batch_sum=50, step_k_sum=150, draft_tokens=150, accepted_tokens=100)),
    ]
    summary = summarize(phases)
    assert [(s.phase, s.mean_k, s.speculating_fraction) for s in summary] == [("1-low", 4, 1), ("2-high", 0, 0), ("3-low", 3, 1)]
    assert summary[0].acceptance == 0.5 and summary[1].mean_batch == 8 and summary[1].tokens_per_s == 80
    assert verdict(summary, {"2-high"}) == []


def test_verdict_names_each_replica_and_phase_that_went_wrong():
    phases = [
        phase("1-low", 1, 0, dict(generation_tokens=100, decode_steps=100, decode_batch_sum=100, step_k_zero=100)),
        phase("2-high", 8, 0, dict(generation_tokens=800, decode_steps=100, decode_batch_sum=800, step_k_sum=20, step_k_zero=90)),
        phase("3-low", 1, 0, dict()),
        phase("4-low", 1, 0, dict(generation_tokens=100, decode_steps=100, decode_batch_sum=100, step_k_sum=40, step_k_zero=80)),
    ]
    problems = verdict(summarize(phases), {"2-high"})
    assert problems == [
        "r0 in phase 1-low: speculated on only 0.0% of steps under low load",
        "r0 in phase 2-high: speculated on 10.0% of steps (mean K 0.20) under high load",
        "r0 in phase 3-low: no decode steps measured",
        "r0 in phase 4-low: speculated on only 20.0% of steps under low load",  # a stray few is not "on"
    ]


def test_timeline_png_is_written(tmp_path):
    timeline = Timeline()
    r = rates(ReplicaCounters(time=0.0), ReplicaCounters(time=1.0, generation_tokens=10, decode_steps=5, decode_batch_sum=5, step_k_sum=10))
    for t in range(5):
        timeline.add(float(t), 2, {"r0": r, "r1": None if t < 2 else r}, {"r0": 4.0 if t < 3 else BEYOND_MAX_BATCH})
    assert len(timeline.per_replica["r1"]) == 5
    assert timeline.break_even == {"r0": [4.0, 4.0, 4.0, BEYOND_MAX_BATCH, BEYOND_MAX_BATCH], "r1": [None] * 5}
    png = plot_timeline(timeline, [PhaseRecord("1-low", 2, 2, 0.0, 1.0, 5.0, {}, {})], tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (None, "-"),
        (SpeculationConfig(enabled=False), "off"),
        (SpeculationConfig(k_max=8, schedule=[(1, 4, 5), (5, 6, 2)]), "b1-4:K5 b5-6:K2 b7+:K0"),
        (SpeculationConfig(k_max=8, schedule=[(1, 1, 3), (2, MAX_SCHEDULE_BATCH, 1)]), "b1:K3 b2+:K1"),
        (SpeculationConfig(k_max=8, schedule=[]), "b1+:K0"),
    ],
)
def test_schedules_read_as_batch_ranges(config, text):
    assert format_schedule(config) == text


def test_the_view_shows_every_replica_with_its_schedule_and_break_even():
    from rich.console import Console

    state = ViewState("pycode", "http://127.0.0.1:8000", "Prometheus", 15.0, 16,
                      replicas=[ReplicaView("pycode-0", "u", in_force=SpeculationConfig(schedule=[(1, 3, 4)]), break_even=4),
                                ReplicaView("pycode-1", "u")])
    console = Console(width=160, record=True)
    console.print(render(state, now=state.started_at + 5))
    text = console.export_text()
    assert "pycode-0" in text and "b1-3:K4 b4+:K0" in text
    row1 = next(line for line in text.splitlines() if "pycode-1" in line)
    assert "b4+" not in row1


def test_the_view_shows_the_break_even_in_force_and_a_differing_estimate_beside_it():
    from rich.console import Console

    in_force = SpeculationConfig(schedule=[(1, 3, 4)])
    state = ViewState("pycode", "http://127.0.0.1:8000", "Prometheus", 15.0, 16, replicas=[
        ReplicaView("pycode-0", "u", in_force=in_force, break_even=4, estimated_break_even=9),
        ReplicaView("pycode-1", "u", in_force=in_force, break_even=4, estimated_break_even=4),
        ReplicaView("pycode-2", "u", in_force=SpeculationConfig(schedule=[(1, 1 << 20, 2)]), break_even=None,
                    estimated_break_even=5),
    ])
    console = Console(width=200, record=True)
    console.print(render(state, now=state.started_at + 5))
    rows = {line.split()[1]: line for line in console.export_text().splitlines() if "pycode-" in line}
    assert "4 (est 9)" in rows["pycode-0"]
    assert "(est" not in rows["pycode-1"]
    assert ">16 (est 5)" in rows["pycode-2"]


def test_the_demo_warms_up_then_goes_low_high_low_and_high_fills_every_replica():
    phases = demo_phases(replicas=2, max_batch=16, seconds=30, warm_up=75)
    assert [(p.name, p.streams, p.high, p.measured) for p in phases] == [
        ("0-warm-up", 2, False, False), ("1-low", 2, False, True), ("2-high", 32, True, True), ("3-low", 2, False, True),
    ]
    assert [p.seconds for p in phases] == [75, 30, 30, 30]
    assert [p.name for p in demo_phases(1, 4, 10, warm_up=0)] == ["1-low", "2-high", "3-low"]


def test_prompts_come_from_the_jsonl_file_or_the_builtin_set(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": 0, "prompt": "def a():\\n"}\n\n{"id": 1, "prompt": "class B:\\n"}\n')
    assert load_prompts(path) == ["def a():\n", "class B:\n"]
    assert load_prompts(tmp_path / "missing.jsonl") == list(BUILTIN_PROMPTS)
