"""A native Llama-family decoder (Llama, Mistral, Qwen2 configs), gpt-fast style.

One forward pass serves prefill, plain decode and speculative verification: every
sequence in the batch brings T new tokens at absolute positions `input_pos`, their keys
and values are written into a static cache slot, and attention reads that slot's prefix.
Rolling back rejected draft tokens is therefore free: a sequence's length is the only
state, and stale cache entries beyond it are masked out and later overwritten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kv_cache import KVCache

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "ModelConfig":
        """Read a Hugging Face config.json (transformers 4.x `rope_scaling` or 5.x `rope_parameters`)."""
        model_type = cfg.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "qwen2"):
            raise ValueError(f"config.json model_type={model_type!r} is not a Llama-family model")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"config.json hidden_act={cfg['hidden_act']!r}: only silu (SwiGLU) is supported")
        if cfg.get("use_sliding_window") or (model_type == "mistral" and cfg.get("sliding_window")):
            raise ValueError("config.json asks for sliding-window attention, which is not supported")
        rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        rope_theta = float(rope.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"config.json rope type {rope_type!r} is not supported ({', '.join(SUPPORTED_ROPE_TYPES)})")
        rope["rope_type"] = rope_type
        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise ValueError("config.json partial_rotary_factor != 1 is not supported")
        heads = cfg["num_attention_heads"]
        attention_bias = bool(cfg.get("attention_bias", False))
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=rope_theta,
            rope_scaling=rope,
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=attention_bias and model_type != "qwen2",
            mlp_bias=bool(cfg.get("mlp_bias", False)),
        )


def rope_inv_freq(cfg: ModelConfig, seq_len: int | None = None) -> Tensor:
    """Inverse frequencies in float32, as transformers computes them, for each rope type."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "dynamic":
        max_pos = cfg.max_position_embeddings
        seq_len = max(seq_len or max_pos, max_pos)
        factor = scaling["factor"]
        base = cfg.rope_theta * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rope_type == "llama3":
        factor = scaling["factor"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) * ~(wavelen > old_len / low)
        return torch.where(medium, smoothed, scaled)
    return inv_freq


