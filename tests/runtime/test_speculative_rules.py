"""The acceptance rules and the n-gram proposer, on hand-made inputs."""

from __future__ import annotations

import torch

from specfleet_runtime.ngram import NgramProposer
from specfleet_runtime.sampling import SamplingBatch, probs_from_logits, sample_from
from specfleet_runtime.engine.api import SamplingParams
from specfleet_runtime.speculative import verify_draft, verify_greedy, verify_ngram


def one_hot(idx: list[list[int]], v: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(idx), v).float()


def test_greedy_rule_accepts_the_prefix_that_matches_the_target_argmax():
    target_argmax = [[3, 1, 4, 1], [5, 9, 2, 6], [7, 7, 7, 7], [2, 8, 1, 8]]
    drafts = [[3, 1, 0], [0, 9, 2], [7, 7, 7], [2, 8, 1]]
    accepted, nxt = verify_greedy(target_argmax, drafts, [3, 3, 2, 3])
    assert accepted == [2, 0, 2, 3]
    assert nxt == [4, 5, 7, 8]  # correction, correction, the target's token after 2 proposed, bonus


def test_draft_rule_on_one_hot_distributions_is_the_greedy_rule():
    p = one_hot([[3, 1, 4, 1], [5, 9, 2, 6]], 10)
    drafts = torch.tensor([[3, 1, 0], [5, 9, 2]])
    q = one_hot(drafts.tolist(), 10)
    u = torch.rand(2, 3)
    accepted, nxt = verify_draft(p, q, drafts, torch.tensor([3, 3]), u, torch.rand(2))
    assert accepted.tolist() == [2, 3]
    assert nxt.tolist() == [4, 6]  # correction; bonus token


def test_draft_rule_emits_exactly_the_target_distribution_at_the_first_position():
    """Exact marginal of the first emitted token: sum over draft x of q(x)*[accept or residual]."""
    torch.manual_seed(0)
    v = 6
    p = torch.softmax(torch.randn(1, 2, v) * 2, -1)
    q = torch.softmax(torch.randn(1, 1, v) * 2, -1)
    grid = 4000  # deterministic quadrature over both uniforms
    us = (torch.arange(grid) + 0.5) / grid
    emitted = torch.zeros(v)
    for x in range(v):
        draft = torch.full((grid, 1), x)
        accepted, nxt = verify_draft(
            p.expand(grid, -1, -1), q.expand(grid, -1, -1), draft, torch.ones(grid, dtype=torch.long),
            us[:, None], us.roll(grid // 3),
        )
        tokens = torch.where(accepted == 1, draft[:, 0], nxt)
        emitted += q[0, 0, x] * torch.bincount(tokens, minlength=v).float() / grid
    assert torch.allclose(emitted, p[0, 0], atol=2e-3)


def test_ngram_rule_accepts_when_the_target_sample_agrees():
    p = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    accepted, nxt = verify_ngram(p, torch.tensor([[1, 0]]), torch.tensor([2]), torch.rand(1, 3))
    assert (accepted.item(), nxt.item()) == (1, 2)
    accepted, nxt = verify_ngram(p, torch.tensor([[1, 2]]), torch.tensor([2]), torch.rand(1, 3))
    assert (accepted.item(), nxt.item()) == (2, 0)


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]] * 3))
    batch = SamplingBatch.from_params(
        [SamplingParams(temperature=1.0, top_k=2), SamplingParams(temperature=1.0, top_p=0.8), SamplingParams(temperature=0.0)],
        "cpu",
    )
    probs = probs_from_logits(logits, batch)
    assert torch.allclose(probs[0], torch.tensor([5 / 7, 2 / 7, 0, 0, 0]))
    assert torch.allclose(probs[1], torch.tensor([0.5, 0.2, 0.15, 0, 0]) / 0.85)
    assert probs[2].tolist() == [1.0, 0, 0, 0, 0]


def test_inverse_cdf_sampling_never_picks_a_zero_probability_token():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).expand(1000, -1)
    tokens = sample_from(probs, torch.linspace(0, 1 - 1e-7, 1000))
    assert set(tokens.tolist()) == {1, 3}


def test_ngram_proposer_continues_the_latest_earlier_occurrence_of_the_longest_suffix():
    tokens = [1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 2, 3]
    proposer = NgramProposer(tokens)
    assert proposer.propose(3) == [4, 5, 7]  # "2 3" last seen before position 7
    tokens += [4, 8]
    assert proposer.propose(2) == []  # "4 8", "8" never seen
    tokens.append(1)
    assert proposer.propose(5) == [2, 3, 4, 5, 7]
