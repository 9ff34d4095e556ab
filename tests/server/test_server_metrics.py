"""/metrics speaks the contract (DESIGN.md §3): exact names, a model_name label on every
series, and sound semantics, read back with prometheus_client's own parser."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from server_harness import MODEL_NAME, Replica
from specfleet.contract import Metric, token_bucket
from specfleet_runtime.engine.api import RequestOutput
from specfleet_runtime.metrics import RequestTimer, RuntimeMetrics

COUNTERS = [Metric.GENERATION_TOKENS, Metric.PROMPT_TOKENS, Metric.NUM_DRAFTS, Metric.NUM_DRAFT_TOKENS,
            Metric.NUM_ACCEPTED_TOKENS, Metric.ACCEPTED_PER_POS, Metric.DRAFT_TOKENS_PER_POS]
GAUGES = [Metric.REQUESTS_RUNNING, Metric.REQUESTS_WAITING, Metric.SPECULATION_ENABLED, Metric.SPECULATION_K_MAX,
          Metric.CALIBRATED_FORWARD]
HISTOGRAMS = [Metric.TTFT, Metric.TPOT, Metric.E2E_LATENCY, Metric.DECODE_BATCH_SIZE, Metric.STEP_K,
              Metric.FORWARD_DURATION]


def complete(replica: Replica, prompt: str, max_tokens: int = 24) -> dict:
    body = {"model": MODEL_NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    response = httpx.post(f"{replica.url}/v1/completions", json=body, timeout=60)
    assert response.status_code == 200
    return response.json()


def load(replica: Replica, n: int = 8) -> list[dict]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: complete(replica, f"def f{i}(x):\n    return x"), range(n)))


def samples(scrape: dict[str, list], sample_name: str) -> list:
    return [s for family in scrape.values() for s in family if s.name == sample_name]


def value(scrape: dict[str, list], sample_name: str, **labels: str) -> float:
    return sum(s.value for s in samples(scrape, sample_name) if all(s.labels.get(k) == v for k, v in labels.items()))


def per_position(scrape: dict[str, list], sample_name: str) -> list[float]:
    by_pos = {int(s.labels["position"]): s.value for s in samples(scrape, sample_name)}
    return [by_pos[i] for i in range(len(by_pos))]


@pytest.fixture
def speculating(replica: Replica, restore_speculation: None) -> Replica:
    with httpx.Client() as client:
        assert replica.put_speculation(client, enabled=True, method="draft", schedule=[[1, 16, 4]]).status_code == 200
    load(replica)
    return replica


def test_every_contract_name_is_exposed_exactly_with_a_model_name_label(speculating: Replica) -> None:
    scrape = speculating.scrape()
    exposed = {s.name for family in scrape.values() for s in family}
    for name in COUNTERS + GAUGES:
        assert name in exposed, name
    for name in HISTOGRAMS:
        assert {f"{name}_bucket", f"{name}_sum", f"{name}_count"} <= exposed, name
    ours = [s for family in scrape.values() for s in family
            if s.name.startswith(("vllm:", "specfleet_"))]
    assert ours and all(s.labels.get("model_name") == MODEL_NAME for s in ours)


def test_accepted_tokens_never_exceed_drafted_and_fall_with_position(speculating: Replica) -> None:
    scrape = speculating.scrape()
    drafted = value(scrape, Metric.NUM_DRAFT_TOKENS)
    accepted = value(scrape, Metric.NUM_ACCEPTED_TOKENS)
    assert 0 < accepted <= drafted
    acc_pos = per_position(scrape, Metric.ACCEPTED_PER_POS)
    draft_pos = per_position(scrape, Metric.DRAFT_TOKENS_PER_POS)
    assert len(acc_pos) >= 4 and len(acc_pos) == len(draft_pos)
    assert all(a <= d for a, d in zip(acc_pos, draft_pos))
    assert all(later <= earlier for earlier, later in zip(acc_pos, acc_pos[1:]))
    assert sum(acc_pos) == accepted and sum(draft_pos) == drafted
    assert value(scrape, Metric.NUM_DRAFTS) == draft_pos[0], "every draft reaches position 0"
    assert value(scrape, Metric.GENERATION_TOKENS) > accepted


def test_step_k_observes_steps_that_do_not_speculate(replica: Replica, restore_speculation: None) -> None:
    def k0_steps() -> float:
        return value(replica.scrape(), f"{Metric.STEP_K}_bucket", le="0.0")

    with httpx.Client() as client:
        before = k0_steps()
        assert replica.put_speculation(client, enabled=True, schedule=[[2, 16, 3]]).status_code == 200
        complete(replica, "batch of one: outside every row", max_tokens=10)
        through_schedule = k0_steps()
        assert replica.put_speculation(client, enabled=False).status_code == 200
        complete(replica, "speculation off", max_tokens=10)
    assert through_schedule >= before + 5
    assert k0_steps() >= through_schedule + 5


def test_speculation_gauges_follow_every_put(replica: Replica, restore_speculation: None) -> None:
    with httpx.Client() as client:
        for enabled, k_max in [(False, 8), (True, 5), (True, 12)]:
            assert replica.put_speculation(client, enabled=enabled, k_max=k_max, schedule=[[1, 4, 2]]).status_code == 200
            scrape = replica.scrape()
            assert value(scrape, Metric.SPECULATION_ENABLED) == float(enabled)
            assert value(scrape, Metric.SPECULATION_K_MAX) == k_max


def test_forward_timings_and_calibration_use_power_of_two_token_buckets(speculating: Replica) -> None:
    scrape = speculating.scrape()
    for name in (f"{Metric.FORWARD_DURATION}_count", Metric.CALIBRATED_FORWARD):
        found = samples(scrape, name)
        assert {s.labels["model"] for s in found} == {"target", "draft"}, name
        for s in found:
            tokens = int(s.labels["tokens"])
            assert token_bucket(tokens) == tokens and s.value > 0, (name, s)
    calibrated_tokens = {int(s.labels["tokens"]) for s in samples(scrape, Metric.CALIBRATED_FORWARD)}
    assert 1 in calibrated_tokens and max(calibrated_tokens) > 8, "the sweep spans 1 .. max_batch*(k_max+1)"


def test_passes_are_timed_by_shape_and_the_target_is_calibrated_in_both_decode_shapes(speculating: Replica) -> None:
    scrape = speculating.scrape()

    def shapes(name: str, model: str) -> set[str]:
        return {s.labels[Metric.SHAPE_LABEL] for s in samples(scrape, name) if s.labels["model"] == model}

    # Prompts are prefills; a speculating step verifies several tokens per row and drafts one.
    assert {"prefill", "verify"} <= shapes(f"{Metric.FORWARD_DURATION}_count", "target")
    assert {"prefill", "decode"} <= shapes(f"{Metric.FORWARD_DURATION}_count", "draft")
    assert shapes(Metric.CALIBRATED_FORWARD, "target") == {"decode", "verify"}
    tokens = {
        shape: {int(s.labels["tokens"]) for s in samples(scrape, Metric.CALIBRATED_FORWARD)
                if s.labels["model"] == "target" and s.labels[Metric.SHAPE_LABEL] == shape}
        for shape in ("decode", "verify")
    }
    assert 1 in tokens["decode"] and 1 not in tokens["verify"] and {2, 4} <= tokens["verify"]


def test_request_latency_histograms_count_each_finished_request(replica: Replica) -> None:
    before = replica.scrape()
    responses = load(replica, n=4)
    after = replica.scrape()
    for name in (Metric.TTFT, Metric.E2E_LATENCY):
        assert value(after, f"{name}_count") - value(before, f"{name}_count") == 4, name
    multi_token = sum(1 for r in responses if r["usage"]["completion_tokens"] > 1)  # TPOT needs two tokens
    assert value(after, f"{Metric.TPOT}_count") - value(before, f"{Metric.TPOT}_count") == multi_token
    assert value(after, f"{Metric.PROMPT_TOKENS}") > value(before, f"{Metric.PROMPT_TOKENS}")
    assert value(after, Metric.REQUESTS_RUNNING) == 0 and value(after, Metric.REQUESTS_WAITING) == 0


def test_request_timer_derives_ttft_tpot_and_e2e_from_the_event_stream() -> None:
    metrics = RuntimeMetrics("m")
    clock = iter([10.0, 10.5, 11.0, 12.5]).__next__  # arrival, first token, more tokens, last token
    timer = RequestTimer(metrics, clock=clock)
    timer.on_output(RequestOutput("r", [1], "a", completion_tokens=1))
    timer.on_output(RequestOutput("r", [2, 3], "bc", completion_tokens=3))
    timer.on_output(RequestOutput("r", [4], "d", finish_reason="length", completion_tokens=4))
    registry = metrics.registry
    assert registry.get_sample_value(f"{Metric.TTFT}_sum", {"model_name": "m"}) == 0.5
    assert registry.get_sample_value(f"{Metric.E2E_LATENCY}_sum", {"model_name": "m"}) == 2.5
    assert registry.get_sample_value(f"{Metric.TPOT}_sum", {"model_name": "m"}) == pytest.approx(2.0 / 3)
