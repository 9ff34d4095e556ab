"""Logits -> probabilities (temperature, top-k, top-p) and inverse-CDF sampling.

Batched over rows with per-row parameters. Greedy rows (temperature 0) become one-hot
distributions on the argmax, so the speculative acceptance rule needs no special case:
with one-hot p and q it accepts exactly when the draft equals the target's argmax.
Randomness comes in as uniforms the caller draws (per-request seeded generators), which
keeps these functions pure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .engine.api import SamplingParams


@dataclass(frozen=True)
class SamplingBatch:
    """Per-row sampling parameters as tensors, built once per step."""

    temperature: Tensor  # [B], 0 = greedy
    top_p: Tensor  # [B]
    top_k: Tensor  # [B], 0 = off
    all_greedy: bool
    any_filter: bool

    @classmethod
    def from_params(cls, params: list[SamplingParams], device: torch.device | str) -> "SamplingBatch":
        temps = [p.temperature for p in params]
        return cls(
            temperature=torch.tensor(temps, dtype=torch.float32, device=device),
            top_p=torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device),
            top_k=torch.tensor([p.top_k for p in params], dtype=torch.int64, device=device),
            all_greedy=all(t == 0 for t in temps),
            any_filter=any(p.top_p < 1.0 or p.top_k > 0 for p in params),
        )

    def expand(self, n: int) -> "SamplingBatch":
        """Each row repeated n times (for [B, n, V] logits flattened to [B*n, V])."""
        return SamplingBatch(
            self.temperature.repeat_interleave(n),
            self.top_p.repeat_interleave(n),
            self.top_k.repeat_interleave(n),
            self.all_greedy,
            self.any_filter,
        )


def validate_params(params: SamplingParams) -> None:
    """Raise ValueError naming the field for parameters the engine cannot honour."""
    if params.max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
    if params.temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {params.top_k}")


def probs_from_logits(logits: Tensor, batch: SamplingBatch) -> Tensor:
    """[N, V] logits -> [N, V] float32 probabilities after temperature, top-k, top-p."""
    logits = logits.float()
    greedy = batch.temperature == 0
    one_hot = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    if batch.all_greedy:
        return one_hot
    temps = torch.where(greedy, 1.0, batch.temperature)[:, None]
    logits = logits / temps
    if batch.any_filter:
        logits = _filter_top_k_top_p(logits, batch.top_k, batch.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.where(greedy[:, None], one_hot, probs)


def _filter_top_k_top_p(logits: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    # As transformers' TopK then TopP warpers: ties at the k-th value are kept, and top-p keeps
    # the smallest prefix (by descending probability) whose mass reaches top_p.
    vocab = logits.shape[-1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    kth = sorted_logits.gather(-1, (k - 1)[:, None])
    sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    drop = mass_before >= top_p[:, None]
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter_(-1, order, sorted_logits)


def sample_from(probs: Tensor, u: Tensor) -> Tensor:
    """One token per row by inverse CDF: probs [N, V] (need not be normalized), u [N] in [0, 1)."""
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)
