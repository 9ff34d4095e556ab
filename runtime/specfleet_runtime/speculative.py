"""The lossless acceptance rules (DESIGN.md §3) as pure tensor functions.

Shapes: B sequences, K draft positions, V vocabulary.
Each returns (accepted [B] int64: how many leading drafts were accepted, next_token [B]:
the corrected token at the first rejection, or the bonus token after K acceptances).
A row proposes `num_proposed[b] <= K` drafts; positions past that are never accepted and
the token there is sampled from p (as if no draft was made).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .sampling import sample_from


class DraftVerifier(Protocol):
    def __call__(
        self, p: Tensor, q: Tensor, draft: Tensor, num_proposed: Tensor, u_accept: Tensor, u_sample: Tensor
    ) -> tuple[Tensor, Tensor]: ...


def _first_rejection(accept: Tensor) -> Tensor:
    """accept [B, K] bool -> number of leading True per row."""
    return accept.to(torch.int64).cumprod(dim=-1).sum(dim=-1)


def verify_draft(
    p: Tensor, q: Tensor, draft: Tensor, num_proposed: Tensor, u_accept: Tensor, u_sample: Tensor
) -> tuple[Tensor, Tensor]:
    """Leviathan et al. / Chen et al. speculative sampling.

    p [B, K+1, V] target probabilities, q [B, K, V] draft probabilities (both after the same
    processing), draft [B, K] tokens drawn from q, u_accept [B, K] and u_sample [B] uniforms.
    Accept draft x at position i with probability min(1, p(x)/q(x)); at the first rejection
    sample from normalize(max(0, p - q)); after K acceptances sample the bonus from p[:, K].
    """
    b, k = draft.shape
    rows = torch.arange(b, device=p.device)
    p_x = p[:, :k].gather(-1, draft[..., None]).squeeze(-1)
    q_x = q.gather(-1, draft[..., None]).squeeze(-1)
    valid = torch.arange(k, device=p.device)[None, :] < num_proposed[:, None]
    # u < p/q  <=>  u * q < p, without dividing by a q that may be 0 for a masked-out token.
    accept = (u_accept * q_x < p_x) & valid
    accepted = _first_rejection(accept)
    p_next = p[rows, accepted]
    q_pad = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)  # position K: no draft, residual = p
    q_next = torch.where((accepted < num_proposed)[:, None], q_pad[rows, accepted], 0.0)
    residual = (p_next - q_next).clamp_(min=0)
    # p == q exactly leaves no residual mass; rejection then has probability 0 anyway.
    empty = residual.sum(-1, keepdim=True) <= 0
    residual = torch.where(empty, p_next, residual)
    return accepted, sample_from(residual, u_sample)


def verify_ngram(p: Tensor, draft: Tensor, num_proposed: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Rule for proposals without a distribution (prompt lookup).

    p [B, K+1, V], draft [B, K], u [B, K+1]. Draw y_i ~ p_i for each position; accept draft
    x_i iff x_i == y_i; the first y that disagrees (or y_K after all agree) is the next
    token. Every emitted token is a sample from p, so the output distribution is exact.
    """
    b, k1, v = p.shape
    samples = sample_from(p.reshape(b * k1, v), u.reshape(-1)).view(b, k1)
    valid = torch.arange(k1 - 1, device=p.device)[None, :] < num_proposed[:, None]
    accepted = _first_rejection((draft == samples[:, :-1]) & valid)
    return accepted, samples.gather(-1, accepted[:, None]).squeeze(-1)


def verify_greedy(
    target_argmax: list[list[int]], draft: list[list[int]], num_proposed: list[int]
) -> tuple[list[int], list[int]]:
    """Both rules when every row is greedy: accept while the draft equals the target argmax.

    target_argmax [B][K+1], draft [B][K], as host lists: a handful of comparisons per row,
    cheaper than the small kernels (and syncs) of doing it on the device. Equal to
    verify_draft/verify_ngram on one-hot distributions, without building them.
    """
    accepted, next_tokens = [], []
    for target, proposed, n in zip(target_argmax, draft, num_proposed):
        a = 0
        while a < n and proposed[a] == target[a]:
            a += 1
        accepted.append(a)
        next_tokens.append(target[a])
    return accepted, next_tokens