def rope_table(inv_freq: Tensor, positions: int) -> tuple[Tensor, Tensor]:
    """cos/sin for positions [0, positions), shape [positions, head_dim], float32."""
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.float64:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # transformers normalizes in float32 even for float64 weights; do the same there, so
        # the float64 equality tests compare like with like.
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        # q, k and v in one matmul (gpt-fast's wqkv): fewer, larger ops per layer.
        self.qkv_proj = nn.Linear(cfg.hidden_size, (cfg.num_heads + 2 * cfg.num_kv_heads) * hd, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.num_heads * hd, cfg.hidden_size, bias=cfg.o_bias)
        self.cache: KVCache | None = None

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, span: int, slots: Tensor, slots_prefix: bool,
        input_pos: Tensor,
    ) -> Tensor:
        b, t, _ = x.shape
        hd = self.cfg.head_dim
        heads, kv_heads = self.cfg.num_heads, self.cfg.num_kv_heads
        qkv = self.qkv_proj(x).view(b, t, heads + 2 * kv_heads, hd)
        qk, v = qkv[:, :, : heads + kv_heads], qkv[:, :, heads + kv_heads :]
        qk = qk * cos + rotate_half(qk) * sin  # one rotation for q and k together
        q, k = qk.split((heads, kv_heads), dim=2)
        cache_dtype = self.cache.k.dtype
        keys, values = self.cache.update(slots, input_pos, k.to(cache_dtype), v.to(cache_dtype), span, slots_prefix)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2).to(cache_dtype), keys, values, attn_mask=mask, enable_gqa=kv_heads != heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1).to(x.dtype))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, span: int, slots: Tensor, slots_prefix: bool,
        input_pos: Tensor,
    ) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, span, slots, slots_prefix, input_pos)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Parameter names follow transformers' layout without the `model.` prefix, except the
    fused `qkv_proj` and `gate_up_proj` (see loader.fuse_projections)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.max_len = 0
        self._dynamic_rope = cfg.rope_scaling.get("rope_type") == "dynamic"

    @property
    def graph_safe(self) -> bool:
        """Whether a pass depends only on its tensors, so it can be captured once and replayed.
        Dynamic NTK RoPE rescales by the longest position in the pass, a host-side value."""
        return not self._dynamic_rope

    @property
    def cache_dtype(self) -> torch.dtype:
        """The weights' dtype, except bfloat16 on CPU: there attention runs in float32, whose
        CPU kernel is several times faster than the bfloat16 one (0.02 vs 0.14 ms for one
        query over 300 keys), so keys and values are kept in float32."""
        param = self.embed_tokens.weight
        return torch.float32 if param.device.type == "cpu" and param.dtype == torch.bfloat16 else param.dtype

    def setup_cache(self, slots: int, max_len: int) -> None:
        """Allocate the static KV cache and the RoPE table for `max_len` positions per slot."""
        param = self.embed_tokens.weight
        self.max_len = max_len
        for layer in self.layers:
            layer.self_attn.cache = KVCache(
                slots, self.cfg.num_kv_heads, max_len, self.cfg.head_dim, self.cache_dtype, param.device
            )
        self._rope_tables(max_len)

    def resize_cache(self, max_len: int) -> None:
        """Change the positions per slot, keeping what the cache holds."""
        self.max_len = max_len
        for layer in self.layers:
            layer.self_attn.cache = layer.self_attn.cache.resized(max_len)
        self._rope_tables(max_len)

    def _rope_tables(self, max_len: int) -> None:
        param = self.embed_tokens.weight
        # Computed in float32 and cast once, which is what transformers does on every pass.
        cos, sin = rope_table(rope_inv_freq(self.cfg), max_len)
        self.rope_cos = cos.to(device=param.device, dtype=param.dtype)
        self.rope_sin = sin.to(device=param.device, dtype=param.dtype)

    def _rope(self, input_pos: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
        dtype = self.embed_tokens.weight.dtype
        if self._dynamic_rope:
            # transformers rescales by the longest position in the pass, beyond the trained length.
            # Like transformers with a KV cache, keys cached earlier keep the scale they were
            # computed with, so past max_position_embeddings incremental decoding differs from
            # one full pass (dynamic NTK is not cache-consistent by construction).
            if seq_len > self.cfg.max_position_embeddings:
                cos, sin = rope_table(rope_inv_freq(self.cfg, seq_len), seq_len)
                cos, sin = cos.to(input_pos.device), sin.to(input_pos.device)
                return cos[input_pos].to(dtype), sin[input_pos].to(dtype)
        return self.rope_cos[input_pos], self.rope_sin[input_pos]

    def forward(
        self,
        tokens: Tensor,
        input_pos: Tensor,
        slots: Tensor,
        span: int | None = None,
        output_index: Tensor | None = None,
        slots_prefix: bool = False,
        padded_span: bool = False,
    ) -> Tensor:
        """Logits [B, T, V] for tokens [B, T] at positions input_pos [B, T] in cache slots [B].

        `slots_prefix`: the caller knows slots == 0..B-1 (attention then reads cache views).
        `output_index` [B, m]: compute logits only at these token indices ([B, m, V]); a
        prefill needs just its last token's, and the head is the widest matmul.

        `span`: how many cache positions attention reads (> every real position). Padding
        tokens may sit at the scratch position `max_len - 1`, beyond the span: their keys are
        written there and never read. `padded_span`: the span may reach past a row's last
        position (a CUDA graph attends over the whole cache), so even one query needs the mask.
        """
        span = span or int(input_pos.max()) + 1
        cos, sin = self._rope(input_pos, span)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        if tokens.shape == (1, 1) and not padded_span:
            mask = None  # one query at the end of its span sees every key
        else:
            key_pos = torch.arange(span, device=tokens.device)
            mask = (key_pos[None, None, :] <= input_pos[:, :, None])[:, None]
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, span, slots, slots_prefix, input_pos)
        if output_index is not None:
            x = x.gather(1, output_index[..., None].expand(-1, -1, x.shape[-1]))
        return self.lm_head(self.norm(x))
