"""The two decode paths of an engine step, batched over all decode-phase sequences.

`plain_decode`: one target pass of one token per sequence.
`speculative_decode`: propose up to K tokens per sequence (draft model or n-gram lookup),
verify them in one target pass of K+1 tokens, apply the lossless acceptance rule.
Both return, per sequence, the tokens to commit; the engine applies the stop rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..sampling import SamplingBatch, probs_from_logits, sample_from
from ..speculative import DraftVerifier, verify_greedy, verify_ngram
from .api import ForwardTiming
from .runner import ModelRunner
from .sequence import Sequence


@dataclass
class DecodeInputs:
    """Per-step tensors shared by both paths."""

    seqs: list[Sequence]
    lengths: list[int]  # committed tokens per sequence
    lengths_t: Tensor  # the same, on device
    slots: Tensor
    slots_prefix: bool  # slots are exactly 0..B-1 (the engine orders rows by slot)
    last: Tensor  # [B] last committed token (not yet in the target cache)
    batch: SamplingBatch
    uniforms: Tensor | None  # [B, n] on device; None when every row is greedy

    @classmethod
    def build(cls, seqs: list[Sequence], batch: SamplingBatch, uniforms: Tensor | None, device) -> "DecodeInputs":
        slots = [s.slot for s in seqs]
        lengths = [len(s.tokens) for s in seqs]
        # One host-to-device copy for the three, not three: each copy costs a round trip.
        on_device = torch.tensor([slots, [s.tokens[-1] for s in seqs], lengths]).to(device)
        return cls(
            seqs=seqs,
            lengths=lengths,
            lengths_t=on_device[2],
            slots=on_device[0],
            slots_prefix=slots == list(range(len(seqs))),
            last=on_device[1],
            batch=batch,
            uniforms=uniforms,
        )


def sample_tokens(logits: Tensor, batch: SamplingBatch, u: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Tokens [B] and (unless all greedy) their distribution [B, V]."""
    if batch.all_greedy:
        return logits.argmax(-1), None
    probs = probs_from_logits(logits, batch)
    return sample_from(probs, u), probs


def plain_decode(target: ModelRunner, inp: DecodeInputs, timings: list[ForwardTiming]) -> list[list[int]]:
    starts = inp.lengths_t - 1
    logits = target.decode(inp.last[:, None], starts, inp.slots, max(inp.lengths), timings, inp.slots_prefix)[:, 0]
    u = None if inp.uniforms is None else inp.uniforms[:, 0]
    tokens, _ = sample_tokens(logits, inp.batch, u)
    return [[t] for t in tokens.tolist()]


@dataclass
class SpecOutcome:
    tokens: list[list[int]]  # per sequence: accepted drafts + the corrected/bonus token
    num_proposed: list[int]
    accepted: list[int]


# A drafting step leaves the draft one token behind the target (two when every draft
# was accepted); its first pass feeds those. A longer lag is caught up by catch_up_draft.
STEP_LAG = 2


def catch_up_draft(draft: ModelRunner, seqs: list[Sequence], max_tokens: int, timings: list[ForwardTiming]) -> None:
    """Feed the draft what it missed beyond a step's lag (a prompt admitted while drafting
    was off, or the tokens of undrafted steps) in prefill passes of at most `max_tokens`
    padded tokens (one long row may exceed), so that the step's own first draft pass stays
    STEP_LAG wide and its timing stays a decode-step cost."""
    behind = sorted((s for s in seqs if len(s.tokens) - s.draft_len > STEP_LAG), key=lambda s: len(s.tokens) - s.draft_len)
    group: list[Sequence] = []
    for seq in behind:  # shortest first: each added row is the group's widest
        if group and (len(group) + 1) * (len(seq.tokens) - 1 - seq.draft_len) > max_tokens:
            _feed_draft(draft, group, timings)
            group = []
        group.append(seq)
    if group:
        _feed_draft(draft, group, timings)


def _feed_draft(draft: ModelRunner, seqs: list[Sequence], timings: list[ForwardTiming]) -> None:
    """One prefill pass: each sequence's tokens from draft_len up to (not including) its last."""
    draft.extend([s.tokens[s.draft_len : -1] for s in seqs], [s.draft_len for s in seqs], [s.slot for s in seqs], timings)
    for seq in seqs:
        seq.draft_len = len(seq.tokens) - 1


