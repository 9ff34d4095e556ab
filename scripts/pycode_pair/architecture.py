"""The two shapes. The draft is shallow on purpose: at batch 1 on a CPU, per-layer overhead,
not arithmetic, sets the cost of a token, so depth is what makes the target expensive and
the draft cheap. Two draft layers (not one) so it can learn copy/induction patterns,
which Python source is full of (identifiers repeat)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import LlamaConfig

MAX_POSITIONS = 2048


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    intermediate: int


TARGET = Shape(hidden=256, layers=12, heads=4, intermediate=704)
DRAFT = Shape(hidden=128, layers=2, heads=2, intermediate=384)


def llama_config(shape: Shape, vocab_size: int, eos_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        initializer_range=0.02,
    )
