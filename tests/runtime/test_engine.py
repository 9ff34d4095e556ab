"""Engine behaviour: continuous batching, stop rules, seeds, limits, errors, hot switches."""

from __future__ import annotations

import threading
import time

import pytest
from runtime_harness import StepLog
from model_factory import make_random_model
from pydantic import ValidationError

from specfleet.contract import SpeculationConfig, SpeculationUpdate, constant_schedule
from specfleet_runtime.engine.api import RequestOutput, SamplingParams
from specfleet_runtime.engine.decode import STEP_LAG
from specfleet_runtime.engine.engine import Engine, EngineConfig, IncompatibleModelsError, PromptTooLongError

GREEDY = SamplingParams(max_tokens=24, temperature=0.0)
DRAFT_K3 = SpeculationConfig(enabled=True, method="draft", schedule=constant_schedule(3))


@pytest.fixture(scope="module")
def engine(pair):
    target, draft = pair
    log = StepLog()
    eng = Engine.from_config(
        EngineConfig(model_dir=target, draft_dir=draft, dtype="float64", max_batch=8, max_model_len=96), observer=log
    )
    eng.log = log
    yield eng
    eng.shutdown()


@pytest.fixture
def spec(engine):
    """Run a test under a speculation config, restoring 'off' afterwards."""

    def use(cfg: SpeculationConfig) -> None:
        engine.update_speculation(SpeculationUpdate(**cfg.model_dump()))

    yield use
    engine.update_speculation(SpeculationUpdate(enabled=False))


class Collector:
    def __init__(self) -> None:
        self.events: list[RequestOutput] = []
        self.done = threading.Event()

    def __call__(self, out: RequestOutput) -> None:
        self.events.append(out)
        if out.finished:
            self.done.set()

    @property
    def tokens(self) -> list[int]:
        return [t for e in self.events for t in e.new_token_ids]

    @property
    def text(self) -> str:
        return "".join(e.new_text for e in self.events)

    @property
    def finish_reason(self):
        return self.events[-1].finish_reason


def encode(engine: Engine, text: str) -> list[int]:
    return engine.tokenizer.encode(text)


def test_events_carry_token_counts_and_text_that_decodes_the_tokens(engine):
    prompt = encode(engine, "def parse(line):\n")
    c = Collector()
    engine.add_request(prompt, SamplingParams(max_tokens=12, temperature=0.0), c)
    while not c.done.is_set():
        engine.step()
    assert c.finish_reason in ("length", "stop")
    assert c.events[-1].prompt_tokens == len(prompt)
    assert c.events[-1].completion_tokens == len(c.tokens)
    assert c.text == engine.tokenizer.decode(c.tokens)


def test_requests_joining_mid_flight_generate_what_they_would_alone(engine, spec):
    spec(DRAFT_K3)
    prompts = [encode(engine, t) for t in ("import re\n", "The parser reads", "class Wrapper:\n    ")]
    params = SamplingParams(max_tokens=40, temperature=0.0)
    alone = [engine.generate([p], params)[0] for p in prompts]
    engine.log.reports.clear()
    engine.start()
    try:
        first = Collector()
        engine.add_request(prompts[0], params, first)
        while len(first.tokens) < 10:
            time.sleep(0.001)
        late = [Collector(), Collector()]
        for p, c in zip(prompts[1:], late):
            engine.add_request(p, params, c)
        for c in [first, *late]:
            assert c.done.wait(30)
    finally:
        engine.shutdown()
    assert [first.tokens, late[0].tokens, late[1].tokens] == alone
    batches = [r.decode_batch for r in engine.log.reports]
    assert 1 in batches and 3 in batches  # the first ran alone, then all three decoded together


@pytest.mark.parametrize("speculate", [False, True], ids=["plain", "draft-k3"])
def test_stop_string_and_what_follows_are_not_emitted(engine, spec, speculate):
    if speculate:
        spec(DRAFT_K3)
    prompt = encode(engine, "for item in items:\n")
    full = Collector()
    engine.add_request(prompt, GREEDY, full)
    while not full.done.is_set():
        engine.step()
    stop = full.text[8:11]
    assert len(stop) == 3
    stopped = Collector()
    engine.add_request(prompt, SamplingParams(max_tokens=24, temperature=0.0, stop=("zzzz-unused", stop)), stopped)
    while not stopped.done.is_set():
        engine.step()
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[: full.text.index(stop)]
    assert full.tokens[: len(stopped.tokens)] == stopped.tokens


