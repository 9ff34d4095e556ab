"""Sampling with speculation draws from the target's distribution, statistically checked.

A 24-token vocabulary pair; 20,000 requests with speculation off and 20,000 with it on;
the joint distribution of the first two generated tokens, and of the two tokens the first
speculative step emits (both acceptance positions at K=2), compared by a chi-square test
of homogeneity. A deliberately wrong rule (accept every draft) must fail the same test.
"""

from __future__ import annotations

from collections import Counter

import pytest
from model_factory import make_random_pair
from scipy.stats import chi2_contingency

from specfleet.contract import SpeculationUpdate, constant_schedule
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig
from specfleet_runtime.sampling import sample_from

SAMPLES = 20_000
ALPHA = 0.001
PROMPT = "abcabdabc"


def accept_everything(p, q, draft, num_proposed, u_accept, u_sample):
    """Wrong on purpose: keeps every draft, so the output follows the draft's q, not p."""
    bonus = sample_from(p[:, -1], u_sample)
    return num_proposed.clone(), bonus


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    return make_random_pair(tmp_path_factory.mktemp("small"), vocab_size=24, seed=3)


def make_engine(small_pair, verifier=None) -> Engine:
    target, draft = small_pair
    cfg = EngineConfig(model_dir=target, draft_dir=draft, max_batch=512, max_model_len=32, max_prefill_tokens=1 << 16, seed=7)
    return Engine.from_config(cfg) if verifier is None else Engine.from_config(cfg, verifier=verifier)


def draw(engine: Engine, params: SamplingParams, method: str | None) -> list[tuple[int, ...]]:
    update = SpeculationUpdate(enabled=False) if method is None else SpeculationUpdate(
        enabled=True, method=method, schedule=constant_schedule(2)
    )
    engine.update_speculation(update)
    prompt = engine.tokenizer.encode(PROMPT)
    outputs = engine.generate([prompt] * SAMPLES, params)
    # An EOS ends a sample early; the padding marks that outcome.
    return [tuple(o + [-1] * (params.max_tokens - len(o))) for o in outputs]


def homogeneity_p(a: list[tuple], b: list[tuple]) -> float:
    """Chi-square p-value that a and b come from one distribution; rare cells pooled."""
    ca, cb = Counter(a), Counter(b)
    cells = sorted(set(ca) | set(cb))
    common = [c for c in cells if ca[c] + cb[c] >= 20]
    rare = [c for c in cells if ca[c] + cb[c] < 20]
    table = [[ca[c] for c in common], [cb[c] for c in common]]
    if rare:
        table[0].append(sum(ca[c] for c in rare))
        table[1].append(sum(cb[c] for c in rare))
    return chi2_contingency(table).pvalue


PARAMS = {
    "temperature-1": SamplingParams(max_tokens=3, temperature=1.0),
    "temperature-top-k-top-p": SamplingParams(max_tokens=3, temperature=0.8, top_k=6, top_p=0.9),
}


@pytest.fixture(scope="module")
def engine(small_pair):
    return make_engine(small_pair)


@pytest.fixture(scope="module")
def plain_samples(engine):
    """Speculation-off samples per parameter set, drawn once and shared by the tests."""
    cache: dict[str, list[tuple[int, ...]]] = {}

    def get(name: str) -> list[tuple[int, ...]]:
        if name not in cache:
            cache[name] = draw(engine, PARAMS[name], None)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "params_name"), [("draft", "temperature-1"), ("draft", "temperature-top-k-top-p"), ("ngram", "temperature-1")]
)
def test_speculative_sampling_matches_plain_sampling(engine, plain_samples, method, params_name):
    off = plain_samples(params_name)
    on = draw(engine, PARAMS[params_name], method)
    assert homogeneity_p([o[:2] for o in off], [o[:2] for o in on]) > ALPHA
    assert homogeneity_p([o[1:] for o in off], [o[1:] for o in on]) > ALPHA


@pytest.mark.slow
def test_the_same_check_rejects_a_wrong_acceptance_rule(small_pair, plain_samples):
    off = plain_samples("temperature-1")
    wrong = draw(make_engine(small_pair, verifier=accept_everything), PARAMS["temperature-1"], "draft")
    assert homogeneity_p([o[:2] for o in off], [o[:2] for o in wrong]) < ALPHA