def draft_proposals(
    draft: ModelRunner, k: int, inp: DecodeInputs, timings: list[ForwardTiming], catch_up_tokens: int
) -> tuple[Tensor, Tensor | None]:
    """K tokens per sequence from the draft model: drafts [B, K] and their q [B, K, V].

    The first pass also feeds the draft the tokens of the step's lag (the last committed
    token, and the bonus token when every draft was accepted).
    """
    catch_up_draft(draft, inp.seqs, catch_up_tokens, timings)
    rows = [s.tokens[s.draft_len :] for s in inp.seqs]
    logits = draft.extend(rows, [s.draft_len for s in inp.seqs], [s.slot for s in inp.seqs], timings, in_decode_step=True)
    u = inp.uniforms
    token, q = sample_tokens(logits, inp.batch, None if u is None else u[:, 0])
    drafts, qs = [token], [q]
    for i in range(1, k):
        logits = draft.decode(
            drafts[-1][:, None], inp.lengths_t + (i - 1), inp.slots, max(inp.lengths) + i, timings, inp.slots_prefix
        )[:, 0]
        token, q = sample_tokens(logits, inp.batch, None if u is None else u[:, i])
        drafts.append(token)
        qs.append(q)
    for seq, n in zip(inp.seqs, inp.lengths):
        seq.draft_len = n + k - 1
    return torch.stack(drafts, dim=1), None if qs[0] is None else torch.stack(qs, dim=1)


def ngram_proposals(k: int, inp: DecodeInputs, device) -> tuple[Tensor, list[int]]:
    proposals = [s.ngram.propose(k) for s in inp.seqs]
    width = max(len(p) for p in proposals)
    drafts = torch.tensor([p + [0] * (width - len(p)) for p in proposals], dtype=torch.int64).view(len(proposals), width)
    return drafts.to(device), [len(p) for p in proposals]


def speculative_decode(
    target: ModelRunner,
    draft: ModelRunner | None,
    k: int,
    inp: DecodeInputs,
    verifier: DraftVerifier,
    timings: list[ForwardTiming],
    catch_up_tokens: int,
) -> SpecOutcome:
    """`draft` None means n-gram proposals. The verify pass is only as wide as the longest
    proposal plus one, so sequences with nothing to propose cost a plain decode.
    `catch_up_tokens`: the padded size of the draft's catch-up passes (catch_up_draft)."""
    device = target.device
    b = len(inp.seqs)
    if draft is not None:
        drafts, q = draft_proposals(draft, k, inp, timings, catch_up_tokens)
        num_proposed = [k] * b
    else:
        drafts, num_proposed = ngram_proposals(k, inp, device)
        q = None
    width = drafts.shape[1]
    starts = inp.lengths_t - 1
    tokens = torch.cat([inp.last[:, None], drafts], dim=1)
    logits = target.decode(tokens, starts, inp.slots, max(inp.lengths) + width, timings, inp.slots_prefix)
    if inp.batch.all_greedy:
        rows = torch.cat([drafts, logits.argmax(-1)], dim=1).tolist()  # one device-to-host copy
        drafts_list = [r[:width] for r in rows]
        accepted_list, next_list = verify_greedy([r[width:] for r in rows], drafts_list, num_proposed)
    else:
        proposed = torch.tensor(num_proposed, device=device)
        v = logits.shape[-1]
        p = probs_from_logits(logits.reshape(b * (width + 1), v), inp.batch.expand(width + 1)).view(b, width + 1, v)
        u = inp.uniforms
        if q is not None:
            accepted, nxt = verifier(p, q, drafts, proposed, u[:, k : 2 * k], u[:, 2 * k])
        else:
            accepted, nxt = verify_ngram(p, drafts, proposed, u[:, : width + 1])
        # One device-to-host copy (and sync) for all three.
        rows = torch.cat([drafts, accepted[:, None], nxt[:, None]], dim=1).tolist()
        drafts_list = [r[:width] for r in rows]
        accepted_list, next_list = [r[width] for r in rows], [r[width + 1] for r in rows]
    if draft is not None:
        for seq, n, a in zip(inp.seqs, inp.lengths, accepted_list):
            seq.draft_len = min(seq.draft_len, n + a)
    out = [d[:a] + [c] for d, a, c in zip(drafts_list, accepted_list, next_list)]
    return SpecOutcome(out, num_proposed, accepted_list)


def uniforms_needed(method: str, k: int) -> int:
    """Uniforms per sequence for a step: draft sampling K + acceptance K + final 1 (draft);
    one per verified position (ngram); one (plain)."""
    if k == 0:
        return 1
    return 2 * k + 1 if method == "draft" else k + 1