def test_eos_finishes_with_stop_and_is_not_in_the_text(tmp_path):
    path = make_random_model(tmp_path / "m", seed=11)
    eng = Engine.from_config(EngineConfig(model_dir=path))
    eos = min(eng.tokenizer.eos_token_ids)
    # Sample until some request draws EOS: a random model reaches it quickly at temperature 2.
    outs = eng.generate([encode(eng, "x = 1\n")] * 64, SamplingParams(max_tokens=48, temperature=2.0, seed=None))
    ended = [o for o in outs if o[-1] == eos]
    assert ended, "no request drew EOS"
    assert all(eos not in o[:-1] for o in ended)


def test_same_seed_same_output_regardless_of_other_requests(engine):
    prompt = encode(engine, "The result is")
    seeded = SamplingParams(max_tokens=20, temperature=1.0, seed=1234)
    alone = engine.generate([prompt], seeded)[0]
    noisy = engine.generate([prompt, prompt, encode(engine, "x")], [SamplingParams(max_tokens=20), seeded, SamplingParams(max_tokens=5)])
    other_seed = engine.generate([prompt], SamplingParams(max_tokens=20, temperature=1.0, seed=99))[0]
    assert noisy[1] == alone
    assert other_seed != alone


def test_seeded_speculative_sampling_is_reproducible(engine, spec):
    spec(DRAFT_K3)
    prompt = encode(engine, "The result is")
    seeded = SamplingParams(max_tokens=20, temperature=0.9, top_k=40, seed=7)
    assert engine.generate([prompt], seeded) == engine.generate([prompt], seeded)


def test_prompt_longer_than_max_model_len_is_refused_naming_the_limit(engine):
    with pytest.raises(PromptTooLongError, match="max_model_len=96"):
        engine.add_request([5] * 96, GREEDY, Collector())


@pytest.mark.parametrize("speculate", [False, True], ids=["plain", "draft-k3"])
def test_generation_stops_with_length_at_max_model_len(engine, spec, speculate):
    if speculate:
        spec(DRAFT_K3)
    for prompt_len in (95, 80):
        c = Collector()
        engine.add_request([7] * prompt_len, SamplingParams(max_tokens=1000, temperature=0.0), c)
        while not c.done.is_set():
            engine.step()
        if c.finish_reason == "length":
            assert prompt_len + len(c.tokens) == 96
        else:  # an EOS came first
            assert c.tokens[-1] in engine.tokenizer.eos_token_ids


def test_a_failing_callback_aborts_only_its_request(engine):
    prompts = [encode(engine, t) for t in ("a = [", "b = {", "c = (")]
    expected = engine.generate(prompts, GREEDY)
    good = [Collector(), Collector()]
    bad_events: list[RequestOutput] = []

    def bad(out: RequestOutput) -> None:
        bad_events.append(out)
        if not out.finished:
            raise RuntimeError("client went away")

    engine.start()
    try:
        engine.add_request(prompts[0], GREEDY, good[0])
        engine.add_request(prompts[1], GREEDY, bad)
        engine.add_request(prompts[2], GREEDY, good[1])
        for c in good:
            assert c.done.wait(30)
        assert engine.generate([prompts[0]], GREEDY) == [expected[0]]  # the loop still serves
    finally:
        engine.shutdown()
    assert [good[0].tokens, good[1].tokens] == [expected[0], expected[2]]
    assert bad_events[-1].finish_reason == "abort"
    assert engine.num_running == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(temperature=-1.0), "temperature"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_k=-2), "top_k"),
    ],
)
def test_invalid_sampling_params_are_refused_naming_the_field(engine, params, field):
    with pytest.raises(ValueError, match=field):
        engine.add_request([1, 2], params, Collector())


def test_token_ids_outside_the_vocabulary_are_refused(engine):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request([1, 10**6], GREEDY, Collector())


