"""The acceptance measurement on the shipped pair: its batched greedy decoding equals
one-at-a-time decoding (left padding changes nothing), and the pair meets the issue's
acceptance bars on a slice of the held-out prompts."""

import pytest
import torch
from pycode_pair import acceptance
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


@pytest.fixture(scope="module")
def pair(models_dir):
    torch.set_num_threads(1)
    load = lambda n: AutoModelForCausalLM.from_pretrained(str(models_dir / n), dtype=torch.float32).eval()  # noqa: E731
    tok = Tokenizer.from_file(str(models_dir / "pycode-target" / "tokenizer.json"))
    return load("pycode-target"), load("pycode-draft"), tok


def test_left_padded_batches_decode_exactly_like_single_sequences(pair, heldout_prompts):
    _, draft, tok = pair
    seqs = [tok.encode(p["prompt"]).ids[-n:] for p, n in zip(heldout_prompts, (40, 7, 25, 60))]
    batched = acceptance.greedy_continue(draft, seqs, 6, pad_id=0)
    single = [acceptance.greedy_continue(draft, [s], 6, pad_id=0)[0] for s in seqs]
    assert batched == single


@pytest.mark.slow
def test_draft_agrees_with_target_often_enough_to_pay(pair, heldout_prompts):
    target, draft, tok = pair
    # 12 of the 64 prompts, at the model card's 32 positions each (early positions alone
    # agree less: a continuation's later tokens repeat more)
    ids = [tok.encode(p["prompt"]).ids for p in heldout_prompts[:12]]
    acc, _ = acceptance.measure(target, draft, ids, positions=32, k_max=4, pad_id=0, batch=32)
    assert acc.positions == 384
    assert acc.p_accept_at_least[0] >= 0.6
    assert acc.tokens_per_step(4) >= 2.0
    # and not a degenerate copy: acceptance falls with depth, as a real draft's does
    assert acc.p_accept_at_least[3] < acc.p_accept_at_least[0] < 1.0
