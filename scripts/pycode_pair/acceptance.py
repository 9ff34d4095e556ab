"""Greedy per-position acceptance of a draft against a target, with transformers as the
reference implementation of both models.

For each held-out prompt the target's greedy continuation is the reference. At every
position t of it, the draft continues greedily for k_max tokens from prompt + reference[:t]
and accepts the longest prefix equal to reference[t:]. P(accept >= i) is the share of
positions whose accepted prefix reaches i; with greedy verification a step at K yields
1 + sum_{i<=K} P(accept >= i) tokens on average (the bonus token included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@torch.no_grad()
def greedy_continue(model: nn.Module, seqs: list[list[int]], n_new: int, pad_id: int, batch: int = 64) -> list[list[int]]:
    """n_new greedy tokens after each sequence (no stopping at EOS), left-padded batches."""
    out: list[list[int]] = []
    device = next(model.parameters()).device
    for lo in range(0, len(seqs), batch):
        chunk = seqs[lo : lo + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in chunk], device=device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        res = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        new: list[Tensor] = []
        for _ in range(n_new):
            nxt = res.logits[:, -1].argmax(-1, keepdim=True)
            new.append(nxt)
            mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
            pos = pos[:, -1:] + 1
            res = model(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=res.past_key_values, use_cache=True)
        out.extend(torch.cat(new, dim=1).tolist())
    return out


@dataclass(frozen=True)
class Acceptance:
    positions: int
    p_accept_at_least: list[float]  # index i-1 holds P(accept >= i), i = 1..k_max

    def tokens_per_step(self, k: int) -> float:
        return 1.0 + sum(self.p_accept_at_least[:k])

    def as_dict(self) -> dict:
        k_max = len(self.p_accept_at_least)
        return {
            "positions": self.positions,
            "p_accept_at_least": {str(i + 1): round(p, 4) for i, p in enumerate(self.p_accept_at_least)},
            "tokens_per_verify_step": {str(k): round(self.tokens_per_step(k), 4) for k in range(1, k_max + 1)},
        }


def accepted_prefix(proposal: list[int], reference: list[int]) -> int:
    n = 0
    for a, b in zip(proposal, reference):
        if a != b:
            break
        n += 1
    return n


def measure(
    target: nn.Module,
    draft: nn.Module,
    prompts: list[list[int]],
    positions: int,
    k_max: int,
    pad_id: int,
    batch: int = 64,
) -> tuple[Acceptance, list[list[int]]]:
    """Acceptance over `positions` positions of each prompt's target continuation; also
    returns those continuations (positions + k_max tokens each)."""
    refs = greedy_continue(target, prompts, positions + k_max, pad_id, batch)
    counts = [0] * k_max
    total = 0
    for prompt, ref in zip(prompts, refs):
        starts = [prompt + ref[:t] for t in range(positions)]
        proposals = greedy_continue(draft, starts, k_max, pad_id, batch)
        for t, proposal in enumerate(proposals):
            a = accepted_prefix(proposal, ref[t : t + k_max])
            for i in range(a):
                counts[i] += 1
            total += 1
    return Acceptance(total, [c / total for c in counts]), refs