def test_abort_finishes_a_running_request_and_frees_its_slot(engine):
    c = Collector()
    rid = engine.add_request(encode(engine, "while True:"), SamplingParams(max_tokens=60, temperature=0.0), c)
    engine.step()
    engine.step()
    engine.abort(rid)
    engine.step()
    assert c.finish_reason == "abort"
    assert 0 < len(c.tokens) < 60
    assert engine.num_running == 0 and engine.num_waiting == 0


def test_speculation_off_runs_no_draft_forward(engine, spec):
    engine.log.reports.clear()
    engine.generate([encode(engine, "x = ")], GREEDY)
    assert engine.log.reports and all(r.k == 0 for r in engine.log.reports)
    assert {t.model for r in engine.log.reports for t in r.forward_timings} == {"target"}
    spec(DRAFT_K3)
    engine.log.reports.clear()
    engine.generate([encode(engine, "x = ")], GREEDY)
    assert {t.model for r in engine.log.reports for t in r.forward_timings} == {"target", "draft"}


def test_switching_speculation_every_step_keeps_greedy_outputs(engine, spec):
    prompts = [encode(engine, t) for t in ("import os\n", "def main():\n", "Return the", "x = [1, 2,")]
    params = SamplingParams(max_tokens=30, temperature=0.0)
    expected = engine.generate(prompts, params)
    configs = [SpeculationUpdate(enabled=False)] + [
        SpeculationUpdate(enabled=True, method=m, schedule=constant_schedule(k)) for m in ("draft", "ngram") for k in (1, 4, 8)
    ]
    collectors = [Collector() for _ in prompts]
    for p, c in zip(prompts, collectors):
        engine.add_request(p, params, c)
    i = 0
    while not all(c.done.is_set() for c in collectors):
        engine.update_speculation(configs[i % len(configs)])
        engine.step()
        i += 1
    assert [c.tokens for c in collectors] == expected


def test_prompts_joining_a_batch_that_does_not_draft_skip_the_draft_prefill_and_catch_up_later(engine, spec):
    """K=3 at batch 1 only: three prompts join a batch of three (K=0), so the draft is not
    prefilled; once two have finished, the third drafts, its history fed to the draft in a
    prefill pass first, and every output is still what speculation off gives."""
    prompts = [encode(engine, t) for t in ("import os\n", "def main():\n", "x = [1, 2,")]
    params = [SamplingParams(max_tokens=n, temperature=0.0) for n in (4, 6, 30)]
    expected = engine.generate(prompts, params)
    spec(SpeculationConfig(enabled=True, method="draft", schedule=[(1, 1, 3)]))
    engine.log.reports.clear()
    assert engine.generate(prompts, params) == expected

    reports = engine.log.reports
    admission = next(r for r in reports if r.prefill_tokens)
    assert admission.prefill_tokens == sum(map(len, prompts))
    assert {t.model for t in admission.forward_timings} == {"target"}
    drafting = [r for r in reports if r.k > 0]
    assert drafting and all(r.decode_batch == 1 for r in drafting)
    first = [t for t in drafting[0].forward_timings if t.model == "draft"]
    assert first[0].shape == "prefill" and first[0].tokens > STEP_LAG  # the catch-up
    in_step = [t for r in drafting for t in r.forward_timings if t.model == "draft" and t.shape != "prefill"]
    assert in_step and all(t.tokens <= STEP_LAG for t in in_step)
    assert all(t.shape != "prefill" for r in drafting[1:] for t in r.forward_timings)


def test_speculation_updates_are_validated(engine, pair, tmp_path):
    with pytest.raises(ValidationError, match="exceeds k_max"):
        engine.update_speculation(SpeculationUpdate(k_max=2, schedule=[(1, 4, 3)]))
    target, _ = pair
    no_draft = Engine.from_config(EngineConfig(model_dir=target, speculation=SpeculationConfig(enabled=True, method="ngram")))
    with pytest.raises(ValueError, match="method"):
        no_draft.update_speculation(SpeculationUpdate(method="draft"))
    assert no_draft.speculation.method == "ngram"


def test_draft_method_without_a_draft_model_is_refused(pair):
    with pytest.raises(ValueError, match="draft model"):
        Engine.from_config(EngineConfig(model_dir=pair[0], speculation=SpeculationConfig(enabled=True, method="draft")))


