"""Our native model computes the logits transformers computes, on the same weights."""

from __future__ import annotations

import pytest
import torch
from model_factory import make_random_model
from transformers import AutoModelForCausalLM

from specfleet_runtime.loader import ModelLoadError, load_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

CONFIGS = {
    "llama-gqa": dict(heads=4, kv_heads=2),
    "llama-mqa-tied": dict(heads=4, kv_heads=1, tie=True),
    "llama-mha-head-dim": dict(heads=2, kv_heads=2, head_dim=48),
    "qwen2-bias": dict(arch="qwen2", heads=4, kv_heads=2),
    "qwen2-tied-bias": dict(arch="qwen2", tie=True, heads=8, kv_heads=4),
    "llama3-rope-sharded": dict(rope_scaling=LLAMA3_ROPE, max_shard_size="40KB"),
    "linear-rope": dict(rope_scaling={"rope_type": "linear", "factor": 4.0}, rope_theta=500.0),
    "dynamic-rope-beyond-trained-length": dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0},
                                               max_position_embeddings=24),
}
SEQ = 48


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(tmp_path, name):
    path = make_random_model(tmp_path / name, seed=len(name), **CONFIGS[name])
    ours = load_model(path, dtype="float32")
    ours.setup_cache(slots=2, max_len=SEQ + 1)
    ref_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.randint(0, ours.cfg.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = ref_model(ids).logits
        got = ours(ids, torch.arange(SEQ)[None], torch.tensor([1]))
    assert rel_error(got, ref) <= 1e-4


@pytest.mark.parametrize("name", ["llama-gqa", "qwen2-bias", "llama3-rope-sharded"])
def test_cached_prefill_then_chunks_match_one_full_pass(tmp_path, name):
    path = make_random_model(tmp_path / name, **CONFIGS[name])
    model = load_model(path)
    model.setup_cache(slots=3, max_len=SEQ + 1)
    ids = torch.randint(0, model.cfg.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(2))
    slot = torch.tensor([2])
    with torch.no_grad():
        full = model(ids, torch.arange(SEQ)[None], torch.tensor([0]))
        parts = [model(ids[:, a:b], torch.arange(a, b)[None], slot) for a, b in ((0, 30), (30, 31), (31, 36), (36, SEQ))]
    assert rel_error(torch.cat(parts, dim=1), full) <= 1e-5


def test_rejected_positions_are_forgotten_by_rolling_back_the_length(tmp_path):
    """Keys written past a sequence's length (rejected drafts) do not leak into later passes."""
    path = make_random_model(tmp_path / "m")
    model = load_model(path)
    model.setup_cache(slots=1, max_len=SEQ + 1)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(0, model.cfg.vocab_size, (1, SEQ), generator=gen)
    junk = torch.randint(0, model.cfg.vocab_size, (1, 8), generator=gen)
    slot = torch.tensor([0])
    with torch.no_grad():
        clean = model(ids, torch.arange(SEQ)[None], slot)
        model(ids[:, :20], torch.arange(20)[None], slot)
        model(junk, torch.arange(20, 28)[None], slot)  # a rejected 8-token draft
        resumed = model(ids[:, 20:], torch.arange(20, SEQ)[None], slot)
    assert rel_error(resumed, clean[:, 20:]) <= 1e-5


def test_loader_names_missing_weights(tmp_path):
    path = make_random_model(tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no \\*.safetensors"):
        load_model(path)


def test_loader_rejects_non_llama_family(tmp_path):
    path = make_random_model(tmp_path / "m")
    cfg = (path / "config.json").read_text().replace('"model_type": "llama"', '"model_type": "gpt2"')
    (path / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="gpt2"):
        load_model(path)
