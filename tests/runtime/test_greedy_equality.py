"""Greedy decoding is lossless: token-for-token identical with speculation off, at every K
and schedule, for both proposal methods, and identical to transformers' greedy generate.

float64 on CPU, so batching K+1 positions cannot flip a near-tied argmax. 52 prompts
(code and prose) with 16-24 new tokens each, submitted together into a 16-slot engine:
requests queue, join as others finish, and the decode batch size (hence a mixed
schedule's K) changes from step to step.
"""

from __future__ import annotations

import pytest
import torch
from runtime_harness import StepLog
from transformers import AutoModelForCausalLM

from specfleet.contract import SpeculationConfig, SpeculationUpdate, constant_schedule
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig

MIXED = [(1, 3, 8), (4, 7, 4), (8, 11, 2), (12, 13, 1), (14, 16, 3)]
RUNS = [(m, constant_schedule(k)) for m in ("draft", "ngram") for k in (1, 2, 4, 8)] + [
    ("draft", MIXED),
    ("ngram", MIXED),
]


@pytest.fixture(scope="module")
def setup(pair, prompt_texts):
    target, draft = pair
    log = StepLog()
    engine = Engine.from_config(
        EngineConfig(model_dir=target, draft_dir=draft, dtype="float64", max_batch=16, max_model_len=256), observer=log
    )
    prompts = [engine.tokenizer.encode(t) for t in prompt_texts]
    params = [SamplingParams(max_tokens=16 + i % 9, temperature=0.0) for i in range(len(prompts))]
    baseline = engine.generate(prompts, params)
    return engine, log, prompts, params, baseline


def test_baseline_equals_transformers_greedy_generate(pair, setup):
    engine, _, prompts, params, baseline = setup
    reference = AutoModelForCausalLM.from_pretrained(pair[0], dtype=torch.float64).eval()
    eos = sorted(engine.tokenizer.eos_token_ids)
    for prompt, p, ours in zip(prompts, params, baseline):
        out = reference.generate(
            torch.tensor([prompt]), max_new_tokens=p.max_tokens, do_sample=False, eos_token_id=eos, pad_token_id=eos[0]
        )
        assert ours == out[0, len(prompt) :].tolist()


@pytest.mark.parametrize(("method", "schedule"), RUNS, ids=[f"{m}-{s if len(s) > 1 else s[0][2]}" for m, s in RUNS])
def test_speculative_greedy_equals_plain_greedy(setup, method, schedule):
    engine, log, prompts, params, baseline = setup
    engine.update_speculation(SpeculationUpdate(enabled=True, method=method, schedule=schedule))
    log.reports.clear()
    try:
        outputs = engine.generate(prompts, params)
    finally:
        engine.update_speculation(SpeculationUpdate(enabled=False))
    assert outputs == baseline
    spec_steps = [r for r in log.reports if r.k > 0]
    drafted = sum(sum(r.draft_tokens_per_pos) for r in spec_steps)
    accepted = sum(sum(r.accepted_per_pos) for r in spec_steps)
    # Both branches of the rule ran: some drafts accepted, some rejected and rolled back.
    assert 0 < accepted < drafted
    in_force = SpeculationConfig(enabled=True, method=method, schedule=schedule)
    for r in log.reports:
        assert r.k == (in_force.k_for_batch(r.decode_batch) if r.decode_batch else 0)
        assert len(r.draft_tokens_per_pos) == len(r.accepted_per_pos) == r.k
        assert all(a <= d for a, d in zip(r.accepted_per_pos, r.draft_tokens_per_pos))
        assert r.accepted_per_pos == sorted(r.accepted_per_pos, reverse=True)
        assert r.num_drafts <= r.decode_batch
    if schedule is MIXED:
        assert {r.k for r in log.reports if r.decode_batch} >= {8, 4, 2, 3}