def test_draft_with_another_vocabulary_is_refused_naming_both_sizes(pair, tmp_path):
    other = make_random_model(tmp_path / "other", vocab_size=300)
    with pytest.raises(IncompatibleModelsError, match="300.*512"):
        Engine.from_config(EngineConfig(model_dir=pair[0], draft_dir=other))


def test_calibration_sweeps_powers_of_two_for_both_models_without_disturbing_requests(engine, spec):
    spec(DRAFT_K3)
    prompts = [encode(engine, t) for t in ("if x:\n", "The value of")]
    params = SamplingParams(max_tokens=30, temperature=0.0)
    expected = engine.generate(prompts, params)
    collectors = [Collector() for _ in prompts]
    for p, c in zip(prompts, collectors):
        engine.add_request(p, params, c)
    engine.step()
    engine.step()
    start = time.perf_counter()
    timings = engine.calibrate(max_seconds=2.0)
    assert time.perf_counter() - start < 4.0
    while not all(c.done.is_set() for c in collectors):
        engine.step()
    assert [c.tokens for c in collectors] == expected
    counts = {(t.model, t.tokens) for t in timings}
    top = engine.max_batch * (engine.speculation.k_max + 1)  # 8 * 9 = 72 -> up to 128
    assert counts == {(m, 1 << i) for m in ("target", "draft") for i in range(8)}
    assert top <= 128 and all(t.seconds > 0 for t in timings)


@pytest.mark.parametrize("method", ["draft", "ngram"])
def test_greedy_rows_stay_exact_when_batched_with_sampled_rows(engine, spec, method):
    spec(SpeculationConfig(enabled=True, method=method, schedule=constant_schedule(4)))
    prompts = [encode(engine, t) for t in ("def run(self):\n", "The list", "import json\n", "A value")]
    greedy = SamplingParams(max_tokens=24, temperature=0.0)
    hot = SamplingParams(max_tokens=24, temperature=1.2, top_p=0.95, seed=3)
    expected = engine.generate(prompts, greedy)
    mixed = engine.generate(prompts, [greedy, hot, greedy, hot])
    assert [mixed[0], mixed[2]] == [expected[0], expected[2]]


def test_a_request_whose_text_handling_fails_is_aborted_alone(engine):
    prompts = [encode(engine, t) for t in ("x = 1\n", "y = 2\n")]
    expected = engine.generate(prompts, GREEDY)
    ok, broken = Collector(), Collector()
    engine.add_request(prompts[0], GREEDY, ok)
    engine.add_request(prompts[1], GREEDY, broken)
    victim = next(s for s in engine._inbox if s.on_output is broken)  # not yet picked up by a step

    def explode(token_id: int) -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a tokenizer failure")

    victim.stream.add = explode  # a real failure mode (a broken tokenizer) injected for one request
    while not (ok.done.is_set() and broken.done.is_set()):
        engine.step()
    assert ok.tokens == expected[0] and ok.finish_reason != "abort"
    assert broken.finish_reason == "abort"


def test_the_cache_grows_for_long_prompts_without_changing_any_output(pair, prompt_texts):
    """The cache starts at 512 positions and doubles on demand; a sequence decoding while it
    grows, and the long prompt that made it grow, both get transformers' greedy output."""
    import torch
    from transformers import AutoModelForCausalLM

    target, draft = pair
    eng = Engine.from_config(
        EngineConfig(model_dir=target, draft_dir=draft, dtype="float64", max_batch=2, speculation=DRAFT_K3)
    )
    short = encode(eng, prompt_texts[0])
    long = encode(eng, " ".join(prompt_texts))[:700]
    assert len(long) == 700
    params = SamplingParams(max_tokens=20, temperature=0.0)
    first, second = Collector(), Collector()
    eng.add_request(short, params, first)
    eng.step()
    eng.step()
    eng.add_request(long, params, second)
    while not (first.done.is_set() and second.done.is_set()):
        eng.step()
    assert eng._target.cache_len == 1024 and eng._draft.cache_len == 1024
    reference = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float64).eval()
    eos = sorted(eng.tokenizer.eos_token_ids)
    for prompt, got in ((short, first.tokens), (long, second.tokens)):
        out = reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=eos[0])
        assert got == out[0, len(prompt):].tolist()
