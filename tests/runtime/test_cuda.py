"""CUDA paths (run only where a GPU is present): the same model, the engine in bfloat16."""

from __future__ import annotations

import pytest
import torch

from specfleet.contract import SpeculationUpdate, constant_schedule
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.engine.engine import Engine, EngineConfig
from specfleet_runtime.loader import load_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_cuda_float32_logits_match_cpu(pair):
    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(0))
    logits = []
    for device in ("cpu", "cuda"):
        model = load_model(pair[0], dtype="float32", device=device)
        model.setup_cache(slots=2, max_len=41)
        with torch.no_grad():
            out = model(ids.to(device), torch.arange(40).expand(2, -1).to(device), torch.arange(2, device=device))
        logits.append(out.cpu())
    assert ((logits[1] - logits[0]).abs().max() / logits[0].abs().max()).item() <= 1e-3


def test_bfloat16_engine_runs_every_decode_path(pair):
    target, draft = pair
    engine = Engine.from_config(EngineConfig(model_dir=target, draft_dir=draft, device="cuda", max_batch=8))
    prompts = [engine.tokenizer.encode(t) for t in ("def f(x):\n", "The answer", "import os\n")]
    params = [SamplingParams(max_tokens=20, temperature=0.0), SamplingParams(max_tokens=20, temperature=0.8, seed=1),
              SamplingParams(max_tokens=20, temperature=1.0, top_k=20, top_p=0.9)]
    updates = [SpeculationUpdate(enabled=False)] + [
        SpeculationUpdate(enabled=True, method=m, schedule=constant_schedule(4)) for m in ("draft", "ngram")
    ]
    eos = engine.tokenizer.eos_token_ids
    for update in updates:
        engine.update_speculation(update)
        for out in engine.generate(prompts, params):
            assert len(out) == 20 or out[-1] in eos
    assert {t.model for t in engine.calibrate(max_seconds=2.0)} == {"target", "draft"}


def test_graph_replayed_decode_passes_match_eager_ones(pair):
    from specfleet_runtime.engine.runner import ModelRunner

    runners = {}
    for graphs in (True, False):
        runner = ModelRunner("target", load_model(pair[0], dtype="float32", device="cuda"), 8, 128, cuda_graphs=graphs)
        timings = []
        runner.extend([list(range(1, 20)), list(range(3, 40)), list(range(5, 12))], [0, 0, 0], [0, 1, 2], timings)
        runners[graphs] = runner
    assert runners[True].graphs is not None and runners[False].graphs is None
    starts = torch.tensor([19, 37, 7], device="cuda")
    for slots, prefix in ((torch.tensor([0, 1, 2], device="cuda"), True), (torch.tensor([2, 0, 1], device="cuda"), False)):
        for width in (1, 5):
            tokens = torch.randint(0, 512, (3, width), device="cuda")
            start = starts[slots]
            out = {g: r.decode(tokens, start, slots, int(start.max()) + width, [], prefix) for g, r in runners.items()}
            assert ((out[True] - out[False]).abs().max() / out[False].abs().max()).item() <= 1e-4


def test_greedy_outputs_are_the_same_with_and_without_cuda_graphs(pair):
    target, draft = pair
    prompts = None
    results = {}
    for graphs in (True, False):
        engine = Engine.from_config(EngineConfig(
            model_dir=target, draft_dir=draft, device="cuda", dtype="float64", max_batch=8, cuda_graphs=graphs,
        ))
        prompts = prompts or [engine.tokenizer.encode(t) for t in ("def f(x):\n", "The answer is", "import os\n")]
        params = SamplingParams(max_tokens=24, temperature=0.0)
        results[graphs] = []
        for update in (SpeculationUpdate(enabled=False), SpeculationUpdate(enabled=True, method="draft", schedule=constant_schedule(3)),
                       SpeculationUpdate(enabled=True, method="ngram", schedule=constant_schedule(4))):
            engine.update_speculation(update)
            results[graphs].append(engine.generate(prompts, params))
    assert results[True] == results[False]
    assert results[True][0] == results[True][1] == results[True][2]


def test_compiled_layers_replay_the_same_decode_logits(pair):
    from specfleet_runtime.engine.runner import ModelRunner

    runners = {c: ModelRunner("target", load_model(pair[0], dtype="float32", device="cuda"), 4, 128, compile_layers=c)
               for c in (True, False)}
    tokens = torch.randint(0, 512, (2, 3), device="cuda")
    out = {}
    for compiled, runner in runners.items():
        runner.extend([list(range(1, 30)), list(range(2, 20))], [0, 0], [0, 1], [])
        out[compiled] = runner.decode(tokens, torch.tensor([29, 18], device="cuda"), torch.arange(2, device="cuda"), 32, [], True)
    assert ((out[True] - out[False]).abs().max() / out[False].abs().max()).item() <= 1e-3


def test_a_draft_that_catches_up_after_undrafted_steps_keeps_greedy_outputs_on_cuda(pair):
    """K=3 at batch 1 only, CUDA graphs on: prompts admitted into a batch of three skip the
    draft's prefill; the last one left drafts after a catch-up pass, and outputs match off."""
    target, draft = pair
    engine = Engine.from_config(EngineConfig(model_dir=target, draft_dir=draft, device="cuda", dtype="float64", max_batch=8))
    prompts = [engine.tokenizer.encode(t) for t in ("import os\n", "def main():\n", "x = [1, 2,")]
    params = [SamplingParams(max_tokens=n, temperature=0.0) for n in (4, 6, 30)]
    engine.update_speculation(SpeculationUpdate(enabled=False))
    expected = engine.generate(prompts, params)
    engine.update_speculation(SpeculationUpdate(enabled=True, method="draft", schedule=[(1, 1, 3)]))
    assert engine.generate(prompts, params) == expected
