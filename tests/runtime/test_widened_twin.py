"""`widen_mlp` (tests/model_factory.py) makes a costlier twin of a model for the control
loop's integration test; that test relies on the twin computing the same function."""

from __future__ import annotations

import json

import torch

from model_factory import widen_mlp
from specfleet.model_sources import resolve_local_model
from specfleet_runtime.loader import load_model


def test_a_zero_padded_mlp_twin_has_the_logits_of_its_source(tmp_path) -> None:
    source = resolve_local_model("bundled://pycode-target")
    twin_dir = widen_mlp(source, tmp_path / "twin", 4 * json.loads((source / "config.json").read_text())["intermediate_size"])
    original, twin = load_model(source), load_model(twin_dir)
    assert twin.cfg.intermediate_size == 4 * original.cfg.intermediate_size
    tokens = torch.randint(0, original.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    positions, slots = torch.arange(12).expand(2, 12), torch.arange(2)
    with torch.inference_mode():
        logits = []
        for model in (original, twin):
            model.setup_cache(2, 16)
            logits.append(model(tokens, positions, slots))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
