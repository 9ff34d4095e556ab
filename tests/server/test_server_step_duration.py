"""`specfleet_step_duration_seconds{k, batch}`: one observation per decode step, filed under
the K that step used and its decode batch's power-of-two bucket; beside it
`specfleet_step_forward_seconds_total{k, batch}`, the forward passes inside those steps
(the controller reads the difference as per-step overhead)."""

from __future__ import annotations

import httpx

from server_harness import MODEL_NAME, Replica, build_engine
from specfleet.contract import Metric, SpeculationConfig, token_bucket
from specfleet_runtime.engine.api import SamplingParams, StepReport
from specfleet_runtime.metrics import RuntimeMetrics

STEP_COUNT = Metric.STEP_DURATION + "_count"
STEP_SUM = Metric.STEP_DURATION + "_sum"
STEP_FORWARD = Metric.STEP_FORWARD_SECONDS


def _samples(replica: Replica, name: str) -> list:
    return [s for family in replica.scrape().values() for s in family if s.name == name]


def _by_label(replica: Replica, name: str) -> dict[tuple[str, str], float]:
    return {(s.labels[Metric.K_LABEL], s.labels[Metric.BATCH_LABEL]): s.value for s in _samples(replica, name)}


def _step_k_counts(replica: Replica) -> dict[int, float]:
    """Steps per K from specfleet_step_k's cumulative buckets (one bucket per small K)."""
    cumulative = sorted((float(s.labels["le"]), s.value) for s in _samples(replica, Metric.STEP_K + "_bucket"))
    out, prev = {}, 0.0
    for le, count in cumulative:
        if le <= 16:
            out[int(le)] = count - prev
        prev = count
    return out


def _run_one_request(replica: Replica, schedule: list[list[int]]) -> None:
    with httpx.Client(timeout=60) as client:
        assert replica.put_speculation(client, enabled=True, method="draft", schedule=schedule).status_code == 200
        body = {"model": MODEL_NAME, "prompt": "def f(x):\n    return", "max_tokens": 12, "temperature": 0}
        assert client.post(f"{replica.url}/v1/completions", json=body).status_code == 200


def test_each_decode_step_is_counted_once_under_the_k_that_step_k_records(
    replica: Replica, restore_speculation: None
) -> None:
    counts_before, k_before = _by_label(replica, STEP_COUNT), _step_k_counts(replica)
    sums_before, forward_before = _by_label(replica, STEP_SUM), _by_label(replica, STEP_FORWARD)
    _run_one_request(replica, [[1, 16, 3]])  # one request alone: every decode step is batch 1, K 3
    counts_after, k_after = _by_label(replica, STEP_COUNT), _step_k_counts(replica)
    grew = {key: n - counts_before.get(key, 0.0) for key, n in counts_after.items() if n > counts_before.get(key, 0.0)}
    assert set(grew) == {("3", "1")}
    steps_at_k3 = k_after[3] - k_before.get(3, 0.0)
    assert steps_at_k3 > 0 and grew[("3", "1")] == steps_at_k3
    assert sum(k_after.values()) - sum(k_before.values()) == steps_at_k3
    wall = _by_label(replica, STEP_SUM)[("3", "1")] - sums_before.get(("3", "1"), 0.0)
    forward = _by_label(replica, STEP_FORWARD)[("3", "1")] - forward_before.get(("3", "1"), 0.0)
    assert 0 < forward < wall  # the rest is the steps' overhead


def test_plain_steps_are_filed_under_k_zero(replica: Replica, restore_speculation: None) -> None:
    before = _by_label(replica, STEP_COUNT).get(("0", "1"), 0.0)
    _run_one_request(replica, [])
    assert _by_label(replica, STEP_COUNT)[("0", "1")] > before


class _Recorder(RuntimeMetrics):
    def __init__(self) -> None:
        super().__init__(MODEL_NAME)
        self.reports: list[StepReport] = []

    def on_step(self, report: StepReport) -> None:
        self.reports.append(report)
        super().on_step(report)


def test_a_decode_step_lasts_at_least_its_forward_passes_and_a_prefill_only_step_has_none(model_pair) -> None:
    recorder = _Recorder()
    engine = build_engine(model_pair, recorder, SpeculationConfig(method="draft", k_max=4, schedule=[(1, 2, 2)]))
    try:
        prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13]]
        # Unequal lengths: the batch shrinks 3 -> 2 -> 1, from K 0 into the schedule's K 2.
        engine.generate(prompts, [SamplingParams(max_tokens=n, temperature=0) for n in (4, 10, 16)])
    finally:
        engine.shutdown()
    decode_steps = [r for r in recorder.reports if r.decode_batch > 0]
    assert decode_steps and all(r.decode_seconds is not None and r.decode_seconds > 0 for r in decode_steps)
    assert all(r.decode_seconds is None for r in recorder.reports if r.decode_batch == 0)
    for r in decode_steps:
        assert 0 < r.decode_forward_seconds <= r.decode_seconds
        if r.prefill_tokens == 0:  # then every forward timing of the step belongs to its decode
            assert r.decode_forward_seconds == sum(t.seconds for t in r.forward_timings)
        else:
            assert r.decode_forward_seconds < sum(t.seconds for t in r.forward_timings)
    # The exposition files each step under (k, batch bucket) exactly as the reports say.
    exposed = {
        (s.labels[Metric.K_LABEL], s.labels[Metric.BATCH_LABEL]): s.value
        for s in recorder.registry.collect() for s in s.samples if s.name == STEP_COUNT
    }
    expected: dict[tuple[str, str], float] = {}
    for r in decode_steps:
        key = (str(r.k), str(token_bucket(r.decode_batch)))
        expected[key] = expected.get(key, 0.0) + 1
    assert exposed == expected and {k for k, _ in expected} == {"0", "2"}
