"""The pass shape CUDA graphs replay (engine/cuda_graphs.py), checked on CPU in float64:
a batch padded to a bucket, attending over the whole cache under the causal mask, gives
each real row the logits of the pass shaped to fit (to float64 rounding: other shapes
sum in another order)."""

from __future__ import annotations

import pytest
import torch

from specfleet_runtime.loader import load_model

CACHE_LEN = 64
SCRATCH = CACHE_LEN - 1


def prefilled(pair, lengths: list[int]):
    model = load_model(pair[0], dtype="float64")
    model.setup_cache(slots=8, max_len=CACHE_LEN)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for slot, n in enumerate(lengths):
            ids = torch.randint(0, 512, (1, n), generator=gen)
            model(ids, torch.arange(n)[None], torch.tensor([slot]))
    return model


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("slots_prefix", [True, False])
def test_padded_rows_and_whole_cache_span_leave_real_rows_unchanged(pair, width, slots_prefix):
    lengths = [5, 17, 9]
    slots = torch.tensor([0, 1, 2] if slots_prefix else [2, 0, 1])
    starts = torch.tensor([lengths[s] for s in slots.tolist()])
    tokens = torch.randint(0, 512, (3, width), generator=torch.Generator().manual_seed(1))
    pos = starts[:, None] + torch.arange(width)[None]
    with torch.no_grad():
        exact = prefilled(pair, lengths)(tokens, pos, slots, span=int(pos.max()) + 1, slots_prefix=slots_prefix)
        bucket = 4
        padded_tokens = torch.cat([tokens, torch.zeros(bucket - 3, width, dtype=torch.int64)])
        padded_pos = torch.cat([pos, torch.full((bucket - 3, width), SCRATCH)])
        padded_slots = torch.cat([slots, torch.arange(3, bucket)])
        padded = prefilled(pair, lengths)(
            padded_tokens, padded_pos, padded_slots, span=CACHE_LEN, slots_prefix=slots_prefix, padded_span=True
        )
    torch.testing.assert_close(padded[:3], exact, rtol=1e-12, atol=1e-12)


def test_a_single_query_over_a_padded_span_is_masked(pair):
    """Without the mask one query would attend to stale keys beyond its position."""
    model = prefilled(pair, [30])
    token, slot = torch.tensor([[7]]), torch.tensor([0])
    with torch.no_grad():
        exact = model(token, torch.tensor([[10]]), slot, span=11)
        padded = model(token, torch.tensor([[10]]), slot, span=CACHE_LEN, padded_span=True)
        unmasked = model(token, torch.tensor([[10]]), slot, span=CACHE_LEN)
    torch.testing.assert_close(padded, exact, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(unmasked, exact, rtol=1e-3, atol=1e-3)
