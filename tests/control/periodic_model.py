"""A target model whose greedy output turns periodic, so n-gram drafting gets accepted.

Random weights give drafts that almost never agree with the target, and then speculation
never pays and a control loop has nothing to learn. With every attention output projection
zeroed, the next token depends on the current token only; greedy decoding of such a model
falls into a cycle within a few dozen tokens, and prompt lookup (method ngram) then predicts
the continuation from the text already generated. The model keeps its full size, so a
forward pass costs what one of its shape costs on this machine.
"""

from __future__ import annotations

from pathlib import Path

from model_factory import make_random_model


def make_periodic_model(path: Path, *, hidden: int = 384, layers: int = 4) -> Path:
    from safetensors.torch import load_file, save_file

    model = make_random_model(path, hidden=hidden, layers=layers, heads=4, kv_heads=2, intermediate=4 * hidden)
    weights = load_file(str(model / "model.safetensors"))
    for name in weights:
        if name.endswith("self_attn.o_proj.weight"):
            weights[name] = weights[name] * 0.0
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    return model
