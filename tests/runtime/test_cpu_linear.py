"""bfloat16 CPU passes run on oneDNN-prepacked weights (cpu_linear.py) and float32 attention."""

from __future__ import annotations

import torch
from torch import nn

from specfleet_runtime.cpu_linear import PackedLinear, bf16_prepack_available, prepack_linears
from specfleet_runtime.engine.runner import ModelRunner
from specfleet_runtime.loader import load_model


def test_this_cpu_has_the_bf16_path_the_speed_figures_rely_on():
    # The CI machine and this one are the same kind; the model card's CPU figures need it.
    assert bf16_prepack_available()


def test_a_packed_linear_computes_what_the_linear_computes():
    torch.manual_seed(0)
    linear = nn.Linear(96, 200, bias=True).to(torch.bfloat16)
    x = torch.randn(2, 5, 96, dtype=torch.bfloat16)
    expected = (x.float() @ linear.weight.float().T + linear.bias.float())
    got = PackedLinear(linear)(x).float()
    assert got.shape == (2, 5, 200)
    assert ((got - expected).abs().max() / expected.abs().max()).item() < 1e-2


def test_bf16_cpu_runners_pack_every_linear_and_keep_float32_attention_state(pair):
    model = load_model(pair[0], dtype="bfloat16")
    ModelRunner("target", model, slots=2, max_cache_len=64)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model.layers[0].self_attn.cache.k.dtype == torch.float32
    assert prepack_linears(load_model(pair[0], dtype="float32")) == 0


def test_bf16_cpu_logits_stay_close_to_float32_ones(pair):
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    logits = {}
    for dtype in ("float32", "bfloat16"):
        runner = ModelRunner("target", load_model(pair[0], dtype=dtype), slots=2, max_cache_len=64)
        logits[dtype] = runner.extend(ids.tolist(), [0, 0], [0, 1], []).float()
    err = (logits["bfloat16"] - logits["float32"]).abs().max() / logits["float32"].abs().max()
    assert err.item() < 5e-2
